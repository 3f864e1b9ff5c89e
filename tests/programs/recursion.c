/*
 * recursion.c - deep and branching recursion: naive Fibonacci, Ackermann
 * A(2,n) and A(3,3), towers of Hanoi (move count and a hash of the move
 * sequence), mutual recursion (is_even/is_odd, Hofstadter F/M sequences),
 * McCarthy 91, recursive gcd and a recursion-depth test.
 * Exit status: 3 (fixed, to exercise a non-zero exit code).
 */
#include "tinylibc.h"

static volatile u32 vn[] = {20, 10, 12, 300};

static NOINLINE u32 fib(u32 n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static u32 ack_calls;

static NOINLINE u32 ack(u32 m, u32 n)
{
    ack_calls++;
    if (m == 0)
        return n + 1;
    if (n == 0)
        return ack(m - 1, 1);
    return ack(m - 1, ack(m, n - 1));
}

static u32 hanoi_moves, hanoi_hash;

static NOINLINE void hanoi(u32 n, u32 from, u32 to, u32 via)
{
    if (n == 0)
        return;
    hanoi(n - 1, from, via, to);
    hanoi_moves++;
    hanoi_hash = (hanoi_hash * 31u) ^ (from * 4 + to) ^ (n << 8);
    hanoi(n - 1, via, to, from);
}

static NOINLINE int is_odd(u32 n);

static NOINLINE int is_even(u32 n)
{
    return n == 0 ? 1 : is_odd(n - 1);
}

static NOINLINE int is_odd(u32 n)
{
    return n == 0 ? 0 : is_even(n - 1);
}

/* Hofstadter female/male sequences */
static NOINLINE int hof_m(int n);

static NOINLINE int hof_f(int n)
{
    return n == 0 ? 1 : n - hof_m(hof_f(n - 1));
}

static NOINLINE int hof_m(int n)
{
    return n == 0 ? 0 : n - hof_f(hof_m(n - 1));
}

static NOINLINE int mc91(int n)
{
    return n > 100 ? n - 10 : mc91(mc91(n + 11));
}

static NOINLINE u32 gcd(u32 a, u32 b)
{
    return b == 0 ? a : gcd(b, a % b);
}

/* non-tail recursion with a stack frame holding a local array */
static NOINLINE u32 depth_sum(u32 n)
{
    volatile u32 local[4];
    u32 r;
    if (n == 0)
        return 0;
    local[0] = n;
    local[1] = n * 3;
    local[2] = n ^ 0x55;
    local[3] = n + 7;
    r = depth_sum(n - 1);
    return r + local[0] + local[1] + local[2] + local[3];
}

int main(void)
{
    u32 i, n;
    int j;

    n = vn[0];
    print_str("fib:");
    for (i = 0; i <= n; i += 5) {
        print_char(' ');
        print_uint(fib(i));
    }
    print_nl();
    print_kv_uint("fib(20)", fib(n));

    print_str("ack(2,n):");
    for (i = 0; i <= vn[1]; i++) {
        print_char(' ');
        print_uint(ack(2, i));
    }
    print_nl();
    ack_calls = 0;
    print_kv_uint("ack(3,3)", ack(3, 3));
    print_kv_uint("ack(3,3) calls", ack_calls);

    hanoi(vn[2], 1, 3, 2);
    print_kv_uint("hanoi(12) moves", hanoi_moves);
    print_kv_hex("hanoi(12) hash", hanoi_hash);

    print_str("parity:");
    for (i = 0; i < 8; i++) {
        print_char(' ');
        print_uint((u32)is_even(i * 37 + vn[1]));
        print_uint((u32)is_odd(i * 37 + vn[1]));
    }
    print_nl();

    print_str("hofstadter F:");
    for (j = 0; j < 20; j++) {
        print_char(' ');
        print_int(hof_f(j));
    }
    print_nl();
    print_str("hofstadter M:");
    for (j = 0; j < 20; j++) {
        print_char(' ');
        print_int(hof_m(j));
    }
    print_nl();

    print_str("mc91:");
    for (j = 80; j <= 110; j += 6) {
        print_char(' ');
        print_int(mc91(j));
    }
    print_nl();

    print_kv_uint("gcd(1071,462)", gcd(1071, 462));
    print_kv_uint("gcd(fib(20),fib(19))", gcd(fib(n), fib(n - 1)));
    print_kv_uint("gcd(2^31,6^10)", gcd(0x80000000u, 60466176u));

    print_kv_uint("depth_sum(300)", depth_sum(vn[3]));
    return 3;
}
