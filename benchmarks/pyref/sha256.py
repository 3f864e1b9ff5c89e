"""Port of tests/programs/sha256.c: SHA-256 (FIPS 180-4) written out, over
the standard vectors, padding-boundary lengths and a 1000-byte message
hashed one-shot and incrementally.  (hashlib is deliberately not used.)"""
from __future__ import annotations

from ._tinylibc import Out

M32 = 0xFFFFFFFF
K = (
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
)
IV = (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)


def ror(x, n):
    return ((x >> n) | (x << (32 - n))) & M32


class Sha256:
    __slots__ = ("h", "buf", "buflen", "total")

    def __init__(self):
        self.h = list(IV)
        self.buf = bytearray(64)
        self.buflen = 0
        self.total = 0


def sha256_block(s: Sha256, p, off: int) -> None:
    w = [0] * 64
    for i in range(16):
        j = off + 4 * i
        w[i] = p[j] << 24 | p[j + 1] << 16 | p[j + 2] << 8 | p[j + 3]
    for i in range(16, 64):
        x, y = w[i - 15], w[i - 2]
        s0 = ror(x, 7) ^ ror(x, 18) ^ (x >> 3)
        s1 = ror(y, 17) ^ ror(y, 19) ^ (y >> 10)
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & M32
    a, b, c, d, e, f, g, h = s.h
    for i in range(64):
        t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g))
              + K[i] + w[i]) & M32
        t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & M32
        h = g
        g = f
        f = e
        e = (d + t1) & M32
        d = c
        c = b
        b = a
        a = (t1 + t2) & M32
    hs = s.h
    for i, v in enumerate((a, b, c, d, e, f, g, h)):
        hs[i] = (hs[i] + v) & M32


def sha256_update(s: Sha256, data, off: int, n: int) -> None:
    s.total += n
    while n:
        if s.buflen == 0 and n >= 64:
            sha256_block(s, data, off)
            off += 64
            n -= 64
        else:
            take = min(64 - s.buflen, n)
            s.buf[s.buflen:s.buflen + take] = data[off:off + take]
            s.buflen += take
            off += take
            n -= take
            if s.buflen == 64:
                sha256_block(s, s.buf, 0)
                s.buflen = 0


def sha256_final(s: Sha256) -> bytes:
    bits = (s.total * 8) & 0xFFFFFFFFFFFFFFFF
    s.buf[s.buflen] = 0x80
    s.buflen += 1
    if s.buflen > 56:
        s.buf[s.buflen:64] = bytes(64 - s.buflen)
        sha256_block(s, s.buf, 0)
        s.buflen = 0
    s.buf[s.buflen:56] = bytes(56 - s.buflen)
    for i in range(8):
        s.buf[56 + i] = (bits >> (56 - 8 * i)) & 0xFF
    sha256_block(s, s.buf, 0)
    out = bytearray(32)
    for i in range(8):
        v = s.h[i]
        out[4 * i] = v >> 24
        out[4 * i + 1] = (v >> 16) & 0xFF
        out[4 * i + 2] = (v >> 8) & 0xFF
        out[4 * i + 3] = v & 0xFF
    return bytes(out)


def to_hex(d: bytes) -> str:
    hx = "0123456789abcdef"
    return "".join(hx[b >> 4] + hx[b & 15] for b in d)


def main(argv=None) -> tuple[str, int]:
    out = Out()
    failures = 0

    def hash_and_print(label, msg, n, want):
        nonlocal failures
        s = Sha256()
        sha256_update(s, msg, 0, n)
        hexd = to_hex(sha256_final(s))
        out.str(label)
        out.str(" ")
        out.str(hexd)
        if want is not None:
            if hexd == want:
                out.str(" ok")
            else:
                out.str(" MISMATCH")
                failures += 1
        out.nl()

    m448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    fox = b"The quick brown fox jumps over the lazy dog"
    hash_and_print('sha256("")', b"", 0,
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    hash_and_print('sha256("abc")', b"abc", 3,
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    hash_and_print("sha256(448 bits)", m448, len(m448),
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    hash_and_print("sha256(fox)", fox, len(fox),
                   "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592")
    big = bytearray(1000)
    for i in range(1000):
        big[i] = ord("a") + i % 26
    hash_and_print("sha256(55 bytes)", big, 55, None)
    hash_and_print("sha256(56 bytes)", big, 56, None)
    hash_and_print("sha256(64 bytes)", big, 64, None)
    for i in range(1000):
        big[i] = (i * 7 + (i >> 3)) & 0xFF
    hash_and_print("sha256(1000 bytes)", big, 1000, None)

    s = Sha256()
    sha256_update(s, big, 0, 1000)
    d1 = sha256_final(s)
    s = Sha256()
    off, step = 0, 1
    while off < 1000:
        n = min(step, 1000 - off)
        sha256_update(s, big, off, n)
        off += step
        step = step % 70 + 13
    d2 = sha256_final(s)
    out.kv_str("incremental", to_hex(d2))
    if d1 != d2:
        failures += 1
    out.kv_uint("incremental matches", int(d1 == d2))
    out.kv_uint("failures", failures)
    return out.text(), 1 if failures else 0
