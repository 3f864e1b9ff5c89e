/*
 * strings.c - string handling: reverse, tokenize, palindromes, itoa/atoi
 * in several bases, memmove with overlapping regions, strcmp ordering,
 * strstr/strchr, case conversion, character histogram and a small
 * wc-style line/word/char count.
 * Exit status: 0 if all self-checks passed, 1 otherwise.
 */
#include "tinylibc.h"

static int failures;

static void expect(const char *what, int ok)
{
    if (!ok) {
        print_str("FAIL ");
        print_str(what);
        print_nl();
        failures++;
    }
}

static void reverse(char *s)
{
    size_t n = strlen(s), i;
    for (i = 0; i < n / 2; i++) {
        char t = s[i];
        s[i] = s[n - 1 - i];
        s[n - 1 - i] = t;
    }
}

static int is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - ('a' - 'A') : c;
}

static int is_palindrome(const char *s)
{
    const char *e = s + strlen(s);
    while (s < e) {
        if (!is_alnum((u8)*s)) {
            s++;
            continue;
        }
        if (!is_alnum((u8)e[-1])) {
            e--;
            continue;
        }
        if (to_lower((u8)*s) != to_lower((u8)e[-1]))
            return 0;
        s++;
        e--;
    }
    return 1;
}

static const char *strchr_(const char *s, int c)
{
    for (;; s++) {
        if (*s == (char)c)
            return s;
        if (!*s)
            return NULL;
    }
}

static const char *strrchr_(const char *s, int c)
{
    const char *r = NULL;
    for (;; s++) {
        if (*s == (char)c)
            r = s;
        if (!*s)
            return r;
    }
}

static const char *strstr_(const char *h, const char *n)
{
    size_t nl = strlen(n);
    for (; *h; h++)
        if (strncmp(h, n, nl) == 0)
            return h;
    return nl == 0 ? h : NULL;
}

/* strtok-like tokenizer with explicit state */
static char *tokenize(char **state, const char *delim)
{
    char *s = *state, *tok;
    while (*s && strchr_(delim, *s))
        s++;
    if (!*s) {
        *state = s;
        return NULL;
    }
    tok = s;
    while (*s && !strchr_(delim, *s))
        s++;
    if (*s)
        *s++ = 0;
    *state = s;
    return tok;
}

