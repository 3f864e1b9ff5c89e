"""Interrupt and exception delivery and IRET (x86core/interrupts.py), one
test per rule of the Intel SDM (Vol. 2 INT n/INTO/INT3/INT1 and IRET, Vol. 3
ch. 6): gate types and checks with their error codes, stack switches from
the TSS (3 -> 0, and lguest's 3 -> 1), IF for interrupt vs trap gates, the
frame of 16- and 32-bit gates, double and triple faults, atomic delivery,
IRET to the same and an outer ring, real mode, virtual-8086 mode, external
interrupts through cpu.irq_line with the STI shadow, trace hooks."""
from __future__ import annotations

import struct

import pytest

from x86core import flags as F
from x86core import interrupts, transfers
from x86core.asm import asm
from x86core.cpu import CPU, StopExecution
from x86core.exceptions import CPUException, TripleFault
from x86core.testing.strategies import baseline_gdt, descriptor, gate, table_bytes

MEM = 0x110000
GDT_BASE, LDT_BASE, IDT_BASE, TSS_BASE = 0x1000, 0x3000, 0x4000, 0x6000
PD, PT = 0x100000, 0x101000
CODE, HANDLER = 0x8000, 0x9000
STACKS = {0: 0x70000, 1: 0x60000, 2: 0x50000, 3: 0x40000}
KCS, KDS, R1CS, R1DS, R2CS, R2DS, UCS, UDS = 0x08, 0x10, 0x19, 0x21, 0x2A, 0x32, 0x3B, 0x43
CONF0, CODE16, DATA16 = 9 << 3, 10 << 3, 11 << 3
TSS_SEL, LDT_SEL = 13 << 3, 14 << 3
SPARE = 20                      # GDT indices from here on are free for tests
ESP = 4


def code_sel(ring):
    return (1 + 2 * ring) << 3 | ring


def data_sel(ring):
    return (2 + 2 * ring) << 3 | ring


class Box:
    """A protected-mode machine: the baseline GDT of x86core.testing (flat
    code and data at every ring), a 32-bit TSS with a stack per ring, an
    IDT, optional identity paging of the first MiB; code at CODE."""

    def __init__(self, paging: bool = False):
        self.cpu = cpu = CPU(MEM)
        self.gdt = baseline_gdt()
        self.gdt[TSS_SEL >> 3] = descriptor(TSS_BASE, 0x67, 0x8B, 0)
        self.gdt[LDT_SEL >> 3] = descriptor(LDT_BASE, 0x3F, 0x82, 0)
        self.ldt = {1: descriptor(0, 0xFFFFFFFF, 0x9B), 2: descriptor(0, 0xFFFFFFFF, 0x93)}
        self.idt: dict[int, int] = {}
        self.tss = bytearray(0x68)
        for ring in range(3):
            self.set_stack(ring, data_sel(ring), STACKS[ring])
        self.tss_limit = 0x67
        self.idt_limit = 0x7FF
        cpu.write_cr(0, cpu.cr0 | 1)
        if paging:
            cpu.mem.write(PD, 4, PT | 7)
            for page in range(256):
                self.map(page)
            cpu.write_cr(3, PD)
            cpu.write_cr(0, cpu.cr0 | 0x80010000)
        self.records: list = []

    # -- set-up --------------------------------------------------------------------------------
    def map(self, page: int, flags: int = 7) -> None:
        self.cpu.mem.write(PT + 4 * page, 4, page << 12 | flags)
        self.cpu.invlpg(page << 12)

    def unmap(self, lin: int) -> None:
        self.map(lin >> 12, 0)

    def set_stack(self, ring: int, ss: int, esp: int) -> None:
        struct.pack_into("<IH", self.tss, 4 + 8 * ring, esp, ss)

    def gate(self, vector, selector=KCS, offset=HANDLER, gate_type=0xE, dpl=0, present=True):
        self.idt[vector] = gate(selector, offset, gate_type, dpl, present)

    def handlers(self, *vectors, **kw):
        for v in vectors:
            self.gate(v, **kw)

    def enter(self, ring: int, text: str = "", eflags: int = 0x202, bits: int = 32) -> None:
        """Load the tables and put the CPU at `ring` on flat segments, EIP at
        CODE holding `text`, ESP at that ring's stack."""
        cpu = self.cpu
        n = max(self.gdt) + 1
        cpu.mem.load(GDT_BASE, table_bytes(self.gdt, n))
        cpu.mem.load(LDT_BASE, table_bytes(self.ldt, 8))
        cpu.mem.load(IDT_BASE, table_bytes(self.idt, 256))
        cpu.mem.load(TSS_BASE, bytes(self.tss))
        cpu.gdtr = (GDT_BASE, 8 * n - 1)
        cpu.idtr = (IDT_BASE, self.idt_limit)
        cpu.ldtr = (LDT_SEL, LDT_BASE, 0x3F, 0x82)
        cpu.tr = (TSS_SEL, TSS_BASE, self.tss_limit, 0x8B)
        cpu.cpl = ring
        for seg in range(6):
            sel = code_sel(ring) if seg == 1 else data_sel(ring)
            cpu.seg_sel[seg], cpu.seg_base[seg] = sel, 0
            cpu.seg_limit[seg] = 0xFFFFFFFF
            cpu.seg_attr[seg] = (0xC09B if seg == 1 else 0xC093) | ring << 5
        if bits == 16:
            cpu.seg_attr[1] &= ~0x4000
        cpu.bits = bits
        cpu.regs[ESP] = STACKS[ring]
        cpu.set_eflags(eflags)
        cpu.mode_changed()
        if text:
            cpu.mem.load(CODE, asm(text, base=CODE) if bits == 32 else asm("bits 16\n" + text, base=CODE))
        cpu.eip = CODE
        cpu.blocks.flush()

    # -- running -------------------------------------------------------------------------------
    def deliver(self, limit: int = 20) -> str:
        """Run until the first delivery completes."""
        def stop(record):
            self.records.append(record)
            raise StopExecution("delivered")
        interrupts.TRACE_HOOKS.append(stop)
        try:
            return self.cpu.run(max_instructions=limit)
        finally:
            interrupts.TRACE_HOOKS.remove(stop)

    @property
    def last(self):
        return self.records[-1]

    def stack(self, n: int, size: int = 4) -> list[int]:
        esp = self.cpu.regs[ESP]
        base = self.cpu.seg_base[2]
        return [self.cpu.mem.read(base + esp + size * i, size) for i in range(n)]


