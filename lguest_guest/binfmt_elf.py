"""Loading a static ELF32 i386 executable into a fresh address space, after
Linux's fs/binfmt_elf.c (load_elf_binary):

* each PT_LOAD segment becomes a private file mapping of its pages (elf_map),
  faulted in from the file when first touched, with the bytes after the
  segment's file part reading as zero (padzero), and an anonymous area for
  the rest of its bss (set_brk); a file whose segments share pages or whose
  offsets do not match their addresses modulo the page size is copied in
  at once instead, each page with the union of its segments' rights;
* the break starts at the page after the last segment;
* the stack area just below TASK_SIZE holds what the i386 System V ABI and
  create_elf_tables describe: argc, argv, envp, then the auxiliary vector
  (AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_ENTRY, AT_UID.., AT_RANDOM,
  AT_EXECFN, AT_PLATFORM, AT_NULL), and above them the strings.

A dynamically linked, position-independent or malformed file is an
ELFError naming what is wrong (x86core.elf checks the headers).
"""
import struct

from lguest_host.abi import PAGE_SIZE
from x86core.elf import ELFError, parse_elf

from . import mm as mmu
from .mm import PROT_EXEC, PROT_READ, PROT_WRITE, STACK_LIMIT, STACK_TOP, page_align

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ = 0, 3, 4, 5, 6
AT_BASE, AT_FLAGS, AT_ENTRY = 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_EXECFN = 23, 25, 31
PF_X, PF_W, PF_R = 1, 2, 4
STACK_AREA = 32 * PAGE_SIZE                 # the stack area at exec; it grows on faults


def _prot(flags: int) -> int:
    return (PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0) | \
        (PROT_EXEC if flags & PF_X else 0)


def load_elf_binary(k, data: bytes, argv: list, envp: list, random16: bytes,
                    execfn: str | None = None):
    """Build the process image; returns (mm, entry, initial esp).  Raises
    ELFError for a file we cannot run."""
    image = parse_elf(data)
    for seg in image.loads:
        if seg.vaddr < PAGE_SIZE or seg.vaddr + seg.memsz > mmu.MMAP_END:
            raise ELFError(f"segment at {seg.vaddr:#x} is outside user space")
    mm = yield from mmu.mm_alloc(k)
    if _mappable(image):
        _map_segments(mm, image)
    else:
        yield from _copy_segments(k, mm, image)
    mm.start_brk = mm.brk = page_align(image.end)
    mm.add_vma(STACK_TOP - STACK_AREA, STACK_TOP, PROT_READ | PROT_WRITE, "[stack]")
    name = execfn if execfn is not None else (argv[0] if argv else "")
    sp = yield from _create_elf_tables(k, mm, image, argv, envp, random16, name)
    return mm, image.entry, sp


def _pages(seg) -> range:
    return range(seg.vaddr & ~(PAGE_SIZE - 1), seg.vaddr + seg.memsz, PAGE_SIZE)


def _mappable(image) -> bool:
    """Can every segment be mapped from the file as Linux's elf_map does?"""
    seen = set()
    for seg in image.loads:
        if seg.filesz and seg.offset % PAGE_SIZE != seg.vaddr % PAGE_SIZE:
            return False
        pages = set(_pages(seg))
        if pages & seen:
            return False
        seen |= pages
    return True


def _map_segments(mm, image):
    data = memoryview(image.data)
    for seg in image.loads:
        prot = _prot(seg.flags)
        start = seg.vaddr & ~(PAGE_SIZE - 1)
        file_end = page_align(seg.vaddr + seg.filesz) if seg.filesz else start
        if seg.filesz:
            # The file up to the segment's end: what lies beyond reads as zero.
            mm.add_vma(start, file_end, prot, "", data[:seg.offset + seg.filesz],
                       (seg.offset - (seg.vaddr - start)) // PAGE_SIZE)
        mem_end = page_align(seg.vaddr + seg.memsz)
        if mem_end > file_end:
            mm.add_vma(file_end, mem_end, prot)


def _copy_segments(k, mm, image):
    # Areas first: each page gets the union of the rights of the segments on
    # it (text and data may share the page between them).
    prot_of = {}
    for seg in image.loads:
        for page in _pages(seg):
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
        for page in _pages(seg):
            pa = yield from mmu.populate(k, mm, page)
            lo = max(page, seg.vaddr) - seg.vaddr
            hi = min(page + PAGE_SIZE, seg.vaddr + seg.filesz) - seg.vaddr
            if hi > lo:
                at = mmu.__va(pa) + (max(page, seg.vaddr) - page)
                yield from k.mem.write(at, contents[lo:hi])


def _encode(s) -> bytes:
    return (s.encode(errors="surrogateescape") if isinstance(s, str) else bytes(s)) + b"\0"


def _create_elf_tables(k, mm, image, argv, envp, random16, execfn):
    # Top of the stack: the file name (AT_EXECFN), then the argument and
    # environment strings, then the platform string and the random bytes.
    strings = bytearray()
    offsets = []
    for s in list(argv) + list(envp):
        offsets.append(len(strings))
        strings += _encode(s)
    execfn_at = len(strings)
    strings += _encode(execfn)
    platform_at = len(strings)
    strings += b"i686\0"
    random_at = len(strings)
    strings += bytes(random16[:16]).ljust(16, b"\0")
    area = (STACK_TOP - len(strings)) & ~0xF
    addr = [area + o for o in offsets]
    argv_ptrs, env_ptrs = addr[:len(argv)], addr[len(argv):]
    auxv = [AT_PHDR, image.phdr_vaddr, AT_PHENT, image.phentsize, AT_PHNUM, image.phnum,
            AT_PAGESZ, PAGE_SIZE, AT_BASE, 0, AT_FLAGS, 0, AT_ENTRY, image.entry,
            AT_UID, 0, AT_EUID, 0, AT_GID, 0, AT_EGID, 0, AT_SECURE, 0, AT_CLKTCK, 100,
            AT_HWCAP, k.hwcap, AT_PLATFORM, area + platform_at, AT_RANDOM, area + random_at,
            AT_EXECFN, area + execfn_at, AT_NULL, 0]
    words = [len(argv)] + argv_ptrs + [0] + env_ptrs + [0] + auxv
    sp = (area - 4 * len(words)) & ~0xF
    if STACK_TOP - sp > STACK_LIMIT // 4:
        raise ELFError("argument list too long")
    stack = mm.find_vma(STACK_TOP - 1)
    stack.start = min(stack.start, sp & ~(PAGE_SIZE - 1))
    yield from mmu.copy_to_user(k, mm, sp, struct.pack(f"<{len(words)}I", *words))
    yield from mmu.copy_to_user(k, mm, area, bytes(strings))
    return sp
