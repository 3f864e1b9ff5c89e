"""Differential test of the executor against Unicorn (QEMU's i386 TCG).

Both machines start from one random state in flat 32-bit protected mode at
CPL 0 -- eight random GPRs, random arithmetic flags and DF (IF set), random
bytes in a two-page data area -- run the same instruction bytes, and must
end in the same state: the eight GPRs, EIP, EFLAGS and the whole data area,
or the same exception with the state the exception leaves.

Instructions are generated from the decoder's own opcode tables
(x86core.decoder ONE_BYTE_FORMS / TWO_BYTE_FORMS and their groups), so every
form the decoder knows is covered, except the ones this harness cannot
compare: system and I/O instructions, segment-register loads, far
transfers, INT n, CPUID/RDTSC (ours differ by design), x87.  Prefixes are
random: operand size (66), address size (67, 16-bit addressing), segment
overrides, LOCK (legal or not), REP/REPNE on string instructions with
small counts and both directions.  Register values are then aimed so that
memory operands land in the data area (or, now and then, just past it or
anywhere, to compare faults).

Our side runs with paging on and only the code and data pages present, so
an access outside them is a #PF here and an unmapped access in Unicorn.

Flags: where the Intel SDM leaves a flag undefined our executor computes
what Unicorn computes where that is cheap (flags.py, semantics.py say
which), and those flags are compared like any other.  The few undefined
results we deliberately do differently are masked in UNDEFINED_DIFFERENT
below, each with its reason; Unicorn's departures from the SDM are in
UNICORN_WRONG.

Run the long version (200k+ cases) with
    .venv/bin/python -m pytest tests/x86core/test_executor_unicorn.py -m slow -s
UNICORN_CASES sets its size; the counts go to benchmarks/results/unicorn_diff.json.
"""
from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

unicorn = pytest.importorskip("unicorn")
from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED  # noqa: E402
from unicorn import (UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID, UC_ERR_READ_UNMAPPED,  # noqa: E402
                     UC_ERR_WRITE_UNMAPPED, UC_MEM_WRITE_UNMAPPED)
from unicorn import x86_const as X  # noqa: E402

from x86core import decoder as D  # noqa: E402
from x86core import flags as F  # noqa: E402
from x86core.cpu import CPU  # noqa: E402
from x86core.instruction import IMM, MEM, REG, Instruction  # noqa: E402

CODE = 0x1000                   # one page of code
DATA = 0x8000                   # two pages of data (below 64 KiB: 16-bit addressing reaches it)
DATA_SIZE = 0x2000
PAGE_DIR, PAGE_TABLE = 0x80000, 0x81000     # ours only: outside every mapped linear page
GDT = CODE + 0xF00              # Unicorn's: null, flat 32-bit code 0x08, flat 32-bit data 0x10
GDT_BYTES = bytes(8) + (0x00CF9B000000FFFF).to_bytes(8, "little") + (0x00CF93000000FFFF).to_bytes(8, "little")
M32 = 0xFFFFFFFF
UC_REGS = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
           X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
# EFLAGS bits compared: the arithmetic flags, DF, and what POPF can load at CPL 0.
COMPARED_FLAGS = F.ARITH | F.DF | F.IF | F.IOPL | F.NT | F.AC | F.ID
PF_VECTOR, UD_VECTOR, GP_VECTOR = 14, 6, 13

# -- what is generated ------------------------------------------------------------------------

# Not compared here: system and I/O instructions, far transfers, INT n, segment
# loads, instructions whose results differ by design (CPUID, RDTSC), x87.
EXCLUDED = frozenset({
    "in", "out", "ins", "outs", "hlt", "cli", "sti",
    "lgdt", "lidt", "sgdt", "sidt", "lldt", "sldt", "ltr", "str", "lmsw", "smsw", "clts",
    "invlpg", "invd", "wbinvd", "arpl", "lar", "lsl", "verr", "verw",
    "wrmsr", "rdmsr", "rdtsc", "cpuid",
    "retf", "iret", "iretw", "int", "int3", "into", "int1", "ud2",
    "les", "lds", "lss", "lfs", "lgs",
})
_NO_METHODS = {D.A_S, D.A_C, D.A_D, D.A_SEG, D.A_A}    # segment/control/debug regs, far pointers
STRING_OPS = frozenset({"movs", "cmps", "stos", "lods", "scas"})
SHIFTS = frozenset({"rol", "ror", "rcl", "rcr", "shl", "sal", "shr", "sar"})
BIT_TESTS = frozenset({"bt", "bts", "btr", "btc"})
JUMPS = frozenset({"jmp", "call", "ret", "loop", "loope", "loopne", "jcxz", "jecxz"} |
                  {f"j{c}" for c in D.opcodes.CONDITIONS})


class Form:
    """One opcode-map entry the generator can encode."""
    __slots__ = ("opcode", "reg", "mode", "names", "ops", "modrm", "lockable", "name")

    def __init__(self, opcode: bytes, reg, mode: str, form):
        self.opcode, self.reg, self.mode = opcode, reg, mode
        self.names = form.names
        self.ops = form.ops
        self.modrm = form.modrm
        self.name = form.names[1]
        self.lockable = self.name in D.opcodes.LOCKABLE and mode != "reg"

    def __repr__(self):
        reg = f"/{self.reg}" if self.reg is not None else ""
        return f"{self.opcode.hex()}{reg}{'' if self.mode == 'any' else ':' + self.mode}:{self.name}"


def _wanted(form) -> bool:
    if set(form.names) & EXCLUDED:
        return False
    methods = [m for m, _, _ in form.ops]
    if form.names[1] == "push" and methods == [D.A_SEG] or methods == [D.A_E, D.A_S]:
        return True     # segment register stores: both machines hold the same selectors
    if any(m in _NO_METHODS or s == D.S_P for m, s, _ in form.ops):
        return False
    return True


