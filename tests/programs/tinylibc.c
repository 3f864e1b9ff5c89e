/*
 * tinylibc.c - see tinylibc.h.
 *
 * Also provides the libgcc helpers that gcc -m32 emits calls to for 64-bit
 * division (__udivdi3 & co) and popcount (__popcountsi2/__popcountdi2), so
 * the programs link without a 32-bit libgcc.
 */
#include "tinylibc.h"

/* ------------------------------------------------------------------ */
/* system calls                                                        */

long tl_syscall1(long nr, long a)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "0"(nr), "b"(a) : "memory");
    return ret;
}

long tl_syscall3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "0"(nr), "b"(a), "c"(b), "d"(c)
                     : "memory");
    return ret;
}

long sys_write(int fd, const void *buf, size_t n)
{
    return tl_syscall3(4, fd, (long)buf, (long)n);
}

void sys_exit(int status)
{
    for (;;)
        tl_syscall1(1, status);
}

/* ------------------------------------------------------------------ */
/* buffered stdout                                                     */

static char outbuf[512];
static size_t outlen;

void tl_flush(void)
{
    size_t off = 0;
    while (off < outlen) {
        long r = sys_write(1, outbuf + off, outlen - off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    outlen = 0;
}

void tl_exit(int status)
{
    tl_flush();
    sys_exit(status);
}

void print_char(char c)
{
    outbuf[outlen++] = c;
    if (c == '\n' || outlen == sizeof(outbuf))
        tl_flush();
}

void print_buf(const char *s, size_t n)
{
    while (n--)
        print_char(*s++);
}

void print_str(const char *s)
{
    while (*s)
        print_char(*s++);
}

void print_nl(void)
{
    print_char('\n');
}

void print_uint(u32 v)
{
    char tmp[12];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        print_char(tmp[--i]);
}

void print_int(s32 v)
{
    u32 u = (u32)v;
    if (v < 0) {
        print_char('-');
        u = 0u - u;
    }
    print_uint(u);
}

static const char hexdig[] = "0123456789abcdef";

void print_hex(u32 v)
{
    char tmp[8];
    int i = 0;
    do {
        tmp[i++] = hexdig[v & 15];
        v >>= 4;
    } while (v);
    while (i)
        print_char(tmp[--i]);
}

void print_hex32(u32 v)
{
    int sh;
    for (sh = 28; sh >= 0; sh -= 4)
        print_char(hexdig[(v >> sh) & 15]);
}

void print_hex8(u32 v)
{
    print_char(hexdig[(v >> 4) & 15]);
    print_char(hexdig[v & 15]);
}

void print_u64(u64 v)
{
    char tmp[21];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    while (i)
        print_char(tmp[--i]);
}

void print_i64(s64 v)
{
    u64 u = (u64)v;
    if (v < 0) {
        print_char('-');
        u = 0ull - u;
    }
    print_u64(u);
}

void print_hex64(u64 v)
{
    print_hex32((u32)(v >> 32));
    print_hex32((u32)v);
}

void print_kv_uint(const char *label, u32 v)
{
    print_str(label);
    print_char(' ');
    print_uint(v);
    print_nl();
}

void print_kv_int(const char *label, s32 v)
{
    print_str(label);
    print_char(' ');
    print_int(v);
    print_nl();
}

void print_kv_hex(const char *label, u32 v)
{
    print_str(label);
    print_str(" 0x");
    print_hex32(v);
    print_nl();
}

void print_kv_str(const char *label, const char *s)
{
    print_str(label);
    print_char(' ');
    print_str(s);
    print_nl();
}

/* ------------------------------------------------------------------ */
/* memory and strings (built with -fno-tree-loop-distribute-patterns   */
/* so gcc does not turn these loops back into calls to themselves)    */

void *memcpy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    if (d == s || n == 0)
        return dst;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        d += n;
        s += n;
        while (n--)
            *--d = *--s;
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    const char *p = s;
    while (*p)
        p++;
    return (size_t)(p - s);
}

int strcmp(const char *a, const char *b)
{
    const u8 *p = (const u8 *)a, *q = (const u8 *)b;
    while (*p && *p == *q) {
        p++;
        q++;
    }
    return (int)*p - (int)*q;
}

int strncmp(const char *a, const char *b, size_t n)
{
    const u8 *p = (const u8 *)a, *q = (const u8 *)b;
    for (; n; n--, p++, q++) {
        if (*p != *q)
            return (int)*p - (int)*q;
        if (!*p)
            break;
    }
    return 0;
}

char *strcpy(char *dst, const char *src)
{
    char *d = dst;
    while ((*d++ = *src++) != 0)
        ;
    return dst;
}

/* ------------------------------------------------------------------ */
/* libgcc replacements                                                 */

u64 __udivmoddi4(u64 n, u64 d, u64 *rem);
u64 __udivdi3(u64 n, u64 d);
u64 __umoddi3(u64 n, u64 d);
s64 __divdi3(s64 n, s64 d);
s64 __moddi3(s64 n, s64 d);
s64 __divmoddi4(s64 n, s64 d, s64 *rem);
int __popcountsi2(u32 x);
int __popcountdi2(u64 x);
int __paritysi2(u32 x);
int __paritydi2(u64 x);
int __clzsi2(u32 x);
int __ctzsi2(u32 x);
int __clzdi2(u64 x);
int __ctzdi2(u64 x);
int __ffsdi2(u64 x);

/* unsigned 64/64 division; division by zero yields a divide error trap
   from the 32-bit divide below, like real hardware/libgcc would */
u64 __udivmoddi4(u64 n, u64 d, u64 *rem)
{
    u64 q = 0;
    int shift;

    if ((u32)(n >> 32) == 0 && (u32)(d >> 32) == 0) {
        u32 n32 = (u32)n, d32 = (u32)d;
        if (rem)
            *rem = n32 % d32;
        return n32 / d32;
    }
    if (d > n) {
        if (rem)
            *rem = n;
        return 0;
    }
    /* here d != 0 and d <= n: classic shift-subtract */
    shift = __builtin_clzll(d) - __builtin_clzll(n);
    d <<= shift;
    for (; shift >= 0; shift--) {
        q <<= 1;
        if (n >= d) {
            n -= d;
            q |= 1;
        }
        d >>= 1;
    }
    if (rem)
        *rem = n;
    return q;
}

u64 __udivdi3(u64 n, u64 d)
{
    return __udivmoddi4(n, d, NULL);
}

u64 __umoddi3(u64 n, u64 d)
{
    u64 r;
    __udivmoddi4(n, d, &r);
    return r;
}

s64 __divmoddi4(s64 n, s64 d, s64 *rem)
{
    int negq = 0, negr = 0;
    u64 un = (u64)n, ud = (u64)d, q, r;
    if (n < 0) {
        un = 0ull - un;
        negq = !negq;
        negr = 1;
    }
    if (d < 0) {
        ud = 0ull - ud;
        negq = !negq;
    }
    q = __udivmoddi4(un, ud, &r);
    if (negq)
        q = 0ull - q;
    if (negr)
        r = 0ull - r;
    if (rem)
        *rem = (s64)r;
    return (s64)q;
}

s64 __divdi3(s64 n, s64 d)
{
    return __divmoddi4(n, d, NULL);
}

s64 __moddi3(s64 n, s64 d)
{
    s64 r;
    __divmoddi4(n, d, &r);
    return r;
}

int __popcountsi2(u32 x)
{
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    return (int)((x * 0x01010101u) >> 24);
}

int __popcountdi2(u64 x)
{
    return __popcountsi2((u32)x) + __popcountsi2((u32)(x >> 32));
}

int __paritysi2(u32 x)
{
    return __popcountsi2(x) & 1;
}

int __paritydi2(u64 x)
{
    return __popcountdi2(x) & 1;
}

/* clz/ctz by hand (gcc inlines the 32-bit builtins as bsr/bsf itself,
   so use loops here rather than risking a call to ourselves); the result
   for 0 is undefined, as for the builtins */
int __clzsi2(u32 x)
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

int __ctzsi2(u32 x)
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

int __clzdi2(u64 x)
{
    u32 hi = (u32)(x >> 32);
    return hi ? __clzsi2(hi) : 32 + __clzsi2((u32)x);
}

int __ctzdi2(u64 x)
{
    u32 lo = (u32)x;
    return lo ? __ctzsi2(lo) : 32 + __ctzsi2((u32)(x >> 32));
}

int __ffsdi2(u64 x)
{
    return x ? __ctzdi2(x) + 1 : 0;
}
