"""Direct-Python ports of the C test programs (tests/programs/*.c).

Each module is a faithful port of one program: the same algorithm, the same
data sizes and the same printed lines, so its output can be checked byte for
byte against tests/programs/expected/NAME.out.  `main()` returns
``(stdout_text, exit_status)``.  They exist so the MIPS benchmark can say how
much slower "the algorithm run on the emulated CPU" is than "the algorithm
written in plain Python on the same interpreter".

32-bit C arithmetic is reproduced with ``& 0xFFFFFFFF`` masks only where the C
code relies on wraparound; everything else is ordinary Python ints.
"""
from __future__ import annotations

import importlib

WORKLOADS = ("crc32", "sort", "sha256", "sieve", "recursion", "intarith", "demo")


def load(name: str):
    """The pyref module for workload NAME."""
    if name not in WORKLOADS:
        raise KeyError(f"no Python reference for {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
