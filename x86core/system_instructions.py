"""The descriptor-table and protection instructions: LGDT LIDT SGDT SIDT
LLDT SLDT LTR STR LAR LSL VERR VERW ARPL LMSW SMSW CLTS INVLPG INVD WBINVD
(Intel SDM Vol. 2).

Contract: execute(cpu, insn) runs one of them from its decoded form, with
cpu.regs and the lazy flags current (the block syncs before and reloads
after), or raises the exception the SDM gives.

Privilege: LGDT LIDT LLDT LTR LMSW CLTS INVLPG INVD WBINVD are CPL 0 only
(#GP(0) at CPL > 0 in protected mode, and in V86 mode).  SGDT SIDT SLDT
STR SMSW LAR LSL VERR VERW ARPL run at any CPL (no CR4.UMIP on an i386).
LLDT SLDT LTR STR LAR LSL VERR VERW ARPL are #UD in real-address and
virtual-8086 mode.

Memory operands: the effective address from base/index/scale/disp (16- or
32-bit address size), checked against the segment's limit (#GP(0), #SS(0)
through SS; a null data segment in protected mode is #GP(0)), then read or
written at the current privilege (user = CPL 3) through the page tables.
"""
from __future__ import annotations

from . import flags as F
from . import segmentation as sg
from .exceptions import GP, NP, SS, UD, fault
from .instruction import MEM, REG

ES, CS, SS_REG, DS, FS, GS = range(6)
VM = 0x20000
_R16 = ((3, 6), (3, 7), (5, 6), (5, 7), (6,), (7,), (5,), (3,))     # [bx+si] ... [bx]

# Descriptor types LAR and LSL accept among system descriptors (SDM Vol. 2 LAR,
# LSL tables; every code and data segment is valid for both).
LAR_SYSTEM_TYPES = frozenset({1, 2, 3, 4, 5, 9, 0xB, 0xC})
LSL_SYSTEM_TYPES = frozenset({1, 2, 3, 9, 0xB})


# -- operands ---------------------------------------------------------------------------------

def _protected(cpu) -> bool:
    return bool(cpu.cr0 & 1) and not cpu.eflags & VM


def effective_address(cpu, insn, op) -> int:
    """The offset a memory operand names, in the instruction's address size."""
    r = cpu.regs
    if insn.adsize == 16:
        off = op.disp
        if op.base >= 0:
            off += r[op.base] & 0xFFFF
        if op.index >= 0:
            off += r[op.index] & 0xFFFF
        return off & 0xFFFF
    off = op.disp
    if op.base >= 0:
        off += r[op.base]
    if op.index >= 0:
        off += r[op.index] * op.scale
    return off & 0xFFFFFFFF


def _linear(cpu, insn, op, size: int) -> int:
    off = effective_address(cpu, insn, op)
    seg = op.seg
    vector = SS if seg == SS_REG else GP
    if _protected(cpu) and cpu.seg_sel[seg] & ~3 == 0 and cpu.seg_attr[seg] == 0:
        raise fault(vector, 0)                 # a null selector: unusable
    limit, attr = cpu.seg_limit[seg], cpu.seg_attr[seg]
    if size:
        if attr & 0x1C == 0x14:                # expand-down data segment
            upper = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
            ok = off > limit and off + size - 1 <= upper
        else:
            ok = off + size - 1 <= limit
        if not ok:
            raise fault(vector, 0)
    return (cpu.seg_base[seg] + off) & 0xFFFFFFFF


def _read(cpu, insn, op, size: int | None = None) -> int:
    size = size or op.size
    if op.kind == REG:
        return cpu.regs[op.reg] & ((1 << 8 * size) - 1)
    return cpu.read_linear(_linear(cpu, insn, op, size), size, cpu.cpl == 3)


def _write(cpu, insn, op, size: int, value: int) -> None:
    """Store `size` bytes to a memory operand, or into a register (a 2-byte
    write keeps the register's upper half)."""
    value &= (1 << 8 * size) - 1
    if op.kind == REG:
        if size == 4:
            cpu.regs[op.reg] = value
        else:
            cpu.regs[op.reg] = (cpu.regs[op.reg] & 0xFFFF0000) | value
        return
    cpu.write_linear(_linear(cpu, insn, op, size), size, value, cpu.cpl == 3)


