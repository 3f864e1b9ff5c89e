"""The Guest kernel's memory management, after Linux's mm/ in miniature:
a page allocator over Guest RAM, the kernel's own page tables (all RAM at
PAGE_OFFSET, like swapper_pg_dir), and user address spaces (mm_struct) of
areas (vm_area_struct) whose pages are allocated when first touched.

All page-table changes go through the paravirt ops (set_pte_at, set_pmd,
write_cr3), so the Host's shadows follow them; user memory is reached by
walking our own tables to the physical page and using the kernel's mapping
of it, as get_user_pages does.
"""
import struct

import attrs

from lguest_host.abi import PAGE_OFFSET, PAGE_SIZE

from . import boot

PTE_P, PTE_W, PTE_U, PTE_A, PTE_D = 0x1, 0x2, 0x4, 0x20, 0x40
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
USER_TOP = PAGE_OFFSET                    # TASK_SIZE
STACK_TOP = USER_TOP
STACK_LIMIT = 8 << 20                     # RLIMIT_STACK
MMAP_BASE = 0x40000000                    # TASK_UNMAPPED_BASE
EFAULT, ENOMEM, EINVAL = 14, 12, 22
_U32 = struct.Struct("<I")
ZERO_PAGE = bytes(PAGE_SIZE)


class OutOfMemory(Exception):
    pass


class UserFault(Exception):
    """A user pointer the process may not use this way (-EFAULT)."""


def __va(pa: int) -> int:
    return PAGE_OFFSET + pa