def delivered(box, vector, error_code=None):
    assert box.deliver() == "stop", box.cpu.stop_reason
    assert (box.last.vector, box.last.error_code) == (vector, error_code)
    return box.last


# -- privilege changes and frames ---------------------------------------------------------------

def test_int80_from_ring3_switches_to_the_ring0_stack_from_the_tss():
    box = Box()
    box.gate(0x80, gate_type=0xF, dpl=3)
    box.enter(3, "mov eax, 1\nint 0x80", eflags=0x202 | F.NT | F.TF | F.RF | F.CF)
    d = delivered(box, 0x80)
    cpu = box.cpu
    assert cpu.cpl == 0 and cpu.seg_sel[1] == KCS and cpu.eip == HANDLER
    assert cpu.seg_sel[2] == KDS and cpu.regs[ESP] == STACKS[0] - 20
    flags = 0x202 | F.NT | F.TF | F.CF          # RF pushed as 0 for INT n
    assert box.stack(5) == [CODE + 7, UCS, flags, STACKS[3], UDS]
    # TF NT RF cleared; a trap gate keeps IF.
    assert cpu.get_eflags() == 0x202 | F.CF
    assert d.kind == "software" and d.stack_switched and (d.old_cpl, d.new_cpl) == (3, 0)
    assert (d.old_cs, d.old_eip, d.new_cs, d.new_eip) == (UCS, CODE + 7, KCS, HANDLER)


def test_lguest_trap_gate_dpl3_to_ring1_code_uses_ss1_esp1():
    """lguest: the Guest kernel runs at ring 1; a system call from its ring 3
    user code goes straight to it through a DPL 3 trap gate."""
    box = Box()
    box.gate(0x80, selector=R1CS & ~3, gate_type=0xF, dpl=3)
    box.set_stack(1, R1DS, 0x61000)
    box.enter(3, "int 0x80")
    delivered(box, 0x80)
    cpu = box.cpu
    assert cpu.cpl == 1 and cpu.seg_sel[1] == R1CS and cpu.seg_sel[2] == R1DS
    assert cpu.regs[ESP] == 0x61000 - 20
    assert box.stack(5) == [CODE + 2, UCS, 0x202, STACKS[3], UDS]
    assert cpu.get_eflags() & F.IF


def test_interrupt_gate_clears_if_trap_gate_keeps_it():
    for gate_type, if_after in ((0xE, 0), (0xF, F.IF), (6, 0), (7, F.IF)):
        box = Box()
        box.gate(0x40, gate_type=gate_type, dpl=3)
        box.enter(0, "int 0x40")
        box.deliver()
        assert box.cpu.get_eflags() & F.IF == if_after


def test_same_ring_delivery_pushes_no_stack_pointer_and_the_error_code():
    box = Box()
    box.gate(0x33, present=False)
    box.gate(11)                                # #NP
    box.enter(0, "nop\nint 0x33")
    d = delivered(box, 11, 0x33 * 8 + 2)
    assert not d.stack_switched
    # INT n failed: the fault is reported on the INT instruction itself.
    assert box.stack(4) == [0x33 * 8 + 2, CODE + 1, KCS, 0x202 | F.RF]
    assert box.cpu.regs[ESP] == STACKS[0] - 16


def test_fault_pushes_rf_and_the_faulting_eip():
    box = Box()
    box.gate(6)
    box.enter(0, "nop\nud2")
    delivered(box, 6)
    assert box.stack(3) == [CODE + 1, KCS, 0x202 | F.RF]
    assert not box.cpu.get_eflags() & F.RF


def test_16_bit_gate_pushes_16_bit_slots():
    box = Box()
    box.gate(0x50, selector=CODE16, offset=0x12345678, gate_type=6, dpl=3)
    box.enter(3, "int 0x50", eflags=0x40202)
    delivered(box, 0x50)
    cpu = box.cpu
    assert cpu.eip == 0x5678 and cpu.bits == 16 and cpu.cpl == 0
    assert cpu.regs[ESP] == STACKS[0] - 10
    assert box.stack(5, 2) == [CODE + 2, UCS, 0x0202, STACKS[3] & 0xFFFF, UDS]


