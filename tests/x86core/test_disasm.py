"""The disassembler against GNU objdump (`objdump -D -M intel`).

(a) Random instructions: an opcode from our maps after random prefixes, then
    random bytes; whatever our decoder accepts is concatenated into one flat
    binary per example, which objdump disassembles once (`-b binary -m i386`,
    or `-m i8086` for 16-bit code) and which we sweep with `format_listing`;
    the two listings must agree line for line.
(b) The .text of real code: a few C files compiled with `gcc -m32` (and
    `-m16`, which is 32-bit code in a 16-bit segment and so full of 66/67
    prefixes), and the prebuilt tests/programs/bin/* if present.

Skipped if objdump (or gcc, for the compiled part) is missing.  Encodings our
decoder rejects are not compared (objdump knows many later instructions).
The few deliberate differences are described by `allowed_difference`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from x86core import opcodes
from x86core.decoder import decode
from x86core.disasm import disassemble, format_instruction, format_listing
from x86core.instruction import Instruction

OBJDUMP = shutil.which("objdump")
GCC = shutil.which("gcc")
REPO = Path(__file__).resolve().parents[2]
PROGRAMS = REPO / "tests" / "programs"

needs_objdump = pytest.mark.skipif(OBJDUMP is None, reason="GNU objdump not installed")

PREFIX_BYTES = (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3)


def allowed_difference(raw: bytes) -> str | None:
    """Why objdump may print `raw` differently on purpose, or None.

    The only deliberate differences: encodings that later processors gave a
    meaning of their own through a mandatory prefix, where the i386 ignores
    the prefix (and so does our decoder) but objdump names the new
    instruction, or calls it (bad) with another length.
    """
    body = raw.lstrip(bytes(PREFIX_BYTES))
    prefixes = set(raw[:len(raw) - len(body)])
    if body[:2] == b"\x0f\x09" and prefixes & {0x66, 0xF2, 0xF3}:
        return "66/F2/F3 0F 09: objdump says wbnoinvd or (bad); i386 WBINVD"
    if body[:2] in (b"\x0f\xbc", b"\x0f\xbd") and prefixes & {0xF2, 0xF3}:
        return "F3 0F BC/BD: objdump says tzcnt/lzcnt (F2: bad); i386 BSF/BSR"
    return None


OPCODES = tuple(sorted(
    [(op,) for op in opcodes.ONE_BYTE]
    + [(0x0F, op) for op in opcodes.TWO_BYTE]
    + [(op,) for op in range(0xD8, 0xE0)]))


# ---------------------------------------------------------------- objdump

def objdump_lines(code: bytes, bits: int = 32, base: int = 0) -> list[str]:
    """objdump -D's instruction lines for a flat binary (header stripped)."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        out = subprocess.run(
            [OBJDUMP, "-D", "-z", "-b", "binary", "-m", "i386" if bits == 32 else "i8086",
             "-M", "intel", f"--adjust-vma={base:#x}", path],
            capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(">:")) + 1
    return [line for line in lines[start:] if line.strip()]


def compare(code: bytes, bits: int = 32, base: int = 0) -> tuple[int, list[str]]:
    """Compare our listing of `code` with objdump's: (lines compared, mismatches).

    Each mismatch names the line and both texts.  Lines whose bytes are an
    `allowed_difference` are not counted as mismatches.
    """
    theirs = objdump_lines(code, bits, base)
    ours = format_listing(code, base, bits).splitlines()
    raws = {address: raw for address, raw, _ in disassemble(code, base, bits)}
    mismatches = []
    for n, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            address = int(b.split(":")[0], 16)
            if allowed_difference(raws.get(address, b"")):
                continue
            mismatches.append(f"{bits}-bit line {n}\n  objdump: {a!r}\n  ours:    {b!r}")
            if len(mismatches) >= 20:
                break
    if len(theirs) != len(ours) and len(mismatches) < 20:
        mismatches.append(f"{bits}-bit: objdump printed {len(theirs)} lines, we {len(ours)}")
    return min(len(theirs), len(ours)), mismatches


# ---------------------------------------------------------------- (a) random instructions

@st.composite
def instructions(draw, bits):
    """The bytes of one instruction our decoder accepts (or b"" if it rejects them)."""
    prefixes = draw(st.lists(st.sampled_from(PREFIX_BYTES), max_size=3)
                    if draw(st.integers(0, 3)) == 0 else st.just([]))
    opcode = draw(st.sampled_from(OPCODES))
    tail = draw(st.binary(min_size=14, max_size=14))
    code = bytes(prefixes) + bytes(opcode) + tail
    insn = decode(code, 0, bits)
    if not isinstance(insn, Instruction) or allowed_difference(insn.raw):
        return b""
    return insn.raw


