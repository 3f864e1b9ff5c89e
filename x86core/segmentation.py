"""Protected-mode segmentation: descriptors and segment-register loads.

Descriptor layout and the checks on MOV/POP to a segment register follow
the Intel SDM Vol. 3 ch. 3 and 5 and Vol. 2 (MOV, POP, LDS...): the null
selector, table limits, descriptor type, DPL/RPL/CPL, the present bit, in
that order, with the error code the manual gives (the selector's index, TI
and EXT bits).  Loading sets the accessed bit in the descriptor.
"""
from __future__ import annotations

import attrs

from .exceptions import GP, NP, SS, fault

ES, CS, SS_REG, DS, FS, GS = range(6)


_PARSED: dict = {}


@attrs.frozen
class Descriptor:
    """One 8-byte GDT/LDT/IDT entry, decoded."""
    raw: int
    base: int
    limit: int          # in bytes, granularity applied
    type: int           # the 4-bit type field
    s: bool             # code/data (True) or system (False)
    dpl: int
    present: bool
    db: bool            # D/B: 32-bit default size
    granularity: bool

    @classmethod
    def parse(cls, raw: int) -> "Descriptor":
        # Descriptors are immutable values and a kernel loads the same few
        # on every trap, so decoded ones are shared.
        desc = _PARSED.get(raw)
        if desc is None:
            if len(_PARSED) > 4096:
                _PARSED.clear()
            desc = _PARSED[raw] = cls._decode(raw)
        return desc

    @classmethod
    def _decode(cls, raw: int) -> "Descriptor":
        lo, hi = raw & 0xFFFFFFFF, raw >> 32
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        g = bool(hi & 0x800000)
        if g:
            limit = (limit << 12) | 0xFFF
        return cls(raw=raw, base=base, limit=limit, type=hi >> 8 & 0xF, s=bool(hi & 0x1000),
                   dpl=hi >> 13 & 3, present=bool(hi & 0x8000), db=bool(hi & 0x400000),
                   granularity=g)

    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 8

    @property
    def readable(self) -> bool:
        # Only code/data segments are ever readable; a system descriptor's
        # type bit 1 (busy TSS, LDT) means something else.
        return self.s and (self.is_data or bool(self.type & 2))

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 2)

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 4)

    @property
    def attr(self) -> int:
        """Access byte | flags nibble << 8, as kept in the hidden cache."""
        hi = self.raw >> 32
        return (hi >> 8 & 0xFF) | ((hi >> 20 & 0xF) << 12)


def make_descriptor(base: int, limit: int, access: int, flags: int = 0xC) -> int:
    """Build a raw descriptor: access byte (P DPL S type) and flags nibble (G D/B 0 AVL)."""
    if flags & 0x8:
        limit >>= 12
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) | (base & 0xFF000000)
    return lo | hi << 32


def read_descriptor(cpu, selector: int, error_code: int | None = None) -> tuple[Descriptor, int]:
    """The descriptor a selector names and its linear address; #GP(selector)
    beyond the table's limit."""
    index = selector & ~7
    if selector & 4:
        _, base, limit, _ = cpu.ldtr
        if cpu.ldtr[0] & ~3 == 0:
            raise fault(GP, selector & 0xFFFC if error_code is None else error_code)
    else:
        base, limit = cpu.gdtr
    if index + 7 > limit:
        raise fault(GP, selector & 0xFFFC if error_code is None else error_code)
    addr = (base + index) & 0xFFFFFFFF
    raw = cpu.read_system(addr, 8)
    return Descriptor.parse(raw), addr


def set_accessed(cpu, addr: int, desc: Descriptor) -> None:
    if not desc.type & 1:
        cpu.write_system(addr + 5, 1, (desc.raw >> 40 & 0xFF) | 1)


def load_segment(cpu, seg: int, selector: int) -> None:
    """MOV/POP/LxS to a data or stack segment register."""
    selector &= 0xFFFF
    if not cpu.cr0 & 1 or cpu.eflags & 0x20000:      # real mode or V86: base = selector * 16
        cpu.seg_sel[seg] = selector
        cpu.seg_base[seg] = selector << 4
        if cpu.cr0 & 1:     # V86: a 64 KiB writable data segment at ring 3
            cpu.seg_limit[seg] = 0xFFFF
            cpu.seg_attr[seg] = 0xF3
        # real mode keeps the cached limit and attributes ("unreal" mode works)
        cpu.mode_changed()
        return
    rpl = selector & 3
    if selector & ~3 == 0:
        if seg == SS_REG:
            raise fault(GP, 0)
        cpu.seg_sel[seg] = selector
        cpu.seg_base[seg] = 0
        cpu.seg_limit[seg] = 0
        cpu.seg_attr[seg] = 0           # unusable: any access through it is #GP(0)
        cpu.mode_changed()
        return
    desc, addr = read_descriptor(cpu, selector)
    err = selector & 0xFFFC
    if seg == SS_REG:
        if rpl != cpu.cpl or not desc.writable or desc.dpl != cpu.cpl:
            raise fault(GP, err)
        if not desc.present:
            raise fault(SS, err)
    else:
        if not desc.readable:
            raise fault(GP, err)
        if not desc.conforming and (rpl > desc.dpl or cpu.cpl > desc.dpl):
            raise fault(GP, err)
        if not desc.present:
            raise fault(NP, err)
    set_accessed(cpu, addr, desc)
    cpu.seg_sel[seg] = selector
    cpu.seg_base[seg] = desc.base
    cpu.seg_limit[seg] = desc.limit
    cpu.seg_attr[seg] = desc.attr | 1
    cpu.mode_changed()
    if seg == SS_REG:
        cpu.inhibit_irq = True


def load_cs(cpu, selector: int, desc: "Descriptor | None", cpl: int) -> None:
    """Put a code segment in CS (after the caller's checks) and enter `cpl`:
    the default operand size and the block/TLB set follow it."""
    selector &= 0xFFFF
    if desc is None:                    # real mode / V86: base = selector * 16
        cpu.seg_sel[CS] = selector
        cpu.seg_base[CS] = selector << 4
        if cpu.eflags & 0x20000:
            cpu.seg_limit[CS] = 0xFFFF
            cpu.bits = 16
    else:
        cpu.seg_sel[CS] = (selector & ~3) | cpl
        cpu.seg_base[CS] = desc.base
        cpu.seg_limit[CS] = desc.limit
        cpu.seg_attr[CS] = desc.attr | 1
        cpu.bits = 32 if desc.db else 16
    cpu.cpl = cpl
    cpu.mode_changed()
