"""Port of tests/programs/demo.c: the longest Collatz chain below 3000."""
from __future__ import annotations

from ._tinylibc import Out

M32 = 0xFFFFFFFF


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = (3 * n + 1) & M32 if n & 1 else n >> 1
        steps += 1
    return steps


def main(argv=None) -> tuple[str, int]:
    argv = ["demo"] if argv is None else argv
    out = Out()
    best = best_n = 0
    out.str("Hello from a static i386 program.\n")
    out.str("It is computing the longest Collatz chain below 3000.\n")
    for n in range(1, 3000):
        s = collatz_steps(n)
        if s > best:
            best, best_n = s, n
    out.str("longest chain: n = ")
    out.uint(best_n)
    out.str(", ")
    out.uint(best)
    out.str(" steps\n")
    out.str("argc = ")
    out.uint(len(argv))
    out.str(", argv[0] = ")
    out.str(argv[0])
    out.str("\n")
    return out.text(), 0
