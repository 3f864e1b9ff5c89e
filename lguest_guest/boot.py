"""The Guest's paravirt ops, after arch/x86/lguest/boot.c (Linux 2.6.32) and
the lguest parts of arch/x86/lguest/i386_head.S: the operations lguest_init
installs so that a kernel running at ring 1 never executes a privileged
instruction but asks the Host instead.

Every op is a generator taking the kernel `k` first (use `yield from`),
because any of them may need the machine: a hypercall (`int $0x1f` on the
CPU) or a memory access through the Guest's page tables.  Ops that need
neither are generators all the same, so that every entry of the table is
called the same way.  They reach the Host only through the machine: nothing
here imports or calls Host code, only its header (lguest_host.abi).

What is here, in boot.c's order:
* hypercalls: direct (hcall), queued in lguest_data's ring (async_hcall),
  and the choice between them (lazy_hcall) by the paravirt lazy mode;
* interrupts: the virtual IF in lguest_data.irq_enabled (save_fl,
  restore_fl, irq_disable, irq_enable, safe_halt), the lguest irq chip on
  blocked_interrupts, init_IRQ;
* descriptor tables: load_gdt / load_idt (whole tables), write_gdt_entry /
  write_idt_entry, load_tls, and the no-ops set_ldt and load_tr_desc;
* cpuid filtering, cr0 (TS), cr2, cr3, cr4;
* page tables: set_pte, set_pte_at, set_pmd, pte_update, the TLB flushes;
* the clock source (lguest_data.time) and clock event (SET_CLOCKEVENT);
* power off, restart, panic, the early console;
* the patch templates for cli/sti/popf/pushf (lguest_patch), machine code
  that replaces those instructions at paravirt call sites;
* lguest_init, and `pv_ops`: the table mapping the generic paravirt names
  to these implementations, as pv_irq_ops / pv_cpu_ops / pv_mmu_ops do.

State that boot.c keeps in file-scope statics (cr3_changed, the clock event
device, the lazy CPU mode, the irq descriptors) lives in `k.pv`, a
LguestState made on first use; what the kernel object already carries
(next_call, current_cr0, current_cr3, lazy_mmu) stays there.
"""
import functools
import struct

import attrs

from lguest_host.abi import (
    FIRST_EXTERNAL_VECTOR, GUEST_PL, LGUEST_IRQS, LGUEST_TRAP_ENTRY,
    LGUEST_SHUTDOWN_POWEROFF, LGUEST_SHUTDOWN_RESTART, LHCALL_FLUSH_ASYNC,
    LHCALL_FLUSH_TLB, LHCALL_HALT, LHCALL_LGUEST_INIT, LHCALL_LOAD_GDT_ENTRY,
    LHCALL_LOAD_IDT_ENTRY, LHCALL_LOAD_TLS, LHCALL_NEW_PGTABLE, LHCALL_NOTIFY,
    LHCALL_RING_SIZE, LHCALL_SEND_INTERRUPTS, LHCALL_SET_CLOCKEVENT, LHCALL_SET_PGD,
    LHCALL_SET_PTE, LHCALL_SET_STACK, LHCALL_SHUTDOWN, LHCALL_TS, HCALL_ARGS_SIZE,
    PAGE_OFFSET, PAGE_SIZE, SYSCALL_VECTOR, X86_EFLAGS_IF, __KERNEL_CS, __KERNEL_DS,
    LguestData)
from x86core.asm import assemble

from .entry import LGUEST_DATA_VIRT, STACK_PAGES, STACK_TOP, Hypercall

LD = LGUEST_DATA_VIRT
X86_CR0_TS = 0x8
THREAD_SIZE = STACK_PAGES * PAGE_SIZE
# The clock event device's limits (boot.c LG_CLOCK_MIN_DELTA / _MAX_DELTA).
LG_CLOCK_MIN_DELTA = 100
LG_CLOCK_MAX_DELTA = 0xFFFFFFFF
ETIME = 62
HCALL_DONE = 0xFF                        # a ring slot the Host has finished with

_U32 = struct.Struct("<I")
_HCALL_ARGS = struct.Struct("<5I")
_DESC = struct.Struct("<II")             # a descriptor as its two words, a and b


def __pa(vaddr: int) -> int:
    return (vaddr - PAGE_OFFSET) & 0xFFFFFFFF