def _mode(form) -> str:
    methods = {m for m, _, _ in form.ops}
    if D.A_M in methods:
        return "mem"
    if D.A_R in methods:
        return "reg"
    return "any" if form.modrm else "none"


def all_forms() -> list[Form]:
    out = []
    for table, prefix in ((D.ONE_BYTE_FORMS, b""), (D.TWO_BYTE_FORMS, b"\x0f")):
        for op, form in enumerate(table):
            if form is None or (not prefix and op == 0x0F):
                continue
            opcode = prefix + bytes([op])
            if form.group is None:
                if _wanted(form):
                    out.append(Form(opcode, None, _mode(form), form))
                continue
            for reg, entry in enumerate(form.group):
                if isinstance(entry, tuple):
                    for sub, mode in zip(entry, ("mem", "reg")):
                        if sub is not None and _wanted(sub):
                            out.append(Form(opcode, reg, mode, sub))
                elif entry is not None and _wanted(entry):
                    out.append(Form(opcode, reg, _mode(entry), entry))
    return out


FORMS = all_forms()
# Encodings the decoder rejects, to compare #UD: empty group slots.
UNDEFINED_FORMS = [b"\xfe" + bytes([r << 3 | m]) for r in range(2, 8) for m in (0xC0, 0x03)] + \
                  [b"\xff\xf8", b"\xff\x3b", b"\xc6\xc8", b"\x0f\xba\x00\x05"]

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFF8000, 0xFFFFFF80)


