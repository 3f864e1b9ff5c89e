"""Hypercalls (lguest_host/hypercalls.py) against Linux
drivers/lguest/hypercalls.c: the dispatch of every call, INIT first, the
async ring's order, wrap-around and stopping rules, and SHUTDOWN's reason.

The unit tests replace the page_tables / interrupts_and_traps entry points
with recorders (so they test the dispatch and its order, not those modules);
the properties at the end run with the real modules."""
import struct

import pytest
from hypothesis import event, given, strategies as st

from lguest_host import hypercalls as hc
from lguest_host import interrupts_and_traps, page_tables
from lguest_host.abi import (GDT_ENTRIES, GUEST_PL, HCALL_NAMES, LGUEST_SHUTDOWN_POWEROFF,
                             LGUEST_SHUTDOWN_RESTART, LHCALL_FLUSH_ASYNC, LHCALL_FLUSH_TLB,
                             LHCALL_HALT, LHCALL_LGUEST_INIT, LHCALL_LOAD_GDT_ENTRY,
                             LHCALL_LOAD_IDT_ENTRY, LHCALL_LOAD_TLS, LHCALL_NEW_PGTABLE,
                             LHCALL_NOTIFY, LHCALL_RING_SIZE, LHCALL_SEND_INTERRUPTS,
                             LHCALL_SET_CLOCKEVENT, LHCALL_SET_PGD, LHCALL_SET_PMD,
                             LHCALL_SET_PTE, LHCALL_SET_STACK, LHCALL_SHUTDOWN, LHCALL_TS,
                             PAGE_OFFSET, SYSCALL_VECTOR, __KERNEL_DS, LguestData)
from lguest_host.hypercalls import HcallArgs
from lguest_host.lg import (CHANGED_GDT, CHANGED_GDT_TLS, CHANGED_IDT, POOL_START, LgCpu,
                            Lguest)

from .conftest import shared_guest

MEM = 4 << 20
LD = 0x3000                     # where our Guests keep struct lguest_data
PGDIR = 0x1000                  # the Launcher's page directory
NOIRQ = (PAGE_OFFSET + 0x1234, PAGE_OFFSET + 0x1240)

def fresh():
    """A new Guest on the machine the Host's unit tests share."""
    return shared_guest(MEM)


def rd(lg, addr, size=4):
    base = lg.mem_base + addr
    return int.from_bytes(lg.host.mem.ram[base:base + size].tobytes(), "little")


def wr(lg, addr, data: bytes):
    base = lg.mem_base + addr
    lg.host.mem.ram[base:base + len(data)] = list(data)


def wr32(lg, addr, value):
    wr(lg, addr, struct.pack("<I", value))


def lguest_data(lg, ld=LD, syscall_vec=SYSCALL_VECTOR, kernel_address=PAGE_OFFSET):
    """struct lguest_data as the Guest fills it before LHCALL_LGUEST_INIT."""
    wr32(lg, ld + LguestData.blocked_interrupts, 1)
    wr(lg, ld + LguestData.hcall_status, b"\xff" * LHCALL_RING_SIZE)
    wr32(lg, ld + LguestData.noirq_start, NOIRQ[0])
    wr32(lg, ld + LguestData.noirq_end, NOIRQ[1])
    wr32(lg, ld + LguestData.kernel_address, kernel_address)
    wr32(lg, ld + LguestData.syscall_vec, syscall_vec)


def trap(cpu, *args):
    """What x86/core.py does on `int $0x1f`, then the run loop's call."""
    cpu.hcall = HcallArgs(*args)
    hc.do_hypercalls(cpu)


def booted(record=None):
    """A fresh Guest that has done LHCALL_LGUEST_INIT successfully."""
    host, lg, cpu = fresh()
    page_tables.init_guest_pagetable(lg, PGDIR)
    lguest_data(lg)
    trap(cpu, LHCALL_LGUEST_INIT, LD)
    assert lg.dead is None and lg.lguest_data == LD
    if record is not None:
        record.clear()
    return host, lg, cpu


