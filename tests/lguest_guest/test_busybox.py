"""Debian's static i386 busybox in the Guest: `busybox echo`, `sha256sum`,
`sort` and `wc` print what the same binary prints natively, with the same
exit status, in both system call modes.

The binary is fetched by tests/busybox.py (dpkg --add-architecture i386,
apt-get download busybox-static:i386, dpkg-deb -x into tests/.cache); where
that cannot be done the tests skip, saying why.  Without native i386
support the outputs are checked against what Python computes instead.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from tests.busybox import BusyboxUnavailable, ensure_busybox
from tests.lguest_guest.test_programs import (native_i386, native_status, run_cli,
                                              run_native, stats_of)

MODES = {"direct": [], "reflected": ["--reflect-syscalls"]}


@pytest.fixture(scope="module")
def busybox():
    try:
        return ensure_busybox()
    except BusyboxUnavailable as e:
        pytest.skip(f"busybox-static:i386 is not available here: {e}")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(6)
    words = ["lguest", "host", "guest", "switcher", "Zebra", "apple", "10", "9", "", "a b"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randrange(1, 6)))
             for _ in range(60)]
    path = tmp_path_factory.mktemp("busybox") / "words.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    return path


def expected_output(app: str, args: list, path) -> bytes:
    """What the applet must print, computed here (for machines that cannot
    run i386 code natively; otherwise the native run decides)."""
    data = path.read_bytes() if path is not None else b""
    if app == "echo":
        return " ".join(args).encode() + b"\n"
    if app == "sha256sum":
        return f"{hashlib.sha256(data).hexdigest()}  {path}\n".encode()
    if app == "sort":
        return b"".join(sorted(data.splitlines(True)))
    if app == "cat":
        return data
    raise AssertionError(app)


CASES = {
    "echo": lambda f: ["hello,", "lguest", "world"],
    "sha256sum": lambda f: [str(f)],
    "sort": lambda f: [str(f)],
    "wc": lambda f: [str(f)],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("app", CASES)
def test_busybox_applet_like_native(busybox, text_file, app, mode):
    args = CASES[app](text_file)
    run = run_cli(["--stats", *MODES[mode], busybox, app, *args])
    assert "Traceback" not in run.stderr
    total, direct, reflected = stats_of(run.stderr)
    assert (direct if mode == "direct" else reflected) == total > 0
    if native_i386():
        native = run_native(busybox, [str(busybox), app, *args])
        assert run.stdout == native.stdout
        assert run.status == native_status(native.returncode) == 0
    else:
        assert run.status == 0
    if app == "wc":
        data = text_file.read_bytes()
        counts = run.stdout.split()
        assert [int(c) for c in counts[:3]] == [data.count(b"\n"), len(data.split()), len(data)]
        assert counts[3] == str(text_file).encode()
    else:
        assert run.stdout == expected_output(app, args, text_file if app != "echo" else None)


def test_busybox_cat_uses_sendfile(busybox, text_file):
    run = run_cli([busybox, "cat", text_file])
    assert run.stdout == text_file.read_bytes()
    assert run.status == 0


def test_busybox_reads_stdin(busybox):
    data = b"from the console\n"
    run = run_cli([busybox, "sha256sum"], stdin=data)
    assert run.stdout == hashlib.sha256(data).hexdigest().encode() + b"  -\n"
    assert run.status == 0


def test_busybox_exit_status_and_missing_file(busybox, tmp_path):
    assert run_cli([busybox, "false"]).status == 1
    run = run_cli([busybox, "wc", str(tmp_path / "missing")])
    assert run.status == 1
    assert "No such file or directory" in run.stderr
    if native_i386():
        native = run_native(busybox, [str(busybox), "wc", str(tmp_path / "missing")])
        assert native_status(native.returncode) == run.status
