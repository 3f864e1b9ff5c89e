"""A tiny Linux for bare-CPU runs: an ELF32 program at ring 3 with flat
segments and a handful of `int 0x80` system calls.

It is what `python -m x86core run` uses to put real compiled programs on the
CPU without the hypervisor: the process image and initial stack follow the
i386 System V ABI and Linux's binfmt_elf (argc, argv, envp, auxv with
AT_PHDR AT_PHNUM AT_PAGESZ AT_ENTRY AT_RANDOM); the GDT uses Linux's i386
layout (user code 0x73, user data 0x7B, TLS entries 6-8).  Paging is on,
identity-mapped (linear == physical) but only where the process has memory:
its segments (text read-only), the break and the stack, so a stray access
is a #PF and ends the program with SIGSEGV as on Linux.  The full system-call set lives in the
Guest kernel (lguest_guest); here it is write, writev, exit, exit_group,
brk and set_thread_area, and -ENOSYS for everything else.
"""
from __future__ import annotations

import os
import struct
import sys

from .cpu import CPU, StopExecution
from .elf import ELFError, ELFImage, parse_elf
from .exceptions import BP, DE, GP, PF, SS, UD, NP, CPUException
from .segmentation import make_descriptor

ENOSYS, EFAULT, EINVAL, EBADF, ESRCH = 38, 14, 22, 9, 3
GDT_BASE = 0x1000
GDT_ENTRIES = 32
PAGE_DIRECTORY = 0x2000
PAGE_TABLES = 0x3000            # up to 64 page tables follow the directory
STACK_SIZE = 8 << 20
USER_CS, USER_DS = 14 << 3 | 3, 15 << 3 | 3
TLS_MIN, TLS_MAX = 6, 8
STACK_TOP = 0x0FFFF000
MEMORY = 256 << 20
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_ENTRY, AT_UID, AT_EUID, AT_GID, AT_EGID = (
    0, 3, 4, 5, 6, 9, 11, 12, 13, 14)
AT_RANDOM = 25
SIGNALS = {DE: (8, "SIGFPE"), UD: (4, "SIGILL"), BP: (5, "SIGTRAP"), GP: (11, "SIGSEGV"),
           PF: (11, "SIGSEGV"), SS: (11, "SIGSEGV"), NP: (11, "SIGSEGV")}


