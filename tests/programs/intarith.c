/*
 * intarith.c - integer arithmetic edge cases, kept within defined C
 * behaviour (no INT_MIN / -1, no signed overflow; right shift of negative
 * values and out-of-range conversions use gcc's documented semantics):
 *   - signed/unsigned 32-bit division and modulo with negative operands
 *   - shifts by 0..31 (shl/sar/shr with %cl), rotates
 *   - 64-bit add/sub/mul/div/mod/shift (adc/sbb, shld/shrd, libgcc calls)
 *   - widening 32x32->64 multiplies (mul/imul)
 *   - byte swaps, popcount/clz/ctz/ffs/parity by hand and via builtins
 *   - unsigned wraparound, __builtin_*_overflow (OF/CF flags)
 *   - char/short sign and zero extension, signed vs unsigned compares
 * Values come from volatile arrays so the compiler cannot fold them.
 * Exit status: low 7 bits of a hash over every printed result.
 */
#include "tinylibc.h"

static u32 hash = 0x811c9dc5u;

static void mix(u32 v)
{
    hash = (hash ^ v) * 16777619u;
}

static void mix64(u64 v)
{
    mix((u32)v);
    mix((u32)(v >> 32));
}

static void out_int(s32 v)
{
    print_char(' ');
    print_int(v);
    mix((u32)v);
}

static void out_hex(u32 v)
{
    print_char(' ');
    print_hex32(v);
    mix(v);
}

static void out_i64(s64 v)
{
    print_char(' ');
    print_i64(v);
    mix64((u64)v);
}

static void out_hex64(u64 v)
{
    print_char(' ');
    print_hex64(v);
    mix64(v);
}

static volatile s32 sv[] = {0, 1, -1, 7, -7, 13, -13, 100, -100,
                            INT_MAX, INT_MIN, 0x12345678, -0x12345678};
static volatile s32 sd[] = {1, -1, 2, -2, 3, -3, 7, -7, 10, -10, 1000,
                            INT_MAX, INT_MIN};
static volatile u32 shval[] = {0x80000001u, 0xfffe1dc7u /* -123449 */,
                               0x12345678u, 1u};
static volatile s64 lv[] = {0, 1, -1, 1000000007LL, -1000000007LL,
                            0x123456789abcdefLL, -0x123456789abcdefLL,
                            LLONG_MAX, LLONG_MIN, 0x100000000LL,
                            -0x100000000LL, 0xffffffffLL};
static volatile s64 ld[] = {1, -1, 3, -3, 10, -7, 0x100000000LL,
                            -0x100000001LL, 0x7fffffffLL, 1000000007LL,
                            LLONG_MAX, LLONG_MIN};
static volatile u32 bitval[] = {1, 2, 3, 0x80000000u, 0xffffffffu,
                                0x12345678u, 0x00f000f0u, 0xdeadbeefu,
                                0x55555555u, 0x00010000u};
static volatile u32 vmask = 31, vone = 1;

static void div32(void)
{
    u32 i, j;
    print_str("== signed div/mod (a: a/d a%d for each d)\n");
    for (i = 0; i < ARRAY_SIZE(sv); i++) {
        s32 a = sv[i];
        print_int(a);
        print_char(':');
        for (j = 0; j < ARRAY_SIZE(sd); j++) {
            s32 d = sd[j];
            if (a == INT_MIN && d == -1)
                continue; /* undefined */
            out_int(a / d);
            out_int(a % d);
        }
        print_nl();
    }
    print_str("== unsigned div/mod\n");
    for (i = 0; i < ARRAY_SIZE(sv); i++) {
        u32 a = (u32)sv[i];
        print_hex32(a);
        print_char(':');
        for (j = 0; j < ARRAY_SIZE(sd); j++) {
            u32 d = (u32)sd[j];
            out_hex(a / d);
            out_hex(a % d);
        }
        print_nl();
    }
    print_str("== INT_MIN special cases:");
    out_int(sv[10] / 1);
    out_int(sv[10] % 1);
    out_int(sv[10] / 2);
    out_int(sv[10] % 3);
    out_int(sv[10] % -3);
    out_int(sv[10] / INT_MAX);
    out_int(sv[10] % INT_MAX);
    out_int(sv[10] / sv[10]);
    print_nl();
}

static void shifts(void)
{
    u32 i, s;
    print_str("== shifts (x<<s, (s32)x>>s, x>>s)\n");
    for (i = 0; i < ARRAY_SIZE(shval); i++) {
        u32 x = shval[i];
        u32 h = 0;
        for (s = 0; s < 32; s++) {
            u32 cnt = s & vmask;
            u32 a = x << cnt, b = (u32)((s32)x >> cnt), c = x >> cnt;
            h = (h * 31u) ^ a ^ (b * 3u) ^ (c * 7u);
            if (s == 0 || s == 1 || s == 4 || s == 16 || s == 31) {
                print_str("x=");
                print_hex32(x);
                print_str(" s=");
                print_uint(s);
                out_hex(a);
                out_hex(b);
                out_hex(c);
                print_nl();
            }
        }
        print_str("shift hash");
        out_hex(h);
        print_nl();
    }
    /* constant shifts on signed char / short after promotion */
    {
        volatile s8 c = -100;
        volatile s16 sh = -30000;
        print_str("small shifts:");
        out_int(c >> 2);
        out_int((s32)((u32)c << 3)); /* no UB: shift as unsigned */
        out_int(sh >> 5);
        out_int((s16)((u32)sh << 1));
        out_int((u8)c >> 1);
        print_nl();
    }
}

