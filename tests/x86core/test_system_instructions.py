"""LGDT LIDT SGDT SIDT LLDT SLDT LTR STR LAR LSL VERR VERW ARPL LMSW SMSW
CLTS INVLPG INVD WBINVD (Intel SDM Vol. 2), run as programs on the
protected-mode machine of test_segmentation."""
from __future__ import annotations

import pytest

from x86core import segmentation as sg
from x86core.exceptions import GP, NP, SS, UD

from .test_segmentation import (CODE0, CODE3, CODE_R0, DATA_R0, GDT, GDT_LIMIT, K_CODE, K_DATA,
                                LDT, STACK0, TSS_A, TSS_A_SEL, TSS_B, U_CODE, U_DATA, CS, DS, EAX,
                                EBX, ECX, EDX, ES, ESI, FS, SS_REG, Machine, gate, m,
                                tss_descriptor)

ZF = 0x40


def rd6(cpu, addr: int) -> int:
    return cpu.mem.read(addr, 8) & 0xFFFFFFFFFFFF


def zf(m) -> bool:
    return bool(m.cpu.get_eflags() & ZF)


def run0(m, text, regs=None):
    """Run `text` + hlt at CPL 0; returns the machine's cpu."""
    m.load(text + "\nhlt", CODE0)
    for r, v in (regs or {}).items():
        m.cpu.regs[r] = v
    result = m.run(CODE0)
    assert result == "halt", (result, m.exceptions)
    return m.cpu


def fault3(m, text, vector, error_code=None):
    """`text` at CPL 3 must fault with vector(error code) on its first instruction."""
    m.enter(3)
    m.load(text + "\nud2", CODE3)
    m.cpu.eip = CODE3
    before = m.snapshot()
    m.expect(m.run(CODE3), vector, error_code)
    assert m.snapshot() == before


def real_mode(m):
    cpu = m.cpu
    cpu.cr0 &= ~1
    cpu.cpl = 0
    for seg in range(6):
        cpu.seg_sel[seg], cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = 0, 0, 0xFFFF, 0x93
    sg.load_cs(cpu, 0, None, 0)
    cpu.bits = 16
    cpu.mode_changed()
    cpu.regs[4] = 0x7000


# -- LGDT LIDT SGDT SIDT ------------------------------------------------------------------------

def test_lgdt_lidt_sgdt_sidt_round_trip(m):
    cpu = m.cpu
    cpu.mem.write(0x5000, 2, GDT_LIMIT)
    cpu.mem.write(0x5002, 4, GDT)
    cpu.mem.write(0x5010, 2, 0x7FF)
    cpu.mem.write(0x5012, 4, 0xC0002800)
    run0(m, "mov eax, 0x5000\nlgdt [eax]\nlidt [eax+0x10]\nsgdt [0x5020]\nsidt [0x5030]")
    assert cpu.gdtr == (GDT, GDT_LIMIT) and cpu.idtr == (0xC0002800, 0x7FF)
    assert rd6(cpu, 0x5020) == GDT_LIMIT | GDT << 16
    assert rd6(cpu, 0x5030) == 0x7FF | 0xC0002800 << 16


def test_lgdt_with_16bit_operand_size_keeps_24_bits(m):
    cpu = m.cpu
    cpu.mem.write(0x5000, 2, GDT_LIMIT)
    cpu.mem.write(0x5002, 4, 0xAB000000 | GDT)
    cpu.mem.write(0x5030, 8, 0xFFFFFFFFFFFFFFFF)
    run0(m, "lgdtw [0x5000]\nmov eax, 0x1234\nsidtw [0x5030]")
    assert cpu.gdtr == (GDT, GDT_LIMIT)
    # SIDT with operand size 16: 24 bits of base and a zero sixth byte.
    cpu.idtr = (0x12345678, 0x3FF)
    run0(m, "sidtw [0x5030]")
    assert rd6(cpu, 0x5030) == 0x3FF | 0x00345678 << 16


def test_sgdt_with_16bit_addressing(m):
    run0(m, "mov ebx, 0x5000\nmov esi, 0x10\naddr16 sgdt [bx+si+2]")
    assert rd6(m.cpu, 0x5012) == GDT_LIMIT | GDT << 16


def test_sgdt_through_segment_base(m):
    sel = m.set(16, sg.make_descriptor(0x6000, 0xFFF, DATA_R0, flags=0x4))
    run0(m, f"mov ax, {sel}\nmov es, ax\nsgdt es:[0x10]")
    assert rd6(m.cpu, 0x6010) == GDT_LIMIT | GDT << 16


