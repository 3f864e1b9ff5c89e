"""The block cache's loop blocks and fast dispatch table (x86core/blocks.py,
cpu.run's fast path): they must be invisible except in speed."""
from __future__ import annotations

import pytest

from x86core.asm import asm
from x86core.blocks import LOOP_BUDGET
from x86core.cpu import CPU, StopExecution

CODE = 0x1000
DATA = 0x50000


def machine(paging_hole: int | None = None) -> CPU:
    """Flat ring 0 with paging: the first 1 MiB identity-mapped, except one
    absent page if asked."""
    cpu = CPU(2 << 20)
    cpu.load_flat_segments()
    pd, pt = 0x100000, 0x101000
    cpu.mem.write(pd, 4, pt | 3)
    for page in range(256):
        if page << 12 != paging_hole:
            cpu.mem.write(pt + 4 * page, 4, page << 12 | 3)
    cpu.write_cr(3, pd)
    cpu.write_cr(0, cpu.cr0 | 0x80000000)
    cpu.regs[4] = 0x8000
    cpu.exception_hook = _stop_on_exception     # no IDT here: report, don't deliver
    return cpu


def _stop_on_exception(cpu, exc):
    cpu.last_exception = exc
    raise StopExecution(str(exc))


def load(cpu: CPU, text: str) -> None:
    cpu.mem.load(CODE, asm(text, base=CODE))
    cpu.eip = CODE


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("count", [1, 2, LOOP_BUDGET - 1, LOOP_BUDGET, LOOP_BUDGET + 1, 3000])
def test_self_loop_counts_every_instruction(cache, count):
    cpu = machine()
    cpu.blocks.enabled = cache
    load(cpu, f"mov ecx, {count}\nl: add eax, 3\ndec ecx\njnz l\nhlt")
    assert cpu.run() == "halt"
    assert cpu.regs[1] == 0 and cpu.regs[0] == 3 * count
    assert cpu.icount == 1 + 3 * count + 1
    assert cpu.get_eflags() & 0x40       # ZF from the last DEC


def test_jump_to_itself_returns_at_the_limit():
    cpu = machine()
    load(cpu, "l: jmp l")
    assert cpu.run(max_instructions=10_000) == "limit"
    assert cpu.eip == CODE
    # Bounded: a loop block gives control back after LOOP_BUDGET iterations.
    assert 10_000 <= cpu.icount <= 10_000 + LOOP_BUDGET


@pytest.mark.parametrize("cache", [True, False])
def test_fault_in_a_loop_iteration_is_precise(cache):
    cpu = machine(paging_hole=DATA + 0x1000)
    cpu.blocks.enabled = cache
    # Store dwords upwards from DATA until the absent page faults: iteration
    # 1024 (the first store into the hole) must fault with all before done.
    load(cpu, f"mov edi, {DATA:#x}\nl: mov [edi], edi\nadd edi, 4\ninc ebx\njmp l")
    assert cpu.run() == "stop" and cpu.last_exception.vector == 14
    assert cpu.cr2 == DATA + 0x1000 and cpu.regs[7] == DATA + 0x1000
    assert cpu.regs[3] == 1024
    assert cpu.eip == CODE + 5                       # the faulting store
    assert cpu.icount == 1 + 4 * 1024
    assert cpu.mem.read(DATA + 0xFFC, 4) == DATA + 0xFFC


def test_fast_table_is_dropped_when_the_code_page_is_remapped():
    cpu = machine()
    pt = 0x101000
    # Two copies of a tiny routine at different physical pages; linear 0x3000 maps one.
    cpu.mem.load(0x3000, asm("mov eax, 1\nret", base=0x3000))
    cpu.mem.load(0x4000, asm("mov eax, 2\nret", base=0x3000))
    load(cpu, "mov ecx, 40\nl: call 0x3000\nadd ebx, eax\ndec ecx\njnz l\nhlt")
    assert cpu.run() == "halt" and cpu.regs[3] == 40
    cpu.mem.write(pt + 4 * 3, 4, 0x4000 | 3)         # remap linear 0x3000 -> phys 0x4000
    cpu.invlpg(0x3000)
    cpu.halted = False
    load(cpu, "mov ecx, 40\nmov ebx, 0\nl: call 0x3000\nadd ebx, eax\ndec ecx\njnz l\nhlt")
    assert cpu.run() == "halt" and cpu.regs[3] == 80


def test_code_patched_by_a_running_loop_takes_effect():
    cpu = machine()
    # The loop overwrites the immediate of an instruction in a routine it
    # calls every iteration: the routine must see each new value.
    cpu.mem.load(0x3000, asm("mov eax, 0\nret", base=0x3000))
    load(cpu, "mov ecx, 1\nl: mov [0x3001], ecx\ncall 0x3000\nadd ebx, eax\ninc ecx\n"
              "cmp ecx, 301\njne l\nhlt")
    assert cpu.run() == "halt"
    assert cpu.regs[3] == sum(range(1, 301))


def test_reading_ahead_past_the_code_page_leaves_cr2_alone():
    cpu = machine(paging_hole=0x2000)       # code page 0x1000, absent page after it
    cpu.cr2 = 0x1234
    load(cpu, "mov eax, 5\nhlt")            # the builder reads ahead into 0x2000
    assert cpu.run() == "halt" and cpu.cr2 == 0x1234
