"""The test programs of tests/programs: how each is run and what it must print."""
from __future__ import annotations

from pathlib import Path

import attrs

PROGRAMS_DIR = Path(__file__).resolve().parent / "programs"


@attrs.frozen
class TestProgram:
    name: str
    env: tuple[str, ...]
    argv: tuple[str, ...]

    @property
    def path(self) -> Path:
        return PROGRAMS_DIR / "bin" / self.name

    @property
    def expected_stdout(self) -> bytes:
        return (PROGRAMS_DIR / "expected" / f"{self.name}.out").read_bytes()

    @property
    def expected_status(self) -> int:
        return int((PROGRAMS_DIR / "expected" / f"{self.name}.status").read_text())


def load_programs() -> list[TestProgram]:
    """Parse programs.txt (its format is documented at its top)."""
    out = []
    for line in (PROGRAMS_DIR / "programs.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, env, *argv = line.split("\t")
        out.append(TestProgram(name, tuple(env.split(" ")) if env != "-" else (), tuple(argv)))
    return out


PROGRAMS = load_programs()
