"""Privilege rules outside segmentation: CPL-0-only instructions, IOPL for
CLI/STI, IN/OUT by IOPL and the TSS I/O permission bitmap, and how POPF
treats IF and IOPL (Intel SDM Vol. 2 per instruction; Vol. 1 18.5)."""
from __future__ import annotations

import pytest

from x86core.asm import asm
from x86core.cpu import CPU, StopExecution

TSS, CODE = 0x6000, 0x1000


def machine(cpl: int, iopl: int = 0, bitmap_ports: tuple[int, ...] | None = None) -> CPU:
    cpu = CPU(1 << 20)
    cpu.cpl = cpl
    cpu.load_flat_segments()
    cpu.set_eflags(0x202 | iopl << 12)
    cpu.regs[4] = 0x8000
    if bitmap_ports is not None:
        # A 32-bit TSS whose I/O bitmap (at 0x68) allows only bitmap_ports.
        bitmap = bytearray(b"\xff" * 8192 + b"\xff")
        for port in bitmap_ports:
            bitmap[port >> 3] &= ~(1 << (port & 7))
        cpu.mem.load(TSS + 0x68, bytes(bitmap))
        cpu.mem.write(TSS + 0x66, 2, 0x68)
        cpu.tr = (0x28, TSS, 0x68 + len(bitmap) - 1, 0x8B)
    cpu.io.register(0x60, 8, read=lambda port, size: 0x5A, write=lambda p, s, v: None)

    def stop(cpu, exc):
        cpu.last = exc
        raise StopExecution(str(exc))
    cpu.exception_hook = stop
    cpu.last = None
    return cpu


def outcome(cpu: CPU, text: str):
    cpu.mem.load(CODE, asm(text + "\nnop\nnop", base=CODE))
    cpu.eip = CODE
    cpu.run(len(text.split("\n")) + 2)
    return None if cpu.last is None else (cpu.last.vector, cpu.last.error_code)


@pytest.mark.parametrize("text", [
    "hlt", "lgdt [0x100]", "lidt [0x100]", "lldt ax", "ltr ax", "mov cr0, eax", "mov eax, cr3",
    "mov dr7, eax", "clts", "invlpg [0x100]", "wbinvd", "invd", "rdmsr", "wrmsr", "lmsw ax",
])
@pytest.mark.parametrize("cpl", [1, 3])
def test_cpl0_instructions_fault_at_outer_rings(text, cpl):
    assert outcome(machine(cpl), text) == (13, 0)


@pytest.mark.parametrize("cpl, iopl, allowed", [(3, 0, False), (3, 3, True), (1, 1, True),
                                                (1, 0, False), (0, 0, True)])
@pytest.mark.parametrize("text", ["cli", "sti"])
def test_cli_sti_follow_iopl(cpl, iopl, allowed, text):
    assert outcome(machine(cpl, iopl), text) == (None if allowed else (13, 0))


@pytest.mark.parametrize("text, port, size", [("in al, 0x60", 0x60, 1), ("in eax, 0x60", 0x60, 4),
                                              ("out 0x61, al", 0x61, 1)])
def test_io_at_cpl3_needs_every_bit_of_the_bitmap(text, port, size):
    assert outcome(machine(3), text) == (13, 0)                           # no TSS: refused
    assert outcome(machine(3, bitmap_ports=()), text) == (13, 0)         # bitmap denies all
    assert outcome(machine(3, bitmap_ports=range(port, port + size)), text) is None
    if size > 1:                                                          # one byte short
        assert outcome(machine(3, bitmap_ports=range(port, port + size - 1)), text) == (13, 0)
    assert outcome(machine(3, iopl=3), text) is None                      # IOPL suffices


def test_io_reads_reach_the_port_bus():
    cpu = machine(0)
    assert outcome(cpu, "in al, 0x60") is None and cpu.regs[0] & 0xFF == 0x5A


@pytest.mark.parametrize("cpl, iopl", [(3, 0), (1, 1), (0, 0)])
def test_popf_masks_if_and_iopl_by_privilege(cpl, iopl):
    cpu = machine(cpl, iopl)
    # Try to clear IF and set IOPL to 3 through POPF.
    assert outcome(cpu, "push 0x3002\npopf") is None
    flags = cpu.get_eflags()
    assert (flags >> 12 & 3) == (3 if cpl == 0 else iopl)        # IOPL only at CPL 0
    assert bool(flags & 0x200) == (cpl > iopl)                  # IF only at CPL <= IOPL


def v86_machine(iopl: int) -> CPU:
    """A CPU already in virtual-8086 mode (as IRET with VM would leave it)."""
    cpu = machine(3, iopl)
    cpu.set_eflags(0x20202 | iopl << 12)
    for seg in range(6):
        cpu.seg_sel[seg], cpu.seg_base[seg], cpu.seg_limit[seg] = 0, 0, 0xFFFF
        cpu.seg_attr[seg] = 0xFB if seg == 1 else 0xF3
    cpu.bits = 16
    cpu.mode_changed()
    return cpu


@pytest.mark.parametrize("text", ["pushf", "push 0x202\npopf", "cli", "sti"])
@pytest.mark.parametrize("iopl", [0, 3])
def test_v86_iopl_sensitive_instructions(text, iopl):
    cpu = v86_machine(iopl)
    result = outcome(cpu, "bits 16\n" + text)
    assert result == (None if iopl == 3 else (13, 0))


def test_v86_popf_keeps_vm_and_iopl():
    cpu = v86_machine(3)
    assert outcome(cpu, "bits 16\npush 0\npopf") is None
    assert cpu.get_eflags() & 0x20000 and cpu.get_eflags() >> 12 & 3 == 3
