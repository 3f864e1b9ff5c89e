"""lguest_host/core.py: building the machine, checked access to Guest
memory, the virtual clock and run_guest's loop (core.c's run_guest): what
each Exit means, the halted Guest sleeping until its timer, and a dead
Guest never running again.
"""
import pytest
from hypothesis import given, strategies as st

from lguest_host import lguest_user
from lguest_host.abi import PAGE_SIZE, X86_EFLAGS_IF, LguestData
from lguest_host.core import (Exit, lgread, lgread_bytes, lguest_address_ok, lguest_host_init,
                              lgwrite, lgwrite_bytes, write_timestamp)
from lguest_host.lg import HOST_RESERVED, VIRTUAL_HZ, kill_guest

from . import miniguest as m

LIMIT = m.GUEST_MEM


def fresh(ops=(), **kw) -> m.MiniGuest:
    return m.build(list(ops), **kw)


# -- the machine ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, -4096, 100, 4096 + 1])
def test_host_init_refuses_odd_sizes(size):
    with pytest.raises(ValueError):
        lguest_host_init(size)


def test_host_init_builds_the_machine():
    host = lguest_host_init(2 * PAGE_SIZE)
    assert host.mem.size == HOST_RESERVED + 2 * PAGE_SIZE
    assert host.switcher is not None and host.state is None
    assert host.now_ns() == 0


# -- guest memory access ------------------------------------------------------------------------
@given(st.integers(-2 * LIMIT, 2 * LIMIT), st.integers(-8, 2 * LIMIT))
def test_address_ok_is_inside_guest_memory(addr, length):
    g = fresh()
    expected = 0 <= addr and 0 <= length and addr + length <= LIMIT
    assert lguest_address_ok(g.lg, addr, length) == expected


