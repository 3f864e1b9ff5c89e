"""Paging: #PF error codes and CR2, accessed/dirty bits, the TLB and the
block cache under remapping.

The protection table covers every combination of the present, R/W and U/S
bits at both levels, CR0.WP, CPL 0 and 3, reads and writes, for 4 KiB pages
and for 4 MiB pages (CR4.PSE).  The expected outcome is computed here from
the rules of the Intel SDM Vol. 3 (4.6 "Access Rights", 4.7 "Page-Fault
Exceptions", for 32-bit paging on a processor without SMEP/SMAP/NX), written
out directly rather than taken from the CPU's code, and each case is checked
twice: against `cpu.translate`, and by executing a `mov` at that CPL.
"""
from __future__ import annotations

import itertools

import attrs
import pytest

from x86core.asm import asm
from x86core.cpu import CPU, StopExecution
from x86core.exceptions import BP, PF
from x86core.memory import PhysicalMemory

EAX, ECX, EDX, EBX = 0, 1, 2, 3
P, W, U, A, D, PS, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
CR0_WP, CR0_PG = 0x10000, 0x80000000
CR4_PSE, CR4_PGE = 0x10, 0x80

MEMORY = 16 << 20
PD = 0x1000                     # page directory
PT_CODE = 0x2000                # page table for linear 0-4 MiB (the code page)
PT_DATA = 0x3000                # page table for linear 8-12 MiB (the page under test)
CODE = 0x10000                  # code page: linear = physical, user, read-only
TARGET = 0x00801234             # PDE 2, PTE 1, offset 0x234
SMALL_PAGE = 0x5000             # where a 4 KiB TARGET page maps
LARGE_PAGE = 0x800000           # where a 4 MiB TARGET page maps
READ_VALUE = 0x5EED1234
WRITE_VALUE = 0xCAFEBABE


# -- the rules, written independently --------------------------------------------------------

@attrs.frozen
class Case:
    large: bool                 # 4 MiB page (PDE.PS with CR4.PSE) or 4 KiB
    pde: int                    # the PDE's P, R/W, U/S bits
    pte: int                    # the PTE's (4 KiB only)
    wp: bool
    cpl: int
    write: bool

    @property
    def id(self) -> str:
        def bits(v):
            return "".join(c if v & m else "-" for c, m in (("P", P), ("W", W), ("U", U)))
        level = f"4M-pde{bits(self.pde)}" if self.large else f"4K-pde{bits(self.pde)}-pte{bits(self.pte)}"
        return f"{level}-wp{int(self.wp)}-cpl{self.cpl}-{'write' if self.write else 'read'}"


def expected_error(case: Case) -> int | None:
    """None when the access succeeds, else the #PF error code (SDM 4.7:
    bit 0 set for a protection violation, clear for a not-present entry;
    bit 1 a write; bit 2 an access at CPL 3)."""
    code = (2 if case.write else 0) | (4 if case.cpl == 3 else 0)
    entries = [case.pde] if case.large else [case.pde, case.pte]
    if any(not e & P for e in entries):
        return code
    user_ok = all(e & U for e in entries)           # U/S: every level must allow user
    write_ok = all(e & W for e in entries)          # R/W: every level must allow writes
    if case.cpl == 3:
        allowed = user_ok and (write_ok or not case.write)
    else:
        # Supervisor: reads always; writes to read-only pages only with WP clear.
        allowed = not case.write or write_ok or not case.wp
    return None if allowed else code | 1


CASES = [Case(False, pde, pte, wp, cpl, write)
         for pde, pte in itertools.product(range(8), range(8))
         for wp, cpl, write in itertools.product((False, True), (0, 3), (False, True))]
CASES += [Case(True, pde, 0, wp, cpl, write)
          for pde in range(8)
          for wp, cpl, write in itertools.product((False, True), (0, 3), (False, True))]


