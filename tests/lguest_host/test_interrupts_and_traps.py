"""Tests for lguest_host.interrupts_and_traps against the semantics of
drivers/lguest/interrupts_and_traps.c: the frames set_guest_interrupt pushes,
virtual interrupt delivery, the direct-trap table, the IDT the Guest loads and
the one the CPU runs with, the clock, and every way a Guest gets killed.

page_tables is replaced by a stub module (guest_pa: the Guest kernel's linear
map, PAGE_OFFSET + p -> p; pin_page: recorded), so nothing here depends on it.
"""
import struct
import sys
import types
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lguest_host
from lguest_host import interrupts_and_traps as it
from lguest_host.abi import (FIRST_EXTERNAL_VECTOR, GUEST_PL, LGUEST_CS, LGUEST_IRQS,
                             LGUEST_TRAP_ENTRY, PAGE_OFFSET, PAGE_SIZE, SYSCALL_VECTOR,
                             TRAPS_WITH_ERROR_CODE, X86_EFLAGS_IF, LguestData,
                             __KERNEL_CS, __KERNEL_DS, USER_CS, USER_DS)
from lguest_host.lg import CHANGED_IDT

from .conftest import shared_guest

KCS = __KERNEL_CS | GUEST_PL            # 0x61
KDS = __KERNEL_DS | GUEST_PL            # 0x69
MEM = 4 << 20                            # the fixture's Guest size
DATA = 0x2000                            # where our tests put lguest_data
BAD_VADDR = 0xBAD00000                   # guest_pa kills on this page


# -- the page_tables stub ---------------------------------------------------------------------
class FakePageTables:
    def __init__(self):
        self.pinned = []
        self.calls = []

    def guest_pa(self, cpu, vaddr):
        self.calls.append(vaddr)
        if vaddr & 0xFFFFF000 == BAD_VADDR:
            from lguest_host.lg import kill_guest
            kill_guest(cpu, "Bad address %#x", vaddr)
            return 0xFFFFFFFF
        return (vaddr - PAGE_OFFSET) & 0xFFFFFFFF

    def pin_page(self, cpu, vaddr):
        self.pinned.append(vaddr)

    def page_writable(self, cpu, vaddr):
        return True                     # no shadow here: nothing to fault in first

    def demand_page(self, cpu, vaddr, errcode):
        raise AssertionError("page_writable said yes")


@pytest.fixture(scope="module", autouse=True)
def fake_pt():
    fake = FakePageTables()
    mod = types.ModuleType("lguest_host.page_tables")
    mod.guest_pa = fake.guest_pa
    mod.pin_page = fake.pin_page
    mod.page_writable = fake.page_writable
    mod.demand_page = fake.demand_page
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "lguest_host.page_tables", mod)
        mp.setattr(lguest_host, "page_tables", mod, raising=False)
        yield fake


# -- helpers ---------------------------------------------------------------------------------
def rd(host, lg, addr):
    return struct.unpack_from("<I", host.mem.view, lg.mem_base + addr)[0]


def wr(host, lg, addr, val):
    struct.pack_into("<I", host.mem.view, lg.mem_base + addr, val & 0xFFFFFFFF)


def gate(handler, gate_type=0xF, dpl=GUEST_PL, present=True, sel=KCS):
    """An i386 gate descriptor as the Guest's LOAD_IDT_ENTRY words."""
    lo = (sel << 16) | (handler & 0xFFFF)
    hi = (handler & 0xFFFF0000) | (0x8000 if present else 0) | (dpl << 13) | (gate_type << 8)
    return lo, hi


def with_data(g, irq_enabled=X86_EFLAGS_IF, blocked=0):
    host, lg, cpu = g
    lg.lguest_data = DATA
    wr(host, lg, DATA + LguestData.irq_enabled, irq_enabled)
    wr(host, lg, DATA + LguestData.blocked_interrupts, blocked)
    return g


def field(g, off):
    host, lg, _ = g
    return rd(host, lg, DATA + off)


def fresh():
    """A new Guest on the machine the Host's unit tests share."""
    return shared_guest(MEM)


@pytest.fixture
def guest():
    """Overrides conftest's: the same (host, lg, cpu), on the shared machine."""
    return fresh()


@pytest.fixture
def stamp(monkeypatch):
    """Record write_timestamp calls instead of reading the wall clock."""
    calls = []
    monkeypatch.setattr(it, "write_timestamp", lambda cpu: calls.append(cpu))
    return calls


