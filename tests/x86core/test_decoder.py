"""Unit tests of x86core.decoder: addressing forms, prefixes, length limits,
truncation, LOCK and the 16-bit default mode.  The expectations are written
from the Intel SDM Vol. 2 ch. 2 (Tables 2-1 to 2-3), not from the decoder;
test_decoder_iced.py compares whole opcode maps against iced-x86.
"""
from __future__ import annotations

import itertools

import iced_x86 as ic
import pytest

from x86core.decoder import MAX_LENGTH, decode
from x86core.instruction import (CREG, DREG, FAR, IMM, MEM, REG, REL, SREG,
                                 CS, DS, ES, FS, GS, SS,
                                 F_BRANCH, F_PRIVILEGED, F_STOP, F_STRING,
                                 Instruction, NeedMore, Operand, Undefined)

EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
BX, BP, SI, DI = EBX, EBP, ESI, EDI
NONE = -1


def ins(hexstr: str, bits: int = 32) -> Instruction:
    result = decode(bytes.fromhex(hexstr), 0, bits)
    assert isinstance(result, Instruction), (hexstr, result)
    assert result.length == len(bytes.fromhex(hexstr)), (hexstr, result)
    return result


def undefined(hexstr: str, bits: int = 32) -> Undefined:
    result = decode(bytes.fromhex(hexstr), 0, bits)
    assert isinstance(result, Undefined), (hexstr, result)
    return result


def mem(result: Instruction, n: int = 1) -> tuple:
    """(seg, base, index, scale, disp, disp_size) of operand n (mov r, [m]: n=1)."""
    op = result.operands[n]
    assert op.kind == MEM, op
    return op.seg, op.base, op.index, op.scale, op.disp, op.disp_size


# ---------------------------------------------------------------------------
# 32-bit ModRM and SIB (SDM Tables 2-2, 2-3)
# ---------------------------------------------------------------------------

# 8B /r: mov eax, r/m32 with ModRM.reg = 0.  Displacements: disp8 = 0x80
# (negative, checks sign extension), disp32 = 0x12345678.
_D8, _D32 = "80", "78563412"


@pytest.mark.parametrize("rm", range(8))
@pytest.mark.parametrize("mod", range(3))
def test_modrm32_every_mod_rm(mod, rm):
    modrm = f"{mod << 6 | rm:02x}"
    if rm == 4:
        sib = "00"                              # [eax+eax*1]: SIB forms tested below
        hexstr = "8b" + modrm + sib + ("", _D8, _D32)[mod]
        base, index = EAX, EAX
    else:
        hexstr = "8b" + modrm + ("", _D8, _D32)[mod] + (_D32 if (mod, rm) == (0, 5) else "")
        base, index = (NONE if (mod, rm) == (0, 5) else rm), NONE
    r = ins(hexstr)
    disp, disp_size = {0: (0, 0), 1: (-128, 1), 2: (0x12345678, 4)}[mod]
    if (mod, rm) == (0, 5):
        disp, disp_size = 0x12345678, 4         # [disp32], no base
    seg = SS if base in (ESP, EBP) else DS
    assert mem(r) == (seg, base, index, 1, disp, disp_size)
    assert r.modrm == int(modrm, 16)
    assert r.sib == (0 if rm == 4 else -1)
    assert r.operands[0] == Operand(REG, 4, reg=EAX)
    assert r.operands[1].size == 4


def test_modrm32_register_forms():
    for rm in range(8):
        r = ins(f"8b{0xC0 | rm:02x}")
        assert r.operands == (Operand(REG, 4, reg=EAX), Operand(REG, 4, reg=rm))
        r = ins(f"8a{0xC0 | 3 << 3 | rm:02x}")             # mov bl, r8
        assert r.operands == (Operand(REG, 1, reg=EBX), Operand(REG, 1, reg=rm))


