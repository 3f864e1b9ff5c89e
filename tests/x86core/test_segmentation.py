"""Descriptors and segment-register loads (Intel SDM Vol. 3 ch. 3, 5;
Vol. 2 MOV/POP to a segment register), and the protected-mode machine the
protection tests share (imported by test_transfers / test_system_instructions).

The machine: 1 MiB, no paging unless a test turns it on, a GDT at 0x1000
with flat ring-0 and ring-3 code and data, a TSS (task A) loaded in TR with
its ring-0 stack, and an exception hook that records what is raised and
stops the run.
"""
from __future__ import annotations

import pytest

from x86core import segmentation as sg
from x86core.asm import assemble
from x86core.cpu import CPU, StopExecution
from x86core.exceptions import GP, NP, SS, CPUException

ES, CS, SS_REG, DS, FS, GS = range(6)
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)

GDT, LDT, IDT = 0x1000, 0x2000, 0x2800
GDT_LIMIT = 0x1FF                         # 64 entries
TSS_A, TSS_B, TSS_C = 0x3000, 0x3200, 0x3400
CODE0, CODE3 = 0x10000, 0x20000
STACK0, STACK3 = 0x80000, 0x70000

# GDT slots used by every test; tests fill others from index 16 up.
K_CODE, K_DATA, U_CODE, U_DATA = 0x08, 0x10, 0x1B, 0x23
TSS_A_SEL = 0x28
K_CODE16 = 0x30                           # ring-0 16-bit code, flat

CODE_R0, DATA_R0 = 0x9A, 0x92            # access bytes: P DPL S type
CODE_R3, DATA_R3 = 0xFA, 0xF2
TSS_AVAIL, TSS_BUSY = 0x89, 0x8B


def gate(selector: int, offset: int, type_: int, dpl: int = 0, count: int = 0,
         present: bool = True) -> int:
    """A call (0xC/0x4), task (0x5), interrupt or trap gate descriptor."""
    lo = (offset & 0xFFFF) | (selector & 0xFFFF) << 16
    hi = (offset & 0xFFFF0000) | (0x8000 if present else 0) | dpl << 13 | type_ << 8 | count
    return lo | hi << 32


def tss_descriptor(base: int, limit: int = 0x67, busy: bool = False, dpl: int = 0,
                   present: bool = True, type_: int | None = None) -> int:
    t = type_ if type_ is not None else (0xB if busy else 0x9)
    return sg.make_descriptor(base, limit, (0x80 if present else 0) | dpl << 5 | t, flags=0)