def random_value(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.25:
        return rng.choice(INTERESTING)
    if r < 0.35:
        return rng.randrange(0, 64)
    if r < 0.45:
        return (-rng.randrange(1, 64)) & M32
    return rng.getrandbits(32)


def data_address(rng: random.Random, margin: int = 0x40) -> int:
    """Where a memory operand should land: mostly well inside the data area,
    sometimes across its inner page boundary, its ends, or anywhere."""
    r = rng.random()
    if r < 0.86:
        return DATA + rng.randrange(margin, DATA_SIZE - margin)
    if r < 0.92:
        return DATA + 0x1000 - rng.randrange(1, 9)            # split access, both pages present
    if r < 0.96:
        return DATA + DATA_SIZE - rng.randrange(1, 9)         # runs into the absent page
    if r < 0.98:
        return DATA - rng.randrange(1, 9)
    return rng.getrandbits(32)


class Case:
    """One generated test: code bytes and the starting state."""
    __slots__ = ("code", "regs", "eflags", "data", "steps", "insns", "what", "poison", "poison_before")

    def __init__(self, code, regs, eflags, data, steps, insns, what):
        self.code, self.regs, self.eflags, self.data = code, regs, eflags, data
        self.steps, self.insns, self.what = steps, insns, what
        self.poison = 0         # EFLAGS bits not compared at the end of a sequence
        self.poison_before = [0] * len(insns)   # ... and before each of its instructions

    def rep(self) -> bool:
        insn = self.insns[0]
        return isinstance(insn, Instruction) and insn.mnemonic in STRING_OPS and insn.rep != 0

    def describe(self) -> str:
        from x86core.disasm import format_instruction
        lines = []
        pos = 0
        for insn in self.insns:
            try:
                text = format_instruction(insn, CODE + pos)
            except Exception:
                text = getattr(insn, "mnemonic", type(insn).__name__)
            raw = getattr(insn, "raw", b"") or b""
            lines.append(f"  {CODE + pos:#x}: {raw.hex():<30} {text}")
            pos += getattr(insn, "length", 1)
        regs = " ".join(f"{n}={v:08x}" for n, v in zip(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"),
                                                        self.regs))
        return (f"{self.what}: {self.code.hex()}\n" + "\n".join(lines) +
                f"\n  {regs} eflags={self.eflags:08x}")


def encode(form: Form, rng: random.Random, *, seq: bool = False) -> bytes:
    """Random prefixes, then the opcode with a random ModRM/SIB/displacement
    fitting the form, then random immediate bytes (the decoder takes what the
    form needs; the rest is never reached)."""
    name = form.name
    prefixes = []
    if rng.random() < 0.3:
        prefixes.append(0x66)
    has_mem = form.modrm and form.mode != "reg"
    a16 = False
    if (has_mem or name in STRING_OPS or name == "xlat" or form.opcode[0] in (0xA0, 0xA1, 0xA2, 0xA3)
            or name in ("loop", "loope", "loopne", "jcxz", "jecxz")) and rng.random() < 0.25:
        prefixes.append(0x67)
        a16 = True
    if rng.random() < 0.15:
        prefixes.append(rng.choice((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65)))
    if name in STRING_OPS and rng.random() < 0.6:
        prefixes.append(rng.choice((0xF3, 0xF2)))
    out = bytearray(form.opcode)
    if form.opcode[0] in (0xA0, 0xA1, 0xA2, 0xA3) and len(form.opcode) == 1:
        addr = data_address(rng) if rng.random() < 0.95 else rng.getrandbits(32)
        out += (addr & 0xFFFF).to_bytes(2, "little") if a16 else addr.to_bytes(4, "little")
    elif form.modrm:
        reg = form.reg if form.reg is not None else rng.randrange(8)
        mode = form.mode
        if mode == "mem" and rng.random() < 0.03:
            mode = "reg"     # a register where memory is required: #UD
        if mode == "reg":
            mod = 3
        elif mode == "mem":
            mod = rng.randrange(3)
        else:
            mod = 3 if rng.random() < 0.5 else rng.randrange(3)
        rm = rng.randrange(8)
        if seq and mod != 3:
            # Within a sequence only registers nothing in it writes address memory.
            if a16:
                rm, mod = rng.choice(((7, 0), (7, 1), (6, 1), (6, 0), (4, 1), (5, 1)))
            else:
                rm = rng.choice((3, 5, 4, 6, 7))
                mod = rng.choice((1, 2)) if rm == 5 else rng.randrange(3)
        out.append(mod << 6 | reg << 3 | rm)
        if mod != 3:
            if not a16:
                if rm == 4:
                    if seq:
                        sib = rng.choice((4 << 3 | 4, 4 << 3 | 3, 4 << 3 | 5, 6 << 3 | 3 | rng.randrange(4) << 6))
                        if mod == 0 and sib & 7 == 5:
                            mod = 1
                            out[-1] |= 0x40
                    else:
                        sib = rng.getrandbits(8)
                    out.append(sib)
                    base5 = sib & 7 == 5
                else:
                    base5 = False
                if mod == 1:
                    out += rng.getrandbits(8).to_bytes(1, "little") if not seq else \
                        rng.randrange(-64, 64).to_bytes(1, "little", signed=True)
                elif mod == 2 or (mod == 0 and (rm == 5 or base5)):
                    if mod == 0 and (rm == 5 or (base5 and rng.random() < 0.8)):
                        disp = data_address(rng)
                    elif seq or rng.random() < 0.5:
                        disp = rng.randrange(-0x400, 0x400) & M32
                    else:
                        disp = rng.getrandbits(32)
                    out += disp.to_bytes(4, "little")
            else:
                if mod == 1:
                    out += rng.randrange(-64, 64).to_bytes(1, "little", signed=True)
                elif mod == 2 or (mod == 0 and rm == 6):
                    disp = data_address(rng) if mod == 0 else rng.getrandbits(16)
                    if seq and mod == 2:
                        disp = rng.randrange(-0x400, 0x400) & 0xFFFF
                    out += (disp & 0xFFFF).to_bytes(2, "little")
    out += rng.randbytes(8)
    # LOCK where it is legal, and now and then where it is not (#UD) -- but
    # never on a register form of a lockable instruction, nor on BT: those abort Unicorn.
    if form.lockable and form.modrm and out[len(form.opcode)] < 0xC0:
        if rng.random() < 0.3:
            prefixes.append(0xF0)
    elif form.name not in D.opcodes.LOCKABLE and form.name not in BIT_TESTS and rng.random() < 0.01:
        prefixes.append(0xF0)
    rng.shuffle(prefixes)
    return bytes(prefixes) + bytes(out)


def _set16(regs, n, value):
    regs[n] = regs[n] & 0xFFFF0000 | value & 0xFFFF


def aim(op, adsize: int, regs: list[int], target: int) -> None:
    """Choose base/index register values so the operand's address is near `target`."""
    base, index, scale, disp = op.base, op.index, op.scale, op.disp
    if adsize == 32:
        t = (target - disp) & M32
        if base >= 0 and index >= 0:
            if base == index:
                regs[base] = t // (1 + scale)
            else:
                regs[base] = (t - regs[index] * scale) & M32
        elif base >= 0:
            regs[base] = t
        elif index >= 0:
            regs[index] = t // scale
    else:
        t = (target - disp) & 0xFFFF
        if base >= 0 and index >= 0:
            _set16(regs, base, t - regs[index])
        elif base >= 0:
            _set16(regs, base, t)
        elif index >= 0:
            _set16(regs, index, t)


def prepare(insn, regs: list[int], rng: random.Random) -> None:
    """Bias the registers an instruction reads implicitly, then aim its memory operand."""
    if not isinstance(insn, Instruction):
        return
    name = insn.mnemonic
    a16 = insn.adsize == 16
    setter = (lambda n, v: _set16(regs, n, v)) if a16 else (lambda n, v: regs.__setitem__(n, v & M32))
    if name in ("leave", "enter") or rng.random() < 0.3:
        regs[5] = DATA + rng.randrange(0x200, DATA_SIZE - 0x200)
    if name in STRING_OPS:
        for n in (6, 7):
            setter(n, data_address(rng, 0x80))
        if insn.rep and rng.random() < 0.95:
            setter(1, rng.randrange(0, 9))
    if name == "xlat":
        setter(3, data_address(rng, 0x100) - (regs[0] & 0xFF))
    if name in ("loop", "loope", "loopne", "jcxz", "jecxz") and rng.random() < 0.5:
        regs[1] = rng.choice((0, 1, 2, 0x10000, 0x10001))
    if name in SHIFTS | {"shld", "shrd"} and rng.random() < 0.7:
        regs[1] = regs[1] & ~0xFF | rng.randrange(0, 34)
    if name in BIT_TESTS and len(insn.operands) == 2 and insn.operands[1].kind == REG and rng.random() < 0.8:
        size = insn.operands[1].size
        regs[insn.operands[1].reg] = rng.randrange(-64, 96) & (0xFFFF if size == 2 else M32)
    if name in ("div", "idiv") and rng.random() < 0.7:
        size = insn.operands[0].size
        if size == 1:
            regs[0] = regs[0] & ~0xFF00 | rng.randrange(0, 4) << 8
        else:
            high = rng.choice((0, 1, 0xFFFFFFFF, rng.randrange(0, 256)))
            if name == "idiv" and rng.random() < 0.5:
                high = M32 if regs[0] & (0x80000000 if size == 4 else 0x8000) else 0
            regs[2] = (regs[2] & ~0xFFFF | high & 0xFFFF) if size == 2 else high & M32
    if name in ("cmpxchg", "cmpxchg8b") and rng.random() < 0.3:
        if insn.operands[0].kind == REG:
            regs[0] = regs[insn.operands[0].reg]
    for op in insn.operands:
        if op.kind == MEM and name not in STRING_OPS and name != "xlat" and (op.base >= 0 or op.index >= 0):
            if rng.random() < 0.97:
                aim(op, insn.adsize, regs, data_address(rng))


def effective_address(op, adsize: int, regs: list[int]) -> int:
    mask = M32 if adsize == 32 else 0xFFFF
    ea = op.disp
    if op.base >= 0:
        ea += regs[op.base]
    if op.index >= 0:
        ea += regs[op.index] * op.scale
    return ea & mask


def match_memory(insn, regs: list[int], data: bytearray, rng: random.Random) -> None:
    """Now and then make the comparisons against memory come out equal (CMPXCHG,
    CMPXCHG8B) or the BOUND check pass, by setting registers from the data."""
    if not isinstance(insn, Instruction) or insn.mnemonic not in ("cmpxchg", "cmpxchg8b", "bound"):
        return
    mem = next((op for op in insn.operands if op.kind == MEM), None)
    if mem is None or rng.random() < 0.5:
        return
    at = effective_address(mem, insn.adsize, regs) - DATA
    if not 0 <= at < DATA_SIZE - 16:
        return
    size = mem.size if insn.mnemonic != "bound" else mem.size // 2
    value = int.from_bytes(data[at:at + size], "little")
    if insn.mnemonic == "cmpxchg":
        regs[0] = regs[0] & ~MASK_OF[size] | value
    elif insn.mnemonic == "cmpxchg8b":
        regs[0], regs[2] = value & M32, value >> 32
    else:
        sign = 1 << (size * 8 - 1)
        lo = (value ^ sign) - sign
        hi_raw = int.from_bytes(data[at + size:at + 2 * size], "little")
        hi = (hi_raw ^ sign) - sign
        if lo <= hi:
            reg = insn.operands[0].reg
            regs[reg] = regs[reg] & ~MASK_OF[size] | rng.randint(lo, hi) & MASK_OF[size]


MASK_OF = {1: 0xFF, 2: 0xFFFF, 4: M32}


def random_eflags(rng: random.Random) -> int:
    return rng.getrandbits(12) & (F.ARITH | F.DF) | F.IF | F.RESERVED_ONE


def random_data(rng: random.Random) -> bytearray:
    data = bytearray(rng.randbytes(DATA_SIZE))
    for _ in range(32):      # a few interesting words
        at = rng.randrange(0, DATA_SIZE - 4)
        data[at:at + 4] = rng.choice(INTERESTING).to_bytes(4, "little")
    return data


def single_case(form: Form, rng: random.Random) -> Case:
    code = encode(form, rng)
    insn = D.decode(code, 0, 32)
    regs = [random_value(rng) for _ in range(8)]
    regs[4] = DATA + rng.randrange(0x400, DATA_SIZE - 0x400) & ~(0 if rng.random() < 0.2 else 3)
    if rng.random() < 0.02:
        regs[4] = data_address(rng)     # the stack may run off the data area
    prepare(insn, regs, rng)
    data = random_data(rng)
    match_memory(insn, regs, data, rng)
    if isinstance(insn, Instruction) and insn.mnemonic in ("popf", "popfw"):
        sp = regs[4] - DATA
        if 0 <= sp < DATA_SIZE - 1:
            data[sp + 1] &= ~0x01       # TF: single-step traps are not compared
    length = insn.length if isinstance(insn, Instruction) else len(code)
    return Case(code[:length] if isinstance(insn, Instruction) else code, regs, random_eflags(rng),
                data, 1, [insn], repr(form))


def undefined_case(code: bytes, rng: random.Random) -> Case:
    # Registers point into the data area: QEMU loads a memory operand before
    # it finds the encoding undefined, and only #UD is compared here.
    regs = [DATA + rng.randrange(0x100, DATA_SIZE - 0x100) for _ in range(8)]
    return Case(code + rng.randbytes(6), regs, random_eflags(rng), random_data(rng), 1,
                [D.decode(code + bytes(8), 0, 32)], "undefined " + code.hex())


# -- sequences ---------------------------------------------------------------------------------
# EBX, EBP, ESI, EDI point into the data area for the whole sequence and ESP
# moves only by pushes and pops, so instructions that would write them as a
# destination are left out; EAX ECX EDX carry the arithmetic.
_ADDRESS_REGS = {1: (3, 7), 2: (3, 4, 5, 6, 7), 4: (3, 4, 5, 6, 7)}
# CMPXCHG8B: Unicorn's helper reads its lazy flags without bringing them up to
# date, so after another flag writer in the same block it merges ZF into stale
# flags (single steps still compare it).
_SEQ_EXCLUDED = frozenset({"popa", "popaw", "leave", "enter", "popf", "popfw", "ret", "bound",
                           "cmpxchg8b"})


def _writes_address_reg(insn: Instruction) -> bool:
    ops = insn.operands
    targets = list(ops[:1])
    if insn.mnemonic in ("xchg", "xadd"):
        targets = list(ops)
    if insn.mnemonic in ("mul", "imul", "div", "idiv") and len(ops) == 1 and ops[0].size == 1:
        return False
    return any(o.kind == REG and o.reg in _ADDRESS_REGS.get(o.size, ()) for o in targets)


SEQ_FORMS = [f for f in FORMS if f.name not in _SEQ_EXCLUDED and f.name not in JUMPS
             and not (f.opcode in (b"\xf6", b"\xf7") and f.reg == 1)]    # see unicorn_wrong
# Short forward jumps.  Not LOOPE/LOOPNE: when ECX runs out Unicorn leaves
# with its lazy flags out of step and the flags of the instructions before
# are lost (single steps still compare them).
JUMP_FORMS = [f for f in FORMS if f.name in JUMPS and f.mode == "none"
              and f.name not in ("ret", "loope", "loopne")
              and f.opcode[-1] not in (0xE8, 0xE9) and len(f.opcode) == 1]


# Flags whose values after an instruction are ours to choose and differ from
# Unicorn's (see undefined_flag_mask) are "poisoned" through a sequence: no
# later instruction may read them, and they are not compared at its end.
_ALL_FLAG_WRITERS = frozenset({
    "add", "sub", "cmp", "and", "or", "xor", "test", "neg", "adc", "sbb", "cmpxchg", "xadd",
    "mul", "imul", "daa", "das", "aam", "aad", "bsf", "bsr", "cmps", "scas", "popf", "popfw"})
_CC_READS = (F.OF, F.CF, F.ZF, F.CF | F.ZF, F.SF, F.PF, F.SF | F.OF, F.ZF | F.SF | F.OF)
_READS = {"adc": F.CF, "sbb": F.CF, "rcl": F.CF, "rcr": F.CF, "salc": F.CF, "cmc": F.CF,
          "daa": F.CF | F.AF, "das": F.CF | F.AF, "aaa": F.AF, "aas": F.AF,
          "pushf": F.ARITH, "pushfw": F.ARITH, "lahf": F.ARITH, "loope": F.ZF, "loopne": F.ZF}


def flags_read(insn: Instruction) -> int:
    if insn.cond >= 0:
        return _CC_READS[insn.cond >> 1]
    return _READS.get(insn.mnemonic, 0)


def poison_after(insn: Instruction, poison: int) -> int:
    """The poisoned flags after `insn`, given those before it."""
    name = insn.mnemonic
    if name in BIT_TESTS:
        return poison & ~F.CF | undefined_flag_mask(insn, [])
    if name in SHIFTS or name in ("shld", "shrd"):
        count = insn.operands[-1]
        n = count.imm & 0x1F if count.kind == IMM else 0
        if name in ("rcl", "rcr"):
            n %= insn.operands[0].size * 8 + 1
        if n == 0:
            return poison           # a zero count (or CL) may write nothing
        return poison & ~(F.CF | F.OF) if name in ("rol", "ror", "rcl", "rcr") else 0
    if name in ("cmps", "scas") and insn.rep:
        return poison               # zero iterations write nothing
    if name in _ALL_FLAG_WRITERS:
        return 0
    if name in ("aaa", "aas"):
        return poison & (F.OF | F.SF | F.ZF | F.PF)
    if name in ("inc", "dec"):
        return poison & F.CF
    if name in ("clc", "stc", "cmc"):
        return poison & ~F.CF
    if name in ("sahf",):
        return poison & F.OF
    return poison


def sequence_case(rng: random.Random, length: int) -> Case:
    """2-20 instructions without control flow, or with short forward jumps."""
    pieces: list[bytes] = []
    insns = []
    jumps = []          # (index, skip count)
    poison = 0
    before = []
    pending: dict[int, int] = {}    # instruction index -> poison arriving there by a jump
    while len(pieces) < length:
        poison |= pending.pop(len(pieces), 0)
        if pieces and rng.random() < 0.08:
            form = rng.choice(JUMP_FORMS)
            prefix = b"\x67" if form.name in ("loop", "loope", "loopne", "jcxz") and rng.random() < 0.2 else b""
            piece = prefix + form.opcode + b"\x00"
            insn = D.decode(piece, 0, 32)
            if flags_read(insn) & poison:
                continue
            skip = rng.randrange(0, 4)
            target = len(pieces) + 1 + skip
            pending[target] = pending.get(target, 0) | poison
            jumps.append((len(pieces), skip))
            before.append(poison)
            pieces.append(piece)
            insns.append(insn)
            continue
        form = rng.choice(SEQ_FORMS)
        code = encode(form, rng, seq=True)
        insn = D.decode(code, 0, 32)
        if not isinstance(insn, Instruction) or _writes_address_reg(insn) or flags_read(insn) & poison:
            continue
        if insn.mnemonic in ("bswap",) and insn.opsize == 16 or insn.mnemonic == "neg" and insn.lock:
            continue        # results that differ on purpose (see unicorn_wrong, undefined_register_mask)
        before.append(poison)
        poison = poison_after(insn, poison)
        pieces.append(code[:insn.length])
        insns.append(insn)
    for target, more in pending.items():   # jumps past the end
        poison |= more
    # Point each jump forward over up to `skip` instructions (clipped to the end).
    for index, skip in jumps:
        skip = min(skip, len(pieces) - index - 1)
        rel = sum(len(p) for p in pieces[index + 1:index + 1 + skip])
        pieces[index] = pieces[index][:-1] + bytes([rel])
        insns[index] = D.decode(pieces[index], 0, 32)
    regs = [random_value(rng) for _ in range(8)]
    regs[4] = DATA + rng.randrange(0x800, 0x1800) & ~3
    for n in (3, 5, 6, 7):
        regs[n] = DATA + rng.randrange(0x600, DATA_SIZE - 0x600)
    regs[1] = regs[1] & ~0xFFFF | rng.randrange(0, 40) if rng.random() < 0.6 else regs[1]
    if rng.random() < 0.5:
        regs[2] = rng.choice((0, 1, 0xFFFFFFFF))
    code = b"".join(pieces)
    case = Case(code, regs, random_eflags(rng), random_data(rng), len(pieces), insns, f"sequence of {len(pieces)}")
    case.poison = poison
    case.poison_before = before
    return case


# -- the two machines ------------------------------------------------------------------------

class Outcome:
    __slots__ = ("regs", "eip", "eflags", "data", "vector", "fault_addr", "partial_write")

    def __init__(self, regs, eip, eflags, data, vector, fault_addr=None, partial_write=False):
        self.regs, self.eip, self.eflags, self.data = regs, eip, eflags, data
        self.vector, self.fault_addr, self.partial_write = vector, fault_addr, partial_write


HLT = 0xF4


def code_page(code: bytes) -> bytes:
    """The code, HLTs to the GDT, the GDT: the same page on both machines."""
    return code + bytes([HLT]) * (GDT - CODE - len(code)) + GDT_BYTES + bytes(4096 - 0xF00 - len(GDT_BYTES))


class Ours:
    def __init__(self):
        cpu = self.cpu = CPU(1 << 20)
        cpu.load_flat_segments()
        pt = bytearray(4096)
        for page in [CODE] + list(range(DATA, DATA + DATA_SIZE, 4096)):
            pt[(page >> 12) * 4:(page >> 12) * 4 + 4] = (page | 7).to_bytes(4, "little")
        cpu.mem.load(PAGE_TABLE, bytes(pt))
        cpu.mem.load(PAGE_DIR, (PAGE_TABLE | 7).to_bytes(4, "little"))
        cpu.write_cr(3, PAGE_DIR)
        cpu.write_cr(0, cpu.cr0 | 0x80000000)
        self._last_vector = None
        cpu.exception_hook = self._exception

    def _exception(self, cpu, exc) -> bool:
        self._last_vector = exc.vector
        return False            # not delivered: the run stops with the state at the fault

    def run(self, case: Case, cache: bool | str) -> Outcome:
        """cache: False (one instruction at a time), "threaded" (the zeroth
        tier where it takes the code), True (first-tier blocks) or "hot"
        (every block compiled as the second tier)."""
        cpu = self.cpu
        cpu.blocks.flush()
        cpu.mem.load(CODE, code_page(case.code))
        cpu.mem.load(DATA, bytes(case.data))
        cpu.regs[:] = case.regs
        cpu.eip = CODE
        cpu.set_eflags(case.eflags)
        cpu.halted = False
        cpu.cr2 = 0
        cpu.blocks.enabled = bool(cache)
        cpu.blocks.hot_from_start = cache == "hot"
        cpu.blocks.threaded = cache == "threaded"
        vector = None
        self._last_vector = None
        why = cpu.run(max_instructions=case.steps)
        # A block may run on into the HLT after the code; Unicorn stops on it.
        eip = cpu.eip - 1 if cpu.halted else cpu.eip
        if why == "exception":
            vector = self._last_vector
        elif why not in ("limit", "halt"):
            raise AssertionError(f"our run ended with {why!r}")
        return Outcome(list(cpu.regs), eip, cpu.get_eflags(), cpu.mem.dump(DATA, DATA_SIZE), vector,
                       cpu.cr2 if vector == PF_VECTOR else None)


class Unicorn:
    def __init__(self):
        uc = self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map(CODE, 0x1000)
        uc.mem_map(DATA, DATA_SIZE)
        self.interrupts = []
        self.unmapped = []
        uc.hook_add(UC_HOOK_INTR, self._intr)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._unmapped)
        # Unicorn's 32-bit mode starts with null selectors and a 16-bit SS:
        # load ours, flat 32-bit code 0x08 and data 0x10, from a GDT.
        uc.mem_write(GDT, GDT_BYTES)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, len(GDT_BYTES) - 1, 0))
        for reg in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(reg, 0x10)
        uc.reg_write(X.UC_X86_REG_CS, 0x08)
        # An exception stopped from its hook stays pending in Unicorn; every
        # case starts from this saved context instead.
        self.context = uc.context_save()

    def _intr(self, uc, number, _):
        self.interrupts.append(number)
        uc.emu_stop()

    def _unmapped(self, uc, access, address, size, value, _):
        self.unmapped.append((access, address, size))
        return False

    def run(self, case: Case) -> Outcome:
        uc = self.uc
        uc.context_restore(self.context)
        self.interrupts.clear()
        self.unmapped.clear()
        uc.mem_write(CODE, code_page(case.code))
        uc.ctl_flush_tb()
        uc.mem_write(DATA, bytes(case.data))
        for r, v in zip(UC_REGS, case.regs):
            uc.reg_write(r, v)
        uc.reg_write(X.UC_X86_REG_EIP, CODE)
        uc.reg_write(X.UC_X86_REG_EFLAGS, case.eflags)
        err = None
        try:
            if case.steps == 1 and not case.rep():
                uc.emu_start(CODE, 0xFFFFF000, count=1)
            else:
                # Unicorn counts each REP iteration as an instruction.
                uc.emu_start(CODE, CODE + len(case.code))
        except UcError as e:
            err = e.errno
        eip = uc.reg_read(X.UC_X86_REG_EIP)
        vector = None
        fault_addr = None
        partial = False
        if self.interrupts:
            vector = self.interrupts[0]
        elif err in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED):
            vector = PF_VECTOR
            access, fault_addr, size = self.unmapped[0]
            # Unicorn writes a page-crossing store byte by byte up to the
            # absent page; the processor writes nothing.
            partial = access == UC_MEM_WRITE_UNMAPPED and fault_addr & 0xFFF == 0
        elif err == UC_ERR_FETCH_UNMAPPED:
            if eip == CODE:
                vector = PF_VECTOR
            # else: a jump out of the code page completed; the fetch after it failed
        elif err == UC_ERR_INSN_INVALID:
            vector = UD_VECTOR
        elif err is not None:
            vector = -1         # some exception Unicorn does not name
        regs = [uc.reg_read(r) for r in UC_REGS]
        return Outcome(regs, eip, uc.reg_read(X.UC_X86_REG_EFLAGS),
                       bytes(uc.mem_read(DATA, DATA_SIZE)), vector, fault_addr, partial)