def test_16_bit_gate_error_code_is_two_bytes():
    box = Box()
    box.gate(13, selector=CODE16, offset=0x100, gate_type=7)
    box.enter(1, "hlt")
    delivered(box, 13, 0)
    assert box.cpu.regs[ESP] == STACKS[0] - 12
    assert box.stack(6, 2) == [0, CODE, R1CS, 0x0202, STACKS[1] & 0xFFFF, R1DS]


def test_conforming_code_segment_keeps_the_cpl_and_the_stack():
    box = Box()
    box.gate(0x41, selector=CONF0, dpl=3)
    box.enter(3, "int 0x41")
    d = delivered(box, 0x41)
    cpu = box.cpu
    assert cpu.cpl == 3 and cpu.seg_sel[1] == CONF0 | 3 and not d.stack_switched
    assert cpu.regs[ESP] == STACKS[3] - 12


def test_accessed_bits_are_set_in_the_new_cs_and_ss_descriptors():
    box = Box()
    box.gdt[1] = descriptor(0, 0xFFFFFFFF, 0x9A)
    box.gdt[2] = descriptor(0, 0xFFFFFFFF, 0x92)
    box.gate(0x80, dpl=3)
    box.enter(3, "int 0x80")
    delivered(box, 0x80)
    assert box.cpu.mem.read(GDT_BASE + 8 + 5, 1) == 0x9B
    assert box.cpu.mem.read(GDT_BASE + 16 + 5, 1) == 0x93
    assert box.cpu.seg_attr[1] & 1 and box.cpu.seg_attr[2] & 1


# -- the checks, each with its error code -----------------------------------------------------------

def check_fault(box, vector, error_code, text="int 0x60", ring=3, eflags=0x202):
    """Deliver: the first event fails with (vector, error_code), which the
    #GP/#NP/#TS/#SS handler (a good ring 0 gate) takes."""
    box.handlers(10, 11, 12, 13, 14, selector=KCS)
    box.enter(ring, text, eflags)
    delivered(box, vector, error_code)
    return box


@pytest.mark.parametrize("external", [False, True])
def test_idt_limit(external):
    box = Box()
    box.idt_limit = 0x60 * 8 + 6
    if external:
        pending = [0x60]
        box.cpu.irq_line = lambda: pending.pop() if pending else None
    check_fault(box, 13, 0x60 * 8 + 2 + external, "nop" if external else "int 0x60", ring=0)


@pytest.mark.parametrize("raw", [gate(KCS, HANDLER, 0xC, 3),               # call gate
                                 descriptor(0, 0xFFFFFFFF, 0xFB),          # code segment
                                 gate(KCS, HANDLER, 0x4, 3), 0])
def test_not_a_gate(raw):
    box = Box()
    box.idt[0x60] = raw
    check_fault(box, 13, 0x60 * 8 + 2)


def test_gate_dpl_is_checked_for_software_interrupts_only():
    for text, vector in (("int 0x60", 0x60), ("int3", 3), ("into", 4)):
        box = Box()
        box.gate(vector, dpl=2)
        check_fault(box, 13, vector * 8 + 2, text, eflags=0xA02)
    box = Box()                                   # a fault through a DPL 0 gate from ring 3
    box.gate(6, dpl=0)
    box.enter(3, "ud2")
    delivered(box, 6)
    box = Box()                                   # INT1 is not DPL-checked either
    box.gate(1, dpl=0)
    box.enter(3, "int1")
    delivered(box, 1)
    assert box.cpu.eip == HANDLER and box.stack(1) == [CODE + 1]


def test_into_does_nothing_without_of():
    box = Box()
    box.gate(4, dpl=3)
    box.gate(0x80, dpl=3)
    box.enter(3, "into\nint 0x80")
    delivered(box, 0x80)


def test_gate_not_present():
    box = Box()
    box.gate(0x60, dpl=3, present=False)
    check_fault(box, 11, 0x60 * 8 + 2)
    box = Box()
    box.gate(6, present=False)
    check_fault(box, 11, 6 * 8 + 3, "ud2")


def test_task_gate_calls_the_task_switch(monkeypatch):
    calls = []

    def switch(cpu, selector, source, *, next_eip=None, error_code=None, ext=False):
        calls.append((selector, source, error_code, ext, cpu.eip))
        cpu.eip = 0x1234                # a real switch loads the new task's EIP
    monkeypatch.setattr(transfers, "task_switch_via_gate", switch)
    box = Box()
    box.gate(0x60, selector=0x70, gate_type=5, dpl=3)
    box.gate(13, selector=0x78, gate_type=5)
    box.enter(3, "int 0x60\nhlt")
    d = delivered(box, 0x60)
    assert calls == [(0x70, "int", None, False, CODE + 2)] and d.stack_switched
    box = Box()
    box.gate(13, selector=0x78, gate_type=5)
    box.enter(3, "hlt")
    delivered(box, 13, 0)
    assert calls[-1] == (0x78, "int", 0, True, CODE)


