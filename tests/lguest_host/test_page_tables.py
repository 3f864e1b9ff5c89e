"""Shadow paging (lguest_host/page_tables.py) against the semantics of Linux
drivers/lguest/page_tables.c, seen through the CPU that walks the shadows:
what x86core's page walk and TLB find after each Host operation."""
import sys
import types
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, strategies as st

import lguest_host
from lguest_host import page_tables as pt
from lguest_host.abi import PAGE_SIZE, SWITCHER_ADDR, SWITCHER_PGD_INDEX, LguestData
from lguest_host.core import lgread, lgwrite
from x86core.exceptions import CPUException

from .conftest import shared_guest

P, RW, U, A, D, PSE, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
PGD_FLAGS = P | RW | U | A
KERNEL = 0xC0000000
MEM = 4 << 20

def fresh_guest(pfn_limit: int = MEM // PAGE_SIZE):
    """A new Guest on the machine the Host's unit tests share."""
    return shared_guest(MEM, pfn_limit)


@contextmanager
def stack_pinning(record: list):
    """pin_stack_pages as Linux's: pin each kernel stack page below esp1.
    The real one may not exist yet (a colleague writes it), so it is put in
    place here either way; `record` counts the calls."""
    name = "lguest_host.interrupts_and_traps"
    mp = pytest.MonkeyPatch()
    try:
        try:
            module = __import__(name, fromlist=["pin_stack_pages"])
        except ImportError:
            module = types.ModuleType(name)
            mp.setitem(sys.modules, name, module)
            mp.setattr(lguest_host, "interrupts_and_traps", module, raising=False)

        def pin_stack_pages(cpu):
            record.append(cpu)
            for i in range(cpu.lg.stack_pages):
                pt.pin_page(cpu, (cpu.esp1 - 1 - i * PAGE_SIZE) & 0xFFFFFFFF)
        mp.setattr(module, "pin_stack_pages", pin_stack_pages, raising=False)
        yield
    finally:
        mp.undo()


@pytest.fixture
def pins():
    record = []
    with stack_pinning(record):
        yield record


class Guest:
    """A Guest whose page tables the test writes, a Host shadowing them, and
    the CPU walking the shadow at ring 1 (or 3)."""

    def __init__(self, kernel_address: int = 0, pfn_limit: int = MEM // PAGE_SIZE):
        self.host, self.lg, self.cpu = fresh_guest(pfn_limit)
        self.hw = self.host.hw
        self.next_page = 0x80000            # Guest page-table pages come from here up
        self.pd = self.alloc()
        pt.init_guest_pagetable(self.lg, self.pd)
        self.lg.kernel_address = kernel_address
        pt.map_switcher_in_guest(self.cpu, self.host.switcher)
        self.hw.cr0 |= 0x80010001           # PE | PG | WP
        self.enter()

    def alloc(self) -> int:
        page = self.next_page
        self.next_page += PAGE_SIZE
        return page

    def new_dir(self, share_kernel: bool = True) -> int:
        d = self.alloc()
        if share_kernel:
            for i in range(KERNEL >> 22, SWITCHER_PGD_INDEX):
                lgwrite(self.cpu, d + i * 4, 4, lgread(self.cpu, self.pd + i * 4))
        return d

    def map(self, vaddr, gpa, flags=P | RW | U, pd=None, pgd_flags=PGD_FLAGS) -> int:
        """Write the Guest's PTE for vaddr (making its page table if needed);
        returns the PTE's guest-physical address."""
        pd = self.pd if pd is None else pd
        pde_at = pd + (vaddr >> 22) * 4
        pde = lgread(self.cpu, pde_at)
        if not pde & P:
            pde = self.alloc() | pgd_flags
            lgwrite(self.cpu, pde_at, 4, pde)
        pte_at = (pde & ~0xFFF) + ((vaddr >> 12) & 0x3FF) * 4
        lgwrite(self.cpu, pte_at, 4, gpa | flags)
        return pte_at

    def gpte(self, vaddr, pd=None) -> int:
        pd = self.pd if pd is None else pd
        pde = lgread(self.cpu, pd + (vaddr >> 22) * 4)
        return lgread(self.cpu, (pde & ~0xFFF) + ((vaddr >> 12) & 0x3FF) * 4)

    def spgd(self, vaddr, slot=None) -> int:
        slot = self.cpu.cpu_pgd if slot is None else slot
        return self.host.mem.read(self.lg.pgdirs[slot].pgdir + (vaddr >> 22) * 4, 4)

    def spte(self, vaddr, slot=None) -> int:
        spgd = self.spgd(vaddr, slot)
        if not spgd & P:
            return 0
        return self.host.mem.read((spgd & ~0xFFF) + ((vaddr >> 12) & 0x3FF) * 4, 4)

    def enter(self):
        """What entering the Guest does to CR3: load it when it differs."""
        cr3 = pt.current_pgdir(self.cpu)
        if self.hw.cr3 != cr3:
            self.hw.write_cr(3, cr3)

    def _mode(self, user):
        self.enter()
        self.hw.cpl = 3 if user else 1
        self.hw.mode_changed()

    def read(self, lin, user=False) -> int:
        """A load the way compiled code does it: the TLB first, the walk on a miss."""
        self._mode(user)
        page = self.hw.tlb_r.get(lin & 0xFFFFF000)
        if page is None:
            page = self.hw._fill(lin, False)
        return self.hw.mem.read(page | (lin & 0xFFF), 4)

    def write(self, lin, value, user=False) -> None:
        self._mode(user)
        page = self.hw.tlb_w.get(lin & 0xFFFFF000)
        if page is None:
            page = self.hw._fill(lin, True)
        self.hw.mem.write(page | (lin & 0xFFF), 4, value)

    def access(self, lin, write=False, user=False, value=0) -> int:
        """Run an access as the Host runs the Guest: a #PF goes to
        demand_page and the access is retried.  Returns the faults fixed;
        a fault demand_page refuses comes out as ("reflected", errcode)."""
        faults = 0
        for _ in range(4):
            try:
                if write:
                    self.write(lin, value, user)
                else:
                    self.read(lin, user)
                return faults
            except CPUException as exc:
                assert exc.vector == 14 and self.hw.cr2 == lin
                if not pt.demand_page(self.cpu, self.hw.cr2, exc.error_code):
                    return ("reflected", exc.error_code)
                faults += 1
        raise AssertionError("demand_page did not fix the fault")

    def phys(self, gpa) -> int:
        return self.lg.mem_base + gpa


def walk(host, pgdir_page, lin):
    """The shadow's translation of lin without touching A/D: (phys, pde, pte) or None."""
    pde = host.mem.read(pgdir_page + (lin >> 22) * 4, 4)
    if not pde & P:
        return None
    pte = host.mem.read((pde & ~0xFFF) + ((lin >> 12) & 0x3FF) * 4, 4)
    if not pte & P:
        return None
    return (pte & ~0xFFF) | (lin & 0xFFF), pde, pte


# -- setting up --------------------------------------------------------------------------------
def test_init_guest_pagetable_makes_the_first_shadow(pins):
    host, lg, cpu = fresh_guest()
    cpu.cpu_pgd = 3
    pt.init_guest_pagetable(lg, 0x5000)
    assert lg.dead is None
    assert lg.pgdirs[0].gpgdir == 0x5000 and cpu.cpu_pgd == 0
    page = lg.pgdirs[0].pgdir
    assert host.pool.start <= page < host.pool.end and page % PAGE_SIZE == 0
    assert pt.current_pgdir(cpu) == page
    entries = host.mem.ram[page:page + PAGE_SIZE].view("<u4")
    assert entries[SWITCHER_PGD_INDEX] == host.switcher.pte_page | P | RW
    assert not entries[:SWITCHER_PGD_INDEX].any()
    assert all(p.pgdir == 0 for p in lg.pgdirs[1:])


@pytest.mark.parametrize("pgtable", [MEM, MEM - 4, 0xFFFFF000, -4096])
def test_init_guest_pagetable_bad_directory_kills(pgtable):
    host, lg, cpu = fresh_guest()
    pt.init_guest_pagetable(lg, pgtable)
    assert lg.dead == "bad page directory %#x" % pgtable
    assert host.pool.in_use() == 0


def test_init_without_cpus_still_reports():
    host, lg, _ = fresh_guest()
    lg.cpus.clear()
    pt.init_guest_pagetable(lg, MEM)
    assert lg.dead.startswith("bad page directory")


def test_free_guest_pagetable_returns_every_page(pins):
    g = Guest(kernel_address=KERNEL)
    for i in range(5):
        g.map(i << 22, 0x200000 + i * PAGE_SIZE)
        assert g.access(i << 22) == 1
    g.cpu.cpu_pgd = 0
    pt.guest_new_pagetable(g.cpu, g.new_dir())
    assert g.host.pool.in_use() == 2 + 5
    pt.free_guest_pagetable(g.lg)
    assert g.host.pool.in_use() == 0
    assert all(p.pgdir == 0 for p in g.lg.pgdirs)


def test_map_switcher_in_guest_restores_the_entry():
    g = Guest()
    sw = g.host.switcher
    top = g.lg.pgdirs[0].pgdir + SWITCHER_PGD_INDEX * 4
    # Ring 1 sees the Switcher, ring 3 does not.
    assert g.hw.translate(sw.switch_to_guest, False, False) >> 12 == sw.text_phys >> 12
    with pytest.raises(CPUException):
        g.hw.translate(sw.switch_to_guest, False, True)
    g.host.mem.write(top, 4, 0)
    g.host.mem.write(sw.pte_page + 4, 4, 0)
    pt.map_switcher_in_guest(g.cpu, sw)
    assert g.host.mem.read(top, 4) == sw.pte_page | P | RW
    assert g.host.mem.read(sw.pte_page + 4, 4) == g.cpu.regs_page | P | RW
    assert g.hw.translate(sw.regs_linear, True, False) == sw.regs_phys
    # The accessed bit the CPU sets is no reason to rewrite it.
    g.host.mem.write(top, 4, sw.pte_page | P | RW | A)
    pt.map_switcher_in_guest(g.cpu, sw)
    assert g.host.mem.read(top, 4) == sw.pte_page | P | RW | A


def test_map_switcher_flushes_a_stale_switcher_mapping():
    g = Guest()
    sw = g.host.switcher
    top = g.lg.pgdirs[0].pgdir + SWITCHER_PGD_INDEX * 4
    fake = g.host.pool.get_zeroed_page()
    g.host.mem.write(fake, 4, g.phys(0x250000) | P)
    g.host.mem.write(top, 4, fake | P | RW)
    g.hw.flush_tlb()
    g.read(SWITCHER_ADDR)
    assert g.hw.tlb_r[SWITCHER_ADDR & 0xFFFFF000] == g.phys(0x250000)
    pt.map_switcher_in_guest(g.cpu, sw)
    assert g.hw.tlb_r.get(SWITCHER_ADDR & 0xFFFFF000) in (None, sw.text_phys)
    assert g.read(SWITCHER_ADDR) == g.host.mem.read(sw.text_phys, 4)


def test_page_table_guest_data_init():
    g = Guest()
    g.lg.lguest_data = 0x7000
    lgwrite(g.cpu, 0x7000 + LguestData.kernel_address, 4, KERNEL)
    pt.page_table_guest_data_init(g.cpu)
    assert g.lg.dead is None
    assert g.lg.kernel_address == KERNEL
    assert lgread(g.cpu, 0x7000 + LguestData.reserve_mem) == 4 << 20
    assert lgread(g.cpu, 0x7000 + LguestData.pgdir) == g.pd


@pytest.mark.parametrize("kaddr", [SWITCHER_ADDR, 0xFFFFFFFF, SWITCHER_ADDR + 0x1000])
def test_page_table_guest_data_init_bad_kernel_address(kaddr):
    g = Guest()
    g.lg.lguest_data = 0x7000
    lgwrite(g.cpu, 0x7000 + LguestData.kernel_address, 4, kaddr)
    pt.page_table_guest_data_init(g.cpu)
    assert g.lg.dead == "bad kernel address %#x" % kaddr


def test_page_table_guest_data_init_highest_good_kernel_address():
    g = Guest()
    g.lg.lguest_data = 0x7000
    lgwrite(g.cpu, 0x7000 + LguestData.kernel_address, 4, SWITCHER_ADDR - 1)
    pt.page_table_guest_data_init(g.cpu)
    assert g.lg.dead is None


@pytest.mark.parametrize("where", [None, MEM - 8])
def test_page_table_guest_data_init_bad_lguest_data(where):
    g = Guest()
    g.lg.lguest_data = where
    pt.page_table_guest_data_init(g.cpu)
    assert g.lg.dead.startswith("bad guest page")


# -- demand paging ----------------------------------------------------------------------------
def test_demand_page_fills_the_shadow_and_marks_accessed():
    g = Guest()
    pte_at = g.map(0x08048000, 0x200000)
    g.host.mem.write(g.phys(0x200123), 4, 0xCAFEF00D)
    assert g.access(0x08048123) == 1
    assert g.read(0x08048123) == 0xCAFEF00D
    assert g.hw.translate(0x08048123, False, True) == g.phys(0x200123)
    assert lgread(g.cpu, pte_at) == 0x200000 | P | RW | U | A       # accessed, not dirty
    # Clean: the shadow is read-only although the Guest's PTE is writable.
    assert g.spte(0x08048000) == g.phys(0x200000) | P | U | A
    assert g.lg.dead is None


def test_first_write_to_clean_page_faults_again_and_marks_dirty():
    g = Guest()
    pte_at = g.map(0x1000, 0x201000)
    assert g.access(0x1000) == 1
    assert g.access(0x1004, write=True, value=7) == 1               # once more, for D
    assert lgread(g.cpu, pte_at) == 0x201000 | P | RW | U | A | D
    assert g.spte(0x1000) & (RW | P) == RW | P
    assert g.access(0x1008, write=True, value=8) == 0
    assert g.host.mem.read(g.phys(0x201004), 4) == 7


def test_write_fault_on_a_fresh_page_fills_it_writable_at_once():
    g = Guest()
    pte_at = g.map(0x3000, 0x202000)
    assert g.access(0x3000, write=True, value=1) == 1
    assert lgread(g.cpu, pte_at) & (A | D) == A | D
    assert g.spte(0x3000) & RW


def test_demand_page_replacing_a_present_entry_invalidates_it():
    g = Guest()
    pte_at = g.map(0x1000, 0x201000)
    g.host.mem.write(g.phys(0x201000), 4, 1)
    g.host.mem.write(g.phys(0x202000), 4, 2)
    assert g.access(0x1000) == 1 and g.read(0x1000) == 1       # read-only shadow, in the TLB
    # The Guest repoints the page without telling the Host, then writes to it.
    lgwrite(g.cpu, pte_at, 4, 0x202000 | P | RW | U | A)
    assert g.access(0x1000, write=True, value=3) == 1
    assert g.read(0x1000) == 3
    assert g.host.mem.read(g.phys(0x202000), 4) == 3
    assert g.host.mem.read(g.phys(0x201000), 4) == 1
    # The same without an access to refill the TLB: pinning it.
    lgwrite(g.cpu, pte_at, 4, 0x201000 | P | RW | U | A)
    pt.guest_set_pte(g.cpu, g.pd, 0x1000, 0x201000 | P | RW | U | A)
    assert g.read(0x1000) == 1
    lgwrite(g.cpu, pte_at, 4, 0x202000 | P | RW | U | A)
    pt.pin_page(g.cpu, 0x1000)
    assert g.read(0x1000) == 3


def test_an_already_dirty_guest_pte_is_shadowed_writable_on_a_read():
    g = Guest()
    g.map(0x3000, 0x202000, flags=P | RW | A | D)
    assert g.access(0x3000) == 1
    assert g.access(0x3000, write=True) == 0


def test_demand_page_drops_the_global_bit_and_keeps_the_directory_flags():
    g = Guest()
    g.map(0x400000, 0x203000, flags=P | RW | G | A | D, pgd_flags=P | RW | A)
    assert pt.demand_page(g.cpu, 0x400000, 0)
    assert not g.spte(0x400000) & G
    assert g.spgd(0x400000) & 0xFFF == P | RW | A
    assert g.host.pool.start <= g.spgd(0x400000) & ~0xFFF < g.host.pool.end


@pytest.mark.parametrize("flags, pgd_flags, errcode", [
    (0, PGD_FLAGS, 0),                      # PTE not present
    (RW | U, PGD_FLAGS, 2),                 # not present, write
    (P | U, PGD_FLAGS, 2),                  # write to a read-only page
    (P | U, PGD_FLAGS, 7),                  # user write to a read-only page
    (P | RW, PGD_FLAGS, 4),                 # user read of a supervisor page
    (P | RW, PGD_FLAGS, 6),                 # user write to a supervisor page
    (P | RW | U, P | U | A, 2),             # the directory entry is read-only
    (P | RW | U, P | RW | A, 4),            # the directory entry is supervisor
])
def test_faults_the_guest_forbids_are_reflected(flags, pgd_flags, errcode):
    g = Guest()
    pte_at = g.map(0x5000, 0x204000, flags=flags, pgd_flags=pgd_flags)
    before = lgread(g.cpu, pte_at)
    assert pt.demand_page(g.cpu, 0x5000, errcode) is False
    assert g.lg.dead is None
    assert lgread(g.cpu, pte_at) == before                   # no A/D for a refused access
    assert g.spte(0x5000) == 0


def test_a_reflected_fault_is_what_the_cpu_reports():
    g = Guest()
    g.map(0x5000, 0x204000, flags=P | RW)
    assert g.access(0x5000, user=True) == ("reflected", 4 | 0)
    assert g.access(0x5000) == 1
    assert g.access(0x5000, user=True) == ("reflected", 4 | 1)


def test_unmapped_directory_entry_is_reflected():
    g = Guest()
    assert pt.demand_page(g.cpu, 0x12345678, 0) is False
    assert g.lg.dead is None
    assert not np.any(g.host.mem.ram[g.lg.pgdirs[0].pgdir:][:4 * SWITCHER_PGD_INDEX])


@pytest.mark.parametrize("vaddr", [SWITCHER_ADDR, SWITCHER_ADDR + 0x1000, 0xFFFFFFFC])
def test_switcher_addresses_are_never_the_guests(vaddr):
    g = Guest()
    # Even a Guest that maps the top 4 MiB gets nothing there.
    g.map(vaddr & ~0xFFF, 0x205000, flags=P | RW | U)
    assert pt.demand_page(g.cpu, vaddr, 6) is False
    assert g.spgd(vaddr) == g.host.switcher.pte_page | P | RW
    assert g.host.mem.read(g.host.switcher.pte_page, 4) == g.host.switcher.text_phys | P


@pytest.mark.parametrize("pte, reason", [
    ((MEM // PAGE_SIZE) << 12 | P | RW | U, "bad page table entry"),
    (0xFFFFF000 | P | RW | U, "bad page table entry"),
    (0x200000 | P | RW | U | PSE, "bad page table entry"),
])
def test_bad_guest_pte_kills(pte, reason):
    g = Guest()
    pte_at = g.map(0x6000, 0)
    lgwrite(g.cpu, pte_at, 4, pte)
    assert pt.demand_page(g.cpu, 0x6000, 0) is False
    assert g.lg.dead == reason
    assert g.spte(0x6000) == 0


@pytest.mark.parametrize("pde", [
    (MEM // PAGE_SIZE) << 12 | PGD_FLAGS,     # page table beyond the Guest's memory
    0xFFFFF000 | PGD_FLAGS,
    0x00000000 | PGD_FLAGS | PSE,             # a 4 MiB page
    0x00400000 | P | RW | PSE,
    0x00090000 | PGD_FLAGS | G,               # a flag a page table never has
])
def test_bad_guest_pgd_kills(pde):
    g = Guest()
    lgwrite(g.cpu, g.pd + 1 * 4, 4, pde)
    assert pt.demand_page(g.cpu, 0x400000, 0) is False
    assert g.lg.dead == "bad page directory entry"
    assert g.spgd(0x400000) == 0
    assert g.host.pool.in_use() == 1


# -- SET_PTE ---------------------------------------------------------------------------------
def test_set_pte_is_seen_even_after_a_tlb_hit():
    g = Guest()
    g.map(0x7000, 0x206000, flags=P | RW | U | A | D)
    g.host.mem.write(g.phys(0x206000), 4, 0x11111111)
    g.host.mem.write(g.phys(0x207000), 4, 0x22222222)
    assert g.access(0x7000) == 1
    assert g.read(0x7000) == 0x11111111
    assert 0x7000 in g.hw.tlb_r                              # the CPU caches it
    pte_at = g.map(0x7000, 0x207000, flags=P | RW | U | A | D)
    pt.guest_set_pte(g.cpu, g.pd, 0x7000, lgread(g.cpu, pte_at))
    assert g.read(0x7000) == 0x22222222
    assert g.spte(0x7000) == g.phys(0x207000) | P | RW | U | A | D


def test_set_pte_removal_faults_afterwards():
    g = Guest()
    pte_at = g.map(0x7000, 0x206000)
    assert g.access(0x7000, write=True) == 1
    lgwrite(g.cpu, pte_at, 4, 0)
    pt.guest_set_pte(g.cpu, g.pd, 0x7000, 0)
    assert g.spte(0x7000) == 0
    assert g.access(0x7000) == ("reflected", 0)
    assert g.access(0x7000, write=True) == ("reflected", 2)


def test_set_pte_write_protect_takes_effect_after_a_tlb_hit():
    g = Guest()
    pte_at = g.map(0x7000, 0x206000, flags=P | RW | U | A | D)
    assert g.access(0x7000, write=True, value=1) == 1
    assert 0x7000 in g.hw.tlb_w
    lgwrite(g.cpu, pte_at, 4, 0x206000 | P | U | A | D)
    pt.guest_set_pte(g.cpu, g.pd, 0x7000, 0x206000 | P | U | A | D)
    assert g.access(0x7000, write=True) == ("reflected", 3)
    assert g.access(0x7000) == 0


@pytest.mark.parametrize("gpte, expect", [
    (0x208000 | P | RW | U, 0),                                 # not accessed: left to fault
    (0x208000 | RW | U | A | D, 0),                             # not present
    (0x208000 | P | RW | U | A, 0x208000 | P | U | A),          # accessed, clean: read-only
    (0x208000 | P | RW | U | A | D, 0x208000 | P | RW | U | A | D),
    (0x208000 | P | RW | U | D, 0x208000 | P | RW | U | D),      # dirty implies accessed (Linux)
    (0x208000 | P | RW | A | D | G, 0x208000 | P | RW | A | D),  # no global in a shadow
])
def test_set_pte_fills_only_what_would_not_fault(gpte, expect):
    g = Guest()
    g.map(0x9000, 0x206000)
    assert g.access(0x9000) == 1                # the shadow PTE page now exists
    pt.guest_set_pte(g.cpu, g.pd, 0x9000, gpte)
    want = g.lg.mem_base + expect if expect else 0
    assert g.spte(0x9000) == want
    assert g.lg.dead is None


def test_set_pte_without_a_shadow_pte_page_does_nothing():
    g = Guest()
    pt.guest_set_pte(g.cpu, g.pd, 0x9000, 0x208000 | P | RW | U | A | D)
    assert g.spgd(0x9000) == 0
    assert g.host.pool.in_use() == 1


@pytest.mark.parametrize("gpte", [(MEM // PAGE_SIZE) << 12 | P | A, 0x208000 | P | A | PSE])
def test_set_pte_bad_entry_kills_and_installs_nothing(gpte):
    g = Guest()
    g.map(0x9000, 0x206000)
    assert g.access(0x9000) == 1
    pt.guest_set_pte(g.cpu, g.pd, 0x9000, gpte)
    assert g.lg.dead == "bad page table entry"
    assert g.spte(0x9000) == 0


def test_set_pte_bad_entry_not_yet_accessed_is_not_checked():
    g = Guest()
    g.map(0x9000, 0x206000)
    assert g.access(0x9000) == 1
    pt.guest_set_pte(g.cpu, g.pd, 0x9000, 0xFFFFF000 | P | RW)
    assert g.lg.dead is None and g.spte(0x9000) == 0


def test_set_pte_in_the_switcher_range_kills():
    g = Guest(kernel_address=KERNEL)
    pt.guest_set_pte(g.cpu, g.pd, SWITCHER_ADDR + 0x2000, 0x200000 | P | RW | A | D)
    assert g.lg.dead == "attempt to access switcher pages"
    assert g.host.mem.read(g.host.switcher.pte_page + 8, 4) == (g.host.switcher.pages_phys
                                                                + PAGE_SIZE) | P


def test_set_pte_kernel_address_reaches_every_shadow(pins):
    g = Guest(kernel_address=KERNEL)
    kv = KERNEL + 0x5000
    g.map(kv, 0x209000, flags=P | RW | A | D, pgd_flags=P | RW | A)
    other = g.new_dir()
    assert g.access(kv) == 1
    pt.guest_new_pagetable(g.cpu, other)
    assert g.cpu.cpu_pgd == 1
    assert g.access(kv) == 1
    pt.guest_set_pte(g.cpu, g.pd, kv, 0x20A000 | P | RW | A | D)
    for slot in (0, 1):
        assert g.spte(kv, slot) == g.phys(0x20A000) | P | RW | A | D


def test_set_pte_user_address_only_in_its_own_shadow(pins):
    g = Guest(kernel_address=KERNEL)
    other = g.new_dir()
    g.map(0x9000, 0x209000, pd=g.pd)
    g.map(0x9000, 0x20B000, pd=other)
    assert g.access(0x9000) == 1
    pt.guest_new_pagetable(g.cpu, other)
    assert g.access(0x9000) == 1
    pt.guest_set_pte(g.cpu, g.pd, 0x9000, 0)
    assert g.spte(0x9000, 0) == 0
    assert g.spte(0x9000, 1) == g.phys(0x20B000) | P | U | A
    # A directory the Host does not cache: nothing to do.
    pt.guest_set_pte(g.cpu, 0x300000, 0x9000, 0)
    assert g.spte(0x9000, 1) == g.phys(0x20B000) | P | U | A


def test_set_pte_with_kernel_address_zero_touches_only_gpgdir(pins):
    g = Guest(kernel_address=0)
    other = g.new_dir()
    kv = KERNEL + 0x1000
    g.map(kv, 0x209000)
    assert g.access(kv) == 1
    pt.guest_new_pagetable(g.cpu, other)
    pt.guest_set_pte(g.cpu, other, kv, 0)
    assert g.spte(kv, 0) == g.phys(0x209000) | P | U | A


# -- SET_PGD / SET_PMD ------------------------------------------------------------------------
@pytest.mark.parametrize("call", [pt.guest_set_pgd, pt.guest_set_pmd])
def test_set_pgd_drops_the_shadow_entry(call):
    g = Guest()
    g.map(0x400000, 0x20C000)
    g.map(0x401000, 0x20D000)
    assert g.access(0x400000) == 1 and g.access(0x401000) == 1
    assert g.host.pool.in_use() == 2
    # The Guest moves the whole 4 MiB to another page table.
    pde = g.alloc() | PGD_FLAGS
    lgwrite(g.cpu, g.pd + 4, 4, pde)
    lgwrite(g.cpu, (pde & ~0xFFF), 4, 0x20E000 | P | RW | U)
    call(g.lg, g.pd, 1)
    assert g.spgd(0x400000) == 0
    assert g.host.pool.in_use() == 1
    assert g.access(0x401000) == ("reflected", 0)           # even after the TLB hit
    assert g.access(0x400000) == 1
    assert g.hw.translate(0x400000, False) == g.phys(0x20E000)


def test_set_pgd_on_many_cached_pages_flushes_the_tlb():
    g = Guest()
    for i in range(40):
        g.map(0x400000 + i * PAGE_SIZE, 0x200000 + i * PAGE_SIZE)
        assert g.access(0x400000 + i * PAGE_SIZE) == 1
    pt.guest_set_pgd(g.lg, g.pd, 1)
    assert not any(0x400000 <= base < 0x800000 for base in g.hw.tlb_r)


@pytest.mark.parametrize("idx", [SWITCHER_PGD_INDEX, 1024, 0xFFFFFFFF])
def test_set_pgd_never_touches_the_switcher(idx):
    g = Guest()
    pt.guest_set_pgd(g.lg, g.pd, idx)
    pt.guest_set_pmd(g.lg, g.pd, idx)
    assert g.spgd(SWITCHER_ADDR) == g.host.switcher.pte_page | P | RW
    assert g.host.pool.free == []


def test_set_pgd_of_an_uncached_directory_is_ignored():
    g = Guest()
    g.map(0x400000, 0x20C000)
    assert g.access(0x400000) == 1
    pt.guest_set_pgd(g.lg, 0x300000, 1)
    assert g.spgd(0x400000) & P


# -- NEW_PGTABLE ------------------------------------------------------------------------------
def test_new_pagetable_caches_four_and_evicts_round_robin(pins):
    g = Guest(kernel_address=KERNEL)
    kv = KERNEL + 0x3000
    g.map(kv, 0x20F000, flags=P | RW | A | D, pgd_flags=P | RW | A)
    dirs = [g.pd] + [g.new_dir() for _ in range(6)]
    for d in dirs:
        g.map(0x1000, 0x210000, pd=d)
    assert g.access(0x1000) == 1 and g.access(kv) == 1
    # Three more fill the empty slots, each a fresh shadow that gets the stack pinned.
    for n, d in enumerate(dirs[1:4], start=1):
        pt.guest_new_pagetable(g.cpu, d)
        assert g.cpu.cpu_pgd == n and len(pins) == n
        assert g.lg.pgdirs[n].gpgdir == d
        assert g.spgd(SWITCHER_ADDR) == g.host.switcher.pte_page | P | RW
        assert g.access(0x1000) == 1 and g.access(kv) == 1
    assert g.host.pool.in_use() == 4 * 3
    # A cached one: no new page, no re-pin, its mappings still there.
    pt.guest_new_pagetable(g.cpu, dirs[1])
    assert g.cpu.cpu_pgd == 1 and len(pins) == 3
    assert g.access(0x1000) == 0
    # Now evictions, never of the current slot, in a fixed order.
    victims = []
    for d in dirs[4:] + [dirs[0]]:
        current = g.cpu.cpu_pgd
        pt.guest_new_pagetable(g.cpu, d)
        victims.append(g.cpu.cpu_pgd)
        assert g.cpu.cpu_pgd != current
        assert g.lg.pgdirs[g.cpu.cpu_pgd].gpgdir == d
        # The user mappings of the old Guest directory are gone, the kernel's stay.
        assert g.spgd(0x1000) == 0
        assert g.spte(kv) & P
    assert victims == [0, 1, 2, 3]
    assert [p.gpgdir for p in g.lg.pgdirs] == [dirs[4], dirs[5], dirs[6], dirs[0]]
    assert len(pins) == 7


def test_new_pagetable_eviction_is_deterministic(pins):
    def run():
        g = Guest(kernel_address=KERNEL)
        dirs = [g.new_dir() for _ in range(9)]
        seen = []
        for d in dirs + dirs[::2]:
            pt.guest_new_pagetable(g.cpu, d)
            seen.append(g.cpu.cpu_pgd)
        return seen
    first = run()
    assert first == run()
    assert all(a != b for a, b in zip(first, first[1:]))


def test_new_pagetable_switch_changes_what_the_cpu_sees(pins):
    g = Guest(kernel_address=KERNEL)
    other = g.new_dir()
    g.map(0x1000, 0x211000, pd=g.pd)
    g.map(0x1000, 0x212000, pd=other)
    g.host.mem.write(g.phys(0x211000), 4, 1)
    g.host.mem.write(g.phys(0x212000), 4, 2)
    assert g.access(0x1000) == 1 and g.read(0x1000) == 1
    pt.guest_new_pagetable(g.cpu, other)
    assert g.access(0x1000) == 1 and g.read(0x1000) == 2
    pt.guest_new_pagetable(g.cpu, g.pd)
    assert g.access(0x1000) == 0 and g.read(0x1000) == 1


def test_reusing_the_slot_loaded_in_cr3_flushes_it(pins):
    g = Guest(kernel_address=KERNEL)
    dirs = [g.new_dir() for _ in range(3)]
    for d in dirs:
        pt.guest_new_pagetable(g.cpu, d)
    pt.guest_new_pagetable(g.cpu, g.pd)
    g.map(0x1000, 0x211000)
    assert g.access(0x1000) == 1                            # slot 0 loaded, 0x1000 in the TLB
    # Switch without running: CR3 stays on slot 0 ...
    pt.guest_new_pagetable(g.cpu, dirs[0])
    # ... which the next new directory reuses.
    new = g.new_dir()
    pt.guest_new_pagetable(g.cpu, new)
    assert g.cpu.cpu_pgd == 0
    assert 0x1000 not in g.hw.tlb_r


@pytest.mark.parametrize("pgtable", [MEM, MEM - 0x800, 0xFFFFF000])
def test_new_pagetable_bad_directory_kills(pins, pgtable):
    g = Guest()
    pt.guest_new_pagetable(g.cpu, pgtable)
    assert g.lg.dead == "bad page directory %#x" % pgtable
    assert g.cpu.cpu_pgd == 0 and g.host.pool.in_use() == 1


def test_new_pagetable_repins_the_stack(pins):
    g = Guest(kernel_address=KERNEL)
    stack = KERNEL + 0x20000
    for i in (1, 2):
        g.map(stack - i * PAGE_SIZE, 0x220000 - i * PAGE_SIZE, flags=P | RW, pgd_flags=P | RW | A)
    g.lg.stack_pages, g.cpu.esp1 = 2, stack
    other = g.new_dir()
    pt.guest_new_pagetable(g.cpu, other)
    assert pins == [g.cpu]
    for i in (1, 2):
        assert pt.page_writable(g.cpu, stack - i * PAGE_SIZE)
        assert g.gpte(stack - i * PAGE_SIZE, other) & (A | D) == A | D
    assert g.access(stack - 4, write=True) == 0


def test_new_pagetable_with_the_real_pin_stack_pages():
    its = pytest.importorskip("lguest_host.interrupts_and_traps")
    if not hasattr(its, "pin_stack_pages"):
        pytest.skip("interrupts_and_traps.pin_stack_pages is not written yet")
    g = Guest(kernel_address=KERNEL)
    stack = KERNEL + 0x20000
    g.map(stack - PAGE_SIZE, 0x21F000, flags=P | RW, pgd_flags=P | RW | A)
    g.lg.stack_pages, g.cpu.esp1 = 1, stack
    pt.guest_new_pagetable(g.cpu, g.new_dir())
    assert g.lg.dead is None and pt.page_writable(g.cpu, stack - PAGE_SIZE)


# -- FLUSH_TLB -------------------------------------------------------------------------------
def test_flush_user_keeps_kernel_mappings():
    g = Guest(kernel_address=KERNEL)
    g.map(0x1000, 0x211000)
    g.map(KERNEL + 0x1000, 0x212000, flags=P | RW, pgd_flags=P | RW | A)
    assert g.access(0x1000) == 1 and g.access(KERNEL + 0x1000) == 1
    pt.guest_pagetable_flush_user(g.cpu)
    assert g.spgd(0x1000) == 0 and g.spte(KERNEL + 0x1000) & P
    assert g.host.pool.in_use() == 2
    assert g.access(KERNEL + 0x1000) == 0
    assert g.access(0x1000) == 1                            # refilled, not a stale TLB hit


def test_flush_user_before_kernel_address_is_known_drops_all_but_the_switcher():
    g = Guest(kernel_address=0)
    g.map(0x1000, 0x211000)
    g.map(KERNEL + 0x1000, 0x212000)
    assert g.access(0x1000) == 1 and g.access(KERNEL + 0x1000) == 1
    pt.guest_pagetable_flush_user(g.cpu)
    assert g.spgd(0x1000) == 0 and g.spgd(KERNEL) == 0
    assert g.spgd(SWITCHER_ADDR) == g.host.switcher.pte_page | P | RW
    assert g.access(KERNEL + 0x1000) == 1


def test_clear_all_releases_every_shadow_and_repins(pins):
    g = Guest(kernel_address=KERNEL)
    stack = KERNEL + 0x20000
    g.map(stack - PAGE_SIZE, 0x21F000, flags=P | RW, pgd_flags=P | RW | A)
    g.lg.stack_pages, g.cpu.esp1 = 1, stack
    g.map(0x1000, 0x211000)
    g.map(0x800000, 0x213000)
    assert g.access(0x1000) == 1 and g.access(0x800000) == 1
    pt.guest_new_pagetable(g.cpu, g.new_dir())
    pins.clear()
    assert g.access(stack - 4) == 0                          # pinned there too
    pt.guest_pagetable_clear_all(g.cpu)
    assert pins == [g.cpu]
    for slot in (0, 1):
        entries = g.host.mem.ram[g.lg.pgdirs[slot].pgdir:][:PAGE_SIZE].view("<u4")
        present = np.flatnonzero(entries & 1).tolist()
        expect = [SWITCHER_PGD_INDEX] if slot == 0 else [stack >> 22, SWITCHER_PGD_INDEX]
        assert present == expect
    assert g.host.pool.in_use() == 2 + 1
    assert not any(base in g.hw.tlb_r for base in (0x1000, 0x800000))


# -- guest_pa and pin_page -------------------------------------------------------------------
def test_guest_pa_walks_the_guest_tables():
    g = Guest()
    g.map(0xC0101000, 0x301000, flags=P)
    assert pt.guest_pa(g.cpu, 0xC0101ABC) == 0x301ABC
    assert g.lg.dead is None


def test_guest_pa_unmapped_directory_kills():
    g = Guest()
    pt.guest_pa(g.cpu, 0xC0101ABC)
    assert g.lg.dead == "Bad address 0xc0101abc"


def test_guest_pa_unmapped_page_kills():
    g = Guest()
    g.map(0xC0101000, 0x301000, flags=0)
    pt.guest_pa(g.cpu, 0xC0101ABC)
    assert g.lg.dead == "Bad address 0xc0101abc"


def test_pin_page_maps_writable_and_dirties():
    g = Guest()
    pte_at = g.map(0xC0010000, 0x230000, flags=P | RW)
    pt.pin_page(g.cpu, 0xC0010FFF)
    assert g.lg.dead is None
    assert lgread(g.cpu, pte_at) == 0x230000 | P | RW | A | D
    assert pt.page_writable(g.cpu, 0xC0010000)
    assert g.hw.translate(0xC0010FFC, True, False) == g.phys(0x230FFC)
    # Already writable: left as it is.
    lgwrite(g.cpu, pte_at, 4, 0x230000 | P | RW)
    pt.pin_page(g.cpu, 0xC0010000)
    assert lgread(g.cpu, pte_at) == 0x230000 | P | RW


@pytest.mark.parametrize("flags", [P, 0, RW])
def test_pin_page_that_cannot_be_written_kills(flags):
    g = Guest()
    g.map(0xC0010000, 0x230000, flags=flags)
    pt.pin_page(g.cpu, 0xC0010000)
    assert g.lg.dead == "bad stack page 0xc0010000"


def test_pin_page_unmapped_or_switcher_kills():
    g = Guest()
    pt.pin_page(g.cpu, 0xB0000000)
    assert g.lg.dead == "bad stack page 0xb0000000"
    g = Guest()
    pt.pin_page(g.cpu, SWITCHER_ADDR + 0x1000)
    assert g.lg.dead == "bad stack page %#x" % (SWITCHER_ADDR + 0x1000)


# -- running out of shadow pages ----------------------------------------------------------------
def test_pool_exhaustion_releases_pte_pages_and_retries(pins):
    g = Guest(kernel_address=KERNEL)
    stack = KERNEL + 0x20000
    g.map(stack - PAGE_SIZE, 0x21F000, flags=P | RW, pgd_flags=P | RW | A)
    g.lg.stack_pages, g.cpu.esp1 = 1, stack
    g.host.pool.end = g.host.pool.next_unused + 4 * PAGE_SIZE    # the pgdir and four more
    pt.guest_pagetable_clear_all(g.cpu)                          # pins the stack: one page
    for i in range(3):
        g.map(i << 22, 0x200000 + i * PAGE_SIZE)
        assert g.access(i << 22) == 1
    assert g.host.pool.in_use() == 5
    pins.clear()
    g.map(3 << 22, 0x203000)
    assert g.access(3 << 22, write=True, value=5) == 1
    assert g.lg.dead is None
    assert g.host.mem.read(g.phys(0x203000), 4) == 5
    assert pins == [g.cpu]                                       # the stack pinned again
    assert pt.page_writable(g.cpu, stack - 1)
    assert all(g.spgd(i << 22) == 0 for i in range(3))
    assert g.host.pool.in_use() == 3
    assert not any(base in g.hw.tlb_r for base in (0x0, 0x400000, 0x800000))


def test_pool_exhaustion_for_a_new_directory(pins):
    g = Guest(kernel_address=KERNEL)
    g.map(0x1000, 0x211000)
    assert g.access(0x1000) == 1
    g.host.pool.end = g.host.pool.next_unused
    pt.guest_new_pagetable(g.cpu, g.new_dir())
    assert g.lg.dead is None and g.cpu.cpu_pgd == 1
    assert g.spgd(0x1000, 0) == 0


def test_pool_exhaustion_with_nothing_to_release_kills(pins):
    g = Guest(kernel_address=KERNEL)
    g.host.pool.end = g.host.pool.next_unused
    pt.guest_new_pagetable(g.cpu, g.new_dir())
    assert g.lg.dead == "out of shadow page table memory"
    assert g.cpu.cpu_pgd == 0
    g = Guest()
    g.host.pool.end = g.host.pool.next_unused
    g.map(0x1000, 0x211000)
    assert pt.demand_page(g.cpu, 0x1000, 0) is False
    assert g.lg.dead == "out of shadow page table memory"
    host, lg, cpu = fresh_guest()
    host.pool.end = host.pool.start
    pt.init_guest_pagetable(lg, 0x1000)
    assert lg.dead == "out of shadow page table memory"


# -- the property: whatever the Guest writes and asks, the shadows stay safe ---------------------
PGD_IDX = [0, 1, 2, 767, 768, 769, 1022, 1023]
PTE_IDX = [0, 1, 5, 1023]
DIRS = [0x1000 * i for i in range(1, 7)] + [MEM - 0x1000, MEM, 0x7FFFF000]
PT_PAGES = [0x10000 + 0x1000 * i for i in range(6)]

vaddrs = st.builds(lambda i, j, off: (i << 22) | (j << 12) | off,
                   st.sampled_from(PGD_IDX), st.sampled_from(PTE_IDX),
                   st.sampled_from([0, 4, 0xFFC]))
flag_bits = st.integers(0, 0xFFF)
sane_pgd = st.builds(lambda p, f: p | (f & 0x67), st.sampled_from(PT_PAGES), flag_bits)
sane_pte = st.builds(lambda pfn, f: pfn << 12 | (f & 0x67), st.integers(0, 1023), flag_bits)
pgd_values = st.one_of(
    sane_pgd, sane_pgd, sane_pgd,
    st.builds(lambda p, f: p | f, st.sampled_from(PT_PAGES), flag_bits),       # any flags
    st.builds(lambda pfn, f: pfn << 12 | f, st.integers(0, 0xFFFFF), flag_bits),
    st.just(0))
pte_values = st.one_of(
    sane_pte, sane_pte, sane_pte,
    st.builds(lambda pfn, f: pfn << 12 | f, st.integers(0, 0xFFFFF), flag_bits),
    st.builds(lambda pfn, f: pfn << 12 | f, st.integers(1000, 1100), flag_bits),
    st.just(0))
good_dirs = st.sampled_from(DIRS[:6] * 4 + DIRS[6:])
user_vaddrs = st.builds(lambda i, j, off: (i << 22) | (j << 12) | off,
                        st.sampled_from(PGD_IDX[:-1]), st.sampled_from(PTE_IDX),
                        st.sampled_from([0, 4, 0xFFC]))
touches = st.tuples(st.just("touch"), vaddrs, st.booleans(), st.booleans())
demands = st.tuples(st.just("demand"), vaddrs, st.integers(0, 7))
set_ptes = st.tuples(st.just("set_pte"), good_dirs, st.one_of(user_vaddrs, user_vaddrs, vaddrs),
                     pte_values)
wptes = st.tuples(st.just("wpte"), st.sampled_from(PT_PAGES), st.sampled_from(PTE_IDX), pte_values)
operations = st.lists(st.one_of(
    touches, touches, touches, touches, demands, demands, set_ptes, set_ptes, wptes, wptes,
    st.tuples(st.just("wpgd"), st.sampled_from(DIRS[:6]), st.sampled_from(PGD_IDX), pgd_values),
    st.tuples(st.just("set_pgd"), good_dirs, st.sampled_from(PGD_IDX + [1024, 2**32 - 1])),
    st.tuples(st.just("set_pmd"), good_dirs, st.sampled_from(PGD_IDX)),
    st.tuples(st.just("new"), good_dirs),
    st.tuples(st.just("flush"), st.booleans()),
    st.tuples(st.just("pin"), vaddrs),
    st.tuples(st.just("stack"), st.integers(0, 2), vaddrs),
    st.tuples(st.just("kaddr"),
              st.sampled_from([0, KERNEL, 0x80000000, 0x00400000, SWITCHER_ADDR])),
    st.tuples(st.just("guest_pa"), vaddrs),
), min_size=15, max_size=60)


def sane_guest_tables(cpu):
    """A plausible start that random writes then corrupt: every directory
    maps each PGD_IDX to one of the page tables, whose PTE_IDX entries map
    pages with assorted permissions."""
    for d_i, d in enumerate(DIRS[:6]):
        for idx in PGD_IDX:
            flags = (P | RW | U | A) if (d_i + idx) % 3 else (P | RW | A)
            lgwrite(cpu, d + idx * 4, 4, PT_PAGES[(d_i + idx) % len(PT_PAGES)] | flags)
    for t_i, table in enumerate(PT_PAGES):
        for j, idx in enumerate(PTE_IDX):
            flags = [P | RW | U, P | U, P | RW, P | RW | U | A | D][(t_i + j) % 4]
            lgwrite(cpu, table + idx * 4, 4, (0x100 + 8 * t_i + j) << 12 | flags)


def check_shadows(host, lg):
    """Every shadow: the Switcher at the top, PTE pages from the pool used
    once each, and every present PTE inside the Guest's memory; the pool's
    count agrees; the TLB holds nothing the loaded shadow does not map."""
    pool = host.pool
    sw = host.switcher
    lo, hi = lg.mem_base, lg.mem_base + lg.pfn_limit * PAGE_SIZE
    free = set(pool.free)
    pages = []
    for pgdir in lg.pgdirs:
        if not pgdir.pgdir:
            continue
        pages.append(pgdir.pgdir)
        entries = host.mem.ram[pgdir.pgdir:pgdir.pgdir + PAGE_SIZE].view("<u4")
        assert int(entries[SWITCHER_PGD_INDEX]) & ~(A | D) == sw.pte_page | P | RW
        for i in np.flatnonzero(entries[:SWITCHER_PGD_INDEX] & P).tolist():
            page = int(entries[i]) & ~0xFFF
            assert pool.start <= page < pool.end and page not in free
            pages.append(page)
            ptes = host.mem.ram[page:page + PAGE_SIZE].view("<u4")
            frames = ptes[(ptes & P) != 0] & 0xFFFFF000
            assert ((frames >= lo) & (frames < hi)).all()
    assert len(pages) == len(set(pages)) == pool.in_use()
    hw = host.hw
    loaded = hw.cr3 & ~0xFFF
    if loaded and loaded in [p.pgdir for p in lg.pgdirs if p.pgdir]:
        for user, (tlb_r, tlb_w) in hw._tlbs.items():
            for base, phys in tlb_r.items():
                hit = walk(host, loaded, base)
                assert hit is not None and hit[0] == phys, hex(base)
                if user:
                    assert hit[1] & hit[2] & U
            for base, phys in tlb_w.items():
                hit = walk(host, loaded, base)
                assert hit is not None and hit[0] == phys and hit[1] & hit[2] & RW, hex(base)


@given(ops=operations, pool_pages=st.sampled_from([None, 5, 8]))
def test_property_shadows_stay_inside_the_guest(ops, pool_pages):
    record = []
    with stack_pinning(record):
        g = Guest(kernel_address=KERNEL)
        host, lg, cpu, hw = g.host, g.lg, g.cpu, g.hw
        if pool_pages is not None:
            host.pool.end = host.pool.start + pool_pages * PAGE_SIZE
        sane_guest_tables(cpu)
        pt.guest_new_pagetable(cpu, DIRS[0])
        for op in ops:
            kind = op[0]
            if kind == "wpgd":
                lgwrite(cpu, op[1] + op[2] * 4, 4, op[3])
            elif kind == "wpte":
                lgwrite(cpu, op[1] + op[2] * 4, 4, op[3])
            elif kind == "demand":
                pt.demand_page(cpu, op[1], op[2])
            elif kind == "set_pte":
                pt.guest_set_pte(cpu, op[1], op[2], op[3])
            elif kind == "set_pgd":
                pt.guest_set_pgd(lg, op[1], op[2])
            elif kind == "set_pmd":
                pt.guest_set_pmd(lg, op[1], op[2])
            elif kind == "new":
                pt.guest_new_pagetable(cpu, op[1])
            elif kind == "flush":
                (pt.guest_pagetable_clear_all if op[1] else pt.guest_pagetable_flush_user)(cpu)
            elif kind == "pin":
                pt.pin_page(cpu, op[1])
            elif kind == "stack":
                lg.stack_pages, cpu.esp1 = op[1], op[2]
            elif kind == "kaddr":
                lg.kernel_address = op[1]
            elif kind == "touch":
                # The Guest runs an access; the Host fixes what faults, as run_guest does.
                pt.map_switcher_in_guest(cpu, host.switcher)
                for _ in range(3):
                    try:
                        if op[2]:
                            g.write(op[1] & ~3, 0, user=op[3])
                        else:
                            g.read(op[1] & ~3, user=op[3])
                        break
                    except CPUException as exc:
                        assert exc.vector == 14
                        if not pt.demand_page(cpu, hw.cr2, exc.error_code):
                            break
            elif kind == "guest_pa":
                pt.guest_pa(cpu, op[1])
            check_shadows(host, lg)
        pt.free_guest_pagetable(lg)
        assert host.pool.in_use() == 0
