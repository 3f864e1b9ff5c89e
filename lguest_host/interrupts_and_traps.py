"""Interrupts and traps, after drivers/lguest/interrupts_and_traps.c (2.6.32).

Three kinds of event reach a Guest: virtual interrupts (the Launcher's devices
and the Guest's clock), traps the Guest takes while it runs, and the Host's
own interrupts (never the Guest's business).  Virtual interrupts and the
traps the Host wants to see first are "reflected": the Host builds on the
Guest's stack exactly the frame the CPU would have pushed and points the
Guest at its handler (set_guest_interrupt).  Trap gates the Guest may take
without the Host (system calls, most exceptions) are copied into the IDT the
CPU uses while the Guest runs (copy_traps), so they never leave the Guest.

The Guest's IDT lives in cpu.idt as 256 (a, b) pairs of 32-bit words, the
two halves of an i386 gate descriptor.  The clock runs on the Host's virtual
clock (host.now_ns()), so runs are reproducible; check_timer stands in for
Linux's hrtimer callback.

Accesses to struct lguest_data mirror get_user/put_user: where Linux
tolerates a failed access we check the address first and carry on, where it
kills we kill with its reason.  Pushes onto the Guest stack go through
core.lgwrite, which kills the Guest on a bad address.
"""
from .abi import (FIRST_EXTERNAL_VECTOR, GUEST_PL, IDT_ENTRIES, LGUEST_CS, LGUEST_IRQS,
                  LGUEST_TRAP_ENTRY, PAGE_SIZE, X86_EFLAGS_IF, LguestData, __KERNEL_CS)
from .core import lgread, lguest_address_ok, lgwrite, lgwrite_bytes, write_timestamp
from .lg import CHANGED_IDT, LgCpu, Lguest, kill_guest

_U32 = 0xFFFFFFFF
GUEST_KERNEL_CS = __KERNEL_CS | GUEST_PL


# -- reading an IDT entry ---------------------------------------------------------------
def idt_address(lo: int, hi: int) -> int:
    """The handler's address: low half in the first word, high half in the second."""
    return (lo & 0x0000FFFF) | (hi & 0xFFFF0000)


def idt_type(lo: int, hi: int) -> int:
    """The gate type nibble (0xE interrupt gate, 0xF trap gate)."""
    return (hi >> 8) & 0xF


def idt_present(lo: int, hi: int) -> bool:
    return bool(hi & 0x8000)


def has_err(trap: int) -> bool:
    """Does the CPU push an error code for this exception?"""
    return trap == 8 or 10 <= trap <= 14 or trap == 17


# -- lguest_data access with get_user/put_user semantics ----------------------------------
def _get_user(cpu: LgCpu, offset: int) -> int | None:
    """A u32 field of lguest_data, or None where get_user would fail."""
    base = cpu.lg.lguest_data
    if base is None or not lguest_address_ok(cpu.lg, base + offset, 4):
        return None
    return lgread(cpu, base + offset, 4)


def _put_user(cpu: LgCpu, offset: int, value: int) -> bool:
    """Store a u32 field of lguest_data; False where put_user would fail."""
    base = cpu.lg.lguest_data
    if base is None or not lguest_address_ok(cpu.lg, base + offset, 4):
        return False
    lgwrite(cpu, base + offset, 4, value)
    return True


# -- delivering an interrupt or trap ------------------------------------------------------
def push_guest_stack(cpu: LgCpu, vstack: int, val: int) -> int:
    """Push one word onto the Guest stack at virtual `vstack`; the new stack
    pointer is returned.  Each word goes where the CPU's push would put it,
    through the Guest's page tables, even across a page boundary onto a page
    that is not physically next to it (Linux translates only the top of the
    stack and writes physically below it, which differs from the CPU on the
    ring-1 stack's page-aligned top)."""
    vstack = (vstack - 4) & _U32
    data = (val & _U32).to_bytes(4, "little")
    first = min(4, 0x1000 - (vstack & 0xFFF))
    _write_stack(cpu, vstack, data[:first])
    if first < 4 and cpu.lg.dead is None:
        _write_stack(cpu, (vstack + first) & _U32, data[first:])
    return vstack