@pytest.mark.parametrize("hexstr, expect", [
    # SIB: scale index base
    ("8b0488", (DS, EAX, ECX, 4, 0, 0)),                # [eax+ecx*4]
    ("8b04c8", (DS, EAX, ECX, 8, 0, 0)),                # [eax+ecx*8]
    ("8b0448", (DS, EAX, ECX, 2, 0, 0)),                # [eax+ecx*2]
    ("8b0420", (DS, EAX, NONE, 1, 0, 0)),               # index 100b: no index
    ("8b04e0", (DS, EAX, NONE, 8, 0, 0)),               # ... whatever the scale bits (as iced)
    ("8b0424", (SS, ESP, NONE, 1, 0, 0)),               # [esp]: SS
    ("8b442408", (SS, ESP, NONE, 1, 8, 1)),             # [esp+8]
    ("8b04a4", (SS, ESP, NONE, 4, 0, 0)),               # no index, scale ignored
    ("8b0425" + _D32, (DS, NONE, NONE, 1, 0x12345678, 4)),   # no base, no index: [disp32]
    ("8b04ad" + _D32, (DS, NONE, EBP, 4, 0x12345678, 4)),    # [ebp*4+disp32]: DS, not SS
    ("8b04cd" + _D32, (DS, NONE, ECX, 8, 0x12345678, 4)),    # [ecx*8+disp32]
    ("8b4425" + _D8, (SS, EBP, NONE, 1, -128, 1)),      # mod 1 base 101b: [ebp+disp8], SS
    ("8b8425" + _D32, (SS, EBP, NONE, 1, 0x12345678, 4)),    # [ebp+disp32], SS
    ("8b442900", (DS, ECX, EBP, 1, 0, 1)),              # [ecx+ebp+0]: the base decides
    ("8b0474", (SS, ESP, ESI, 2, 0, 0)),                # [esp+esi*2]: SS from the base
])
def test_sib(hexstr, expect):
    assert mem(ins(hexstr)) == expect


def test_disp_sign_extension():
    assert mem(ins("8b40ff"))[4] == -1
    assert mem(ins("8b407f"))[4] == 127
    assert mem(ins("8b80ffffffff"))[4] == -1
    assert mem(ins("8b0500000080"))[4] == -0x80000000   # [disp32] is signed too


# ---------------------------------------------------------------------------
# 16-bit ModRM (SDM Table 2-1)
# ---------------------------------------------------------------------------

_RM16 = [(BX, SI), (BX, DI), (BP, SI), (BP, DI), (SI, NONE), (DI, NONE), (BP, NONE), (BX, NONE)]


@pytest.mark.parametrize("rm", range(8))
@pytest.mark.parametrize("mod", range(3))
@pytest.mark.parametrize("bits, prefix", [(16, ""), (32, "67")])
def test_modrm16_every_mod_rm(bits, prefix, mod, rm):
    modrm = f"{mod << 6 | rm:02x}"
    direct = (mod, rm) == (0, 6)
    hexstr = prefix + "8b" + modrm + ("", "80", "3412")[mod] + ("3412" if direct else "")
    r = ins(hexstr, bits)
    base, index = (NONE, NONE) if direct else _RM16[rm]
    disp, disp_size = {0: (0, 0), 1: (-128, 1), 2: (0x1234, 2)}[mod]
    if direct:
        disp, disp_size = 0x1234, 2             # [disp16]
    seg = SS if base == BP else DS              # [bp...] defaults to SS
    assert mem(r) == (seg, base, index, 1, disp, disp_size)
    assert r.adsize == 16
    assert r.sib == -1
    assert r.opsize == bits                     # 67 changes only the address size


def test_modrm16_negative_disp16():
    assert mem(ins("8b87feff", 16))[4] == -2       # [bx-2]