class Machine:
    def __init__(self, cache: bool = True):
        cpu = self.cpu = CPU(1 << 20)
        cpu.blocks.enabled = cache
        cpu.cr0 |= 1
        cpu.gdtr = (GDT, GDT_LIMIT)
        self.set(1, sg.make_descriptor(0, 0xFFFFFFFF, CODE_R0))
        self.set(2, sg.make_descriptor(0, 0xFFFFFFFF, DATA_R0))
        self.set(3, sg.make_descriptor(0, 0xFFFFFFFF, CODE_R3))
        self.set(4, sg.make_descriptor(0, 0xFFFFFFFF, DATA_R3))
        self.set(5, tss_descriptor(TSS_A, busy=True))
        self.set(6, sg.make_descriptor(0, 0xFFFFF, CODE_R0, flags=0x8))    # G=1, D=0
        tr_desc = sg.Descriptor.parse(tss_descriptor(TSS_A, busy=True))
        cpu.tr = (TSS_A_SEL, TSS_A, 0x67, tr_desc.attr)
        self.set_tss_stack(TSS_A, 0, K_DATA, STACK0)
        self.exceptions: list[CPUException] = []
        cpu.exception_hook = self._hook
        self.enter(0)

    def _hook(self, cpu, exc):
        if exc.software:
            return False                # INT n: delivered through the IDT
        self.exceptions.append(exc)
        raise StopExecution(str(exc))

    # -- tables ---------------------------------------------------------------------------
    def set(self, index: int, raw: int, table: int = GDT) -> int:
        """Write descriptor `index` of the GDT (or the table at `table`);
        returns its selector (RPL 0, TI per table)."""
        self.cpu.mem.write(table + 8 * index, 8, raw)
        return index << 3 | (4 if table == LDT else 0)

    def get(self, index: int, table: int = GDT) -> sg.Descriptor:
        return sg.Descriptor.parse(self.cpu.mem.read(table + 8 * index, 8))

    def set_tss_stack(self, tss: int, level: int, ss: int, esp: int) -> None:
        self.cpu.mem.write(tss + 4 + 8 * level, 4, esp)
        self.cpu.mem.write(tss + 8 + 8 * level, 4, ss)

    # -- state ----------------------------------------------------------------------------
    def segment(self, seg: int, selector: int) -> None:
        """Put a selector and its descriptor straight in a segment register."""
        cpu = self.cpu
        if selector & ~3 == 0:
            cpu.seg_sel[seg], cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = \
                selector, 0, 0, 0
        else:
            table = LDT if selector & 4 else GDT
            d = sg.Descriptor.parse(cpu.mem.read(table + (selector & ~7), 8))
            cpu.seg_sel[seg], cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = \
                selector, d.base, d.limit, d.attr | 1
        cpu.mode_changed()

    def enter(self, cpl: int, code: int | None = None, data: int | None = None) -> None:
        code = code if code is not None else (K_CODE if cpl == 0 else U_CODE)
        data = data if data is not None else (K_DATA if cpl == 0 else U_DATA)
        cpu = self.cpu
        cpu.cpl = cpl
        for seg in (ES, SS_REG, DS, FS, GS):
            self.segment(seg, data)
        d = sg.Descriptor.parse(cpu.mem.read(GDT + (code & ~7), 8))
        sg.load_cs(cpu, code, d, cpl)
        cpu.regs[ESP] = STACK0 if cpl == 0 else STACK3

    def load(self, text: str, base: int, bits: int = 32) -> dict[str, int]:
        program = assemble(text, base=base, bits=bits)
        self.cpu.mem.load(base, program.code)
        self.cpu.blocks.flush()
        return program.labels

    def run(self, start: int, limit: int = 1000) -> str:
        self.cpu.eip = start
        self.cpu.halted = False
        return self.cpu.run(max_instructions=limit)

    @property
    def last(self) -> CPUException:
        return self.exceptions[-1]

    def expect(self, result: str, vector: int, error_code: int | None = None) -> None:
        assert result == "stop", (result, self.exceptions)
        assert self.last.vector == vector, str(self.last)
        if error_code is not None:
            assert self.last.error_code == error_code, str(self.last)

    def snapshot(self):
        cpu = self.cpu
        return (list(cpu.regs), cpu.eip, list(cpu.seg_sel), list(cpu.seg_base), cpu.cpl,
                cpu.get_eflags(), cpu.tr, cpu.ldtr)


@pytest.fixture(params=[True, False], ids=["cache", "nocache"])
def m(request):
    return Machine(cache=request.param)


# -- descriptors ------------------------------------------------------------------------------

def test_make_and_parse_round_trip():
    raw = sg.make_descriptor(0x12345678, 0xABCDE, 0x9A, flags=0x4)
    d = sg.Descriptor.parse(raw)
    assert (d.base, d.limit, d.type, d.s, d.dpl, d.present, d.db, d.granularity) == \
        (0x12345678, 0xABCDE, 0xA, True, 0, True, True, False)
    assert d.is_code and d.readable and not d.writable and not d.conforming


def test_granular_limit_is_scaled_to_bytes():
    d = sg.Descriptor.parse(sg.make_descriptor(0, 0xFFFFFFFF, 0x92))
    assert d.limit == 0xFFFFFFFF and d.granularity
    d = sg.Descriptor.parse(sg.make_descriptor(0, 0x2FFF, 0x92, flags=0xC))
    assert d.limit == 0x2FFF


@pytest.mark.parametrize("access, code, data, readable, writable, conforming", [
    (0x92, False, True, True, True, False),      # read/write data
    (0x90, False, True, True, False, False),     # read-only data
    (0x98, True, False, False, False, False),    # execute-only code
    (0x9A, True, False, True, False, False),     # execute/read code
    (0x9E, True, False, True, False, True),      # conforming execute/read
    (0x89, False, False, False, False, False),   # TSS: a system descriptor
])
def test_descriptor_type_properties(access, code, data, readable, writable, conforming):
    d = sg.Descriptor.parse(sg.make_descriptor(0, 0xFFFF, access, flags=0))
    assert (d.is_code, d.is_data, d.readable, d.writable, d.conforming) == \
        (code, data, readable, writable, conforming)


def test_read_descriptor_beyond_gdt_limit_is_gp_selector(m):
    m.cpu.gdtr = (GDT, 0x17)
    sg.read_descriptor(m.cpu, 0x10)
    with pytest.raises(CPUException) as e:
        sg.read_descriptor(m.cpu, 0x1B)
    assert (e.value.vector, e.value.error_code) == (GP, 0x18)


