"""`python -m x86core`: the programs of tests/programs print exactly what they
print natively, and bad input ends in a one-line error, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.programs_table import PROGRAMS, PROGRAMS_DIR

ROOT = PROGRAMS_DIR.parent.parent


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "x86core", *args], cwd=ROOT,
                          capture_output=True, timeout=300, env=env)


def native(program):
    try:
        return subprocess.run(list(program.argv), executable=str(program.path),
                              env=dict(e.split("=", 1) for e in program.env),
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except OSError as e:        # no i386 support in this kernel
        pytest.skip(f"cannot run i386 binaries natively here: {e}")


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_program_matches_native_run(program):
    env_args = [a for e in program.env for a in ("--env", e)]
    ours = subprocess.run([sys.executable, "-m", "x86core", "run", *env_args,
                           "--argv0", program.argv[0], str(program.path), *program.argv[1:]],
                          cwd=ROOT, capture_output=True, timeout=300)
    assert ours.stderr == b""
    reference = native(program)
    assert (ours.stdout, ours.returncode) == (reference.stdout, reference.returncode)
    assert (ours.stdout, ours.returncode) == (program.expected_stdout, program.expected_status)


def test_demo_explains_itself():
    out = run_cli("demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "static i386" in text and "xor    ebp,ebp" in text
    assert "longest chain: n = 2919, 216 steps" in text


def test_disasm_hex_sweeps_past_bad_bytes():
    out = run_cli("disasm", "--hex", "cd 80 ff ff 90")
    lines = out.stdout.decode().splitlines()
    assert lines[0].split()[0] == "0:" and lines[0].endswith("int    0x80")
    assert "(bad)" in lines[1]
    assert lines[-1].endswith("nop")


def test_disasm_file_with_base(tmp_path):
    f = tmp_path / "code.bin"
    f.write_bytes(bytes.fromhex("55 89 e5 c3"))
    out = run_cli("disasm", str(f), "--base", "0x1000")
    text = out.stdout.decode()
    assert text.splitlines()[0].lstrip().startswith("1000:") and "push   ebp" in text and "ret" in text


def test_asm_prints_bytes():
    out = run_cli("asm", "mov eax, 1; int 0x80")
    assert out.stdout.decode().split() == ["b8", "01", "00", "00", "00", "cd", "80"]


def test_run_flat_binary_with_base(tmp_path):
    f = tmp_path / "exit7.bin"
    f.write_bytes(bytes.fromhex("b8 01 00 00 00 bb 07 00 00 00 cd 80"))    # exit(7)
    out = run_cli("run", "--base", "0x100000", str(f))
    assert out.returncode == 7 and out.stderr == b""


def test_flat_binary_at_a_bad_base_is_a_clean_error(tmp_path):
    f = tmp_path / "exit7.bin"
    f.write_bytes(bytes.fromhex("b8 01 00 00 00 bb 07 00 00 00 cd 80"))
    out = run_cli("run", "--base", "0x1000", str(f))
    assert out.returncode == 2 and b"Traceback" not in out.stderr
    assert b"cannot load at --base 0x1000" in out.stderr and b"ELF" not in out.stderr


def test_trace_prints_each_instruction():
    prog = next(p for p in PROGRAMS if p.name == "args")
    out = run_cli("run", "--trace", "--stats", str(prog.path))
    lines = out.stderr.decode().splitlines()
    traced = [l for l in lines if l[:8].strip() and l[8:10] == ": "]
    assert len(traced) > 1000
    assert "xor    ebp,ebp" in traced[0]
    executed = int(lines[-1].split()[1])
    assert executed == len(traced)


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\x7fELF" + b"\x02" + b"\x00" * 60, "not a 32-bit"),
    (b"MZ" + b"\x00" * 100, "bad magic"),
])
def test_malformed_elf_is_a_clean_error(tmp_path, data, message):
    f = tmp_path / "bad"
    f.write_bytes(data)
    out = run_cli("run", str(f))
    assert out.returncode == 2
    assert b"Traceback" not in out.stderr and message.encode() in out.stderr


def test_truncated_real_elf_is_a_clean_error(tmp_path):
    prog = PROGRAMS[0]
    f = tmp_path / "truncated"
    f.write_bytes(prog.path.read_bytes()[:200])
    out = run_cli("run", str(f))
    assert out.returncode == 2 and b"Traceback" not in out.stderr
    assert b"malformed ELF" in out.stderr


def test_faulting_program_reports_signal(tmp_path):
    f = tmp_path / "segv.bin"
    f.write_bytes(bytes.fromhex("a1 00 00 00 f0"))       # mov eax, [0xf0000000]: beyond RAM
    out = run_cli("run", "--max-instructions", "100000", "--base", "0x100000", str(f))
    assert out.returncode == 128 + 11
    assert b"SIGSEGV" in out.stderr and b"Traceback" not in out.stderr
    f.write_bytes(bytes.fromhex("0f 0b"))                  # ud2
    out = run_cli("run", "--base", "0x100000", str(f))
    assert out.returncode == 128 + 4
    assert b"SIGILL" in out.stderr and b"Traceback" not in out.stderr


def test_missing_file():
    out = run_cli("run", "/nonexistent/prog")
    assert out.returncode == 2 and b"No such file" in out.stderr