# -- comparing ----------------------------------------------------------------------------------

# Results the Intel SDM leaves undefined and our executor deliberately
# computes differently from Unicorn: they are not compared.
def undefined_flag_mask(insn, regs: list[int]) -> int:
    """EFLAGS bits we do not compare after `insn` from register state `regs`."""
    if not isinstance(insn, Instruction):
        return 0
    name = insn.mnemonic
    if name in BIT_TESTS:
        # OF SF AF PF are undefined after BT*; QEMU recomputes or keeps them
        # depending on which instruction set the flags before (its lazy
        # CC_OP), which nothing cheap can mirror.  We keep them unchanged.
        return F.OF | F.SF | F.AF | F.PF
    return 0


def undefined_register_mask(insn, regs: list[int]) -> dict[int, int]:
    """Register bits whose value the SDM leaves undefined and we compute differently."""
    if not isinstance(insn, Instruction):
        return {}
    name = insn.mnemonic
    if name == "bswap" and insn.opsize == 16:
        # BSWAP r16 is undefined; processors clear the low word (we do), QEMU
        # swaps the whole 32-bit register.
        return {insn.operands[0].reg: M32}
    return {}


def instruction_index(case: Case, eip: int) -> int:
    at = CODE
    for i, insn in enumerate(case.insns):
        if at >= eip:
            return i
        at += insn.length
    return len(case.insns) - 1


