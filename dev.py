#!/usr/bin/env python3
"""The project's two entry points, runnable with nothing but Python 3.11+.

    python3 dev.py demo     the main job: the Launcher running a bundled demo Guest program
    python3 dev.py test     run the test suite (CI runs exactly this)

Each creates .venv on first use and installs the project with what it needs;
later runs reuse it (reinstalling when pyproject.toml changes).
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def ensure_venv(extras: str) -> None:
    stamp = VENV / f".installed-{extras or 'base'}"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    if not PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    spec = f".[{extras}]" if extras else "."
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-e", spec], cwd=ROOT, check=True)
    stamp.write_text(want)


def ensure_handler_library() -> None:
    """The threaded tier's handler library (x86core/handler_library.py),
    built explicitly as compileall would build .pyc files: this machine may
    set PYTHONDONTWRITEBYTECODE, under which the import will not write it."""
    subprocess.run([str(PY), "-m", "x86core.handler_library"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_venv("")
        ensure_handler_library()
        # `lguest run` with no program runs the bundled demo and says so.
        return subprocess.run([str(PY), "-m", "lguest_host", "run", "--stats", *rest],
                              cwd=ROOT).returncode
    if command == "test":
        ensure_venv("test")
        ensure_handler_library()
        args = list(rest)
        if "--slow" in args:
            args.remove("--slow")
            args += ["-m", "slow or not slow"]
        env = dict(os.environ)
        env.setdefault("HYPOTHESIS_PROFILE", "ci" if env.get("CI") else "dev")
        code = subprocess.run([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env).returncode
        return 0 if code == 5 else code        # 5: no tests collected
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