# -- boot.c's statics ----------------------------------------------------------------------
@attrs.define(eq=False)
class ClockEventDevice:
    """struct clock_event_device lguest_clockevent: one-shot only; the
    kernel's tick code sets event_handler (a generator function (k, dev))."""
    name: str = "lguest"
    features: str = "oneshot"
    min_delta_ns: int = LG_CLOCK_MIN_DELTA
    max_delta_ns: int = LG_CLOCK_MAX_DELTA
    mode: str = "unused"
    event_handler: object = None
    registered: bool = False


@attrs.define(eq=False)
class ClockSource:
    """struct clocksource lguest_clock: nanoseconds straight from lguest_data.time."""
    name: str = "lguest"
    rating: int = 200
    read: object = None
    registered: bool = False


@attrs.frozen
class IrqChip:
    """struct irq_chip: how the generic irq code masks and unmasks a line."""
    name: str
    mask: object
    mask_ack: object
    unmask: object


@attrs.define(eq=False)
class IrqDesc:
    """struct irq_desc, reduced to what lguest sets: the chip, the flow
    handler (generator function (k, irq, desc)) and the action it runs."""
    chip: IrqChip | None = None
    handler: object = None
    name: str = ""
    action: object = None


@attrs.define(eq=False)
class LguestState:
    """The file-scope state of boot.c, per kernel."""
    cr3_changed: bool = False
    lazy_cpu: bool = False               # PARAVIRT_LAZY_CPU (between context switch ops)
    lazy_mmu_deferred: bool = False      # TIF_LAZY_MMU_UPDATES: MMU mode to resume after
    reserve_mem: int = 0
    x86_capability: int = 0              # new_cpu_data.x86_capability[0]
    clockevent: ClockEventDevice = attrs.field(factory=ClockEventDevice)
    clocksource: ClockSource = attrs.field(factory=ClockSource)
    irq_desc: dict = attrs.field(factory=dict)


def _pv(k) -> LguestState:
    state = getattr(k, "pv", None)
    if state is None:
        state = k.pv = LguestState()
    return state


# -- hypercalls: direct, and batched in the async ring -----------------------------------------
def hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """A hypercall trap: `int $0x1f` with the call in EAX, arguments in EBX..ESI."""
    return (yield Hypercall(call, a1, a2, a3, a4))


def async_hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """Queue a hypercall in lguest_data's ring; the Host runs the ring, in
    order, before the next trap hypercall.  A full ring means a direct call
    (which makes the Host empty the ring first, so the order is kept)."""
    # Interrupts off while we own the slot: a handler queueing its own call
    # would take the same one (Linux: local_irq_save, we are uniprocessor).
    flags = yield from save_fl(k)
    yield from irq_disable(k)
    n = k.next_call
    status = yield from k.mem.read(LD + LguestData.hcall_status + n, 1)
    if status[0] != HCALL_DONE:
        yield from hcall(k, call, a1, a2, a3, a4)
    else:
        args = _HCALL_ARGS.pack(call & 0xFFFFFFFF, a1 & 0xFFFFFFFF, a2 & 0xFFFFFFFF,
                                a3 & 0xFFFFFFFF, a4 & 0xFFFFFFFF)
        yield from k.mem.write(LD + LguestData.hcalls + n * HCALL_ARGS_SIZE, args)
        # The arguments are in place before the slot says so (Linux's wmb()).
        yield from k.mem.write(LD + LguestData.hcall_status + n, b"\0")
        k.next_call = (n + 1) % LHCALL_RING_SIZE
    yield from restore_fl(k, flags)


def paravirt_get_lazy_mode(k) -> str | None:
    """"mmu", "cpu" or None (PARAVIRT_LAZY_NONE)."""
    if k.lazy_mmu:
        return "mmu"
    if _pv(k).lazy_cpu:
        return "cpu"
    return None


def lazy_hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """Straight to the Host unless we are in a lazy section (MMU or CPU),
    whose calls may be batched until it ends (lazy_hcall1..4)."""
    if k.lazy_mmu or _pv(k).lazy_cpu:
        yield from async_hcall(k, call, a1, a2, a3, a4)
    else:
        yield from hcall(k, call, a1, a2, a3, a4)


def lguest_enter_lazy_mmu_mode(k):
    """paravirt_enter_lazy_mmu: page-table updates may queue from now on."""
    k.lazy_mmu = True
    return
    yield


def lguest_leave_lazy_mmu_mode(k):
    """Leaving lazy mode flushes the ring: the Host runs it on this trap."""
    yield from hcall(k, LHCALL_FLUSH_ASYNC)
    k.lazy_mmu = False


