"""CPU state that programs can observe directly: CPUID, the TSC, the absent FPU."""
from __future__ import annotations

import pytest

from x86core.asm import asm
from x86core.cpu import CPU, CPUID


def run(cpu: CPU, text: str) -> CPU:
    cpu.load_flat_segments()
    cpu.regs[4] = 0x8000
    cpu.mem.load(0x1000, asm(text + "\nhlt", base=0x1000))
    cpu.eip = 0x1000
    assert cpu.run(10_000) == "halt"
    return cpu


def test_default_cpuid_is_an_integer_p6_without_fpu():
    cpu = run(CPU(1 << 20), "mov eax, 1\ncpuid")
    edx = cpu.regs[2]
    assert edx & (1 << 4) and edx & (1 << 8) and edx & (1 << 15)    # TSC, CX8, CMOV
    assert not edx & 1 and not edx & (1 << 23) and not edx & (1 << 25)  # no FPU, MMX, SSE
    cpu = run(CPU(1 << 20), "mov eax, 0\ncpuid")
    vendor = b"".join(r.to_bytes(4, "little") for r in (cpu.regs[3], cpu.regs[2], cpu.regs[1]))
    assert vendor == b"PyLguestCPU!"


def test_cpuid_table_is_configurable_per_cpu():
    leaves = dict(CPUID)
    leaves[1] = (0x00000611, 0, 0, 1 << 4)      # a part with only a TSC
    cpu = run(CPU(1 << 20, cpuid=leaves), "mov eax, 1\ncpuid")
    assert cpu.regs[0] == 0x611 and cpu.regs[2] == 1 << 4
    assert CPU(1 << 20).cpuid(1) == CPUID[1]            # others keep the default


def test_unknown_leaves_answer_as_the_sdm_says():
    cpu = CPU(1 << 20)
    assert cpu.cpuid(0x7FFF) == cpu.cpuid(max(k for k in CPUID if k < 0x80000000))
    assert cpu.cpuid(0x80000008) == (0, 0, 0, 0)


def test_rdtsc_counts_retired_instructions():
    cpu = run(CPU(1 << 20), "nop\nnop\nrdtsc\nmov esi, eax\nnop\nrdtsc")
    assert cpu.regs[6] == 2 and cpu.regs[0] == 5


def _first_exception(cpu: CPU, text: str):
    from x86core.cpu import StopExecution

    def stop(cpu, exc):
        cpu.last = exc
        raise StopExecution(str(exc))
    cpu.exception_hook = stop
    cpu.last = None
    cpu.halted = False
    cpu.load_flat_segments()
    cpu.regs[4] = 0x8000
    cpu.mem.load(0x1000, asm(text + "\nhlt", base=0x1000))
    cpu.eip = 0x1000
    cpu.run(1000)
    return cpu.last.vector if cpu.last else None


@pytest.mark.parametrize("cache", [True, False])
def test_x87_without_fpu_is_ud_or_nm_by_cr0(cache):
    cpu = CPU(1 << 20)
    cpu.blocks.enabled = cache
    assert _first_exception(cpu, "db 0xdb, 0xe3") == 6                   # no FPU, EM=TS=0: #UD
    cpu.cr0 |= 0x8                                                 # TS, after the block was built
    assert _first_exception(cpu, "db 0xdb, 0xe3") == 7
    cpu.cr0 = (cpu.cr0 & ~0x8) | 0x4                               # EM
    assert _first_exception(cpu, "db 0xdb, 0xe3") == 7


@pytest.mark.parametrize("cr0_bits, expected", [(0, None), (0x8, None), (0x2, None), (0xA, 7)])
def test_fwait_faults_only_with_ts_and_mp(cr0_bits, expected):
    cpu = CPU(1 << 20)
    cpu.cr0 |= cr0_bits
    assert _first_exception(cpu, "fwait") == expected


def test_no_full_collection_while_the_cpu_runs_and_the_collector_restored_after():
    import gc
    seen = []
    cpu = CPU(1 << 20)
    cpu.io.register(0x80, write=lambda port, size, value: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    run(cpu, "out 0x80, al")
    assert seen and seen[0][:2] == before[:2] and seen[0][2] > 1 << 20
    assert gc.get_threshold() == before
    # Also when the run ends in an exception nobody takes.
    cpu = CPU(1 << 20)
    cpu.load_flat_segments()
    cpu.mem.load(0x1000, asm("ud2", base=0x1000))
    cpu.eip = 0x1000
    assert cpu.run(100) == "exception" and gc.get_threshold() == before
