"""The Launcher, after Documentation/lguest/lguest.c: it lays out a Guest's
memory (boot parameters, kernel image, the program archive, boot page
tables mapping all memory at 0 and at PAGE_OFFSET), asks the Host to
initialize the Guest, and then runs it, serving what comes back: the early
console (LHCALL_NOTIFY of a string) and the byte-stream console device
(LHCALL_NOTIFY of the device page).

The Guest's kernel is handed over as an object with an `image` (the bytes
to load, where, and the entry point) and an `attach(cpu)` that hooks its
native code onto the CPU: the loading half of "boot this kernel".
"""
import os
import struct
import sys

import attrs

from .abi import (FIRST_EXTERNAL_VECTOR, LGUEST_IRQS, BOOT_MAGIC, LGUEST_SHUTDOWN_POWEROFF, PAGE_OFFSET, PAGE_SIZE, BootParams,
                  ConsoleDevice)
from .core import lguest_host_init
from .lg import HOST_RESERVED
from .x86.switcher_32 import HOST_TIMER_VECTOR
from . import lguest_user

_U32 = struct.Struct("<I")
PTE_P, PTE_W, PTE_A, PTE_D = 0x1, 0x2, 0x20, 0x40
EIO = 5


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _encode(s) -> bytes:
    """An argument or file name as the bytes it came from: Python decodes
    the command line (and file names) with surrogateescape, so an argument
    that is not UTF-8 (say the byte 0xFF) goes back to its own bytes."""
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def pack_args(argv: list, envp: list) -> bytes:
    """The argument block: argc and envc (u32 each), then the argv and envp
    strings, each NUL-terminated (counted, so an empty argument survives)."""
    parts = [_encode(s) for s in argv] + [_encode(s) for s in envp]
    return struct.pack("<II", len(argv), len(envp)) + b"".join(p + b"\0" for p in parts)


def pack_archive(files: list) -> bytes:
    """The file archive: (name length, data length, name, data) records, padded to 4."""
    out = bytearray()
    for name, data in files:
        name = _encode(name)
        out += struct.pack("<II", len(name), len(data)) + name + bytes(data)
        out += bytes(-len(out) % 4)
    out += struct.pack("<II", 0, 0)
    return bytes(out)


@attrs.define(eq=False)
class Outcome:
    """How a run ended: the exit status the Guest reported (None if it never
    did), and the Host's reason when the Guest died otherwise."""
    status: int | None
    reason: str | None
    exit: object = None


