"""Physical memory: one numpy uint8 array, as the machine's RAM chips.

Bulk work (loading images, snapshots, comparing states) goes through numpy;
the CPU's hot path reads and writes through `view`, a memoryview alias of the
same buffer, because indexing a memoryview costs a fraction of indexing a
numpy array from Python.  Ranges claimed by devices (memory-mapped I/O, ROM)
are never entered in the CPU's TLB, so every access to them comes through
`read`/`write` here and reaches the device's hooks.
"""
from __future__ import annotations

import struct
import sys
from typing import Callable

import numpy as np

PAGE_SIZE = 4096
PAGE_SHIFT = 12
PAGE_MASK = 0xFFFFF000      # an address's page base: what the TLBs are keyed by

_UNPACK = {1: struct.Struct("<B").unpack_from, 2: struct.Struct("<H").unpack_from,
           4: struct.Struct("<I").unpack_from, 8: struct.Struct("<Q").unpack_from}
_PACK = {1: struct.Struct("<B").pack_into, 2: struct.Struct("<H").pack_into,
         4: struct.Struct("<I").pack_into, 8: struct.Struct("<Q").pack_into}


class Device:
    """A memory-mapped region.  Subclasses override read/write; offsets are
    relative to the region's start."""

    def read(self, offset: int, size: int) -> int:
        return (1 << (size * 8)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        pass


class ROM(Device):
    """Read-only memory: writes are dropped, as the chip would ignore them.

    One ROM may be mapped at several places (`PhysicalMemory.map_rom`): a
    PC's firmware answers both just below 1 MiB and just below 4 GiB, the
    same chip seen through two address decoders.  Reads past the end of the
    image float high, as an unanswered bus does."""

    def __init__(self, data: bytes):
        self.data = bytes(data)

    def read(self, offset: int, size: int) -> int:
        chunk = self.data[offset:offset + size]
        if len(chunk) < size:
            chunk += b"\xff" * (size - len(chunk))
        return int.from_bytes(chunk, "little")


class _Dwords:
    """view32 on a big-endian host: little-endian dwords by index."""

    def __init__(self, view: memoryview):
        self.view = view

    def __getitem__(self, i: int) -> int:
        return _UNPACK[4](self.view, i << 2)[0]

    def __setitem__(self, i: int, value: int) -> None:
        _PACK[4](self.view, i << 2, value)


class PhysicalMemory:
    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of {PAGE_SIZE}")
        self.size = size
        self.ram = np.zeros(size, dtype=np.uint8)
        self.view = memoryview(self.ram).cast("B")
        # The same bytes as dwords (host order, which is x86's on the hosts
        # we run on): one index per aligned 32-bit access in compiled code.
        self.view32 = self.view.cast("I") if sys.byteorder == "little" else _Dwords(self.view)
        # A RAM page's dwords as a view of their own, by the page's physical
        # base (see enter_page): compiled code indexes a stack frame in it,
        # where running off the page's end raises IndexError.
        self.dword_pages: dict[int, memoryview] = {}
        self.regions: list[tuple[int, int, Device]] = []
        self.device_pages: set[int] = set()     # page numbers never cached in a TLB
        # Pages holding compiled code, and whom to tell when one is written
        # by anyone (the CPU's slow path, a device, the Host, a bulk load):
        # writes into code stay coherent with the block cache, as DMA is
        # with the caches on real hardware.
        self.watched: set[int] = set()
        self.on_watched_write: Callable[[int], None] = lambda ppn: None
        self._page_regions: dict[int, list[tuple[int, int, Device]]] = {}

    # -- devices -----------------------------------------------------------
    def map_device(self, start: int, length: int, device: Device) -> None:
        """Claim [start, start + length) for `device`.  The range may lie
        anywhere in the 4 GiB physical space, above the end of RAM too (the
        firmware's alias below 4 GiB); the same device may be mapped more
        than once.  A range mapped later wins where two overlap."""
        if length <= 0 or start < 0 or start + length > 1 << 32:
            raise ValueError(f"{length:#x} bytes at {start:#x} are not in the 4 GiB physical space")
        region = (start, start + length, device)
        self.regions.append(region)
        first, last = start >> PAGE_SHIFT, (start + length - 1) >> PAGE_SHIFT
        self.device_pages.update(range(first, last + 1))
        for page in range(first, last + 1):
            self._page_regions.setdefault(page, []).insert(0, region)

    def map_rom(self, data: bytes, *starts: int) -> ROM:
        """Map one ROM holding `data` at each of `starts`; returns it."""
        rom = ROM(data)
        for start in starts:
            self.map_device(start, len(rom.data), rom)
        return rom

    def _device_at(self, addr: int):
        for start, end, device in self._page_regions.get(addr >> PAGE_SHIFT, ()):
            if start <= addr < end:
                return start, device
        return None

    def enter_page(self, phys: int) -> None:
        """Give the RAM page at `phys` its view in dword_pages (a CPU does
        when it enters the page in its TLB).  A big-endian host has none:
        compiled code then takes the slow path for frame accesses."""
        if phys not in self.dword_pages and isinstance(self.view32, memoryview):
            self.dword_pages[phys] = self.view32[phys >> 2:(phys >> 2) + 1024]

    # -- access through hooks (the slow path) -------------------------------
    def read(self, addr: int, size: int) -> int:
        if addr >> PAGE_SHIFT in self.device_pages:
            hit = self._device_at(addr)
            if hit is not None:
                return hit[1].read(addr - hit[0], size)
        if addr + size > self.size:
            return self._read_beyond(addr, size)
        return _UNPACK[size](self.view, addr)[0]

    def write(self, addr: int, size: int, value: int) -> None:
        if self.watched:
            self.touched(addr, size)
        if addr >> PAGE_SHIFT in self.device_pages:
            hit = self._device_at(addr)
            if hit is not None:
                hit[1].write(addr - hit[0], size, value)
                return
        if addr + size > self.size:
            self._write_beyond(addr, size, value)
            return
        _PACK[size](self.view, addr, value & ((1 << (size * 8)) - 1))

    def _read_beyond(self, addr: int, size: int) -> int:
        # Nothing answers above the end of RAM: the bus floats high.
        value = 0
        for i in range(size):
            a = addr + i
            byte = self.view[a] if a < self.size else 0xFF
            value |= byte << (8 * i)
        return value

    def _write_beyond(self, addr: int, size: int, value: int) -> None:
        for i in range(size):
            if addr + i < self.size:
                self.view[addr + i] = (value >> (8 * i)) & 0xFF

    # -- bulk --------------------------------------------------------------
    def load(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.size:
            raise ValueError(f"{len(data)} bytes at {addr:#x} do not fit in {self.size:#x} bytes of RAM")
        self.ram[addr:addr + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)
        self.touched(addr, len(data))

    def touched(self, addr: int, length: int) -> None:
        """Tell the block cache about a write to [addr, addr+length)."""
        if self.watched and length:
            for ppn in range(addr >> PAGE_SHIFT, (addr + length - 1 >> PAGE_SHIFT) + 1):
                if ppn in self.watched:
                    self.on_watched_write(ppn)

    def dump(self, addr: int, length: int) -> bytes:
        return self.ram[addr:addr + length].tobytes()

    def snapshot(self) -> np.ndarray:
        return self.ram.copy()

    def restore(self, snap: np.ndarray) -> None:
        self.ram[:] = snap
        self.touched(0, self.size)


class IOBus:
    """The I/O port space: 65536 byte ports; a handler may claim a range.
    Unclaimed ports read as all ones and ignore writes, as on a PC."""

    def __init__(self):
        self.readers: dict[int, Callable[[int, int], int]] = {}
        self.writers: dict[int, Callable[[int, int, int], None]] = {}

    def register(self, port: int, count: int = 1, read=None, write=None) -> None:
        for p in range(port, port + count):
            if read is not None:
                self.readers[p] = read
            if write is not None:
                self.writers[p] = write

    def read(self, port: int, size: int) -> int:
        handler = self.readers.get(port)
        if handler is None:
            return (1 << (size * 8)) - 1
        return handler(port, size) & ((1 << (size * 8)) - 1)

    def write(self, port: int, size: int, value: int) -> None:
        handler = self.writers.get(port)
        if handler is not None:
            handler(port, size, value & ((1 << (size * 8)) - 1))
