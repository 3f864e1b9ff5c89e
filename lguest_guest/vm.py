"""The Guest kernel's view of memory: linear addresses through its own page
tables, which means through the CPU's MMU (the Host's shadow of them), with
supervisor rights at ring 1.  Nothing here knows where Guest memory sits in
the machine.

Every accessor is a generator: the common case returns at once; when the
CPU would fault (the Host has not filled the shadow yet, or the Guest's own
tables forbid the access) it yields Fault, the dispatcher parks the
coroutine and delivers the #PF, and the access is retried when the kernel
is resumed.  Use them as `data = yield from mem.read(addr, n)`.
"""
import struct

from x86core.exceptions import CPUException
from x86core.memory import PAGE_MASK

from .entry import Fault

_U32 = struct.Struct("<I")


class KernelMemory:
    def __init__(self, hw):
        self.hw = hw

    # -- the direct attempt (raises CPUException) ------------------------------------------
    def _page(self, lin: int, write: bool) -> int:
        hw = self.hw
        tlb = hw.tlb_w if write else hw.tlb_r
        page = tlb.get(lin & PAGE_MASK)
        if page is None:
            page = hw._fill(lin, write)
        return page | (lin & 0xFFF)

    def read_now(self, lin: int, n: int) -> bytes:
        out = []
        view = self.hw.mem.view
        while n > 0:
            chunk = min(n, 0x1000 - (lin & 0xFFF))
            phys = self._page(lin, False)
            out.append(bytes(view[phys:phys + chunk]))
            lin = (lin + chunk) & 0xFFFFFFFF
            n -= chunk
        return b"".join(out)

    def write_now(self, lin: int, data: bytes) -> None:
        mem = self.hw.mem
        # Check every page first, so a fault leaves nothing half-written.
        pages = []
        pos, n, at = 0, len(data), lin
        while pos < n:
            chunk = min(n - pos, 0x1000 - (at & 0xFFF))
            pages.append((self._page(at, True), pos, chunk))
            at = (at + chunk) & 0xFFFFFFFF
            pos += chunk
        for phys, pos, chunk in pages:
            mem.load(phys, data[pos:pos + chunk])

    # -- the generators ----------------------------------------------------------------------
    def read(self, lin: int, n: int):
        while True:
            try:
                return self.read_now(lin, n)
            except CPUException as exc:
                yield Fault(exc)

    def write(self, lin: int, data: bytes):
        while True:
            try:
                return self.write_now(lin, data)
            except CPUException as exc:
                yield Fault(exc)

    def read_u32(self, lin: int):
        while True:
            try:
                phys = self._page(lin, False)
                if lin & 0xFFF <= 0xFFC:
                    return _U32.unpack_from(self.hw.mem.view, phys)[0]
                return _U32.unpack(self.read_now(lin, 4))[0]
            except CPUException as exc:
                yield Fault(exc)

    def write_u32(self, lin: int, value: int):
        return (yield from self.write(lin, _U32.pack(value & 0xFFFFFFFF)))