def _write_stack(cpu: LgCpu, vaddr: int, data: bytes) -> None:
    """Write part of a frame as the CPU's push would: a page whose shadow is
    not yet writable goes through demand_page first, which marks the Guest's
    PTE accessed and dirty as the CPU's own fault would have."""
    from .page_tables import demand_page, guest_pa, page_writable
    if not page_writable(cpu, vaddr):
        demand_page(cpu, vaddr, 2)
    lgwrite_bytes(cpu, guest_pa(cpu, vaddr), data)


def set_guest_interrupt(cpu: LgCpu, lo: int, hi: int, has_err: bool) -> None:
    """Divert the Guest to the handler of gate (lo, hi) with the frame the CPU
    would push, so the Guest's ordinary iret undoes it."""
    regs = cpu.regs
    if (regs.ss & 3) != GUEST_PL:
        # From user mode the CPU would switch to the ring-1 stack the Guest
        # gave with SET_STACK, and save the user stack there for the iret.
        ss = cpu.ss1
        vstack = push_guest_stack(cpu, cpu.esp1, regs.ss)
        vstack = push_guest_stack(cpu, vstack, regs.esp)
    else:
        ss = regs.ss
        vstack = regs.esp

    # The real IF is always on while the Guest runs; the one the Guest sees
    # is its irq_enabled word, so that is what the saved eflags must show.
    eflags = regs.eflags
    irq_enable = _get_user(cpu, LguestData.irq_enabled)
    if irq_enable is not None and not irq_enable & X86_EFLAGS_IF:
        eflags &= ~X86_EFLAGS_IF

    vstack = push_guest_stack(cpu, vstack, eflags)
    vstack = push_guest_stack(cpu, vstack, regs.cs)
    vstack = push_guest_stack(cpu, vstack, regs.eip)
    if has_err:
        vstack = push_guest_stack(cpu, vstack, regs.errcode)

    regs.ss = ss & _U32
    regs.esp = vstack
    regs.cs = GUEST_KERNEL_CS
    regs.eip = idt_address(lo, hi)

    # An interrupt gate enters with interrupts off: for the Guest that is
    # its irq_enabled word.
    if idt_type(lo, hi) == 0xE:
        if not _put_user(cpu, LguestData.irq_enabled, 0):
            kill_guest(cpu, "Disabling interrupts")


# -- virtual interrupts -------------------------------------------------------------------
def interrupt_pending(cpu: LgCpu) -> tuple[int, bool]:
    """The first pending interrupt the Guest has not blocked (LGUEST_IRQS if
    none) and whether another unblocked one waits behind it."""
    if cpu.lg.lguest_data is None:
        return LGUEST_IRQS, False
    blocked = _get_user(cpu, LguestData.blocked_interrupts)
    if blocked is None:
        return LGUEST_IRQS, False
    pending = cpu.irqs_pending & ~blocked & ((1 << LGUEST_IRQS) - 1)
    if not pending:
        return LGUEST_IRQS, False
    irq = (pending & -pending).bit_length() - 1
    # Linux stores find_next_bit()'s index in a bool, which is always true;
    # "more" here means what that code meant: another one is waiting.
    more = bool(pending >> (irq + 1))
    return irq, more


def try_deliver_interrupt(cpu: LgCpu, irq: int, more: bool) -> None:
    """Deliver virtual interrupt `irq` found by interrupt_pending, if the
    Guest can take it now."""
    lg = cpu.lg
    if not 0 <= irq < LGUEST_IRQS or lg.lguest_data is None:
        return
    regs = cpu.regs
    # The Guest's iret path re-enables interrupts before it returns: an
    # interrupt between the two would run on a half-popped frame.
    if lg.noirq_start <= regs.eip < lg.noirq_end:
        return

    if cpu.halted:
        # HALT is "enable interrupts and sleep": the interrupt wakes it with
        # them on.
        if not _put_user(cpu, LguestData.irq_enabled, X86_EFLAGS_IF):
            kill_guest(cpu, "Re-enabling interrupts")
        cpu.halted = False
    else:
        irq_enabled = _get_user(cpu, LguestData.irq_enabled)
        if not irq_enabled:
            # The Guest checks irq_pending when it enables interrupts again
            # and asks for them with LHCALL_SEND_INTERRUPTS.
            _put_user(cpu, LguestData.irq_pending, X86_EFLAGS_IF)
            return

    lo, hi = cpu.idt[FIRST_EXTERNAL_VECTOR + irq]
    # No handler yet: the interrupt stays pending until there is one.
    if idt_present(lo, hi):
        cpu.irqs_pending &= ~(1 << irq)
        set_guest_interrupt(cpu, lo, hi, False)
        lg.stats.interrupts[irq] += 1

    # Every interrupt (the timer's at least) brings the Guest's clock up to date.
    write_timestamp(cpu)

    if not more:
        _put_user(cpu, LguestData.irq_pending, 0)


