"""How the CPU gets into and out of the Guest kernel's Python code: the
kernel's real machine code (head and entry stubs, after arch/x86/lguest/
i386_head.S and arch/x86/kernel/entry_32.S) and the dispatcher behind its
native entry points.

The kernel proper is Python, written as coroutines (generators).  Whenever it
needs the machine it yields an operation, and the dispatcher turns that into
something the CPU really does at ring 1:

* Hypercall(nr, a1..a4): load EAX..ESI and go to `hcall_stub`, which executes
  `int $0x1f`; the UD2 after it resumes the coroutine with EAX.
* Fault(exc): a memory access through the Guest's page tables faulted (the
  Host has not filled its shadow yet).  The coroutine is parked, EIP is set
  to the `resume` UD2 and the #PF is delivered as the CPU would; once the
  Host has fixed the shadow and IRETs back, the access is retried.

Parked coroutines are keyed by the kernel stack pointer at the time, so
interrupts that arrive meanwhile (on the same stack, below) nest as they do
in a C kernel.  A coroutine that finishes returns to `ret_from_trap`, which
pops the saved registers and leaves through lguest_iret: the Guest's IRET
path, whose noirq range the Host never interrupts.
"""
import functools

import attrs

from lguest_host.abi import (USER_DS, KERNEL_PHYS, LGUEST_TRAP_ENTRY, PAGE_OFFSET, PAGE_SIZE,
                             TRAPS_WITH_ERROR_CODE, LguestData)
from x86core import interrupts
from x86core.asm import assemble, vector_stubs
from x86core.exceptions import CPUException
from x86core.native import NativeCode

KERNEL_VIRT = PAGE_OFFSET + KERNEL_PHYS
CODE_PAGES = 2
LGUEST_DATA_VIRT = KERNEL_VIRT + CODE_PAGES * PAGE_SIZE        # one page
STACK_PAGES = 2                                                # THREAD_SIZE 8 KiB
STACK_TOP = LGUEST_DATA_VIRT + PAGE_SIZE + STACK_PAGES * PAGE_SIZE
IMAGE_SIZE = STACK_TOP - KERNEL_VIRT

EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)


class PtRegs:
    """Offsets in the trap frame the entry stubs build (struct pt_regs):
    PUSHAD's eight registers, the vector and error code, then the CPU's frame."""
    edi, esi, ebp, esp_dummy, ebx, edx, ecx, eax = range(0, 32, 4)
    vector = 32
    errcode = 36
    eip = 40
    cs = 44
    eflags = 48
    esp = 52                            # only when the trap came from ring 3
    ss = 56
    SIZE = 60


@attrs.frozen
class Hypercall:
    nr: int
    a1: int = 0
    a2: int = 0
    a3: int = 0
    a4: int = 0


@attrs.frozen
class Fault:
    exc: CPUException


def head_source() -> str:
    data = LGUEST_DATA_VIRT + LguestData.irq_enabled
    lines = [
        "startup_32:",                          # entered at the physical address
        "    mov eax, offset high_entry",
        "    jmp eax",
        "high_entry:",
        f"    mov esp, {STACK_TOP:#x}",
        "start_kernel:",
        "    ud2",
        "resume:",
        "    ud2",
        "hcall_stub:",
        f"    int {LGUEST_TRAP_ENTRY:#x}",
        "hcall_resume:",
        "    ud2",
        "trap_common:",
        "    pushad",
        "trap_native:",
        "    ud2",
        "start_user:",                          # the first return to ring 3
        f"    mov eax, {USER_DS:#x}",
        "    mov ds, eax",
        "    mov es, eax",
        "ret_from_trap:",
        "    popad",
        "    add esp, 8",
        "lguest_iret:",
        "    push eax",
        "    mov eax, [esp + 12]",
        "lguest_noirq_start:",
        # SS: DS already holds whatever we return to (user space).
        f"    mov ss:[{data:#x}], eax",
        "    pop eax",
        "    iret",
        "lguest_noirq_end:",
    ]
    lines.append("vectors:")
    return "\n".join(lines)