# -- descriptor helpers ------------------------------------------------------------------------
def test_idt_fields():
    lo, hi = gate(0xC0123456, 0xE, 3)
    assert it.idt_address(lo, hi) == 0xC0123456
    assert it.idt_type(lo, hi) == 0xE
    assert it.idt_present(lo, hi)
    assert not it.idt_present(*gate(0xC0123456, present=False))
    assert it.idt_type(*gate(0, 0xF)) == 0xF


def test_has_err_matches_the_cpu():
    for trap in range(256):
        assert it.has_err(trap) == (trap in TRAPS_WITH_ERROR_CODE), trap


# -- set_guest_interrupt: the frame ------------------------------------------------------------
def kernel_regs(cpu, esp=PAGE_OFFSET + 0x8000):
    r = cpu.regs
    r.ss, r.esp, r.cs, r.eip = KDS, esp, KCS, 0xC0100abc
    r.eflags = X86_EFLAGS_IF | 0x2 | 0x40
    r.errcode = 0x1234


@pytest.mark.parametrize("err", [False, True])
def test_frame_from_ring1(guest, err):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu)
    it.set_guest_interrupt(cpu, *gate(0xC0105000, 0xF), err)
    n = 4 if err else 3
    assert cpu.regs.esp == PAGE_OFFSET + 0x8000 - 4 * n
    assert cpu.regs.ss == KDS
    assert cpu.regs.cs == KCS and cpu.regs.eip == 0xC0105000
    words = [rd(host, lg, 0x8000 - 4 * i) for i in range(n, 0, -1)]
    expect = [0xC0100abc, KCS, X86_EFLAGS_IF | 0x42]
    assert words == ([0x1234] if err else []) + expect
    assert rd(host, lg, 0x8000) == 0            # nothing above the old stack pointer
    assert field(guest, LguestData.irq_enabled) == X86_EFLAGS_IF   # trap gate
    assert lg.dead is None


@pytest.mark.parametrize("err", [False, True])
def test_frame_from_ring3(guest, err):
    host, lg, cpu = with_data(guest)
    r = cpu.regs
    r.ss, r.esp, r.cs, r.eip = USER_DS, 0xBFFFF000, USER_CS, 0x08048000
    r.eflags, r.errcode = 0x202, 7
    cpu.ss1, cpu.esp1 = KDS, PAGE_OFFSET + 0x6000
    it.set_guest_interrupt(cpu, *gate(0xC0107777, 0xE), err)
    n = 6 if err else 5
    assert r.ss == KDS and r.esp == PAGE_OFFSET + 0x6000 - 4 * n
    assert r.cs == KCS and r.eip == 0xC0107777
    words = [rd(host, lg, 0x6000 - 4 * i) for i in range(n, 0, -1)]
    assert words == ([7] if err else []) + [0x08048000, USER_CS, 0x202, 0xBFFFF000, USER_DS]
    # An interrupt gate turns the Guest's interrupts off.
    assert field(guest, LguestData.irq_enabled) == 0
    assert r.eflags == 0x202                    # the live eflags are not the Guest's business


@pytest.mark.parametrize("irq_enabled,if_pushed", [(X86_EFLAGS_IF, True), (0, False),
                                                    (0xFFFFFDFF, False), (0x201, True)])
def test_pushed_if_comes_from_irq_enabled(guest, irq_enabled, if_pushed):
    host, lg, cpu = with_data(guest, irq_enabled)
    kernel_regs(cpu)
    it.set_guest_interrupt(cpu, *gate(0xC0105000, 0xF), False)
    eflags = rd(host, lg, cpu.regs.esp - PAGE_OFFSET + 8)
    assert bool(eflags & X86_EFLAGS_IF) == if_pushed
    assert eflags & ~X86_EFLAGS_IF == 0x42


def test_ring_is_taken_from_ss_rpl(guest):
    """RPL 0 or 2 in ss is not GUEST_PL: the stack switch happens."""
    host, lg, cpu = with_data(guest)
    for rpl in (0, 2, 3):
        kernel_regs(cpu)
        cpu.regs.ss = __KERNEL_DS | rpl
        cpu.ss1, cpu.esp1 = KDS, PAGE_OFFSET + 0x6000
        it.set_guest_interrupt(cpu, *gate(0xC0105000), False)
        assert cpu.regs.esp == PAGE_OFFSET + 0x6000 - 20 and cpu.regs.ss == KDS


def test_interrupt_gate_clears_irq_enabled_trap_gate_does_not(guest):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu)
    it.set_guest_interrupt(cpu, *gate(0xC0105000, 0xF), False)
    assert field(guest, LguestData.irq_enabled) == X86_EFLAGS_IF
    it.set_guest_interrupt(cpu, *gate(0xC0105000, 0xE), False)
    assert field(guest, LguestData.irq_enabled) == 0


