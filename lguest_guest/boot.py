"""The Guest's paravirt ops, after arch/x86/lguest/boot.c: the operations
Linux's lguest_init installs so that a kernel running at ring 1 never
executes a privileged instruction but asks the Host instead.

Every op is a generator taking the kernel `k` (use `yield from`), because any
of them may need the machine: a hypercall (`int $0x1f` on the CPU) or a memory
access through the Guest's page tables.  They reach the Host only that way:
nothing here imports or calls Host code, only its header (lguest_host.abi).
"""
from lguest_host.abi import (
    FIRST_EXTERNAL_VECTOR, GDT_ENTRY_TLS_MIN, GUEST_PL, LGUEST_IRQS,
    LGUEST_SHUTDOWN_POWEROFF, LGUEST_SHUTDOWN_RESTART, LHCALL_FLUSH_ASYNC,
    LHCALL_FLUSH_TLB, LHCALL_HALT, LHCALL_LGUEST_INIT, LHCALL_LOAD_GDT_ENTRY,
    LHCALL_LOAD_IDT_ENTRY, LHCALL_LOAD_TLS, LHCALL_NEW_PGTABLE, LHCALL_NOTIFY,
    LHCALL_RING_SIZE, LHCALL_SEND_INTERRUPTS, LHCALL_SET_CLOCKEVENT, LHCALL_SET_PGD,
    LHCALL_SET_PTE, LHCALL_SET_STACK, LHCALL_SHUTDOWN, LHCALL_TS, HCALL_ARGS_SIZE,
    PAGE_OFFSET, SYSCALL_VECTOR, X86_EFLAGS_IF, __KERNEL_CS, __KERNEL_DS, LguestData)

from .entry import LGUEST_DATA_VIRT, STACK_PAGES, STACK_TOP, Hypercall

LD = LGUEST_DATA_VIRT
X86_CR0_TS = 0x8


def __pa(vaddr: int) -> int:
    return (vaddr - PAGE_OFFSET) & 0xFFFFFFFF


# -- hypercalls: direct, and batched in the async ring -----------------------------------------
def hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """A hypercall trap: `int $0x1f` with the call in EAX, arguments in EBX..ESI."""
    return (yield Hypercall(call, a1, a2, a3, a4))


def async_hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """Queue a hypercall in lguest_data's ring; the Host runs the ring, in
    order, before the next trap hypercall.  A full ring means a direct call."""
    n = k.next_call
    status = yield from k.mem.read(LD + LguestData.hcall_status + n, 1)
    if status[0] != 0xFF:
        yield from hcall(k, call, a1, a2, a3, a4)
        return
    import struct
    args = struct.pack("<5I", call, a1 & 0xFFFFFFFF, a2 & 0xFFFFFFFF, a3 & 0xFFFFFFFF,
                       a4 & 0xFFFFFFFF)
    yield from k.mem.write(LD + LguestData.hcalls + n * HCALL_ARGS_SIZE, args)
    # The arguments are in place before the slot says so (Linux's wmb()).
    yield from k.mem.write(LD + LguestData.hcall_status + n, b"\0")
    k.next_call = (n + 1) % LHCALL_RING_SIZE


def lazy_hcall(k, call, a1=0, a2=0, a3=0, a4=0):
    """Straight to the Host unless we are in a lazy MMU section."""
    if k.lazy_mmu:
        yield from async_hcall(k, call, a1, a2, a3, a4)
    else:
        yield from hcall(k, call, a1, a2, a3, a4)


def lguest_enter_lazy_mmu_mode(k):
    k.lazy_mmu = True
    return
    yield


def lguest_leave_lazy_mmu_mode(k):
    """Leaving lazy mode flushes the ring: the Host runs it on this trap."""
    k.lazy_mmu = False
    yield from hcall(k, LHCALL_FLUSH_ASYNC)


def lguest_end_context_switch(k):
    yield from hcall(k, LHCALL_FLUSH_ASYNC)


# -- interrupts: a flag in lguest_data, not EFLAGS.IF ------------------------------------------
def save_fl(k):
    return (yield from k.mem.read_u32(LD + LguestData.irq_enabled))


