"""The x87 escapes D8-DF: every ModRM value, against iced-x86 and objdump.

iced-x86 follows what processors accept, so it decides which encodings are
defined (the blank cells of the SDM's tables A-7 to A-22 and the
undocumented aliases), the instruction length and the mnemonic.  objdump
then checks the disassembler's text for all of them.
"""
from __future__ import annotations

import itertools
import random

import pytest

from x86core import x87
from x86core.decoder import decode
from x86core.disasm import disassemble, format_instruction
from x86core.instruction import F_X87, MEM, STREG, Instruction, Undefined

from .test_disasm import allowed_difference, compare, needs_objdump

iced = pytest.importorskip("iced_x86")
MNEMONICS = {v: k.lower() for k, v in vars(iced.Mnemonic).items() if isinstance(v, int)}


def variants(bits: int) -> list[bytes]:
    """Every x87 opcode and ModRM byte, with SIB and displacement bytes after
    it (several SIB bytes, so base=5 with mod=0 and index=4 come up), and
    with the prefixes that change the operand's size or address."""
    rng = random.Random(87)
    out = []
    sibs = (0x00, 0x25, 0x24, 0x65, 0xE5, 0x4C, 0x9D, 0x20)
    for op, modrm in itertools.product(range(0xD8, 0xE0), range(256)):
        tails = [bytes([sib]) + bytes(rng.randrange(256) for _ in range(6)) for sib in sibs] \
            if modrm < 0xC0 else [b"\x90" * 6]
        for tail in tails:
            out.append(bytes([op, modrm]) + tail)
        out.append(bytes([0x66, op, modrm]) + tails[0])
        out.append(bytes([0x67, op, modrm]) + tails[0])
    return out


def iced_decode(code: bytes, bits: int):
    return iced.Decoder(bits, code).decode()


@pytest.mark.parametrize("bits", (32, 16))
def test_x87_lengths_and_mnemonics_match_iced(bits):
    compared = 0
    problems = []
    for code in variants(bits):
        theirs = iced_decode(code, bits)
        ours = decode(code, 0, bits)
        compared += 1
        if theirs.code == iced.Code.INVALID:
            if not isinstance(ours, Undefined):
                problems.append(f"{code.hex()}: iced rejects, we decode {ours}")
        elif not isinstance(ours, Instruction):
            problems.append(f"{code.hex()}: iced {MNEMONICS[theirs.mnemonic]}, we {ours}")
        elif (ours.length, ours.mnemonic) != (theirs.len, MNEMONICS[theirs.mnemonic]):
            problems.append(f"{code.hex()}: iced {MNEMONICS[theirs.mnemonic]}/{theirs.len}, "
                            f"we {ours.mnemonic}/{ours.length}")
        elif not ours.flags & F_X87:
            problems.append(f"{code.hex()}: not flagged F_X87")
    assert compared > 8 * 256 * 2
    assert not problems, f"{len(problems)} of {compared}:\n" + "\n".join(problems[:40])


def test_lock_prefix_is_undefined():
    for op in range(0xD8, 0xE0):
        for modrm in (0x00, 0xC1):
            code = bytes([0xF0, op, modrm, 0, 0, 0, 0])
            assert iced_decode(code, 32).code == iced.Code.INVALID
            assert isinstance(decode(code), Undefined)


def test_blank_cells_are_undefined():
    # A sample of what the SDM leaves blank: D9 /1, DB /4, DB /6, DD /5
    # memory forms; D9 D1, D9 E2, D9 EF, DA E0, DB E5, DB F8, DD F0, DE D8,
    # DF E1, DF F8.
    for hexcode in ("d908", "db20", "db30", "dd28", "d9d1", "d9e2", "d9ef", "dae0",
                    "dbe5", "dbf8", "ddf0", "ded8", "dfe1", "dff8"):
        assert isinstance(decode(bytes.fromhex(hexcode) + bytes(4)), Undefined), hexcode