def test_kill_disabling_interrupts(guest):
    """lguest_data where irq_enabled cannot be written: IF is left alone (the
    read failed) and the interrupt gate's write kills."""
    host, lg, cpu = guest
    lg.lguest_data = MEM - 2
    kernel_regs(cpu)
    it.set_guest_interrupt(cpu, *gate(0xC0105000, 0xE), False)
    assert lg.dead == "Disabling interrupts"
    assert rd(host, lg, cpu.regs.esp - PAGE_OFFSET + 8) & X86_EFLAGS_IF


def test_kill_bad_stack(guest):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu, esp=PAGE_OFFSET + MEM + 8)     # beyond the Guest's memory
    it.set_guest_interrupt(cpu, *gate(0xC0105000), False)
    assert lg.dead and lg.dead.startswith("bad write address")


def test_kill_stack_below_zero(guest):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu, esp=PAGE_OFFSET + 4)
    it.set_guest_interrupt(cpu, *gate(0xC0105000), False)
    assert lg.dead and lg.dead.startswith("bad write address")
    assert rd(host, lg, 0) == X86_EFLAGS_IF | 0x42  # the one push that fitted


def test_kill_from_guest_pa(guest):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu, esp=BAD_VADDR + 0x100)
    it.set_guest_interrupt(cpu, *gate(0xC0105000), False)
    assert lg.dead.startswith("Bad address")       # guest_pa's reason wins


def test_push_guest_stack(guest):
    host, lg, cpu = guest
    # Virtual addresses in, through guest_pa (here PAGE_OFFSET + pa).
    assert it.push_guest_stack(cpu, PAGE_OFFSET + 0x1000, 0x1_DEADBEEF) == PAGE_OFFSET + 0xFFC
    assert rd(host, lg, 0xFFC) == 0xDEADBEEF
    # A word across a page boundary: each half translated on its own page.
    assert it.push_guest_stack(cpu, PAGE_OFFSET + 0x3002, 0x11223344) == PAGE_OFFSET + 0x2FFE
    assert rd(host, lg, 0x2FFC) >> 16 == 0x3344 and rd(host, lg, 0x3000) & 0xFFFF == 0x1122
    assert lg.dead is None
    it.push_guest_stack(cpu, PAGE_OFFSET, 1)          # guest-physical -4: outside memory
    assert lg.dead.startswith("bad write address")


# -- virtual interrupts ------------------------------------------------------------------------
def test_nothing_pending_before_init(guest):
    host, lg, cpu = guest
    it.set_interrupt(cpu, 3)
    assert it.interrupt_pending(cpu)[0] == LGUEST_IRQS


def test_interrupt_pending_respects_blocked(guest):
    host, lg, cpu = with_data(guest, blocked=0b1011)
    assert it.interrupt_pending(cpu) == (LGUEST_IRQS, False)
    for irq in (0, 1, 3, 5, 31):
        it.set_interrupt(cpu, irq)
    assert it.interrupt_pending(cpu) == (5, True)
    cpu.irqs_pending &= ~(1 << 5)
    assert it.interrupt_pending(cpu) == (31, False)
    wr(host, lg, DATA + LguestData.blocked_interrupts, 0)
    assert it.interrupt_pending(cpu) == (0, True)
    wr(host, lg, DATA + LguestData.blocked_interrupts, 0xFFFFFFFF)
    assert it.interrupt_pending(cpu)[0] == LGUEST_IRQS


def test_interrupt_pending_unreadable_data(guest):
    host, lg, cpu = guest
    lg.lguest_data = MEM - 4                    # blocked_interrupts past the end
    it.set_interrupt(cpu, 0)
    assert it.interrupt_pending(cpu)[0] == LGUEST_IRQS and lg.dead is None


def test_set_interrupt_ignores_bad_numbers(guest):
    host, lg, cpu = guest
    for irq in (LGUEST_IRQS, 33, 1000, -1):
        it.set_interrupt(cpu, irq)
    assert cpu.irqs_pending == 0
    it.set_interrupt(cpu, 31)
    assert cpu.irqs_pending == 1 << 31


def ready_for_irq(g, irq=1, gate_type=0xE):
    host, lg, cpu = with_data(g)
    kernel_regs(cpu)
    it.set_trap(cpu, FIRST_EXTERNAL_VECTOR + irq, *gate(0xC0109000, gate_type))
    wr(host, lg, DATA + LguestData.irq_pending, X86_EFLAGS_IF)
    it.set_interrupt(cpu, irq)
    return g