def test_address_size_prefix_toggles():
    assert ins("8b00").adsize == 32
    assert ins("678b00").adsize == 16 and mem(ins("678b00"))[1:3] == (BX, SI)
    assert ins("8b00", 16).adsize == 16
    r = ins("678b00", 16)                       # 32-bit addressing in 16-bit code
    assert r.adsize == 32 and r.opsize == 16 and mem(r)[1:3] == (EAX, NONE)
    r = ins("67660f1f0424", 16)                 # nop dword [esp] (SIB in 16-bit code)
    assert r.adsize == 32 and r.opsize == 32 and mem(r, 0)[:3] == (SS, ESP, NONE)


def test_operand_size_prefix_toggles():
    assert ins("b878563412").operands[1] == Operand(IMM, 4, imm=0x12345678)
    assert ins("66b83412").operands == (Operand(REG, 2, reg=EAX), Operand(IMM, 2, imm=0x1234))
    assert ins("b83412", 16).operands[1] == Operand(IMM, 2, imm=0x1234)
    assert ins("66b878563412", 16).operands[1] == Operand(IMM, 4, imm=0x12345678)
    # Repeating a prefix does not toggle back.
    assert ins("666666b83412").opsize == 16
    assert ins("6767678b00").adsize == 16


# ---------------------------------------------------------------------------
# Segment overrides
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, seg", [("26", ES), ("2e", CS), ("36", SS), ("3e", DS),
                                         ("64", FS), ("65", GS)])
def test_segment_override(prefix, seg):
    for tail in ("8b00", "8b4500", "8b0424", "a178563412"):
        r = ins(prefix + tail)
        assert r.segment == seg
        assert r.operands[1].seg == seg
    assert ins(prefix + "8b4600", 16).operands[1].seg == seg        # [bp+0]
    # Strings: the override applies to the DS:eSI source only, never ES:eDI.
    r = ins(prefix + "a5")
    assert (r.operands[0].seg, r.operands[1].seg) == (ES, seg)
    assert ins(prefix + "aa").operands[0].seg == ES


def test_last_segment_override_wins():
    """The SDM leaves several overrides undefined; iced (what processors do)
    takes the last one, and so do we."""
    for prefixes in itertools.permutations(["26", "2e", "64", "65"], 3):
        data = bytes.fromhex("".join(prefixes) + "8b00")
        r = decode(data)
        want = {"26": ES, "2e": CS, "64": FS, "65": GS}[prefixes[-1]]
        assert r.segment == want and r.operands[1].seg == want
        iced = ic.Decoder(32, data).decode()
        assert iced.memory_segment == [ic.Register.ES, ic.Register.CS, ic.Register.SS,
                                       ic.Register.DS, ic.Register.FS, ic.Register.GS][want]


def test_default_segments():
    assert ins("8b00").segment == -1 and ins("8b00").operands[1].seg == DS
    assert ins("8b4500").operands[1].seg == SS         # [ebp+0]
    assert ins("8b0424").operands[1].seg == SS         # [esp]
    assert ins("a1" + _D32).operands[1].seg == DS      # moffs
    assert ins("d7").segment == -1                     # XLAT: DS:[eBX+AL], no operand


# ---------------------------------------------------------------------------
# Prefixes in any order and number; the 15-byte limit
# ---------------------------------------------------------------------------

def test_prefix_order_does_not_matter():
    body = "0100"                                      # add [bx+si] / [eax], eax
    reference = None
    for perm in itertools.permutations(["f0", "66", "2e", "67"]):
        r = ins("".join(perm) + body)
        assert r.prefixes == tuple(int(p, 16) for p in perm)
        assert r.raw == bytes.fromhex("".join(perm) + body)
        key = (r.mnemonic, r.operands, r.length, r.opsize, r.adsize, r.lock, r.segment)
        assert reference is None or key == reference
        reference = key
    assert reference == ("add", (Operand(MEM, 2, seg=CS, base=BX, index=SI), Operand(REG, 2, reg=EAX)),
                         6, 16, 16, True, CS)