def paravirt_start_context_switch(k, prev=None):
    """A context switch begins: CPU state changes (TLS, the kernel stack,
    TS) may queue.  A lazy MMU section in progress is suspended and resumed
    after the switch."""
    state = _pv(k)
    if k.lazy_mmu:
        yield from lguest_leave_lazy_mmu_mode(k)
        state.lazy_mmu_deferred = True
    state.lazy_cpu = True


def lguest_end_context_switch(k, next_task=None):
    """The switch is done: everything it queued reaches the Host now."""
    yield from hcall(k, LHCALL_FLUSH_ASYNC)
    state = _pv(k)
    state.lazy_cpu = False
    if state.lazy_mmu_deferred:
        state.lazy_mmu_deferred = False
        yield from lguest_enter_lazy_mmu_mode(k)


# -- interrupts: a flag in lguest_data, not EFLAGS.IF ------------------------------------------
def save_fl(k):
    """pushf: the only flag Linux cares about is IF, which is irq_enabled."""
    return (yield from k.mem.read_u32(LD + LguestData.irq_enabled))


def restore_fl(k, flags):
    """popf (lg_restore_fl): store the flag; if that enabled interrupts and
    one is waiting (irq_pending holds X86_EFLAGS_IF then), ask for it."""
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, flags)
    if flags & X86_EFLAGS_IF:
        yield from _send_pending(k)


def irq_disable(k):
    """cli."""
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, 0)


def irq_enable(k):
    """sti (lg_irq_enable): interrupts on, and any the Host held back now."""
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, X86_EFLAGS_IF)
    yield from _send_pending(k)


def _send_pending(k):
    """An interrupt came while we had them off: the Host set irq_pending;
    ask for it now rather than at the next trap."""
    pending = yield from k.mem.read_u32(LD + LguestData.irq_pending)
    if pending:
        yield from hcall(k, LHCALL_SEND_INTERRUPTS)


def lguest_safe_halt(k):
    """sti; hlt: enable interrupts and sleep until one comes.  The Host
    wakes us with irq_enabled on; setting it first as well means an
    interrupt already pending is taken at once instead of being held."""
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, X86_EFLAGS_IF)
    yield from hcall(k, LHCALL_HALT)


def disable_lguest_irq(k, irq):
    """The lguest irq chip's mask: a bit in blocked_interrupts."""
    word = yield from k.mem.read_u32(LD + LguestData.blocked_interrupts)
    yield from k.mem.write_u32(LD + LguestData.blocked_interrupts, word | 1 << irq)


def enable_lguest_irq(k, irq):
    word = yield from k.mem.read_u32(LD + LguestData.blocked_interrupts)
    yield from k.mem.write_u32(LD + LguestData.blocked_interrupts, word & ~(1 << irq))


lguest_irq_controller = IrqChip(name="lguest", mask=disable_lguest_irq,
                                mask_ack=disable_lguest_irq, unmask=enable_lguest_irq)


def handle_level_irq(k, irq, desc):
    """The flow handler lguest's lines use: masked while the action runs,
    so the same line cannot come in again under it."""
    yield from desc.chip.mask_ack(k, irq)
    if desc.action is not None:
        yield from desc.action(k, irq)
    yield from desc.chip.unmask(k, irq)


def lguest_setup_irq(k, irq, name="level"):
    """An irq line for a device: the lguest chip, level flow."""
    _pv(k).irq_desc[irq] = IrqDesc(chip=lguest_irq_controller, handler=handle_level_irq,
                                   name=name)
    return
    yield


def set_irq_handler(k, irq, handler):
    desc = _pv(k).irq_desc.setdefault(irq, IrqDesc(chip=lguest_irq_controller))
    desc.handler = handler
    return
    yield


def generic_handle_irq(k, irq):
    """Run irq's flow handler; False if the line has none (a spurious irq)."""
    desc = _pv(k).irq_desc.get(irq)
    if desc is None or desc.handler is None:
        return False
    yield from desc.handler(k, irq, desc)
    return True


def init_IRQ(k):
    """lguest_init_IRQ: point the IDT entries of the virtual interrupts at
    their entry stubs (interrupt gates: the Host turns irq_enabled off on
    the way in); the system call vector keeps the system call handler.
    Linux sets every vector up to 255; only the LGUEST_IRQS the Host can
    ever raise get a gate here, which saves ~200 boot hypercalls."""
    for i in range(LGUEST_IRQS):
        vector = FIRST_EXTERNAL_VECTOR + i
        if vector == SYSCALL_VECTOR:
            continue
        lo, hi = gate_words(k.image.vector_entry(vector), __KERNEL_CS, 0xE, 0)
        yield from lguest_write_idt_entry(k, vector, lo, hi)


