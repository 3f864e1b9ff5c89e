"""Port of tests/programs/crc32.c: table-driven CRC-32 / CRC-32C over test
vectors and 4 KiB of LCG data, cross-checked bitwise and chunked."""
from __future__ import annotations

from ._tinylibc import Out

M32 = 0xFFFFFFFF


def make_table(poly: int) -> list[int]:
    t = [0] * 256
    for i in range(256):
        c = i
        for _ in range(8):
            c = poly ^ (c >> 1) if c & 1 else c >> 1
        t[i] = c
    return t


def crc_update(t: list[int], crc: int, data, start: int, n: int) -> int:
    crc = ~crc & M32
    for i in range(start, start + n):
        crc = t[(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
    return ~crc & M32


def crc_bitwise(poly: int, data, n: int) -> int:
    crc = 0xFFFFFFFF
    for i in range(n):
        crc ^= data[i]
        for _ in range(8):
            crc = (crc >> 1) ^ (poly & ((0 - (crc & 1)) & M32))
    return ~crc & M32


def main(argv=None) -> tuple[str, int]:
    out = Out()
    failures = 0

    def check(what, got, want):
        nonlocal failures
        out.str(what)
        out.str(" = ")
        out.hex32(got)
        if got == want:
            out.str(" ok\n")
        else:
            out.str(" MISMATCH (want ")
            out.hex32(want)
            out.str(")\n")
            failures += 1

    v1 = b"123456789"
    v2 = b"The quick brown fox jumps over the lazy dog"
    table_ieee = make_table(0xEDB88320)
    table_c = make_table(0x82F63B78)
    out.kv_hex("table_ieee[1]", table_ieee[1])
    out.kv_hex("table_ieee[255]", table_ieee[255])
    out.kv_hex("table_c[128]", table_c[128])

    check('crc32("")', crc_update(table_ieee, 0, b"", 0, 0), 0)
    check('crc32("123456789")', crc_update(table_ieee, 0, v1, 0, len(v1)), 0xCBF43926)
    check("crc32(fox)", crc_update(table_ieee, 0, v2, 0, len(v2)), 0x414FA339)
    check('crc32c("123456789")', crc_update(table_c, 0, v1, 0, len(v1)), 0xE3069283)

    size = 4096
    data = bytearray(size)
    x = 12345
    for i in range(size):
        x = (x * 1103515245 + 12345) & M32
        data[i] = (x >> 16) & 0xFF
    out.kv_hex("data checksum word",
               data[0] | data[1] << 8 | data[2] << 16 | data[4095] << 24)

    crc = crc_update(table_ieee, 0, data, 0, size)
    out.kv_hex("crc32(data[4096])", crc)
    check("crc32 bitwise", crc_bitwise(0xEDB88320, data, size), crc)

    inc = 0
    chunk = 1
    off = 0
    while off < size:
        n = chunk
        if off + n > size:
            n = size - off
        inc = crc_update(table_ieee, inc, data, off, n)
        off += chunk
        chunk = chunk * 3 % 97 + 1
    check("crc32 chunked", inc, crc)

    out.kv_hex("crc32(data[0..1000])", crc_update(table_ieee, 0, data, 0, 1000))
    out.kv_hex("crc32(data[1000..4096])", crc_update(table_ieee, 0, data, 1000, size - 1000))
    crc = crc_update(table_c, 0, data, 0, size)
    out.kv_hex("crc32c(data[4096])", crc)
    check("crc32c bitwise", crc_bitwise(0x82F63B78, data, 2048),
          crc_update(table_c, 0, data, 0, 2048))

    for off in range(0, size, 1024):
        out.str("block ")
        out.uint(off)
        out.str(" crc32 ")
        out.hex32(crc_update(table_ieee, 0, data, off, 256))
        out.nl()

    out.kv_uint("failures", failures)
    return out.text(), 1 if failures else 0
