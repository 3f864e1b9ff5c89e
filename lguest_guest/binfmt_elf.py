"""Loading a static ELF32 i386 executable into a fresh address space, after
Linux's fs/binfmt_elf.c: PT_LOAD segments as areas with their protections
(file bytes copied, the rest zero), the break after the last segment, and
the initial stack the i386 System V ABI describes — argc, argv, envp, then
the auxiliary vector (AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_ENTRY,
AT_UID.., AT_RANDOM, AT_NULL).
"""
import struct

from lguest_host.abi import PAGE_SIZE
from x86core.elf import ELFError, parse_elf

from . import mm as mmu
from .mm import PROT_EXEC, PROT_READ, PROT_WRITE, STACK_LIMIT, STACK_TOP, USER_TOP

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_EXECFN = 23, 25, 31
PF_X, PF_W, PF_R = 1, 2, 4


def _prot(flags: int) -> int:
    return (PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0) | \
        (PROT_EXEC if flags & PF_X else 0)


def load_elf_binary(k, data: bytes, argv: list, envp: list, random16: bytes):
    """Build the process image; returns (mm, entry, initial esp).  Raises
    ELFError for a file we cannot run."""
    image = parse_elf(data)
    for seg in image.loads:
        if seg.vaddr < PAGE_SIZE or seg.vaddr + seg.memsz > STACK_TOP - STACK_LIMIT:
            raise ELFError(f"segment at {seg.vaddr:#x} is outside user space")
    mm = yield from mmu.mm_alloc(k)
    yield from _load_segments(k, mm, image)
    end = (image.end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    mm.brk_start = mm.brk = end
    mm.add_vma(end, end, PROT_READ | PROT_WRITE, "[heap]")
    mm.add_vma(STACK_TOP - 32 * PAGE_SIZE, STACK_TOP, PROT_READ | PROT_WRITE, "[stack]")
    sp = yield from _create_elf_tables(k, mm, image, argv, envp, random16)
    return mm, image.entry, sp


def _load_segments(k, mm, image):
    # Areas first: each page gets the union of the rights of the segments on
    # it (text and data may share the page between them).
    prot_of = {}
    for seg in image.loads:
        for page in range(seg.vaddr & ~(PAGE_SIZE - 1), seg.vaddr + seg.memsz, PAGE_SIZE):
            prot_of[page] = prot_of.get(page, 0) | _prot(seg.flags)
    run_start = None
    pages = sorted(prot_of)
    for i, page in enumerate(pages):
        if run_start is None:
            run_start = page
        last = i + 1 == len(pages)
        if last or pages[i + 1] != page + PAGE_SIZE or prot_of[pages[i + 1]] != prot_of[page]:
            mm.add_vma(run_start, page + PAGE_SIZE, prot_of[page])
            run_start = None
    for seg in image.loads:
        contents = image.segment_bytes(seg)
        for page in range(seg.vaddr & ~(PAGE_SIZE - 1), seg.vaddr + seg.memsz, PAGE_SIZE):
            pa = yield from mmu.populate(k, mm, page)
            lo = max(page, seg.vaddr) - seg.vaddr
            hi = min(page + PAGE_SIZE, seg.vaddr + seg.filesz) - seg.vaddr
            if hi > lo:
                at = mmu.__va(pa) + (max(page, seg.vaddr) - page)
                yield from k.mem.write(at, contents[lo:hi])


def _create_elf_tables(k, mm, image, argv, envp, random16):
    strings = bytearray()
    offsets = []
    for s in list(argv) + list(envp):
        offsets.append(len(strings))
        strings += (s.encode() if isinstance(s, str) else bytes(s)) + b"\0"
    platform_at = len(strings)
    strings += b"i686\0"
    random_at = len(strings)
    strings += bytes(random16[:16]).ljust(16, b"\0")
    area = STACK_TOP - len(strings)
    area &= ~0xF
    addr = [area + o for o in offsets]
    argv_ptrs, env_ptrs = addr[:len(argv)], addr[len(argv):]
    auxv = [AT_PHDR, image.phdr_vaddr, AT_PHENT, image.phentsize, AT_PHNUM, image.phnum,
            AT_PAGESZ, PAGE_SIZE, AT_BASE, 0, AT_FLAGS, 0, AT_ENTRY, image.entry,
            AT_UID, 0, AT_EUID, 0, AT_GID, 0, AT_EGID, 0, AT_SECURE, 0, AT_CLKTCK, 100,
            AT_HWCAP, k.hwcap, AT_PLATFORM, area + platform_at, AT_RANDOM, area + random_at,
            AT_EXECFN, argv_ptrs[0] if argv_ptrs else 0, AT_NULL, 0]
    words = [len(argv)] + argv_ptrs + [0] + env_ptrs + [0] + auxv
    sp = (area - 4 * len(words)) & ~0xF
    if STACK_TOP - sp > STACK_LIMIT // 2:
        raise ELFError("argument list too long")
    stack = mm.find_vma(STACK_TOP - 1)
    stack.start = min(stack.start, sp & ~(PAGE_SIZE - 1))
    yield from mmu.copy_to_user(k, mm, sp, struct.pack(f"<{len(words)}I", *words))
    yield from mmu.copy_to_user(k, mm, area, bytes(strings))
    return sp