def test_task_gate_without_a_task_switch_is_gp(monkeypatch):
    monkeypatch.delattr(transfers, "task_switch_via_gate", raising=False)
    box = Box()
    box.gate(0x60, selector=0x70, gate_type=5, dpl=3)
    check_fault(box, 13, 0x70)


@pytest.mark.parametrize("selector, vector, code", [
    (0, 13, 0),                          # null: #GP(EXT)
    (3, 13, 0),
    (0x400, 13, 0x400),                  # beyond the GDT
    (KDS, 13, KDS),                      # not a code segment
    (TSS_SEL, 13, TSS_SEL),              # a system segment
    (0x1C, 13, 0x1C),                    # LDT entry 3 is empty: not code (TI in the code)
    (0x44, 13, 0x44),                    # beyond the LDT
])
def test_target_code_segment_checks(selector, vector, code):
    box = Box()
    box.gate(0x60, selector=selector, dpl=3)
    check_fault(box, vector, code)


def test_target_code_segment_ldt_is_fine():
    box = Box()
    box.gate(0x60, selector=0x0C, dpl=3)         # LDT entry 1: ring 0 flat code
    box.enter(3, "int 0x60")
    delivered(box, 0x60)
    assert box.cpu.seg_sel[1] == 0x0C and box.cpu.cpl == 0


def test_target_code_dpl_above_cpl_and_not_present():
    box = Box()
    box.gate(0x60, selector=UCS, dpl=3)
    check_fault(box, 13, UCS & ~3, ring=1)
    box = Box()
    box.gdt[SPARE] = descriptor(0, 0xFFFFFFFF, 0x1B)     # DPL 0 code, not present
    box.gate(0x60, selector=SPARE << 3, dpl=3)
    check_fault(box, 11, SPARE << 3)


def test_ext_bit_for_external_interrupts():
    box = Box()
    box.gate(0x30, selector=KDS)
    box.handlers(13)
    box.enter(0, "nop\nnop")
    pending = [0x30]
    box.cpu.irq_line = lambda: pending.pop() if pending else None
    delivered(box, 13, KDS | 1)
    assert box.stack(2) == [KDS | 1, CODE]


def test_tss_too_short_for_the_stack():
    box = Box()
    box.tss_limit = 0x08                          # holds ESP0 but not all of SS0
    box.gate(0x60, dpl=3)
    box.gate(10, selector=CONF0)                  # a conforming handler needs no stack switch
    box.enter(3, "int 0x60")
    delivered(box, 10, TSS_SEL)
    assert box.cpu.cpl == 3


@pytest.mark.parametrize("ss, vector, code", [
    (0, 10, 0), (3, 10, 0),                       # null SS
    (R1DS, 10, R1DS & ~3),                        # RPL != new CPL
    (KDS | 1, 10, KDS),
    (0x400, 10, 0x400),                           # beyond the GDT
    (KCS, 10, KCS),                               # not writable data
    (SPARE << 3, 10, SPARE << 3),                 # read-only data
    ((SPARE + 1) << 3, 12, (SPARE + 1) << 3),     # not present: #SS
])
def test_new_stack_segment_checks(ss, vector, code):
    box = Box()
    box.gdt[SPARE] = descriptor(0, 0xFFFFFFFF, 0x91)
    box.gdt[SPARE + 1] = descriptor(0, 0xFFFFFFFF, 0x13)
    box.set_stack(0, ss, STACKS[0])
    box.gate(0x60, dpl=3)
    box.handlers(10, 11, 12, 13, selector=CONF0)   # conforming: no stack switch needed
    box.enter(3, "int 0x60")
    delivered(box, vector, code)


def test_new_stack_without_room_is_ss_with_the_selector():
    box = Box()
    box.gdt[SPARE] = descriptor(0x20000, 0xFFF, 0x93, 0x4)       # 4 KiB stack segment
    box.set_stack(0, SPARE << 3, 16)              # room for 16 bytes, not 20
    box.gate(0x60, dpl=3)
    box.handlers(12, selector=CONF0)
    box.enter(3, "int 0x60")
    delivered(box, 12, SPARE << 3)


def test_current_stack_without_room_is_ss_ext():
    box = Box()
    box.gdt[SPARE] = descriptor(0x20000, 0xFFF, 0x93, 0x4)
    box.gate(0x60, dpl=0)
    box.handlers(12, 8)
    box.enter(0, "int 0x60")
    cpu = box.cpu
    cpu.seg_sel[2], cpu.seg_base[2], cpu.seg_limit[2], cpu.seg_attr[2] = SPARE << 3, 0x20000, 0xFFF, 0x4093
    cpu.regs[ESP] = 8
    cpu.mode_changed()
    # #SS(0) during INT n: benign then contributory, delivered... on the same
    # stack, which has no room either: #SS during #SS is a double fault, and
    # the #DF handler has no room: shutdown.
    assert box.deliver() == "shutdown"
    assert "while delivering #DF" in cpu.stop_reason


def test_expand_down_stack_segment():
    box = Box()
    box.gdt[SPARE] = descriptor(0, 0x1FFFF, 0x97, 0x4)          # valid offsets 0x20000..
    box.set_stack(0, SPARE << 3, 0x20010)         # 16 bytes above the limit: no room for 20
    box.gate(0x60, dpl=3)
    box.handlers(12, selector=CONF0)
    box.enter(3, "int 0x60")
    delivered(box, 12, SPARE << 3)
    box = Box()
    box.gdt[SPARE] = descriptor(0, 0x1FFFF, 0x97, 0x4)
    box.set_stack(0, SPARE << 3, 0x20014)
    box.gate(0x60, dpl=3)
    box.enter(3, "int 0x60")
    delivered(box, 0x60)
    assert box.cpu.regs[ESP] == 0x20000