def test_sgdt_beyond_segment_limit_is_gp0(m):
    sel = m.set(16, sg.make_descriptor(0x6000, 0xFFF, DATA_R0, flags=0x4))
    m.load(f"mov ax, {sel}\nmov es, ax\nsgdt es:[0xFFC]\nhlt", CODE0)
    m.expect(m.run(CODE0), GP, 0)
    assert m.cpu.eip == CODE0 + 6


def test_memory_operand_through_null_segment_is_gp0(m):
    m.load("xor eax, eax\nmov es, ax\nsgdt es:[0x5000]\nhlt", CODE0)
    m.expect(m.run(CODE0), GP, 0)


def test_stack_segment_operand_beyond_limit_is_ss0(m):
    sel = m.set(16, sg.make_descriptor(0x6000, 0xFFF, DATA_R0, flags=0x4))
    m.segment(SS_REG, sel)
    m.cpu.regs[4] = 0x800
    m.load("sgdt [esp+0x7FE]\nhlt", CODE0)
    m.expect(m.run(CODE0), SS, 0)


def test_sgdt_sidt_allowed_at_cpl3(m):
    m.enter(3)
    m.load("sgdt [0x5040]\nsidt [0x5050]\nud2", CODE3)
    m.expect(m.run(CODE3), UD)
    assert rd6(m.cpu, 0x5040) == GDT_LIMIT | GDT << 16


def test_lgdt_in_real_mode(m):
    real_mode(m)
    cpu = m.cpu
    cpu.mem.write(0x5000, 2, 0x27)
    cpu.mem.write(0x5002, 4, 0x9000)
    m.load("mov bx, 0x5000\nlgdt [bx]\nhlt", 0x600, bits=16)
    assert m.run(0x600) == "halt" and cpu.gdtr == (0x9000, 0x27)


@pytest.mark.parametrize("text", ["lgdt [0x5000]", "lidt [0x5000]", "lldt ax", "ltr ax", "lmsw ax",
                                  "clts", "invlpg [0x5000]", "invd", "wbinvd"])
def test_privileged_at_cpl3_is_gp0(m, text):
    fault3(m, f"{text}", GP, 0)


@pytest.mark.parametrize("text", ["lldt ax", "sldt ax", "ltr ax", "str ax", "lar ax, bx", "lsl ax, bx",
                                  "verr ax", "verw ax", "arpl ax, bx"])
def test_protection_instructions_are_ud_in_real_mode(m, text):
    real_mode(m)
    m.load(text + "\nhlt", 0x600, bits=16)
    m.expect(m.run(0x600), UD)
    assert m.cpu.eip == 0x600


@pytest.mark.parametrize("text", ["sldt ax", "str ax", "lar ax, bx", "verr ax", "arpl ax, bx", "lldt ax"])
def test_protection_instructions_are_ud_in_v86_mode(m, text):
    real_mode(m)
    cpu = m.cpu
    cpu.cr0 |= 1
    cpu.set_eflags(cpu.get_eflags() | 0x20000)
    cpu.cpl = 3
    cpu.mode_changed()
    m.load(text + "\nhlt", 0x600, bits=16)
    m.expect(m.run(0x600), UD)


# -- LLDT SLDT ----------------------------------------------------------------------------------------

def test_lldt_sldt(m):
    ldt = m.set(16, sg.make_descriptor(LDT, 0x1F, 0x82, flags=0))
    cpu = run0(m, f"mov ax, {ldt}\nlldt ax\nmov ecx, 0xFFFFFFFF\nsldt ecx\nsldt [0x5000]\n"
                  "mov edx, 0xFFFFFFFF\nsldt dx")
    assert cpu.ldtr[:3] == (ldt, LDT, 0x1F)
    assert cpu.regs[ECX] == ldt                   # a 32-bit register: zero-extended
    assert cpu.regs[EDX] == 0xFFFF0000 | ldt      # a 16-bit register: low word only
    assert cpu.mem.read(0x5000, 2) == ldt


def test_lldt_null_invalidates_ldtr(m):
    ldt = m.set(16, sg.make_descriptor(LDT, 0x1F, 0x82, flags=0))
    cpu = run0(m, f"mov ax, {ldt}\nlldt ax\nxor eax, eax\nlldt ax")
    assert cpu.ldtr[0] == 0
    m.load("mov ax, 0x0C\nmov ds, ax\nhlt", CODE0)
    m.expect(m.run(CODE0), GP, 0x0C)


