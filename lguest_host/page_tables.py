"""Shadow paging, after drivers/lguest/page_tables.c (Linux 2.6.31/32, i386
without PAE: two-level page tables).

The Guest keeps ordinary page tables in its own (guest-physical) memory, but
the CPU never walks them.  It walks *shadow* tables that live in Host pages
from host.pool: a shadow page directory per cached Guest page directory
(lg.pgdirs, four of them) and shadow PTE pages under it, filled lazily by
demand_page when the Guest faults.  A shadow PTE maps a guest-virtual page to
the host-physical frame lg.mem_base + (guest pfn << 12), so a Guest can only
ever reach its own memory; entry SWITCHER_PGD_INDEX of every shadow directory
is the Host's mapping of the Switcher, never the Guest's.

Differences from Linux, each explained where it happens:
* the eviction of a cached shadow is round-robin and never the current one
  (Linux picks at random), and the stack is re-pinned in every shadow made
  or reused, not only in a freshly allocated one;
* demand_page reflects a fault the Guest's page-directory entry forbids as
  well as its PTE (Linux looks at the PTE only, and would fault forever), and
  checks the directory entry on every fill, not only when it allocates;
* after a kill nothing is installed from the bad entry (Linux installs it
  and relies on the Guest never running again);
* before the Guest has said where its kernel starts (kernel_address 0) a
  user flush drops everything but the Switcher (Linux drops nothing);
* when the pool of shadow pages runs dry every shadow PTE page is dropped
  and the allocation retried before the Guest is killed.

Our CPU's TLB is not flushed by a CR3 reload on every entry into the Guest as
Linux's is, so whenever a present entry of the shadow the CPU has loaded
changes or goes away, we invalidate it here (hw.invlpg / hw.flush_tlb).
"""
import struct
import weakref

import numpy as np

from .abi import PAGE_SHIFT, PAGE_SIZE, SWITCHER_PGD_INDEX, LguestData
from .core import lgread, lguest_address_ok, lgwrite
from .lg import SWITCHER_PTE_PHYS, LgCpu, Lguest, Pgdir, PoolExhausted, kill_guest

_PAGE_PRESENT = 0x001
_PAGE_RW = 0x002
_PAGE_USER = 0x004
_PAGE_ACCESSED = 0x020
_PAGE_DIRTY = 0x040
_PAGE_PSE = 0x080
_PAGE_GLOBAL = 0x100
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY
_FLAGS_MASK = PAGE_SIZE - 1
_PFN_MASK = 0xFFFFF000

PGDIR_SHIFT = 22
PTRS_PER_PTE = 1024
RESERVE_MEM = 4 << 20               # the Switcher's 4 MiB at the top
SWITCHER_PGD_FLAGS = _PAGE_PRESENT | _PAGE_RW   # supervisor only: ring 3 never sees it

# Releasing this many present PTEs or fewer invalidates them one by one;
# beyond it one full TLB flush is cheaper.
_INVLPG_MAX = 16

_U32 = struct.Struct("<I")

# Guests whose stack is being re-pinned after an emergency release: a second
# exhaustion inside that must not start another round.
_repinning: "weakref.WeakSet[Lguest]" = weakref.WeakSet()


# -- entry helpers ------------------------------------------------------------------------
def pgd_index(vaddr: int) -> int:
    return (vaddr >> PGDIR_SHIFT) & (PTRS_PER_PTE - 1)


