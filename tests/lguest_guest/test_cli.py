"""`lguest run` given bad input or a program that misbehaves: one clear line
on stderr, a non-zero status, never a Python traceback.  These start the
real command as a process (python -m lguest_host run)."""
from __future__ import annotations

import struct

import pytest

from tests.lguest_guest.test_programs import run_cli_process
from tests.lguest_guest.test_syscalls import SYSPROBE, flat_elf
from tests.programs_table import PROGRAMS_DIR

EXIT0 = "_start: mov eax, 1; mov ebx, 0; int 0x80"


def one_line_error(proc, *needles: str) -> str:
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_file_that_is_not_elf(tmp_path):
    script = b"#!/bin/sh\n" + b"echo hello, this is no ELF\n" * 4
    proc = run_cli_process([_write(tmp_path, "text", script)])
    assert proc.returncode == 126
    one_line_error(proc, "not an ELF file")


def test_a_file_too_short(tmp_path):
    proc = run_cli_process([_write(tmp_path, "short", b"\x7fELF\x01\x01")])
    assert proc.returncode == 126
    one_line_error(proc, "too short")


def test_a_truncated_program(tmp_path):
    data = (PROGRAMS_DIR / "bin" / "sha256").read_bytes()
    proc = run_cli_process([_write(tmp_path, "cut", data[:len(data) // 3])])
    assert proc.returncode == 126
    one_line_error(proc, "past the end of the file")


def test_program_headers_past_the_end(tmp_path):
    data = bytearray(flat_elf(EXIT0))
    struct.pack_into("<I", data, 28, 0x10000)               # e_phoff
    proc = run_cli_process([_write(tmp_path, "badph", bytes(data))])
    assert proc.returncode == 126
    one_line_error(proc, "program headers")


def test_a_directory(tmp_path):
    proc = run_cli_process([tmp_path])
    assert proc.returncode != 0
    one_line_error(proc, "Is a directory")


def test_a_missing_file(tmp_path):
    proc = run_cli_process([tmp_path / "no-such-program"])
    assert proc.returncode != 0
    one_line_error(proc, "No such file")


def test_a_64_bit_program(tmp_path):
    data = bytearray(flat_elf(EXIT0))
    data[4] = 2                                             # ELFCLASS64
    proc = run_cli_process([_write(tmp_path, "elf64", bytes(data))])
    assert proc.returncode == 126
    one_line_error(proc, "not a 32-bit ELF")


def test_a_dynamically_linked_program(tmp_path):
    interp = (3, 0, 0x08048000, 0x08048000, 0x13, 0x13, 4, 1)       # PT_INTERP
    proc = run_cli_process([_write(tmp_path, "dyn", flat_elf(EXIT0, extra_phdrs=(interp,)))])
    assert proc.returncode == 126
    one_line_error(proc, "dynamically linked")


def test_a_position_independent_program(tmp_path):
    proc = run_cli_process([_write(tmp_path, "pie", flat_elf(EXIT0, e_type=3))])
    assert proc.returncode == 126
    one_line_error(proc, "not a static executable")


def test_a_segment_in_kernel_space_is_refused_by_the_guest_loader(tmp_path):
    """Headers the command accepts, but binfmt_elf in the Guest refuses:
    the Guest kernel says why and exits 126, as a shell would."""
    kernel_seg = (1, 0, 0xC0000000, 0xC0000000, 0, 0x1000, 6, 0x1000)
    proc = run_cli_process([_write(tmp_path, "high", flat_elf(EXIT0, extra_phdrs=(kernel_seg,)))])
    assert proc.returncode == 126
    one_line_error(proc, "cannot execute", "outside user space")


@pytest.mark.parametrize("how, status, what", [
    ("segv", 139, "segmentation fault"), ("div0", 136, "divide error"),
    ("ud2", 132, "invalid opcode")])
def test_a_program_that_faults(how, status, what):
    proc = run_cli_process([SYSPROBE, how])
    assert proc.returncode == status
    assert proc.stdout == b""
    one_line_error(proc, what, f"killed by signal {status - 128}")


def test_a_program_that_loops_for_ever_stops_at_the_budget():
    proc = run_cli_process(["--budget", "300000", SYSPROBE, "loop"], timeout=60)
    assert proc.returncode != 0
    one_line_error(proc, "budget")


def test_a_guest_that_sleeps_for_ever_is_reported(tmp_path):
    """pause(): nothing can wake the Guest, and the Host says so."""
    source = "_start: mov eax, 29; int 0x80; mov eax, 1; int 0x80"
    proc = run_cli_process([_write(tmp_path, "pause", flat_elf(source))], timeout=60)
    assert proc.returncode != 0
    one_line_error(proc, "halted")