def test_rep_prefixes():
    assert ins("f3a5").rep == 0xF3
    assert ins("f2a7").rep == 0xF2
    assert ins("f2f3a4").rep == 0xF3                   # the last one counts (as iced)
    assert ins("f3f2a4").rep == 0xF2
    assert ins("f3a5").flags & F_STRING
    r = ins("f390")
    assert r.mnemonic == "pause" and r.rep == 0        # F3 belongs to PAUSE's opcode
    assert ins("f290").mnemonic == "nop"
    assert ins("66f390").mnemonic == "pause"
    assert ins("f3f290").mnemonic == "nop"             # F2 after F3: not PAUSE
    # REP on a non-string instruction is ignored, but recorded.
    assert ins("f301c0").mnemonic == "add" and ins("f301c0").rep == 0xF3
    assert ins("f30fbcc1").mnemonic == "bsf"           # TZCNT only with BMI1


@pytest.mark.parametrize("bits", (16, 32))
def test_fifteen_byte_limit(bits):
    assert ins("66" * 14 + "90", bits).length == 15
    r = undefined("66" * 15 + "90", bits)
    assert (r.vector, r.length) == (13, MAX_LENGTH)
    assert undefined("2e" * 20 + "90", bits).vector == 13
    # lock add dword cs:[eax+ecx*4+disp32], imm32 with four prefixes: 15 bytes
    body = "818488" + "78563412" + "efbeadde"          # 11 bytes (32-bit sizes)
    prefixes = "f066672e" if bits == 16 else "f02e3e26"
    r = ins(prefixes + body, bits)
    assert r.length == 15 and r.lock
    r = undefined(prefixes + "64" + body, bits)        # 16 bytes
    assert r.vector == 13
    # Too long is known before the bytes run out: #GP, not NeedMore.
    r = decode(bytes.fromhex(prefixes + "64" + body[:14]), 0, bits)   # imm32 missing
    assert isinstance(r, Undefined) and r.vector == 13


def test_undefined_is_vector_6():
    for hexstr in ("0f0b", "0fff", "8fc8", "c4c0", "0f10c0", "0f3800"):
        r = decode(bytes.fromhex(hexstr))
        if hexstr == "0f0b":
            assert r.mnemonic == "ud2"                 # UD2 is an instruction that raises #UD
            continue
        assert isinstance(r, Undefined) and r.vector == 6 and r.length >= 1, hexstr
        assert r.raw == bytes.fromhex(hexstr)[:r.length]


# ---------------------------------------------------------------------------
# NeedMore: truncation at every position
# ---------------------------------------------------------------------------

# Instructions split into their fields (prefixes, opcode, ModRM, SIB, disp,
# imm); a truncated one must ask for the rest of the field it stops in.
LONG_INSTRUCTIONS = [
    (32, ["26", "66", "c7", "84", "88", "44332211", "7856"]),     # mov word es:[eax+ecx*4+d32], i16
    (32, ["f0", "81", "84", "24", "78563412", "efbeadde"]),       # lock add [esp+d32], i32
    (32, ["9a", "78563412", "3412"]),                             # call far ptr16:32
    (32, ["0f", "ba", "6c", "24", "08", "05"]),                   # bts dword [esp+8], 5
    (32, ["69", "0d", "78563412", "44332211"]),                   # imul ecx, [d32], i32
    (32, ["67", "c7", "86", "3412", "78563412"]),                 # mov dword [bp+d16], i32
    (16, ["c7", "86", "3412", "7856"]),                           # mov word [bp+d16], i16
    (16, ["66", "ea", "78563412", "3412"]),                       # jmp far ptr16:32
    (16, ["0f", "84", "3412"]),                                   # je rel16
    (32, ["c8", "3412", "05"]),                                   # enter 0x1234, 5
    (32, ["a1", "78563412"]),                                     # mov eax, [moffs32]
]