class Launcher:
    def __init__(self, mem_mib: int = 64, *, direct_traps: bool = True,
                 syscall_vector: int | None = None, stdin=None, stdout=None, stderr=None):
        if not 2 <= mem_mib <= 1024:
            raise ValueError("Guest memory must be 2 MiB to 1 GiB")
        self.ram_size = mem_mib << 20
        self.guest_bytes = self.ram_size + PAGE_SIZE        # RAM, then the device page
        self.host = lguest_host_init(self.guest_bytes)
        if syscall_vector is not None and not (
                FIRST_EXTERNAL_VECTOR + LGUEST_IRQS <= syscall_vector < 0x100
                and syscall_vector != HOST_TIMER_VECTOR):
            # Linux's init_interrupts refuses a vector the Host already uses:
            # ours are the Guest's 32 irqs and the Host's timer.
            raise ValueError(f"system call vector {syscall_vector:#x} is taken or not an "
                             f"external vector")
        vectors = {0x80} | ({syscall_vector} if syscall_vector is not None else set())
        self.config = dict(direct_traps=direct_traps, syscall_vectors=frozenset(vectors))
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr.buffer
        self.cpu = None
        self.status: int | None = None
        self.console_phys = self.ram_size

    # -- loading ------------------------------------------------------------------------------
    def guest_write(self, gpa: int, data: bytes) -> None:
        self.host.mem.load(HOST_RESERVED + gpa, data)

    def guest_read(self, gpa: int, n: int) -> bytes:
        base = HOST_RESERVED + gpa
        return self.host.mem.ram[base:base + n].tobytes()

    def boot(self, kernel, argv=(), envp=(), files=()) -> None:
        """Lay out memory, initialize the Guest and attach its kernel's native code."""
        image = kernel.image
        end = image.load_phys + page_align(image.size)
        self.guest_write(image.load_phys, image.code)
        args = pack_args(list(argv), list(envp))
        args_at = end
        end = page_align(args_at + len(args))
        archive = pack_archive(list(files))
        initrd_at = end
        end = page_align(initrd_at + len(archive))
        pgdir, end = self.setup_pagetables(end)
        if end > self.ram_size:
            raise lguest_user.LauncherError(
                f"the kernel, arguments and {len(archive)} bytes of files need "
                f"{end >> 20} MiB or more; give the Guest more memory")
        self.guest_write(args_at, args)
        self.guest_write(initrd_at, archive)
        params = {BootParams.magic: BOOT_MAGIC, BootParams.ram_size: self.ram_size,
                  BootParams.args: args_at, BootParams.args_len: len(args),
                  BootParams.initrd: initrd_at, BootParams.initrd_size: len(archive),
                  BootParams.console: self.console_phys, BootParams.first_free: end}
        for offset, value in params.items():
            self.guest_write(offset, _U32.pack(value))
        self.cpu = lguest_user.initialize(self.host, HOST_RESERVED, self.guest_bytes // PAGE_SIZE,
                                          pgdir, image.start, **self.config)
        kernel.attach(self.host.hw)

    def setup_pagetables(self, at: int) -> tuple[int, int]:
        """Map all Guest memory (and the device page) at 0 and at PAGE_OFFSET,
        supervisor read/write, as lguest.c's setup_pagetables does; returns
        (page directory, first byte after the tables)."""
        pages = self.guest_bytes // PAGE_SIZE
        ptes = (pages + 1023) // 1024
        pgdir = at
        linear = at + PAGE_SIZE
        table = bytearray(ptes * PAGE_SIZE)
        for i in range(pages):
            _U32.pack_into(table, i * 4, (i << 12) | PTE_P | PTE_W | PTE_A | PTE_D)
        directory = bytearray(PAGE_SIZE)
        for i in range(ptes):
            entry = (linear + i * PAGE_SIZE) | PTE_P | PTE_W | PTE_A
            _U32.pack_into(directory, i * 4, entry)
            _U32.pack_into(directory, ((PAGE_OFFSET >> 22) + i) * 4, entry)
        if at + PAGE_SIZE * (1 + ptes) <= self.ram_size:
            self.guest_write(linear, bytes(table))
            self.guest_write(pgdir, bytes(directory))
        return pgdir, at + PAGE_SIZE * (1 + ptes)

    # -- running ------------------------------------------------------------------------------
    def run(self, budget: int | None = None) -> Outcome:
        """Run until the Guest dies or powers off (or `budget` instructions)."""
        cpu = self.cpu
        while True:
            exit_ = lguest_user.read(cpu, budget)
            if exit_.kind == "notify":
                self.handle_notify(exit_.value)
                continue
            if exit_.kind == "dead":
                reason = exit_.value
                if self.status is not None and cpu.lg.shutdown_reason == LGUEST_SHUTDOWN_POWEROFF:
                    reason = None
                return Outcome(self.status, reason, exit_)
            if exit_.kind == "halted":
                return Outcome(self.status, "the Guest halted with nothing to wake it", exit_)
            return Outcome(self.status, f"stopped: {exit_.kind}", exit_)

    def handle_notify(self, addr: int) -> None:
        if addr == self.console_phys:
            self.console_request()
        elif 0 <= addr < self.ram_size:
            # The early console: a NUL-terminated string.
            text = self.guest_read(addr, min(256, self.ram_size - addr)).split(b"\0", 1)[0]
            self.stderr.write(text)
            self.stderr.flush()
        # Anything else names no device we have: ignored, as lguest.c does.

    def console_request(self) -> None:
        base = self.console_phys
        cmd, fd, buf, length = struct.unpack("<4I", self.guest_read(base, 16))
        result = -EIO
        if cmd == ConsoleDevice.CMD_EXIT:
            self.status = fd & 0xFF
            result = 0
        elif 0 <= buf and buf + length <= self.ram_size and length <= 1 << 20:
            if cmd == ConsoleDevice.CMD_WRITE and fd in (1, 2):
                out = self.stdout if fd == 1 else self.stderr
                out.write(self.guest_read(buf, length))
                out.flush()
                result = length
            elif cmd == ConsoleDevice.CMD_READ and fd == 0:
                data = self._read_stdin(length)
                self.guest_write(buf, data)
                result = len(data)
        self.guest_write(base + ConsoleDevice.result, struct.pack("<i", result))

    def _read_stdin(self, length: int) -> bytes:
        stream = self.stdin
        reader = getattr(stream, "read1", None)
        try:
            return reader(length) if reader else stream.read(length)
        except (OSError, ValueError):
            return b""