def differences(case: Case, ours: Outcome, ref: Outcome, cache: bool) -> list[str]:
    diffs = []
    last = case.insns[-1] if case.steps == 1 else None
    if ours.vector != ref.vector:
        if not (ref.vector == -1 and ours.vector is not None) and \
                not (ref.vector == 8 and ours.vector == GP_VECTOR):
            diffs.append(f"exception: ours {ours.vector} unicorn {ref.vector}")
            return diffs
    reg_mask = undefined_register_mask(last, case.regs) if ref.vector is None else {}
    names = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
    for n in range(8):
        mask = M32 & ~reg_mask.get(n, 0)
        if (ours.regs[n] ^ ref.regs[n]) & mask:
            diffs.append(f"{names[n]}: ours {ours.regs[n]:08x} unicorn {ref.regs[n]:08x}")
    if ours.eip != ref.eip:
        diffs.append(f"eip: ours {ours.eip:08x} unicorn {ref.eip:08x}")
    flag_mask = COMPARED_FLAGS
    if ref.vector is None:
        flag_mask &= ~undefined_flag_mask(last, case.regs) & ~case.poison
    elif case.steps > 1:
        flag_mask &= ~case.poison_before[instruction_index(case, ref.eip)]
    if (ours.eflags ^ ref.eflags) & flag_mask:
        diffs.append(f"eflags: ours {ours.eflags:08x} unicorn {ref.eflags:08x} "
                     f"(differ {(ours.eflags ^ ref.eflags) & flag_mask:#x})")
    if ours.data != ref.data:
        first = next(i for i in range(DATA_SIZE) if ours.data[i] != ref.data[i])
        last_diff = max(i for i in range(DATA_SIZE) if ours.data[i] != ref.data[i])
        # Unicorn's partial page-crossing store (see Unicorn.run) is not
        # compared; that ours wrote nothing is checked below for single steps.
        if not (ref.partial_write and ref.fault_addr is not None
                and DATA + last_diff < ref.fault_addr and DATA + first >= ref.fault_addr - 8):
            diffs.append(f"memory differs at {DATA + first:#x}..{DATA + last_diff:#x}: ours "
                         f"{ours.data[first:last_diff + 1][:16].hex()} unicorn {ref.data[first:last_diff + 1][:16].hex()}")
    if ours.vector == PF_VECTOR and ref.vector == PF_VECTOR and ref.fault_addr is not None \
            and ours.fault_addr != ref.fault_addr:
        diffs.append(f"cr2: ours {ours.fault_addr:#x} unicorn {ref.fault_addr:#x}")
    if ours.vector is not None and case.steps == 1 and isinstance(last, Instruction) \
            and not (last.mnemonic in STRING_OPS and last.rep):
        # A fault leaves everything as before the instruction -- except the
        # free stack below ESP, which ENTER and PUSHA may have begun to fill
        # (as processors and Unicorn do).
        frame = last.mnemonic in ("enter", "pusha", "pushaw")
        if ours.regs != case.regs or ours.eip != CODE or (ours.eflags ^ case.eflags) & COMPARED_FLAGS \
                or ours.data != bytes(case.data) and not frame:
            diffs.append("our fault did not leave the state unchanged")
    return diffs