def _set_zf(cpu, on: bool) -> None:
    ef = cpu.get_eflags()
    cpu.set_eflags(ef | F.ZF if on else ef & ~F.ZF)


def _cpl0(cpu) -> None:
    if cpu.cr0 & 1 and (cpu.cpl != 0 or cpu.eflags & VM):
        raise fault(GP, 0)


def _no_real(cpu) -> None:
    if not _protected(cpu):
        raise fault(UD)


# -- the instructions ---------------------------------------------------------------------------

def execute(cpu, insn) -> None:
    fn = _TABLE.get(insn.mnemonic)
    if fn is None:
        raise fault(UD)
    fn(cpu, insn)


def _load_table_register(cpu, insn) -> None:
    """LGDT / LIDT m16&32: limit, then base (24 bits with operand size 16)."""
    _cpl0(cpu)
    (op,) = insn.operands
    if op.kind != MEM:
        raise fault(UD)
    a = _linear(cpu, insn, op, 6)
    user = cpu.cpl == 3
    limit = cpu.read_linear(a, 2, user)
    base = cpu.read_linear((a + 2) & 0xFFFFFFFF, 4, user)
    if insn.opsize == 16:
        base &= 0xFFFFFF
    if insn.mnemonic == "lgdt":
        cpu.gdtr = (base, limit)
    else:
        cpu.idtr = (base, limit)


def _store_table_register(cpu, insn) -> None:
    """SGDT / SIDT m: limit, then base; with operand size 16 the 386 and
    later store 24 bits of base and a zero sixth byte."""
    (op,) = insn.operands
    if op.kind != MEM:
        raise fault(UD)
    base, limit = cpu.gdtr if insn.mnemonic == "sgdt" else cpu.idtr
    if insn.opsize == 16:
        base &= 0xFFFFFF
    a = _linear(cpu, insn, op, 6)
    cpu.write_linear(a, 6, (limit & 0xFFFF) | (base & 0xFFFFFFFF) << 16, cpu.cpl == 3)


def _store_selector(cpu, insn, value: int) -> None:
    """SLDT / STR / SMSW destinations: a 32-bit register gets the value
    zero-extended, a 16-bit register its low word, memory always 16 bits."""
    (op,) = insn.operands
    if op.kind == REG and op.size == 4:
        _write(cpu, insn, op, 4, value & 0xFFFF)
    else:
        _write(cpu, insn, op, 2, value)


def _sldt(cpu, insn) -> None:
    _no_real(cpu)
    _store_selector(cpu, insn, cpu.ldtr[0])


def _str(cpu, insn) -> None:
    _no_real(cpu)
    _store_selector(cpu, insn, cpu.tr[0])


def _lldt(cpu, insn) -> None:
    _no_real(cpu)
    _cpl0(cpu)
    selector = _read(cpu, insn, insn.operands[0], 2)
    if selector & ~3 == 0:
        cpu.ldtr = (selector, 0, 0, 0)          # LDTR marked invalid
        return
    err = selector & 0xFFFC
    if selector & 4:
        raise fault(GP, err)
    desc, _ = sg.read_descriptor(cpu, selector)
    if desc.s or desc.type != 2:
        raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)
    cpu.ldtr = (selector, desc.base, desc.limit, desc.attr)


def _ltr(cpu, insn) -> None:
    _no_real(cpu)
    _cpl0(cpu)
    selector = _read(cpu, insn, insn.operands[0], 2)
    if selector & ~3 == 0:
        raise fault(GP, 0)
    err = selector & 0xFFFC
    if selector & 4:
        raise fault(GP, err)
    desc, addr = sg.read_descriptor(cpu, selector)
    if desc.s or desc.type not in (1, 9):
        raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)
    cpu.write_system(addr + 5, 1, (desc.raw >> 40 & 0xFF) | 2)    # busy
    cpu.tr = (selector, desc.base, desc.limit, desc.attr | 2)