def queue(lg, n, *args, status=0):
    """Fill ring slot n (the Guest's async_hcall)."""
    args = (list(args) + [0] * 5)[:5]
    wr(lg, LD + LguestData.hcalls + 20 * n, struct.pack("<5I", *args))
    wr(lg, LD + LguestData.hcall_status + n, bytes([status]))


def status(lg, n):
    return rd(lg, LD + LguestData.hcall_status + n, 1)


# -- recorders for the colleagues' modules ----------------------------------------------------
PT_CALLS = ("guest_new_pagetable", "guest_pagetable_clear_all", "guest_pagetable_flush_user",
            "guest_set_pte", "guest_set_pgd", "guest_set_pmd", "page_table_guest_data_init")
IT_CALLS = ("guest_set_stack", "guest_set_clockevent", "load_guest_idt_entry")


@pytest.fixture
def rec(monkeypatch):
    calls = []

    def recorder(name):
        def fn(first, *args):
            who = ("lg" if isinstance(first, Lguest)
                   else "cpu" if isinstance(first, LgCpu) else first)
            calls.append((name, who) + args)
        return fn
    for name in PT_CALLS:
        monkeypatch.setattr(page_tables, name, recorder(name))
    for name in IT_CALLS:
        monkeypatch.setattr(interrupts_and_traps, name, recorder(name))
    return calls


@pytest.fixture
def g(rec):
    return booted(rec)


# -- HcallArgs ------------------------------------------------------------------------------
def test_hcall_args_are_u32():
    a = HcallArgs(-1, 1 << 32 | 5, 2, 3, 4)
    assert (a.arg0, a.arg1, a.arg2, a.arg3, a.arg4) == (0xFFFFFFFF, 5, 2, 3, 4)
    b = HcallArgs.unpack(struct.pack("<5I", 9, 8, 7, 6, 5))
    assert b == HcallArgs(9, 8, 7, 6, 5)


# -- initialize ------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [0, 2, 5, 10, 17, 19, 0xFFFFFFFF])
def test_first_hypercall_must_be_init(rec, call):
    host, lg, cpu = fresh()
    lguest_data(lg)
    trap(cpu, call, LD, 2, 3, 4)
    assert lg.dead == "hypercall %i before INIT" % call
    assert lg.lguest_data is None and cpu.hcall is None
    assert rec == [] and cpu.halted is False and lg.stats.hypercalls == {}


def test_init(rec):
    host, lg, cpu = fresh()
    host.boot_wall_ns = 1_700_000_000 * 10**9 + 123
    lguest_data(lg)
    trap(cpu, LHCALL_LGUEST_INIT, LD)
    assert lg.dead is None
    assert lg.lguest_data == LD and cpu.hcall is None
    assert (lg.noirq_start, lg.noirq_end) == NOIRQ
    assert rd(lg, LD + LguestData.tsc_khz) == lg.tsc_khz
    ns = host.boot_wall_ns + host.now_ns()
    assert rd(lg, LD + LguestData.time_sec) == ns // 10**9
    assert rd(lg, LD + LguestData.time_nsec) == ns % 10**9
    # page_tables' part, then every shadow dropped, in that order (Linux).
    assert rec == [("page_table_guest_data_init", "cpu"), ("guest_pagetable_clear_all", "cpu")]
    assert lg.stats.hypercalls[LHCALL_LGUEST_INIT] == 1


def test_init_does_not_run_the_ring(rec):
    host, lg, cpu = fresh()
    lguest_data(lg)
    queue(lg, 0, LHCALL_TS, 1)
    trap(cpu, LHCALL_LGUEST_INIT, LD)
    assert cpu.ts == 0 and status(lg, 0) == 0 and cpu.next_hcall == 0