static u32 rol32(u32 x, u32 r) { return (x << r) | (x >> ((32 - r) & 31)); }
static u32 ror32(u32 x, u32 r) { return (x >> r) | (x << ((32 - r) & 31)); }
static u64 rol64(u64 x, u32 r) { return (x << r) | (x >> ((64 - r) & 63)); }

static void rotates(void)
{
    u32 r;
    u32 h = 0;
    print_str("== rotates\n");
    for (r = 0; r < 32; r++) {
        u32 a = rol32(bitval[7], r), b = ror32(bitval[5], r);
        h = h * 33u + a + (b ^ 0x5a5a5a5au);
        if (r % 8 == 3) {
            print_str("r=");
            print_uint(r);
            out_hex(a);
            out_hex(b);
            print_nl();
        }
    }
    print_str("rotate hash");
    out_hex(h);
    print_nl();
    print_str("rol64:");
    for (r = 0; r < 64; r += 13)
        out_hex64(rol64(0x0123456789abcdefULL ^ (u64)bitval[0], r));
    print_nl();
    /* 8/16-bit rotates */
    {
        volatile u8 b8 = 0x81;
        volatile u16 b16 = 0x8001;
        u8 r8 = (u8)((b8 << 3) | (b8 >> 5));
        u16 r16 = (u16)((b16 >> 4) | (b16 << 12));
        print_str("rot8/16:");
        out_hex(r8);
        out_hex(r16);
        print_nl();
    }
}

static int pop_hand(u32 x)
{
    int n = 0;
    while (x) {
        x &= x - 1;
        n++;
    }
    return n;
}

static int clz_hand(u32 x)
{
    int n = 0;
    if (!x)
        return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

static int ctz_hand(u32 x)
{
    int n = 0;
    if (!x)
        return 32;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
}

static u32 bswap_hand(u32 x)
{
    return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) |
           (x << 24);
}

static void bitops(void)
{
    u32 i;
    int bad = 0;
    print_str("== bit ops (x: pop clz ctz ffs parity bswap bswap16)\n");
    for (i = 0; i < ARRAY_SIZE(bitval); i++) {
        u32 x = bitval[i];
        int p = __builtin_popcount(x), c = __builtin_clz(x),
            t = __builtin_ctz(x);
        print_hex32(x);
        print_char(':');
        out_int(p);
        out_int(c);
        out_int(t);
        out_int(__builtin_ffs((int)x));
        out_int(__builtin_parity(x));
        out_hex(__builtin_bswap32(x));
        out_hex(__builtin_bswap16((u16)x));
        print_nl();
        bad += p != pop_hand(x);
        bad += c != clz_hand(x);
        bad += t != ctz_hand(x);
        bad += __builtin_bswap32(x) != bswap_hand(x);
        bad += __builtin_parity(x) != (pop_hand(x) & 1);
    }
    {
        volatile u64 q = 0x0000001000000000ULL, z = 0;
        print_str("64-bit bit ops:");
        out_int(__builtin_popcountll(q | 0xf0f0));
        out_int(__builtin_clzll(q));
        out_int(__builtin_ctzll(q));
        out_int(__builtin_ffsll((s64)z));
        out_hex64(__builtin_bswap64(0x0102030405060708ULL + q));
        print_nl();
    }
    print_str("builtin vs hand mismatches");
    out_int(bad);
    print_nl();
}