# Where Unicorn departs from the SDM (or from the processors), ours follows
# the SDM; each entry says why.
def unicorn_wrong(case: Case, ours: Outcome, ref: Outcome, diffs: list[str]) -> str | None:
    """The reason this difference is Unicorn's error, or None."""
    insn = case.insns[0] if case.steps == 1 else None
    if isinstance(insn, D.Undefined) and "LOCK" in insn.reason and ours.vector == UD_VECTOR \
            and ref.vector != UD_VECTOR:
        # LOCK on a register destination or a non-lockable instruction is #UD
        # (SDM Vol. 2 LOCK), raised at decode, before any memory access or #DE;
        # QEMU accepts LOCK XCHG reg,reg and raises other faults before checking.
        return "LOCK checked late/not at all"
    if isinstance(insn, Instruction) and insn.mnemonic == "test" and insn.opcode in (0xF6, 0xF7) \
            and insn.modrm >> 3 & 7 == 1 and ref.vector == UD_VECTOR and ours.vector is None:
        # F6/F7 /1 is TEST on every processor (AMD documents it, Intel's decode
        # it the same); QEMU raises #UD.
        return "F6/F7 /1 TEST alias"
    if isinstance(insn, Instruction) and insn.mnemonic == "ret" and insn.operands \
            and insn.operands[0].imm & 0x8000 and len(diffs) == 1 and diffs[0].startswith("esp") \
            and (ours.regs[4] - ref.regs[4]) & M32 == 0x10000:
        # RET imm16 releases imm16 bytes, zero-extended (SDM RET); QEMU sign-extends it.
        return "RET imm16 sign-extended"
    if isinstance(insn, Instruction) and insn.mnemonic == "cmps" and diffs \
            and all(d.startswith("cr2") for d in diffs):
        # Both operands absent: we read DS:ESI first (the SDM's SRC1), QEMU
        # ES:EDI; the SDM fixes no order between the two reads.
        return "CMPS read order"
    if isinstance(insn, Instruction) and insn.mnemonic == "neg" and insn.lock \
            and all(d.startswith("eflags") for d in diffs):
        # LOCK NEG: QEMU takes SF ZF PF from the operand before negation.
        return "LOCK NEG flags from the old value"
    return None