@pytest.mark.parametrize("case", ["ti_set", "beyond_gdt", "not_ldt", "code", "not_present"])
def test_lldt_faults(m, case):
    sel, expect = {
        "ti_set": (0x14, (GP, 0x14)),
        "beyond_gdt": (0x400, (GP, 0x400)),
        "not_ldt": (TSS_A_SEL, (GP, TSS_A_SEL)),
        "code": (K_CODE, (GP, K_CODE)),
        "not_present": (m.set(16, sg.make_descriptor(LDT, 0x1F, 0x02, flags=0)), (NP, 16 << 3)),
    }[case]
    m.load(f"mov ax, {sel}\nlldt ax\nhlt", CODE0)
    m.expect(m.run(CODE0), *expect)
    assert m.cpu.ldtr[0] == 0


# -- LTR STR -------------------------------------------------------------------------------------------

def test_ltr_marks_busy_and_str_reads_it(m):
    b = m.set(16, tss_descriptor(TSS_B))
    cpu = run0(m, f"mov ax, {b}\nltr ax\nmov ecx, -1\nstr ecx\nstr [0x5000]")
    assert cpu.tr[:3] == (b, TSS_B, 0x67) and cpu.tr[3] & 0xF == 0xB
    assert m.get(16).type == 0xB
    assert cpu.regs[ECX] == b and cpu.mem.read(0x5000, 2) == b


@pytest.mark.parametrize("case", ["null", "ti_set", "busy", "not_tss", "not_present", "beyond_gdt"])
def test_ltr_faults(m, case):
    np_sel = m.set(16, tss_descriptor(TSS_B, present=False))
    sel, expect = {
        "null": (0, (GP, 0)),
        "ti_set": (0x2C, (GP, 0x2C)),
        "busy": (TSS_A_SEL, (GP, TSS_A_SEL)),
        "not_tss": (K_DATA, (GP, K_DATA)),
        "not_present": (np_sel, (NP, np_sel)),
        "beyond_gdt": (0x400, (GP, 0x400)),
    }[case]
    m.load(f"mov ax, {sel}\nltr ax\nhlt", CODE0)
    m.expect(m.run(CODE0), *expect)
    assert m.cpu.tr[0] == TSS_A_SEL and m.get(16).type == 0x9


# -- LAR LSL -------------------------------------------------------------------------------------------

# SDM Vol. 2 LAR / LSL: the system descriptor types each accepts.
LAR_VALID = {1, 2, 3, 4, 5, 9, 0xB, 0xC}
LSL_VALID = {1, 2, 3, 9, 0xB}


@pytest.mark.parametrize("type_", range(16))
def test_lar_lsl_system_types(m, type_):
    raw = sg.make_descriptor(0x12345, 0x2ABCD, 0x80 | type_, flags=0)
    sel = m.set(16, raw)
    cpu = run0(m, f"mov eax, 0x11111111\nmov edx, 0x22222222\nmov ebx, {sel}\n"
                  "lar eax, ebx\nsetz cl\nlsl edx, ebx\nsetz ch")
    lar_ok, lsl_ok = bool(cpu.regs[ECX] & 0xFF), bool(cpu.regs[ECX] >> 8 & 0xFF)
    assert lar_ok == (type_ in LAR_VALID)
    assert lsl_ok == (type_ in LSL_VALID)
    hi = raw >> 32
    assert cpu.regs[EAX] == ((hi & 0x00F0FF00) if lar_ok else 0x11111111)
    assert cpu.regs[EDX] == (0x2ABCD if lsl_ok else 0x22222222)


@pytest.mark.parametrize("access", [0x92, 0x90, 0x96, 0x9A, 0x98, 0x9E, 0x9C])
def test_lar_lsl_code_and_data_always_valid(m, access):
    sel = m.set(16, sg.make_descriptor(0, 0x3FFFF, access, flags=0xC))     # G=1: limit in bytes
    cpu = run0(m, f"mov ebx, {sel}\nlar eax, ebx\nsetz cl\nlsl edx, ebx\nsetz ch")
    assert cpu.regs[ECX] & 0xFFFF == 0x0101
    assert cpu.regs[EAX] == (m.cpu.mem.read(GDT + 16 * 8 + 4, 4) & 0x00F0FF00)
    assert cpu.regs[EDX] == 0x3FFFF


def test_lar_lsl_16bit_operand_size(m):
    sel = m.set(16, sg.make_descriptor(0, 0x3FFFF, 0x92, flags=0xC))
    cpu = run0(m, f"mov eax, 0xFFFFFFFF\nmov edx, 0xFFFFFFFF\nmov bx, {sel}\nlar ax, bx\nlsl dx, bx")
    # 16 bits: the access byte in bits 15:8; the low 16 bits of the byte-granular limit.
    assert cpu.regs[EAX] == 0xFFFF9200 and cpu.regs[EDX] == 0xFFFFFFFF