@pytest.mark.parametrize("addr", [MEM - LguestData.SIZE + 4, MEM, 0xFFFFFFFF, 0xFFFFF000])
def test_init_bad_address(rec, addr):
    host, lg, cpu = fresh()
    trap(cpu, LHCALL_LGUEST_INIT, addr)
    assert lg.dead == "bad guest page %#x" % addr
    assert lg.lguest_data is None and cpu.hcall is None and rec == []


def test_init_at_the_very_end_of_memory(rec):
    host, lg, cpu = fresh()
    ld = MEM - LguestData.SIZE
    lguest_data(lg, ld)
    trap(cpu, LHCALL_LGUEST_INIT, ld)
    assert lg.dead is None and lg.lguest_data == ld


def test_init_bad_syscall_vector(rec):
    host, lg, cpu = fresh()
    lguest_data(lg, syscall_vec=0x81)
    trap(cpu, LHCALL_LGUEST_INIT, LD)
    assert lg.dead == "bad syscall vector"


def test_init_twice(g, rec):
    host, lg, cpu = g
    trap(cpu, LHCALL_LGUEST_INIT, LD)
    assert lg.dead == "already have lguest_data"


# -- do_hcall: each call ----------------------------------------------------------------------
A = (0x11111111, 0x22222222, 0x33333333, 0x44444444)


@pytest.mark.parametrize("call,args,expect", [
    (LHCALL_NEW_PGTABLE, A, ("guest_new_pagetable", "cpu", A[0])),
    (LHCALL_FLUSH_TLB, (1,) + A[1:], ("guest_pagetable_clear_all", "cpu")),
    (LHCALL_FLUSH_TLB, (0xFFFFFFFF,) + A[1:], ("guest_pagetable_clear_all", "cpu")),
    (LHCALL_FLUSH_TLB, (0,) + A[1:], ("guest_pagetable_flush_user", "cpu")),
    (LHCALL_SET_PTE, A, ("guest_set_pte", "cpu", A[0], A[1], A[2])),
    (LHCALL_SET_PGD, A, ("guest_set_pgd", "lg", A[0], A[1])),
    (LHCALL_SET_PMD, A, ("guest_set_pmd", "lg", A[0], A[1])),
    (LHCALL_SET_STACK, A, ("guest_set_stack", "cpu", A[0], A[1], A[2])),
    (LHCALL_SET_CLOCKEVENT, A, ("guest_set_clockevent", "cpu", A[0])),
    (LHCALL_LOAD_IDT_ENTRY, A, ("load_guest_idt_entry", "cpu", A[0], A[1], A[2])),
])
def test_dispatch(g, rec, call, args, expect):
    host, lg, cpu = g
    trap(cpu, call, *args)
    assert rec == [expect]
    assert lg.dead is None and cpu.hcall is None
    assert lg.stats.hypercalls[call] == 1 and lg.stats.async_hypercalls == 0


@pytest.mark.parametrize("call", [LHCALL_FLUSH_ASYNC, LHCALL_SEND_INTERRUPTS])
def test_calls_that_do_nothing(g, rec, call):
    host, lg, cpu = g
    trap(cpu, call, *A)
    assert rec == [] and lg.dead is None and cpu.hcall is None
    assert (cpu.ts, cpu.halted, cpu.pending_notify) == (0, False, 0)
    assert lg.stats.hypercalls[call] == 1


def test_ts_halt_notify(g, rec):
    host, lg, cpu = g
    trap(cpu, LHCALL_TS, 1)
    assert cpu.ts == 1
    trap(cpu, LHCALL_TS, 0)
    assert cpu.ts == 0
    trap(cpu, LHCALL_HALT)
    assert cpu.halted is True
    trap(cpu, LHCALL_NOTIFY, 0x4567)
    assert cpu.pending_notify == 0x4567 and cpu.hcall is None
    assert lg.dead is None and rec == []