def test_forms_table_shape():
    for (op, key), text in x87.FORMS.items():
        assert 0xD8 <= op <= 0xDF
        assert 0 <= key <= 15 or 0xC0 <= key <= 0xFF
        name = text.split()[0]
        assert name == name.lower()
        operands = text.split()[1].split(",") if " " in text else []
        if key < 8:     # memory forms: one memory operand
            assert len(operands) == 1 and operands[0][0] == "M", text
        else:
            assert set(operands) <= {"ST", "STi", "AX"}, text


def test_operands():
    cases = {
        "d900": ("fld", [(MEM, 4)]),
        "dd00": ("fld", [(MEM, 8)]),
        "db28": ("fld", [(MEM, 10)]),
        "df20": ("fbld", [(MEM, 10)]),
        "d920": ("fldenv", [(MEM, 0)]),
        "d928": ("fldcw", [(MEM, 2)]),
        "d8c1": ("fadd", [(STREG, 10), (STREG, 10)]),
        "d9c9": ("fxch", [(STREG, 10)]),
        "dbe3": ("fninit", []),
    }
    for hexcode, (name, ops) in cases.items():
        insn = decode(bytes.fromhex(hexcode))
        assert insn.mnemonic == name
        assert [(o.kind, o.size) for o in insn.operands] == ops
    assert [o.reg for o in decode(bytes.fromhex("dcc3")).operands] == [3, 0]
    assert [o.reg for o in decode(bytes.fromhex("d8c3")).operands] == [0, 3]


@needs_objdump
@pytest.mark.parametrize("bits", (32, 16))
def test_x87_text_matches_objdump(bits):
    raws = []
    for code in variants(bits):
        insn = decode(code, 0, bits)
        if isinstance(insn, Instruction) and not allowed_difference(insn.raw):
            raws.append(insn.raw)
    blob = b"".join(raws)
    compared, mismatches = compare(blob, bits, 0x1000)
    assert compared >= len(raws)
    assert not mismatches, "\n".join(mismatches)


@needs_objdump
@pytest.mark.parametrize("bits", (32, 16))
def test_fwait_then_x87_matches_objdump(bits):
    # objdump prints FWAIT + x87 as one instruction (fnstsw -> fstsw ...).
    raws = []
    for op, modrm in itertools.product(range(0xD8, 0xE0), range(0, 256, 3)):
        insn = decode(bytes([op, modrm, 0x24, 0x11, 0x22, 0x33, 0x44]), 0, bits)
        if isinstance(insn, Instruction):
            raws.append(b"\x9b" + insn.raw)
    compared, mismatches = compare(b"".join(raws) + b"\x9b", bits, 0)
    assert compared == len(raws) + 1 + sum(len(r) > 7 for r in raws)
    assert not mismatches, "\n".join(mismatches)


def test_known_texts():
    cases = {
        "d9c0": "fld    st(0)",
        "d8c7": "fadd   st,st(7)",
        "dcc7": "fadd   st(7),st",
        "dee9": "fsubp  st(1),st",
        "dce1": "fsubr  st(1),st",
        "dec1": "faddp  st(1),st",
        "d9e8": "fld1",
        "dbe2": "fnclex",
        "dbe0": "fneni(8087 only)",
        "dd7c2404": "fnstsw WORD PTR [esp+0x4]",
        "dd742404": "fnsave [esp+0x4]",
        "df2c24": "fild   QWORD PTR [esp]",
        "dfe0": "fnstsw ax",
        "d9d8": "(bad)",            # FSTP1: objdump does not know it
        "66d930": "fnstenvw [eax]",
    }
    for hexcode, text in cases.items():
        assert format_instruction(decode(bytes.fromhex(hexcode))) == text, hexcode
    assert [t for _, _, t in disassemble(bytes.fromhex("9bdd7c2404"))] == \
        ["fstsw  WORD PTR [esp+0x4]"]