class Process:
    """One program on a bare CPU, with its system calls."""

    def __init__(self, path: str, argv: list[str], env: list[str] | None = None,
                 stdout=None, stderr=None, cache: bool = True, memory: int = MEMORY,
                 image: ELFImage | None = None):
        """Load the ELF file at `path`, or `image` when one is given (a flat
        binary described as an image, say)."""
        if image is None:
            with open(path, "rb") as f:
                image = parse_elf(f.read())
        self.image = image
        self.cpu = CPU(memory)
        self.cpu.blocks.enabled = cache
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr.buffer
        self.exit_status: int | None = None
        self.reason = ""
        self.syscalls = 0
        self._load(argv, env if env is not None else [])

    # -- image and stack --------------------------------------------------------------------
    def _load(self, argv, env):
        cpu, mem, image = self.cpu, self.cpu.mem, self.image
        self.next_table = PAGE_TABLES
        for seg in image.loads:
            if seg.vaddr < 0x100000 or seg.vaddr + seg.memsz > STACK_TOP - STACK_SIZE:
                raise ELFError(f"segment at {seg.vaddr:#x} is outside the user address range "
                               f"{0x100000:#x}-{STACK_TOP - STACK_SIZE:#x}")
            mem.load(seg.vaddr, image.segment_bytes(seg))
            self.map_range(seg.vaddr, seg.memsz, writable=bool(seg.flags & 2))
        self.map_range(STACK_TOP - STACK_SIZE, STACK_SIZE, writable=True)
        self.map_range(GDT_BASE, 8 * GDT_ENTRIES, writable=True, user=False)
        self.brk = self.brk_start = (image.end + 0xFFF) & ~0xFFF
        gdt = bytearray(8 * GDT_ENTRIES)
        struct.pack_into("<Q", gdt, 8 * 14, make_descriptor(0, 0xFFFFFFFF, 0xFB))
        struct.pack_into("<Q", gdt, 8 * 15, make_descriptor(0, 0xFFFFFFFF, 0xF3))
        mem.load(GDT_BASE, bytes(gdt))
        cpu.gdtr = (GDT_BASE, 8 * GDT_ENTRIES - 1)
        cpu.write_cr(3, PAGE_DIRECTORY)
        cpu.write_cr(0, cpu.cr0 | 0x80010001)         # PE, WP, PG
        cpu.cpl = 3
        cpu.load_flat_segments(USER_CS & ~3, USER_DS & ~3)
        cpu.seg_sel[4] = cpu.seg_sel[5] = 0
        cpu.set_eflags(0x202)
        cpu.regs[4] = self._build_stack(argv, env)
        cpu.eip = image.entry
        cpu.exception_hook = self._exception

    def map_range(self, start: int, length: int, writable: bool, user: bool = True) -> None:
        """Identity-map [start, start+length), for ring 3 unless `user` is False."""
        mem = self.cpu.mem
        flags = 0x1 | (0x4 if user else 0) | (0x2 if writable else 0)
        for page in range(start >> 12, (start + length + 0xFFF) >> 12):
            pde_addr = PAGE_DIRECTORY + 4 * (page >> 10)
            pde = mem.read(pde_addr, 4)
            if not pde & 1:
                if self.next_table >= PAGE_TABLES + 64 * 4096:
                    raise ELFError("address space too scattered for the bare-CPU loader")
                pde = self.next_table | 0x7
                self.next_table += 4096
                mem.write(pde_addr, 4, pde)
            pte_addr = (pde & ~0xFFF) + 4 * (page & 0x3FF)
            old = mem.read(pte_addr, 4)
            mem.write(pte_addr, 4, page << 12 | flags | (old & 0x2))
        self.cpu.flush_tlb()

    def _build_stack(self, argv, env) -> int:
        mem = self.cpu.mem
        sp = STACK_TOP

        def put(data: bytes) -> int:
            nonlocal sp
            sp -= len(data)
            mem.load(sp, data)
            return sp

        random_bytes = put(os.urandom(16) if os.environ.get("X86CORE_RANDOM") != "fixed"
                           else bytes(range(16)))
        argv_ptrs = [put(a.encode() + b"\0") for a in argv]
        env_ptrs = [put(e.encode() + b"\0") for e in env]
        sp &= ~0xF
        image = self.image
        auxv = [AT_PHDR, image.phdr_vaddr, AT_PHENT, image.phentsize, AT_PHNUM, image.phnum,
                AT_PAGESZ, 4096, AT_ENTRY, image.entry, AT_UID, 0, AT_EUID, 0, AT_GID, 0,
                AT_EGID, 0, AT_RANDOM, random_bytes, AT_NULL, 0]
        words = [len(argv)] + argv_ptrs + [0] + env_ptrs + [0] + auxv
        sp -= 4 * len(words)
        sp &= ~0xF
        mem.load(sp, struct.pack(f"<{len(words)}I", *words))
        return sp

    # -- running ------------------------------------------------------------------------------
    def run(self, max_instructions: int | None = None) -> int:
        why = self.cpu.run(max_instructions)
        if self.exit_status is None:
            if why == "limit":
                self.reason = f"instruction limit reached at eip {self.cpu.eip:#010x}"
                self.exit_status = 124
            elif why == "halt":
                self.reason = "halted"
                self.exit_status = 0
            else:
                self.exit_status = 128 + 11
                self.reason = getattr(self.cpu, "stop_reason", why)
        return self.exit_status

    def _exception(self, cpu, exc: CPUException) -> bool:
        if exc.software and exc.vector == 0x80:
            self.syscalls += 1
            cpu.regs[0] = self.syscall(cpu.regs[0]) & 0xFFFFFFFF
            return True
        signo, name = SIGNALS.get(exc.vector, (11, "SIGSEGV"))
        self.reason = f"killed by {name}: {exc} at eip {cpu.eip:#010x}"
        if exc.vector == PF:
            self.reason += f" (address {cpu.cr2:#010x})"
        self.exit_status = 128 + signo
        raise StopExecution(self.reason)

    # -- system calls -----------------------------------------------------------------------------
    def syscall(self, nr: int) -> int:
        r = self.cpu.regs
        handler = SYSCALLS.get(nr)
        if handler is None:
            return -ENOSYS
        try:
            return handler(self, r[3], r[1], r[2], r[6], r[7], r[5])
        except CPUException:
            return -EFAULT

    def user_read(self, addr: int, length: int) -> bytes:
        """Bytes of user memory as the process may read them: page by page
        through its page tables (a bad pointer is -EFAULT, not a crash)."""
        out = bytearray()
        cpu = self.cpu
        while len(out) < length:
            a = (addr + len(out)) & 0xFFFFFFFF
            phys = cpu.translate(a, False, user=True)
            n = min(length - len(out), 4096 - (a & 0xFFF))
            out += cpu.mem.dump(phys, n)
        return bytes(out)

    def sys_exit(self, status, *_):
        self.exit_status = status & 0xFF
        self.reason = f"exit({status & 0xFF})"
        raise StopExecution(self.reason)

    def sys_write(self, fd, buf, count, *_):
        data = self.user_read(buf, count)
        stream = {1: self.stdout, 2: self.stderr}.get(fd)
        if stream is None:
            return -EBADF
        stream.write(data)
        stream.flush()
        return count

    def sys_writev(self, fd, iov, iovcnt, *_):
        total = 0
        for i in range(iovcnt):
            base, length = struct.unpack("<II", self.user_read(iov + 8 * i, 8))
            n = self.sys_write(fd, base, length)
            if n < 0:
                return n
            total += n
        return total

    def sys_brk(self, addr, *_):
        if addr and self.brk_start <= addr < STACK_TOP - STACK_SIZE:
            new = addr
            if new > self.brk:
                self.cpu.mem.ram[self.brk:new] = 0
                self.map_range(self.brk, new - self.brk, writable=True)
            self.brk = new
        return self.brk

    def sys_set_thread_area(self, uinfo, *_):
        raw = self.user_read(uinfo, 16)
        entry, base, limit, flags = struct.unpack("<iIII", raw)
        if entry == -1:
            entry = next((e for e in range(TLS_MIN, TLS_MAX + 1)
                          if not self.cpu.read_system(GDT_BASE + 8 * e, 8)), -1)
            if entry < 0:
                return -ESRCH
            self.cpu.translate(uinfo, True, user=True)
            self.cpu.write_system(uinfo, 4, entry)
        if not TLS_MIN <= entry <= TLS_MAX:
            return -EINVAL
        seg_32bit, contents, read_exec_only = flags & 1, flags >> 1 & 3, flags >> 3 & 1
        limit_in_pages, not_present, useable = flags >> 4 & 1, flags >> 5 & 1, flags >> 6 & 1
        access = (0 if not_present else 0x80) | 0x70 | contents << 2 | (0 if read_exec_only else 2)
        nibble = limit_in_pages << 3 | seg_32bit << 2 | useable
        limit = (limit << 12 | 0xFFF) if limit_in_pages else limit
        desc = make_descriptor(base, limit, access, nibble)
        self.cpu.write_system(GDT_BASE + 8 * entry, 8, desc)
        return 0


SYSCALLS = {
    1: Process.sys_exit, 4: Process.sys_write, 45: Process.sys_brk, 146: Process.sys_writev,
    243: Process.sys_set_thread_area, 252: Process.sys_exit,
}