def maybe_do_interrupt(cpu: LgCpu) -> None:
    """The 2.6.31 entry point: find a deliverable interrupt and deliver it."""
    irq, more = interrupt_pending(cpu)
    if irq < LGUEST_IRQS:
        try_deliver_interrupt(cpu, irq, more)


def set_interrupt(cpu: LgCpu, irq: int) -> None:
    """Mark virtual interrupt `irq` pending; the run loop delivers it (and
    wakes a halted Guest) before the Guest runs again."""
    if 0 <= irq < LGUEST_IRQS:
        cpu.irqs_pending |= 1 << irq


# -- system calls and direct traps --------------------------------------------------------
def could_be_syscall(lg: Lguest, num: int) -> bool:
    """Is `num` one of the system-call vectors this Host lets Guests use?"""
    return num in lg.syscall_vectors


def check_syscall_vector(lg: Lguest) -> bool:
    """Is the vector the Guest says it uses for system calls one we allow?"""
    if lg.lguest_data is None or not lg.cpus:
        return False
    vector = _get_user(lg.cpus[0], LguestData.syscall_vec)
    if vector is None:
        return False
    return could_be_syscall(lg, vector)


def direct_trap(lg: Lguest, num: int) -> bool:
    """May trap `num` go straight into the Guest without the Host?  Never
    while the Host's switch has direct traps off."""
    return lg.direct_traps and guest_may_own_trap(lg, num)


def guest_may_own_trap(lg: Lguest, num: int) -> bool:
    """Linux's direct_trap() without our switch: the vectors whose gate is
    the Guest's business (delivered directly, or reflected with its DPL)."""
    # Vectors from 0x20 are the Host's hardware interrupts, bar system calls.
    if num >= FIRST_EXTERNAL_VECTOR and not could_be_syscall(lg, num):
        return False
    # The Host needs page faults (shadow paging, cr2), #GP (in/out
    # emulation), #NM (lazy TS) and of course the hypercall trap.
    return num not in (14, 13, 7, LGUEST_TRAP_ENTRY)


def deliver_trap(cpu: LgCpu, num: int) -> bool:
    """Reflect trap `num` into the Guest; False if it cannot take it (an
    impossible trap number, or no handler): the caller kills the Guest."""
    if not 0 <= num < IDT_ENTRIES:
        return False
    lo, hi = cpu.idt[num]
    if not idt_present(lo, hi):
        return False
    set_guest_interrupt(cpu, lo, hi, has_err(num))
    cpu.lg.stats.reflected_traps[num] += 1
    return True


# -- the Guest's kernel stack -------------------------------------------------------------
def pin_stack_pages(cpu: LgCpu) -> None:
    """Keep the Guest's kernel stack mapped in the shadow: a direct trap
    whose push faulted would be a double fault, fatal to the Guest."""
    from .page_tables import pin_page
    for i in range(cpu.lg.stack_pages):
        # esp1 is the top of the stack, i.e. the start of the page above it.
        pin_page(cpu, (cpu.esp1 - 1 - i * PAGE_SIZE) & _U32)


def guest_set_stack(cpu: LgCpu, seg: int, esp: int, pages: int) -> None:
    """LHCALL_SET_STACK: the ring-1 stack (virtual address) traps from user
    mode switch to; it goes into the TSS, so it changes every context switch."""
    if (seg & 3) != GUEST_PL:
        kill_guest(cpu, "bad stack segment %i", seg)
        return
    if pages > 2:
        # Linux carries on; pinning billions of pages for a dead Guest would not.
        kill_guest(cpu, "bad stack pages %u", pages)
        return
    cpu.ss1 = seg & _U32
    cpu.esp1 = esp & _U32
    cpu.lg.stack_pages = pages
    pin_stack_pages(cpu)