def test_read_descriptor_through_null_ldtr_is_gp(m):
    m.cpu.ldtr = (0, 0, 0, 0)
    with pytest.raises(CPUException) as e:
        sg.read_descriptor(m.cpu, 0x0F)
    assert (e.value.vector, e.value.error_code) == (GP, 0x0C)


def test_read_descriptor_from_ldt(m):
    m.set(1, sg.make_descriptor(0x5000, 0xFFF, DATA_R0, flags=0x4), table=LDT)
    m.cpu.ldtr = (0x40, LDT, 0xF, 0x82)
    d, addr = sg.read_descriptor(m.cpu, 0x0C)
    assert d.base == 0x5000 and addr == LDT + 8


# -- MOV to segment registers ------------------------------------------------------------------

def test_mov_ds_loads_cache_and_sets_accessed(m):
    sel = m.set(16, sg.make_descriptor(0x4000, 0xFFF, 0x92, flags=0x4))
    m.load(f"mov ax, {sel}; mov ds, ax; hlt", CODE0)
    assert m.run(CODE0) == "halt"
    cpu = m.cpu
    assert (cpu.seg_sel[DS], cpu.seg_base[DS], cpu.seg_limit[DS]) == (sel, 0x4000, 0xFFF)
    assert m.get(16).type & 1                   # accessed


def test_null_selector_into_data_register_is_allowed(m):
    m.load("xor eax, eax; mov es, ax; mov fs, ax; hlt", CODE0)
    assert m.run(CODE0) == "halt"
    assert m.cpu.seg_sel[ES] == 0 and m.cpu.seg_attr[FS] == 0


def test_null_selector_into_ss_is_gp0(m):
    m.load("xor eax, eax; mov ss, ax; hlt", CODE0)
    m.expect(m.run(CODE0), GP, 0)
    assert m.cpu.seg_sel[SS_REG] == K_DATA


def test_ss_needs_rpl_and_dpl_equal_cpl_and_writable(m):
    ro = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x90))
    for sel, err in ((U_DATA, U_DATA & ~3), (K_DATA | 3, K_DATA), (ro, ro), (K_CODE, K_CODE)):
        m.exceptions.clear()
        m.load(f"mov ax, {sel}; mov ss, ax; hlt", CODE0)
        m.expect(m.run(CODE0), GP, err)


def test_ss_not_present_is_ss_fault(m):
    sel = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x12))
    m.load(f"mov ax, {sel}; mov ss, ax; hlt", CODE0)
    m.expect(m.run(CODE0), SS, sel)


def test_data_segment_not_present_is_np(m):
    sel = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x12))
    m.load(f"mov ax, {sel}; mov ds, ax; hlt", CODE0)
    m.expect(m.run(CODE0), NP, sel)


def test_execute_only_code_into_ds_is_gp(m):
    sel = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x98))
    m.load(f"mov ax, {sel}; mov ds, ax; hlt", CODE0)
    m.expect(m.run(CODE0), GP, sel)


def test_ring3_cannot_load_ring0_data(m):
    m.enter(3)
    m.load(f"mov ax, {K_DATA | 3}; mov ds, ax; ud2", CODE3)
    m.expect(m.run(CODE3), GP, K_DATA)
    assert m.cpu.seg_sel[DS] == U_DATA


def test_rpl_above_dpl_is_gp(m):
    m.load(f"mov ax, {K_DATA | 1}; mov ds, ax; hlt", CODE0)
    m.expect(m.run(CODE0), GP, K_DATA)


def test_conforming_readable_code_loads_at_any_level(m):
    sel = m.set(16, sg.make_descriptor(0, 0xFFFFFFFF, 0x9E))
    m.enter(3)
    m.load(f"mov ax, {sel | 3}; mov ds, ax; ud2", CODE3)
    result = m.run(CODE3)
    assert m.last.vector == 6 and result == "stop"
    assert m.cpu.seg_sel[DS] == sel | 3


def test_system_descriptor_into_ds_is_gp(m):
    m.load(f"mov ax, {TSS_A_SEL}; mov ds, ax; hlt", CODE0)
    m.expect(m.run(CODE0), GP, TSS_A_SEL)


def test_load_cs_sets_cpl_rpl_and_size(m):
    d = m.get(6)
    sg.load_cs(m.cpu, K_CODE16 | 3, d, 0)
    assert m.cpu.seg_sel[CS] == K_CODE16 and m.cpu.bits == 16 and m.cpu.cpl == 0