@st.composite
def batches(draw):
    """(bits, base address, code): instructions our decoder accepts, maybe
    followed by the start of one more, cut short (objdump then prints the
    first byte alone and tries again from the next)."""
    bits = draw(st.sampled_from((32, 32, 16)))
    base = draw(st.sampled_from((0, 0x1000, 0xFFF0, 0x8048000, 0xFFFFFF00)))
    raws = draw(st.lists(instructions(bits), min_size=20, max_size=120))
    code = b"".join(raws)
    last = draw(instructions(bits))
    if len(last) > 1 and draw(st.booleans()):
        tail = last[:draw(st.integers(1, len(last) - 1))]
        # Only if no byte of it is undecodable: our "(bad)" always takes one
        # byte, objdump's as many as it fetched.
        if all(text != "(bad)" for _, _, text in disassemble(tail, 0, bits)):
            code += tail
    return bits, base, code


@needs_objdump
@given(batches())
def test_random_instructions_match_objdump(batch):
    bits, base, code = batch
    if not code:
        return
    compared, mismatches = compare(code, bits, base)
    assert not mismatches, f"{len(mismatches)} of {compared} lines differ:\n" + "\n".join(mismatches)


@needs_objdump
@pytest.mark.slow
@settings(max_examples=3000)
@given(batches())
def test_random_instructions_match_objdump_many(batch):
    test_random_instructions_match_objdump.hypothesis.inner_test(batch)


# ---------------------------------------------------------------- (b) real code

C_SOURCES = sorted(PROGRAMS.glob("*.c"))


def code_sections(obj: Path) -> list[tuple[str, bytes, int]]:
    """The executable sections of an object or executable: (name, bytes, address)."""
    headers = subprocess.run([OBJDUMP, "-h", "-w", str(obj)], capture_output=True, text=True,
                             check=True).stdout
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for line in headers.splitlines():
            fields = line.split()
            if len(fields) < 7 or not fields[0].isdigit() or "CODE" not in line:
                continue
            name, size, vma = fields[1], int(fields[2], 16), int(fields[3], 16)
            if not size:
                continue
            out = Path(tmp) / "section.bin"
            subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", str(obj),
                            str(out)], check=True, capture_output=True)
            sections.append((name, out.read_bytes(), vma))
    return sections


def _compile(source: Path, flags: list[str], tmp: Path) -> Path | None:
    obj = tmp / (source.stem + "_" + "_".join(f.strip("-") for f in flags) + ".o")
    result = subprocess.run([GCC, *flags, "-c", "-w", "-I", str(PROGRAMS), "-o", str(obj),
                             str(source)], capture_output=True)
    return obj if result.returncode == 0 else None


# No SSE: everything else (x87 included) our decoder knows.
COMPILE_FLAGS = (
    (32, ["-m32", "-march=i686", "-O2"]),
    (32, ["-m32", "-march=i686", "-O0"]),
    (32, ["-m32", "-march=i386", "-Os"]),
    (32, ["-m32", "-march=i686", "-O3", "-fno-pic", "-fno-omit-frame-pointer"]),
    (16, ["-m16", "-march=i686", "-O2"]),
)


@needs_objdump
@pytest.mark.skipif(GCC is None, reason="gcc not installed")
@pytest.mark.skipif(not C_SOURCES, reason="no C sources in tests/programs")
@pytest.mark.parametrize("bits,flags", COMPILE_FLAGS, ids=lambda v: "_".join(v) if isinstance(v, list) else str(v))
def test_compiled_code_matches_objdump(bits, flags, tmp_path):
    total = 0
    failures = []
    built = 0
    for source in C_SOURCES:
        obj = _compile(source, flags, tmp_path)
        if obj is None:
            continue
        built += 1
        for name, code, vma in code_sections(obj):
            compared, mismatches = compare(code, bits, vma)
            total += compared
            failures += [f"{source.name} {name}: {m}" for m in mismatches]
    if not built:
        pytest.skip(f"gcc {' '.join(flags)} cannot compile here")
    assert total > 0
    assert not failures, f"{len(failures)} mismatches in {total} lines:\n" + "\n".join(failures[:30])


PROGRAM_BINARIES = sorted(p for p in (PROGRAMS / "bin").glob("*") if p.is_file()) \
    if (PROGRAMS / "bin").is_dir() else []


@needs_objdump
@pytest.mark.skipif(not PROGRAM_BINARIES, reason="no tests/programs/bin/*")
@pytest.mark.parametrize("binary", PROGRAM_BINARIES, ids=lambda p: p.name)
def test_program_binaries_match_objdump(binary):
    total = 0
    failures = []
    for name, code, vma in code_sections(binary):
        compared, mismatches = compare(code, 32, vma)
        total += compared
        failures += [f"{name}: {m}" for m in mismatches]
    assert total > 0
    assert not failures, f"{len(failures)} mismatches in {total} lines:\n" + "\n".join(failures)


# ---------------------------------------------------------------- fixed cases