def test_gate_offset_beyond_the_code_segment_limit():
    box = Box()
    box.gate(0x60, selector=CODE16, offset=0x12345, gate_type=0xE, dpl=3)
    check_fault(box, 13, 0)
    box = Box()
    box.gate(6, selector=CODE16, offset=0x12345, gate_type=0xE)
    check_fault(box, 13, 1, "ud2")


# -- double and triple faults ----------------------------------------------------------------------

def test_contributory_during_contributory_is_a_double_fault():
    box = Box()
    box.gate(13, present=False)                   # #GP's gate is missing: #NP while delivering #GP
    box.gate(8)
    box.enter(1, "hlt")
    d = delivered(box, 8, 0)
    assert box.stack(3) == [0, CODE, R1CS] and d.kind == "fault"


def test_benign_then_contributory_is_handled_serially():
    box = Box()
    box.gate(6, present=False)
    box.gate(11)
    box.gate(8)
    box.enter(0, "ud2")
    delivered(box, 11, 6 * 8 + 3)


def test_page_fault_during_page_fault_is_a_double_fault():
    box = Box(paging=True)
    box.gate(14)
    box.gate(8, selector=R1CS & ~3)               # #DF handled at ring 1 on its own stack
    box.enter(3, "mov [ebx], eax")
    box.cpu.regs[3] = 0x90000
    box.unmap(0x90000)
    box.unmap(STACKS[0] - 4)
    delivered(box, 8, 0)
    assert box.cpu.cpl == 1 and box.cpu.cr2 == STACKS[0] - 4
    assert box.stack(6) == [0, CODE, UCS, 0x202, STACKS[3], UDS]     # an abort: no RF


def test_page_fault_during_a_contributory_is_handled_serially():
    box = Box(paging=True)
    box.gate(13)                                  # to ring 0, whose stack is unmapped
    box.gate(14, selector=R1CS & ~3)              # #PF at ring 1, on a mapped stack
    box.enter(3, "hlt")
    box.unmap(STACKS[0] - 4)
    delivered(box, 14, 2)                         # supervisor write, page not present
    assert box.cpu.cpl == 1 and box.cpu.cr2 == STACKS[0] - 4
    assert box.stack(2) == [2, CODE]


def test_fault_while_delivering_a_double_fault_is_a_triple_fault():
    box = Box()
    box.gate(13, present=False)
    box.gate(8, present=False)
    box.enter(0, "hlt\nud2")
    box.gate(6, selector=KDS)
    box.enter(0, "ud2")
    assert box.deliver() == "shutdown"
    assert box.cpu.eip == CODE


def test_deliver_exception_raises_triple_fault():
    box = Box()
    box.enter(0)                                  # an empty IDT: nothing is present
    with pytest.raises(TripleFault):
        interrupts.deliver_exception(box.cpu, CPUException(13, 0))


def test_software_int_8_is_not_a_double_fault():
    box = Box()
    box.gate(8, dpl=3, present=False)
    box.gate(11)
    box.enter(3, "int 8")
    delivered(box, 11, 8 * 8 + 2)


# -- atomicity -----------------------------------------------------------------------------------------

def test_a_fault_on_the_frame_leaves_nothing_behind():
    box = Box(paging=True)
    box.gate(0x80, dpl=3)
    box.gate(14, selector=R1CS & ~3)
    # The 20-byte frame straddles 0x6F000: its upper part would be written first.
    box.set_stack(0, KDS, 0x6F00C)
    box.enter(3, "int 0x80")
    box.unmap(0x6E000)
    box.cpu.mem.load(0x6EFF0, bytes(range(1, 0x21)))
    delivered(box, 14, 2)
    assert box.cpu.cr2 == 0x6EFFC                 # CS, the first slot pushed on that page
    assert box.cpu.mem.dump(0x6EFF0, 0x20) == bytes(range(1, 0x21))
    # The #PF is reported on the INT instruction, from ring 3.
    assert box.stack(6) == [2, CODE, UCS, 0x202 | F.RF, STACKS[3], UDS]


def test_faulting_idt_read_is_a_page_fault():
    box = Box(paging=True)
    box.gate(0x80, dpl=3)
    box.enter(3, "int 0x80")
    cpu = box.cpu
    cpu.idtr = (0x4C00, 0x7FF)                    # gates 0x80 and up on the next page
    cpu.mem.load(0x4C00, table_bytes({14: gate(R1CS & ~3, HANDLER, 0xE, 0)}, 128))
    box.unmap(0x5000)
    delivered(box, 14, 0)                         # a supervisor read, page not present
    assert cpu.cr2 == 0x4C00 + 0x80 * 8 and cpu.cpl == 1


# -- IRET ---------------------------------------------------------------------------------------------

def push_frame(box, *values, size=4):
    cpu = box.cpu
    for v in reversed(values):
        cpu.regs[ESP] -= size
        cpu.mem.write(cpu.seg_base[2] + cpu.regs[ESP], size, v)