def test_lar_memory_operand(m):
    m.cpu.mem.write(0x5000, 2, K_CODE)
    cpu = run0(m, "lar eax, word ptr [0x5000]\nlsl edx, word ptr [0x5000]")
    assert zf(m) and cpu.regs[EAX] == 0x00C09A00 and cpu.regs[EDX] == 0xFFFFFFFF


@pytest.mark.parametrize("case, expect_zf", [
    ("null", False), ("beyond_gdt", False), ("ldt_null_ldtr", False),
    ("dpl0_at_cpl3", False), ("rpl3_dpl0_at_cpl0", False), ("conforming_dpl0_at_cpl3", True),
    ("dpl3_at_cpl3", True), ("call_gate_dpl0_at_cpl3", False), ("call_gate_dpl3_at_cpl3", True),
])
def test_lar_visibility(m, case, expect_zf):
    conf = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x9E))
    g0 = m.set(17, gate(K_CODE, 0, 0xC, dpl=0))
    g3 = m.set(18, gate(K_CODE, 0, 0xC, dpl=3))
    sel, cpl = {
        "null": (0, 0), "beyond_gdt": (0x400, 0), "ldt_null_ldtr": (0x0C, 0),
        "dpl0_at_cpl3": (K_DATA | 3, 3), "rpl3_dpl0_at_cpl0": (K_DATA | 3, 0),
        "conforming_dpl0_at_cpl3": (conf | 3, 3), "dpl3_at_cpl3": (U_DATA, 3),
        "call_gate_dpl0_at_cpl3": (g0 | 3, 3), "call_gate_dpl3_at_cpl3": (g3 | 3, 3),
    }[case]
    text = f"mov ebx, {sel}\nmov eax, 0x5555\nlar eax, ebx"
    if cpl == 3:
        m.enter(3)
        m.load(text + "\nud2", CODE3)
        m.expect(m.run(CODE3), UD)
    else:
        run0(m, text)
    assert zf(m) == expect_zf
    if not expect_zf:
        assert m.cpu.regs[EAX] == 0x5555


def test_lsl_clears_zf_on_gate(m):
    g = m.set(17, gate(K_CODE, 0, 0xC, dpl=0))
    cpu = run0(m, f"mov ebx, {g}\nmov edx, 7\ncmp eax, eax\nlsl edx, ebx")
    assert not zf(m) and cpu.regs[EDX] == 7


# -- VERR VERW -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("access, readable, writable", [
    (0x92, True, True), (0x90, True, False), (0x96, True, True),
    (0x9A, True, False), (0x98, False, False), (0x9E, True, False),
    (0x89, False, False), (0x82, False, False), (0x8C, False, False),
])
def test_verr_verw_types(m, access, readable, writable):
    sel = m.set(16, sg.make_descriptor(0, 0xFFFF, access, flags=0))
    run0(m, f"mov ebx, {sel}\nverr bx\nsetz cl\nverw bx\nsetz ch")
    c = m.cpu.regs[ECX]
    assert (bool(c & 0xFF), bool(c >> 8 & 0xFF)) == (readable, writable)


def test_verr_verw_privilege(m):
    conf_exec_only = m.set(16, sg.make_descriptor(0, 0xFFFFF, 0x9C))
    conf = m.set(17, sg.make_descriptor(0, 0xFFFFF, 0x9E))
    m.enter(3)
    m.load(f"""
        mov bx, {K_DATA | 3}
        verr bx
        setz al
        verw bx
        setz ah
        mov bx, {U_DATA}
        verr bx
        setz cl
        verw bx
        setz ch
        mov bx, {conf | 3}
        verr bx
        setz dl
        mov bx, {conf_exec_only | 3}
        verr bx
        setz dh
        verw word ptr [0x5000]
        ud2
    """, CODE3)
    m.cpu.mem.write(0x5000, 2, U_DATA)
    m.expect(m.run(CODE3), UD)
    r = m.cpu.regs
    assert r[EAX] & 0xFFFF == 0x0000           # ring-0 data from ring 3: neither
    assert r[ECX] & 0xFFFF == 0x0101           # ring-3 data: both
    assert r[EDX] & 0xFFFF == 0x0001           # conforming readable code: readable, no DPL check
    assert zf(m)                               # VERW through memory


# -- ARPL --------------------------------------------------------------------------------------------------

