"""Processor exceptions and interrupts as Python control flow.

A fault or trap inside a compiled block is raised as CPUException; the block
writes its registers back, the run loop puts EIP on the faulting instruction
(faults) or after it (traps, INT n) and hands the exception to delivery.
Vector numbers and which vectors push an error code are from the Intel SDM
Vol. 3 ch. 6.
"""
from __future__ import annotations

DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17)
NAMES = {DE: "#DE", DB: "#DB", NMI: "NMI", BP: "#BP", OF: "#OF", BR: "#BR", UD: "#UD",
         NM: "#NM", DF: "#DF", 9: "CSO", TS: "#TS", NP: "#NP", SS: "#SS", GP: "#GP",
         PF: "#PF", 15: "reserved", MF: "#MF", AC: "#AC", 18: "#MC"}
HAS_ERROR_CODE = frozenset({DF, TS, NP, SS, GP, PF, AC})


class CPUException(Exception):
    """vector, error_code (None when the vector pushes none), and whether the
    saved EIP is the next instruction (traps and INT n) or this one (faults)."""

    def __init__(self, vector: int, error_code: int | None = None, *,
                 trap: bool = False, software: bool = False):
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code
        self.trap = trap
        self.software = software
        self.in_new_task = False    # raised after a task switch committed (transfers.py)

    def __str__(self) -> str:
        name = NAMES.get(self.vector, f"vector {self.vector:#x}")
        if self.software:
            name = f"INT {self.vector:#x}"
        return name if self.error_code is None else f"{name}({self.error_code:#x})"


def fault(vector: int, error_code: int | None = None) -> CPUException:
    if error_code is None and vector in HAS_ERROR_CODE:
        error_code = 0
    return CPUException(vector, error_code)


class TripleFault(Exception):
    """Shutdown: an exception while delivering a double fault."""