lguest_init_IRQ = init_IRQ


# -- descriptor tables --------------------------------------------------------------------------
def gate_words(handler: int, selector: int, gate_type: int, dpl: int) -> tuple[int, int]:
    lo = (selector << 16) | (handler & 0xFFFF)
    hi = (handler & 0xFFFF0000) | 0x8000 | (dpl << 13) | (gate_type << 8)
    return lo, hi


def lguest_write_idt_entry(k, entrynum, lo, hi, dt=None):
    """The Host keeps its own copy of our IDT: tell it about the entry.
    With `dt` (the table's virtual address) our in-memory table gets the
    gate too, as native_write_idt_entry would."""
    if dt is not None:
        yield from k.mem.write(dt + entrynum * 8, _DESC.pack(lo & 0xFFFFFFFF, hi & 0xFFFFFFFF))
    yield from hcall(k, LHCALL_LOAD_IDT_ENTRY, entrynum, lo, hi)


def lguest_load_idt(k, address, size):
    """lidt: the Host cannot use our table, so each entry of it (size is
    the limit, as in struct desc_ptr) goes over one by one."""
    count = (size + 1) // 8
    raw = yield from k.mem.read(address, count * 8)
    for i in range(count):
        lo, hi = _DESC.unpack_from(raw, i * 8)
        yield from hcall(k, LHCALL_LOAD_IDT_ENTRY, i, lo, hi)


def lguest_load_gdt(k, address, size):
    """lgdt: every entry of the table at `address` to the Host."""
    count = (size + 1) // 8
    raw = yield from k.mem.read(address, count * 8)
    for i in range(count):
        a, b = _DESC.unpack_from(raw, i * 8)
        yield from hcall(k, LHCALL_LOAD_GDT_ENTRY, i, a, b)


def lguest_write_gdt_entry(k, entrynum, desc, dt=None):
    """One GDT entry (a 64-bit descriptor) to the Host, and into our own
    table at `dt` when there is one (native_write_gdt_entry)."""
    desc &= (1 << 64) - 1
    if dt is not None:
        yield from k.mem.write(dt + entrynum * 8, desc.to_bytes(8, "little"))
    yield from hcall(k, LHCALL_LOAD_GDT_ENTRY, entrynum, desc & 0xFFFFFFFF, desc >> 32)


def lguest_load_tls(k, tls_pa, cpu=0):
    """The three TLS descriptors change at every context switch: one lazy
    call with their physical address.  Linux first loads a null %gs, since
    the entry %gs names may be about to change; our kernel never saves or
    restores the user's %gs (it does not use it), so zeroing it here would
    take the user's TLS selector away instead."""
    yield from lazy_hcall(k, LHCALL_LOAD_TLS, tls_pa, cpu)


def lguest_set_ldt(k, addr=0, entries=0):
    """No LDTs for lguest Guests: nothing to do."""
    return
    yield


def lguest_load_tr_desc(k):
    """The Host owns the TSS (GDT entry 16) and loads TR itself."""
    return
    yield


def lguest_set_debugreg(k, regno, value):
    """Debug registers are not virtualized: ignored."""
    return
    yield


def lguest_wbinvd(k):
    """No caches to write back between the Guest and real memory."""
    return
    yield


# -- cpuid --------------------------------------------------------------------------------------
def lguest_cpuid_filter(function: int, ax: int, bx: int, cx: int, dx: int
                        ) -> tuple[int, int, int, int]:
    """What lguest_cpuid lets the kernel see of CPUID leaf `function`: a
    capped highest leaf, only features a Guest may use (no VME, DE, PSE,
    MSRs, APIC, SEP, MTRR, MCE...), PGE claimed so the kernel trusts global
    kernel mappings, family 5 (6 would make Linux try an rdmsr), no NX."""
    if function == 0:
        ax = min(ax, 5)
    elif function == 1:
        cx &= 0x00002201              # SSE3, SSSE3, CMPXCHG16B
        dx &= 0x07808151              # FPU, TSC, PAE, CX8, CMOV, MMX, FXSR, SSE, SSE2
        dx |= 0x00002000              # PGE
        ax = (ax & 0xFFFFF0FF) | 0x00000500
    elif function == 0x80000000:
        if ax > 0x80000008:
            ax = 0x80000008
    elif function == 0x80000001:
        dx &= ~(1 << 20)
    return ax & 0xFFFFFFFF, bx & 0xFFFFFFFF, cx & 0xFFFFFFFF, dx & 0xFFFFFFFF


