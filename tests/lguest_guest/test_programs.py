"""The test programs (tests/programs) under `lguest run`: the same stdout and
exit status as the recorded native results and, where this machine runs
i386 code, as a native run now; in both modes (system calls by the direct
trap gate, and reflected by the Host with --reflect-syscalls), with --stats
telling the two apart.

`run_cli` runs the command's own main() in this process (the same code path
as the installed `lguest` script, minus interpreter start-up); a few tests
start the real command as a subprocess too.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from lguest_guest.kernel import Kernel
from lguest_host.__main__ import main as lguest_main
from lguest_host.launcher import Launcher
from tests.programs_table import PROGRAMS, PROGRAMS_DIR

REPO = Path(__file__).resolve().parents[2]
MODES = {"direct": [], "reflected": ["--reflect-syscalls"]}
STATS_LINE = re.compile(r"system calls: (\d+) \((\d+) direct, (\d+) reflected\)")


@attrs.frozen
class CliRun:
    status: int
    stdout: bytes
    stderr: str


def run_cli(args: list, stdin: bytes = b"", cwd: Path | None = None) -> CliRun:
    """`lguest run ARGS...` through the command's main(), standard streams
    replaced by memory (the Launcher writes the Guest's output to
    sys.stdout.buffer, messages go to sys.stderr)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    out = io.TextIOWrapper(io.BytesIO(), write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), write_through=True)
    old_cwd = os.getcwd()
    try:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        sys.stdout, sys.stderr = out, err
        if cwd is not None:
            os.chdir(cwd)
        status = lguest_main(["run", *[str(a) for a in args]])
    finally:
        os.chdir(old_cwd)
        sys.stdin, sys.stdout, sys.stderr = streams
    return CliRun(status, out.buffer.getvalue(), err.buffer.getvalue().decode(errors="replace"))


def run_cli_process(args: list, stdin: bytes = b"", cwd: Path | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command: `python -m lguest_host run ARGS...`."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "lguest_host", "run", *map(str, args)],
                          input=stdin, capture_output=True, cwd=cwd, env=env, timeout=timeout)


def stats_of(stderr: str) -> tuple[int, int, int]:
    m = STATS_LINE.search(stderr)
    assert m, f"no system call line in --stats output:\n{stderr}"
    return int(m[1]), int(m[2]), int(m[3])


def native_status(returncode: int) -> int:
    """A native run's status as a shell (and `lguest run`) reports it."""
    return 128 - returncode if returncode < 0 else returncode


_native_ok: bool | None = None


def native_i386() -> bool:
    """Can this machine run the i386 test programs natively?"""
    global _native_ok
    if _native_ok is None:
        try:
            r = subprocess.run([str(PROGRAMS_DIR / "bin" / "args")], capture_output=True,
                               timeout=20, env={})
            _native_ok = r.returncode == 1 and r.stdout.startswith(b"argc 1")
        except OSError:
            _native_ok = False
    return _native_ok


def run_native(path: Path, argv: list, env: dict | None = None, stdin: bytes = b"",
               cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), executable=str(path), env=env or {}, input=stdin,
                          capture_output=True, timeout=60, cwd=cwd)


def _by_name(name):
    return next(p for p in PROGRAMS if p.name == name)


# -- every program, both modes, through the command -----------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_program_under_lguest_run(program, mode):
    run = run_cli(["--stats", *MODES[mode], program.name, *program.argv[1:]],
                  cwd=PROGRAMS_DIR / "bin")
    expected = program.expected_stdout
    if program.env:
        # The command gives the Guest its own small environment, not the
        # table's: only the lines that do not show the environment compare.
        keep = [ln for ln in expected.splitlines(True) if not ln.startswith((b"envp[", b"envc",
                                                                              b"total string"))]
        got = [ln for ln in run.stdout.splitlines(True) if not ln.startswith((b"envp[", b"envc",
                                                                              b"total string"))]
        assert got == keep
    else:
        assert run.stdout == expected
    assert run.status == program.expected_status, run.stderr
    if not program.env and native_i386():
        # Differential: this machine running the same binary, now.
        native = run_native(program.path, list(program.argv))
        assert (run.stdout, run.status) == (native.stdout, native_status(native.returncode))
    total, direct, reflected = stats_of(run.stderr)
    assert total > 0
    if mode == "direct":
        assert (direct, reflected) == (total, 0)
    else:
        assert (direct, reflected) == (0, total)


def test_args_sees_argv_and_envp_exactly():
    """`args` prints argv and envp: the Guest's initial stack holds exactly
    what the Launcher was given (the table's environment, nothing added)."""
    program = _by_name("args")
    for direct in (True, False):
        launcher = Launcher(32, direct_traps=direct, stdin=io.BytesIO(), stdout=io.BytesIO(),
                            stderr=io.BytesIO())
        launcher.boot(Kernel(), list(program.argv), list(program.env),
                      [("args", program.path.read_bytes())])
        outcome = launcher.run()
        assert launcher.stdout.getvalue() == program.expected_stdout
        assert outcome.status == program.expected_status == 4
    if native_i386():
        native = run_native(program.path, list(program.argv),
                            dict(kv.split("=", 1) for kv in program.env))
        assert native.stdout == program.expected_stdout


def test_args_under_the_command_gets_the_default_environment():
    run = run_cli(["args", "x y", "z"], cwd=PROGRAMS_DIR / "bin")
    lines = run.stdout.decode().splitlines()
    assert lines[:4] == ["argc 3", "argv[0] args", "argv[1] x y", "argv[2] z"]
    assert "envp[0] PATH=/bin:/usr/bin" in lines
    assert run.status == 3


def test_tls_program_loads_tls_entries_through_the_host():
    """`tls` uses set_thread_area: the Guest kernel hands the descriptors to
    the Host with LHCALL_LOAD_TLS, and %gs-relative accesses then work."""
    program = _by_name("tls")
    run = run_cli(["--stats", "tls"], cwd=PROGRAMS_DIR / "bin")
    assert run.stdout == program.expected_stdout
    assert b"FAIL" not in run.stdout
    assert run.status == 0
    m = re.search(r"LOAD_TLS:(\d+)", run.stderr)
    assert m and int(m[1]) >= 3, run.stderr


# -- the real command, as a process -------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_the_command_as_a_process(mode):
    program = _by_name("sha256")
    proc = run_cli_process(["--stats", *MODES[mode], program.path])
    assert proc.stdout == program.expected_stdout
    assert proc.returncode == program.expected_status
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    total, direct, reflected = stats_of(stderr)
    assert total > 0 and (direct if mode == "direct" else reflected) == total


def test_the_installed_lguest_script():
    script = Path(sys.executable).parent / "lguest"
    if not script.exists():
        pytest.skip("no lguest script beside this interpreter (package not installed)")
    program = _by_name("sieve")
    proc = subprocess.run([str(script), "run", str(program.path)], capture_output=True,
                          timeout=120)
    assert proc.stdout == program.expected_stdout
    assert proc.returncode == program.expected_status == 13
