"""Native code: Python functions standing in for privileged machine code.

A Guest kernel written in Python still has to run *on* the CPU: its entry
points are real code that the CPU reaches through gates, IRET and jumps.
At each entry point the code holds UD2 (0F 0B), the instruction Intel
reserves to be undefined; when the CPU faults on one at CPL 0-2 and the
linear address is registered here, the registered function runs in place of
the #UD delivery, with the CPU state exactly as at that instruction, and
decides where execution goes next (it sets EIP, and may deliver an
exception itself).  This is the high-level emulation trick emulators use for
firmware calls; ring 3 never reaches it, and an unregistered UD2 still
raises #UD as the hardware does.

The hook sits in CPU.exception_hook (chaining whatever was there), so it
costs nothing until a #UD happens.
"""
from .exceptions import UD, CPUException
from . import interrupts


class NativeCode:
    """The table of native entry points on one CPU, keyed by linear address."""

    def __init__(self, cpu):
        self.cpu = cpu
        self.entries: dict[int, object] = {}
        self._chained = cpu.exception_hook
        cpu.exception_hook = self._hook
        # The block cache compiles a registered UD2 into a direct call (the
        # hook below is the path for code run without the cache).
        cpu.native = self

    def register(self, linear: int, handler) -> None:
        """Run `handler(cpu)` when supervisor code executes the UD2 at `linear`."""
        self.entries[linear & 0xFFFFFFFF] = handler
        self._forget_blocks(linear & 0xFFFFFFFF)

    def _forget_blocks(self, linear: int) -> None:
        """A block already built at `linear` would still fault: drop it."""
        blocks = self.cpu.blocks
        for table in blocks.modes.values():
            table.pop(linear, None)
        blocks.clear_fast()

    def detach(self) -> None:
        if self.cpu.exception_hook == self._hook:
            self.cpu.exception_hook = self._chained
        if self.cpu.native is self:
            self.cpu.native = None
            for linear in self.entries:
                self._forget_blocks(linear)

    def _hook(self, cpu, exc: CPUException) -> bool:
        if exc.vector == UD and cpu.cpl != 3 and not exc.software:
            handler = self.entries.get((cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF)
            if handler is not None:
                try:
                    handler(cpu)
                except CPUException as fault:
                    # A native function's own fault: delivered as the
                    # instruction's, through the IDT.
                    return interrupts.deliver_exception(cpu, fault)
                return True
        return self._chained is not None and self._chained(cpu, exc)