def run_iret(box, text="iretd"):
    box.cpu.mem.load(CODE, asm(text, base=CODE))
    box.cpu.blocks.flush()
    box.cpu.eip = CODE
    return box.cpu.run(max_instructions=1)


def test_iret_same_privilege():
    box = Box()
    box.enter(0)
    push_frame(box, 0x1234, KCS, 0x8D7 | F.IOPL | F.NT * 0 | F.AC | F.ID)
    assert run_iret(box) == "limit"
    cpu = box.cpu
    assert cpu.eip == 0x1234 and cpu.regs[ESP] == STACKS[0] and cpu.cpl == 0
    assert cpu.get_eflags() == 0x8D7 | F.IOPL | F.AC | F.ID | 2


def test_iret_to_an_outer_ring_nulls_segments_the_ring_may_not_use():
    box = Box()
    box.enter(0)
    cpu = box.cpu
    cpu.load_segment(0, UDS)                      # ES: a ring 3 segment, kept
    cpu.load_segment(3, KDS)                      # DS: ring 0 data, nulled
    cpu.load_segment(4, CONF0)                    # FS: conforming code, kept
    cpu.load_segment(5, R1DS & ~3 | 0)            # GS: ring 1 data at RPL 0, nulled
    push_frame(box, 0x5678, UCS, 0x3202, 0x41234, UDS)
    assert run_iret(box) == "limit"
    assert cpu.cpl == 3 and cpu.eip == 0x5678 and cpu.seg_sel[1] == UCS
    assert cpu.seg_sel[2] == UDS and cpu.regs[ESP] == 0x41234
    assert [cpu.seg_sel[s] for s in (0, 3, 4, 5)] == [UDS, 0, CONF0, 0]
    assert cpu.seg_attr[3] == 0 and cpu.seg_attr[5] == 0
    assert cpu.get_eflags() == 0x3202


def test_iret_to_ring1_then_int_back():
    """The Host's round trip for an lguest Guest: IRET from ring 0 to ring 1,
    a trap back through a DPL 1 gate."""
    box = Box()
    box.gate(0x81, dpl=1)
    box.enter(0)
    cpu = box.cpu
    cpu.mem.load(0xA000, asm("int 0x81", base=0xA000))
    push_frame(box, 0xA000, R1CS, 0x202, 0x61000, R1DS)
    assert run_iret(box) == "limit" and cpu.cpl == 1
    delivered(box, 0x81)
    assert cpu.cpl == 0 and box.stack(5) == [0xA002, R1CS, 0x202, 0x61000, R1DS]


@pytest.mark.parametrize("cpl, iopl, frame_flags, expect", [
    (0, 0, 0x3000 | F.IF, 0x3000 | F.IF),        # CPL 0: IOPL and IF load
    (1, 1, 0x3000 | F.IF, 0x1000 | F.IF),        # CPL 1 = IOPL: IF loads, IOPL does not
    (1, 0, 0x3000 | F.IF, 0x0000),               # CPL 1 > IOPL: neither
    (3, 3, F.VIF | F.VIP | F.IF, 0x3000 | F.IF),  # VIF VIP only at CPL 0
])
def test_iret_if_and_iopl_rules(cpl, iopl, frame_flags, expect):
    box = Box()
    box.enter(cpl, eflags=2 | iopl << 12)
    push_frame(box, 0x1234, code_sel(cpl), frame_flags | 2)
    assert run_iret(box) == "limit"
    assert box.cpu.get_eflags() == expect | 2


def test_iretw_pops_16_bit_slots():
    box = Box()
    box.enter(0, eflags=0x40202)
    push_frame(box, 0x1234, KCS, 0x0ED7, size=2)
    assert run_iret(box, "iretw") == "limit"
    assert box.cpu.eip == 0x1234 and box.cpu.regs[ESP] == STACKS[0]
    assert box.cpu.get_eflags() == 0x40ED7


def test_iret_to_a_16_bit_stack_keeps_the_upper_esp_bits():
    box = Box()
    box.gdt[SPARE] = descriptor(0x30000, 0xFFFF, 0xF3, 0)
    box.enter(0)
    push_frame(box, 0x1234, UCS, 0x202, 0xAAAA5678, SPARE << 3 | 3)
    assert run_iret(box) == "limit"
    assert box.cpu.regs[ESP] == ((STACKS[0] - 20) & 0xFFFF0000) | 0x5678


@pytest.mark.parametrize("cs, ss, vector, code", [
    (0, UDS, 13, 0),
    (KCS | 3, UDS, 13, KCS),                      # non-conforming, DPL != RPL
    (UCS & ~3, UDS, 13, UCS & ~3),                # RPL < CPL (at CPL 1)
    (0x400 | 3, UDS, 13, 0x400),
    (UDS, UDS, 13, UDS & ~3),                     # not code
    (UCS, 0, 13, 0),                              # null SS
    (UCS, R2DS, 13, R2DS & ~3),                   # SS RPL != CS RPL
    (UCS, UCS, 13, UCS & ~3),                     # SS not writable data
    (UCS, (SPARE << 3) | 3, 12, SPARE << 3),      # SS not present
    ((SPARE + 1) << 3 | 3, UDS, 11, (SPARE + 1) << 3),     # CS not present
])
def test_iret_checks(cs, ss, vector, code):
    box = Box()
    box.gdt[SPARE] = descriptor(0, 0xFFFFFFFF, 0x73)
    box.gdt[SPARE + 1] = descriptor(0, 0xFFFFFFFF, 0x7B)
    box.handlers(11, 12, 13)
    box.enter(1)
    push_frame(box, 0x1234, cs, 0x202, 0x41000, ss)
    box.cpu.mem.load(CODE, asm("iretd", base=CODE))
    box.cpu.blocks.flush()
    delivered(box, vector, code)
    assert box.stack(2) == [code, CODE]           # reported on the IRET, no change made


