"""Bare-metal boot: the i386 power-on state and a small PC around the CPU.

`reset(cpu)` puts a CPU in the state the Intel SDM Vol. 3 (table 9-1,
"IA-32 Processor States Following Power-up, Reset, or INIT") gives: real
mode, CS selector F000 with base FFFF0000 and EIP FFF0, so the first
instruction is fetched at FFFFFFF0, 16 bytes below 4 GiB; every other
segment base 0 limit FFFF; EFLAGS 2; CR0 60000010 (CD, NW, ET); EDX the
processor signature (CPUID leaf 1 EAX); GDTR and IDTR base 0 limit FFFF;
DR6 FFFF0FF0, DR7 400.

`Machine` is the rest of a minimal PC for firmware-style images:
RAM, the firmware ROM mapped both below 1 MiB and below 4 GiB (a 64 KiB
image at F0000 and FFFF0000, a 128 KiB one at E0000 and FFFE0000), the
Bochs/QEMU debug port E9 (each byte written goes to the output stream as it
is written) and the POST code ports 80 and 190 (recorded, and printed on
stderr with `post=True`).  It runs until HLT ("halt"), a triple fault
("shutdown"), an exception nothing takes ("exception") or the instruction
limit ("limit"); `describe()` says which in one line.

    python -m x86core boot IMAGE --rom [--post] [--max-instructions N] [--trace-events]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import BinaryIO, TextIO

from . import flags as fl
from . import interrupts
from .cpu import CPU, CS
from .exceptions import NAMES
from .memory import IOBus, PhysicalMemory

# Table 9-1 values.
RESET_EIP = 0xFFF0
RESET_CS_SELECTOR = 0xF000
RESET_CS_BASE = 0xFFFF0000
RESET_CR0 = 0x60000010
RESET_EFLAGS = 0x00000002
RESET_DR6 = 0xFFFF0FF0
RESET_DR7 = 0x00000400
DATA_ATTR = 0x93            # present, read/write, accessed
CODE_ATTR = 0x9B            # present, execute/read, accessed
LDT_ATTR = 0x82             # present, LDT
TSS_ATTR = 0x8B             # present, busy 32-bit TSS

DEBUG_PORT = 0xE9
POST_PORTS = (0x80, 0x190)
ROM_SIZES = {0x10000: (0xF0000, 0xFFFF0000), 0x20000: (0xE0000, 0xFFFE0000)}
DEFAULT_MEMORY = 16 << 20
BOOT_SECTOR = 0x7C00


class BootError(Exception):
    """An image that cannot be booted (wrong size, does not fit): one line."""


def reset(cpu: CPU) -> None:
    """The power-on / RESET state (SDM Vol. 3 table 9-1)."""
    cpu.regs[:] = [0] * 8
    cpu.regs[2] = cpu.cpuid(1)[0]               # EDX: family, model, stepping
    cpu.eip = RESET_EIP
    cpu.set_eflags(RESET_EFLAGS)
    for seg in range(6):
        cpu.seg_sel[seg] = 0
        cpu.seg_base[seg] = 0
        cpu.seg_limit[seg] = 0xFFFF
        cpu.seg_attr[seg] = DATA_ATTR
    cpu.seg_sel[CS] = RESET_CS_SELECTOR
    cpu.seg_base[CS] = RESET_CS_BASE
    cpu.seg_attr[CS] = CODE_ATTR
    cpu.cr0 = RESET_CR0
    cpu.cr2 = cpu.cr3 = cpu.cr4 = 0
    cpu.dr[:] = [0] * 8
    cpu.dr[6], cpu.dr[7] = RESET_DR6, RESET_DR7
    cpu.gdtr = (0, 0xFFFF)
    cpu.idtr = (0, 0xFFFF)
    cpu.ldtr = (0, 0, 0xFFFF, LDT_ATTR)
    cpu.tr = (0, 0, 0xFFFF, TSS_ATTR)
    cpu.cpl = 0
    cpu.bits = 16
    cpu.halted = False
    cpu.inhibit_irq = False
    cpu.icount = 0                              # the TSC starts at 0
    cpu.tsc_offset = 0
    cpu.flush_tlb()
    cpu.blocks.flush()
    cpu.mode_changed()


class Machine:
    """RAM, firmware ROM, the debug and POST ports, and a CPU at reset."""

    def __init__(self, memory_size: int = DEFAULT_MEMORY, *, out: BinaryIO | None = None,
                 post: bool = False, err: TextIO | None = None):
        self.mem = PhysicalMemory(memory_size)
        self.io = IOBus()
        self.cpu = CPU(self.mem, self.io)
        self.out = out if out is not None else sys.stdout.buffer
        self.err = err if err is not None else sys.stderr
        self.post = post
        self.post_codes: list[tuple[int, int]] = []      # (port, value) in order written
        self.rom = None
        self.result: str | None = None
        self.io.register(DEBUG_PORT, 1, read=lambda port, size: DEBUG_PORT, write=self._debug_out)
        for port in POST_PORTS:
            self.io.register(port, 1, write=self._post_out)
        reset(self.cpu)

    # -- devices -------------------------------------------------------------------
    def _debug_out(self, port: int, size: int, value: int) -> None:
        # Only the low byte, as the Bochs/QEMU port E9 hack does; written
        # through at once so output interleaves with everything else.
        self.out.write(bytes((value & 0xFF,)))
        self.out.flush()

    def _post_out(self, port: int, size: int, value: int) -> None:
        self.post_codes.append((port, value))
        if self.post:
            print(f"POST {port:#x}: {value:#0{2 + 2 * size}x}", file=self.err, flush=True)

    # -- images --------------------------------------------------------------------
    def load_rom(self, data: bytes) -> None:
        """Map `data` as the firmware ROM at both its places."""
        if len(data) not in ROM_SIZES:
            raise BootError(f"a ROM image must be 64 KiB or 128 KiB, not {len(data)} bytes")
        self.rom = self.mem.map_rom(data, *ROM_SIZES[len(data)])

    def load_boot_sector(self, data: bytes) -> None:
        """A raw image in RAM at 0x7C00, entered at 0000:7C00 with DL = 80h:
        where a BIOS would leave a boot sector (but no BIOS services)."""
        if not data or BOOT_SECTOR + len(data) > min(self.mem.size, 0xA0000):
            raise BootError(f"a {len(data)}-byte image does not fit in conventional memory at 0x7c00")
        self.mem.load(BOOT_SECTOR, data)
        cpu = self.cpu
        cpu.seg_sel[CS], cpu.seg_base[CS] = 0, 0
        cpu.eip = BOOT_SECTOR
        cpu.regs[2] = 0x80
        cpu.mode_changed()

    # -- running --------------------------------------------------------------------
    def run(self, max_instructions: int | None = None) -> str:
        self.result = self.cpu.run(max_instructions)
        return self.result

    def where(self) -> str:
        cpu = self.cpu
        width = 4 if cpu.bits == 16 and cpu.eip <= 0xFFFF else 8
        return f"{cpu.seg_sel[CS]:04x}:{cpu.eip:0{width}x}"

    def describe(self) -> str:
        """One line on why the run ended."""
        cpu = self.cpu
        result = self.result
        reason = getattr(cpu, "stop_reason", "")
        if result == "halt":
            text = f"halted at {self.where()}"
            if cpu.eflags & fl.IF:
                text += " (interrupts enabled, but nothing will raise one)"
            return text
        if result == "shutdown":
            detail = re.fullmatch(r"triple fault \((.*)\) at eip \S+: shutdown", reason, re.S)
            return f"shutdown (triple fault) at {self.where()}: {detail.group(1) if detail else reason}"
        if result == "exception":
            reason = re.sub(r" at eip 0x[0-9a-f]+$", "", reason)
            return f"{reason} at {self.where()}"
        if result == "limit":
            return f"instruction limit reached at {self.where()} after {cpu.icount} instructions"
        if result == "stop":
            return f"stopped at {self.where()}: {reason}"
        return f"not run ({result})"


EXIT_STATUS = {"halt": 0, "limit": 3}


def boot_image(path: str | Path, rom: bool = True, post: bool = False,
               max_instructions: int | None = None, *, memory_size: int = DEFAULT_MEMORY,
               out: BinaryIO | None = None, err: TextIO | None = None) -> Machine:
    """Build a Machine around the image at `path` and run it; the Machine
    (with `.result` and `.describe()`) is returned.  OSError for an unreadable
    file, BootError for an image that does not fit."""
    data = Path(path).read_bytes()
    machine = Machine(memory_size, out=out, post=post, err=err)
    if rom:
        machine.load_rom(data)
    else:
        machine.load_boot_sector(data)
    machine.run(max_instructions)
    return machine


# -- --trace-events -------------------------------------------------------------------
def trace_hooks() -> list | None:
    """interrupts.TRACE_HOOKS, where the protection layer provides it."""
    hooks = getattr(interrupts, "TRACE_HOOKS", None)
    return hooks if isinstance(hooks, list) else None


def event_printer(err: TextIO | None = None):
    """A TRACE_HOOKS entry printing each event as one line on stderr: an
    interrupts.Delivery record as `event: KIND NAME OLD -> NEW cpl A->B`,
    anything else the protection layer passes as its values (the CPU left out)."""
    def printer(*args, **kwargs):
        if len(args) == 1 and not kwargs and hasattr(args[0], "kind") and hasattr(args[0], "old_cs"):
            line = format_delivery(args[0])
        else:
            parts = [_show(a) for a in args if not isinstance(a, CPU)]
            parts += [f"{k}={_show(v)}" for k, v in kwargs.items() if not isinstance(v, CPU)]
            line = " ".join(parts)
        print("event: " + line, file=err if err is not None else sys.stderr, flush=True)
    return printer


def format_delivery(d) -> str:
    """`fault #PF(0x6) 001b:000f100c -> 0008:000f01e2 cpl 3->0 stack switched`."""
    if d.kind == "iret" or d.vector is None:
        what = d.kind
    else:
        name = f"INT {d.vector:#x}" if d.kind == "software" else NAMES.get(d.vector, f"vector {d.vector:#x}")
        if d.error_code is not None:
            name += f"({d.error_code:#x})"
        what = f"{d.kind} {name}"
    text = f"{what} {d.old_cs:04x}:{d.old_eip:08x} -> {d.new_cs:04x}:{d.new_eip:08x}"
    if d.old_cpl != d.new_cpl:
        text += f" cpl {d.old_cpl}->{d.new_cpl}"
    if getattr(d, "stack_switched", False):
        text += " stack switched"
    return text


def _show(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:#x}"
    return str(value)