class Differ:
    """Runs cases on both machines and keeps the score."""

    def __init__(self):
        self.ours = Ours()
        self.ref = Unicorn()
        self.cases = Counter()
        self.mismatches: list[tuple[Case, list[str], bool]] = []
        self.by_what = Counter()
        self.allowlisted = Counter()

    def check(self, case: Case, cache: bool = False) -> list[str]:
        ref = self.ref.run(case)
        ours = self.ours.run(case, cache)
        kind = "sequence" if case.steps > 1 else "single"
        self.cases[kind] += 1
        if ref.vector is not None:
            self.cases[kind + " faulting"] += 1
        diffs = differences(case, ours, ref, cache)
        reason = unicorn_wrong(case, ours, ref, diffs) if diffs else None
        if diffs and not reason and ref.vector is not None and case.steps > 1 \
                and all(d.startswith("eflags") for d in diffs) and ref.eip > CODE:
            # Unicorn loses lazily kept flags (ADC/SBB's carry-in, ...) when a
            # later instruction of its block faults; the same code stopped
            # just before the fault shows what the flags were.
            before = Case(case.code[:ref.eip - CODE], case.regs, case.eflags, case.data,
                          2, case.insns, case.what)
            stopped = self.ref.run(before)
            if stopped.vector is None and not (stopped.eflags ^ ours.eflags) & COMPARED_FLAGS \
                    & ~case.poison_before[instruction_index(case, ref.eip)]:
                reason = "Unicorn's flags at a fault later in its block"
        if reason:
            self.allowlisted[reason] += 1
            diffs = []
        if diffs:
            self.cases[kind + " mismatches"] += 1
            self.mismatches.append((case, diffs, cache))
            self.by_what[case.what if case.steps == 1 else "sequence"] += 1
        return diffs

    def report(self, limit: int = 10) -> str:
        out = []
        for case, diffs, cache in self.mismatches[:limit]:
            out.append(case.describe() + f"  cache={cache if cache in ('hot', 'threaded') else 'on' if cache else 'off'}"
                       "\n    " + "\n    ".join(diffs))
        return "\n".join(out)


