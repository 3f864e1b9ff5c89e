"""Interrupt and exception delivery, and IRET (Intel SDM Vol. 3 ch. 6,
Vol. 2 INT n / IRET).

Contract (called by cpu.py):
- deliver_exception(cpu, exc) -> bool: deliver a CPUException raised by an
  instruction (cpu.eip already on the faulting instruction, or after it for
  traps / INT n).  True when delivered; raises TripleFault on shutdown.
- deliver_interrupt(cpu, vector): an external interrupt from the INTR line.
- iret(cpu, size): the IRET instruction (size 2 or 4 bytes of frame slots).

Not yet written: this module is the protection layer's (issue 4).
"""
from __future__ import annotations

from .exceptions import GP, CPUException, fault


def deliver_exception(cpu, exc: CPUException) -> bool:
    return False


def deliver_interrupt(cpu, vector: int) -> None:
    raise fault(GP, 0)


def iret(cpu, size: int) -> None:
    raise fault(GP, 0)