# -- the Guest's IDT ----------------------------------------------------------------------
def set_trap(cpu: LgCpu, num: int, lo: int, hi: int) -> None:
    """Check the Guest's gate and keep the parts of it we honour in cpu.idt[num]."""
    lo &= _U32
    hi &= _U32
    if not idt_present(lo, hi):
        cpu.idt[num] = (0, 0)
        return
    gate_type = idt_type(lo, hi)
    if gate_type not in (0xE, 0xF):
        kill_guest(cpu, "bad IDT type %i", gate_type)
        # Linux stores it anyway; a dead Guest gains nothing from it.
        return
    # Only the handler address, present bit, DPL and type survive: the
    # selector is always the Guest's ring-1 kernel code.
    cpu.idt[num] = ((GUEST_KERNEL_CS << 16) | (lo & 0x0000FFFF), hi & 0xFFFFEF00)


def load_guest_idt_entry(cpu: LgCpu, num: int, lo: int, hi: int) -> None:
    """LHCALL_LOAD_IDT_ENTRY."""
    num &= _U32
    # NMI, double fault, the spurious vector and the hypercall are the Host's.
    if num in (2, 8, 15, LGUEST_TRAP_ENTRY):
        return
    cpu.changed |= CHANGED_IDT
    if num >= IDT_ENTRIES:
        kill_guest(cpu, "Too many interrupts: %i", num)
    else:
        set_trap(cpu, num, lo, hi)


def default_idt_entry(trap: int, handler: int, base: tuple | None = None) -> tuple[int, int]:
    """A present interrupt gate to the Switcher stub `handler`; its DPL lets
    the Guest kernel `int $0x1f`, and otherwise is what the Guest asked for
    in `base` (so user mode can still `int3` into a reflected trap)."""
    flags = 0x8E00
    if trap == LGUEST_TRAP_ENTRY:
        flags |= GUEST_PL << 13
    elif base is not None:
        flags |= base[1] & 0x6000
    handler &= _U32
    return ((LGUEST_CS << 16) | (handler & 0x0000FFFF), (handler & 0xFFFF0000) | flags)


def setup_default_idt_entries(idt: list, handlers: list) -> None:
    """Every vector into the Switcher: the IDT before any Guest runs."""
    for i in range(len(idt)):
        idt[i] = default_idt_entry(i, handlers[i], None)


def copy_traps(cpu: LgCpu, idt: list, handlers: list) -> None:
    """Bring the running IDT up to date with the Guest's: trap gates for
    vectors that may go direct are copied, everything else goes to the
    Switcher (keeping the Guest's DPL)."""
    lg = cpu.lg
    for i, gidt in enumerate(cpu.idt):
        if not guest_may_own_trap(lg, i):
            continue
        # An interrupt gate would turn the real IF off, which the Guest may
        # never do, so only trap gates go direct.  With direct traps
        # switched off the gate still carries the Guest's DPL, so `int $0x80`
        # from ring 3 reaches the Switcher instead of raising #GP.
        if lg.direct_traps and idt_type(*gidt) == 0xF:
            idt[i] = gidt
        else:
            idt[i] = default_idt_entry(i, handlers[i], gidt)


# -- the Guest's clock --------------------------------------------------------------------
def guest_set_clockevent(cpu: LgCpu, delta_ns: int) -> None:
    """LHCALL_SET_CLOCKEVENT: a timer interrupt `delta_ns` from now; 0 stops it."""
    delta_ns &= _U32
    if delta_ns == 0:
        cpu.hrt_expires = None
        return
    cpu.hrt_expires = cpu.lg.host.now_ns() + delta_ns


def check_timer(cpu: LgCpu) -> None:
    """The hrtimer's expiry (clockdev_fn), polled by the run loop: irq 0 is the timer."""
    if cpu.hrt_expires is not None and cpu.lg.host.now_ns() >= cpu.hrt_expires:
        cpu.hrt_expires = None
        set_interrupt(cpu, 0)


def init_clockdev(cpu: LgCpu) -> None:
    """The Guest's timer starts stopped."""
    cpu.hrt_expires = None