def test_iret_with_nt_is_a_task_return(monkeypatch):
    calls = []
    monkeypatch.setattr(transfers, "task_return", lambda cpu, next_eip=None: calls.append(cpu.eip)
                        or setattr(cpu, "eip", 0x4321))
    box = Box()
    box.enter(0, eflags=0x202 | F.NT)
    assert run_iret(box) == "limit" and calls == [CODE] and box.cpu.eip == 0x4321


# -- external interrupts --------------------------------------------------------------------------

def test_external_interrupt_waits_for_if_and_the_sti_shadow():
    box = Box()
    box.gate(0x20)
    box.enter(0, "nop\nsti\nnop\nnop\nnop", eflags=0x002)
    pending = [0x20]
    box.cpu.irq_line = lambda: pending[0] if pending else None
    d = delivered(box, 0x20)
    # Not taken at IF = 0; after STI, one more instruction runs first.
    assert d.kind == "interrupt" and d.old_eip == CODE + 3
    assert box.stack(3) == [CODE + 3, KCS, 0x202]
    assert not box.cpu.get_eflags() & F.IF


def test_external_interrupt_wakes_hlt_and_pushes_the_next_eip():
    box = Box()
    box.gate(0x21, gate_type=0xF)
    box.enter(0, "hlt\nnop")
    ticks = [None, 0x21]                          # nothing before HLT, then a tick
    box.cpu.irq_line = lambda: ticks.pop(0) if ticks else None
    delivered(box, 0x21)
    assert box.stack(1) == [CODE + 1] and not box.cpu.halted


def test_external_interrupt_has_no_dpl_check_and_no_error_code():
    box = Box()
    box.gate(13, dpl=0)
    box.enter(3, "nop\nnop")
    pending = [13]
    box.cpu.irq_line = lambda: pending.pop() if pending else None
    delivered(box, 13, None)
    assert box.stack(5) == [CODE, UCS, 0x202, STACKS[3], UDS]


# -- real mode -------------------------------------------------------------------------------------------

def real_box(text: str, ivt: dict[int, tuple[int, int]], sp=0x1000, flags=0x0302 | F.AC):
    cpu = CPU(MEM)
    for vector, (seg, off) in ivt.items():
        cpu.mem.write(vector * 4, 2, off)
        cpu.mem.write(vector * 4 + 2, 2, seg)
    for s, sel in enumerate((0, 0x0700, 0x2000, 0, 0, 0)):
        cpu.seg_sel[s], cpu.seg_base[s] = sel, sel << 4
    cpu.regs[ESP] = sp
    cpu.set_eflags(flags)
    cpu.mem.load(0x7000 + 0x100, asm("bits 16\n" + text, base=0x100))
    cpu.eip = 0x100
    cpu.mode_changed()
    return cpu


def test_real_mode_int_and_iret():
    cpu = real_box("int 0x10\nhlt", {0x10: (0x0800, 0x0020)})
    cpu.mem.load(0x8020, asm("bits 16\nmov ax, 0x55\niret", base=0x20))
    assert cpu.run(max_instructions=1) == "limit"
    assert (cpu.seg_sel[1], cpu.eip, cpu.regs[ESP]) == (0x0800, 0x20, 0x1000 - 6)
    assert [cpu.mem.read(0x20000 + 0x1000 - 6 + 2 * i, 2) for i in range(3)] == [0x102, 0x0700, 0x0302]
    assert cpu.get_eflags() == 0x0002
    assert cpu.run(max_instructions=10) == "halt"
    assert (cpu.seg_sel[1], cpu.eip, cpu.regs[0] & 0xFFFF) == (0x0700, 0x103, 0x55)
    # A 16-bit IRET restores FLAGS only: AC, cleared by the INT, stays clear.
    assert cpu.get_eflags() == 0x0302 and cpu.regs[ESP] == 0x1000


def test_real_mode_fault_and_ivt_limit():
    cpu = real_box("ud2", {6: (0x0800, 0x0040)})
    cpu.mem.write(0x8040, 1, 0xF4)                # hlt
    assert cpu.run(max_instructions=5) == "halt"
    assert (cpu.seg_sel[1], cpu.eip) == (0x0800, 0x41)
    assert cpu.mem.read(0x20000 + 0x1000 - 6, 2) == 0x100   # no error code in real mode
    cpu = real_box("int 0x80", {13: (0x0800, 0x0040)})
    cpu.mem.write(0x8040, 1, 0xF4)
    cpu.idtr = (0, 0x1FF)                         # vector 0x80 beyond the IVT: #GP
    assert cpu.run(max_instructions=5) == "halt"
    assert (cpu.seg_sel[1], cpu.eip) == (0x0800, 0x41)
    assert cpu.mem.read(0x20000 + 0x1000 - 6, 2) == 0x100   # on the INT instruction


