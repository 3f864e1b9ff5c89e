"""The Guest kernel: boot (start_kernel), the trap and interrupt dispatch
that entry.py hands every kernel entry to, and dying (panic).

It runs one static i386 Linux program as real ring-3 code.  Boot follows
Linux's order in miniature: lguest_init (lguest_data, LHCALL_LGUEST_INIT, the
kernel stack, the irq gates), the kernel's own page tables, the exception
and system-call gates, the clock, then the program (binfmt_elf) and the
first return to user mode.

Traps from user mode end as Linux's do_trap/do_page_fault would for a
process with no signal handlers: a page fault the address space allows is
served (mm.handle_mm_fault), anything else is a fatal signal, reported in
one line with the status a shell shows (128 + signal: 139 for SIGSEGV, 136
SIGFPE, 132 SIGILL).  The kernel also keeps the time (clock_ns: the Host's
lguest_data.time carried forward by the TSC) and a random generator
seeded at boot (get_random_bytes, AT_RANDOM, getrandom).
"""
import hashlib
import struct

from lguest_host.abi import (BOOT_MAGIC, FIRST_EXTERNAL_VECTOR, LGUEST_IRQS,
                             PAGE_OFFSET, PAGE_SIZE, SYSCALL_VECTOR, USER_CS,
                             USER_DS, X86_EFLAGS_IF, KERNEL_CS, BootParams, LguestData)
from x86core.elf import ELFError
from x86core.segmentation import make_descriptor

from . import boot, mm as mmu
from .entry import (LGUEST_DATA_VIRT, STACK_TOP, Entry, PtRegs, build_image)
from .vm import KernelMemory

SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV = 4, 5, 7, 8, 11
TRAP_SIGNALS = {0: (SIGFPE, "divide error"), 1: (SIGTRAP, "debug trap"),
                3: (SIGTRAP, "breakpoint"), 4: (SIGSEGV, "overflow"),
                5: (SIGSEGV, "bounds"), 6: (SIGILL, "invalid opcode"),
                7: (SIGSEGV, "device not available"), 10: (SIGSEGV, "invalid TSS"),
                11: (SIGBUS, "segment not present"), 12: (SIGBUS, "stack segment"),
                13: (SIGSEGV, "general protection"), 14: (SIGSEGV, "segmentation fault"),
                16: (SIGFPE, "x87 error"), 17: (SIGBUS, "alignment check"),
                19: (SIGFPE, "SIMD error")}
# Exception gates: trap gates (type 0xF, so the Host may let the CPU deliver
# them directly) except #PF, whose handler must run with interrupts off
# until it has read cr2; int3 and into may be used from ring 3.
TRAP_GATE_DPL3 = {3, 4}
X86_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
SCRATCH_VIRT = LGUEST_DATA_VIRT + 0x800
USER_CS_ENTRY, USER_DS_ENTRY = USER_CS >> 3, USER_DS >> 3