def test_load_gdt_entry_and_tls_go_to_segments(g, rec):
    host, lg, cpu = g
    trap(cpu, LHCALL_LOAD_GDT_ENTRY, 14, 0x0000FFFF, 0x00CFFA00)
    assert cpu.gdt[14] == 0x00CFFB00_0000FFFF and cpu.changed & CHANGED_GDT
    wr(lg, 0x5000, struct.pack("<3Q", 0x00CF9200_0000FFFF, 0, 0))
    cpu.changed = 0
    trap(cpu, LHCALL_LOAD_TLS, 0x5000)
    assert cpu.gdt[6] == 0x00CFB300_0000FFFF and cpu.changed == CHANGED_GDT_TLS
    trap(cpu, LHCALL_LOAD_GDT_ENTRY, 40, 0, 0)
    assert lg.dead == "too many gdt entries 40"


@pytest.mark.parametrize("call", [3, 11, 12, 20, 21, 255, 0x80000000, 0xFFFFFFFF])
def test_bad_hypercall(g, rec, call):
    host, lg, cpu = g
    trap(cpu, call, *A)
    assert lg.dead == "Bad hypercall %i" % call
    assert rec == []


# -- SHUTDOWN --------------------------------------------------------------------------------
def test_shutdown_power_off(g):
    host, lg, cpu = g
    wr(lg, 0x6000, b"Power down\0junk")
    trap(cpu, LHCALL_SHUTDOWN, 0x6000, LGUEST_SHUTDOWN_POWEROFF)
    assert lg.dead == "CRASH: Power down"
    assert lg.shutdown_reason == LGUEST_SHUTDOWN_POWEROFF


def test_shutdown_restart(g):
    host, lg, cpu = g
    wr(lg, 0x6000, b"Restart\0")
    trap(cpu, LHCALL_SHUTDOWN, 0x6000, LGUEST_SHUTDOWN_RESTART)
    assert lg.dead == "restart"
    assert lg.shutdown_reason == LGUEST_SHUTDOWN_RESTART


def test_shutdown_other_reason_still_kills(g):
    host, lg, cpu = g
    wr(lg, 0x6000, b"oops\0")
    trap(cpu, LHCALL_SHUTDOWN, 0x6000, 7)
    assert lg.dead == "CRASH: oops" and lg.shutdown_reason == 7


def test_shutdown_reason_is_at_most_127_bytes(g):
    host, lg, cpu = g
    wr(lg, 0x6000, b"x" * 300)                      # no NUL within 128 bytes
    trap(cpu, LHCALL_SHUTDOWN, 0x6000, LGUEST_SHUTDOWN_POWEROFF)
    assert lg.dead == "CRASH: " + "x" * 127


def test_shutdown_reason_at_the_end_of_memory(g):
    host, lg, cpu = g
    wr(lg, MEM - 4, b"bye\0")
    trap(cpu, LHCALL_SHUTDOWN, MEM - 4, LGUEST_SHUTDOWN_POWEROFF)
    assert lg.dead == "CRASH: bye"


def test_shutdown_undecodable_reason(g):
    host, lg, cpu = g
    wr(lg, 0x6000, b"\xff\xfe%s\0")
    trap(cpu, LHCALL_SHUTDOWN, 0x6000, LGUEST_SHUTDOWN_POWEROFF)
    assert lg.dead == "CRASH: \ufffd\ufffd%s"


@pytest.mark.parametrize("addr", [MEM, 0xFFFFFFFF])
def test_shutdown_bad_address(g, addr):
    host, lg, cpu = g
    trap(cpu, LHCALL_SHUTDOWN, addr, LGUEST_SHUTDOWN_POWEROFF)
    # The read's own kill comes first and is the reason kept (Linux).
    assert lg.dead.startswith("bad read address")
    assert lg.shutdown_reason == LGUEST_SHUTDOWN_POWEROFF


