"""Table-driven i386 instruction decoder.

Follows the instruction format of the Intel SDM Vol. 2 ch. 2 (prefixes, opcode,
ModRM, SIB, displacement, immediate) and the opcode maps in `opcodes.py`.  The
maps are compiled once, at import, into small tuples; `decode` then walks the
bytes with no string handling.  Undefined encodings come back as `Undefined`
(#UD, or #GP for more than 15 bytes), input that stops mid-instruction as
`NeedMore`; nothing here raises on any byte string.
"""
from __future__ import annotations

from . import opcodes, x87
from .instruction import (CREG, DREG, FAR, IMM, MEM, REG, REL, SREG, STREG,
                          F_BRANCH, F_PRIVILEGED, F_STOP, F_STRING, F_X87,
                          Instruction, NeedMore, Operand, Undefined,
                          DS, ES, SS)

MAX_LENGTH = 15

# Addressing methods.
(A_E, A_G, A_M, A_R, A_S, A_C, A_D, A_I, A_J, A_O, A_A, A_X, A_Y, A_Z,
 A_REG, A_SEG, A_ONE, A_ST, A_STI) = range(19)
# Size codes: positive is a fixed size in bytes, negative depends on prefixes.
S_V, S_P, S_A, S_Y, S_BS = -1, -2, -3, -4, -5
_SIZES = {"b": 1, "w": 2, "d": 4, "q": 8, "s": 6, "t": 10, "v": S_V, "z": S_V,
          "p": S_P, "a": S_A, "y": S_Y, "bs": S_BS, "": 0}
_FIXED_REGS = {
    "AL": (1, 0), "CL": (1, 1), "DL": (1, 2), "BL": (1, 3),
    "AH": (1, 4), "CH": (1, 5), "DH": (1, 6), "BH": (1, 7),
    "AX": (2, 0), "CX": (2, 1), "DX": (2, 2), "BX": (2, 3),
    "eAX": (S_V, 0), "eCX": (S_V, 1), "eDX": (S_V, 2), "eBX": (S_V, 3),
    "eSP": (S_V, 4), "eBP": (S_V, 5), "eSI": (S_V, 6), "eDI": (S_V, 7),
}
_SEGS = {"ES": 0, "CS": 1, "SS": 2, "DS": 3, "FS": 4, "GS": 5}
_MODRM_METHODS = {A_E, A_G, A_M, A_R, A_S, A_C, A_D}


def _parse_operand(spec: str) -> tuple[int, int, int]:
    """One operand spec -> (method, size code, fixed register number)."""
    if spec in _FIXED_REGS:
        size, reg = _FIXED_REGS[spec]
        return A_REG, size, reg
    if spec in _SEGS:
        return A_SEG, 2, _SEGS[spec]
    if spec == "1":
        return A_ONE, 1, 0
    if spec == "ST":
        return A_ST, 10, 0
    if spec == "STi":
        return A_STI, 10, 0
    method = "EGMRSCDIJOAXYZ".index(spec[0])
    return method, _SIZES[spec[1:]], -1


class _Form:
    """One compiled map entry: a single instruction, or a group of eight."""
    __slots__ = ("names", "ops", "modrm", "rm_mem", "group", "flags", "cond")

    def __init__(self, names, ops, group=None, cond=-1, x87_form=False):
        self.names = names          # (16-bit name, 32-bit name)
        self.ops = ops              # tuple of (method, size, fixed reg)
        self.group = group          # 8 entries of _Form, None, or (memory form, register form)
        methods = [m for m, _, _ in ops]
        self.modrm = group is not None or x87_form or any(m in _MODRM_METHODS for m in methods)
        self.rm_mem = A_E in methods or A_M in methods
        self.cond = cond
        flags = F_X87 if x87_form else 0
        if set(names) & opcodes.BRANCHES:
            flags |= F_BRANCH
        if set(names) & opcodes.STOPS:
            flags |= F_STOP
        if set(names) & opcodes.PRIVILEGED:
            flags |= F_PRIVILEGED
        if names[1] in opcodes.STRING:
            flags |= F_STRING
        first = methods[0] if methods else None
        if first in (A_C, A_D) or A_C in methods or A_D in methods:
            flags |= F_PRIVILEGED
        if first in (A_S, A_C, A_D) or (first == A_SEG and names[1] == "pop"):
            flags |= F_STOP     # later code may run under another segment or mode
        self.flags = flags


