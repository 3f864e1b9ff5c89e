/*
 * crc32.c - table-driven CRC-32 (IEEE 802.3, reflected poly 0xEDB88320)
 * and CRC-32C (Castagnoli, 0x82F63B78) over known test vectors and a few
 * KB of LCG-generated data.  Cross-checks the table-driven result against
 * a bit-at-a-time implementation and an incremental (chunked) update.
 * Exit status: 0 if every self-check passed, 1 otherwise.
 */
#include "tinylibc.h"

static u32 table_ieee[256];
static u32 table_c[256];
static u8 data[4096];
static int failures;

static void make_table(u32 *t, u32 poly)
{
    u32 i, c;
    int k;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? poly ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
}

static u32 crc_update(const u32 *t, u32 crc, const u8 *p, size_t n)
{
    crc = ~crc;
    while (n--)
        crc = t[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static NOINLINE u32 crc_bitwise(u32 poly, const u8 *p, size_t n)
{
    u32 crc = 0xffffffffu;
    int k;
    while (n--) {
        crc ^= *p++;
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (poly & (0u - (crc & 1)));
    }
    return ~crc;
}

static void check(const char *what, u32 got, u32 want)
{
    print_str(what);
    print_str(" = ");
    print_hex32(got);
    if (got == want) {
        print_str(" ok\n");
    } else {
        print_str(" MISMATCH (want ");
        print_hex32(want);
        print_str(")\n");
        failures++;
    }
}

int main(void)
{
    static const char v1[] = "123456789";
    static const char v2[] = "The quick brown fox jumps over the lazy dog";
    u32 x = 12345, crc, inc;
    size_t i, off, chunk;

    make_table(table_ieee, 0xEDB88320u);
    make_table(table_c, 0x82F63B78u);
    print_kv_hex("table_ieee[1]", table_ieee[1]);
    print_kv_hex("table_ieee[255]", table_ieee[255]);
    print_kv_hex("table_c[128]", table_c[128]);

    check("crc32(\"\")", crc_update(table_ieee, 0, (const u8 *)"", 0), 0);
    check("crc32(\"123456789\")",
          crc_update(table_ieee, 0, (const u8 *)v1, strlen(v1)), 0xCBF43926u);
    check("crc32(fox)",
          crc_update(table_ieee, 0, (const u8 *)v2, strlen(v2)), 0x414FA339u);
    check("crc32c(\"123456789\")",
          crc_update(table_c, 0, (const u8 *)v1, strlen(v1)), 0xE3069283u);

    for (i = 0; i < sizeof(data); i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (u8)(x >> 16);
    }
    print_kv_hex("data checksum word", data[0] | data[1] << 8 |
                 data[2] << 16 | (u32)data[4095] << 24);

    crc = crc_update(table_ieee, 0, data, sizeof(data));
    print_kv_hex("crc32(data[4096])", crc);
    check("crc32 bitwise", crc_bitwise(0xEDB88320u, data, sizeof(data)), crc);

    /* incremental update in odd-sized chunks must match one-shot */
    inc = 0;
    chunk = 1;
    for (off = 0; off < sizeof(data); off += chunk, chunk = chunk * 3 % 97 + 1) {
        size_t n = chunk;
        if (off + n > sizeof(data))
            n = sizeof(data) - off;
        inc = crc_update(table_ieee, inc, data + off, n);
    }
    check("crc32 chunked", inc, crc);

    print_kv_hex("crc32(data[0..1000])", crc_update(table_ieee, 0, data, 1000));
    print_kv_hex("crc32(data[1000..4096])",
                 crc_update(table_ieee, 0, data + 1000, sizeof(data) - 1000));
    crc = crc_update(table_c, 0, data, sizeof(data));
    print_kv_hex("crc32c(data[4096])", crc);
    check("crc32c bitwise", crc_bitwise(0x82F63B78u, data, 2048),
          crc_update(table_c, 0, data, 2048));

    /* first 256 bytes of every 1 KiB */
    for (off = 0; off < sizeof(data); off += 1024) {
        print_str("block ");
        print_uint((u32)off);
        print_str(" crc32 ");
        print_hex32(crc_update(table_ieee, 0, data + off, 256));
        print_nl();
    }

    print_kv_uint("failures", (u32)failures);
    return failures ? 1 : 0;
}
