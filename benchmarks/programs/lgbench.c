/*
 * lgbench.c - the Guest user program behind the syscall and faults
 * benchmarks (benchmarks/syscall.py, benchmarks/faults.py).
 *
 *   lgbench getpid N     N getpid() system calls in a loop
 *   lgbench touch N      map N fresh anonymous pages, read one word of each
 *                        (first touch), ask for a TLB flush, read them again
 *                        (re-touch), then write one word of each
 *
 * Phase boundaries are marked with system call MARK (an unused number:
 * native Linux answers -ENOSYS, so the program runs natively unchanged and
 * prints the same lines; the benchmarks' Guest kernel records the clock and
 * the Host's counters there).  FLUSH asks the benchmark kernel for
 * LHCALL_FLUSH_TLB(0): the Host drops its shadow of the user mappings while
 * the Guest's own page tables keep them, so the re-touch faults are the
 * Host's alone.  Natively FLUSH is -ENOSYS too and the re-touch just reads.
 *
 * The output is the same natively and in the Guest (the tests compare it):
 * a line per phase with a checksum, never the pid itself.
 */
#include "tinylibc.h"

#define SYS_GETPID 20
#define SYS_OLD_MMAP 90        /* i386: one pointer to the six arguments */
#define MARK 0x4C47            /* "LG": unused by Linux, -ENOSYS natively */
#define FLUSH 0x4C48
#define PAGE 4096u

static long syscall0(long nr)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "0"(nr) : "memory");
    return ret;
}

static void mark(long id)
{
    tl_syscall1(MARK, id);
}

static u32 parse_uint(const char *s)
{
    u32 v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (u32)(*s++ - '0');
    return v;
}

static int bench_getpid(u32 n)
{
    long first = syscall0(SYS_GETPID);
    u32 same = 0;
    mark(1);
    for (u32 i = 0; i < n; i++)
        same += syscall0(SYS_GETPID) == first;
    mark(2);
    print_kv_uint("getpid calls", n);
    print_kv_uint("same pid", same);
    return same == n ? 0 : 1;
}

static int bench_touch(u32 n)
{
    u32 args[6] = {0, n * PAGE, 3 /* PROT_READ|PROT_WRITE */,
                   0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, (u32)-1, 0};
    long base = tl_syscall1(SYS_OLD_MMAP, (long)args);
    u32 sum = 0;
    if (n == 0 || (base < 0 && base > -4096)) {
        print_kv_int("mmap failed", (s32)base);
        return 2;
    }
    volatile u32 *p = (volatile u32 *)base;
    mark(1);
    for (u32 i = 0; i < n; i++)             /* first touch: reflected to the Guest */
        sum += p[i * (PAGE / 4)];
    mark(2);
    tl_syscall1(FLUSH, 0);
    mark(3);
    for (u32 i = 0; i < n; i++)             /* re-touch: the Host refills its shadow */
        sum += p[i * (PAGE / 4)];
    mark(4);
    for (u32 i = 0; i < n; i++)             /* first write: the Host marks it dirty */
        p[i * (PAGE / 4) + 1] = i;
    mark(5);
    for (u32 i = 0; i < n; i++)
        sum += p[i * (PAGE / 4) + 1];
    print_kv_uint("pages", n);
    print_kv_uint("checksum", sum);
    return sum == n * (n - 1) / 2 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "getpid") == 0)
        return bench_getpid(parse_uint(argv[2]));
    if (argc == 3 && strcmp(argv[1], "touch") == 0)
        return bench_touch(parse_uint(argv[2]));
    print_str("usage: lgbench getpid N | lgbench touch N\n");
    return 64;
}