def test_shutdown_restart_bad_address(g):
    host, lg, cpu = g
    trap(cpu, LHCALL_SHUTDOWN, MEM, LGUEST_SHUTDOWN_RESTART)
    assert lg.dead == "restart"


# -- the async ring --------------------------------------------------------------------------
def clock_order(rec):
    return [c[2] for c in rec if c[0] == "guest_set_clockevent"]


def test_ring_runs_in_order_and_stops_at_the_first_empty_slot(g, rec):
    host, lg, cpu = g
    for n in range(5):
        queue(lg, n, LHCALL_SET_CLOCKEVENT, 100 + n)
    queue(lg, 5, LHCALL_SET_CLOCKEVENT, 105, status=0xFF)      # not ready
    queue(lg, 6, LHCALL_SET_CLOCKEVENT, 106)                   # ready, but after a gap
    trap(cpu, LHCALL_SET_CLOCKEVENT, 999)
    assert clock_order(rec) == [100, 101, 102, 103, 104, 999]   # ring first, then the trap
    assert [status(lg, n) for n in range(7)] == [0xFF] * 6 + [0]
    assert cpu.next_hcall == 5
    assert lg.stats.async_hypercalls == 5
    assert lg.stats.hypercalls[LHCALL_SET_CLOCKEVENT] == 6
    assert cpu.hcall is None and lg.dead is None


def test_ring_any_non_ff_status_is_ready(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 1, status=0x01)
    queue(lg, 1, LHCALL_SET_CLOCKEVENT, 2, status=0xFE)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [1, 2] and cpu.next_hcall == 2


def test_ring_resumes_where_it_stopped(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 10)
    queue(lg, 1, LHCALL_SET_CLOCKEVENT, 11)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [10, 11] and cpu.next_hcall == 2
    # The Guest queues more; slot 0 is ready again too, but behind the cursor.
    queue(lg, 2, LHCALL_SET_CLOCKEVENT, 12)
    queue(lg, 3, LHCALL_SET_CLOCKEVENT, 13)
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 20)
    rec.clear()
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [12, 13] and cpu.next_hcall == 4
    assert status(lg, 0) == 0


def test_ring_wraps_and_stops_at_gap(g, rec):
    host, lg, cpu = g
    cpu.next_hcall = 62
    for n in (62, 63, 0, 1):
        queue(lg, n, LHCALL_SET_CLOCKEVENT, 1000 + n)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [1062, 1063, 1000, 1001]
    assert cpu.next_hcall == 2


def test_full_ring_runs_once_round(g, rec):
    host, lg, cpu = g
    cpu.next_hcall = 10
    for n in range(LHCALL_RING_SIZE):
        queue(lg, n, LHCALL_SET_CLOCKEVENT, n)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == list(range(10, 64)) + list(range(10))
    assert cpu.next_hcall == 10
    assert all(status(lg, n) == 0xFF for n in range(LHCALL_RING_SIZE))
    assert lg.stats.async_hypercalls == 64


def test_ring_status_is_read_once(g, rec, monkeypatch):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 1)
    queue(lg, 1, LHCALL_SET_CLOCKEVENT, 2, status=0xFF)

    def clockevent(cpu_, delta):
        rec.append(("guest_set_clockevent", "cpu", delta))
        wr(lg, LD + LguestData.hcall_status + 1, b"\0")     # readied behind our back
    monkeypatch.setattr(interrupts_and_traps, "guest_set_clockevent", clockevent)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [1] and cpu.next_hcall == 1
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert clock_order(rec) == [1, 2] and cpu.next_hcall == 2