def _compile(text: str, inherited_ops=(), x87_form=False) -> _Form:
    if text.startswith("@"):
        group_name, _, rest = text[1:].partition(" ")
        ops = tuple(_parse_operand(s) for s in rest.split(",")) if rest else ()
        entries = []
        for entry in opcodes.GROUPS[group_name]:
            if isinstance(entry, tuple):
                entries.append(tuple(None if e is None else _compile(e, ops) for e in entry))
            elif entry is None:
                entries.append(None)
            else:
                entries.append(_compile(entry, ops))
        return _Form(("", ""), ops, group=tuple(entries))
    name, _, rest = text.partition(" ")
    if rest.startswith("+"):    # appended to the group's operands: "+Ib/Iz"
        byte_spec, _, word_spec = rest[1:].partition("/")
        extra = byte_spec if inherited_ops[0][1] == 1 else word_spec
        ops = inherited_ops + (_parse_operand(extra),)
    elif rest:
        ops = tuple(_parse_operand(s) for s in rest.split(","))
    else:
        ops = inherited_ops
    names = tuple(name.split("/")) if "/" in name else (name, name)
    cond = -1
    for prefix in ("j", "set", "cmov"):
        stem = name[len(prefix):]
        if name.startswith(prefix) and stem in opcodes.CONDITIONS:
            cond = opcodes.CONDITIONS.index(stem)
    return _Form(names, ops, cond=cond, x87_form=x87_form)


ONE_BYTE_FORMS: list = [None] * 256
TWO_BYTE_FORMS: list = [None] * 256
for _op, _text in opcodes.ONE_BYTE.items():
    ONE_BYTE_FORMS[_op] = _compile(_text)
for _op, _text in opcodes.TWO_BYTE.items():
    TWO_BYTE_FORMS[_op] = _compile(_text)
X87_FORMS = {key: _compile(text, x87_form=True) for key, text in x87.FORMS.items()}

_PREFIX_SEG = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}
_PREFIXES = frozenset(_PREFIX_SEG) | {0x66, 0x67, 0xF0, 0xF2, 0xF3}
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
# 16-bit ModRM r/m -> (base, index) in register numbers: [BX+SI] ... [BX]
_RM16 = ((3, 6), (3, 7), (5, 6), (5, 7), (6, -1), (7, -1), (5, -1), (3, -1))
# Operands are immutable, so the register operands, of which there are few,
# are built once and shared: building attrs instances is the costliest step
# of decoding (this alone makes it ~20% faster).
# _REG_OPS[size][n] is Operand(REG, size, reg=n).
_REG_OPS = {size: tuple(Operand(REG, size, reg=n) for n in range(8))
            for size in {s for s in _SIZES.values() if s > 0}}
_SREG_OPS = tuple(Operand(SREG, 2, reg=n) for n in range(8))
_ONE = Operand(IMM, 1, imm=1)


class _Truncated(Exception):
    """Internal: the byte string ends inside the instruction."""


class _TooLong(Exception):
    """Internal: the instruction runs past 15 bytes."""


def decode(code, pos: int = 0, bits: int = 32):
    """Decode one instruction from `code` (bytes-like) at `pos`.

    `bits` is the default operand/address size of the code segment (CS.D):
    32 for protected-mode code, 16 for real mode and 16-bit segments.
    Returns Instruction, Undefined or NeedMore.
    """
    try:
        return _decode_inner(code, pos, bits)
    except _Truncated as t:
        have = len(code) - pos
        return NeedMore(needed=t.args[0] - have, have=have)
    except _TooLong:
        return Undefined(length=MAX_LENGTH, reason="instruction longer than 15 bytes",
                         vector=13, raw=bytes(code[pos:pos + MAX_LENGTH]))


