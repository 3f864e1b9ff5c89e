"""The CPU-side operations compiled blocks call into: flag control, segment
loads, far transfers, IRET, control/debug registers, MSRs, port I/O.

These are the paths too rare or too stateful to inline.  Privilege checks
follow the Intel SDM Vol. 2 pages of each instruction (CLI/STI and IN/OUT
by IOPL; HLT, MOV CRn, LGDT ... at CPL 0 only).  Segment loads, far
transfers and IRET here cover real mode and protected mode within one
privilege level with flat or simple descriptors; the protection layer
(descriptor checks, gates, ring changes, task switches) extends them.
"""
from __future__ import annotations

from . import flags as F
from .exceptions import DE, GP, NP, SS as SS_FAULT, UD, CPUException, fault

CS_, SS_, DS_ = 1, 2, 3


class Helpers:
    def __init__(self, cpu):
        self.cpu = cpu

    # -- EFLAGS ----------------------------------------------------------------------
    def cld(self):
        self.cpu.eflags &= ~F.DF

    def std(self):
        self.cpu.eflags |= F.DF

    def _iopl_ok(self) -> bool:
        cpu = self.cpu
        return not cpu.cr0 & 1 or cpu.cpl <= (cpu.eflags >> 12 & 3)

    def cli(self):
        if not self._iopl_ok():
            raise fault(GP, 0)
        self.cpu.eflags &= ~F.IF

    def sti(self):
        if not self._iopl_ok():
            raise fault(GP, 0)
        cpu = self.cpu
        if not cpu.eflags & F.IF:
            cpu.inhibit_irq = True      # one instruction of shadow after STI
        cpu.eflags |= F.IF

    def popf(self, value: int, size: int) -> None:
        """POPF's masking: IOPL only at CPL 0, IF only at CPL <= IOPL; VM and
        RF are never loaded from the stack image."""
        cpu = self.cpu
        if cpu.eflags & F.VM and cpu.eflags & F.IOPL != F.IOPL:
            raise fault(GP, 0)          # IOPL-sensitive in V86 mode
        keep = F.VM | F.RF | F.VIF | F.VIP
        if cpu.cr0 & 1:
            if cpu.cpl > 0:
                keep |= F.IOPL
            if cpu.cpl > (cpu.eflags >> 12 & 3):
                keep |= F.IF
        if size == 2:
            keep |= 0xFFFF0000
        new = (cpu.eflags & keep) | (value & ~keep & F.DEFINED & ~F.ARITH) | F.RESERVED_ONE
        if new & F.IF and not cpu.eflags & F.IF:
            cpu.inhibit_irq = True
        cpu.eflags = new

    # -- exceptions ------------------------------------------------------------------------
    def divide_error(self) -> CPUException:
        return CPUException(DE)

    def software_interrupt(self, vector: int) -> CPUException:
        return CPUException(vector, trap=True, software=True)

    def trap(self, vector: int) -> CPUException:
        return CPUException(vector, trap=True)

    def fault(self, vector: int) -> CPUException:
        return fault(vector)

    def _privileged(self) -> None:
        if self.cpu.cr0 & 1 and self.cpu.cpl != 0:
            raise fault(GP, 0)

    def hlt(self):
        self._privileged()
        self.cpu.halted = True

    # -- processor identification and MSRs ------------------------------------------------
    def rdtsc(self) -> int:
        cpu = self.cpu
        if cpu.cr4 & 0x4 and cpu.cpl != 0 and cpu.cr0 & 1:     # CR4.TSD
            raise fault(GP, 0)
        return cpu.rdtsc()

    def rdmsr(self, index: int) -> int:
        self._privileged()
        if index == 0x10:
            return self.cpu.rdtsc()
        if index not in self.cpu.msr:
            raise fault(GP, 0)
        return self.cpu.msr[index]

    def wrmsr(self, index: int, value: int) -> None:
        self._privileged()
        if index == 0x10:
            self.cpu.tsc_offset = value - self.cpu.icount
            return
        if index not in self.cpu.msr:
            raise fault(GP, 0)
        self.cpu.msr[index] = value

    # -- port I/O: IOPL, then (in protected mode) the TSS permission bitmap ------------------
    def _io_allowed(self, port: int, size: int) -> None:
        cpu = self.cpu
        if not cpu.cr0 & 1 or cpu.cpl <= (cpu.eflags >> 12 & 3):
            return
        if not cpu.io_bitmap_allows(port, size):
            raise fault(GP, 0)

    def port_in(self, port: int, size: int) -> int:
        self._io_allowed(port, size)
        return self.cpu.port_in(port, size)

    def port_out(self, port: int, size: int, value: int) -> None:
        self._io_allowed(port, size)
        self.cpu.port_out(port, size, value)

    # -- control and debug registers ----------------------------------------------------------
    def read_cr(self, n: int) -> int:
        self._privileged()
        cpu = self.cpu
        return (cpu.cr0, 0, cpu.cr2, cpu.cr3, cpu.cr4)[n]

    def write_cr(self, n: int, value: int) -> None:
        self._privileged()
        self.cpu.write_cr(n, value)

    def read_dr(self, n: int) -> int:
        self._privileged()
        return self.cpu.dr[n if n not in (4, 5) else n + 2]

    def write_dr(self, n: int, value: int) -> None:
        self._privileged()
        self.cpu.dr[n if n not in (4, 5) else n + 2] = value

    # -- segments and far transfers -----------------------------------------------------------
    def load_segment(self, seg: int, selector: int) -> None:
        self.cpu.load_segment(seg, selector)

    def far_jump(self, selector: int, offset: int, next_eip: int) -> None:
        self.cpu.far_jump(selector, offset, next_eip)

    def far_call(self, selector: int, offset: int, next_eip: int, size: int) -> None:
        self.cpu.far_call(selector, offset, next_eip, size)

    def far_ret(self, size: int, release: int) -> None:
        self.cpu.far_ret(size, release)

    def iret(self, size: int) -> None:
        self.cpu.iret(size)

    def system(self, insn) -> None:
        self.cpu.system_instruction(insn)
