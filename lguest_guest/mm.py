"""The Guest kernel's memory management, after Linux's mm/ in miniature:
a page allocator over Guest RAM, the kernel's own page tables (all RAM at
PAGE_OFFSET, like swapper_pg_dir), and user address spaces (mm_struct) of
areas (vm_area_struct) whose pages are allocated when first touched
(mm/memory.c's handle_mm_fault), anonymous or backed by a file of the
archive (a private file mapping: the page is filled from the file then).

The area operations follow mm/mmap.c and mm/mprotect.c, mm/mremap.c:
carving a range out of the areas splits them at its edges (do_munmap),
mprotect splits and changes the rights, mremap shrinks, grows in place or
moves the page-table entries.  A PROT_NONE page keeps its frame in a
not-present entry marked like i386's _PAGE_PROTNONE, so the data comes
back when the rights do.

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
# i386's _PAGE_PROTNONE is the global bit in a not-present entry: the frame
# stays, the MMU (and the Host's shadow) sees nothing mapped.
PTE_PROTNONE = 0x100
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
USER_TOP = PAGE_OFFSET                    # TASK_SIZE
STACK_TOP = USER_TOP
STACK_LIMIT = 8 << 20                     # RLIMIT_STACK
MMAP_BASE = 0x40000000                    # TASK_UNMAPPED_BASE
MMAP_END = STACK_TOP - STACK_LIMIT        # mappings stay below the stack's reach
_U32 = struct.Struct("<I")
ZERO_PAGE = bytes(PAGE_SIZE)


class OutOfMemory(Exception):
    pass


class UserFault(Exception):
    """A user pointer the process may not use this way (-EFAULT)."""


class NameTooLong(Exception):
    """A user string longer than the limit asked for (-ENAMETOOLONG)."""


def __va(pa: int) -> int:
    return PAGE_OFFSET + pa


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def allows(prot: int, write: bool) -> bool:
    """x86 without NX: any right makes a page readable (mm/fault's access_error)."""
    return bool(prot & PROT_WRITE) if write else bool(prot & (PROT_READ | PROT_WRITE | PROT_EXEC))


class PageAllocator:
    """Free physical pages of Guest RAM: a bump pointer and a free list."""

    def __init__(self, start: int, end: int):
        self.next = (start + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        self.end = end & ~(PAGE_SIZE - 1)
        self.free: list[int] = []

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
    """[start, end) with one set of rights; `file` is the contents of a
    privately mapped archive file and `pgoff` the file page at `start`."""
    start: int
    end: int
    prot: int
    name: str = ""
    file: bytes | None = None
    pgoff: int = 0

    def piece(self, start: int, end: int) -> "Vma":
        """The part [start, end) of this area (file offset kept in step)."""
        return Vma(start, end, self.prot, self.name, self.file,
                   self.pgoff + (start - self.start) // PAGE_SIZE)


@attrs.define(eq=False)
class Mm:
    """One user address space: its page directory and areas (sorted, disjoint)."""
    pgdir: int
    vmas: list = attrs.field(factory=list)
    start_brk: int = 0
    brk: int = 0
    mmap_base: int = MMAP_BASE

    def find_vma(self, addr: int) -> Vma | None:
        for vma in self.vmas:
            if vma.start <= addr < vma.end:
                return vma
        return None

    def overlaps(self, start: int, end: int) -> bool:
        return any(v.start < end and start < v.end for v in self.vmas)

    def covered(self, start: int, end: int) -> bool:
        """Is every byte of [start, end) in some area?"""
        at = start
        for v in self.vmas:
            if v.end <= at:
                continue
            if v.start > at:
                return False
            at = v.end
            if at >= end:
                return True
        return at >= end

    def add_vma(self, start: int, end: int, prot: int, name: str = "",
                file: bytes | None = None, pgoff: int = 0) -> Vma:
        vma = Vma(start, end, prot, name, file, pgoff)
        self.insert(vma)
        return vma

    def insert(self, vma: Vma) -> None:
        """Add an area, merged with neighbours it continues (vma_merge)."""
        if vma.end <= vma.start:
            return
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)
        merged = [self.vmas[0]]
        for v in self.vmas[1:]:
            last = merged[-1]
            if last.end == v.start and last.prot == v.prot and last.name == v.name and (
                    last.file is None and v.file is None or last.file is v.file and
                    v.pgoff == last.pgoff + (last.end - last.start) // PAGE_SIZE):
                last.end = v.end
            else:
                merged.append(v)
        self.vmas = merged

    def carve(self, start: int, end: int) -> list:
        """Take [start, end) out of the areas, splitting those on its edges;
        returns the pieces taken out (in address order)."""
        kept, taken = [], []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                kept.append(v)
                continue
            if v.start < start:
                kept.append(v.piece(v.start, start))
            if v.end > end:
                kept.append(v.piece(end, v.end))
            taken.append(v.piece(max(v.start, start), min(v.end, end)))
        self.vmas = sorted(kept, key=lambda v: v.start)
        return taken

    def get_unmapped_area(self, length: int, hint: int = 0) -> int | None:
        """arch_get_unmapped_area, bottom-up from TASK_UNMAPPED_BASE; a free
        page-aligned hint is taken as it is."""
        if hint and not hint & 0xFFF and PAGE_SIZE <= hint and hint + length <= MMAP_END \
                and not self.overlaps(hint, hint + length):
            return hint
        addr = self.mmap_base
        for vma in self.vmas:
            if vma.end <= addr:
                continue
            if vma.start >= addr + length:
                break
            addr = max(addr, vma.end)
        if addr + length > MMAP_END:
            return None
        return addr


def mm_alloc(k):
    """pgd_alloc: a new directory sharing the kernel's entries."""
    pgdir = yield from get_zeroed_page(k)
    kernel = yield from k.mem.read(__va(k.swapper_pg_dir) + (PAGE_OFFSET >> 20),
                                   PAGE_SIZE - (PAGE_OFFSET >> 20))
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


def _has_frame(pte: int) -> bool:
    return bool(pte & (PTE_P | PTE_PROTNONE))


def make_pte(pa: int, prot: int) -> int:
    if not prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
        return pa | PTE_PROTNONE
    return pa | PTE_P | PTE_U | PTE_A | (PTE_W if prot & PROT_WRITE else 0)


def map_page(k, mm: Mm, addr: int, pa: int, prot: int):
    """Install one user page (set_pmd for a new page table, set_pte_at)."""
    pdep = __va(mm.pgdir) + (addr >> 22) * 4
    pde = yield from k.mem.read_u32(pdep)
    if not pde & PTE_P:
        table = yield from get_zeroed_page(k)
        yield from boot.lguest_set_pmd(k, pdep, table | PTE_P | PTE_W | PTE_U | PTE_A)
        pde = table | PTE_P
    ptep = __va(pde & ~0xFFF) + ((addr >> 12) & 0x3FF) * 4
    yield from boot.lguest_set_pte_at(k, mm.pgdir, addr & ~0xFFF, ptep, make_pte(pa, prot))


def _file_page(vma: Vma, addr: int) -> bytes | None:
    if vma is None or vma.file is None:
        return None
    off = (vma.pgoff + (addr - vma.start) // PAGE_SIZE) * PAGE_SIZE
    return vma.file[off:off + PAGE_SIZE]


def populate(k, mm: Mm, addr: int, data: bytes | None = None):
    """Make sure the page at `addr` has a frame (a fresh zero page, the file's
    page for a file mapping, or `data`) with its area's rights; returns its
    physical address."""
    addr &= ~0xFFF
    ptep, pte = yield from lookup_pte(k, mm, addr)
    vma = mm.find_vma(addr)
    prot = vma.prot if vma else PROT_READ
    if pte & PTE_P:
        return pte & ~0xFFF
    if pte & PTE_PROTNONE:
        # The frame kept through PROT_NONE: map it again with today's rights.
        pa = pte & ~0xFFF
        yield from boot.lguest_set_pte_at(k, mm.pgdir, addr, ptep, make_pte(pa, prot))
        return pa
    if data is None:
        data = _file_page(vma, addr)
    if not data:
        pa = yield from get_zeroed_page(k)
    else:
        pa, _ = k.pages.alloc()
        yield from k.mem.write(__va(pa), bytes(data).ljust(PAGE_SIZE, b"\0"))
    yield from map_page(k, mm, addr, pa, prot)
    return pa


def unmap_range(k, mm: Mm, start: int, end: int):
    """Drop the pages of [start, end) and tell the Host about each."""
    addr = start
    while addr < end:
        ptep, pte = yield from lookup_pte(k, mm, addr)
        if ptep is None:
            addr = (addr | 0x3FFFFF) + 1
            continue
        if _has_frame(pte):
            yield from boot.lguest_set_pte_at(k, mm.pgdir, addr, ptep, 0)
            k.pages.release(pte & ~0xFFF)
        addr += PAGE_SIZE


def protect_range(k, mm: Mm, start: int, end: int, prot: int):
    """New rights for the pages of [start, end) that have frames."""
    addr = start
    while addr < end:
        ptep, pte = yield from lookup_pte(k, mm, addr)
        if ptep is None:
            addr = (addr | 0x3FFFFF) + 1
            continue
        if _has_frame(pte):
            new = make_pte(pte & ~0xFFF, prot)
            if new != pte & ~(PTE_D):
                yield from boot.lguest_set_pte_at(k, mm.pgdir, addr, ptep, new)
        addr += PAGE_SIZE


# -- the area operations behind munmap, mprotect, brk and mremap -------------------------------
def do_munmap(k, mm: Mm, start: int, end: int):
    mm.carve(start, end)
    yield from unmap_range(k, mm, start, end)


def do_mprotect(k, mm: Mm, start: int, end: int, prot: int):
    """Change the rights of [start, end): False when part of it is unmapped
    (mprotect's -ENOMEM)."""
    if not mm.covered(start, end):
        return False
    for piece in mm.carve(start, end):
        piece.prot = prot
        mm.insert(piece)
    yield from protect_range(k, mm, start, end, prot)
    return True


def move_pages(k, mm: Mm, old: int, new: int, length: int):
    """mremap's move_page_tables: the frames of [old, old+length) now
    appear at [new, new+length) with the area's rights."""
    for off in range(0, length, PAGE_SIZE):
        ptep, pte = yield from lookup_pte(k, mm, old + off)
        if ptep is None or not _has_frame(pte):
            continue
        yield from boot.lguest_set_pte_at(k, mm.pgdir, old + off, ptep, 0)
        vma = mm.find_vma(new + off)
        yield from map_page(k, mm, new + off, pte & ~0xFFF, vma.prot if vma else PROT_READ)


# -- user memory ----------------------------------------------------------------------------------
def user_chunks(k, mm: Mm, addr: int, n: int, write: bool):
    """Kernel addresses covering user [addr, addr+n), faulting pages in:
    UserFault when any of it lies outside an area allowing the access."""
    chunks = []
    if n < 0 or addr + n > USER_TOP:
        raise UserFault(addr)
    while n > 0:
        vma = mm.find_vma(addr) or _grow_stack(mm, addr)
        if vma is None or not allows(vma.prot, write):
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
    """A NUL-terminated user string of fewer than `limit` bytes."""
    out = bytearray()
    while len(out) < limit:
        chunk = min(limit - len(out), PAGE_SIZE - (addr & 0xFFF))
        data = yield from copy_from_user(k, mm, addr, chunk)
        nul = data.find(b"\0")
        if nul >= 0:
            return bytes(out + data[:nul])
        out += data
        addr += chunk
    raise NameTooLong(addr)


def handle_mm_fault(k, mm: Mm, addr: int, write: bool, present: bool):
    """A user page fault the Host passed on: fault the page in when an area
    allows the access; False means SIGSEGV."""
    vma = mm.find_vma(addr) or _grow_stack(mm, addr)
    if vma is None or present or not allows(vma.prot, write):
        return False
    yield from populate(k, mm, addr)
    return True


def _grow_stack(mm: Mm, addr: int) -> Vma | None:
    """The stack area grows down on a touch below it, up to RLIMIT_STACK
    (expand_stack), never into another area."""
    if addr >= STACK_TOP or addr < STACK_TOP - STACK_LIMIT:
        return None
    stack = next((v for v in mm.vmas if v.name == "[stack]"), None)
    if stack is None or addr >= stack.start:
        return None
    new_start = addr & ~0xFFF
    if mm.overlaps(new_start, stack.start):
        return None
    stack.start = new_start
    return stack