class Kernel:
    def __init__(self, hwcap: int = 0, trace=None):
        self.image = build_image()
        self.entry = Entry(self, self.image)
        self.hw = None
        self.mem = None
        self.lazy_mmu = False
        self.next_call = 0
        self.current_cr3 = 0
        self.current_cr0 = 0
        self.scratch_virt = SCRATCH_VIRT
        self.hwcap = hwcap
        self.pages = None
        self.swapper_pg_dir = 0
        self.mm = None
        self.task = None                  # the one process (syscalls.Task)
        self.timer_expired = False
        self.pv = boot.LguestState()           # boot.c's file-scope state
        self.console_virt = 0
        self.bounce_virt = 0
        self.ram_size = 0
        # trace(nr, args, result) after every system call (strace, for tests).
        self.trace = trace
        # The clock: lguest_data.time as last seen, and the TSC then.
        self.tsc_khz = 0
        self._clock_seen = None
        self._clock_base = 0
        self._clock_tsc = 0
        self._clock_last = 0
        self.boot_clock_ns = 0
        self._rng_key = b""
        self._rng_counter = 0

    def attach(self, hw) -> None:
        """Hook the kernel's native code onto the CPU (the Launcher does this
        when it loads the image)."""
        self.hw = hw
        self.mem = KernelMemory(hw)
        self.entry.attach(hw)

    # -- boot -------------------------------------------------------------------------------
    def start_kernel(self):
        yield from boot.lguest_init(self)
        raw = yield from self.mem.read(PAGE_OFFSET, BootParams.SIZE)
        params = dict(zip(("magic", "ram_size", "args", "args_len", "initrd", "initrd_size",
                           "console", "first_free"), struct.unpack("<8I", raw)))
        if params["magic"] != BOOT_MAGIC:
            yield from self.panic("no boot parameters from the Launcher")
        self.ram_size = params["ram_size"]
        self.pages = mmu.PageAllocator(params["first_free"], self.ram_size)
        yield from mmu.paging_init(self, self.ram_size + PAGE_SIZE)
        self.console_virt = PAGE_OFFSET + params["console"]
        self.bounce_virt = PAGE_OFFSET + (yield from mmu.get_zeroed_page(self))
        yield from self.setup_gdt()
        yield from self.trap_init()
        yield from self.time_init()
        args = yield from self.mem.read(PAGE_OFFSET + params["args"], params["args_len"])
        archive = yield from self.read_large(PAGE_OFFSET + params["initrd"], params["initrd_size"])
        from .syscalls import Task, parse_archive, parse_args
        argv, envp = parse_args(args)
        files = parse_archive(archive)
        if not files:
            yield from self.panic("no program to run")
        program_name, program = files[0]
        self.task = Task(self, argv or [program_name], files)
        try:
            yield from boot.lguest_enter_lazy_mmu_mode(self)
            mm, entry, sp = yield from self._exec(program, argv or [program_name], envp)
            yield from boot.lguest_leave_lazy_mmu_mode(self)
        except ELFError as err:
            self.lazy_mmu = False
            yield from self.task.fatal(f"{program_name}: cannot execute: {err}\n", 126)
            return
        except mmu.OutOfMemory:
            self.lazy_mmu = False
            yield from self.task.fatal(f"{program_name}: out of memory loading it\n", 137)
            return
        self.mm = mm
        yield from boot.lguest_write_cr3(self, mm.pgdir)
        frame = STACK_TOP - PtRegs.SIZE
        regs = [0] * 8 + [0, 0, entry, USER_CS, X86_EFLAGS_IF | 0x2, sp, USER_DS]
        yield from self.mem.write(frame, struct.pack("<15I", *regs))
        return frame, self.image.labels["start_user"]

    def read_large(self, virt: int, n: int):
        """Read a large block page by page, so that a page the Host has not
        shadowed yet costs one page's retry, not the whole block's."""
        parts = []
        end = virt + n
        while virt < end:
            chunk = min(end - virt, PAGE_SIZE - (virt & 0xFFF))
            parts.append((yield from self.mem.read(virt, chunk)))
            virt += chunk
        return b"".join(parts)

    def _exec(self, program, argv, envp):
        from .binfmt_elf import load_elf_binary
        return (yield from load_elf_binary(self, program, argv, envp, self.random_bytes(16)))

    def setup_gdt(self):
        """The user segments (Linux's GDT entries 14 and 15): flat, DPL 3."""
        yield from boot.lguest_write_gdt_entry(self, USER_CS_ENTRY,
                                               make_descriptor(0, 0xFFFFFFFF, 0xFB))
        yield from boot.lguest_write_gdt_entry(self, USER_DS_ENTRY,
                                               make_descriptor(0, 0xFFFFFFFF, 0xF3))

    def trap_init(self):
        """The exception gates and the system call gate (a DPL-3 trap gate:
        the one the Host can hand to the CPU for direct delivery)."""
        for vector in range(32):
            if vector in (2, 8, 15, 0x1F) or vector > 19:
                continue
            gate_type = 0xE if vector == 14 else 0xF
            dpl = 3 if vector in TRAP_GATE_DPL3 else 0
            lo, hi = boot.gate_words(self.image.vector_entry(vector), KERNEL_CS, gate_type, dpl)
            yield from boot.lguest_write_idt_entry(self, vector, lo, hi)
        lo, hi = boot.gate_words(self.image.vector_entry(SYSCALL_VECTOR), KERNEL_CS, 0xF, 3)
        yield from boot.lguest_write_idt_entry(self, SYSCALL_VECTOR, lo, hi)

    def time_init(self):
        """The clock event device: irq 0, unmasked once we have a handler;
        the clock source; the entropy pool's seed (the boot time and TSC,
        as Linux mixes them in at boot)."""
        self.tsc_khz = yield from self.mem.read_u32(LGUEST_DATA_VIRT + LguestData.tsc_khz)
        self.boot_clock_ns = yield from self.clock_ns()
        seed = b"%d:%d" % (self.boot_clock_ns, self.hw.rdtsc())
        self._rng_key = hashlib.sha256(seed).digest()
        # irq 0 through lguest_time_irq to the clock event handler, unmasked.
        yield from boot.lguest_time_init(self)

    def clock_ns(self):
        """The wall clock in ns (CLOCK_REALTIME): the Host's lguest_data.time,
        which it brings up to date at every interrupt, carried forward by
        the TSC in between (Linux's clocksource read and timekeeping in
        miniature); it never goes backwards."""
        data = yield from boot.lguest_clock_read(self)
        tsc = self.hw.rdtsc()
        if data != self._clock_seen:
            self._clock_seen, self._clock_base, self._clock_tsc = data, data, tsc
        ns = self._clock_base
        if self.tsc_khz:
            ns += (tsc - self._clock_tsc) * 1_000_000 // self.tsc_khz
        self._clock_last = max(ns, self._clock_last)
        return self._clock_last

    def monotonic_ns(self):
        """CLOCK_MONOTONIC: time since boot."""
        return (yield from self.clock_ns()) - self.boot_clock_ns

    def random_bytes(self, n: int) -> bytes:
        """The kernel's random generator (get_random_bytes): SHA-256 over the
        boot seed and a counter."""
        out = bytearray()
        while len(out) < n:
            self._rng_counter += 1
            out += hashlib.sha256(self._rng_key + self._rng_counter.to_bytes(8, "little")).digest()
        return bytes(out[:n])

    # -- every way into the kernel ----------------------------------------------------------
    def handle_trap(self, frame: int):
        vector = yield from self.mem.read_u32(frame + PtRegs.vector)
        if vector == SYSCALL_VECTOR:
            return (yield from self.task.system_call(frame))
        if FIRST_EXTERNAL_VECTOR <= vector < FIRST_EXTERNAL_VECTOR + LGUEST_IRQS:
            return (yield from self.do_IRQ(vector - FIRST_EXTERNAL_VECTOR))
        cs = yield from self.mem.read_u32(frame + PtRegs.cs)
        eip = yield from self.mem.read_u32(frame + PtRegs.eip)
        if cs & 3 != 3:
            yield from self.panic(f"kernel trap {vector} at {eip:#x}")
        if vector == 14:
            addr = yield from boot.lguest_read_cr2(self)
            err = yield from self.mem.read_u32(frame + PtRegs.errcode)
            try:
                fixed = yield from mmu.handle_mm_fault(self, self.mm, addr, bool(err & 2),
                                                       bool(err & 1))
            except mmu.OutOfMemory:
                # The OOM killer's choice is easy with one process.
                yield from self.task.fatal(f"lguest: {self.task.exe}: out of memory: "
                                           f"killed by signal 9\n", 128 + 9)
                return None
            if fixed:
                return None
            yield from self.task.force_sig(SIGSEGV,
                                           f"segmentation fault at {addr:#x} (ip {eip:#x})")
            return None
        signal, what = TRAP_SIGNALS.get(vector, (SIGSEGV, f"trap {vector}"))
        if vector == 6 and (yield from self._is_x87(eip)):
            what = "x87 floating-point instruction, and this machine has no FPU"
        yield from self.task.force_sig(signal, f"{what} (ip {eip:#x})")

    def _is_x87(self, eip: int):
        """Is the instruction at eip an x87 escape (D8-DF, after prefixes)?
        The CPU has no FPU and no math emulator runs here, so say so."""
        for at in range(eip, eip + 15):
            try:
                byte = (yield from mmu.copy_from_user(self, self.mm, at, 1))[0]
            except mmu.UserFault:
                return False
            if byte not in X86_PREFIXES:
                return 0xD8 <= byte <= 0xDF or byte == 0x9B          # or FWAIT
        return False

    def do_IRQ(self, irq: int):
        handled = yield from boot.generic_handle_irq(self, irq)
        if not handled and irq == 0:
            self.timer_expired = True
        return None

    def panic(self, message: str):
        """Kernel panic: tell the Host why, and stop."""
        yield from boot.lguest_panic(self, f"Kernel panic: {message}".encode())