class PageAllocator:
    """Free physical pages of Guest RAM: a bump pointer and a free list."""

    def __init__(self, start: int, end: int):
        self.next = (start + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        self.end = end & ~(PAGE_SIZE - 1)
        self.free: list[int] = []
        self.fresh = True                 # pages from the bump pointer are still zero

    def alloc(self) -> tuple[int, bool]:
        """A page and whether it is known to be zero already."""
        if self.free:
            return self.free.pop(), False
        if self.next >= self.end:
            raise OutOfMemory("out of memory")
        pa = self.next
        self.next += PAGE_SIZE
        return pa, True

    def release(self, pa: int) -> None:
        self.free.append(pa)

    @property
    def pages_free(self) -> int:
        return len(self.free) + (self.end - self.next) // PAGE_SIZE


def get_zeroed_page(k):
    pa, zero = k.pages.alloc()
    if not zero:
        yield from k.mem.write(__va(pa), ZERO_PAGE)
    return pa


def paging_init(k, ram_end: int):
    """Build swapper_pg_dir: every page of RAM (and the device page above it)
    at PAGE_OFFSET, supervisor read/write; then switch to it."""
    pgdir = yield from get_zeroed_page(k)
    pages = ram_end // PAGE_SIZE
    directory = bytearray(PAGE_SIZE)
    for first in range(0, pages, 1024):
        table_pa = yield from get_zeroed_page(k)
        table = bytearray(PAGE_SIZE)
        for i in range(first, min(pages, first + 1024)):
            _U32.pack_into(table, (i - first) * 4, (i << 12) | PTE_P | PTE_W | PTE_A | PTE_D)
        yield from k.mem.write(__va(table_pa), bytes(table))
        _U32.pack_into(directory, ((PAGE_OFFSET >> 22) + first // 1024) * 4,
                       table_pa | PTE_P | PTE_W | PTE_A)
    yield from k.mem.write(__va(pgdir), bytes(directory))
    k.swapper_pg_dir = pgdir
    yield from boot.lguest_write_cr3(k, pgdir)


@attrs.define
class Vma:
    start: int
    end: int
    prot: int
    name: str = ""


@attrs.define(eq=False)
class Mm:
    """One user address space: its page directory and areas."""
    pgdir: int
    vmas: list = attrs.field(factory=list)
    brk_start: int = 0
    brk: int = 0
    mmap_base: int = MMAP_BASE

    def find_vma(self, addr: int) -> Vma | None:
        for vma in self.vmas:
            if vma.start <= addr < vma.end:
                return vma
        return None

    def overlaps(self, start: int, end: int) -> bool:
        return any(v.start < end and start < v.end for v in self.vmas)

    def add_vma(self, start: int, end: int, prot: int, name: str = "") -> Vma:
        vma = Vma(start, end, prot, name)
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)
        return vma

    def get_unmapped_area(self, length: int) -> int | None:
        addr = self.mmap_base
        for vma in self.vmas:
            if vma.end <= addr:
                continue
            if vma.start >= addr + length:
                break
            addr = max(addr, vma.end)
        if addr + length > STACK_TOP - STACK_LIMIT:
            return None
        return addr


def mm_alloc(k):
    """pgd_alloc: a new directory sharing the kernel's entries."""
    pgdir = yield from get_zeroed_page(k)
    kernel = yield from k.mem.read(__va(k.swapper_pg_dir) + (PAGE_OFFSET >> 20), PAGE_SIZE - (PAGE_OFFSET >> 20))
    yield from k.mem.write(__va(pgdir) + (PAGE_OFFSET >> 20), kernel)
    return Mm(pgdir=pgdir)


# -- page tables ------------------------------------------------------------------------------
def lookup_pte(k, mm: Mm, addr: int):
    """(address of the PTE in kernel space, its value), or (None, 0) with no page table."""
    pde = yield from k.mem.read_u32(__va(mm.pgdir) + (addr >> 22) * 4)
    if not pde & PTE_P:
        return None, 0
    ptep = __va(pde & ~0xFFF) + ((addr >> 12) & 0x3FF) * 4
    return ptep, (yield from k.mem.read_u32(ptep))


def map_page(k, mm: Mm, addr: int, pa: int, prot: int):
    """Install one user page (set_pmd for a new page table, set_pte_at)."""
    pdep = __va(mm.pgdir) + (addr >> 22) * 4
    pde = yield from k.mem.read_u32(pdep)
    if not pde & PTE_P:
        table = yield from get_zeroed_page(k)
        yield from boot.lguest_set_pmd(k, pdep, table | PTE_P | PTE_W | PTE_U | PTE_A)
        pde = table | PTE_P
    ptep = __va(pde & ~0xFFF) + ((addr >> 12) & 0x3FF) * 4
    pte = pa | PTE_P | PTE_U | PTE_A | (PTE_W if prot & PROT_WRITE else 0)
    yield from boot.lguest_set_pte_at(k, mm.pgdir, addr & ~0xFFF, ptep, pte)


def populate(k, mm: Mm, addr: int, data: bytes | None = None):
    """Make sure the page at `addr` is present (a fresh zero page, or `data`);
    returns its physical address."""
    ptep, pte = yield from lookup_pte(k, mm, addr)
    if pte & PTE_P:
        return pte & ~0xFFF
    vma = mm.find_vma(addr)
    if data is None:
        pa = yield from get_zeroed_page(k)
    else:
        pa, _ = k.pages.alloc()
        yield from k.mem.write(__va(pa), data)
    yield from map_page(k, mm, addr & ~0xFFF, pa, vma.prot if vma else PROT_READ)
    return pa


def unmap_range(k, mm: Mm, start: int, end: int):
    """Drop the pages of [start, end) and tell the Host about each."""
    addr = start
    while addr < end:
        ptep, pte = yield from lookup_pte(k, mm, addr)
        if ptep is None:
            addr = (addr | 0x3FFFFF) + 1
            continue
        if pte & PTE_P:
            yield from boot.lguest_set_pte_at(k, mm.pgdir, addr, ptep, 0)
            k.pages.release(pte & ~0xFFF)
        addr += PAGE_SIZE


def protect_range(k, mm: Mm, start: int, end: int, prot: int):
    for addr in range(start, end, PAGE_SIZE):
        ptep, pte = yield from lookup_pte(k, mm, addr)
        if pte & PTE_P:
            new = (pte & ~PTE_W) | (PTE_W if prot & PROT_WRITE else 0)
            if new != pte:
                yield from boot.lguest_set_pte_at(k, mm.pgdir, addr, ptep, new)


# -- user memory ----------------------------------------------------------------------------------
def user_chunks(k, mm: Mm, addr: int, n: int, write: bool):
    """Kernel addresses covering user [addr, addr+n), faulting pages in:
    UserFault when any of it lies outside an area allowing the access."""
    chunks = []
    if n < 0 or addr + n > USER_TOP:
        raise UserFault(addr)
    while n > 0:
        vma = mm.find_vma(addr)
        if vma is None or not vma.prot & (PROT_WRITE if write else PROT_READ):
            raise UserFault(addr)
        pa = yield from populate(k, mm, addr)
        chunk = min(n, PAGE_SIZE - (addr & 0xFFF))
        chunks.append((__va(pa) + (addr & 0xFFF), chunk))
        addr += chunk
        n -= chunk
    return chunks


def copy_from_user(k, mm: Mm, addr: int, n: int):
    out = []
    for kaddr, chunk in (yield from user_chunks(k, mm, addr, n, False)):
        out.append((yield from k.mem.read(kaddr, chunk)))
    return b"".join(out)


def copy_to_user(k, mm: Mm, addr: int, data: bytes):
    pos = 0
    for kaddr, chunk in (yield from user_chunks(k, mm, addr, len(data), True)):
        yield from k.mem.write(kaddr, data[pos:pos + chunk])
        pos += chunk


def strncpy_from_user(k, mm: Mm, addr: int, limit: int = 4096):
    out = bytearray()
    while len(out) < limit:
        chunk = min(limit - len(out), PAGE_SIZE - (addr & 0xFFF))
        data = yield from copy_from_user(k, mm, addr, chunk)
        nul = data.find(b"\0")
        if nul >= 0:
            return bytes(out + data[:nul])
        out += data
        addr += chunk
    raise UserFault(addr)


def handle_mm_fault(k, mm: Mm, addr: int, write: bool, present: bool):
    """A user page fault the Host passed on: fault the page in when an area
    allows the access; False means SIGSEGV."""
    vma = mm.find_vma(addr)
    if vma is None and mm.vmas and addr >= STACK_TOP - STACK_LIMIT:
        vma = _grow_stack(mm, addr)
    if vma is None or present or not vma.prot & (PROT_WRITE if write else PROT_READ):
        return False
    yield from populate(k, mm, addr)
    return True


def _grow_stack(mm: Mm, addr: int) -> Vma | None:
    stack = next((v for v in mm.vmas if v.name == "[stack]"), None)
    if stack is None or addr >= stack.start or addr < STACK_TOP - STACK_LIMIT:
        return None
    stack.start = addr & ~0xFFF
    return stack
