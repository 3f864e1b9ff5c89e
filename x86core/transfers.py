"""Far control transfers: JMP/CALL/RET far, call gates, task switches
(Intel SDM Vol. 3 ch. 5.8, 7; Vol. 2 JMP, CALL, RET).

Contract (called by cpu.py; on entry cpu.regs/eip/lazy flags are current,
cpu.eip is the instruction's own address for faults):
- far_jump(cpu, selector, offset)
- far_call(cpu, selector, offset, next_eip, size)   size = 2 or 4
- far_ret(cpu, size, release)                       release = RET imm16
Each sets cpu.eip (and CS via segmentation.load_cs) or raises.

Not yet written: this module is the protection layer's (issue 4).
"""
from __future__ import annotations

from .exceptions import GP, fault


def far_jump(cpu, selector: int, offset: int) -> None:
    raise fault(GP, selector & 0xFFFC)


def far_call(cpu, selector: int, offset: int, next_eip: int, size: int) -> None:
    raise fault(GP, selector & 0xFFFC)


def far_ret(cpu, size: int, release: int) -> None:
    raise fault(GP, 0)