@pytest.mark.parametrize("bits, fields", LONG_INSTRUCTIONS,
                         ids=["".join(f) for _, f in LONG_INSTRUCTIONS])
def test_needmore_at_every_position(bits, fields):
    data = bytes.fromhex("".join(fields))
    assert ins(data.hex(), bits).length == len(data)
    ends = list(itertools.accumulate(len(f) // 2 for f in fields))
    for have in range(len(data)):
        field_end = next(e for e in ends if e > have)
        r = decode(data[:have], 0, bits)
        assert r == NeedMore(needed=field_end - have, have=have), (have, r)
        # The same at an offset into a larger buffer.
        r = decode(b"\x90" * 3 + data[:have], 3, bits)
        assert r == NeedMore(needed=field_end - have, have=have)


def test_bytes_like_inputs():
    data = bytes.fromhex("8b842488776655")
    want = decode(data)
    assert decode(bytearray(data)) == want
    assert decode(memoryview(data)) == want
    assert decode(b"\xcc" + data, 1).operands == want.operands


# ---------------------------------------------------------------------------
# LOCK
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("hexstr", [
    "f00100",       # add [eax], eax
    "f00fc708",     # cmpxchg8b [eax]
    "f08600",       # xchg [eax], al
    "f00fba2805",   # bts dword [eax], 5
    "f00fab00",     # bts [eax], eax
    "f0fe00",       # inc byte [eax]
    "f0f618",       # neg byte [eax]
    "f0f710",       # not dword [eax]
    "f00fc100",     # xadd [eax], eax
    "f00fb100",     # cmpxchg [eax], eax
    "f0830001",     # add dword [eax], 1
    "f0800001",     # add byte [eax], 1
    "f0820001",     # add byte [eax], 1 (82 alias)
    "f0ff08",       # dec dword [eax]
    "3ef066ff00",   # lock inc word ds:[eax]: prefixes in any order
])
def test_lock_allowed(hexstr):
    assert ins(hexstr).lock


@pytest.mark.parametrize("hexstr", [
    "f001c0",       # add eax, eax: register destination
    "f00300",       # add eax, [eax]: register destination
    "f08b00",       # mov: not lockable
    "f0f60001",     # test byte [eax], 1
    "f03800",       # cmp [eax], al
    "f00fba2005",   # bt dword [eax], 5: BT does not write
    "f00fa300",     # bt [eax], eax
    "f090",         # nop
    "f0a4",         # movs
    "f0fec0",       # inc al
    "f086c0",       # xchg al, al
    "f00fc7c8",     # cmpxchg8b with a register: #UD anyway
    "f00f20c0",     # mov eax, cr0 (AMD's LOCK MOV CR8 alias: not ours)
    "f0c600ff",     # mov byte [eax], 0xff
    "f08f00",       # pop dword [eax]
])
def test_lock_undefined(hexstr):
    r = undefined(hexstr)
    assert r.vector == 6


# ---------------------------------------------------------------------------
# 16-bit default mode (bits=16)
# ---------------------------------------------------------------------------

def test_16bit_mode():
    r = ins("b83412", 16)
    assert (r.opsize, r.adsize) == (16, 16)
    assert r.operands == (Operand(REG, 2, reg=EAX), Operand(IMM, 2, imm=0x1234))
    assert ins("98", 16).mnemonic == "cbw" and ins("6698", 16).mnemonic == "cwde"
    assert ins("98").mnemonic == "cwde" and ins("6698").mnemonic == "cbw"
    assert ins("99", 16).mnemonic == "cwd" and ins("99").mnemonic == "cdq"
    assert ins("cf", 16).mnemonic == "iretw" and ins("66cf", 16).mnemonic == "iret"
    assert ins("60", 16).mnemonic == "pushaw" and ins("60").mnemonic == "pusha"
    assert ins("9c", 16).mnemonic == "pushfw" and ins("669d", 16).mnemonic == "popf"
    assert ins("e3fe", 16).mnemonic == "jcxz" and ins("67e3fe", 16).mnemonic == "jecxz"
    assert ins("e3fe").mnemonic == "jecxz" and ins("67e3fe").mnemonic == "jcxz"
    assert ins("50", 16).operands == (Operand(REG, 2, reg=EAX),)
    assert ins("6a80", 16).operands == (Operand(IMM, 2, imm=0xFF80),)   # sign-extended
    assert ins("6a80").operands == (Operand(IMM, 4, imm=0xFFFFFF80),)
    assert ins("683412", 16).operands == (Operand(IMM, 2, imm=0x1234),)
    r = ins("e8fdff", 16)                                       # call rel16
    assert r.operands == (Operand(REL, 2, imm=-3),) and r.branch_target(0x10) == 0x10
    assert ins("e8fdff", 16).branch_target(0) == 0              # wraps at 64K
    assert ins("e80000", 16).branch_target(0xFFFE) == 0x0001
    assert ins("66e8fbffffff", 16).branch_target(0) == 1        # rel32 in 16-bit code
    r = ins("ea78563412", 16)                                   # jmp far 1234:5678
    assert r.operands == (Operand(FAR, 4, imm=0x5678, sel=0x1234),)
    r = ins("a13412", 16)                                       # mov ax, [0x1234]
    assert r.operands[1] == Operand(MEM, 2, seg=DS, disp=0x1234, disp_size=2)
    r = ins("a5", 16)
    assert r.operands[0] == Operand(MEM, 2, seg=ES, base=DI)
    assert r.operands[1] == Operand(MEM, 2, seg=DS, base=SI)
    assert r.adsize == 16
    assert ins("0f843412", 16).operands == (Operand(REL, 2, imm=0x1234),)
    assert ins("c3", 16).opsize == 16 and ins("66c3", 16).opsize == 32


# ---------------------------------------------------------------------------
# Groups, special operands and flags
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("hexstr", [
    "8fc8", "8f08",         # 8F /1: only POP is defined (XOP on AMD)
    "fe10", "fef8",         # FE /2-/7
    "ff38", "fff8",         # FF /7
    "c60800", "c70800000000", "c6f8",   # C6/C7 /1-/7 (XABORT/XBEGIN: RTM)
    "0f0128", "0f01e8",     # 0F 01 /5
    "0f01f8", "0f01c0", "0f01d0",   # 0F 01 register forms other than SMSW/LMSW
    "0fba0005", "0fba1805",    # 0F BA /0-/3
    "0fc7c8", "0fc710",     # CMPXCHG8B with a register; 0F C7 /2
    "0f0030", "0f0038",     # 0F 00 /6 /7
    "8dc0", "c4c0", "c5c0", "62c0", "0fb2c0", "0fb4c0", "0fb5c0",   # M with a register
    "ffd8", "ffe8",         # call/jmp far with a register
    "8ec8",                 # mov cs, eax
    "8ef0", "8ef8", "8cf0", "8cf8",   # segment registers 6 and 7
    "0f22c8", "0f20e8", "0f20f0", "0f20f8",   # CR1, CR5-CR7
    "0f10c0", "0f38f0c0", "0f0d00", "0f1800", "0fa6c0", "0f05", "0f34",
    "0fb9c0", "0fff00",     # UD1/UD0: undefined is what they are
])
def test_undefined_encodings(hexstr):
    assert undefined(hexstr).vector == 6


def test_group_entries_and_operands():
    assert ins("f6c1ff").mnemonic == "test" and ins("f6c1ff").operands[1] == Operand(IMM, 1, imm=0xFF)
    assert ins("f6c9ff").mnemonic == "test"                     # F6 /1 alias
    assert ins("f7c178563412").operands[1] == Operand(IMM, 4, imm=0x12345678)
    assert ins("66f7c13412").operands[1] == Operand(IMM, 2, imm=0x1234)
    assert ins("d1e0").operands == (Operand(REG, 4, reg=EAX), Operand(IMM, 1, imm=1))
    assert ins("d3f8").mnemonic == "sar" and ins("d3f0").mnemonic == "sal"
    assert ins("83c0ff").operands[1] == Operand(IMM, 4, imm=0xFFFFFFFF)
    assert ins("6683c0ff").operands[1] == Operand(IMM, 2, imm=0xFFFF)
    assert ins("82c0ff").mnemonic == "add"
    assert ins("0f1fc8").mnemonic == "nop"                      # 0F 1F /1: a NOP too
    r = ins("0f1f440000")
    assert r.mnemonic == "nop" and r.operands[0].size == 4
    assert ins("0f0138").operands[0].size == 0                  # invlpg: no data size
    assert ins("8d00").operands[1].size == 0                    # lea
    assert ins("0f0110").operands[0].size == 6                  # lgdt m16&32
    assert ins("6200").operands[1].size == 8 and ins("666200").operands[1].size == 4
    assert ins("ff18").operands[0].size == 6 and ins("66ff18").operands[0].size == 4
    assert ins("0fc708").operands[0].size == 8
    assert ins("8cd8").operands == (Operand(REG, 4, reg=EAX), Operand(SREG, 2, reg=DS))
    assert ins("8c18").operands[0].size == 2                    # mov [eax], ds: a word
    assert ins("0f00c0").operands[0] == Operand(REG, 4, reg=EAX)    # sldt eax
    assert ins("0f00d0").operands[0] == Operand(REG, 2, reg=EAX)    # lldt ax
    assert ins("c8341205").operands == (Operand(IMM, 2, imm=0x1234), Operand(IMM, 1, imm=5))
    assert ins("9a785634123412").operands == (Operand(FAR, 6, imm=0x12345678, sel=0x1234),)
    assert ins("0f20e0").operands == (Operand(REG, 4, reg=EAX), Operand(CREG, 4, reg=4))
    assert ins("0f2000").operands == (Operand(REG, 4, reg=EAX), Operand(CREG, 4, reg=0))  # mod ignored
    assert ins("0f21f8").operands[1] == Operand(DREG, 4, reg=7)
    assert ins("0f21e0").operands[1] == Operand(DREG, 4, reg=4)     # DR4 aliases DR6
    assert ins("660fc8").operands == (Operand(REG, 2, reg=EAX),)    # bswap r16 (undefined result)
    assert ins("0f4fc1").mnemonic == "cmovg" and ins("0f4fc1").cond == 15
    assert ins("0f92c0").mnemonic == "setb" and ins("0f92c0").cond == 2
    assert ins("7400").cond == 4 and ins("0f8400000000").opcode == 0x0F84
    assert ins("e3fe").cond == -1


def test_flags():
    assert ins("c3").flags & F_BRANCH and ins("e800000000").flags & F_BRANCH
    assert ins("ffe0").flags & F_BRANCH and ins("cd80").flags & F_BRANCH
    assert not ins("01c0").flags & F_BRANCH
    assert ins("f4").flags & F_STOP and ins("f4").flags & F_PRIVILEGED
    assert ins("8ed8").flags & F_STOP                           # mov ds, eax
    assert ins("17").flags & F_STOP and not ins("1e").flags & F_STOP   # pop ss / push ds
    assert ins("0f22d8").flags & F_STOP and ins("0f22d8").flags & F_PRIVILEGED
    assert ins("0f20d8").flags & F_PRIVILEGED                   # mov eax, cr3
    assert ins("0f32").flags & F_PRIVILEGED and not ins("0f31").flags & F_PRIVILEGED
    assert ins("fb").flags & F_STOP and ins("9d").flags & F_STOP
    assert ins("f3ab").flags & F_STRING and not ins("90").flags & F_STRING