def test_ring_stops_at_notify_and_the_trap_waits(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 1)
    queue(lg, 1, LHCALL_NOTIFY, 0xABC0)
    queue(lg, 2, LHCALL_SET_CLOCKEVENT, 3)
    trap(cpu, LHCALL_SET_CLOCKEVENT, 4)
    assert clock_order(rec) == [1]
    assert cpu.pending_notify == 0xABC0
    assert [status(lg, n) for n in range(3)] == [0xFF, 0xFF, 0]
    assert cpu.next_hcall == 2
    assert cpu.hcall == HcallArgs(LHCALL_SET_CLOCKEVENT, 4)   # still pending
    # The Launcher serves the notify; the run loop comes back to the hypercall.
    cpu.pending_notify = 0
    hc.do_hypercalls(cpu)
    assert clock_order(rec) == [1, 3, 4]
    assert cpu.hcall is None and cpu.next_hcall == 3
    assert lg.stats.hypercalls[LHCALL_SET_CLOCKEVENT] == 3


def test_ring_stops_when_the_guest_dies(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_SET_CLOCKEVENT, 1)
    queue(lg, 1, 77)                                        # bad hypercall
    queue(lg, 2, LHCALL_SET_CLOCKEVENT, 3)
    trap(cpu, LHCALL_SET_CLOCKEVENT, 4)
    assert lg.dead == "Bad hypercall 77"
    assert clock_order(rec) == [1]                          # nor the trap hypercall
    assert [status(lg, n) for n in range(3)] == [0xFF, 0xFF, 0]
    assert cpu.next_hcall == 2 and cpu.hcall is None


def test_ring_init_kills(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_LGUEST_INIT, LD)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert lg.dead == "already have lguest_data"


def test_ring_shutdown(g, rec):
    host, lg, cpu = g
    wr(lg, 0x6000, b"from the ring\0")
    queue(lg, 0, LHCALL_SHUTDOWN, 0x6000, LGUEST_SHUTDOWN_POWEROFF)
    trap(cpu, LHCALL_FLUSH_ASYNC)
    assert lg.dead == "CRASH: from the ring"


def test_ring_slot_outside_memory(rec):
    # lguest_data so close to the end that the status bytes are there but
    # the argument slots are not (INIT would refuse it: set directly).
    host, lg, cpu = fresh()
    lg.lguest_data = ld = MEM - LguestData.hcalls - 8
    wr(lg, ld + LguestData.hcall_status, b"\0" + b"\xff" * 63)
    cpu.hcall = HcallArgs(LHCALL_TS, 1)
    hc.do_hypercalls(cpu)
    assert lg.dead == "Fetching async hypercalls"
    assert cpu.next_hcall == 1 and cpu.ts == 0
    assert rec == []


def test_clear_hcall(g):
    host, lg, cpu = g
    wr(lg, LD + LguestData.hcall_status, bytes(64))
    hc.clear_hcall(cpu, 17)
    assert [status(lg, n) for n in range(64)] == [0] * 17 + [0xFF] + [0] * 46


def test_do_hypercalls_without_a_trap_runs_only_the_ring(g, rec):
    host, lg, cpu = g
    queue(lg, 0, LHCALL_TS, 1)
    cpu.hcall = None
    hc.do_hypercalls(cpu)
    assert cpu.ts == 1 and lg.dead is None


def test_trap_notify_is_done_not_left_pending(g, rec):
    host, lg, cpu = g
    trap(cpu, LHCALL_NOTIFY, 0x100)
    assert cpu.pending_notify == 0x100 and cpu.hcall is None


# -- properties, with the real page_tables and interrupts_and_traps --------------------------
KNOWN = [LHCALL_FLUSH_ASYNC, LHCALL_LGUEST_INIT, LHCALL_SHUTDOWN, LHCALL_NEW_PGTABLE,
         LHCALL_FLUSH_TLB, LHCALL_LOAD_IDT_ENTRY, LHCALL_SET_STACK, LHCALL_TS,
         LHCALL_SET_CLOCKEVENT, LHCALL_HALT, LHCALL_SET_PMD, LHCALL_SET_PTE, LHCALL_SET_PGD,
         LHCALL_LOAD_TLS, LHCALL_NOTIFY, LHCALL_LOAD_GDT_ENTRY, LHCALL_SEND_INTERRUPTS]
