/*
 * sieve.c - sieve of Eratosthenes up to 50000, done twice: with a byte
 * array and with a bit-packed u32 array (shifts, masks).  Prints the prime
 * count, the last primes, the sum of all primes, twin-prime count and the
 * largest prime gap.
 * Exit status: prime count & 0xff (pi(50000) = 5133 -> 13).
 */
#include "tinylibc.h"

#define LIMIT 50000

static u8 composite[LIMIT + 1];
static u32 bits[(LIMIT >> 5) + 1];

static u32 sieve_bytes(void)
{
    u32 i, j, count = 0;
    composite[0] = composite[1] = 1;
    for (i = 2; i * i <= LIMIT; i++)
        if (!composite[i])
            for (j = i * i; j <= LIMIT; j += i)
                composite[j] = 1;
    for (i = 2; i <= LIMIT; i++)
        count += !composite[i];
    return count;
}

/* bit-packed, odd numbers only: bit k represents 2k+1 */
static u32 sieve_bits(void)
{
    u32 i, j, count = 1; /* the prime 2 */
    u32 nodd = (LIMIT + 1) / 2;
    for (i = 3; i * i <= LIMIT; i += 2)
        if (!(bits[(i >> 1) >> 5] & (1u << ((i >> 1) & 31))))
            for (j = i * i; j <= LIMIT; j += 2 * i)
                bits[(j >> 1) >> 5] |= 1u << ((j >> 1) & 31);
    for (i = 1; i < nodd; i++)
        count += !(bits[i >> 5] >> (i & 31) & 1);
    return count;
}

int main(void)
{
    u32 n1, n2, i, sum = 0, twins = 0, prev = 0, gap = 0, gap_at = 0;
    u32 last[10], nlast = 0;

    n1 = sieve_bytes();
    n2 = sieve_bits();
    print_kv_uint("limit", LIMIT);
    print_kv_uint("primes (byte sieve)", n1);
    print_kv_uint("primes (bit sieve)", n2);

    for (i = 2; i <= LIMIT; i++) {
        if (composite[i])
            continue;
        sum += i;
        if (prev && i - prev == 2)
            twins++;
        if (prev && i - prev > gap) {
            gap = i - prev;
            gap_at = prev;
        }
        prev = i;
        last[nlast % 10] = i;
        nlast++;
    }
    print_kv_uint("sum of primes", sum);
    print_kv_uint("twin prime pairs", twins);
    print_str("largest gap ");
    print_uint(gap);
    print_str(" after ");
    print_uint(gap_at);
    print_nl();
    print_str("last primes:");
    for (i = 0; i < 10; i++) {
        print_char(' ');
        print_uint(last[(nlast + i) % 10]);
    }
    print_nl();
    print_str("primes below 100:");
    for (i = 2; i < 100; i++)
        if (!composite[i]) {
            print_char(' ');
            print_uint(i);
        }
    print_nl();
    if (n1 != n2)
        print_str("MISMATCH between sieves\n");
    return (int)(n1 & 0xff);
}