def test_arpl(m):
    cpu = run0(m, "mov eax, 0xFFFF0010\nmov ebx, 3\narpl ax, bx\nsetz cl\n"
                  "mov edx, 0x12\narpl dx, bx\nsetz ch\n"
                  "mov word ptr [0x5000], 0x21\narpl word ptr [0x5000], bx\nsetz bl\n"
                  "mov esi, 1\nmov word ptr [0x5002], 0x22\narpl word ptr [0x5002], si\nsetz bh")
    assert cpu.regs[EAX] == 0xFFFF0013 and cpu.regs[ECX] & 0xFF == 1
    assert cpu.regs[EDX] == 0x13 and cpu.regs[ECX] >> 8 & 0xFF == 1
    assert cpu.mem.read(0x5000, 2) == 0x23 and cpu.regs[EBX] & 0xFF == 1
    assert cpu.mem.read(0x5002, 2) == 0x22 and cpu.regs[EBX] >> 8 & 0xFF == 0


def test_arpl_at_cpl3(m):
    m.enter(3)
    m.load("mov ax, 0x10\nmov bx, 0x23\narpl ax, bx\nud2", CODE3)
    m.expect(m.run(CODE3), UD)
    assert m.cpu.regs[EAX] & 0xFFFF == 0x13 and zf(m)


# -- LMSW SMSW CLTS ------------------------------------------------------------------------------------------

def test_lmsw_sets_low_bits_but_cannot_clear_pe(m):
    cpu = m.cpu
    cpu.cr0 |= 0x20                             # NE: above the MSW, kept
    cpu = run0(m, "mov ax, 0xE\nlmsw ax")
    assert cpu.cr0 & 0xF == 0xF and cpu.cr0 & 0x20
    cpu = run0(m, "mov ax, 0\nlmsw ax")
    assert cpu.cr0 & 0xF == 0x1


def test_lmsw_enters_protected_mode_from_real_mode(m):
    real_mode(m)
    m.load("mov ax, 1\nlmsw ax\nhlt", 0x600, bits=16)
    assert m.run(0x600) == "halt" and m.cpu.cr0 & 1


def test_smsw(m):
    cpu = m.cpu
    cpu.cr0 |= 0x60000 | 0x8
    cpu = run0(m, "mov eax, -1\nmov edx, -1\nsmsw eax\nsmsw dx\nsmsw [0x5000]\nmov dword ptr [0x5010], -1\nsmsw [0x5010]")
    assert cpu.regs[EAX] == cpu.cr0                       # whole CR0 (operand size 32)
    assert cpu.regs[EDX] == 0xFFFF0000 | (cpu.cr0 & 0xFFFF)
    assert cpu.mem.read(0x5010, 4) == 0xFFFF0000 | (cpu.cr0 & 0xFFFF)


def test_smsw_at_cpl3(m):
    m.enter(3)
    m.load("smsw eax\nud2", CODE3)
    m.expect(m.run(CODE3), UD)
    assert m.cpu.regs[EAX] == m.cpu.cr0


def test_clts(m):
    m.cpu.cr0 |= 0x8
    cpu = run0(m, "clts")
    assert not cpu.cr0 & 0x8


# -- INVLPG INVD WBINVD ------------------------------------------------------------------------------------

def test_invlpg_drops_the_translation(m):
    cpu = m.cpu
    pd, pt = 0x90000, 0x91000
    for page in range(256):
        cpu.mem.write(pt + 4 * page, 4, page << 12 | 3)
    cpu.mem.write(pd, 4, pt | 3)
    cpu.write_cr(3, pd)
    cpu.write_cr(0, cpu.cr0 | 0x80000000)
    cpu.mem.write(0x50000, 4, 0x1111)
    cpu.mem.write(0x51000, 4, 0x2222)
    m.load("mov eax, [0x50000]\nhlt", CODE0)
    assert m.run(CODE0) == "halt" and cpu.regs[EAX] == 0x1111
    cpu.mem.write(pt + 4 * 0x50, 4, 0x51000 | 3)       # remap without telling the TLB
    assert m.run(CODE0) == "halt" and cpu.regs[EAX] == 0x1111
    m.load("mov ebx, 0x40000\ninvlpg [ebx+0x10010]\nmov eax, [0x50000]\nhlt", CODE0)
    assert m.run(CODE0) == "halt" and cpu.regs[EAX] == 0x2222


def test_invd_wbinvd_are_no_ops_at_cpl0(m):
    run0(m, "invd\nwbinvd\nmov eax, 3")
    assert m.cpu.regs[EAX] == 3