u32 = st.integers(0, 0xFFFFFFFF)
# Mostly calls a Guest may survive, so sequences get somewhere; the rest
# any number at all.
SURVIVABLE = [c for c in KNOWN if c not in (LHCALL_LGUEST_INIT, LHCALL_SHUTDOWN)]
numbers = st.one_of(st.sampled_from(SURVIVABLE), st.sampled_from(SURVIVABLE),
                    st.sampled_from(SURVIVABLE), st.sampled_from(KNOWN),
                    st.integers(0, 25), u32)
values = st.one_of(
    st.integers(0, 64),
    st.sampled_from([PGDIR, 0x2000, 0x5000, MEM - 4096, MEM - 4, MEM, 0xFFFFFFFF,
                     __KERNEL_DS | GUEST_PL, PAGE_OFFSET, PAGE_OFFSET + 0x2000,
                     0xFFC00000, 0x00CF9A00, 0x00CF9200, 0x0000FFFF, 0xEC00, 0x8E00]),
    st.integers(0, MEM).map(lambda a: a & ~0xFFF),
    u32)
calls = st.tuples(numbers, values, values, values, values)


def _snapshot(host):
    return host.mem.ram[:POOL_START].copy()


def _check_effect(lg, cpu, args, stats_before):
    """A hypercall the Guest survived did what it says."""
    call, a1, a2, a3, _ = args
    assert lg.stats.hypercalls[call] == stats_before + 1
    if call == LHCALL_TS:
        assert cpu.ts == a1
    elif call == LHCALL_HALT:
        assert cpu.halted
    elif call == LHCALL_SET_STACK:
        assert (cpu.ss1, cpu.esp1, lg.stack_pages) == (a1, a2, a3)
    elif call == LHCALL_SET_CLOCKEVENT:
        assert (cpu.hrt_expires is None) == (a1 == 0)
    elif call == LHCALL_NEW_PGTABLE:
        assert lg.pgdirs[cpu.cpu_pgd].gpgdir == a1 and lg.pgdirs[cpu.cpu_pgd].pgdir
    elif call == LHCALL_LOAD_GDT_ENTRY:
        assert cpu.changed & CHANGED_GDT
        want = a2 | a3 << 32
        got = cpu.gdt[a1]
        if a1 in (10, 11, 16, 31):
            assert got == want
        else:
            assert got & ~(3 << 45 | 1 << 40) == want & ~(3 << 45 | 1 << 40)
    elif call == LHCALL_LOAD_TLS:
        assert cpu.changed & CHANGED_GDT_TLS
    elif call == LHCALL_LOAD_IDT_ENTRY:
        assert a1 in (2, 8, 15, 0x1F) or cpu.changed & CHANGED_IDT
    elif call in (LHCALL_SHUTDOWN, LHCALL_LGUEST_INIT):
        raise AssertionError("survived a call that always kills")
    elif call not in KNOWN:
        raise AssertionError("survived an unknown hypercall")


def _gdt_safe(cpu):
    for i in range(GDT_ENTRIES):
        if i in (10, 11, 16, 31):
            continue
        d = cpu.gdt[i]
        if d >> 47 & 1:
            assert d >> 44 & 1 and d >> 45 & 3, f"GDT entry {i} = {d:#x}"


