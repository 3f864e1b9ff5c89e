/*
 * tinylibc.h - minimal freestanding support library for the i386 test
 * programs.  System calls are made exclusively with "int $0x80".
 * No floating point anywhere.
 */
#ifndef TINYLIBC_H
#define TINYLIBC_H

typedef __SIZE_TYPE__ size_t;
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;

#define NULL ((void *)0)
#define INT_MAX  0x7fffffff
#define INT_MIN  (-INT_MAX - 1)
#define UINT_MAX 0xffffffffu
#define LLONG_MAX 0x7fffffffffffffffLL
#define LLONG_MIN (-LLONG_MAX - 1)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define NOINLINE __attribute__((noinline))

/* raw system calls (int $0x80) */
long tl_syscall1(long nr, long a);
long tl_syscall3(long nr, long a, long b, long c);
long sys_write(int fd, const void *buf, size_t n);
void sys_exit(int status) __attribute__((noreturn));

/* stdout is line buffered; tl_exit flushes it and exits */
void tl_flush(void);
void tl_exit(int status) __attribute__((noreturn));

/* output helpers (all write to the stdout buffer) */
void print_char(char c);
void print_str(const char *s);
void print_buf(const char *s, size_t n);
void print_nl(void);
void print_uint(u32 v);          /* decimal */
void print_int(s32 v);           /* decimal, signed */
void print_hex(u32 v);           /* hex, no leading zeros, no prefix */
void print_hex32(u32 v);         /* exactly 8 hex digits */
void print_hex8(u32 v);          /* exactly 2 hex digits */
void print_u64(u64 v);
void print_i64(s64 v);
void print_hex64(u64 v);         /* exactly 16 hex digits */
/* "label" value "\n" */
void print_kv_uint(const char *label, u32 v);
void print_kv_int(const char *label, s32 v);
void print_kv_hex(const char *label, u32 v);   /* 0x + 8 digits */
void print_kv_str(const char *label, const char *s);

/* memory / string functions */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *dst, const char *src);

#endif