def test_deliver_interrupt(guest, stamp):
    host, lg, cpu = ready_for_irq(guest)
    it.try_deliver_interrupt(cpu, 1, False)
    assert cpu.regs.eip == 0xC0109000 and cpu.regs.cs == KCS
    assert cpu.regs.esp == PAGE_OFFSET + 0x8000 - 12          # never an error code
    assert cpu.irqs_pending == 0
    assert field(guest, LguestData.irq_enabled) == 0
    assert field(guest, LguestData.irq_pending) == 0
    assert lg.stats.interrupts == Counter({1: 1})
    assert stamp == [cpu]


def test_deliver_interrupt_with_more_keeps_irq_pending(guest, stamp):
    host, lg, cpu = ready_for_irq(guest)
    it.try_deliver_interrupt(cpu, 1, True)
    assert cpu.regs.eip == 0xC0109000
    assert field(guest, LguestData.irq_pending) == X86_EFLAGS_IF


def test_deliver_interrupt_writes_real_timestamp(guest):
    host, lg, cpu = ready_for_irq(guest)
    it.try_deliver_interrupt(cpu, 1, False)
    assert field(guest, LguestData.time_sec) or field(guest, LguestData.time_nsec)
    assert field(guest, LguestData.time_nsec) < 1_000_000_000


def test_interrupts_disabled_sets_irq_pending(guest, stamp):
    host, lg, cpu = ready_for_irq(guest)
    wr(host, lg, DATA + LguestData.irq_pending, 0)
    wr(host, lg, DATA + LguestData.irq_enabled, 0)
    before = cpu.regs.pack()
    it.try_deliver_interrupt(cpu, 1, False)
    assert field(guest, LguestData.irq_pending) == X86_EFLAGS_IF
    assert cpu.regs.pack() == before and cpu.irqs_pending == 2
    assert stamp == [] and not lg.stats.interrupts


@pytest.mark.parametrize("eip,blocked", [(0xC0001000, True), (0xC0001003, True),
                                         (0xC0001004, False), (0xC0000FFF, False)])
def test_noirq_range(guest, stamp, eip, blocked):
    host, lg, cpu = ready_for_irq(guest)
    lg.noirq_start, lg.noirq_end = 0xC0001000, 0xC0001004
    cpu.regs.eip = eip
    it.try_deliver_interrupt(cpu, 1, False)
    assert (cpu.irqs_pending == 2) == blocked
    assert (cpu.regs.eip == eip) == blocked
    # Nothing at all happens in the range: not even irq_pending changes.
    assert (field(guest, LguestData.irq_pending) == X86_EFLAGS_IF) == blocked


def test_halted_wakes_with_interrupts_on(guest, stamp):
    host, lg, cpu = ready_for_irq(guest, gate_type=0xF)
    wr(host, lg, DATA + LguestData.irq_enabled, 0)
    cpu.halted = True
    it.try_deliver_interrupt(cpu, 1, False)
    assert not cpu.halted
    assert cpu.regs.eip == 0xC0109000
    assert field(guest, LguestData.irq_enabled) == X86_EFLAGS_IF
    # The frame saw interrupts enabled: the handler's iret returns to the
    # instruction after HALT with them on.
    assert rd(host, lg, cpu.regs.esp - PAGE_OFFSET + 8) & X86_EFLAGS_IF


def test_halted_wake_with_interrupt_gate(guest, stamp):
    host, lg, cpu = ready_for_irq(guest, gate_type=0xE)
    wr(host, lg, DATA + LguestData.irq_enabled, 0)
    cpu.halted = True
    it.try_deliver_interrupt(cpu, 1, False)
    assert rd(host, lg, cpu.regs.esp - PAGE_OFFSET + 8) & X86_EFLAGS_IF
    assert field(guest, LguestData.irq_enabled) == 0


def test_kill_re_enabling_interrupts(guest, stamp):
    host, lg, cpu = guest
    lg.lguest_data = MEM - 2
    cpu.halted = True
    it.try_deliver_interrupt(cpu, 0, False)
    assert lg.dead == "Re-enabling interrupts"
    assert not cpu.halted


def test_not_present_handler_leaves_it_pending(guest, stamp):
    host, lg, cpu = ready_for_irq(guest)
    cpu.idt[FIRST_EXTERNAL_VECTOR + 1] = (0, 0)
    eip = cpu.regs.eip
    it.try_deliver_interrupt(cpu, 1, False)
    assert cpu.irqs_pending == 2 and cpu.regs.eip == eip
    assert not lg.stats.interrupts
    assert stamp == [cpu]                        # Linux still updates the clock
    assert field(guest, LguestData.irq_pending) == 0