def restore_fl(k, flags):
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, flags)
    if flags & X86_EFLAGS_IF:
        yield from _send_pending(k)


def irq_disable(k):
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, 0)


def irq_enable(k):
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, X86_EFLAGS_IF)
    yield from _send_pending(k)


def _send_pending(k):
    """An interrupt came while we had them off: the Host set irq_pending;
    ask for it now rather than at the next trap."""
    pending = yield from k.mem.read_u32(LD + LguestData.irq_pending)
    if pending:
        yield from hcall(k, LHCALL_SEND_INTERRUPTS)


def lguest_safe_halt(k):
    """Enable interrupts and sleep until one comes (the Host wakes us)."""
    yield from k.mem.write_u32(LD + LguestData.irq_enabled, X86_EFLAGS_IF)
    yield from hcall(k, LHCALL_HALT)


def disable_lguest_irq(k, irq):
    """The lguest irq chip's mask: a bit in blocked_interrupts."""
    word = yield from k.mem.read_u32(LD + LguestData.blocked_interrupts)
    yield from k.mem.write_u32(LD + LguestData.blocked_interrupts, word | 1 << irq)


def enable_lguest_irq(k, irq):
    word = yield from k.mem.read_u32(LD + LguestData.blocked_interrupts)
    yield from k.mem.write_u32(LD + LguestData.blocked_interrupts, word & ~(1 << irq))


# -- descriptor tables --------------------------------------------------------------------------
def gate_words(handler: int, selector: int, gate_type: int, dpl: int) -> tuple[int, int]:
    lo = (selector << 16) | (handler & 0xFFFF)
    hi = (handler & 0xFFFF0000) | 0x8000 | (dpl << 13) | (gate_type << 8)
    return lo, hi


def lguest_write_idt_entry(k, entrynum, lo, hi):
    """The Host keeps its own copy of our IDT: tell it about the entry."""
    yield from hcall(k, LHCALL_LOAD_IDT_ENTRY, entrynum, lo, hi)


def lguest_write_gdt_entry(k, entrynum, desc):
    yield from hcall(k, LHCALL_LOAD_GDT_ENTRY, entrynum, desc & 0xFFFFFFFF, desc >> 32)


def lguest_load_tls(k, tls_pa):
    """The three TLS descriptors change at every context switch: one lazy call."""
    yield from lazy_hcall(k, LHCALL_LOAD_TLS, tls_pa)


def init_IRQ(k):
    """Point the IDT entries of all virtual interrupts at their entry stubs
    (interrupt gates: the Host turns irq_enabled off on the way in).  The
    system call vector is the system call handler's."""
    for i in range(LGUEST_IRQS):
        vector = FIRST_EXTERNAL_VECTOR + i
        if vector == SYSCALL_VECTOR:
            continue
        lo, hi = gate_words(k.image.vector_entry(vector), __KERNEL_CS, 0xE, 0)
        yield from lguest_write_idt_entry(k, vector, lo, hi)


# -- control registers and the TLB --------------------------------------------------------------
def lguest_write_cr0(k, val):
    """Only TS means anything to the Host (lazy FPU switching)."""
    k.current_cr0 = val
    yield from lazy_hcall(k, LHCALL_TS, 1 if val & X86_CR0_TS else 0)


def lguest_read_cr2(k):
    return (yield from k.mem.read_u32(LD + LguestData.cr2))


def lguest_write_cr3(k, cr3):
    """A new page directory: tell the Host, and remember it in lguest_data."""
    k.current_cr3 = cr3
    yield from k.mem.write_u32(LD + LguestData.pgdir, cr3)
    yield from lazy_hcall(k, LHCALL_NEW_PGTABLE, cr3)


def lguest_set_pte_at(k, mm_pgdir, addr, ptep_virt, pteval):
    """Write the PTE and tell the Host which address space and address it was."""
    yield from k.mem.write_u32(ptep_virt, pteval)
    yield from lazy_hcall(k, LHCALL_SET_PTE, mm_pgdir, addr, pteval)