@attrs.define(eq=False)
class KernelImage:
    """The kernel's machine code as the Launcher loads it: `code` goes at
    guest-physical KERNEL_PHYS, the data and stack pages after it are zero;
    `start` is the physical entry point."""
    code: bytes
    labels: dict
    size: int = IMAGE_SIZE
    load_phys: int = KERNEL_PHYS
    start: int = KERNEL_PHYS

    def vector_entry(self, vector: int) -> int:
        return self.labels[f"vector_{vector}"]


@functools.cache
def _assembled() -> tuple[bytes, dict]:
    program = assemble(head_source(), base=KERNEL_VIRT)
    labels = dict(program.labels)
    stubs, addresses = vector_stubs(labels["vectors"], labels["trap_common"],
                                    TRAPS_WITH_ERROR_CODE)
    labels.update({f"vector_{v}": a for v, a in enumerate(addresses)})
    return program.code + stubs, labels


def build_image() -> KernelImage:
    code, labels = _assembled()
    if len(code) > CODE_PAGES * PAGE_SIZE:
        raise AssertionError("the kernel's entry code outgrew its pages")
    return KernelImage(code=code, labels=dict(labels))


class Entry:
    """The dispatcher: runs kernel coroutines for the native entry points."""

    def __init__(self, kernel, image: KernelImage):
        self.kernel = kernel
        self.image = image
        self.parked: dict[int, object] = {}       # kernel ESP -> coroutine
        labels = image.labels
        self.resume_eip = labels["resume"]
        self.hcall_eip = labels["hcall_stub"]
        self.ret_eip = labels["ret_from_trap"]
        self.native = None

    def attach(self, hw) -> None:
        labels = self.image.labels
        self.native = NativeCode(hw)
        self.native.register(labels["start_kernel"], self._start_kernel)
        self.native.register(labels["resume"], self._resume)
        self.native.register(labels["hcall_resume"], self._hcall_resume)
        self.native.register(labels["trap_native"], self._trap)

    # -- native entry points ------------------------------------------------------------
    def _start_kernel(self, hw) -> None:
        self._step(hw, self.kernel.start_kernel(), None)

    def _trap(self, hw) -> None:
        self._step(hw, self.kernel.handle_trap(hw.regs[ESP]), None)

    def _resume(self, hw) -> None:
        self._continue(hw, None)

    def _hcall_resume(self, hw) -> None:
        self._continue(hw, hw.regs[EAX])

    def _continue(self, hw, value) -> None:
        coro = self.parked.pop(hw.regs[ESP], None)
        if coro is None:
            # Nothing waits here: a stray jump into the resume points.
            coro = self.kernel.panic(f"nothing to resume at esp {hw.regs[ESP]:#x}")
        self._step(hw, coro, value)

    # -- running a coroutine until it needs the machine ---------------------------------------
    def _step(self, hw, coro, value) -> None:
        try:
            op = coro.send(value)
        except StopIteration as done:
            # None: back through the frame we came in on; an address: through
            # that frame; (frame, eip): somewhere else first (start_user).
            where = done.value
            hw.eip = self.ret_eip
            if type(where) is tuple:
                hw.regs[ESP], hw.eip = where
            elif where is not None:
                hw.regs[ESP] = where
            return
        except Exception as bug:            # a kernel bug: panic, never a Host traceback
            self._step(hw, self.kernel.panic(f"kernel bug: {type(bug).__name__}: {bug}"), None)
            return
        esp = hw.regs[ESP]
        if type(op) is Hypercall:
            self.parked[esp] = coro
            regs = hw.regs
            regs[EAX], regs[EBX], regs[ECX], regs[EDX], regs[ESI] = (
                op.nr, op.a1 & 0xFFFFFFFF, op.a2 & 0xFFFFFFFF, op.a3 & 0xFFFFFFFF,
                op.a4 & 0xFFFFFFFF)
            hw.eip = self.hcall_eip
        elif type(op) is Fault:
            self.parked[esp] = coro
            hw.eip = self.resume_eip
            interrupts.deliver_exception(hw, op.exc)
        else:
            self._step(hw, self.kernel.panic(f"kernel bug: yielded {op!r}"), None)