def test_maybe_do_interrupt(guest, stamp):
    host, lg, cpu = ready_for_irq(guest, irq=2)
    it.set_interrupt(cpu, 1)                      # no handler for 1: blocked by the Guest
    wr(host, lg, DATA + LguestData.blocked_interrupts, 0b10)
    it.maybe_do_interrupt(cpu)
    assert cpu.regs.eip == 0xC0109000 and cpu.irqs_pending == 0b10
    assert lg.stats.interrupts == Counter({2: 1})
    it.maybe_do_interrupt(cpu)                     # nothing deliverable now
    assert lg.stats.interrupts == Counter({2: 1})


# -- system call vectors and direct traps -------------------------------------------------------
def test_direct_trap_table(guest):
    host, lg, cpu = guest
    never = {7, 13, 14, LGUEST_TRAP_ENTRY}
    for vectors in (frozenset({0x80}), frozenset({0x80, 0x40})):
        lg.syscall_vectors = vectors
        lg.direct_traps = True
        for v in range(256):
            want = (v < 0x20 and v not in never) or v in vectors
            assert it.direct_trap(lg, v) == want, hex(v)
        lg.direct_traps = False
        assert not any(it.direct_trap(lg, v) for v in range(256))


def test_could_be_syscall(guest):
    host, lg, cpu = guest
    assert it.could_be_syscall(lg, 0x80) and not it.could_be_syscall(lg, 0x40)
    lg.syscall_vectors = frozenset({0x80, 0x40})
    assert it.could_be_syscall(lg, 0x40)


@pytest.mark.parametrize("vec,vectors,ok", [(0x80, {0x80}, True), (0x40, {0x80}, False),
                                            (0x40, {0x80, 0x40}, True), (0, {0x80}, False),
                                            (0x180, {0x80}, False)])
def test_check_syscall_vector(guest, vec, vectors, ok):
    host, lg, cpu = with_data(guest)
    lg.syscall_vectors = frozenset(vectors)
    wr(host, lg, DATA + LguestData.syscall_vec, vec)
    assert it.check_syscall_vector(lg) is ok


def test_check_syscall_vector_unreadable(guest):
    host, lg, cpu = guest
    assert it.check_syscall_vector(lg) is False   # before LGUEST_INIT
    lg.lguest_data = MEM - LguestData.syscall_vec - 2
    assert it.check_syscall_vector(lg) is False and lg.dead is None


def test_deliver_trap(guest):
    host, lg, cpu = with_data(guest)
    kernel_regs(cpu)
    assert not it.deliver_trap(cpu, 256) and not it.deliver_trap(cpu, 1000)
    assert not it.deliver_trap(cpu, 14)          # no handler yet
    assert cpu.regs.eip == 0xC0100abc
    it.load_guest_idt_entry(cpu, 14, *gate(0xC0104000, 0xE))
    cpu.regs.errcode = 6
    assert it.deliver_trap(cpu, 14)
    assert cpu.regs.eip == 0xC0104000 and cpu.regs.esp == PAGE_OFFSET + 0x8000 - 16
    assert rd(host, lg, 0x8000 - 16) == 6
    assert lg.stats.reflected_traps == Counter({14: 1})
    it.load_guest_idt_entry(cpu, 3, *gate(0xC0103000, 0xF, dpl=3))
    esp = cpu.regs.esp
    assert it.deliver_trap(cpu, 3)
    assert cpu.regs.esp == esp - 12
    assert lg.stats.reflected_traps == Counter({14: 1, 3: 1})


# -- the kernel stack -------------------------------------------------------------------------
def test_guest_set_stack(guest, fake_pt):
    host, lg, cpu = guest
    fake_pt.pinned.clear()
    it.guest_set_stack(cpu, KDS, 0xC0402000, 2)
    assert (cpu.ss1, cpu.esp1, lg.stack_pages) == (KDS, 0xC0402000, 2)
    assert fake_pt.pinned == [0xC0401FFF, 0xC0400FFF]
    fake_pt.pinned.clear()
    it.guest_set_stack(cpu, KDS, 0xC0800000, 1)
    assert fake_pt.pinned == [0xC07FFFFF]
    fake_pt.pinned.clear()
    it.pin_stack_pages(cpu)
    assert fake_pt.pinned == [0xC07FFFFF]
    it.guest_set_stack(cpu, KDS, 0xC0800000, 0)
    assert lg.dead is None


@pytest.mark.parametrize("seg", [__KERNEL_DS, __KERNEL_DS | 2, USER_DS])
def test_kill_bad_stack_segment(guest, fake_pt, seg):
    host, lg, cpu = guest
    it.guest_set_stack(cpu, seg, 0xC0402000, 1)
    assert lg.dead == f"bad stack segment {seg}"
    assert cpu.ss1 != seg


