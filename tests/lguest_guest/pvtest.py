"""A harness for testing the Guest's paravirt ops (lguest_guest/boot.py)
inside a real Guest on the real Host.

PvKernel is the Guest kernel cut down to what the ops need: its start_kernel
does lguest_init, the kernel's page tables (mm.paging_init and the page
allocator, as Kernel.start_kernel), the user segments and the exception
gates, then runs a test-supplied generator `body(k)` as kernel code at ring
1, records what it returns (or the traceback it raised), and powers off.
The Launcher boots it like any kernel.

What a body can do besides calling ops (all at ring 1, on the CPU):
* `yield from k.run_code(code, eax=..., ...)`: run machine code (bytes or
  assembler text) at ring 1 in a fresh kernel page and come back with the
  registers and EFLAGS it ended with.  A kernel trap in it (say #GP from a
  privileged instruction) is recorded in k.traps and ends the block early
  (result["trapped"]); int3 just returns to the next instruction.
* `k.peek(fn)`: call fn(cpu) with the Host's LgCpu right now, without
  leaving the Guest.  The Guest runs inside the Host's process, so at any
  point where Guest code runs the Host's records are consistent: every
  hypercall made so far has been carried out and nothing else is in flight.
  This is how tests look at Host state (cpu.ts, lg.pgdirs, shadows, stats)
  between two ops; it is test code, never Guest kernel code.
* interrupts: every virtual interrupt the kernel takes is appended to
  k.irqs as (irq, irq_enabled at entry) and dispatched through the irq
  descriptors boot.py keeps (generic_handle_irq); irq 0 without a handler
  sets k.timer_expired, as the real kernel does.
"""
import io
import struct
import traceback

import attrs

from lguest_guest import boot, mm as mmu
from lguest_guest.entry import ESP, Entry, PtRegs
from lguest_guest.kernel import Kernel
from lguest_host.abi import (BOOT_MAGIC, FIRST_EXTERNAL_VECTOR, LGUEST_IRQS, PAGE_OFFSET,
                             PAGE_SIZE, SWITCHER_PGD_INDEX, BootParams)
from lguest_host.core import lgread
from lguest_host.launcher import Launcher
from x86core.asm import assemble

REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UD2 = b"\x0f\x0b"


@attrs.frozen
class RunCode:
    """The op a body yields to run machine code: start at `addr` with
    `regs` (name -> value); the UD2 at `end` brings the CPU back."""
    addr: int
    end: int
    regs: tuple


class _Replay:
    """Hands Entry._step an operation we already took from the coroutine,
    then forwards to it (so Entry parks and resumes it as usual)."""
    __slots__ = ("op", "coro")

    def __init__(self, op, coro):
        self.op = op
        self.coro = coro

    def send(self, value):
        op, self.op = self.op, None
        return op


class _Finished:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def send(self, value):
        raise StopIteration(self.value)


class _Raising:
    __slots__ = ("bug",)

    def __init__(self, bug):
        self.bug = bug

    def send(self, value):
        raise self.bug


class PvEntry(Entry):
    """The kernel's dispatcher plus one operation: RunCode."""

    def _step(self, hw, coro, value) -> None:
        if type(coro) is _Replay:
            coro = coro.coro
        try:
            op = coro.send(value)
        except StopIteration as done:
            return super()._step(hw, _Finished(done.value), None)
        except Exception as bug:
            return super()._step(hw, _Raising(bug), None)
        if type(op) is RunCode:
            self.parked[hw.regs[ESP]] = coro
            for name, val in op.regs:
                hw.regs[REG_NAMES.index(name)] = val & 0xFFFFFFFF
            hw.eip = op.addr
            return None
        return super()._step(hw, _Replay(op, coro), None)

    def code_done(self, hw) -> None:
        """The UD2 after a block: resume the body with the registers."""
        result = {name: hw.regs[i] for i, name in enumerate(REG_NAMES)}
        result["eflags"] = hw.get_eflags()
        self._continue(hw, result)


