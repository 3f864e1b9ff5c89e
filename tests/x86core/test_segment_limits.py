"""Limit and type checks on every data access (SDM Vol. 3 5.3, 5.4): the
fast per-segment bound in generated code and cpu.check_segment behind it."""
from __future__ import annotations

import struct

import pytest

from x86core.asm import asm
from x86core.cpu import CPU, StopExecution
from x86core.exceptions import GP, SS
from x86core.segmentation import make_descriptor

CODE, GDT, STACK = 0x1000, 0x8000, 0x9000
FLAT_CODE, FLAT_DATA, SMALL, EXPAND_DOWN, READ_ONLY, SMALL_STACK = 1, 2, 3, 4, 5, 6


def machine(cache: bool) -> CPU:
    cpu = CPU(1 << 20)
    gdt = [0,
           make_descriptor(0, 0xFFFFFFFF, 0x9B),          # 0x08 flat code
           make_descriptor(0, 0xFFFFFFFF, 0x93),          # 0x10 flat data
           make_descriptor(0x20000, 0xFFF, 0x93, 0x4),    # 0x18 data, limit 0xFFF
           make_descriptor(0x20000, 0xFFF, 0x97, 0x4),    # 0x20 expand-down, (0xFFF, 4G)
           make_descriptor(0x20000, 0xFFFF, 0x91, 0x4),   # 0x28 read-only data
           make_descriptor(0, 0x8FFF, 0x93, 0x4)]         # 0x30 stack, limit 0x8FFF
    cpu.mem.load(GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
    cpu.gdtr = (GDT, 8 * len(gdt) - 1)
    cpu.load_flat_segments()
    cpu.regs[4] = STACK
    cpu.blocks.enabled = cache
    cpu.exception_hook = _stop
    return cpu


def _stop(cpu, exc):
    cpu.last = exc
    raise StopExecution(str(exc))


def run(cpu: CPU, text: str):
    cpu.mem.load(CODE, asm(text + "\nhlt", base=CODE))
    cpu.eip = CODE
    why = cpu.run(10_000)
    return (cpu.last.vector, cpu.last.error_code, cpu.eip) if why == "stop" else why


def at(text: str) -> int:
    """Address of the last instruction of `text` (where a fault must point)."""
    lines = text.split("\n")
    return CODE + len(asm("\n".join(lines[:-1]), base=CODE)) if len(lines) > 1 else CODE


CASES = [
    # (segment set-up, access, expected: "halt" or the fault vector)
    (f"mov ax, {SMALL * 8}\nmov ds, ax", "mov eax, [0xffc]", "halt"),
    (f"mov ax, {SMALL * 8}\nmov ds, ax", "mov eax, [0xffd]", GP),       # last byte past the limit
    (f"mov ax, {SMALL * 8}\nmov ds, ax", "mov byte ptr [0x1000], 1", GP),
    (f"mov ax, {EXPAND_DOWN * 8}\nmov es, ax", "mov eax, es:[0x1000]", "halt"),
    (f"mov ax, {EXPAND_DOWN * 8}\nmov es, ax", "mov eax, es:[0xfff]", GP),   # at the limit: invalid
    (f"mov ax, {READ_ONLY * 8}\nmov ds, ax", "mov eax, [0x10]", "halt"),
    (f"mov ax, {READ_ONLY * 8}\nmov ds, ax", "mov [0x10], eax", GP),
    ("xor eax, eax\nmov ds, ax", "mov eax, [0x10]", GP),                  # null selector
    (f"mov ax, {SMALL * 8}\nmov fs, ax", "mov eax, fs:[0xffe]", GP),
    (f"mov ax, {SMALL * 8}\nmov gs, ax", "inc dword ptr gs:[0xff8]", "halt"),
    (f"mov ax, {SMALL_STACK * 8}\nmov ss, ax", "push eax", "halt"),         # esp 0x9000 -> 0x8ffc
    (f"mov ax, {SMALL_STACK * 8}\nmov ss, ax\nmov esp, 0x9002", "push eax", SS),
    (f"mov ax, {SMALL * 8}\nmov es, ax\nmov edi, 0xff8\nmov ecx, 4\ncld", "rep stosd", GP),
]


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "nocache"])
@pytest.mark.parametrize("setup, access, expected", CASES)
def test_access_checked_against_the_segment(cache, setup, access, expected):
    cpu = machine(cache)
    text = f"{setup}\n{access}"
    outcome = run(cpu, text)
    if expected == "halt":
        assert outcome == "halt"
    else:
        assert outcome == (expected, 0, at(text))


def test_rep_stosd_stops_at_the_limit_with_exact_registers():
    cpu = machine(True)
    run(cpu, f"mov ax, {SMALL * 8}\nmov es, ax\nmov edi, 0xff8\nmov ecx, 4\ncld\nrep stosd")
    assert cpu.regs[7] == 0x1000 and cpu.regs[1] == 2      # two dwords stored, then #GP


def test_real_mode_word_at_offset_ffff_faults():
    cpu = CPU(1 << 20)
    cpu.seg_limit = [0xFFFF] * 6
    cpu.bits = 16
    cpu.mode_changed()
    cpu.exception_hook = _stop
    cpu.mem.load(0x1000, asm("bits 16\nmov ax, [0xffff]\nhlt", base=0x1000))
    cpu.seg_base[1] = 0
    cpu.eip = 0x1000
    cpu.mode_changed()
    assert cpu.run(100) == "stop" and cpu.last.vector == GP
    cpu.mem.load(0x1000, asm("bits 16\nmov ax, [0xfffe]\nhlt", base=0x1000))
    cpu.eip = 0x1000
    assert cpu.run(100) == "halt"