@pytest.mark.parametrize("pages", [3, 0xFFFFFFFF])
def test_kill_bad_stack_pages(guest, fake_pt, pages):
    host, lg, cpu = guest
    fake_pt.pinned.clear()
    it.guest_set_stack(cpu, KDS, 0xC0402000, pages)
    assert lg.dead == f"bad stack pages {pages}"
    assert fake_pt.pinned == []


# -- the Guest's IDT ---------------------------------------------------------------------------
def test_set_trap_keeps_only_what_we_honour(guest):
    host, lg, cpu = guest
    lo, hi = gate(0xC0ABCDEF, 0xF, dpl=3, sel=0x10)
    hi |= 0x10FF                                 # the S bit and the reserved byte
    it.load_guest_idt_entry(cpu, 0x80, lo, hi)
    a, b = cpu.idt[0x80]
    assert a >> 16 == KCS and a & 0xFFFF == 0xCDEF
    assert b == 0xC0AB0000 | 0x8000 | (3 << 13) | 0xF00
    assert cpu.changed & CHANGED_IDT


def test_set_trap_not_present_zeroes(guest):
    host, lg, cpu = guest
    it.load_guest_idt_entry(cpu, 3, *gate(0xC0103000))
    it.load_guest_idt_entry(cpu, 3, *gate(0xC0103000, 0x5, present=False))
    assert cpu.idt[3] == (0, 0) and lg.dead is None


@pytest.mark.parametrize("gate_type", [0x0, 0x5, 0x6, 0x7, 0xC, 0xD])
def test_kill_bad_idt_type(guest, gate_type):
    host, lg, cpu = guest
    it.load_guest_idt_entry(cpu, 3, *gate(0xC0103000, gate_type))
    assert lg.dead == f"bad IDT type {gate_type}"
    assert cpu.idt[3] == (0, 0)


@pytest.mark.parametrize("num", [2, 8, 15, LGUEST_TRAP_ENTRY])
def test_ignored_idt_loads(guest, num):
    host, lg, cpu = guest
    it.load_guest_idt_entry(cpu, num, *gate(0xC0103000, 0x5))
    assert cpu.idt[num] == (0, 0) and cpu.changed == 0 and lg.dead is None


@pytest.mark.parametrize("num", [256, 0x1000, 0xFFFFFFFF])
def test_kill_too_many_interrupts(guest, num):
    host, lg, cpu = guest
    it.load_guest_idt_entry(cpu, num, *gate(0xC0103000))
    assert lg.dead == f"Too many interrupts: {num}"
    assert cpu.changed & CHANGED_IDT
    assert all(e == (0, 0) for e in cpu.idt)


def test_kill_negative_vector_is_huge(guest):
    host, lg, cpu = guest
    it.load_guest_idt_entry(cpu, -1, *gate(0xC0103000))
    assert lg.dead and cpu.idt[255] == (0, 0)


STUBS = [0xFFC00100 + 7 * v for v in range(256)]


def default_for(v, dpl):
    h = STUBS[v]
    return (LGUEST_CS << 16) | (h & 0xFFFF), (h & 0xFFFF0000) | 0x8E00 | (dpl << 13)


def test_default_idt_entry():
    assert it.default_idt_entry(3, 0xFFC01234) == ((LGUEST_CS << 16) | 0x1234, 0xFFC08E00)
    assert it.default_idt_entry(LGUEST_TRAP_ENTRY, 0xFFC01234)[1] == 0xFFC08E00 | 1 << 13
    assert it.default_idt_entry(LGUEST_TRAP_ENTRY, 0, gate(0, dpl=3))[1] == 0xAE00
    assert it.default_idt_entry(3, 0, gate(0, dpl=3))[1] == 0xEE00
    assert it.default_idt_entry(3, 0, (0, 0xFFFFFFFF))[1] == 0xEE00


def test_setup_default_idt_entries():
    idt = [None] * 256
    it.setup_default_idt_entries(idt, STUBS)
    for v in range(256):
        assert idt[v] == default_for(v, GUEST_PL if v == LGUEST_TRAP_ENTRY else 0)