def _byte(code, at, start):
    if at - start >= MAX_LENGTH:
        raise _TooLong()
    try:
        return code[at]
    except IndexError:
        raise _Truncated(at - start + 1) from None


def _le(code, at, size, start):
    if at + size - start > MAX_LENGTH:
        raise _TooLong()
    if at + size > len(code):
        raise _Truncated(at + size - start)
    return int.from_bytes(code[at:at + size], "little")


def _undefined(code, start, at, reason):
    length = max(1, at - start)
    return Undefined(length=length, reason=reason, raw=bytes(code[start:start + length]))


def _decode_inner(code, start, bits):
    pos = start
    opsize = adsize = bits
    segment = -1
    rep = 0
    lock = False
    prefixes = []
    while True:
        b = _byte(code, pos, start)
        if b not in _PREFIXES:
            break
        prefixes.append(b)
        pos += 1
        if b in _PREFIX_SEG:
            segment = _PREFIX_SEG[b]
        elif b == 0x66:
            opsize = 48 - bits
        elif b == 0x67:
            adsize = 48 - bits
        elif b == 0xF0:
            lock = True
        else:
            rep = b

    opcode = b
    pos += 1
    if b == 0x0F:
        b = _byte(code, pos, start)
        pos += 1
        opcode = 0x0F00 | b
        form = TWO_BYTE_FORMS[b]
    elif 0xD8 <= b <= 0xDF:
        form = None         # x87: looked up with its ModRM below
    else:
        form = ONE_BYTE_FORMS[b]

    modrm = sib = -1
    if 0xD8 <= opcode <= 0xDF:
        modrm = _byte(code, pos, start)
        pos += 1
        form = X87_FORMS.get((opcode, modrm >> 3 & 7 if modrm < 0xC0 else modrm))
        if form is None:
            form = X87_FORMS.get((opcode, 8 + (modrm >> 3 & 7))) if modrm >= 0xC0 else None
        if form is None:
            return _undefined(code, start, pos, "undefined x87 encoding")
    elif form is None:
        return _undefined(code, start, pos, "undefined opcode")
    elif form.modrm:
        modrm = _byte(code, pos, start)
        pos += 1
        if form.group is not None:
            entry = form.group[modrm >> 3 & 7]
            if isinstance(entry, tuple):
                entry = entry[1] if modrm >= 0xC0 else entry[0]
            if entry is None:
                return _undefined(code, start, pos, "undefined group encoding")
            form = entry

    name = form.names[1] if opsize == 32 else form.names[0]
    if opcode == 0xE3:      # JCXZ/JECXZ tests the address-size counter
        name = form.names[1] if adsize == 32 else form.names[0]
    elif opcode == 0x90 and rep == 0xF3:
        name = "pause"
        rep = 0             # F3 is part of PAUSE's opcode, not a REP prefix

    # Effective address parts from ModRM/SIB (only when r/m names memory).
    mod = modrm >> 6 if modrm >= 0 else 3
    mem = None
    if mod != 3 and form.rm_mem:
        rm = modrm & 7
        base = index = -1
        scale = 1
        disp = 0
        disp_size = 0
        default_seg = DS
        if adsize == 32:
            if rm == 4:
                sib = _byte(code, pos, start)
                pos += 1
                scale = 1 << (sib >> 6)
                index = sib >> 3 & 7
                if index == 4:
                    index = -1
                base = sib & 7
                if base == 5 and mod == 0:
                    base = -1
                    disp_size = 4
            elif rm == 5 and mod == 0:
                disp_size = 4
            else:
                base = rm
            if mod == 1:
                disp_size = 1
            elif mod == 2:
                disp_size = 4
            if base in (4, 5):
                default_seg = SS
        else:
            if rm == 6 and mod == 0:
                disp_size = 2
            else:
                base, index = _RM16[rm]
                if base == 5:
                    default_seg = SS
            if mod == 1:
                disp_size = 1
            elif mod == 2:
                disp_size = 2
        if disp_size:
            disp = _le(code, pos, disp_size, start)
            pos += disp_size
            sign = 1 << (disp_size * 8 - 1)
            disp = (disp ^ sign) - sign
        mem = (segment if segment >= 0 else default_seg, base, index, scale, disp, disp_size)

    operands = []
    vsize = opsize >> 3
    for method, size, fixed in form.ops:
        if size == S_V:
            size = vsize
        elif size == S_Y:
            size = vsize if mod == 3 else 2
        elif size == S_P:
            size = vsize + 2
        elif size == S_A:
            size = vsize * 2
        if method == A_E or method == A_M:
            if mod == 3:
                if method == A_M:
                    return _undefined(code, start, pos, "register operand where memory is required")
                operands.append(_REG_OPS[size][modrm & 7])
            else:
                seg, base, index, scale, disp, disp_size = mem
                operands.append(Operand(MEM, size, -1, seg, base, index, scale, disp,
                                        disp_size))
        elif method == A_G:
            operands.append(_REG_OPS[size][modrm >> 3 & 7])
        elif method == A_I:
            if size == S_BS:
                imm = _le(code, pos, 1, start)
                pos += 1
                if imm & 0x80:
                    imm |= _MASK[vsize] ^ 0xFF
                size = vsize
            else:
                imm_size = 2 if size == 2 else (1 if size == 1 else vsize)
                imm = _le(code, pos, imm_size, start)
                pos += imm_size
            operands.append(Operand(IMM, size, imm=imm))
        elif method == A_J:
            rel_size = 1 if size == 1 else vsize
            rel = _le(code, pos, rel_size, start)
            pos += rel_size
            sign = 1 << (rel_size * 8 - 1)
            operands.append(Operand(REL, vsize, imm=(rel ^ sign) - sign))
        elif method == A_Z:
            operands.append(_REG_OPS[size][opcode & 7])
        elif method == A_REG:
            operands.append(_REG_OPS[size][fixed])
        elif method == A_SEG:
            operands.append(_SREG_OPS[fixed])
        elif method == A_ONE:
            operands.append(_ONE)
        elif method == A_S:
            sreg = modrm >> 3 & 7
            if sreg > 5 or (sreg == 1 and opcode == 0x8E):
                return _undefined(code, start, pos, "no such segment register")
            operands.append(_SREG_OPS[sreg])
        elif method == A_C:
            creg = modrm >> 3 & 7
            if creg not in (0, 2, 3, 4):
                return _undefined(code, start, pos, "no such control register")
            operands.append(Operand(CREG, 4, reg=creg))
        elif method == A_D:
            operands.append(Operand(DREG, 4, reg=modrm >> 3 & 7))
        elif method == A_R:
            operands.append(_REG_OPS[4][modrm & 7])
        elif method == A_O:
            off = _le(code, pos, adsize >> 3, start)
            pos += adsize >> 3
            operands.append(Operand(MEM, size, seg=segment if segment >= 0 else DS,
                                    disp=off, disp_size=adsize >> 3))
        elif method == A_A:
            off = _le(code, pos, vsize, start)
            pos += vsize
            sel = _le(code, pos, 2, start)
            pos += 2
            operands.append(Operand(FAR, vsize + 2, imm=off, sel=sel))
        elif method == A_X:
            operands.append(Operand(MEM, size, seg=segment if segment >= 0 else DS,
                                    base=6))
        elif method == A_Y:
            operands.append(Operand(MEM, size, seg=ES, base=7))
        elif method == A_ST:
            operands.append(Operand(STREG, 10, reg=0))
        elif method == A_STI:
            operands.append(Operand(STREG, 10, reg=modrm & 7))

    if lock and (name not in opcodes.LOCKABLE or not operands or operands[0].kind != MEM):
        return _undefined(code, start, pos, "LOCK prefix on an instruction that cannot be locked")

    # Positional (the fields' order): a third cheaper than keywords.
    return Instruction(name, tuple(operands), pos - start, opsize, adsize, opcode, modrm, sib,
                       tuple(prefixes), lock, rep, segment, form.cond, form.flags,
                       bytes(code[start:pos]))
