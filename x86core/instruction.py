"""The decoded form of one i386 instruction.

This is the contract between the decoder and everything that consumes it: the
disassembler prints it, the assembler is checked against it, and the block
compiler turns it into Python once, so nothing downstream ever looks at the
instruction bytes again.  Operands follow the Intel manuals' order
(destination first).

Operands and instructions are records that nothing changes once decoded (a
decoded page's instructions are shared by every block built from it), but
they are not attrs-frozen: a frozen class's __init__ sets each field
through object.__setattr__, which made building them most of the cost of
decoding (an Instruction 2.4 us, a memory Operand 1.9 us; 0.4 us each
plain).  They hash by value, as frozen ones did.
"""
from __future__ import annotations

import attrs

# Operand kinds.  Plain ints so the block compiler can branch on them cheaply.
REG = 1      # general register: size 1 (AL..BH, 0-7), 2 or 4
SREG = 2     # segment register ES CS SS DS FS GS = 0..5
CREG = 3     # control register CRn
DREG = 4     # debug register DRn
MEM = 5      # memory: seg, base, index, scale, disp (address size from the instruction)
IMM = 6      # immediate, already sign- or zero-extended to `size` bytes
REL = 7      # relative branch: imm is the signed displacement from the next instruction
FAR = 8      # direct far pointer ptr16:16/32: sel and imm (offset)
STREG = 9    # x87 stack register ST(i)

KIND_NAMES = {REG: "reg", SREG: "sreg", CREG: "creg", DREG: "dreg", MEM: "mem",
              IMM: "imm", REL: "rel", FAR: "far", STREG: "st"}

ES, CS, SS, DS, FS, GS = range(6)
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
REG32_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
REG16_NAMES = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
REG8_NAMES = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")

# Instruction.flags bits.
F_BRANCH = 1        # may transfer control (ends a block)
F_STRING = 2        # string instruction: REP/REPE/REPNE meaningful
F_PRIVILEGED = 4    # CPL 0 only (#GP otherwise)
F_X87 = 8           # x87 escape (D8-DF)
F_STOP = 16         # ends a block for reasons other than branching (HLT, mode changes)


@attrs.define(slots=True, unsafe_hash=True)
class Operand:
    kind: int
    size: int                 # bytes; 0 where the instruction has no data size (LEA's M, INVLPG)
    reg: int = -1             # REG/SREG/CREG/DREG/STREG number
    seg: int = -1             # MEM: effective segment (override applied); FAR: unused
    base: int = -1            # MEM: base register number, -1 for none
    index: int = -1           # MEM: index register number, -1 for none
    scale: int = 1            # MEM: 1, 2, 4, 8
    disp: int = 0             # MEM: displacement, signed
    disp_size: int = 0        # MEM: bytes of displacement encoded (0, 1, 2, 4)
    imm: int = 0              # IMM value (unsigned within size); REL signed disp; FAR offset
    sel: int = 0              # FAR selector

    @property
    def is_mem(self) -> bool:
        return self.kind == MEM


@attrs.define(slots=True, unsafe_hash=True)
class Instruction:
    mnemonic: str
    operands: tuple[Operand, ...]
    length: int
    opsize: int               # 16 or 32: operand size after 0x66
    adsize: int               # 16 or 32: address size after 0x67
    opcode: int               # 0x00-0xFF, or 0x0F00-0x0FFF for the two-byte map
    modrm: int = -1
    sib: int = -1
    prefixes: tuple[int, ...] = ()
    lock: bool = False
    rep: int = 0              # 0, 0xF3 (REP/REPE) or 0xF2 (REPNE)
    segment: int = -1         # segment override prefix in force, -1 for none
    cond: int = -1            # condition code 0-15 for Jcc/SETcc/CMOVcc
    flags: int = 0
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return True

    def branch_target(self, address: int) -> int:
        """Where a relative branch at `address` goes (wrapped to the operand size)."""
        rel = self.operands[0].imm
        mask = 0xFFFF if self.opsize == 16 else 0xFFFFFFFF
        return (address + self.length + rel) & mask


@attrs.frozen(slots=True)
class Undefined:
    """An encoding the processor rejects: #UD (vector 6), or #GP(0) (vector 13)
    for an instruction longer than 15 bytes."""
    length: int               # bytes examined; a disassembler sweep skips one
    reason: str
    vector: int = 6
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return False


@attrs.frozen(slots=True)
class NeedMore:
    """The bytes given end inside an instruction; at least `needed` more are required."""
    needed: int
    have: int

    @property
    def ok(self) -> bool:
        return False