class PvKernel(Kernel):
    def __init__(self, body, **kw):
        super().__init__(**kw)
        self.entry = PvEntry(self, self.image)
        self.body = body
        self.result = None
        self.error = None
        self.done = False
        self.host_cpu = None            # the Host's LgCpu, for peek (set by run_pv)
        self.traps = []                 # kernel traps: (vector, eip, errcode, cr2)
        self.irqs = []                  # (irq, irq_enabled at entry)
        self.params = {}
        self._code_next = 0
        self._code_limit = 0
        self._block_end = None          # the UD2 of the block running, if any

    # -- boot -------------------------------------------------------------------------------
    def start_kernel(self):
        yield from boot.lguest_init(self)
        raw = yield from self.mem.read(PAGE_OFFSET, BootParams.SIZE)
        self.params = dict(zip(("magic", "ram_size", "args", "args_len", "initrd",
                                "initrd_size", "console", "first_free"),
                               struct.unpack("<8I", raw)))
        if self.params["magic"] != BOOT_MAGIC:
            yield from self.panic("no boot parameters")
        self.ram_size = self.params["ram_size"]
        self.pages = mmu.PageAllocator(self.params["first_free"], self.ram_size)
        yield from mmu.paging_init(self, self.ram_size + PAGE_SIZE)
        self.console_virt = PAGE_OFFSET + self.params["console"]
        yield from self.setup_gdt()
        yield from self.trap_init()
        try:
            self.result = yield from self.body(self)
        except Exception:
            self.error = traceback.format_exc()
        self.done = True
        yield from boot.lguest_power_off(self, b"pvtest done")

    # -- traps and interrupts ---------------------------------------------------------------
    def handle_trap(self, frame: int):
        vector = yield from self.mem.read_u32(frame + PtRegs.vector)
        if FIRST_EXTERNAL_VECTOR <= vector < FIRST_EXTERNAL_VECTOR + LGUEST_IRQS:
            irq = vector - FIRST_EXTERNAL_VECTOR
            enabled = yield from boot.save_fl(self)
            self.irqs.append((irq, enabled))
            handled = yield from boot.generic_handle_irq(self, irq)
            if not handled and irq == 0:
                self.timer_expired = True
            return None
        eip = yield from self.mem.read_u32(frame + PtRegs.eip)
        err = yield from self.mem.read_u32(frame + PtRegs.errcode)
        cr2 = (yield from boot.lguest_read_cr2(self)) if vector == 14 else None
        self.traps.append((vector, eip, err, cr2))
        if vector == 3:
            return None                 # int3: carry on after it
        if self._block_end is not None:
            # Abandon the block: the iret goes to its closing UD2.
            yield from self.mem.write_u32(frame + PtRegs.eip, self._block_end)
            return None
        yield from self.panic(f"kernel trap {vector} at {eip:#x}")

    # -- what bodies use --------------------------------------------------------------------
    def peek(self, fn):
        """fn(cpu) on the Host's LgCpu, now."""
        return fn(self.host_cpu)

    def code_space(self, size: int):
        """`size` bytes (at most a page) of fresh kernel memory for code,
        never reused, so no translation of earlier code can be run."""
        if size > PAGE_SIZE:
            raise ValueError("a code block must fit in a page")
        if self._code_next + size > self._code_limit:
            pa, _zero = self.pages.alloc()
            self._code_next = PAGE_OFFSET + pa
            self._code_limit = self._code_next + PAGE_SIZE
        addr = self._code_next
        self._code_next += size
        return addr
        yield

    def run_code(self, code, **regs):
        """Run `code` (bytes, or assembler text assembled at its address) at
        ring 1; returns the registers, eflags and whether a trap ended it."""
        if isinstance(code, str):
            probe = assemble(code, base=0).code
            addr = yield from self.code_space(len(probe) + 16)
            body = assemble(code, base=addr).code
        else:
            body = bytes(code)
            addr = yield from self.code_space(len(body) + 16)
        end = addr + len(body)
        yield from self.mem.write(addr, body + UD2)
        self.entry.native.register(end, self.entry.code_done)
        traps_before = len(self.traps)
        self._block_end = end
        try:
            result = yield RunCode(addr, end, tuple(regs.items()))
        finally:
            self._block_end = None
        result["trapped"] = len(self.traps) > traps_before
        result["addr"] = addr
        return result

    def lguest_data(self, field: int):
        return (yield from self.mem.read_u32(boot.LD + field))


@attrs.define
class PvRun:
    result: object
    error: str | None
    done: bool
    reason: str | None
    stderr: bytes
    launcher: object
    kernel: PvKernel

    @property
    def cpu(self):
        return self.launcher.cpu

    @property
    def lg(self):
        return self.launcher.cpu.lg

    @property
    def stats(self):
        return self.launcher.cpu.lg.stats


def run_pv(body, *, mem_mib: int = 8, direct_traps: bool = True, budget: int = 50_000_000,
           setup=None, check: bool = True) -> PvRun:
    """Boot a PvKernel running `body` and run it to the end.  `setup(launcher)`
    runs after boot and before the first instruction.  With check, a body
    that raised or a Guest that died otherwise fails the test here."""
    err = io.BytesIO()
    launcher = Launcher(mem_mib, direct_traps=direct_traps, stdin=io.BytesIO(b""),
                        stdout=io.BytesIO(), stderr=err)
    kernel = PvKernel(body)
    launcher.boot(kernel, ["pvtest"], [], [("pvtest", b"")])
    kernel.host_cpu = launcher.cpu
    if setup is not None:
        setup(launcher)
    outcome = launcher.run(budget)
    run = PvRun(kernel.result, kernel.error, kernel.done, outcome.reason, err.getvalue(),
                launcher, kernel)
    if check:
        assert kernel.error is None, kernel.error
        assert kernel.done, f"the body did not finish: {outcome.reason}"
        assert outcome.reason == "CRASH: pvtest done", outcome.reason
    return run


# -- looking at the Host's side (test code: these read Host memory directly) --------------------
def ld_read(cpu, field: int, size: int = 4) -> int:
    """A field of the Guest's struct lguest_data, as the Host reads it."""
    return lgread(cpu, cpu.lg.lguest_data + field, size)


def shadow_pgd(cpu, vaddr: int, slot: int | None = None) -> int:
    """The shadow page-directory entry for vaddr (0 if there is no shadow)."""
    lg = cpu.lg
    pgdir = lg.pgdirs[cpu.cpu_pgd if slot is None else slot].pgdir
    if not pgdir:
        return 0
    return lg.host.mem.read(pgdir + (vaddr >> 22) * 4, 4)


def shadow_pte(cpu, vaddr: int, slot: int | None = None) -> int:
    """The shadow PTE for vaddr, 0 when its page table is not shadowed."""
    spgd = shadow_pgd(cpu, vaddr, slot)
    if not spgd & 1:
        return 0
    return cpu.lg.host.mem.read((spgd & 0xFFFFF000) + ((vaddr >> 12) & 0x3FF) * 4, 4)


def shadow_user_pgds(cpu, slot: int | None = None) -> list:
    """Indexes of present shadow directory entries below the kernel."""
    return [i for i in range(PAGE_OFFSET >> 22)
            if shadow_pgd(cpu, i << 22, slot) & 1]


def shadow_kernel_pgds(cpu, slot: int | None = None) -> list:
    return [i for i in range(PAGE_OFFSET >> 22, SWITCHER_PGD_INDEX)
            if shadow_pgd(cpu, i << 22, slot) & 1]
