"""The fast path (x86core/interrupts.py, run through cpu.run with no
exception_hook) against the reference model (x86core/reference.py, the
SDM pseudo-code) on machine states from x86core.testing.strategies: the
same frame bytes and accessed-bit writes, CS:EIP, SS:ESP, every segment
register, EFLAGS, CPL and CR2, or the same task switch, or both shut down.

And a round trip the reference does not need: an event delivered, then
IRET in its handler, comes back to the interrupted context.
"""
from __future__ import annotations

import struct

from hypothesis import assume, event, given, note
from hypothesis import strategies as st

from x86core import flags as F
from x86core import interrupts, reference
from x86core.cpu import StopExecution
from x86core.testing import expected, load_cpu, machine_states, run_scenario
from x86core.testing.strategies import EVENTS, good_gates


def check(scenario):
    note(scenario.description)
    want = expected(scenario)
    event(f"{scenario.description.split()[0]}: {want.result} {want.vector}")
    got = run_scenario(scenario)
    assert got == want


@given(machine_states(modes=st.just("protected")))
def test_protected_mode_delivery_matches_the_reference(scenario):
    check(scenario)


@given(machine_states(modes=st.just("protected"), events=st.sampled_from(["int", "irq"])))
def test_software_and_external_interrupts_match_the_reference(scenario):
    check(scenario)


@given(machine_states(modes=st.just("v86")))
def test_v86_mode_delivery_matches_the_reference(scenario):
    check(scenario)


@given(machine_states(modes=st.just("real")))
def test_real_mode_delivery_matches_the_reference(scenario):
    check(scenario)


# -- delivery then IRET ------------------------------------------------------------------------

def _deliver_then_iret(scenario):
    """Run the scenario's event to its handler, put IRET there and run it.
    Returns (cpu, the delivery record, the IRET record) or None."""
    cpu = load_cpu(scenario.state)
    records = []

    def stop(record):
        records.append(record)
        raise StopExecution(record.kind)

    pending = [scenario.event.vector] if scenario.event.kind == "interrupt" else []
    cpu.irq_line = (lambda: pending.pop() if pending else None) if pending else None
    interrupts.TRACE_HOOKS.append(stop)
    try:
        if cpu.run(max_instructions=4) != "stop":
            return None
        delivery = records[-1]
        if (delivery.vector, delivery.kind) != (scenario.event.vector, scenario.event.kind):
            return None                         # a fault on the way was delivered instead
        # The handler: drop the error code if one was pushed, then IRET.
        handler = b"\xCF" if delivery.error_code is None else \
            (b"\x83\xC4\x04\xCF" if cpu.bits == 32 else b"\x83\xC4\x02\xCF")
        cpu.mem.load((cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF, handler)
        cpu.blocks.flush()
        if cpu.run(max_instructions=len(handler) // 3 + 1) != "stop" or records[-1].kind != "iret":
            return None
    finally:
        interrupts.TRACE_HOOKS.remove(stop)
    return cpu, delivery, records[-1]


@given(machine_states(modes=st.sampled_from(["protected", "protected", "v86"]),
                      events=st.sampled_from([e for e in EVENTS if e != "pf"]),
                      event_gates=good_gates()))
def test_iret_returns_to_the_interrupted_context(scenario):
    state, ev = scenario.state, scenario.event
    outcome = reference.deliver(state, ev)
    assume(isinstance(outcome, reference.Delivered) and (outcome.vector, outcome.kind) ==
           (ev.vector, ev.kind))
    # A frame pushed across the top of the address space lands partly above
    # RAM, where nothing keeps it: there is nothing to come back to.
    assume(all(a + s <= state.memory_size for a, s, _ in outcome.writes))
    slot = 4 if struct.unpack_from("<Q", state.idt.data, 8 * ev.vector)[0] >> 43 & 1 else 2
    handler_32 = bool(outcome.segs[1].attr & 0x4000)
    assume(handler_32 == (slot == 4))
    assume(not (state.eflags & F.VM and slot == 2))
    result = _deliver_then_iret(scenario)
    assume(result is not None)                  # e.g. the GDT entry of the old CS is broken
    cpu, delivery, back = result
    handler_cpl = delivery.new_cpl
    event(f"round trip {scenario.description.split()[0]} cpl {state.cpl} -> {handler_cpl}, "
          f"{slot * 8}-bit")
    mask = 0xFFFFFFFF if slot == 4 else 0xFFFF
    assert (cpu.seg_sel[1], cpu.eip) == (state.segs[1].selector, ev.return_eip & mask)
    assert cpu.cpl == state.cpl
    assert cpu.seg_sel[2] == state.segs[2].selector
    if delivery.stack_switched and (slot == 2 or not cpu.seg_attr[2] & 0x4000):
        # A 16-bit frame holds SP only; a 16-bit stack (as the GDT has it now,
        # whatever the state's cache said) gets SP only back.
        assert cpu.regs[4] & 0xFFFF == state.regs[4] & 0xFFFF
    else:
        assert cpu.regs[4] == state.regs[4]
    # EFLAGS: all of it but what IRET at the handler's CPL may not load.
    iopl = state.eflags >> 12 & 3
    unchanged = F.RF
    if handler_cpl > iopl:
        unchanged |= F.IF
    if handler_cpl > 0:
        unchanged |= F.IOPL | F.VIF | F.VIP
    if slot == 2:
        unchanged |= 0xFFFF0000
    assert (cpu.get_eflags() ^ state.eflags) & ~unchanged == 0
    # Data segments: back as they were, but for those the outer ring may not use.
    for n in (0, 3, 4, 5):
        seg = state.segs[n]
        if state.eflags & F.VM or not delivery.stack_switched:
            assert cpu.seg_sel[n] == seg.selector
        elif seg.selector & ~3 == 0 or not seg.attr & 0x10 or \
                (seg.attr & 0xC != 0xC and (seg.attr >> 5 & 3) < state.cpl):
            assert cpu.seg_sel[n] == 0
        else:
            assert cpu.seg_sel[n] == seg.selector
