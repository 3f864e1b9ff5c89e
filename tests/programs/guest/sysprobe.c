/*
 * sysprobe.c - a self-checking probe of the Linux i386 system calls the
 * lguest Guest kernel implements.  It runs natively too, and prints the
 * same thing there: every line is "name: ok" or "name: FAIL ..." and
 * nothing depends on the machine (no addresses, pids or times).
 *
 *   sysprobe all FILE     the checks below; FILE is a readable file of at
 *                         least 64 bytes (the test makes it); run from "/".
 *                         Exit status = number of failures.
 *   sysprobe sleep MS     nanosleep MS milliseconds; prints whether
 *                         CLOCK_MONOTONIC advanced at least that much.
 *   sysprobe stack KB     touches KB KiB of stack below the initial area.
 *   sysprobe heap MB      grows the break by MB MiB and touches every page.
 *   sysprobe cat          copies stdin to stdout, then prints the count.
 *   sysprobe segv | munmapped | rowrite | protnone | div0 | ud2 | abort | loop
 *                         dies the named way (SIGSEGV, SIGSEGV after munmap,
 *                         SIGSEGV writing a read-only page, SIGSEGV reading a
 *                         PROT_NONE page, SIGFPE, SIGILL, SIGABRT) or loops.
 */
#include "tinylibc.h"

#define ENOENT 2
#define EBADF 9
#define ENOMEM 12
#define EFAULT 14
#define EEXIST 17
#define ENOTDIR 20
#define EINVAL 22
#define ENOTTY 25
#define ESPIPE 29
#define ENOSYS 38

#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_PRIVATE 2
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MREMAP_MAYMOVE 1
#define O_RDONLY 0
#define O_DIRECTORY 0200000
#define PAGE 4096
/* a page address, not -errno (32-bit mappings may lie above 2 GiB) */
#define IS_ADDR(r) ((u32)(r) < 0xfffff001u && ((u32)(r) & 0xfff) == 0)

static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    long extra[2];
    long *p = extra;
    extra[0] = e;
    extra[1] = f;
    __asm__ volatile("push %%ebp\n\t"
                     "movl 4(%%edi), %%ebp\n\t"
                     "movl 0(%%edi), %%edi\n\t"
                     "int $0x80\n\t"
                     "pop %%ebp"
                     : "=a"(ret), "+D"(p)
                     : "0"(nr), "b"(a), "c"(b), "d"(c), "S"(d)
                     : "memory");
    return ret;
}

#define SYS0(nr) sys6(nr, 0, 0, 0, 0, 0, 0)
#define SYS1(nr, a) sys6(nr, (long)(a), 0, 0, 0, 0, 0)
#define SYS2(nr, a, b) sys6(nr, (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(nr, a, b, c) sys6(nr, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(nr, a, b, c, d) sys6(nr, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS5(nr, a, b, c, d, e) sys6(nr, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

enum {
    NR_exit = 1, NR_read = 3, NR_write = 4, NR_open = 5, NR_close = 6, NR_lseek = 19,
    NR_getpid = 20, NR_access = 33, NR_kill = 37, NR_dup = 41, NR_brk = 45, NR_ioctl = 54,
    NR_dup2 = 63, NR_gettimeofday = 78, NR_readlink = 85, NR_munmap = 91, NR_uname = 122,
    NR_mprotect = 125, NR_llseek = 140, NR_writev = 146, NR_nanosleep = 162,
    NR_mremap = 163, NR_prctl = 172, NR_pread64 = 180, NR_getcwd = 183,
    NR_ugetrlimit = 191, NR_mmap2 = 192, NR_stat64 = 195, NR_fstat64 = 197,
    NR_getuid32 = 199, NR_geteuid32 = 201, NR_getdents64 = 220, NR_fcntl64 = 221,
    NR_gettid = 224, NR_set_tid_address = 258, NR_clock_gettime = 265,
    NR_getrandom = 355,
};

struct timespec32 { s32 sec; s32 nsec; };
struct iovec32 { const void *base; u32 len; };

/* struct stat64, i386 */
struct stat64 {
    u64 dev; u32 pad0; u32 ino32; u32 mode; u32 nlink; u32 uid; u32 gid; u64 rdev;
    u32 pad3; s64 size; u32 blksize; u64 blocks; u32 times[6]; u64 ino;
} __attribute__((packed));

static int failures;
static char *file;