static void arith64(void)
{
    u32 i, j;
    print_str("== 64-bit signed div/mod\n");
    for (i = 0; i < ARRAY_SIZE(lv); i++) {
        s64 a = lv[i];
        print_i64(a);
        print_char(':');
        for (j = 0; j < ARRAY_SIZE(ld); j++) {
            s64 d = ld[j];
            if (a == LLONG_MIN && d == -1)
                continue;
            out_i64(a / d);
            out_i64(a % d);
        }
        print_nl();
    }
    print_str("== 64-bit unsigned div/mod, mul, add, sub\n");
    for (i = 0; i < ARRAY_SIZE(lv); i++) {
        u64 a = (u64)lv[i];
        u64 h = 0;
        for (j = 0; j < ARRAY_SIZE(ld); j++) {
            u64 d = (u64)ld[j];
            h = h * 1099511628211ULL;
            h ^= a / d;
            h += a % d;
            h ^= a * d;
            h += a + d;
            h ^= a - d;
        }
        print_hex64(a);
        print_char(':');
        out_hex64(h);
        out_hex64(a * 0x9e3779b97f4a7c15ULL);
        print_nl();
    }
    print_str("== 64-bit shifts (x<<s, (s64)x>>s, x>>s)\n");
    {
        u64 x = (u64)lv[5] ^ 0x8000000000000000ULL;
        u32 s;
        u64 h = 0;
        for (s = 0; s < 64; s++) {
            u32 cnt = s & (vmask * 2 + 1);
            u64 a = x << cnt, b = (u64)((s64)x >> cnt), c = x >> cnt;
            h = (h * 31u) ^ a ^ (b * 3u) ^ (c * 7u);
            if (s % 16 == 0 || s == 31 || s == 32 || s == 33 || s == 63) {
                print_str("s=");
                print_uint(s);
                out_hex64(a);
                out_hex64(b);
                out_hex64(c);
                print_nl();
            }
        }
        print_str("shift64 hash");
        out_hex64(h);
        print_nl();
    }
    print_str("== widening multiply\n");
    for (i = 0; i < ARRAY_SIZE(sv); i += 2) {
        s32 a = sv[i], b = sv[ARRAY_SIZE(sv) - 1 - i];
        print_int(a);
        print_char('*');
        print_int(b);
        print_char(':');
        out_i64((s64)a * b);
        out_hex64((u64)(u32)a * (u32)b);
        out_hex((u32)a * (u32)b);
        print_nl();
    }
    print_str("64-bit compare:");
    for (i = 0; i + 1 < ARRAY_SIZE(lv); i++) {
        out_int((lv[i] < lv[i + 1]) * 4 + ((u64)lv[i] < (u64)lv[i + 1]) * 2 +
                (lv[i] == lv[i + 1]));
    }
    print_nl();
}

static void wrap_and_ext(void)
{
    volatile u32 umax = UINT_MAX, big = 0x80000000u;
    volatile s32 a = INT_MAX, b = INT_MIN, m = -5;
    volatile u8 ub = 0xf0;
    volatile s8 sb = (s8)0x80;
    volatile char pc = (char)0xe9;
    volatile u16 uw = 0x8000;
    volatile s16 sw = (s16)0xff7f;
    s32 r;
    u32 ur;
    u32 i, j;

    print_str("== unsigned wraparound:");
    out_hex(umax + vone);
    out_hex(0u - vone);
    out_hex(umax * umax);
    out_hex(big * 2u);
    out_hex(big + big);
    out_hex((u32)(u16)(umax + 5));
    out_hex((u32)(u8)(ub + 0x20));
    print_nl();

    print_str("overflow builtins:");
    out_int(__builtin_add_overflow(a, 1, &r));
    out_int(r);
    out_int(__builtin_sub_overflow(b, 1, &r));
    out_int(r);
    out_int(__builtin_mul_overflow(a, 2, &r));
    out_int(r);
    out_int(__builtin_mul_overflow(m, 3, &r));
    out_int(r);
    out_int(__builtin_add_overflow(umax, vone, &ur));
    out_hex(ur);
    out_int(__builtin_sub_overflow(0u, vone, &ur));
    out_hex(ur);
    out_int(__builtin_mul_overflow(big, 2u, &ur));
    out_hex(ur);
    print_nl();

    print_str("sign/zero extension:");
    out_int(sb);
    out_int((u8)sb);
    out_int(ub);
    out_int((s8)ub);
    out_int(pc); /* plain char is signed on i386 */
    out_int((u8)pc);
    out_int(uw);
    out_int((s16)uw);
    out_int(sw);
    out_int((u16)sw);
    out_hex((u32)(s32)sb);
    out_hex64((u64)(s64)sw);
    out_hex64((u64)(u32)m);
    out_hex64((u64)(s64)m);
    print_nl();

    print_str("mixed compare (signed<, unsigned<):");
    for (i = 0; i < 5; i++) {
        for (j = 0; j < 5; j++) {
            s32 x = sv[i * 2], y = sv[j * 2 + 1];
            print_char(' ');
            print_uint((u32)(x < y));
            print_uint((u32)((u32)x < (u32)y));
            mix((u32)(x < y) * 2 + ((u32)x < (u32)y));
        }
    }
    print_nl();

    print_str("abs/min/max:");
    for (i = 0; i < ARRAY_SIZE(sv); i += 3) {
        s32 x = sv[i], y = sv[(i + 5) % ARRAY_SIZE(sv)];
        out_int(x < 0 && x != INT_MIN ? -x : x);
        out_int(x < y ? x : y);
        out_int(x > y ? x : y);
        out_hex((u32)x > (u32)y ? (u32)x : (u32)y);
    }
    print_nl();
}

int main(void)
{
    div32();
    shifts();
    rotates();
    bitops();
    arith64();
    wrap_and_ext();
    print_str("hash");
    print_char(' ');
    print_hex32(hash);
    print_nl();
    return (int)(hash & 0x7f);
}