# Hand-picked encodings and the text objdump 2.40 prints for them, so the
# quirks stay pinned even where objdump is missing.
KNOWN = [
    (32, "8b4304", "mov    eax,DWORD PTR [ebx+0x4]"),
    (32, "8b45fc", "mov    eax,DWORD PTR [ebp-0x4]"),
    (32, "8d0488", "lea    eax,[eax+ecx*4]"),
    (32, "8b0424", "mov    eax,DWORD PTR [esp]"),
    (32, "8b0420", "mov    eax,DWORD PTR [eax+eiz*1]"),
    (32, "8b042534120000", "mov    eax,DWORD PTR [eiz*1+0x1234]"),
    (32, "8b0534120000", "mov    eax,DWORD PTR ds:0x1234"),
    (32, "64a134120000", "mov    eax,fs:0x1234"),
    (32, "a134120000", "mov    eax,ds:0x1234"),
    (32, "648b00", "mov    eax,DWORD PTR fs:[eax]"),
    (32, "6aff", "push   0xffffffff"),
    (32, "83c0ff", "add    eax,0xffffffff"),
    (32, "6690", "xchg   ax,ax"),
    (32, "8ed8", "mov    ds,eax"),
    (32, "0f0100", "sgdtd  [eax]"),
    (32, "ea001000000800", "jmp    0x8:0x1000"),
    (32, "ff28", "jmp    FWORD PTR [eax]"),
    (32, "db28", "fld    TBYTE PTR [eax]"),
    (32, "d1e0", "shl    eax,1"),
    (32, "c8100001", "enter  0x10,0x1"),
    (32, "e300", "jecxz  0x2"),
    (32, "67e300", "jcxz   0x3"),
    (32, "e2fe", "loop   0x0"),
    (32, "f3a4", "rep movs BYTE PTR es:[edi],BYTE PTR ds:[esi]"),
    (32, "f3a6", "repz cmps BYTE PTR ds:[esi],BYTE PTR es:[edi]"),
    (32, "f2ae", "repnz scas al,BYTE PTR es:[edi]"),
    (32, "f00100", "lock add DWORD PTR [eax],eax"),
    (32, "3e7400", "ds je  0x3"),
    (32, "667400", "data16 je 0x3"),
    (32, "6760", "addr16 pusha"),
    (32, "6660", "pushaw"),
    (32, "66cf", "iretw"),
    (32, "66e80000", "callw  0x4"),
    (32, "d8c1", "fadd   st,st(1)"),
    (32, "dcc1", "fadd   st(1),st"),
    (32, "d9c9", "fxch   st(1)"),
    (32, "dfe0", "fnstsw ax"),
    (32, "d930", "fnstenv [eax]"),
    (32, "0f20c0", "mov    eax,cr0"),
    (32, "0f0138", "invlpg BYTE PTR [eax]"),
    (16, "8b46fc", "mov    ax,WORD PTR [bp-0x4]"),
    (16, "8b063412", "mov    ax,WORD PTR ds:0x1234"),
    (16, "6660", "pushad"),
    (16, "666aff", "pushd  0xffffffff"),
]


@pytest.mark.parametrize("bits,hexcode,text", KNOWN, ids=[k[1] for k in KNOWN])
def test_known_texts(bits, hexcode, text):
    insn = decode(bytes.fromhex(hexcode), 0, bits)
    assert isinstance(insn, Instruction)
    assert format_instruction(insn, 0) == text


def test_sweep_bad_and_truncated():
    # D6 (SALC) is "(bad)" to objdump; 0F 04 is undefined: "(bad)", then on
    # one byte later.  Where the bytes run out inside an instruction: its
    # first byte as .byte (or the prefix's name), then on from the next byte.
    got = [(a, r.hex(), t) for a, r, t in disassemble(bytes.fromhex("d60f0490b80102"), 0x100)]
    assert got == [
        (0x100, "d6", "(bad)"),
        (0x101, "0f", "(bad)"),
        (0x102, "0490", "add    al,0x90"),
        (0x104, "b8", ".byte 0xb8"),
        (0x105, "0102", "add    DWORD PTR [edx],eax"),
    ]
    assert [t for _, _, t in disassemble(b"\x26")] == ["es"]
    assert [t for _, _, t in disassemble(b"\x66\x05\x01")] == ["data16", ".byte 0x5", ".byte 0x1"]


def test_fwait_merges_with_x87():
    got = [(r.hex(), t) for _, r, t in disassemble(bytes.fromhex("9bdbe39bdd389b90"))]
    assert got == [("9bdbe3", "finit"), ("9bdd38", "fstsw  WORD PTR [eax]"),
                   ("9b", "fwait"), ("90", "nop")]


def test_listing_format():
    code = bytes.fromhex("662e0f1f840000000000" "90")
    assert format_listing(code) == (
        "   0:\t66 2e 0f 1f 84 00 00 \tnop    WORD PTR cs:[eax+eax*1+0x0]\n"
        "   7:\t00 00 00 \n"
        "   a:\t90                   \tnop\n")
    if OBJDUMP:
        assert format_listing(code).splitlines() == objdump_lines(code)