static void check(const char *name, int ok, const char *why, long got)
{
    print_str(name);
    if (ok) {
        print_str(": ok\n");
        return;
    }
    print_str(": FAIL ");
    print_str(why);
    print_str(" (got ");
    print_int(got);
    print_str(")\n");
    failures++;
}

#define EXPECT(name, expr, want) do { long _g = (long)(expr); \
    check(name, _g == (long)(want), #expr " == " #want, _g); } while (0)
#define TRUE(name, cond) check(name, (cond), #cond, 0)

static long xmmap(void *addr, u32 len, int prot, int flags, int fd, u32 pgoff)
{
    return sys6(NR_mmap2, (long)addr, len, prot, flags, fd, pgoff);
}

static s64 mono_ns(void)
{
    struct timespec32 ts;
    SYS2(NR_clock_gettime, 1, &ts);
    return (s64)ts.sec * 1000000000LL + ts.nsec;
}

static u32 atou(const char *s)
{
    u32 v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (u32)(*s++ - '0');
    return v;
}

/* ---- memory ------------------------------------------------------------ */
static void test_brk(void)
{
    u32 b0 = (u32)SYS1(NR_brk, 0);
    TRUE("brk(0) is above the program", b0 > 0x08048000u);
    EXPECT("brk grows", SYS1(NR_brk, b0 + 10000), b0 + 10000);
    volatile char *p = (char *)b0;
    p[0] = 1;
    p[5000] = (char)0xAA;
    p[9999] = 2;
    TRUE("brk memory is usable", p[0] == 1 && p[5000] == (char)0xAA && p[9999] == 2);
    EXPECT("brk shrinks", SYS1(NR_brk, b0), b0);
    EXPECT("brk(0) after shrink", SYS1(NR_brk, 0), b0);
    EXPECT("brk regrows", SYS1(NR_brk, b0 + 10000), b0 + 10000);
    TRUE("regrown brk pages are zero", p[5000] == 0 && p[9999] == 0);
    EXPECT("brk below the start fails", SYS1(NR_brk, 0x1000), b0 + 10000);
    EXPECT("brk back", SYS1(NR_brk, b0), b0);
}

static void test_mmap(void)
{
    long r = xmmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TRUE("mmap anonymous", IS_ADDR(r));
    volatile u32 *p = (u32 *)r;
    int zero = 1;
    for (int i = 0; i < 3 * PAGE / 4; i++)
        zero &= p[i] == 0;
    TRUE("mmap memory is zero", zero);
    for (int i = 0; i < 3 * PAGE / 4; i++)
        p[i] = (u32)i * 2654435761u;
    EXPECT("munmap middle page", SYS2(NR_munmap, r + PAGE, PAGE), 0);
    TRUE("pages around the hole keep data", p[5] == 5u * 2654435761u &&
         p[2 * PAGE / 4 + 7] == (2u * PAGE / 4 + 7) * 2654435761u);
    EXPECT("mprotect of a hole", SYS3(NR_mprotect, r, 3 * PAGE, PROT_READ), -ENOMEM);
    EXPECT("mprotect read-only", SYS3(NR_mprotect, r, PAGE, PROT_READ), 0);
    TRUE("read-only page still reads", p[5] == 5u * 2654435761u);
    EXPECT("mprotect read-write", SYS3(NR_mprotect, r, PAGE, PROT_READ | PROT_WRITE), 0);
    p[5] = 55;
    TRUE("writable again", p[5] == 55);
    EXPECT("mprotect none", SYS3(NR_mprotect, r, PAGE, PROT_NONE), 0);
    EXPECT("mprotect back", SYS3(NR_mprotect, r, PAGE, PROT_READ | PROT_WRITE), 0);
    TRUE("data survives PROT_NONE", p[5] == 55);
    EXPECT("mprotect unaligned", SYS3(NR_mprotect, r + 1, PAGE, PROT_READ), -EINVAL);
    long f = xmmap((void *)(r + PAGE), PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    EXPECT("mmap fixed into the hole", f, r + PAGE);
    TRUE("fixed page is zero", p[PAGE / 4 + 3] == 0);
    long m = SYS5(NR_mremap, r, 3 * PAGE, 64 * PAGE, MREMAP_MAYMOVE, 0);
    TRUE("mremap grows", IS_ADDR(m));
    volatile u32 *q = (u32 *)m;
    TRUE("mremap keeps data", q[5] == 55 && q[2 * PAGE / 4 + 7] == (2u * PAGE / 4 + 7) * 2654435761u);
    q[63 * PAGE / 4] = 7;
    TRUE("grown part is usable", q[63 * PAGE / 4] == 7 && q[40 * PAGE / 4] == 0);
    EXPECT("mremap shrinks in place", SYS5(NR_mremap, m, 64 * PAGE, PAGE, 0, 0), m);
    EXPECT("munmap", SYS2(NR_munmap, m, PAGE), 0);
    EXPECT("munmap unaligned", SYS2(NR_munmap, m + 4, PAGE), -EINVAL);
    EXPECT("munmap length 0", SYS2(NR_munmap, m, 0), -EINVAL);
    EXPECT("mmap length 0", xmmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), -EINVAL);
    EXPECT("mmap neither shared nor private", xmmap(0, PAGE, PROT_READ, MAP_ANONYMOUS, -1, 0),
           -EINVAL);
    EXPECT("mmap of a bad fd", xmmap(0, PAGE, PROT_READ, MAP_PRIVATE, 77, 0), -EBADF);
}

/* ---- files ------------------------------------------------------------- */
static void test_files(void)
{
    char buf[64], buf2[64];
    struct stat64 st;
    int fd = (int)SYS2(NR_open, file, O_RDONLY);
    TRUE("open a file", fd >= 3);
    EXPECT("fstat", SYS2(NR_fstat64, fd, &st), 0);
    TRUE("fstat says regular", (st.mode & 0170000) == 0100000);
    s64 size = st.size;
    TRUE("file has 64 bytes or more", size >= 64);
    EXPECT("lseek to the end", SYS3(NR_lseek, fd, 0, 2), size);
    EXPECT("lseek to 0", SYS3(NR_lseek, fd, 0, 0), 0);
    EXPECT("read 16", SYS3(NR_read, fd, buf, 16), 16);
    print_str("first bytes: ");
    print_buf(buf, 16);
    print_nl();
    EXPECT("lseek cur", SYS3(NR_lseek, fd, 4, 1), 20);
    EXPECT("read 8", SYS3(NR_read, fd, buf2, 8), 8);
    print_str("bytes 20..27: ");
    print_buf(buf2, 8);
    print_nl();
    s64 pos = -1;
    EXPECT("_llseek", SYS5(NR_llseek, fd, 0, 3, &pos, 0), 0);
    TRUE("_llseek result", pos == 3);
    char buf3[4];
    EXPECT("pread64", sys6(NR_pread64, fd, (long)buf3, 4, 20, 0, 0), 4);
    TRUE("pread64 bytes", memcmp(buf3, buf2, 4) == 0);
    EXPECT("pread leaves the offset", SYS3(NR_lseek, fd, 0, 1), 3);
    EXPECT("lseek past the end", SYS3(NR_lseek, fd, 0, 2), size);
    EXPECT("read at EOF", SYS3(NR_read, fd, buf, 16), 0);
    EXPECT("write to a read-only fd", SYS3(NR_write, fd, "x", 1), -EBADF);
    EXPECT("lseek negative", SYS3(NR_lseek, fd, -1, 0), -EINVAL);
    int fd2 = (int)SYS1(NR_dup, fd);
    TRUE("dup", fd2 > fd);
    SYS3(NR_lseek, fd, 10, 0);
    EXPECT("dup shares the offset", SYS3(NR_lseek, fd2, 0, 1), 10);
    EXPECT("dup2", SYS2(NR_dup2, fd, 40), 40);
    EXPECT("fcntl F_SETFD", SYS3(NR_fcntl64, 40, 2, 1), 0);
    EXPECT("fcntl F_GETFD", SYS3(NR_fcntl64, 40, 1, 0), 1);
    EXPECT("fcntl F_GETFD of the dup", SYS3(NR_fcntl64, fd, 1, 0), 0);
    long mp = xmmap(0, PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    TRUE("mmap a file", IS_ADDR(mp));
    if (IS_ADDR(mp)) {
        SYS3(NR_lseek, fd, 0, 0);
        SYS3(NR_read, fd, buf, 64);
        TRUE("mapped file bytes", memcmp((void *)mp, buf, 64) == 0);
        u32 tail = (u32)size & 0xfff;
        TRUE("bytes after EOF are zero", tail == 0 || ((char *)mp)[tail] == 0);
        SYS2(NR_munmap, mp, PAGE);
    }
    EXPECT("close", SYS1(NR_close, fd), 0);
    EXPECT("close twice", SYS1(NR_close, fd), -EBADF);
    SYS1(NR_close, fd2);
    SYS1(NR_close, 40);
    EXPECT("open missing", SYS2(NR_open, "/no/such/file", O_RDONLY), -ENOENT);
    EXPECT("open a file as a directory", SYS2(NR_open, file, O_DIRECTORY), -ENOTDIR);
    EXPECT("stat", SYS2(NR_stat64, file, &st), 0);
    TRUE("stat size", st.size == size);
    EXPECT("stat /", SYS2(NR_stat64, "/", &st), 0);
    TRUE("/ is a directory", (st.mode & 0170000) == 0040000);
    EXPECT("access R_OK", SYS2(NR_access, file, 4), 0);
    EXPECT("access missing", SYS2(NR_access, "/no/such/file", 4), -ENOENT);
    int dfd = (int)SYS2(NR_open, "/", O_RDONLY | O_DIRECTORY);
    TRUE("open /", dfd >= 0);
    char dents[512];
    long n = SYS3(NR_getdents64, dfd, dents, sizeof(dents));
    TRUE("getdents64 of /", n > 0);
    int dot = 0;
    for (long off = 0; off < n && n > 0;) {
        u16 reclen = *(u16 *)(dents + off + 16);
        if (strcmp(dents + off + 19, ".") == 0)
            dot = 1;
        if (reclen == 0)
            break;
        off += reclen;
    }
    TRUE("getdents64 lists .", dot);
    EXPECT("read a directory", SYS3(NR_read, dfd, buf, 8), -21);
    SYS1(NR_close, dfd);
    char cwd[64];
    EXPECT("getcwd", SYS2(NR_getcwd, cwd, sizeof(cwd)), 2);
    TRUE("cwd is /", cwd[0] == '/' && cwd[1] == 0);
    EXPECT("getcwd too small", SYS2(NR_getcwd, cwd, 1), -34);
    char link[256];
    long ln = SYS3(NR_readlink, "/proc/self/exe", link, sizeof(link) - 1);
    TRUE("readlink /proc/self/exe", ln > 9);
    if (ln > 0) {
        link[ln] = 0;
        TRUE("exe path is absolute", link[0] == '/');
        TRUE("exe path names sysprobe", ln >= 9 && strcmp(link + ln - 9, "/sysprobe") == 0);
    }
    EXPECT("readlink of a file", SYS3(NR_readlink, file, link, sizeof(link)), -EINVAL);
    EXPECT("readlink missing", SYS3(NR_readlink, "/no/such", link, sizeof(link)), -ENOENT);
    EXPECT("lseek on a pipe/console", SYS3(NR_lseek, 1, 0, 1), -ESPIPE);
}

/* ---- the standard streams and ioctl ------------------------------------- */
static void test_streams(void)
{
    tl_flush();
    struct iovec32 iov[3] = {{"writev ", 7}, {"in three ", 9}, {"pieces\n", 7}};
    EXPECT("writev", SYS3(NR_writev, 1, iov, 3), 23);
    char termios[64], winsize[8];
    EXPECT("ioctl TCGETS", SYS3(NR_ioctl, 1, 0x5401, termios), -ENOTTY);
    EXPECT("ioctl TIOCGWINSZ", SYS3(NR_ioctl, 1, 0x5413, winsize), -ENOTTY);
    EXPECT("ioctl of a bad fd", SYS3(NR_ioctl, 99, 0x5401, termios), -EBADF);
    EXPECT("write to a bad fd", SYS3(NR_write, 99, "x", 1), -EBADF);
    EXPECT("read from stdout", SYS3(NR_read, 1, termios, 1), -EBADF);
    EXPECT("write 0 bytes", SYS3(NR_write, 1, "", 0), 0);
    int out = (int)SYS2(NR_open, "/dev/stdout", 1);
    TRUE("open /dev/stdout", out >= 3);
    EXPECT("write through /dev/stdout", SYS3(NR_write, out, "through /dev/stdout\n", 20), 20);
    EXPECT("close it", SYS1(NR_close, out), 0);
    int null = (int)SYS2(NR_open, "/dev/null", 2);
    TRUE("open /dev/null", null >= 3);
    EXPECT("write to /dev/null", SYS3(NR_write, null, "gone", 4), 4);
    EXPECT("read from /dev/null", SYS3(NR_read, null, termios, 4), 0);
    SYS1(NR_close, null);
    int saved = (int)SYS1(NR_dup, 1);
    EXPECT("close stdout", SYS1(NR_close, 1), 0);
    EXPECT("write to closed stdout", SYS3(NR_write, 1, "x", 1), -EBADF);
    EXPECT("dup2 it back", SYS2(NR_dup2, saved, 1), 1);
    SYS1(NR_close, saved);
    EXPECT("stdout works again", SYS3(NR_write, 1, "stdout is back\n", 15), 15);
}

/* ---- the process, time, randomness ------------------------------------- */
static void test_process(void)
{
    char uts[6 * 65];
    EXPECT("uname", SYS1(NR_uname, uts), 0);
    TRUE("sysname is Linux", strcmp(uts, "Linux") == 0);
    long pid = SYS0(NR_getpid);
    TRUE("getpid", pid > 0);
    EXPECT("gettid is the pid", SYS0(NR_gettid), pid);
    EXPECT("set_tid_address returns the tid", SYS1(NR_set_tid_address, 0), pid);
    EXPECT("getuid32 == geteuid32", SYS0(NR_getuid32), SYS0(NR_geteuid32));
    u32 rl[2];
    EXPECT("ugetrlimit(STACK)", SYS2(NR_ugetrlimit, 3, rl), 0);
    TRUE("stack limit is positive", rl[0] > 0);
    char name[16];
    EXPECT("prctl PR_SET_NAME", SYS2(NR_prctl, 15, "probe-name"), 0);
    EXPECT("prctl PR_GET_NAME", SYS2(NR_prctl, 16, name), 0);
    TRUE("the name comes back", strcmp(name, "probe-name") == 0);
    u8 r1[32], r2[32];
    EXPECT("getrandom", SYS3(NR_getrandom, r1, 32, 0), 32);
    EXPECT("getrandom again", SYS3(NR_getrandom, r2, 32, 0), 32);
    TRUE("two draws differ", memcmp(r1, r2, 32) != 0);
    EXPECT("getrandom bad flags", SYS3(NR_getrandom, r1, 8, 0x100), -EINVAL);
    struct timespec32 a, b;
    EXPECT("clock_gettime MONOTONIC", SYS2(NR_clock_gettime, 1, &a), 0);
    EXPECT("clock_gettime MONOTONIC again", SYS2(NR_clock_gettime, 1, &b), 0);
    TRUE("monotonic does not go back", b.sec > a.sec || (b.sec == a.sec && b.nsec >= a.nsec));
    TRUE("nsec in range", a.nsec >= 0 && a.nsec < 1000000000);
    EXPECT("clock_gettime REALTIME", SYS2(NR_clock_gettime, 0, &a), 0);
    TRUE("realtime is after 2020", a.sec > 1577836800);
    EXPECT("clock_gettime bad clock", SYS2(NR_clock_gettime, 100, &a), -EINVAL);
    s32 tv[2];
    EXPECT("gettimeofday", SYS2(NR_gettimeofday, tv, 0), 0);
    TRUE("gettimeofday agrees with REALTIME", tv[0] - a.sec >= 0 && tv[0] - a.sec <= 2);
    TRUE("usec in range", tv[1] >= 0 && tv[1] < 1000000);
    struct timespec32 req = {0, 20 * 1000000};
    s64 t0 = mono_ns();
    EXPECT("nanosleep 20 ms", SYS2(NR_nanosleep, &req, 0), 0);
    s64 t1 = mono_ns();
    TRUE("20 ms passed", t1 - t0 >= 20000000);
    struct timespec32 bad = {0, 1000000000};
    EXPECT("nanosleep bad nsec", SYS2(NR_nanosleep, &bad, 0), -EINVAL);
    EXPECT("unknown system call", SYS0(999), -ENOSYS);
}

/* ---- bad pointers -------------------------------------------------------- */
static void test_efault(void)
{
    void *bad = (void *)16;
    void *kernel = (void *)0xC0001000u;
    EXPECT("write from a bad pointer", SYS3(NR_write, 1, bad, 4), -EFAULT);
    EXPECT("write from kernel space", SYS3(NR_write, 1, kernel, 4), -EFAULT);
    EXPECT("uname to a bad pointer", SYS1(NR_uname, bad), -EFAULT);
    EXPECT("clock_gettime to a bad pointer", SYS2(NR_clock_gettime, 1, bad), -EFAULT);
    EXPECT("open of a bad path pointer", SYS2(NR_open, bad, O_RDONLY), -EFAULT);
    EXPECT("nanosleep of a bad pointer", SYS2(NR_nanosleep, bad, 0), -EFAULT);
    EXPECT("getrandom to a bad pointer", SYS3(NR_getrandom, bad, 8, 0), -EFAULT);
    int fd = (int)SYS2(NR_open, file, O_RDONLY);
    EXPECT("read to a bad pointer", SYS3(NR_read, fd, bad, 8), -EFAULT);
    SYS1(NR_close, fd);
    long r = xmmap(0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT("uname to a read-only page", SYS1(NR_uname, r), -EFAULT);
    SYS2(NR_munmap, r, PAGE);
}

/* ---- the ways to die ----------------------------------------------------- */
static void die(const char *how)
{
    tl_flush();
    if (strcmp(how, "segv") == 0) {
        *(volatile int *)0 = 1;
    } else if (strcmp(how, "munmapped") == 0) {
        long r = xmmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *(volatile int *)r = 1;
        SYS2(NR_munmap, r, PAGE);
        *(volatile int *)r = 2;
    } else if (strcmp(how, "rowrite") == 0) {
        long r = xmmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *(volatile int *)r = 1;
        SYS3(NR_mprotect, r, PAGE, PROT_READ);
        *(volatile int *)r = 2;
    } else if (strcmp(how, "protnone") == 0) {
        long r = xmmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *(volatile int *)r = 1;
        SYS3(NR_mprotect, r, PAGE, PROT_NONE);
        (void)*(volatile int *)r;
    } else if (strcmp(how, "div0") == 0) {
        volatile int zero = 0;
        volatile int x = 7 / zero;
        (void)x;
    } else if (strcmp(how, "ud2") == 0) {
        __asm__ volatile("ud2");
    } else if (strcmp(how, "abort") == 0) {
        SYS2(NR_kill, SYS0(NR_getpid), 6);
    } else if (strcmp(how, "loop") == 0) {
        for (;;)
            __asm__ volatile("");
    }
    print_str("still alive\n");
}

static void touch_stack(u32 kb)
{
    volatile char big[1024];
    big[0] = (char)kb;
    big[1023] = (char)kb;
    if (kb > 1)
        touch_stack(kb - 1);
    __asm__ volatile("" : : "r"(big) : "memory");
}

int main(int argc, char **argv, char **envp)
{
    (void)envp;
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "all") == 0 && argc > 2) {
        file = argv[2];
        test_brk();
        test_mmap();
        test_files();
        test_streams();
        test_process();
        test_efault();
        print_str("failures: ");
        print_int(failures);
        print_nl();
        return failures;
    }
    if (strcmp(mode, "sleep") == 0 && argc > 2) {
        u32 ms = atou(argv[2]);
        struct timespec32 req = {(s32)(ms / 1000), (s32)(ms % 1000) * 1000000};
        s64 t0 = mono_ns();
        long r = SYS2(NR_nanosleep, &req, 0);
        s64 t1 = mono_ns();
        print_kv_int("nanosleep", r);
        print_str((t1 - t0) >= (s64)ms * 1000000 ? "slept enough: yes\n" : "slept enough: no\n");
        return 0;
    }
    if (strcmp(mode, "stack") == 0 && argc > 2) {
        touch_stack(atou(argv[2]));
        print_str("stack ok\n");
        return 0;
    }
    if (strcmp(mode, "heap") == 0 && argc > 2) {
        u32 len = atou(argv[2]) << 20;
        u32 b0 = (u32)SYS1(NR_brk, 0);
        if ((u32)SYS1(NR_brk, b0 + len) != b0 + len) {
            print_str("brk failed\n");
            return 1;
        }
        u32 sum = 0;
        for (u32 off = 0; off < len; off += PAGE) {
            ((volatile u32 *)(b0 + off))[0] = off;
            sum += ((volatile u32 *)(b0 + off))[0] >> 12;
        }
        print_kv_uint("pages touched, sum", sum);
        return 0;
    }
    if (strcmp(mode, "cat") == 0) {
        char buf[300];
        u32 total = 0;
        long n;
        while ((n = SYS3(NR_read, 0, buf, sizeof(buf))) > 0) {
            sys_write(1, buf, (u32)n);
            total += (u32)n;
        }
        print_kv_uint("bytes", total);
        return n < 0 ? 1 : 0;
    }
    die(mode);
    return 100;
}
