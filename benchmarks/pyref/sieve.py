"""Port of tests/programs/sieve.c: byte and bit-packed sieves up to 50000."""
from __future__ import annotations

from ._tinylibc import Out

LIMIT = 50000


def sieve_bytes(composite: bytearray) -> int:
    composite[0] = composite[1] = 1
    i = 2
    while i * i <= LIMIT:
        if not composite[i]:
            for j in range(i * i, LIMIT + 1, i):
                composite[j] = 1
        i += 1
    count = 0
    for i in range(2, LIMIT + 1):
        count += not composite[i]
    return count


def sieve_bits(bits: list[int]) -> int:
    count = 1  # the prime 2
    nodd = (LIMIT + 1) // 2
    i = 3
    while i * i <= LIMIT:
        if not bits[(i >> 1) >> 5] & (1 << ((i >> 1) & 31)):
            for j in range(i * i, LIMIT + 1, 2 * i):
                bits[(j >> 1) >> 5] |= 1 << ((j >> 1) & 31)
        i += 2
    for i in range(1, nodd):
        count += not (bits[i >> 5] >> (i & 31) & 1)
    return count


def main(argv=None) -> tuple[str, int]:
    out = Out()
    composite = bytearray(LIMIT + 1)
    bits = [0] * ((LIMIT >> 5) + 1)
    total = twins = prev = gap = gap_at = 0
    last = [0] * 10
    nlast = 0

    n1 = sieve_bytes(composite)
    n2 = sieve_bits(bits)
    out.kv_uint("limit", LIMIT)
    out.kv_uint("primes (byte sieve)", n1)
    out.kv_uint("primes (bit sieve)", n2)

    for i in range(2, LIMIT + 1):
        if composite[i]:
            continue
        total += i
        if prev and i - prev == 2:
            twins += 1
        if prev and i - prev > gap:
            gap = i - prev
            gap_at = prev
        prev = i
        last[nlast % 10] = i
        nlast += 1
    out.kv_uint("sum of primes", total)
    out.kv_uint("twin prime pairs", twins)
    out.str("largest gap ")
    out.uint(gap)
    out.str(" after ")
    out.uint(gap_at)
    out.nl()
    out.str("last primes:")
    for i in range(10):
        out.char(" ")
        out.uint(last[(nlast + i) % 10])
    out.nl()
    out.str("primes below 100:")
    for i in range(2, 100):
        if not composite[i]:
            out.char(" ")
            out.uint(i)
    out.nl()
    if n1 != n2:
        out.str("MISMATCH between sieves\n")
    return out.text(), n1 & 0xFF