# -- a CPU with the page under test ----------------------------------------------------------

class Rig:
    """Flat segments at the given CPL, paging on: linear 0-4 MiB through
    PT_CODE (only the code page mapped, user read-only), linear 8-12 MiB
    through the PDE under test."""

    def __init__(self, case: Case | None = None, cpl: int = 0):
        cpu = self.cpu = CPU(PhysicalMemory(MEMORY))
        cpu.cpl = case.cpl if case else cpl
        cpu.load_flat_segments()
        mem = cpu.mem
        mem.write(PD, 4, PT_CODE | P | W | U)
        mem.write(PT_CODE + 4 * (CODE >> 12), 4, CODE | P | U)
        mem.write(SMALL_PAGE + (TARGET & 0xFFF), 4, READ_VALUE)
        mem.write(LARGE_PAGE + (TARGET & 0x3FFFFF), 4, READ_VALUE)
        if case is not None:
            self.pde_addr = PD + 4 * (TARGET >> 22)
            self.pte_addr = PT_DATA + 4 * (TARGET >> 12 & 0x3FF)
            if case.large:
                mem.write(self.pde_addr, 4, LARGE_PAGE | PS | case.pde)
            else:
                mem.write(self.pde_addr, 4, PT_DATA | case.pde)
                mem.write(self.pte_addr, 4, SMALL_PAGE | case.pte)
        cpu.write_cr(4, CR4_PSE if case is not None and case.large else 0)
        cpu.write_cr(3, PD)
        cpu.write_cr(0, cpu.cr0 | CR0_PG | (CR0_WP if case is not None and case.wp else 0))
        self.exceptions = []

        def hook(cpu, exc):
            self.exceptions.append(exc)
            raise StopExecution(str(exc))
        cpu.exception_hook = hook

    def load(self, text: str, at: int = CODE) -> None:
        """Code at linear `at` (its physical page is found by a walk)."""
        cpu = self.cpu
        code = asm(text, base=at)
        phys = cpu.translate(at, False, False)
        cpu.mem.load(phys, code)
        cpu.blocks.flush()          # a bulk load is no CPU write

    def run(self, start: int = CODE):
        """Run from `start` until the first exception (int3 ends every
        snippet); returns that exception."""
        cpu = self.cpu
        cpu.eip = start
        del self.exceptions[:]
        assert cpu.run(max_instructions=1000) == "stop"
        return self.exceptions[0]


# -- the table ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_translate_follows_the_access_rules(case):
    rig = Rig(case)
    cpu = rig.cpu
    want = expected_error(case)
    cpu.cr2 = 0
    try:
        phys = cpu.translate(TARGET, case.write, case.cpl == 3)
    except Exception as exc:       # noqa: BLE001 - checked below
        assert want is not None, f"{case.id}: faulted with {exc}, expected success"
        assert (exc.vector, exc.error_code, cpu.cr2) == (PF, want, TARGET)
        return
    assert want is None, f"{case.id}: succeeded, expected #PF({want:#x})"
    page = LARGE_PAGE | (TARGET & 0x3FFFFF) if case.large else SMALL_PAGE | (TARGET & 0xFFF)
    assert phys == page


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mov_at_cpl_faults_exactly_as_the_rules_say(case):
    rig = Rig(case)
    cpu, mem = rig.cpu, rig.cpu.mem
    want = expected_error(case)
    data_phys = LARGE_PAGE | (TARGET & 0x3FFFFF) if case.large else SMALL_PAGE | (TARGET & 0xFFF)
    pde_before = mem.read(rig.pde_addr, 4)
    pte_before = mem.read(rig.pte_addr, 4)
    if case.write:
        rig.load(f"mov [{TARGET:#x}], ebx; int3")
    else:
        rig.load(f"mov eax, [{TARGET:#x}]; int3")
    cpu.regs[EAX], cpu.regs[EBX] = 0, WRITE_VALUE
    exc = rig.run()
    if want is not None:
        assert (exc.vector, exc.error_code) == (PF, want), case.id
        assert cpu.cr2 == TARGET
        assert cpu.eip == CODE                      # the fault is on the mov itself
        assert mem.read(data_phys, 4) == READ_VALUE  # nothing written
        assert cpu.regs[EAX] == 0
        return
    assert exc.vector == BP, f"{case.id}: {exc}"
    if case.write:
        assert mem.read(data_phys, 4) == WRITE_VALUE
    else:
        assert cpu.regs[EAX] == READ_VALUE
    # Accessed in every entry used; dirty in the entry that maps the page, on writes.
    pde_after, pte_after = mem.read(rig.pde_addr, 4), mem.read(rig.pte_addr, 4)
    if case.large:
        assert pde_after == pde_before | A | (D if case.write else 0)
        assert pte_after == pte_before
    else:
        assert pde_after == pde_before | A          # a PDE pointing to a table has no D
        assert pte_after == pte_before | A | (D if case.write else 0)


