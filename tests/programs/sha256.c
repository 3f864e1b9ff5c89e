/*
 * sha256.c - SHA-256 (FIPS 180-4) of several messages, including the
 * standard test vectors "", "abc" and the 448-bit two-block message, plus
 * a 1000-byte generated message hashed one-shot and incrementally.
 * Exit status: 0 if the known vectors and the incremental check matched.
 */
#include "tinylibc.h"

struct sha256 {
    u32 h[8];
    u8 buf[64];
    u32 buflen;
    u64 total;
};

static const u32 K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const u8 *p)
{
    u32 w[64], a, b, c, d, e, f, g, h, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (u32)p[4 * i] << 24 | (u32)p[4 * i + 1] << 16 |
               (u32)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        u32 s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        u32 s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
             K[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) +
             ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
    static const u32 iv[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(s->h, iv, sizeof(iv));
    s->buflen = 0;
    s->total = 0;
}

static void sha256_update(struct sha256 *s, const void *data, size_t n)
{
    const u8 *p = data;
    s->total += n;
    while (n) {
        if (s->buflen == 0 && n >= 64) {
            sha256_block(s, p);
            p += 64;
            n -= 64;
        } else {
            size_t take = 64 - s->buflen;
            if (take > n)
                take = n;
            memcpy(s->buf + s->buflen, p, take);
            s->buflen += take;
            p += take;
            n -= take;
            if (s->buflen == 64) {
                sha256_block(s, s->buf);
                s->buflen = 0;
            }
        }
    }
}

static void sha256_final(struct sha256 *s, u8 out[32])
{
    u64 bits = s->total * 8;
    int i;
    s->buf[s->buflen++] = 0x80;
    if (s->buflen > 56) {
        memset(s->buf + s->buflen, 0, 64 - s->buflen);
        sha256_block(s, s->buf);
        s->buflen = 0;
    }
    memset(s->buf + s->buflen, 0, 56 - s->buflen);
    for (i = 0; i < 8; i++)
        s->buf[56 + i] = (u8)(bits >> (56 - 8 * i));
    sha256_block(s, s->buf);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (u8)(s->h[i] >> 24);
        out[4 * i + 1] = (u8)(s->h[i] >> 16);
        out[4 * i + 2] = (u8)(s->h[i] >> 8);
        out[4 * i + 3] = (u8)s->h[i];
    }
}

static void to_hex(const u8 *d, char *out)
{
    static const char hx[] = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = 0;
}

static int failures;

static void hash_and_print(const char *label, const void *msg, size_t n,
                           const char *want)
{
    struct sha256 s;
    u8 d[32];
    char hex[65];
    sha256_init(&s);
    sha256_update(&s, msg, n);
    sha256_final(&s, d);
    to_hex(d, hex);
    print_str(label);
    print_str(" ");
    print_str(hex);
    if (want) {
        if (strcmp(hex, want) == 0) {
            print_str(" ok");
        } else {
            print_str(" MISMATCH");
            failures++;
        }
    }
    print_nl();
}

static u8 big[1000];

int main(void)
{
    static const char m448[] =
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char fox[] = "The quick brown fox jumps over the lazy dog";
    struct sha256 s;
    u8 d1[32], d2[32];
    char hex[65];
    size_t i, off, step;

    hash_and_print("sha256(\"\")", "", 0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hash_and_print("sha256(\"abc\")", "abc", 3,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hash_and_print("sha256(448 bits)", m448, strlen(m448),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    hash_and_print("sha256(fox)", fox, strlen(fox),
        "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
    /* lengths around the padding boundary */
    for (i = 0; i < 1000; i++)
        big[i] = (u8)('a' + i % 26);
    hash_and_print("sha256(55 bytes)", big, 55, NULL);
    hash_and_print("sha256(56 bytes)", big, 56, NULL);
    hash_and_print("sha256(64 bytes)", big, 64, NULL);
    for (i = 0; i < 1000; i++)
        big[i] = (u8)(i * 7 + (i >> 3));
    hash_and_print("sha256(1000 bytes)", big, 1000, NULL);

    /* incremental hashing in varying chunk sizes must match one-shot */
    sha256_init(&s);
    sha256_update(&s, big, 1000);
    sha256_final(&s, d1);
    sha256_init(&s);
    for (off = 0, step = 1; off < 1000; off += step, step = step % 70 + 13) {
        size_t n = step;
        if (off + n > 1000)
            n = 1000 - off;
        sha256_update(&s, big + off, n);
    }
    sha256_final(&s, d2);
    to_hex(d2, hex);
    print_kv_str("incremental", hex);
    if (memcmp(d1, d2, 32) != 0)
        failures++;
    print_kv_uint("incremental matches", (u32)(memcmp(d1, d2, 32) == 0));

    print_kv_uint("failures", (u32)failures);
    return failures ? 1 : 0;
}
