"""Assemble the bare-metal images of tests/images with x86core's own assembler.

    python tests/images/build.py            write protected.rom next to protected.asm
    python tests/images/build.py --check    exit 1 if the checked-in ROM differs from its source

A ROM image is assembled at its low alias (0xF0000 for 64 KiB), starting in
16-bit code; `bits 32` inside the source switches to 32-bit code.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from x86core.asm import AsmError, assemble  # noqa: E402

IMAGES = {"protected": 0xF0000}     # name -> base address (the ROM's low alias)


def build(name: str) -> bytes:
    """The bytes of tests/images/NAME.rom, assembled from NAME.asm."""
    source = (HERE / f"{name}.asm").read_text()
    code = assemble(source, base=IMAGES[name], bits=16).code
    if len(code) not in (0x10000, 0x20000):
        raise AsmError(0, f"{name}.asm makes {len(code)} bytes, not a 64/128 KiB ROM")
    return code


def main(argv: list[str]) -> int:
    check = "--check" in argv
    status = 0
    for name in IMAGES:
        try:
            code = build(name)
        except AsmError as e:
            print(f"{name}.asm: {e}", file=sys.stderr)
            return 1
        rom = HERE / f"{name}.rom"
        if check:
            if not rom.exists() or rom.read_bytes() != code:
                print(f"{rom.name} is out of date: run python tests/images/build.py", file=sys.stderr)
                status = 1
        else:
            rom.write_bytes(code)
            print(f"wrote {rom} ({len(code)} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