def test_the_table_is_complete():
    assert len(CASES) == 2 ** 9 + 2 ** 6
    assert len({c.id for c in CASES}) == len(CASES)
    outcomes = {expected_error(c) for c in CASES}
    # Every error code but 1: a supervisor read of a present page is always allowed.
    assert outcomes == {None, 0, 2, 3, 4, 5, 6, 7}


def test_pde_ps_is_ignored_without_cr4_pse():
    case = Case(False, P | W | U, P | W | U, False, 0, False)
    rig = Rig(case)
    cpu, mem = rig.cpu, rig.cpu.mem
    mem.write(rig.pde_addr, 4, PT_DATA | PS | P | W | U)
    cpu.write_cr(4, 0)
    assert cpu.translate(TARGET, False) == SMALL_PAGE | (TARGET & 0xFFF)
    cpu.write_cr(4, CR4_PSE)
    assert cpu.translate(TARGET, False) == (PT_DATA & 0xFFC00000) | (TARGET & 0x3FFFFF)


def test_accessed_bit_is_set_by_a_read_and_dirty_only_by_a_write():
    case = Case(False, P | W | U, P | W | U, True, 3, False)
    rig = Rig(case)
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov eax, [{TARGET:#x}]; int3; mov [{TARGET:#x}], ebx; int3")
    assert mem.read(rig.pte_addr, 4) & (A | D) == 0
    rig.run()
    assert mem.read(rig.pte_addr, 4) & (A | D) == A
    assert mem.read(rig.pde_addr, 4) & A
    del rig.exceptions[:]
    assert cpu.run(1000) == "stop"      # on from the first int3 to the second
    assert cpu.regs[EAX] == READ_VALUE
    assert mem.read(rig.pte_addr, 4) & (A | D) == A | D
    # The code page was only fetched from: accessed, never dirty.
    code_pte = mem.read(PT_CODE + 4 * (CODE >> 12), 4)
    assert code_pte & (A | D) == A


# -- the TLB -----------------------------------------------------------------------------------

OLD_PAGE, NEW_PAGE = 0x6000, 0x7000
OLD_VALUE, NEW_VALUE = 0x01D01D01, 0x0E00E00E
SLOT = 0x00802000               # a linear page under PT_DATA


def tlb_rig(pte_flags: int = P | W | U, pge: bool = False) -> Rig:
    rig = Rig(cpl=0)
    cpu, mem = rig.cpu, rig.cpu.mem
    mem.write(PD + 4 * (SLOT >> 22), 4, PT_DATA | P | W | U)
    mem.write(OLD_PAGE, 4, OLD_VALUE)
    mem.write(NEW_PAGE, 4, NEW_VALUE)
    rig.slot_pte = PT_DATA + 4 * (SLOT >> 12 & 0x3FF)
    mem.write(rig.slot_pte, 4, OLD_PAGE | pte_flags)
    if pge:
        cpu.write_cr(4, cpu.cr4 | CR4_PGE)
    cpu.write_cr(3, PD)
    return rig


def test_a_changed_pte_is_not_seen_until_invlpg():
    rig = tlb_rig()
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    assert cpu.regs[EAX] == OLD_VALUE
    mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U)     # behind the TLB's back
    rig.run()
    assert cpu.regs[EAX] == OLD_VALUE, "the cached translation must still be used"
    assert cpu.translate(SLOT, False) == NEW_PAGE      # a fresh walk sees the new entry
    rig.run()
    assert cpu.regs[EAX] == OLD_VALUE, "translate() is a walk, not a TLB flush"
    cpu.invlpg(SLOT)
    rig.run()
    assert cpu.regs[EAX] == NEW_VALUE


def test_a_stale_write_translation_is_kept_too():
    rig = tlb_rig()
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov [{SLOT:#x}], ebx; int3")
    cpu.regs[EBX] = 1
    rig.run()
    mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U)
    cpu.regs[EBX] = 2
    rig.run()
    assert (mem.read(OLD_PAGE, 4), mem.read(NEW_PAGE, 4)) == (2, NEW_VALUE)
    cpu.invlpg(SLOT)
    cpu.regs[EBX] = 3
    rig.run()
    assert (mem.read(OLD_PAGE, 4), mem.read(NEW_PAGE, 4)) == (2, 3)


def test_invlpg_instruction_drops_the_translation():
    rig = tlb_rig()
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U)
    rig.load(f"mov ecx, [{SLOT:#x}]; invlpg [{SLOT:#x}]; mov edx, [{SLOT:#x}]; int3", at=CODE)
    exc = rig.run()
    assert exc.vector == BP, str(exc)
    assert (cpu.regs[ECX], cpu.regs[EDX]) == (OLD_VALUE, NEW_VALUE)


def _reload_cr3_and_read(rig: Rig) -> int:
    rig.load(f"mov eax, cr3; mov cr3, eax; mov eax, [{SLOT:#x}]; int3")
    rig.run()
    return rig.cpu.regs[EAX]


def test_cr3_reload_flushes_non_global_entries():
    for pge in (False, True):
        rig = tlb_rig(P | W | U, pge=pge)
        rig.load(f"mov eax, [{SLOT:#x}]; int3")
        rig.run()
        rig.cpu.mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U)
        assert _reload_cr3_and_read(rig) == NEW_VALUE