# -- virtual-8086 mode ----------------------------------------------------------------------------

def v86_box(iopl=3):
    box = Box()
    box.gate(0x21, dpl=3)
    box.gate(13)
    box.enter(0)
    cpu = box.cpu
    # IRET from ring 0 into V86 mode at 0x0800:0x0010.
    cpu.mem.load(0x8010, asm("bits 16\nint 0x21\nhlt", base=0x10))
    push_frame(box, 0x0010, 0x0800, 0x20202 | iopl << 12, 0x0FFE, 0x3000, 0x1111, 0x2222, 0x3333,
               0x4444)
    assert run_iret(box) == "limit"
    assert cpu.eflags & F.VM and cpu.cpl == 3 and cpu.bits == 16
    assert [cpu.seg_sel[s] for s in range(6)] == [0x1111, 0x0800, 0x3000, 0x2222, 0x3333, 0x4444]
    assert cpu.seg_base[2] == 0x30000 and cpu.regs[ESP] == 0x0FFE and cpu.eip == 0x10
    return box


def test_interrupt_from_v86_mode_pushes_and_nulls_the_data_segments():
    box = v86_box()
    delivered(box, 0x21)
    cpu = box.cpu
    assert cpu.cpl == 0 and not cpu.eflags & F.VM and cpu.bits == 32
    assert box.stack(9) == [0x12, 0x0800, 0x23202, 0x0FFE, 0x3000, 0x1111, 0x2222, 0x3333, 0x4444]
    assert [cpu.seg_sel[s] for s in (0, 3, 4, 5)] == [0, 0, 0, 0]
    assert cpu.regs[ESP] == STACKS[0] - 36
    # And IRET takes it back to V86 mode.
    assert run_iret(box) == "limit"
    assert cpu.eflags & F.VM and (cpu.seg_sel[1], cpu.eip) == (0x0800, 0x12)
    assert cpu.seg_sel[3] == 0x2222 and cpu.seg_base[3] == 0x22220


def test_int_n_in_v86_mode_with_iopl_below_3_is_gp0():
    box = v86_box(iopl=0)
    delivered(box, 13, 0)
    assert box.stack(3) == [0, 0x10, 0x0800]      # on the INT instruction


def test_v86_gate_to_a_non_ring0_segment_is_gp():
    box = v86_box()
    box.cpu.mem.load(IDT_BASE + 0x21 * 8, struct.pack("<Q", gate(R1CS & ~3, HANDLER, 0xE, 3)))
    delivered(box, 13, R1CS & ~3)                 # INT n: EXT = 0


def test_iret_in_v86_mode():
    box = v86_box()
    cpu = box.cpu
    cpu.mem.load(0x8010, asm("bits 16\niret", base=0x10))
    cpu.blocks.flush()
    push = [0x0040, 0x0900, 0x0ED7]
    for v in reversed(push):
        cpu.regs[ESP] -= 2
        cpu.mem.write(0x30000 + cpu.regs[ESP], 2, v)
    assert cpu.run(max_instructions=1) == "limit"
    assert (cpu.seg_sel[1], cpu.eip) == (0x0900, 0x40)
    assert cpu.get_eflags() == 0x20000 | 0x3000 | 0x0ED7   # VM and IOPL kept
    box2 = v86_box(iopl=2)
    cpu = box2.cpu
    cpu.mem.load(0x8010, asm("bits 16\niret", base=0x10))
    cpu.blocks.flush()
    delivered(box2, 13, 0)


# -- hooks -----------------------------------------------------------------------------------------

def test_trace_hooks_see_iret_too():
    box = Box()
    box.enter(0)
    push_frame(box, 0x1234, UCS, 0x202, 0x41000, UDS)
    seen = []
    interrupts.TRACE_HOOKS.append(seen.append)
    try:
        run_iret(box)
    finally:
        interrupts.TRACE_HOOKS.remove(seen.append)
    assert len(seen) == 1
    r = seen[0]
    assert (r.kind, r.vector, r.old_cpl, r.new_cpl, r.new_cs, r.new_eip, r.stack_switched) == \
        ("iret", None, 0, 3, UCS, 0x1234, True)


def test_exception_hook_sees_faults_raised_during_delivery():
    box = Box()
    box.gate(0x60, dpl=3, present=False)
    box.enter(3, "int 0x60")
    seen = []
    box.cpu.exception_hook = lambda cpu, exc: seen.append((exc.vector, exc.error_code, cpu.eip)) or \
        len(seen) > 1
    assert box.cpu.run(max_instructions=1) == "limit"
    assert seen == [(0x60, None, CODE + 2), (11, 0x60 * 8 + 2, CODE)]


def test_no_idt_loaded_means_not_delivered():
    cpu = CPU(MEM)
    cpu.load_flat_segments()
    cpu.mem.load(0x1000, asm("ud2", base=0x1000))
    cpu.eip = 0x1000
    assert cpu.run(max_instructions=5) == "exception" and cpu.eip == 0x1000