_DIFFER = None
TOTALS = Counter()


def differ() -> Differ:
    global _DIFFER
    if _DIFFER is None:
        _DIFFER = Differ()
    return _DIFFER


def _run(cases, cache=False):
    d = differ()
    before = len(d.mismatches)
    for case in cases:
        d.check(case, cache)
        TOTALS["cases"] += 1
    new = d.mismatches[before:]
    TOTALS["mismatches"] += len(new)
    assert not new, f"{len(new)} mismatches:\n" + "\n".join(
        c.describe() + "\n    " + "\n    ".join(diffs) for c, diffs, _ in new[:8])


# -- the tests ------------------------------------------------------------------------------------

PER_FORM = int(os.environ.get("UNICORN_PER_FORM", "100"))


@pytest.mark.parametrize("form", FORMS, ids=repr)
def test_form(form):
    """Every generated form, single-stepped with the cache off, and (fewer
    cases) as threaded code, the tier most code first runs in."""
    rng = random.Random(f"{form!r}")
    _run(single_case(form, rng) for _ in range(PER_FORM))
    _run((single_case(form, rng) for _ in range(max(PER_FORM // 4, 1))), cache="threaded")


def test_undefined_encodings():
    rng = random.Random(6)
    _run(undefined_case(code, rng) for code in UNDEFINED_FORMS for _ in range(3))


@given(index=st.integers(0, len(FORMS) - 1), seed=st.integers(0, 2 ** 32 - 1))
def test_single_hypothesis(index, seed):
    _run([single_case(FORMS[index], random.Random(seed))])


@given(seed=st.integers(0, 2 ** 32 - 1), length=st.integers(2, 20),
       tier=st.sampled_from(["threaded", True, "hot"]))
def test_sequence_hypothesis(seed, length, tier):
    _run([sequence_case(random.Random(seed), length)], cache=tier)


@pytest.mark.parametrize("cache", ["threaded", True, "hot"], ids=["threaded", "first-tier", "hot"])
def test_sequences(cache):
    """Blocks of several instructions (cache on: as threaded code, as
    first-tier blocks, and as the second tier's code) against Unicorn's count=N."""
    rng = random.Random(1234)
    _run((sequence_case(rng, rng.randrange(2, 21)) for _ in range(int(os.environ.get("UNICORN_SEQUENCES", "1500")))),
         cache=cache)


def test_zz_summary():
    """Prints the counts of this session (run with -s to see them)."""
    d = differ()
    print(f"\nunicorn differential: {sum(v for k, v in d.cases.items() if ' ' not in k)} cases "
          f"({dict(d.cases)}), {len(d.mismatches)} mismatches; "
          f"allowlisted (Unicorn wrong): {dict(d.allowlisted)}")


@pytest.mark.slow
def test_big_run():
    """>= 200k cases: every form in turn with random states, and sequences."""
    total = int(os.environ.get("UNICORN_CASES", "200000"))
    seed = int(os.environ.get("UNICORN_SEED", "20240601"))
    rng = random.Random(seed)
    d = Differ()
    start = time.time()
    singles = sequences = 0
    for i in range(total):
        if i % 10 == 9:
            d.check(sequence_case(rng, rng.randrange(2, 21)),
                    cache=("threaded", True, "hot")[i // 10 % 3])
            sequences += 1
        else:
            r = rng.random()
            d.check(single_case(FORMS[i % len(FORMS)], rng),
                    cache="hot" if r < 0.05 else "threaded" if r < 0.15 else r < 0.2)
            singles += 1
    for code in UNDEFINED_FORMS:
        for _ in range(20):
            d.check(undefined_case(code, rng))
    elapsed = time.time() - start
    result = {"seed": seed, "cases": dict(d.cases), "mismatches": len(d.mismatches),
              "allowlisted": dict(d.allowlisted),
              "by_form": dict(d.by_what.most_common(40)), "seconds": round(elapsed, 1),
              "forms": len(FORMS)}
    out = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "unicorn_diff.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps(result, indent=2))
    assert not d.mismatches, d.report()