/* itoa for bases 2..36, signed */
static char *itoa_(s32 v, char *buf, u32 base)
{
    static const char dig[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char *p = buf;
    u32 u = (u32)v;
    if (v < 0 && base == 10) {
        *p++ = '-';
        u = 0u - u;
    }
    {
        char *start = p;
        do {
            *p++ = dig[u % base];
            u /= base;
        } while (u);
        *p = 0;
        reverse(start);
    }
    return buf;
}

static s32 atoi_(const char *s)
{
    u32 v = 0;
    int neg = 0;
    while (*s == ' ' || *s == '\t' || *s == '\n')
        s++;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (u32)(*s++ - '0');
    return neg ? (s32)(0u - v) : (s32)v;
}

static int sign(int x)
{
    return (x > 0) - (x < 0);
}

static const char text[] =
    "It was the best of times, it was the worst of times,\n"
    "it was the age of wisdom, it was the age of foolishness,\n"
    "it was the epoch of belief, it was the epoch of incredulity,\n"
    "it was the season of Light, it was the season of Darkness,\n"
    "it was the spring of hope, it was the winter of despair.\n";

int main(void)
{
    char buf[256], num[40];
    char *state, *tok;
    u32 i, hist[26], lines = 0, words = 0, chars = 0, inword = 0, ntok = 0;
    static const char *pals[] = {
        "racecar", "A man, a plan, a canal: Panama!", "hello",
        "Was it a car or a cat I saw?", "", "ab", "No 'x' in Nixon",
    };
    static const s32 nums[] = {0, 1, -1, 42, -42, 255, 65535, 123456789,
                               -987654321, INT_MAX, INT_MIN};

    /* reverse */
    strcpy(buf, "Hello, emulator!");
    reverse(buf);
    print_kv_str("reverse:", buf);
    expect("reverse", strcmp(buf, "!rotalume ,olleH") == 0);
    reverse(buf);
    expect("reverse twice", strcmp(buf, "Hello, emulator!") == 0);

    /* palindromes */
    print_str("palindromes:");
    for (i = 0; i < ARRAY_SIZE(pals); i++) {
        print_char(' ');
        print_uint((u32)is_palindrome(pals[i]));
    }
    print_nl();

    /* tokenize */
    strcpy(buf, "  alpha,beta;;gamma  delta ,epsilon;");
    state = buf;
    print_str("tokens:");
    while ((tok = tokenize(&state, " ,;")) != NULL) {
        print_str(" [");
        print_str(tok);
        print_char(']');
        ntok++;
    }
    print_nl();
    expect("token count", ntok == 5);

    /* itoa / atoi round trips */
    for (i = 0; i < ARRAY_SIZE(nums); i++) {
        itoa_(nums[i], num, 10);
        print_str("itoa ");
        print_str(num);
        print_str(" hex ");
        print_str(itoa_(nums[i], num, 16));
        print_str(" b36 ");
        print_str(itoa_(nums[i], num, 36));
        print_str(" oct ");
        print_str(itoa_(nums[i], num, 8));
        print_nl();
        itoa_(nums[i], num, 10);
        expect("atoi(itoa)", atoi_(num) == nums[i]);
    }
    print_str("bin 2024 ");
    print_str(itoa_(2024, num, 2));
    print_nl();
    print_kv_int("atoi(\"  -0042xyz\")", atoi_("  -0042xyz"));
    print_kv_int("atoi(\"+17\")", atoi_("+17"));

    /* memmove with overlapping regions */
    strcpy(buf, "0123456789abcdef");
    memmove(buf + 4, buf, 10);
    print_kv_str("memmove fwd:", buf);
    expect("memmove fwd", strcmp(buf, "01230123456789ef") == 0);
    strcpy(buf, "0123456789abcdef");
    memmove(buf, buf + 5, 11);
    print_kv_str("memmove back:", buf);
    expect("memmove back", strcmp(buf, "56789abcdefbcdef") == 0);
    memset(buf, '*', 8);
    buf[8] = 0;
    print_kv_str("memset:", buf);
    memcpy(buf + 2, "ab", 2);
    print_kv_str("memcpy:", buf);

    /* comparisons */
    print_str("strcmp signs:");
    print_char(' ');
    print_int(sign(strcmp("apple", "apple")));
    print_char(' ');
    print_int(sign(strcmp("apple", "apples")));
    print_char(' ');
    print_int(sign(strcmp("b", "abc")));
    print_char(' ');
    print_int(sign(strcmp("\xff", "\x01")));
    print_char(' ');
    print_int(sign(strncmp("abcdef", "abcxyz", 3)));
    print_char(' ');
    print_int(sign(memcmp("abc\0x", "abc\0y", 5)));
    print_nl();

    /* searching */
    print_kv_int("strchr(text,'w')", (s32)(strchr_(text, 'w') - text));
    print_kv_int("strrchr(text,'w')", (s32)(strrchr_(text, 'w') - text));
    print_kv_int("strstr(text,\"epoch\")", (s32)(strstr_(text, "epoch") - text));
    print_kv_int("strstr(text,\"zebra\")", strstr_(text, "zebra") ? 1 : 0);

    /* case conversion of the first line */
    for (i = 0; text[i] != '\n'; i++)
        buf[i] = (char)to_upper((u8)text[i]);
    buf[i] = 0;
    print_kv_str("upper:", buf);

    /* histogram + wc */
    memset(hist, 0, sizeof(hist));
    for (i = 0; text[i]; i++) {
        int c = to_lower((u8)text[i]);
        chars++;
        if (c >= 'a' && c <= 'z')
            hist[c - 'a']++;
        if (c == '\n')
            lines++;
        if (c == ' ' || c == '\n' || c == '\t') {
            inword = 0;
        } else if (!inword) {
            inword = 1;
            words++;
        }
    }
    print_str("wc: ");
    print_uint(lines);
    print_char(' ');
    print_uint(words);
    print_char(' ');
    print_uint(chars);
    print_nl();
    expect("wc", lines == 5 && words == 60 && chars == strlen(text));
    print_str("histogram:");
    for (i = 0; i < 26; i++)
        if (hist[i]) {
            print_char(' ');
            print_char((char)('a' + i));
            print_uint(hist[i]);
        }
    print_nl();

    print_kv_uint("failures", (u32)failures);
    return failures ? 1 : 0;
}