def pte_index(vaddr: int) -> int:
    return (vaddr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def _rd(lg: Lguest, addr: int) -> int:
    return _U32.unpack_from(lg.host.mem.view, addr)[0]


def _wr(lg: Lguest, addr: int, value: int) -> None:
    _U32.pack_into(lg.host.mem.view, addr, value & 0xFFFFFFFF)


def _loaded(lg: Lguest, pgdir_page: int) -> bool:
    """Is this shadow directory the one in the CPU's CR3?  Only its
    translations can be in the TLB: every CR3 load flushes it, and shadow
    entries are never global."""
    return pgdir_page != 0 and (lg.host.hw.cr3 & _PFN_MASK) == pgdir_page


def _kill(lg: Lguest, fmt: str, *args) -> None:
    """kill_guest for the callers that only have the Guest."""
    if lg.cpus:
        kill_guest(lg.cpus[0], fmt, *args)
    elif lg.dead is None:
        lg.dead = fmt % args if args else fmt


def _switcher_pte_page(lg: Lguest) -> int:
    sw = lg.host.switcher
    return sw.pte_page if sw is not None else SWITCHER_PTE_PHYS


def _pin_stack_pages(cpu: LgCpu) -> None:
    from .interrupts_and_traps import pin_stack_pages
    pin_stack_pages(cpu)


# -- the checks on Guest entries (check_gpte, check_gpgd) ----------------------------------
def check_gpte(cpu: LgCpu, gpte: int) -> bool:
    """A Guest PTE we are about to shadow must name a page of its memory; a
    4 MiB page is not something we shadow."""
    if gpte & _PAGE_PSE or (gpte >> PAGE_SHIFT) >= cpu.lg.pfn_limit:
        kill_guest(cpu, "bad page table entry")
        return False
    return True


def check_gpgd(cpu: LgCpu, gpgd: int) -> bool:
    """A Guest page-directory entry must point at a page table in its memory
    and carry only page-table flags (a PSE entry does not)."""
    if gpgd & _FLAGS_MASK & ~_PAGE_TABLE or (gpgd >> PAGE_SHIFT) >= cpu.lg.pfn_limit:
        kill_guest(cpu, "bad page directory entry")
        return False
    return True


def gpte_to_spte(cpu: LgCpu, gpte: int, write: bool) -> int:
    """The shadow of a checked Guest PTE: the same flags on the Host's frame,
    less global (a global entry would outlive the CR3 load that switches to
    another shadow, where the same address maps elsewhere)."""
    flags = gpte & _FLAGS_MASK & ~_PAGE_GLOBAL
    if not write:
        flags &= ~_PAGE_RW
    return (cpu.lg.mem_base + (gpte & _PFN_MASK)) | flags


# -- allocation ----------------------------------------------------------------------------
def _get_zeroed_page(lg: Lguest, cpu: LgCpu | None) -> tuple[int, bool]:
    """(page, released): a shadow page from the pool.  When the pool is
    empty, every shadow PTE page goes back (they refill on demand; the
    directories stay) and we try once more; released says that happened.
    Page 0 (and the Guest killed) when even that fails."""
    pool = lg.host.pool
    try:
        return pool.get_zeroed_page(), False
    except PoolExhausted:
        pass
    release_all_pagetables(lg)
    try:
        return pool.get_zeroed_page(), True
    except PoolExhausted:
        if cpu is not None:
            kill_guest(cpu, "out of shadow page table memory")
        else:
            _kill(lg, "out of shadow page table memory")
        return 0, True


def _repin_after_release(cpu: LgCpu) -> None:
    """An emergency release took the stack pins with it: put them back.  A
    second exhaustion while doing so does not start another round."""
    lg = cpu.lg
    if lg in _repinning or lg.dead is not None:
        return
    _repinning.add(lg)
    try:
        _pin_stack_pages(cpu)
    finally:
        _repinning.discard(lg)


def _new_shadow_pgdir(lg: Lguest, cpu: LgCpu | None) -> int:
    """A zeroed shadow page directory with the Switcher in its top entry."""
    page, _ = _get_zeroed_page(lg, cpu)
    if page:
        _wr(lg, page + SWITCHER_PGD_INDEX * 4, _switcher_pte_page(lg) | SWITCHER_PGD_FLAGS)
    return page


# -- releasing shadow entries ---------------------------------------------------------------
def _present_ptes(lg: Lguest, ptepage: int) -> np.ndarray:
    entries = lg.host.mem.ram[ptepage:ptepage + PAGE_SIZE].view("<u4")
    return np.flatnonzero(entries & _PAGE_PRESENT)


def release_pgd(lg: Lguest, pgdir: Pgdir, idx: int, flush: bool = True) -> bool:
    """Drop shadow PGD entry idx and free its PTE page.  With flush, the
    TLB forgets what it held of them; without, the caller flushes once for
    many.  Returns whether the CPU could have cached any of it."""
    if pgdir.pgdir == 0 or not 0 <= idx < SWITCHER_PGD_INDEX:
        return False
    spgd_ptr = pgdir.pgdir + idx * 4
    spgd = _rd(lg, spgd_ptr)
    if not spgd & _PAGE_PRESENT:
        return False
    ptepage = spgd & _PFN_MASK
    cached = False
    if _loaded(lg, pgdir.pgdir):
        present = _present_ptes(lg, ptepage)
        cached = len(present) > 0
        if cached and flush:
            hw = lg.host.hw
            if len(present) <= _INVLPG_MAX:
                for i in present.tolist():
                    hw.invlpg(idx << PGDIR_SHIFT | i << PAGE_SHIFT)
            else:
                hw.flush_tlb()
    # release_pte has nothing to give back: Guest pages are not refcounted here.
    _wr(lg, spgd_ptr, 0)
    lg.host.pool.free_page(ptepage)
    return cached


def flush_user_mappings(lg: Lguest, idx: int) -> None:
    """Drop shadow entries below the kernel: those differ between Guest
    processes.  Before the Guest has said where its kernel starts, that is
    everything but the Switcher."""
    limit = pgd_index(lg.kernel_address) if lg.kernel_address else SWITCHER_PGD_INDEX
    limit = min(limit, SWITCHER_PGD_INDEX)
    pgdir = lg.pgdirs[idx]
    if pgdir.pgdir == 0:
        return
    cached = False
    for i in _present_pgd_indexes(lg, pgdir.pgdir, limit):
        cached |= release_pgd(lg, pgdir, i, flush=False)
    if cached:
        lg.host.hw.flush_tlb()


def _present_pgd_indexes(lg: Lguest, pgdir_page: int, limit: int) -> list:
    entries = lg.host.mem.ram[pgdir_page:pgdir_page + limit * 4].view("<u4")
    return np.flatnonzero(entries & _PAGE_PRESENT).tolist()


def release_all_pagetables(lg: Lguest) -> None:
    """Every shadow PTE page back to the pool; the directories stay."""
    cached = False
    for pgdir in lg.pgdirs:
        if pgdir.pgdir:
            for i in _present_pgd_indexes(lg, pgdir.pgdir, SWITCHER_PGD_INDEX):
                cached |= release_pgd(lg, pgdir, i, flush=False)
    if cached:
        lg.host.hw.flush_tlb()


# -- setting up and tearing down -------------------------------------------------------------
def init_guest_pagetable(lg: Lguest, pgtable: int) -> None:
    """The Launcher's initial page directory (guest-physical) becomes the
    first cached shadow, and every CPU starts on it."""
    if any(p.pgdir for p in lg.pgdirs):
        free_guest_pagetable(lg)
    if not lguest_address_ok(lg, pgtable, PAGE_SIZE):
        _kill(lg, "bad page directory %#x", pgtable)
        return
    cpu = lg.cpus[0] if lg.cpus else None
    page = _new_shadow_pgdir(lg, cpu)
    if not page:
        return
    lg.pgdirs[0].gpgdir = pgtable
    lg.pgdirs[0].pgdir = page
    for c in lg.cpus:
        c.cpu_pgd = 0


def free_guest_pagetable(lg: Lguest) -> None:
    """Every shadow page, directories too, back to the pool."""
    release_all_pagetables(lg)
    hw = lg.host.hw
    for pgdir in lg.pgdirs:
        if pgdir.pgdir:
            if _loaded(lg, pgdir.pgdir):
                hw.flush_tlb()
            lg.host.pool.free_page(pgdir.pgdir)
        pgdir.pgdir = 0
        pgdir.gpgdir = -1


def page_table_guest_data_init(cpu: LgCpu) -> None:
    """LHCALL_LGUEST_INIT's part here: learn where the Guest kernel starts
    and tell the Guest what it must leave alone and which directory it is on."""
    lg = cpu.lg
    base = lg.lguest_data
    if base is None or not lguest_address_ok(lg, base, LguestData.SIZE):
        kill_guest(cpu, "bad guest page %#x", base if base is not None else 0)
        return
    lg.kernel_address = lgread(cpu, base + LguestData.kernel_address, 4)
    lgwrite(cpu, base + LguestData.reserve_mem, 4, RESERVE_MEM)
    lgwrite(cpu, base + LguestData.pgdir, 4, lg.pgdirs[0].gpgdir)
    if pgd_index(lg.kernel_address) >= SWITCHER_PGD_INDEX:
        kill_guest(cpu, "bad kernel address %#x", lg.kernel_address)


def current_pgdir(cpu: LgCpu) -> int:
    """Host-physical address of the shadow directory for CR3."""
    return cpu.lg.pgdirs[cpu.cpu_pgd].pgdir


def map_switcher_in_guest(cpu: LgCpu, switcher) -> None:
    """Make sure the current shadow maps the Switcher, and that its PTE page
    maps this CPU's regs page where the Switcher expects it."""
    lg = cpu.lg
    pgdir = current_pgdir(cpu)
    if pgdir:
        want = switcher.pte_page | SWITCHER_PGD_FLAGS
        ptr = pgdir + SWITCHER_PGD_INDEX * 4
        old = _rd(lg, ptr)
        # The CPU sets the accessed bit as it walks; that is no change.
        if old & ~(_PAGE_ACCESSED | _PAGE_DIRTY) != want:
            _wr(lg, ptr, want)
            if old & _PAGE_PRESENT and _loaded(lg, pgdir):
                lg.host.hw.flush_tlb()
    regs_ptr = switcher.pte_page + pte_index(switcher.pages_linear) * 4
    want = cpu.regs_page | _PAGE_PRESENT | _PAGE_RW
    old = _rd(lg, regs_ptr)
    if old & ~(_PAGE_ACCESSED | _PAGE_DIRTY) != want:
        _wr(lg, regs_ptr, want)
        if old & _PAGE_PRESENT:
            lg.host.hw.invlpg(switcher.pages_linear)


# -- page faults --------------------------------------------------------------------------------
def _gpgd_addr(cpu: LgCpu, vaddr: int) -> int:
    return cpu.lg.pgdirs[cpu.cpu_pgd].gpgdir + pgd_index(vaddr) * 4


def _gpte_addr(gpgd: int, vaddr: int) -> int:
    return (gpgd & _PFN_MASK) + pte_index(vaddr) * 4


def demand_page(cpu: LgCpu, vaddr: int, errcode: int) -> bool:
    """A page fault at vaddr (errcode: 1 present, 2 write, 4 user).  True
    when the Guest's own tables allow the access and the shadow now does
    too; False when the fault is the Guest's to handle."""
    lg = cpu.lg
    vaddr &= 0xFFFFFFFF
    idx = pgd_index(vaddr)
    if idx >= SWITCHER_PGD_INDEX:
        return False
    pgdir = lg.pgdirs[cpu.cpu_pgd]
    if pgdir.pgdir == 0:
        return False
    gpgd = lgread(cpu, _gpgd_addr(cpu, vaddr))
    if not gpgd & _PAGE_PRESENT:
        return False
    # Checked on every fill, not only when the shadow PTE page is made: the
    # entry may have changed since, and it says where we read the PTE from.
    if not check_gpgd(cpu, gpgd):
        return False
    gpte_ptr = _gpte_addr(gpgd, vaddr)
    gpte = lgread(cpu, gpte_ptr)
    if not gpte & _PAGE_PRESENT:
        return False
    # The hardware grants what both levels grant; a PTE-only check would
    # fill a shadow the CPU still refuses, and the Guest would fault forever.
    if errcode & 2 and not gpgd & gpte & _PAGE_RW:
        return False
    if errcode & 4 and not gpgd & gpte & _PAGE_USER:
        return False
    if not check_gpte(cpu, gpte):
        return False

    gpte |= _PAGE_ACCESSED
    if errcode & 2:
        gpte |= _PAGE_DIRTY

    spgd_ptr = pgdir.pgdir + idx * 4
    spgd = _rd(lg, spgd_ptr)
    released = False
    if not spgd & _PAGE_PRESENT:
        ptepage, released = _get_zeroed_page(lg, cpu)
        if not ptepage:
            return False
        spgd = ptepage | (gpgd & _PAGE_TABLE)
        _wr(lg, spgd_ptr, spgd)
    else:
        need = (_PAGE_RW if errcode & 2 else 0) | (_PAGE_USER if errcode & 4 else 0)
        if spgd & need != need:
            # The Guest widened its directory entry without SET_PGD.
            spgd |= gpgd & need
            _wr(lg, spgd_ptr, spgd)
            if _loaded(lg, pgdir.pgdir):
                lg.host.hw.flush_tlb()

    spte_ptr = (spgd & _PFN_MASK) + pte_index(vaddr) * 4
    old = _rd(lg, spte_ptr)
    # Writable only once dirty: the first write faults here and marks the
    # Guest's PTE dirty, as the hardware would have.
    new = gpte_to_spte(cpu, gpte, bool(gpte & _PAGE_DIRTY))
    _wr(lg, spte_ptr, new)
    if old & _PAGE_PRESENT and old != new and _loaded(lg, pgdir.pgdir):
        lg.host.hw.invlpg(vaddr)
    lgwrite(cpu, gpte_ptr, 4, gpte)
    if released:
        _repin_after_release(cpu)
    return True


def page_writable(cpu: LgCpu, vaddr: int) -> bool:
    """Does the current shadow already map vaddr writable?"""
    lg = cpu.lg
    idx = pgd_index(vaddr)
    pgdir = current_pgdir(cpu)
    if idx >= SWITCHER_PGD_INDEX or not pgdir:
        return False
    spgd = _rd(lg, pgdir + idx * 4)
    if not spgd & _PAGE_PRESENT:
        return False
    spte = _rd(lg, (spgd & _PFN_MASK) + pte_index(vaddr) * 4)
    both = _PAGE_PRESENT | _PAGE_RW
    return spgd & spte & both == both


def pin_page(cpu: LgCpu, vaddr: int) -> None:
    """Map a kernel stack page writable now, so a trap's push cannot fault."""
    vaddr &= 0xFFFFFFFF
    if not page_writable(cpu, vaddr) and not demand_page(cpu, vaddr, 2):
        kill_guest(cpu, "bad stack page %#x", vaddr)


def guest_pa(cpu: LgCpu, vaddr: int) -> int:
    """The guest-physical address of vaddr through the Guest's own tables."""
    vaddr &= 0xFFFFFFFF
    gpgd = lgread(cpu, _gpgd_addr(cpu, vaddr))
    if not gpgd & _PAGE_PRESENT:
        kill_guest(cpu, "Bad address %#x", vaddr)
        return 0xFFFFFFFF
    gpte = lgread(cpu, _gpte_addr(gpgd, vaddr))
    if not gpte & _PAGE_PRESENT:
        kill_guest(cpu, "Bad address %#x", vaddr)
        return 0xFFFFFFFF
    return (gpte & _PFN_MASK) | (vaddr & _FLAGS_MASK)


# -- switching page tables -----------------------------------------------------------------------
def find_pgdir(lg: Lguest, pgtable: int) -> int:
    """The slot caching pgtable's shadow, or len(lg.pgdirs)."""
    for i, pgdir in enumerate(lg.pgdirs):
        if pgdir.pgdir and pgdir.gpgdir == pgtable:
            return i
    return len(lg.pgdirs)


def new_pgdir(cpu: LgCpu, gpgdir: int) -> int | None:
    """A slot for gpgdir's shadow: a never-used one, else the next in
    round-robin order that is not the current one (its user entries
    dropped; kernel entries are the same in every Guest directory).
    None when no page could be had (the Guest is dead)."""
    lg = cpu.lg
    n = len(lg.pgdirs)
    slot = next((i for i in range(n) if not lg.pgdirs[i].pgdir and i != cpu.cpu_pgd), None)
    if slot is None:
        start = lg.pgdir_next
        slot = next(((start + k) % n for k in range(n) if (start + k) % n != cpu.cpu_pgd),
                    cpu.cpu_pgd)
        lg.pgdir_next = (slot + 1) % n
    pgdir = lg.pgdirs[slot]
    if not pgdir.pgdir:
        page = _new_shadow_pgdir(lg, cpu)
        if not page:
            return None
        pgdir.pgdir = page
        pgdir.gpgdir = gpgdir
    else:
        pgdir.gpgdir = gpgdir
        flush_user_mappings(lg, slot)
    return slot


def guest_new_pagetable(cpu: LgCpu, pgtable: int) -> None:
    """LHCALL_NEW_PGTABLE: switch to pgtable's shadow, making one if it is
    not cached.  A made one needs the stack pinned again; Linux re-pins only
    a freshly allocated one, but a reused one has lost its pins too when the
    Guest has not told us where its kernel starts, and may never have had
    pins for the current stack."""
    lg = cpu.lg
    pgtable &= 0xFFFFFFFF
    if not lguest_address_ok(lg, pgtable, PAGE_SIZE):
        kill_guest(cpu, "bad page directory %#x", pgtable)
        return
    idx = find_pgdir(lg, pgtable)
    repin = False
    if idx == len(lg.pgdirs):
        idx = new_pgdir(cpu, pgtable)
        if idx is None:
            return
        repin = True
    cpu.cpu_pgd = idx
    if repin:
        _pin_stack_pages(cpu)


def guest_pagetable_clear_all(cpu: LgCpu) -> None:
    """LHCALL_FLUSH_TLB(1): forget every shadow mapping, then re-pin the stack."""
    release_all_pagetables(cpu.lg)
    _pin_stack_pages(cpu)


def guest_pagetable_flush_user(cpu: LgCpu) -> None:
    """LHCALL_FLUSH_TLB(0): forget the current shadow's user mappings."""
    flush_user_mappings(cpu.lg, cpu.cpu_pgd)


# -- the Guest changing its tables --------------------------------------------------------------
def do_set_pte(cpu: LgCpu, idx: int, vaddr: int, gpte: int) -> None:
    """Bring one shadow's entry for vaddr in line with the new Guest PTE.
    Only where a shadow PTE page already exists; the entry is filled right
    away when the Guest would not fault on it anyway (present and accessed),
    else left for demand_page."""
    lg = cpu.lg
    if pgd_index(vaddr) >= SWITCHER_PGD_INDEX:
        kill_guest(cpu, "attempt to access switcher pages")
        return
    pgdir = lg.pgdirs[idx]
    spgd = _rd(lg, pgdir.pgdir + pgd_index(vaddr) * 4)
    if not spgd & _PAGE_PRESENT:
        return
    spte_ptr = (spgd & _PFN_MASK) + pte_index(vaddr) * 4
    old = _rd(lg, spte_ptr)
    new = 0
    if gpte & _PAGE_PRESENT and gpte & (_PAGE_ACCESSED | _PAGE_DIRTY) and check_gpte(cpu, gpte):
        new = gpte_to_spte(cpu, gpte, bool(gpte & _PAGE_DIRTY))
    _wr(lg, spte_ptr, new)
    if old & _PAGE_PRESENT and old != new and _loaded(lg, pgdir.pgdir):
        lg.host.hw.invlpg(vaddr)


def guest_set_pte(cpu: LgCpu, gpgdir: int, vaddr: int, gpte: int) -> None:
    """LHCALL_SET_PTE: a kernel mapping is in every shadow; a user mapping
    only in gpgdir's, if it is cached."""
    lg = cpu.lg
    vaddr &= 0xFFFFFFFF
    gpte &= 0xFFFFFFFF
    if lg.kernel_address and vaddr >= lg.kernel_address:
        for i, pgdir in enumerate(lg.pgdirs):
            if pgdir.pgdir:
                do_set_pte(cpu, i, vaddr, gpte)
    else:
        i = find_pgdir(lg, gpgdir & 0xFFFFFFFF)
        if i != len(lg.pgdirs):
            do_set_pte(cpu, i, vaddr, gpte)


def guest_set_pgd(lg: Lguest, gpgdir: int, idx: int) -> None:
    """LHCALL_SET_PGD: a page-directory entry changed; drop its shadow (it
    refills on demand).  The Switcher's entry is not the Guest's to change."""
    idx &= 0xFFFFFFFF
    if idx >= SWITCHER_PGD_INDEX:
        return
    i = find_pgdir(lg, gpgdir & 0xFFFFFFFF)
    if i < len(lg.pgdirs):
        release_pgd(lg, lg.pgdirs[i], idx)


def guest_set_pmd(lg: Lguest, gpgdir: int, idx: int) -> None:
    """LHCALL_SET_PMD: without PAE the "pmd" is the page-directory entry."""
    guest_set_pgd(lg, gpgdir, idx)