def test_copy_traps(guest):
    host, lg, cpu = guest
    lg.syscall_vectors = frozenset({0x80, 0x40})
    it.load_guest_idt_entry(cpu, 0x80, *gate(0xC0180000, 0xF, dpl=3))   # syscall: direct
    it.load_guest_idt_entry(cpu, 0x40, *gate(0xC0140000, 0xE, dpl=3))   # interrupt gate
    it.load_guest_idt_entry(cpu, 3, *gate(0xC0103000, 0xF, dpl=3))      # int3 direct
    it.load_guest_idt_entry(cpu, 4, *gate(0xC0104000, 0xE, dpl=3))      # via the Host
    it.load_guest_idt_entry(cpu, 6, *gate(0xC0106000, 0xF, dpl=1))
    it.load_guest_idt_entry(cpu, 14, *gate(0xC010E000, 0xF, dpl=3))     # never direct
    it.load_guest_idt_entry(cpu, 13, *gate(0xC010D000, 0xF, dpl=3))
    it.load_guest_idt_entry(cpu, 0x21, *gate(0xC0121000, 0xF, dpl=3))   # a Host vector
    idt = [("untouched", v) for v in range(256)]
    it.copy_traps(cpu, idt, STUBS)
    assert idt[0x80] == cpu.idt[0x80] and idt[0x80][0] >> 16 == KCS
    assert idt[3] == cpu.idt[3]
    assert idt[6] == cpu.idt[6]
    assert idt[0x40] == default_for(0x40, 3)
    assert idt[4] == default_for(4, 3)
    assert idt[0] == default_for(0, 0)            # not present: default, DPL 0
    for v in (7, 13, 14, LGUEST_TRAP_ENTRY, 0x21, 0x41, 0xEF, 0xFF):
        assert idt[v] == ("untouched", v)
    for v in range(0x20):
        if v not in (3, 6, 4, 7, 13, 14, LGUEST_TRAP_ENTRY):
            assert idt[v] == default_for(v, 0), v
    # Direct traps switched off: nothing is the Guest's gate any more, but
    # the Switcher's gates keep the Guest's DPL (int $0x80 and int3 from
    # ring 3 must reach the Switcher, not raise #GP).
    lg.direct_traps = False
    idt = [("untouched", v) for v in range(256)]
    it.copy_traps(cpu, idt, STUBS)
    for v in (0x80, 0x40, 3, 4):
        assert idt[v] == default_for(v, 3), v
    assert idt[6] == default_for(6, 1)
    for v in (7, 13, 14, LGUEST_TRAP_ENTRY, 0x21, 0x41, 0xEF, 0xFF):
        assert idt[v] == ("untouched", v)
    assert all(idt[v][0] >> 16 == LGUEST_CS for v in range(256) if idt[v][0] != "untouched")


# -- the clock ----------------------------------------------------------------------------------
def test_clock(guest):
    host, lg, cpu = guest
    it.init_clockdev(cpu)
    assert cpu.hrt_expires is None
    it.check_timer(cpu)
    assert cpu.irqs_pending == 0
    now = host.now_ns()
    it.guest_set_clockevent(cpu, 1000)
    assert cpu.hrt_expires == now + 1000
    host.skipped_ns += 999
    it.check_timer(cpu)
    assert cpu.irqs_pending == 0 and cpu.hrt_expires == now + 1000
    host.skipped_ns += 1
    it.check_timer(cpu)
    assert cpu.irqs_pending == 1 and cpu.hrt_expires is None
    cpu.irqs_pending = 0
    host.skipped_ns += 10_000
    it.check_timer(cpu)                          # one-shot: no second interrupt
    assert cpu.irqs_pending == 0
    it.guest_set_clockevent(cpu, 50)
    it.guest_set_clockevent(cpu, 0)              # stop
    host.skipped_ns += 100
    it.check_timer(cpu)
    assert cpu.hrt_expires is None and cpu.irqs_pending == 0


# -- properties -------------------------------------------------------------------------------
u32 = st.integers(0, 0xFFFFFFFF)
vector = st.one_of(st.integers(0, 255), st.integers(0, 0xFFFFFFFF))
# Raw words, or well-formed gates of any type, DPL and present bit.
gate_words = st.builds(gate, u32, st.integers(0, 15), st.integers(0, 3), st.booleans())
idt_load = st.tuples(vector, st.one_of(st.tuples(u32, u32), gate_words))


@given(loads=st.lists(idt_load, max_size=40), second=st.sampled_from([None, 0x40, 0x21]),
       direct=st.booleans())
