"""The descriptor-table and protection instructions: LGDT LIDT SGDT SIDT
LLDT SLDT LTR STR LAR LSL VERR VERW ARPL LMSW SMSW CLTS INVLPG INVD WBINVD
(Intel SDM Vol. 2).

Contract: execute(cpu, insn) runs one of them from its decoded form, with
cpu.regs and the lazy flags current (the block syncs before and reloads
after), or raises the exception the SDM gives.

Not yet written: this module is the protection layer's (issue 4).
"""
from __future__ import annotations

from .exceptions import UD, fault


def execute(cpu, insn) -> None:
    raise fault(UD)