def lguest_cpuid(k, ax, bx=0, cx=0, dx=0):
    """CPUID is not privileged: run it (the CPU's own answer for leaf ax)
    and filter what the kernel may rely on.  Returns (ax, bx, cx, dx)."""
    function = ax & 0xFFFFFFFF
    raw = k.hw.cpuid(function)
    return lguest_cpuid_filter(function, *raw)
    yield


# -- control registers and the TLB --------------------------------------------------------------
def lguest_write_cr0(k, val):
    """Only TS means anything to the Host (lazy FPU switching)."""
    yield from lazy_hcall(k, LHCALL_TS, val & X86_CR0_TS)
    k.current_cr0 = val


def lguest_read_cr0(k):
    return k.current_cr0
    yield


def lguest_clts(k):
    """clts: TS off, through the Host."""
    yield from lazy_hcall(k, LHCALL_TS, 0)
    k.current_cr0 &= ~X86_CR0_TS


def lguest_read_cr2(k):
    """The Host puts the faulting address in lguest_data.cr2."""
    return (yield from k.mem.read_u32(LD + LguestData.cr2))


def lguest_write_cr3(k, cr3):
    """A new page directory: remember it in lguest_data and tell the Host."""
    k.current_cr3 = cr3
    yield from k.mem.write_u32(LD + LguestData.pgdir, cr3)
    yield from lazy_hcall(k, LHCALL_NEW_PGTABLE, cr3)
    _pv(k).cr3_changed = True


def lguest_read_cr3(k):
    return (yield from k.mem.read_u32(LD + LguestData.pgdir))


def lguest_read_cr4(k):
    """No cr4 features for a Guest (no PSE, PGE or PAE to turn on): 0."""
    return 0
    yield


def lguest_write_cr4(k, val):
    return
    yield


def lguest_pte_update(k, mm_pgdir, addr, ptep_virt):
    """Tell the Host the PTE for `addr` in the address space whose page
    directory is at physical `mm_pgdir` is now what *ptep says."""
    pte = yield from k.mem.read_u32(ptep_virt)
    yield from lazy_hcall(k, LHCALL_SET_PTE, mm_pgdir, addr, pte)


lguest_pte_update_defer = lguest_pte_update


def lguest_set_pte_at(k, mm_pgdir, addr, ptep_virt, pteval):
    """Write the PTE and tell the Host which address space and address it
    was (the value we just wrote is what lguest_pte_update would read back)."""
    yield from k.mem.write_u32(ptep_virt, pteval)
    yield from lazy_hcall(k, LHCALL_SET_PTE, mm_pgdir, addr, pteval)


def lguest_set_pte(k, ptep_virt, pteval):
    """A PTE with no address space or address: the Host cannot tell which
    shadow entry it is, so every shadow goes (once the kernel runs on its
    own page tables; before, there is nothing of ours to flush)."""
    yield from k.mem.write_u32(ptep_virt, pteval)
    if _pv(k).cr3_changed:
        yield from lazy_hcall(k, LHCALL_FLUSH_TLB, 1)