def test_random_idt_loads(loads, second, direct):
    host, lg, cpu = fresh()
    lg.direct_traps = direct
    if second is not None:
        lg.syscall_vectors = frozenset({SYSCALL_VECTOR, second})
    asked_dpl3 = set()
    should_die = False
    for num, (lo, hi) in loads:
        it.load_guest_idt_entry(cpu, num, lo, hi)
        if num in (2, 8, 15, LGUEST_TRAP_ENTRY):
            continue
        if num >= 256 or (hi & 0x8000 and (hi >> 8) & 0xF not in (0xE, 0xF)):
            should_die = True
        elif hi & 0x8000 and (hi >> 13) & 3 == 3:
            asked_dpl3.add(num)
        else:
            asked_dpl3.discard(num)
    assert (lg.dead is not None) == should_die
    for v, (a, b) in enumerate(cpu.idt):
        if (a, b) != (0, 0):
            assert a >> 16 == KCS and b & 0x8000 and (b >> 8) & 0xF in (0xE, 0xF)
            assert b & 0x10FF == 0
    running = [None] * 256
    it.setup_default_idt_entries(running, STUBS)
    it.copy_traps(cpu, running, STUBS)
    for v, (a, b) in enumerate(running):
        sel = a >> 16
        assert b & 0x8000
        if sel == LGUEST_CS:
            assert (b >> 8) & 0xF == 0xE and (a & 0xFFFF) | (b & 0xFFFF0000) == STUBS[v]
        else:
            assert sel == KCS and (b >> 8) & 0xF == 0xF and it.direct_trap(lg, v)
            assert (a, b) == cpu.idt[v]
        dpl = (b >> 13) & 3
        if dpl == 3:
            assert v in asked_dpl3
        if not it.guest_may_own_trap(lg, v):
            assert (a, b) == default_for(v, GUEST_PL if v == LGUEST_TRAP_ENTRY else 0)
        elif not it.direct_trap(lg, v):
            # Switched off: the Switcher's gate with the Guest's DPL.
            g_dpl = (cpu.idt[v][1] >> 13) & 3
            assert (a, b) == default_for(v, g_dpl)


def model_frame(regs, esp1, ss1, irq_enabled, lo, hi, has_err):
    """What the C code leaves behind: (words from the new esp upward,
    new ss, new esp, new cs, new eip, irq_enabled afterwards)."""
    user = regs["ss"] & 3 != 1
    eflags = regs["eflags"]
    if not irq_enabled & 0x200:
        eflags &= ~0x200
    pushed = []
    if user:
        pushed += [regs["ss"], regs["esp"]]
    pushed += [eflags, regs["cs"], regs["eip"]]
    if has_err:
        pushed.append(regs["errcode"])
    top = esp1 if user else regs["esp"]
    new_esp = top - 4 * len(pushed)
    handler = (lo & 0xFFFF) | (hi & 0xFFFF0000)
    after = 0 if (hi >> 8) & 0xF == 0xE else irq_enabled
    return (pushed[::-1], ss1 if user else regs["ss"], new_esp, 0x61, handler, after)


@given(ss=st.sampled_from([KDS, USER_DS, __KERNEL_DS, 0x6A, 0x2B]),
       esp=st.integers(PAGE_OFFSET + 0x4000, PAGE_OFFSET + MEM - 4).map(lambda x: x & ~3),
       esp1=st.integers(PAGE_OFFSET + 0x4000, PAGE_OFFSET + MEM).map(lambda x: x & ~3),
       ss1=u32, eflags=u32, cs=u32, eip=u32, errcode=u32,
       irq_enabled=st.one_of(st.sampled_from([0, 0x200]), u32),
       handler=u32, gate_type=st.sampled_from([0xE, 0xF]), has_err=st.booleans())
def test_frame_matches_model(ss, esp, esp1, ss1, eflags, cs, eip, errcode,
                             irq_enabled, handler, gate_type, has_err):
    g = fresh()
    host, lg, cpu = with_data(g, irq_enabled)
    regs = dict(ss=ss, esp=esp, eflags=eflags, cs=cs, eip=eip, errcode=errcode)
    for k, val in regs.items():
        setattr(cpu.regs, k, val)
    cpu.esp1, cpu.ss1 = esp1, ss1
    lo, hi = gate(handler, gate_type, dpl=1)
    it.set_guest_interrupt(cpu, lo, hi, has_err)
    words, nss, nesp, ncs, neip, after = model_frame(regs, esp1, ss1, irq_enabled,
                                                    lo, hi, has_err)
    assert lg.dead is None
    assert (cpu.regs.ss, cpu.regs.esp, cpu.regs.cs, cpu.regs.eip) == (nss, nesp, ncs, neip)
    phys = nesp - PAGE_OFFSET
    assert [rd(host, lg, phys + 4 * i) for i in range(len(words))] == words
    assert field(g, LguestData.irq_enabled) == after
    assert cpu.regs.eflags == eflags            # the live flags are untouched
    # Nothing but the frame and irq_enabled was written (the stack is
    # always above lguest_data here, so they cannot overlap).
    frame = b"".join(w.to_bytes(4, "little") for w in words)
    written = int((host.mem.ram[lg.mem_base:lg.mem_base + MEM] != 0).sum())
    data_bytes = int((host.mem.ram[lg.mem_base + DATA:lg.mem_base + DATA + 8] != 0).sum())
    assert written == sum(1 for b in frame if b) + data_bytes
