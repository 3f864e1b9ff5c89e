"""Port of tests/programs/recursion.c: Fibonacci, Ackermann, Hanoi, mutual
recursion, Hofstadter F/M, McCarthy 91, gcd and a depth test."""
from __future__ import annotations

import sys

from ._tinylibc import Out

M32 = 0xFFFFFFFF
VN = (20, 10, 12, 300)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class _Ack:
    calls = 0


def ack(m, n):
    _Ack.calls += 1
    if m == 0:
        return n + 1
    if n == 0:
        return ack(m - 1, 1)
    return ack(m - 1, ack(m, n - 1))


class _Hanoi:
    moves = 0
    hash = 0


def hanoi(n, frm, to, via):
    if n == 0:
        return
    hanoi(n - 1, frm, via, to)
    _Hanoi.moves += 1
    _Hanoi.hash = ((_Hanoi.hash * 31) & M32) ^ (frm * 4 + to) ^ (n << 8)
    hanoi(n - 1, via, to, frm)


def is_even(n):
    return 1 if n == 0 else is_odd(n - 1)


def is_odd(n):
    return 0 if n == 0 else is_even(n - 1)


def hof_f(n):
    return 1 if n == 0 else n - hof_m(hof_f(n - 1))


def hof_m(n):
    return 0 if n == 0 else n - hof_f(hof_m(n - 1))


def mc91(n):
    return n - 10 if n > 100 else mc91(mc91(n + 11))


def gcd(a, b):
    return a if b == 0 else gcd(b, a % b)


def depth_sum(n):
    if n == 0:
        return 0
    local = [n, (n * 3) & M32, n ^ 0x55, n + 7]
    r = depth_sum(n - 1)
    return (r + local[0] + local[1] + local[2] + local[3]) & M32


def main(argv=None) -> tuple[str, int]:
    # is_even/is_odd recurse ~300 deep, depth_sum 300: well inside the default limit,
    # but make sure a caller's lower limit does not break the port.
    if sys.getrecursionlimit() < 2000:
        sys.setrecursionlimit(2000)
    out = Out()
    n = VN[0]
    out.str("fib:")
    for i in range(0, n + 1, 5):
        out.char(" ")
        out.uint(fib(i))
    out.nl()
    out.kv_uint("fib(20)", fib(n))

    out.str("ack(2,n):")
    for i in range(VN[1] + 1):
        out.char(" ")
        out.uint(ack(2, i))
    out.nl()
    _Ack.calls = 0
    out.kv_uint("ack(3,3)", ack(3, 3))
    out.kv_uint("ack(3,3) calls", _Ack.calls)

    _Hanoi.moves = _Hanoi.hash = 0
    hanoi(VN[2], 1, 3, 2)
    out.kv_uint("hanoi(12) moves", _Hanoi.moves)
    out.kv_hex("hanoi(12) hash", _Hanoi.hash)

    out.str("parity:")
    for i in range(8):
        out.char(" ")
        out.uint(is_even(i * 37 + VN[1]))
        out.uint(is_odd(i * 37 + VN[1]))
    out.nl()

    out.str("hofstadter F:")
    for j in range(20):
        out.char(" ")
        out.int(hof_f(j))
    out.nl()
    out.str("hofstadter M:")
    for j in range(20):
        out.char(" ")
        out.int(hof_m(j))
    out.nl()

    out.str("mc91:")
    for j in range(80, 111, 6):
        out.char(" ")
        out.int(mc91(j))
    out.nl()

    out.kv_uint("gcd(1071,462)", gcd(1071, 462))
    out.kv_uint("gcd(fib(20),fib(19))", gcd(fib(n), fib(n - 1)))
    out.kv_uint("gcd(2^31,6^10)", gcd(0x80000000, 60466176))

    out.kv_uint("depth_sum(300)", depth_sum(VN[3]))
    return out.text(), 3