def lguest_set_pmd(k, pmdp_virt, pmdval):
    """Two-level paging: the "pmd" is the page-directory entry, which the
    Host knows by the directory page and the entry's index (SET_PGD)."""
    yield from k.mem.write_u32(pmdp_virt, pmdval)
    pa = __pa(pmdp_virt)
    yield from lazy_hcall(k, LHCALL_SET_PGD, pa & ~0xFFF, (pa & 0xFFF) // 4)


def lguest_flush_tlb_single(k, addr):
    """Nothing is mapped at `addr` now: clear the Host's shadow entry for it
    in the current address space."""
    pgdir = yield from k.mem.read_u32(LD + LguestData.pgdir)
    yield from lazy_hcall(k, LHCALL_SET_PTE, pgdir, addr, 0)


def lguest_flush_tlb_user(k):
    yield from lazy_hcall(k, LHCALL_FLUSH_TLB, 0)


def lguest_flush_tlb_kernel(k):
    yield from lazy_hcall(k, LHCALL_FLUSH_TLB, 1)


def lguest_load_sp0(k, sp0):
    """The kernel stack the CPU (or the Host) switches to from ring 3."""
    yield from lazy_hcall(k, LHCALL_SET_STACK, __KERNEL_DS | GUEST_PL, sp0,
                          THREAD_SIZE // PAGE_SIZE)


# -- time ---------------------------------------------------------------------------------------
def lguest_get_wallclock(k):
    return (yield from k.mem.read_u32(LD + LguestData.time_sec))


def lguest_tsc_khz(k):
    """The TSC rate the Host told us (0: do not use the TSC)."""
    return (yield from k.mem.read_u32(LD + LguestData.tsc_khz))


def lguest_clock_read(k):
    """The clock source: the Host's timestamp in lguest_data.time, in ns.
    The Host may update it between our two reads: read until the seconds
    did not change under us."""
    while True:
        raw = yield from k.mem.read(LD + LguestData.time, 8)
        sec, nsec = struct.unpack("<II", raw)
        again = yield from k.mem.read_u32(LD + LguestData.time_sec)
        if again == sec:
            return sec * 1_000_000_000 + nsec


def lguest_clockevent_set_next_event(k, delta_ns, evt=None):
    """A timer interrupt `delta_ns` from now.  Below the device's minimum
    Linux's driver answers -ETIME and the clockevents core, which clamps
    every delta to [min_delta_ns, max_delta_ns] first, never lets that
    happen; our callers program the device directly, so the clamp is here."""
    delta_ns = min(max(int(delta_ns), LG_CLOCK_MIN_DELTA), LG_CLOCK_MAX_DELTA)
    yield from hcall(k, LHCALL_SET_CLOCKEVENT, delta_ns)
    return 0


def lguest_clockevent_set_mode(k, mode, evt=None):
    """"unused"/"shutdown" stop the timer; "oneshot" and "resume" need
    nothing; a periodic timer is not something this device has (BUG in
    Linux): refused with ValueError, which the kernel turns into a panic."""
    dev = _pv(k).clockevent
    if mode in ("unused", "shutdown"):
        yield from hcall(k, LHCALL_SET_CLOCKEVENT, 0)
    elif mode == "periodic":
        raise ValueError("lguest clock event: no periodic mode")
    elif mode not in ("oneshot", "resume"):
        raise ValueError(f"lguest clock event: unknown mode {mode!r}")
    dev.mode = mode


def lguest_clockevent_shutdown(k):
    yield from lguest_clockevent_set_mode(k, "shutdown")


def _tick_handler(k, dev):
    """The event handler until the kernel sets its own: note the expiry
    (the kernel's sleeping code waits for k.timer_expired)."""
    k.timer_expired = True
    return
    yield


def lguest_time_irq(k, irq=0, desc=None):
    """irq 0's flow handler: run the clock event handler with interrupts off."""
    flags = yield from save_fl(k)
    yield from irq_disable(k)
    dev = _pv(k).clockevent
    if dev.event_handler is not None:
        yield from dev.event_handler(k, dev)
    yield from restore_fl(k, flags)


def lguest_time_init(k):
    """The timer: irq 0 handled by lguest_time_irq, our clock source and
    clock event device registered, irq 0 unmasked."""
    state = _pv(k)
    yield from set_irq_handler(k, 0, lguest_time_irq)
    state.clocksource.read = lguest_clock_read
    state.clocksource.registered = True
    dev = state.clockevent
    dev.registered = True
    if dev.event_handler is None:
        dev.event_handler = _tick_handler
    dev.mode = "oneshot"
    yield from enable_lguest_irq(k, 0)


# -- console and power --------------------------------------------------------------------------
def early_put_chars(k, data: bytes):
    """The early console: NOTIFY with a NUL-terminated string.  Linux sends
    16 bytes per call and the console layer calls again for the rest; we
    loop here.  Returns the number of bytes written."""
    scratch = k.scratch_virt
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        yield from k.mem.write(scratch, chunk + b"\0")
        yield from hcall(k, LHCALL_NOTIFY, __pa(scratch))
    return len(data)


def _shutdown(k, why: bytes, kind: int, limit: int):
    yield from k.mem.write(k.scratch_virt, why[:limit] + b"\0")
    yield from hcall(k, LHCALL_SHUTDOWN, __pa(k.scratch_virt), kind)


def lguest_power_off(k, why=b"Power down"):
    yield from _shutdown(k, why, LGUEST_SHUTDOWN_POWEROFF, 100)


def lguest_restart(k, why=b"Restart"):
    yield from _shutdown(k, why, LGUEST_SHUTDOWN_RESTART, 100)


def lguest_panic(k, message: bytes):
    """Tell the Host why we died; it never returns."""
    while True:
        yield from _shutdown(k, message, LGUEST_SHUTDOWN_POWEROFF, 200)


# -- patching: machine code for cli, sti, popf and pushf --------------------------------------
# The four irq ops are so frequent that Linux patches their call sites with
# these instructions instead of calling through the table.  Each template is
# position independent (lguest_data is at a fixed kernel address; the one
# jump is relative), keeps every register but the op's own (save_fl returns
# in EAX, restore_fl takes EAX) and may clobber the arithmetic flags, as the
# call it replaces would.  sti and popf check irq_pending and make the
# SEND_INTERRUPTS hypercall themselves (lg_irq_enable / lg_restore_fl).
# (2.6.32's lg_irq_enable tests irq_pending against $0, which never sees
# it; we compare with zero.)
PATCH_SOURCES = {
    "irq_disable": "mov dword ptr [{irq_enabled:#x}], 0",
    "save_fl": "mov eax, [{irq_enabled:#x}]",
    "irq_enable": """
        mov dword ptr [{irq_enabled:#x}], {IF:#x}
        cmp dword ptr [{irq_pending:#x}], 0
        jz 1f
        push eax
        mov eax, {SEND:#x}
        int {TRAP:#x}
        pop eax
        1:""",
    "restore_fl": """
        mov [{irq_enabled:#x}], eax
        test [{irq_pending:#x}], eax
        jz 1f
        push eax
        mov eax, {SEND:#x}
        int {TRAP:#x}
        pop eax
        1:""",
}
# The native instructions they stand for.
NATIVE_INSNS = {"irq_disable": "cli", "irq_enable": "sti", "restore_fl": "push eax; popfd",
                "save_fl": "pushfd; pop eax"}


@functools.cache
def lguest_insns() -> dict:
    """The templates, assembled: {patch type: machine code}."""
    names = dict(irq_enabled=LD + LguestData.irq_enabled,
                 irq_pending=LD + LguestData.irq_pending, IF=X86_EFLAGS_IF,
                 SEND=LHCALL_SEND_INTERRUPTS, TRAP=LGUEST_TRAP_ENTRY)
    return {op: assemble(src.format(**names)).code for op, src in PATCH_SOURCES.items()}


def lguest_patch(k, patch_type, clobbers, ibuf, addr, length):
    """pv_init_ops.patch: put our template for `patch_type` at `ibuf` (a
    kernel virtual address) for the call site at `addr` of `length` bytes.
    Returns how many bytes were used, or None when we have no template or
    it does not fit (Linux then patches a direct call to the op; a Python
    op has no machine code to call, so the site keeps what it had)."""
    insns = lguest_insns().get(patch_type)
    if insns is None or len(insns) > length:
        return None
    yield from k.mem.write(ibuf, insns)
    return len(insns)


def apply_paravirt(k, sites):
    """alternative.c's apply_paravirt: patch each site (addr, type, length,
    clobbers) in place, the rest of it NOPs.  Returns how many were patched."""
    patched = 0
    for addr, patch_type, length, clobbers in sites:
        used = yield from lguest_patch(k, patch_type, clobbers, addr, addr, length)
        if used is None:
            continue
        if used < length:
            yield from k.mem.write(addr + used, b"\x90" * (length - used))
        patched += 1
    return patched


# -- lguest_init: the first thing the kernel does -----------------------------------------------
@attrs.frozen
class PvInfo:
    """struct pv_info for lguest."""
    name: str = "lguest"
    paravirt_enabled: bool = True
    kernel_rpl: int = GUEST_PL
    shared_kernel_pmd: bool = True


def lguest_init(k):
    """Fill lguest_data (statically initialized in Linux), LHCALL_LGUEST_INIT,
    then what needs the Host: the kernel stack and the irq gates.  On the
    way, what Linux's lguest_init learns: the memory to leave alone at the
    top (reserve_mem) and the CPU's features as cpuid shows them to us."""
    data = bytearray(LguestData.SIZE)
    _U32.pack_into(data, LguestData.blocked_interrupts, 1)     # timer blocked
    data[LguestData.hcall_status:LguestData.hcall_status + LHCALL_RING_SIZE] = \
        bytes([HCALL_DONE]) * LHCALL_RING_SIZE
    _U32.pack_into(data, LguestData.noirq_start, k.image.labels["lguest_noirq_start"])
    _U32.pack_into(data, LguestData.noirq_end, k.image.labels["lguest_noirq_end"])
    _U32.pack_into(data, LguestData.kernel_address, PAGE_OFFSET)
    _U32.pack_into(data, LguestData.syscall_vec, SYSCALL_VECTOR)
    yield from k.mem.write(LD, bytes(data))
    yield from hcall(k, LHCALL_LGUEST_INIT, __pa(LD))
    k.next_call = 0
    state = _pv(k)
    state.reserve_mem = yield from k.mem.read_u32(LD + LguestData.reserve_mem)
    state.x86_capability = (yield from lguest_cpuid(k, 1))[3]
    yield from lguest_load_sp0(k, STACK_TOP)
    yield from init_IRQ(k)


# -- the table ----------------------------------------------------------------------------------
class PvOpsTable:
    """One paravirt ops structure: generic name -> lguest implementation,
    readable as attributes (pv_mmu_ops.write_cr3) or by name."""

    def __init__(self, name: str, ops: dict):
        self._name = name
        self._ops = dict(ops)

    def __getattr__(self, op):
        try:
            return self.__dict__["_ops"][op]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('_name')} has no op {op!r}") from None

    def __getitem__(self, op):
        return self._ops[op]

    def __contains__(self, op):
        return op in self._ops

    def __iter__(self):
        return iter(self._ops)

    def __len__(self):
        return len(self._ops)

    def items(self):
        return self._ops.items()

    def __repr__(self):
        return f"<{self._name}: {len(self._ops)} ops>"


class ParavirtOps(PvOpsTable):
    """All of lguest's ops under their generic names, and the structures
    Linux groups them in (irq, cpu, mmu, time, init)."""

    def __init__(self, info: PvInfo, **groups: PvOpsTable):
        flat = {}
        for table in groups.values():
            for op, fn in table.items():
                if op in flat and flat[op] is not fn:
                    raise ValueError(f"paravirt op {op} defined twice")
                flat[op] = fn
        super().__init__("pv_ops", flat)
        self.__dict__.update(groups)
        self.__dict__["info"] = info


pv_irq_ops = PvOpsTable("pv_irq_ops", dict(
    save_fl=save_fl, restore_fl=restore_fl, irq_disable=irq_disable, irq_enable=irq_enable,
    safe_halt=lguest_safe_halt))
pv_cpu_ops = PvOpsTable("pv_cpu_ops", dict(
    load_gdt=lguest_load_gdt, cpuid=lguest_cpuid, load_idt=lguest_load_idt,
    load_sp0=lguest_load_sp0, load_tr_desc=lguest_load_tr_desc, set_ldt=lguest_set_ldt,
    load_tls=lguest_load_tls, set_debugreg=lguest_set_debugreg, clts=lguest_clts,
    read_cr0=lguest_read_cr0, write_cr0=lguest_write_cr0, read_cr4=lguest_read_cr4,
    write_cr4=lguest_write_cr4, write_gdt_entry=lguest_write_gdt_entry,
    write_idt_entry=lguest_write_idt_entry, wbinvd=lguest_wbinvd,
    start_context_switch=paravirt_start_context_switch,
    end_context_switch=lguest_end_context_switch))
pv_mmu_ops = PvOpsTable("pv_mmu_ops", dict(
    write_cr3=lguest_write_cr3, read_cr3=lguest_read_cr3, read_cr2=lguest_read_cr2,
    flush_tlb_user=lguest_flush_tlb_user, flush_tlb_single=lguest_flush_tlb_single,
    flush_tlb_kernel=lguest_flush_tlb_kernel, set_pte=lguest_set_pte,
    set_pte_at=lguest_set_pte_at, set_pmd=lguest_set_pmd, pte_update=lguest_pte_update,
    pte_update_defer=lguest_pte_update_defer,
    enter_lazy_mmu_mode=lguest_enter_lazy_mmu_mode,
    leave_lazy_mmu_mode=lguest_leave_lazy_mmu_mode))
# The timer and platform hooks lguest_init sets in x86_init / x86_platform,
# the clock source and clock event device, and the power and console hooks.
pv_time_ops = PvOpsTable("pv_time_ops", dict(
    timer_init=lguest_time_init, calibrate_tsc=lguest_tsc_khz,
    get_wallclock=lguest_get_wallclock, clock_read=lguest_clock_read,
    clockevent_set_next_event=lguest_clockevent_set_next_event,
    clockevent_set_mode=lguest_clockevent_set_mode, timer_irq=lguest_time_irq))
pv_init_ops = PvOpsTable("pv_init_ops", dict(
    patch=lguest_patch, intr_init=init_IRQ, power_off=lguest_power_off,
    restart=lguest_restart, panic=lguest_panic, early_console=early_put_chars))

pv_ops = ParavirtOps(PvInfo(), irq=pv_irq_ops, cpu=pv_cpu_ops, mmu=pv_mmu_ops,
                     time=pv_time_ops, init=pv_init_ops)