@given(st.lists(calls, min_size=1, max_size=12))
def test_random_trap_hypercalls_take_effect_or_kill(seq):
    host, lg, cpu = booted()
    low = _snapshot(host)
    for args in seq:
        args = HcallArgs(*args)
        tup = (args.arg0, args.arg1, args.arg2, args.arg3, args.arg4)
        before = lg.stats.hypercalls[args.arg0]
        cpu.changed = 0
        cpu.hcall = args
        hc.do_hypercalls(cpu)
        assert cpu.hcall is None
        if args.arg0 == LHCALL_NOTIFY:
            assert cpu.pending_notify == args.arg1
            cpu.pending_notify = 0                      # the Launcher served it
        if lg.dead is not None:
            assert isinstance(lg.dead, str) and lg.dead
            event("killed by " + HCALL_NAMES.get(args.arg0, "an unknown call"))
            break
        event("survived " + HCALL_NAMES.get(args.arg0, "?"))
        _check_effect(lg, cpu, tup, before)
        _gdt_safe(cpu)
    _gdt_safe(cpu)
    # The Switcher and its state pages are not the Guest's to write.
    assert (host.mem.ram[:POOL_START] == low).all()
    assert lg.stats.async_hypercalls == 0


@given(calls)
def test_random_first_hypercall(args):
    host, lg, cpu = fresh()
    page_tables.init_guest_pagetable(lg, PGDIR)
    lguest_data(lg)
    args = HcallArgs(*args)
    cpu.hcall = args
    hc.do_hypercalls(cpu)
    assert cpu.hcall is None
    if args.arg0 != LHCALL_LGUEST_INIT:
        assert lg.dead == "hypercall %i before INIT" % args.arg0 and lg.lguest_data is None
    elif lg.dead is None:
        assert lg.lguest_data == args.arg1
        assert lg.noirq_start == rd(lg, args.arg1 + LguestData.noirq_start)
    else:
        assert lg.dead.startswith(("bad guest page", "bad syscall vector", "bad kernel address"))


@given(st.lists(calls, max_size=LHCALL_RING_SIZE).filter(lambda r: len(r) < 24 or len(r) == 64),
       st.lists(st.one_of(st.just(0xFF), st.integers(0, 0xFF)), min_size=64, max_size=64),
       st.integers(0, LHCALL_RING_SIZE - 1), calls)
def test_random_ring(ready, others, start, trap_args):
    """`ready` fills the ring from `start`; the slot after them is empty;
    the rest hold random statuses over calls that must never run."""
    host, lg, cpu = booted()
    low = _snapshot(host)
    cpu.next_hcall = start
    wr(lg, 0x6000, b"ran past the gap\0")
    statuses = {}
    for k in range(LHCALL_RING_SIZE):
        n = (start + k) % 64
        if k < len(ready):
            statuses[n] = k % 0xFF          # any status but 0xFF means ready
            queue(lg, n, *ready[k], status=statuses[n])
        else:
            statuses[n] = 0xFF if k == len(ready) else others[k]
            queue(lg, n, LHCALL_SHUTDOWN, 0x6000, status=statuses[n])
    cpu.hcall = HcallArgs(*trap_args)
    hc.do_hypercalls(cpu)
    ran = lg.stats.async_hypercalls
    event("ring slots run: %s" % ("0" if not ran else "1-3" if ran < 4 else "4+"))
    assert lg.dead != "CRASH: ran past the gap"
    assert ran <= len(ready)
    # Ending early means a notify or a death, at the last slot run.
    if ran < len(ready):
        assert cpu.pending_notify or lg.dead is not None
        last = HcallArgs(*ready[ran - 1])
        assert last.arg0 == LHCALL_NOTIFY and last.arg1 or lg.dead is not None
    assert cpu.next_hcall == (start + ran) % 64
    for k in range(LHCALL_RING_SIZE):
        n = (start + k) % 64
        assert status(lg, n) == (0xFF if k < ran else statuses[n])
    # A notify from the ring leaves the trap hypercall for later.
    last = HcallArgs(*ready[ran - 1]) if ran else None
    if last and last.arg0 == LHCALL_NOTIFY and last.arg1:
        assert cpu.pending_notify == last.arg1
        assert cpu.hcall == HcallArgs(*trap_args)
    else:
        assert cpu.hcall is None
    _gdt_safe(cpu)
    assert (host.mem.ram[:POOL_START] == low).all()