def test_cr3_reload_keeps_global_entries_with_cr4_pge():
    rig = tlb_rig(P | W | U | G, pge=True)
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U | G)
    assert _reload_cr3_and_read(rig) == OLD_VALUE, "a global translation survives MOV CR3"
    cpu.invlpg(SLOT)                     # INVLPG drops global entries too
    assert _reload_cr3_and_read(rig) == NEW_VALUE


def test_global_bit_means_nothing_without_cr4_pge():
    rig = tlb_rig(P | W | U | G, pge=False)
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    rig.cpu.mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U | G)
    assert _reload_cr3_and_read(rig) == NEW_VALUE


def test_clearing_cr4_pge_flushes_global_entries():
    rig = tlb_rig(P | W | U | G, pge=True)
    cpu, mem = rig.cpu, rig.cpu.mem
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    mem.write(rig.slot_pte, 4, NEW_PAGE | P | W | U | G)
    cpu.write_cr(4, cpu.cr4 & ~CR4_PGE)
    rig.load(f"mov eax, [{SLOT:#x}]; int3")
    rig.run()
    assert cpu.regs[EAX] == NEW_VALUE


# -- the block cache and remapped code ---------------------------------------------------------

CODE_SLOT = 0x00804000          # a linear code page under PT_DATA
PAGE_ONE, PAGE_TWO = 0x8000, 0x9000


