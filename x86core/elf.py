"""ELF32 i386 executables: parsing and validation (System V ABI, i386 supplement).

Only what a static executable needs: the file header, PT_LOAD and PT_TLS
program headers.  Every inconsistency is an ELFError naming what is wrong,
so a malformed file never surfaces as a Python exception from deep inside.
"""
from __future__ import annotations

import struct

import attrs

PT_LOAD, PT_INTERP, PT_PHDR, PT_TLS = 1, 3, 6, 7
PF_X, PF_W, PF_R = 1, 2, 4
ET_EXEC, ET_DYN = 2, 3
EM_386 = 3


class ELFError(Exception):
    pass


@attrs.frozen
class Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@attrs.frozen
class ELFImage:
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    segments: tuple[Segment, ...]
    data: bytes

    @property
    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD]

    @property
    def tls(self) -> Segment | None:
        return next((s for s in self.segments if s.type == PT_TLS), None)

    @property
    def phdr_vaddr(self) -> int:
        """Where the program headers are in memory (AT_PHDR)."""
        for s in self.segments:
            if s.type == PT_PHDR:
                return s.vaddr
        for s in self.loads:
            if s.offset <= self.phoff < s.offset + s.filesz:
                return s.vaddr + self.phoff - s.offset
        return 0

    def segment_bytes(self, seg: Segment) -> bytes:
        return self.data[seg.offset:seg.offset + seg.filesz]

    @property
    def end(self) -> int:
        """First address above every loaded segment (the initial program break)."""
        return max(s.vaddr + s.memsz for s in self.loads)


def parse_elf(data: bytes) -> ELFImage:
    if len(data) < 52:
        raise ELFError(f"file too short for an ELF header ({len(data)} bytes)")
    if data[:4] != b"\x7fELF":
        raise ELFError("not an ELF file (bad magic)")
    if data[4] != 1:
        raise ELFError("not a 32-bit ELF file (EI_CLASS is not ELFCLASS32)")
    if data[5] != 1:
        raise ELFError("not a little-endian ELF file")
    (e_type, e_machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum,
     _shentsize, _shnum, _shstrndx) = struct.unpack_from("<HHIIIIIHHHHHH", data, 16)
    if e_machine != EM_386:
        raise ELFError(f"not an i386 executable (e_machine = {e_machine})")
    if e_type != ET_EXEC:
        kind = "a position-independent or shared object" if e_type == ET_DYN else f"type {e_type}"
        raise ELFError(f"not a static executable: ELF {kind}")
    if phnum == 0:
        raise ELFError("no program headers")
    if phentsize < 32:
        raise ELFError(f"program header entries too small ({phentsize} bytes)")
    if phoff + phnum * phentsize > len(data):
        raise ELFError("program headers run past the end of the file")
    segments = []
    for i in range(phnum):
        p_type, offset, vaddr, _paddr, filesz, memsz, flags, align = struct.unpack_from(
            "<IIIIIIII", data, phoff + i * phentsize)
        seg = Segment(p_type, offset, vaddr, filesz, memsz, flags, align)
        if p_type == PT_INTERP:
            raise ELFError("dynamically linked (has PT_INTERP): only static executables run")
        if p_type in (PT_LOAD, PT_TLS):
            if filesz > memsz:
                raise ELFError(f"segment {i}: file size {filesz:#x} exceeds memory size {memsz:#x}")
            if offset + filesz > len(data):
                raise ELFError(f"segment {i}: contents run past the end of the file")
            if vaddr + memsz > 1 << 32:
                raise ELFError(f"segment {i}: extends beyond 4 GiB")
        segments.append(seg)
    image = ELFImage(entry, phoff, phentsize, phnum, tuple(segments), bytes(data))
    if not image.loads:
        raise ELFError("no loadable segments")
    if not any(s.vaddr <= entry < s.vaddr + s.memsz and s.flags & PF_X for s in image.loads):
        raise ELFError(f"entry point {entry:#x} is not in an executable segment")
    return image
