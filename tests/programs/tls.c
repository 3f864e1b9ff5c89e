/*
 * tls.c - thread-local storage without libc.
 *
 * Part 1: set_thread_area (syscall 243) with entry_number = -1 installs a
 * GDT TLS descriptor whose base is a static block; %gs is loaded with
 * (entry_number * 8 + 3) and the block is read and written through
 * %gs:offset with inline asm (plain, indexed and read-modify-write
 * accesses).  The same entry is then re-pointed at a second block and %gs
 * reloaded.
 *
 * Part 2: gcc's own __thread variables (local-exec model, i386 "variant
 * II" layout: variables at negative offsets from the thread pointer, the
 * word at %gs:0 points to itself).  The TLS image is located through the
 * PT_TLS program header found via the linker-provided __ehdr_start, copied
 * into a static area, and the descriptor re-pointed at it.  This exercises
 * segment-relative addressing with wrapping (negative) offsets.
 *
 * The kernel-chosen entry number differs between kernels (12 on x86_64,
 * 6 on i386), so it is never printed.
 * Exit status: 0 if all checks passed, otherwise the number of failures.
 */
#include "tinylibc.h"

#define SYS_set_thread_area 243

struct user_desc {
    u32 entry_number;
    u32 base_addr;
    u32 limit;
    u32 seg_32bit : 1;
    u32 contents : 2;
    u32 read_exec_only : 1;
    u32 limit_in_pages : 1;
    u32 seg_not_present : 1;
    u32 useable : 1;
};

struct tls_block {
    struct tls_block *self; /* %gs:0  */
    u32 counter;            /* %gs:4  */
    u32 arr[16];            /* %gs:8  */
    char name[16];          /* %gs:72 */
};

static struct tls_block block_a, block_b;
static int failures;
static u32 entry;

static void check(const char *what, int ok)
{
    print_str(what);
    print_str(ok ? ": ok\n" : ": FAIL\n");
    if (!ok)
        failures++;
}

static long set_thread_area(struct user_desc *d)
{
    return tl_syscall1(SYS_set_thread_area, (long)d);
}

static long install(u32 entry_number, void *base)
{
    struct user_desc d;
    long r;
    memset(&d, 0, sizeof(d));
    d.entry_number = entry_number;
    d.base_addr = (u32)base;
    d.limit = 0xfffff;
    d.seg_32bit = 1;
    d.limit_in_pages = 1;
    d.useable = 1;
    r = set_thread_area(&d);
    if (r == 0)
        entry = d.entry_number;
    return r;
}

static void load_gs(u32 sel)
{
    __asm__ volatile("movl %0, %%gs" : : "r"(sel) : "memory");
}

static u32 read_gs(void)
{
    u32 v;
    __asm__ volatile("movl %%gs, %0" : "=r"(v));
    return v & 0xffff;
}

static u32 gs_load32(u32 off)
{
    u32 v;
    __asm__ volatile("movl %%gs:(%1), %0" : "=r"(v) : "r"(off) : "memory");
    return v;
}

static void gs_store32(u32 off, u32 v)
{
    __asm__ volatile("movl %1, %%gs:(%0)" : : "r"(off), "r"(v) : "memory");
}

static u32 gs_load8(u32 off)
{
    u32 v;
    __asm__ volatile("movzbl %%gs:(%1), %0" : "=r"(v) : "r"(off) : "memory");
    return v;
}

/* ---- part 2: compiler-generated TLS accesses ---- */

static __thread u32 tv_counter = 5;
static __thread char tv_msg[16] = "thread-local";
static __thread u32 tv_zero[8];  /* .tbss */
static __thread u64 tv_wide = 0x1122334455667788ULL;

typedef struct {
    u8 e_ident[16];
    u16 e_type, e_machine;
    u32 e_version, e_entry, e_phoff, e_shoff, e_flags;
    u16 e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
} Elf32_Ehdr;

typedef struct {
    u32 p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags,
        p_align;
} Elf32_Phdr;

#define PT_TLS 7

extern const Elf32_Ehdr __ehdr_start __attribute__((visibility("hidden")));

static u8 tls_area[512] __attribute__((aligned(64)));

static NOINLINE void bump_tls(u32 n)
{
    u32 i;
    for (i = 0; i < n; i++) {
        tv_counter += i;
        tv_zero[i & 7] ^= i * 0x01010101u;
    }
    tv_wide += 0x100000001ULL;
}

static NOINLINE u32 *tls_addr_of_zero(void)
{
    return &tv_zero[3]; /* forces reading the thread pointer from %gs:0 */
}

