"""Loading a reference.MachineState into a CPU, running a Scenario on it,
and putting both sides' outcomes in one comparable form."""
from __future__ import annotations

import struct

import attrs

from .. import interrupts, reference, transfers
from ..cpu import CPU, StopExecution
from .strategies import PAGE_DIRECTORY, PAGE_TABLE, Scenario

CR0_PE, CR0_ET, CR0_WP, CR0_PG = 0x1, 0x10, 0x10000, 0x80000000


def load_cpu(state: reference.MachineState) -> CPU:
    """A CPU in exactly `state`: memory regions, page tables (identity map
    at PAGE_DIRECTORY / PAGE_TABLE), registers, segment caches, GDTR, IDTR,
    LDTR, TR, CPL."""
    cpu = CPU(state.memory_size)
    for base, data in state.regions():
        if data:
            cpu.mem.load(base, data)
    cr0 = CR0_ET | (CR0_PE if state.pe else 0)
    if state.paging is not None:
        cpu.mem.write(PAGE_DIRECTORY, 4, PAGE_TABLE | state.paging.pde)
        table = bytearray(4096)
        for page, flags in state.paging.pte:
            struct.pack_into("<I", table, 4 * page, page << 12 | flags)
        cpu.mem.load(PAGE_TABLE, bytes(table))
        cpu.write_cr(3, PAGE_DIRECTORY)
        cr0 |= CR0_PG | (CR0_WP if state.paging.wp else 0)
    cpu.write_cr(0, cr0)
    cpu.regs[:] = list(state.regs)
    cpu.eip = state.eip
    cpu.set_eflags(state.eflags)
    cpu.cpl = state.cpl
    for n, seg in enumerate(state.segs):
        cpu.seg_sel[n], cpu.seg_base[n], cpu.seg_limit[n], cpu.seg_attr[n] = (
            seg.selector, seg.base, seg.limit, seg.attr)
    cpu.gdtr = (state.gdt.base, state.gdt.limit)
    cpu.idtr = (state.idt.base, state.idt.limit)
    cpu.ldtr = (state.ldtr.selector, state.ldtr.base, state.ldtr.limit, state.ldtr.attr)
    cpu.tr = (state.tr.selector, state.tr.base, state.tr.limit, state.tr.attr)
    cpu.bits = 32 if state.segs[1].attr & 0x4000 and not state.eflags & 0x20000 else 16
    cpu.cr2 = state.cr2
    cpu.mode_changed()
    return cpu


@attrs.frozen
class Observed:
    """An outcome in the form both sides can be compared in: memory writes
    as {address: byte} (in order, the last write to a byte wins)."""
    result: str                                 # "delivered", "task switch", "shutdown", other
    vector: int | None = None
    error_code: int | None = None
    writes: tuple = ()
    segs: tuple = ()
    eip: int | None = None
    esp: int | None = None
    eflags: int | None = None
    cpl: int | None = None
    cr2: int | None = None
    task: tuple | None = None


def _bytes_of(writes) -> tuple:
    out: dict[int, int] = {}
    for addr, size, value in writes:
        for i in range(size):
            out[(addr + i) & 0xFFFFFFFF] = (value >> (8 * i)) & 0xFF
    return tuple(sorted(out.items()))


def expected(scenario: Scenario) -> Observed:
    """The reference model's outcome for a scenario."""
    out = reference.deliver(scenario.state, scenario.event)
    cr2 = out.cr2 if getattr(out, "cr2", None) is not None else scenario.cr2_at_event
    if isinstance(out, reference.Shutdown):
        return Observed("shutdown")
    if isinstance(out, reference.TaskSwitch):
        return Observed("task switch", task=(out.tss_selector, out.error_code, out.ext), cr2=cr2)
    return Observed("delivered", out.vector, out.error_code, _bytes_of(out.writes),
                    tuple(attrs.astuple(s) for s in out.segs), out.eip, out.esp, out.eflags, out.cpl, cr2)


def _fetch_keeping_cr2(cpu):
    """cpu.fetch, but a page that stops a fetch after its first bytes (the
    block builder reads ahead to the end of the page and beyond) leaves
    CR2 alone: only a fault that is raised may set it."""
    fetch = cpu.fetch

    def wrapped(lin, size):
        cr2 = cpu.cr2
        out = fetch(lin, size)
        cpu.cr2 = cr2
        return out
    return wrapped


def run_scenario(scenario: Scenario) -> Observed:
    """Load the scenario into a CPU and run it (exception_hook None) until
    the first delivery completes: the fast path's outcome."""
    cpu = load_cpu(scenario.state)
    records, writes, task = [], [], []
    write_phys = cpu._write_phys

    def record_write(phys, size, value):
        writes.append((phys, size, value))
        write_phys(phys, size, value)

    def on_delivery(record):
        records.append(record)
        raise StopExecution("delivered")

    def on_task_switch(cpu, selector, source, *, next_eip=None, error_code=None, ext=False):
        task.append((selector, error_code, int(ext)))
        raise StopExecution("task switch")

    pending = [scenario.event.vector] if scenario.event.kind == "interrupt" else []
    if pending:
        cpu.irq_line = lambda: pending.pop() if pending else None
    cpu._write_phys = record_write
    cpu.fetch = _fetch_keeping_cr2(cpu)
    saved_switch = getattr(transfers, "task_switch_via_gate", None)
    transfers.task_switch_via_gate = on_task_switch
    interrupts.TRACE_HOOKS.append(on_delivery)
    try:
        why = cpu.run(max_instructions=4)
    finally:
        interrupts.TRACE_HOOKS.remove(on_delivery)
        if saved_switch is None:
            del transfers.task_switch_via_gate
        else:
            transfers.task_switch_via_gate = saved_switch
    if why == "shutdown":
        return Observed("shutdown")
    if task:
        return Observed("task switch", task=task[0], cr2=cpu.cr2)
    if not records:
        return Observed(f"run ended with {why!r}: {getattr(cpu, 'stop_reason', '')}")
    r = records[-1]
    for phys, size, value in writes:             # the writes reached memory
        for i in range(size):
            if phys + i < cpu.mem.size:
                assert cpu.mem.read(phys + i, 1) == (value >> (8 * i)) & 0xFF
    segs = tuple((cpu.seg_sel[n], cpu.seg_base[n], cpu.seg_limit[n], cpu.seg_attr[n])
                 for n in range(6))
    return Observed("delivered", r.vector, r.error_code, _bytes_of(writes), segs, cpu.eip,
                    cpu.regs[4], cpu.get_eflags(), cpu.cpl, cpu.cr2)