def lguest_set_pmd(k, pmdp_virt, pmdval):
    """Two-level paging: the "pmd" is the page-directory entry."""
    yield from k.mem.write_u32(pmdp_virt, pmdval)
    pa = __pa(pmdp_virt)
    yield from lazy_hcall(k, LHCALL_SET_PGD, pa & ~0xFFF, (pa & 0xFFF) // 4)


def lguest_flush_tlb_single(k, addr):
    """Nothing is mapped at `addr` now: clear the Host's shadow entry for it."""
    yield from lazy_hcall(k, LHCALL_SET_PTE, k.current_cr3, addr, 0)


def lguest_flush_tlb_user(k):
    yield from lazy_hcall(k, LHCALL_FLUSH_TLB, 0)


def lguest_flush_tlb_kernel(k):
    yield from lazy_hcall(k, LHCALL_FLUSH_TLB, 1)


def lguest_load_sp0(k, sp0):
    """The kernel stack the CPU (or the Host) switches to from ring 3."""
    yield from lazy_hcall(k, LHCALL_SET_STACK, __KERNEL_DS | GUEST_PL, sp0, STACK_PAGES)


# -- time ---------------------------------------------------------------------------------------
def lguest_clock_read(k):
    """The clock source: the Host's timestamp in lguest_data.time, in ns."""
    raw = yield from k.mem.read(LD + LguestData.time, 8)
    sec, nsec = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
    return sec * 1_000_000_000 + nsec


def lguest_clockevent_set_next_event(k, delta_ns):
    yield from hcall(k, LHCALL_SET_CLOCKEVENT, max(1, delta_ns))


def lguest_clockevent_shutdown(k):
    yield from hcall(k, LHCALL_SET_CLOCKEVENT, 0)


# -- console and power --------------------------------------------------------------------------
def early_put_chars(k, data: bytes):
    """The early console: NOTIFY with a NUL-terminated string, 16 bytes at a time."""
    scratch = k.scratch_virt
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        yield from k.mem.write(scratch, chunk + b"\0")
        yield from hcall(k, LHCALL_NOTIFY, __pa(scratch))


def lguest_power_off(k, why=b"Power down"):
    yield from k.mem.write(k.scratch_virt, why[:100] + b"\0")
    yield from hcall(k, LHCALL_SHUTDOWN, __pa(k.scratch_virt), LGUEST_SHUTDOWN_POWEROFF)


def lguest_restart(k, why=b"Restart"):
    yield from k.mem.write(k.scratch_virt, why[:100] + b"\0")
    yield from hcall(k, LHCALL_SHUTDOWN, __pa(k.scratch_virt), LGUEST_SHUTDOWN_RESTART)


def lguest_panic(k, message: bytes):
    """Tell the Host why we died; it never returns."""
    yield from k.mem.write(k.scratch_virt, message[:200] + b"\0")
    while True:
        yield from hcall(k, LHCALL_SHUTDOWN, __pa(k.scratch_virt), LGUEST_SHUTDOWN_POWEROFF)


# -- lguest_init: the first thing the kernel does -----------------------------------------------
def lguest_init(k):
    """Fill lguest_data (statically initialized in Linux), LHCALL_LGUEST_INIT,
    then the ops that need the Host: IDT entries, the kernel stack."""
    import struct
    data = bytearray(LguestData.SIZE)
    struct.pack_into("<I", data, LguestData.blocked_interrupts, 1)     # timer blocked
    data[LguestData.hcall_status:LguestData.hcall_status + LHCALL_RING_SIZE] = b"\xff" * LHCALL_RING_SIZE
    struct.pack_into("<I", data, LguestData.noirq_start, k.image.labels["lguest_noirq_start"])
    struct.pack_into("<I", data, LguestData.noirq_end, k.image.labels["lguest_noirq_end"])
    struct.pack_into("<I", data, LguestData.kernel_address, PAGE_OFFSET)
    struct.pack_into("<I", data, LguestData.syscall_vec, SYSCALL_VECTOR)
    yield from k.mem.write(LD, bytes(data))
    yield from hcall(k, LHCALL_LGUEST_INIT, __pa(LD))
    k.next_call = 0
    yield from lguest_load_sp0(k, STACK_TOP)
    yield from init_IRQ(k)