@given(st.integers(0, LIMIT + 64), st.sampled_from([1, 2, 4, 8]), st.integers(0, 2 ** 64 - 1))
def test_lgread_lgwrite_round_trip_or_kill(addr, size, value):
    g = fresh()
    ok = addr + size <= LIMIT
    before = g.host.mem.ram.copy()
    lgwrite(g.cpu, addr, size, value)
    if ok:
        assert g.lg.dead is None
        assert lgread(g.cpu, addr, size) == value & ((1 << 8 * size) - 1)
        assert g.read(addr, size) == (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
    else:
        assert g.lg.dead == f"bad write address {addr:#x} len {size}"
        assert (g.host.mem.ram == before).all()
        assert lgread(g.cpu, addr, size) == 0
        # The first reason is the one kept.
        assert g.lg.dead.startswith("bad write")


def test_lgread_out_of_range_kills_and_reads_zero():
    g = fresh()
    assert lgread(g.cpu, LIMIT - 2, 4) == 0
    assert g.lg.dead == f"bad read address {LIMIT - 2:#x} len 4"


def test_lgread_bytes_and_lgwrite_bytes():
    g = fresh()
    lgwrite_bytes(g.cpu, 0x5000, b"hello")
    assert lgread_bytes(g.cpu, 0x5000, 5) == b"hello"
    assert g.lg.dead is None
    assert lgread_bytes(g.cpu, LIMIT - 1, 2) == b"\0\0"
    assert g.lg.dead == f"bad read address {LIMIT - 1:#x} len 2"
    g2 = fresh()
    lgwrite_bytes(g2.cpu, LIMIT, b"x")
    assert g2.lg.dead == f"bad write address {LIMIT:#x} len 1"
    # A negative or absurd length reads as nothing rather than allocating it.
    g3 = fresh()
    assert lgread_bytes(g3.cpu, 0, -1) == b""
    assert lgread_bytes(g3.cpu, 0, 1 << 40) == b""
    assert g3.lg.dead is not None


def test_kill_guest_keeps_the_first_reason():
    g = fresh()
    kill_guest(g.cpu, "first %d", 1)
    kill_guest(g.cpu, "second")
    assert g.lg.dead == "first 1"
    g2 = fresh()
    kill_guest(g2.cpu, "bad format %d %d", 1)
    assert g2.lg.dead.startswith("bad format")


# -- the clock ---------------------------------------------------------------------------------
def test_clock_is_instructions_plus_sleep():
    g = fresh([m.end("spin_k")])
    g.run(1000)
    assert g.host.now_ns() == g.hw.icount * 1_000_000_000 // VIRTUAL_HZ
    g.host.skipped_ns = 12345
    assert g.host.now_ns() == g.hw.icount + 12345


def test_write_timestamp_follows_the_virtual_clock():
    g = fresh()
    g.lg.lguest_data = m.LGUEST_DATA
    g.host.boot_wall_ns = 1_700_000_000_123_456_789
    g.host.skipped_ns = 2_000_000_500
    write_timestamp(g.cpu)
    total = 1_700_000_000_123_456_789 + 2_000_000_500
    assert g.ldata(LguestData.time_sec) == total // 10 ** 9
    assert g.ldata(LguestData.time_nsec) == total % 10 ** 9


# -- run_guest's exits ---------------------------------------------------------------------------
def setup_timer(delta: int, gate_type: int = 0xE) -> list:
    return m.standard_setup() + [
        m.hcall(6, 0x20, *m.gate(m.label("handler"), gate_type, 0)),
        m.hcall(9, delta)]


def test_halt_without_a_timer_returns_halted():
    g = fresh(m.standard_setup() + [m.hcall(10), m.end("spin_k")])
    out = g.run()
    assert out == Exit("halted")
    assert g.cpu.halted and g.lg.dead is None
    # Asking again changes nothing: nothing can wake it.
    assert g.run() == Exit("halted")


def test_halt_sleeps_until_the_timer():
    delta = 50_000_000                                       # 50 ms of virtual time
    g = fresh(setup_timer(delta) + [m.hcall(10), m.end("spin_k")], blocked=0,
              irq_enabled=0)
    out = g.run()
    # Woken by the timer interrupt: the Guest is in its handler (whose HLT
    # kills it), with the clock moved on to the timer without running.
    assert out.kind == "dead" and out.value.startswith(f"unhandled trap 13 at "
                                                       f"{m.label('handler'):#x}")
    assert g.lg.stats.interrupts[0] == 1
    assert g.host.skipped_ns > delta - 2_000
    assert g.host.now_ns() >= delta
    assert g.hw.icount < 2_000                               # it slept, it did not spin
    # The TSC (tsc_khz says it runs with the clock) jumped with it.
    assert g.hw.rdtsc() == g.host.now_ns() * g.lg.tsc_khz // 1_000_000
    # HALT is "enable interrupts and sleep"; the interrupt gate turned them off again.
    assert g.ldata(LguestData.irq_enabled) == 0
    # The frame: the Guest returns to after its HALT hypercall with IF on.
    assert g.u32(g.cpu.regs.esp + 8) & X86_EFLAGS_IF
    assert g.ldata(LguestData.time_sec) * 10 ** 9 + g.ldata(LguestData.time_nsec) >= delta


def test_halt_with_an_interrupt_pending_does_not_sleep():
    g = fresh(setup_timer(10 ** 9) + [m.hcall(10), m.end("spin_k")], blocked=0)
    lguest_user.user_send_irq(g.cpu, 0)
    g.run()
    assert g.lg.stats.interrupts[0] == 1
    assert g.host.skipped_ns == 0


def test_halt_with_the_timer_blocked_sleeps_then_halts():
    g = fresh(setup_timer(1_000_000) + [m.hcall(10), m.end("spin_k")], blocked=1)
    out = g.run()
    assert out == Exit("halted")
    assert g.host.now_ns() >= 1_000_000
    assert g.cpu.irqs_pending == 1 and not g.lg.stats.interrupts


def test_timer_interrupts_a_running_guest():
    g = fresh(setup_timer(20_000) + [m.end("spin_k")], blocked=0)
    out = g.run(200_000)
    assert out.kind == "dead" and g.lg.stats.interrupts[0] == 1
    assert 20_000 <= g.host.now_ns() < 20_000 + 1_000
    assert g.host.skipped_ns == 0
    # The frame says where the Guest was: spinning.
    assert g.u32(g.cpu.regs.esp) == m.label("spin_k")


def test_notify_goes_to_the_launcher_and_the_guest_goes_on():
    g = fresh(m.standard_setup() + [m.hcall(17, 0x1234), m.hcall(17, 0x5678),
                                    m.end("halt_k")])
    assert g.run() == Exit("notify", 0x1234)
    assert g.run() == Exit("notify", 0x5678)
    out = g.run()
    assert out.kind == "dead" and "unhandled trap 13" in out.value


def test_budget_exit_and_resume():
    g = fresh(m.standard_setup() + [m.end("spin_k")])
    assert g.run(3000) == Exit("budget")
    assert g.run(3000) == Exit("budget")
    assert 6000 <= g.hw.icount < 7000
    assert g.lg.dead is None


def test_a_dead_guest_never_runs_again():
    g = fresh([m.hcall(2, 0, 1), m.end("spin_k")])        # SHUTDOWN before INIT
    out = g.run()
    assert out == Exit("dead", "hypercall 2 before INIT")
    entries, icount = g.lg.stats.entries, g.hw.icount
    assert g.run() == out
    assert (g.lg.stats.entries, g.hw.icount) == (entries, icount)


def test_shutdown_reason_reaches_the_launcher():
    msg_at = m.SCRATCH
    g = fresh(m.standard_setup() + [m.store(msg_at, int.from_bytes(b"bye!", "little")),
                                    m.hcall(2, msg_at, 1), m.end("spin_k")])
    out = g.run()
    assert out == Exit("dead", "CRASH: bye!")
    assert g.lg.shutdown_reason == 1


def test_interrupts_wait_for_irq_enabled():
    """An interrupt while the Guest has interrupts off is not delivered:
    irq_pending tells the Guest, which asks with SEND_INTERRUPTS later."""
    ops = m.standard_setup() + [m.hcall(6, 0x21, *m.gate(m.label("handler"), 0xE, 0)),
                                m.hcall(0), m.end("spin_k")]
    g = fresh(ops, blocked=0, irq_enabled=0)
    lguest_user.user_send_irq(g.cpu, 1)
    assert g.run(5_000) == Exit("budget")
    assert g.ldata(LguestData.irq_pending) == X86_EFLAGS_IF
    assert g.cpu.irqs_pending == 2 and not g.lg.stats.interrupts
    g.put32(m.LGUEST_DATA + LguestData.irq_enabled, X86_EFLAGS_IF)
    out = g.run(5_000)
    assert g.lg.stats.interrupts[1] == 1 and out.kind == "dead"
    assert g.ldata(LguestData.irq_pending) == 0