static void part2(void)
{
    const Elf32_Ehdr *eh = &__ehdr_start;
    const Elf32_Phdr *ph = (const Elf32_Phdr *)((const u8 *)eh + eh->e_phoff);
    const Elf32_Phdr *tls = NULL;
    u32 i, align, size, tp;

    print_str("-- part 2: __thread variables\n");
    for (i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_TLS)
            tls = &ph[i];
    check("PT_TLS found", tls != NULL);
    if (!tls)
        return;
    align = tls->p_align ? tls->p_align : 1;
    size = (tls->p_memsz + align - 1) & ~(align - 1);
    print_kv_uint("tls filesz", tls->p_filesz);
    print_kv_uint("tls memsz", tls->p_memsz);
    check("tls image fits", size + 64 <= sizeof(tls_area) && align <= 64);
    /* thread pointer: end of the TLS block, aligned */
    tp = ((u32)tls_area + size + align - 1) & ~(align - 1);
    memcpy((u8 *)(tp - size), (const u8 *)tls->p_vaddr, tls->p_filesz);
    memset((u8 *)(tp - size) + tls->p_filesz, 0,
           tls->p_memsz - tls->p_filesz);
    *(u32 *)tp = tp; /* TCB self pointer */

    check("re-point entry at TCB", install(entry, (void *)tp) == 0);
    load_gs(entry * 8 + 3);

    print_kv_uint("tv_counter", tv_counter);
    print_kv_str("tv_msg", tv_msg);
    print_kv_uint("tv_zero[5]", tv_zero[5]);
    check("initial values", tv_counter == 5 && tv_zero[0] == 0 &&
                                strcmp(tv_msg, "thread-local") == 0);
    bump_tls(100);
    tv_msg[0] = 'T';
    print_kv_uint("tv_counter after", tv_counter);
    print_kv_hex("tv_zero[3] after", tv_zero[3]);
    print_kv_hex("tv_zero xor", tv_zero[0] ^ tv_zero[1] ^ tv_zero[2] ^
                                    tv_zero[4] ^ tv_zero[7]);
    print_kv_str("tv_msg after", tv_msg);
    print_str("tv_wide after ");
    print_hex64(tv_wide);
    print_nl();
    check("%gs:0 holds thread pointer", gs_load32(0) == tp);
    check("&tv_zero[3] inside block",
          (u32)tls_addr_of_zero() >= tp - size && (u32)tls_addr_of_zero() < tp);
    check("write visible at address", *tls_addr_of_zero() == tv_zero[3]);
    check("counter via memory", tv_counter == 5 + 4950);
    /* the initialisation image itself must be untouched */
    {
        const u8 *img = (const u8 *)tls->p_vaddr;
        int found = 0;
        for (i = 0; i + 13 <= tls->p_filesz; i++)
            if (memcmp(img + i, "thread-local", 13) == 0)
                found = 1;
        check("template unchanged", found);
    }
}

int main(void)
{
    u32 i, sum, sel;
    long r;

    print_str("-- part 1: set_thread_area + %gs:offset\n");
    block_a.self = &block_a;
    block_a.counter = 100;
    strcpy(block_a.name, "block-A");
    block_b.self = &block_b;
    block_b.counter = 7;
    strcpy(block_b.name, "block-B");

    r = install(0xffffffffu, &block_a);
    print_kv_int("set_thread_area", (s32)r);
    check("entry allocated", r == 0 && entry != 0xffffffffu);
    if (r != 0)
        return 100;
    sel = entry * 8 + 3;
    load_gs(sel);
    check("%gs reads back selector", read_gs() == sel);

    check("%gs:0 == &block_a", gs_load32(0) == (u32)&block_a);
    print_kv_uint("%gs:4", gs_load32(4));

    /* read-modify-write through %gs */
    for (i = 0; i < 1000; i++)
        __asm__ volatile("incl %%gs:4" : : : "memory");
    __asm__ volatile("addl $23, %%gs:4" : : : "memory");
    print_kv_uint("counter after 1000 incl + 23", block_a.counter);

    /* indexed stores: arr[i] = i*i + 1 */
    for (i = 0; i < 16; i++) {
        u32 v = i * i + 1;
        __asm__ volatile("movl %1, %%gs:8(,%0,4)"
                         : : "r"(i), "r"(v) : "memory");
    }
    sum = 0;
    for (i = 0; i < 16; i++)
        sum += block_a.arr[i];
    print_kv_uint("sum(arr) via memory", sum);
    sum = 0;
    for (i = 0; i < 16; i++)
        sum += gs_load32(8 + 4 * i);
    print_kv_uint("sum(arr) via %gs", sum);

    /* byte reads of the name */
    print_str("name via %gs: ");
    for (i = 0; i < 16; i++) {
        u32 c = gs_load8(72 + i);
        if (!c)
            break;
        print_char((char)c);
    }
    print_nl();
    gs_store32(72, 0x41424344); /* "DCBA" little endian */
    print_kv_str("name after store", block_a.name);

    /* re-point the same entry at block_b; %gs must be reloaded */
    r = install(entry, &block_b);
    print_kv_int("set_thread_area(update)", (s32)r);
    load_gs(sel);
    check("%gs:0 == &block_b", gs_load32(0) == (u32)&block_b);
    print_kv_uint("%gs:4 (block_b)", gs_load32(4));
    __asm__ volatile("subl $2, %%gs:4" : : : "memory");
    print_kv_uint("block_b.counter", block_b.counter);
    print_kv_uint("block_a.counter unchanged", block_a.counter);

    /* base just past a block, negative offsets wrap around 4 GiB */
    r = install(entry, &block_b.name[0]);
    load_gs(sel);
    check("negative offset -68 (counter)", gs_load32((u32)-68) == block_b.counter);
    check("negative offset -72 (self)", gs_load32((u32)-72) == (u32)&block_b);

    part2();

    print_kv_uint("failures", (u32)failures);
    return failures;
}
