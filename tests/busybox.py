"""Fetch Debian's static i386 busybox (package busybox-static:i386) into
tests/.cache/busybox, for the tests that run it in the Guest.

    python tests/busybox.py          fetch it (if not cached) and print its path

The test fixture calls `ensure_busybox()`; it does what a person would:

    dpkg --add-architecture i386     (when i386 is not yet a foreign architecture)
    apt-get update                   (when the download fails without it)
    apt-get download busybox-static:i386
    dpkg-deb -x busybox-static_*.deb tests/.cache/busybox/root

and returns the path of bin/busybox, or raises BusyboxUnavailable with the
reason (no apt or dpkg, not root, no network, ...), which the tests turn
into a skip.  The cache directory holds a .gitignore of its own, so nothing
fetched is ever committed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
DEST = CACHE / "busybox"
BINARY = DEST / "root" / "bin" / "busybox"
PACKAGE = "busybox-static:i386"
TIMEOUT = 600


class BusyboxUnavailable(Exception):
    """Why busybox could not be had here."""


def _run(args: list, cwd: Path | None = None,
         timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise BusyboxUnavailable(f"{args[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise BusyboxUnavailable(f"{' '.join(args)} timed out after {timeout} s") from e


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _ensure_i386_architecture() -> bool:
    """Make i386 a foreign architecture of dpkg; True when this call added it."""
    native = _run(["dpkg", "--print-architecture"]).stdout.strip()
    if native == "i386":
        return False
    foreign = _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    if "i386" in foreign:
        return False
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise BusyboxUnavailable("i386 is not a dpkg architecture here and adding it needs root")
    proc = _run(["dpkg", "--add-architecture", "i386"])
    if proc.returncode != 0:
        raise BusyboxUnavailable(f"dpkg --add-architecture i386 failed: {_last_line(proc)}")
    return True


def _download(workdir: Path, update_first: bool) -> Path:
    if update_first:
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise BusyboxUnavailable("apt-get update needs root")
        _run(["apt-get", "update", "-q"])          # partial failures still help: try the download
    proc = _run(["apt-get", "download", "-q", PACKAGE], cwd=workdir)
    debs = sorted(workdir.glob("busybox-static_*_i386.deb"))
    if proc.returncode != 0 or not debs:
        raise BusyboxUnavailable(f"apt-get download {PACKAGE} failed: {_last_line(proc)}")
    return debs[-1]


def ensure_busybox() -> Path:
    """The cached busybox binary, fetching it first when needed."""
    if BINARY.is_file():
        return BINARY
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BusyboxUnavailable(f"{tool} is not available (not a Debian-like system)")
    added = _ensure_i386_architecture()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("# downloaded by the tests: never committed\n*\n")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        # apt's sandbox user must be able to write where the file lands.
        os.chmod(work, 0o777)
        try:
            deb = _download(work, update_first=added)
        except BusyboxUnavailable:
            if added:
                raise
            deb = _download(work, update_first=True)
        root = work / "root"
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if proc.returncode != 0 or not (root / "bin" / "busybox").is_file():
            raise BusyboxUnavailable(f"dpkg-deb -x {deb.name} failed: {_last_line(proc)}")
        if DEST.exists():
            shutil.rmtree(DEST)
        DEST.mkdir(parents=True)
        shutil.move(str(root), str(DEST / "root"))
        (DEST / "package").write_text(deb.name + "\n")
    return BINARY


def main() -> int:
    try:
        path = ensure_busybox()
    except BusyboxUnavailable as e:
        print(f"busybox unavailable: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