def _visible(cpu, selector: int, system_types: frozenset | None):
    """The descriptor LAR/LSL/VERR/VERW may look at, or None (ZF = 0):
    not null, inside its table, a code/data segment or one of
    `system_types`, and (unless conforming code) DPL >= CPL and >= RPL."""
    if selector & ~3 == 0:
        return None
    index = selector & ~7
    if selector & 4:
        if cpu.ldtr[0] & ~3 == 0:
            return None
        _, base, limit, _ = cpu.ldtr
    else:
        base, limit = cpu.gdtr
    if index + 7 > limit:
        return None
    desc = sg.Descriptor.parse(cpu.read_system((base + index) & 0xFFFFFFFF, 8))
    if not desc.s and (system_types is None or desc.type not in system_types):
        return None
    if not desc.conforming and (desc.dpl < cpu.cpl or desc.dpl < (selector & 3)):
        return None
    return desc


def _lar(cpu, insn) -> None:
    _no_real(cpu)
    dst, src = insn.operands
    desc = _visible(cpu, _read(cpu, insn, src, 2), LAR_SYSTEM_TYPES)
    if desc is None:
        _set_zf(cpu, False)
        return
    hi = desc.raw >> 32
    _write(cpu, insn, dst, dst.size, hi & (0x00F0FF00 if dst.size == 4 else 0xFF00))
    _set_zf(cpu, True)


def _lsl(cpu, insn) -> None:
    _no_real(cpu)
    dst, src = insn.operands
    desc = _visible(cpu, _read(cpu, insn, src, 2), LSL_SYSTEM_TYPES)
    if desc is None:
        _set_zf(cpu, False)
        return
    _write(cpu, insn, dst, dst.size, desc.limit)
    _set_zf(cpu, True)


def _verr(cpu, insn) -> None:
    _no_real(cpu)
    desc = _visible(cpu, _read(cpu, insn, insn.operands[0], 2), None)
    _set_zf(cpu, desc is not None and desc.readable)


def _verw(cpu, insn) -> None:
    _no_real(cpu)
    desc = _visible(cpu, _read(cpu, insn, insn.operands[0], 2), None)
    _set_zf(cpu, desc is not None and desc.writable)


def _arpl(cpu, insn) -> None:
    _no_real(cpu)
    dst, src = insn.operands
    value = _read(cpu, insn, dst, 2)
    rpl = cpu.regs[src.reg] & 3
    if value & 3 < rpl:
        _write(cpu, insn, dst, 2, (value & ~3) | rpl)
        _set_zf(cpu, True)
    else:
        _set_zf(cpu, False)


def _lmsw(cpu, insn) -> None:
    """Loads CR0.PE MP EM TS from the low 4 bits; PE can be set, never cleared."""
    _cpl0(cpu)
    value = _read(cpu, insn, insn.operands[0], 2)
    cr0 = (cpu.cr0 & ~0xE) | (value & 0xF)
    cpu.write_cr(0, cr0)


def _smsw(cpu, insn) -> None:
    """A 32-bit register receives the whole CR0 (the SDM leaves bits 31:16
    undefined; P6 and later processors store CR0's); a 16-bit register its
    low word, memory 16 bits."""
    (op,) = insn.operands
    if op.kind == REG and op.size == 4:
        _write(cpu, insn, op, 4, cpu.cr0)
    else:
        _write(cpu, insn, op, 2, cpu.cr0)


def _clts(cpu, insn) -> None:
    _cpl0(cpu)
    cpu.cr0 &= ~0x8


def _invlpg(cpu, insn) -> None:
    _cpl0(cpu)
    (op,) = insn.operands
    if op.kind != MEM:
        raise fault(UD)
    off = effective_address(cpu, insn, op)
    cpu.invlpg((cpu.seg_base[op.seg] + off) & 0xFFFFFFFF)


def _cache(cpu, insn) -> None:
    _cpl0(cpu)          # INVD / WBINVD: no caches modelled


_TABLE = {
    "lgdt": _load_table_register, "lidt": _load_table_register,
    "sgdt": _store_table_register, "sidt": _store_table_register,
    "sldt": _sldt, "str": _str, "lldt": _lldt, "ltr": _ltr,
    "lar": _lar, "lsl": _lsl, "verr": _verr, "verw": _verw, "arpl": _arpl,
    "lmsw": _lmsw, "smsw": _smsw, "clts": _clts, "invlpg": _invlpg,
    "invd": _cache, "wbinvd": _cache,
}