def code_rig(cache: bool) -> Rig:
    rig = Rig(cpl=3)
    cpu, mem = rig.cpu, rig.cpu.mem
    cpu.blocks.enabled = cache
    mem.write(PD + 4 * (CODE_SLOT >> 22), 4, PT_DATA | P | W | U)
    rig.slot_pte = PT_DATA + 4 * (CODE_SLOT >> 12 & 0x3FF)
    mem.load(PAGE_ONE, asm("mov eax, 1; int3", base=CODE_SLOT))
    mem.load(PAGE_TWO, asm("mov eax, 2; int3", base=CODE_SLOT))
    return rig


def remap(rig: Rig, pte_addr: int, phys: int) -> None:
    rig.cpu.mem.write(pte_addr, 4, phys | P | U)
    rig.cpu.invlpg(CODE_SLOT)


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "nocache"])
def test_remapped_code_page_never_runs_stale_code(cache):
    rig = code_rig(cache)
    cpu = rig.cpu
    for phys, value in [(PAGE_ONE, 1), (PAGE_TWO, 2), (PAGE_ONE, 1), (PAGE_TWO, 2)]:
        remap(rig, rig.slot_pte, phys)
        cpu.regs[EAX] = 0
        assert rig.run(CODE_SLOT).vector == BP
        assert cpu.regs[EAX] == value


def test_remapped_code_page_after_cr3_reload():
    rig = code_rig(True)
    cpu, mem = rig.cpu, rig.cpu.mem
    remap(rig, rig.slot_pte, PAGE_ONE)
    rig.run(CODE_SLOT)
    assert cpu.regs[EAX] == 1
    mem.write(rig.slot_pte, 4, PAGE_TWO | P | U)
    cpu.write_cr(3, cpu.cr3)
    rig.run(CODE_SLOT)
    assert cpu.regs[EAX] == 2


def test_remapped_second_page_of_a_page_crossing_block():
    """A block that runs onto the next page is checked against that page's
    mapping too."""
    rig = Rig(cpl=0)
    cpu, mem = rig.cpu, rig.cpu.mem
    first = 0x00806000
    mem.write(PD + 4 * (first >> 22), 4, PT_DATA | P | W | U)
    pte1 = PT_DATA + 4 * (first >> 12 & 0x3FF)
    pte2 = pte1 + 4
    start = first + 0xFFC
    code = asm("mov eax, 0x44332211; int3", base=start)     # 5 + 1 bytes: 4 on page one
    mem.write(pte1, 4, PAGE_ONE | P | W)
    mem.load(PAGE_ONE + 0xFFC, code[:4])
    mem.load(PAGE_TWO, code[4:])
    mem.load(0xA000, bytes([0x99]) + code[5:])             # the other second page
    for phys, value in [(PAGE_TWO, 0x44332211), (0xA000, 0x99332211), (PAGE_TWO, 0x44332211)]:
        mem.write(pte2, 4, phys | P | W)
        cpu.invlpg(first + 0x1000)
        assert rig.run(start).vector == BP
        assert cpu.regs[EAX] == value


def test_code_written_through_another_mapping_is_recompiled():
    """Two linear pages on one physical page: a write through the data
    alias reaches the code seen through the other."""
    rig = code_rig(True)
    cpu, mem = rig.cpu, rig.cpu.mem
    remap(rig, rig.slot_pte, PAGE_ONE)
    alias = CODE_SLOT + 0x1000
    mem.write(rig.slot_pte + 4, 4, PAGE_ONE | P | W | U)
    rig.run(CODE_SLOT)
    assert cpu.regs[EAX] == 1
    # Patch the immediate of `mov eax, 1` (bytes b8 01 00 00 00) through the alias.
    rig.load(f"mov byte ptr [{alias + 1:#x}], 7; int3", at=CODE)
    rig.run(CODE)
    rig.run(CODE_SLOT)
    assert cpu.regs[EAX] == 7
