"""Port of tests/programs/intarith.c: integer edge cases (signed/unsigned
32- and 64-bit division, shifts, rotates, bit counts, byte swaps, widening
multiplies, wraparound, overflow builtins, sign/zero extension), printed
and folded into an FNV-style hash.  C semantics are spelled out: truncating
division, arithmetic right shift of negatives, modular unsigned results."""
from __future__ import annotations

from ._tinylibc import Out

M8, M16, M32, M64 = 0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
INT_MAX, INT_MIN = 0x7FFFFFFF, -0x80000000
LLONG_MAX, LLONG_MIN = 0x7FFFFFFFFFFFFFFF, -0x8000000000000000

SV = (0, 1, -1, 7, -7, 13, -13, 100, -100, INT_MAX, INT_MIN, 0x12345678, -0x12345678)
SD = (1, -1, 2, -2, 3, -3, 7, -7, 10, -10, 1000, INT_MAX, INT_MIN)
SHVAL = (0x80000001, 0xFFFE1DC7, 0x12345678, 1)
LV = (0, 1, -1, 1000000007, -1000000007, 0x123456789ABCDEF, -0x123456789ABCDEF,
      LLONG_MAX, LLONG_MIN, 0x100000000, -0x100000000, 0xFFFFFFFF)
LD = (1, -1, 3, -3, 10, -7, 0x100000000, -0x100000001, 0x7FFFFFFF, 1000000007,
      LLONG_MAX, LLONG_MIN)
BITVAL = (1, 2, 3, 0x80000000, 0xFFFFFFFF, 0x12345678, 0x00F000F0, 0xDEADBEEF,
          0x55555555, 0x00010000)
VMASK, VONE = 31, 1


def s8(v):
    v &= M8
    return v - 0x100 if v & 0x80 else v


def s16(v):
    v &= M16
    return v - 0x10000 if v & 0x8000 else v


def s32(v):
    v &= M32
    return v - 0x100000000 if v & 0x80000000 else v


def s64(v):
    v &= M64
    return v - 0x10000000000000000 if v >> 63 else v


def cdiv(a, b):
    """C division: truncate toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def cmod(a, b):
    return a - b * cdiv(a, b)


def popcount(x):
    return bin(x).count("1")


def clz32(x):
    return 32 - x.bit_length()


def ctz(x):
    return (x & -x).bit_length() - 1


def ffs(x):
    return (x & -x).bit_length()


def bswap32(x):
    return int.from_bytes((x & M32).to_bytes(4, "little"), "big")


def bswap16(x):
    return int.from_bytes((x & M16).to_bytes(2, "little"), "big")


def bswap64(x):
    return int.from_bytes((x & M64).to_bytes(8, "little"), "big")


class IntArith:
    def __init__(self):
        self.out = Out()
        self.hash = 0x811C9DC5

    # -- output + hash -----------------------------------------------------------
    def mix(self, v):
        self.hash = ((self.hash ^ (v & M32)) * 16777619) & M32

    def mix64(self, v):
        self.mix(v & M32)
        self.mix((v & M64) >> 32)

    def out_int(self, v):
        self.out.char(" ")
        self.out.int(v)
        self.mix(v)

    def out_hex(self, v):
        self.out.char(" ")
        self.out.hex32(v)
        self.mix(v)

    def out_i64(self, v):
        self.out.char(" ")
        self.out.i64(v)
        self.mix64(v)

    def out_hex64(self, v):
        self.out.char(" ")
        self.out.hex64(v)
        self.mix64(v)

    # -- sections ----------------------------------------------------------------
    def div32(self):
        o = self.out
        o.str("== signed div/mod (a: a/d a%d for each d)\n")
        for a in SV:
            o.int(a)
            o.char(":")
            for d in SD:
                if a == INT_MIN and d == -1:
                    continue
                self.out_int(cdiv(a, d))
                self.out_int(cmod(a, d))
            o.nl()
        o.str("== unsigned div/mod\n")
        for a in SV:
            a &= M32
            o.hex32(a)
            o.char(":")
            for d in SD:
                d &= M32
                self.out_hex(a // d)
                self.out_hex(a % d)
            o.nl()
        o.str("== INT_MIN special cases:")
        m = SV[10]
        for a, d, op in ((m, 1, cdiv), (m, 1, cmod), (m, 2, cdiv), (m, 3, cmod),
                         (m, -3, cmod), (m, INT_MAX, cdiv), (m, INT_MAX, cmod), (m, m, cdiv)):
            self.out_int(op(a, d))
        o.nl()

    def shifts(self):
        o = self.out
        o.str("== shifts (x<<s, (s32)x>>s, x>>s)\n")
        for x in SHVAL:
            h = 0
            sx = s32(x)
            for s in range(32):
                cnt = s & VMASK
                a = (x << cnt) & M32
                b = (sx >> cnt) & M32
                c = x >> cnt
                h = ((h * 31) ^ a ^ (b * 3) ^ (c * 7)) & M32
                if s in (0, 1, 4, 16, 31):
                    o.str("x=")
                    o.hex32(x)
                    o.str(" s=")
                    o.uint(s)
                    self.out_hex(a)
                    self.out_hex(b)
                    self.out_hex(c)
                    o.nl()
            o.str("shift hash")
            self.out_hex(h)
            o.nl()
        c, sh = -100, -30000          # volatile s8 / s16
        o.str("small shifts:")
        self.out_int(c >> 2)
        self.out_int(s32((c & M32) << 3))
        self.out_int(sh >> 5)
        self.out_int(s16((sh & M32) << 1))
        self.out_int((c & M8) >> 1)
        o.nl()

    @staticmethod
    def rol32(x, r):
        return ((x << r) | (x >> ((32 - r) & 31))) & M32

    @staticmethod
    def ror32(x, r):
        return ((x >> r) | (x << ((32 - r) & 31))) & M32

    @staticmethod
    def rol64(x, r):
        return ((x << r) | (x >> ((64 - r) & 63))) & M64

    def rotates(self):
        o = self.out
        h = 0
        o.str("== rotates\n")
        for r in range(32):
            a, b = self.rol32(BITVAL[7], r), self.ror32(BITVAL[5], r)
            h = (h * 33 + a + (b ^ 0x5A5A5A5A)) & M32
            if r % 8 == 3:
                o.str("r=")
                o.uint(r)
                self.out_hex(a)
                self.out_hex(b)
                o.nl()
        o.str("rotate hash")
        self.out_hex(h)
        o.nl()
        o.str("rol64:")
        for r in range(0, 64, 13):
            self.out_hex64(self.rol64(0x0123456789ABCDEF ^ BITVAL[0], r))
        o.nl()
        b8, b16 = 0x81, 0x8001
        r8 = ((b8 << 3) | (b8 >> 5)) & M8
        r16 = ((b16 >> 4) | (b16 << 12)) & M16
        o.str("rot8/16:")
        self.out_hex(r8)
        self.out_hex(r16)
        o.nl()

    @staticmethod
    def pop_hand(x):
        n = 0
        while x:
            x &= x - 1
            n += 1
        return n

    @staticmethod
    def clz_hand(x):
        if not x:
            return 32
        n = 0
        while not x & 0x80000000:
            x = (x << 1) & M32
            n += 1
        return n

    @staticmethod
    def ctz_hand(x):
        if not x:
            return 32
        n = 0
        while not x & 1:
            x >>= 1
            n += 1
        return n

    @staticmethod
    def bswap_hand(x):
        return ((x >> 24) | ((x >> 8) & 0xFF00) | ((x << 8) & 0xFF0000) | (x << 24)) & M32

    def bitops(self):
        o = self.out
        bad = 0
        o.str("== bit ops (x: pop clz ctz ffs parity bswap bswap16)\n")
        for x in BITVAL:
            p, c, t = popcount(x), clz32(x), ctz(x)
            o.hex32(x)
            o.char(":")
            self.out_int(p)
            self.out_int(c)
            self.out_int(t)
            self.out_int(ffs(x))
            self.out_int(p & 1)
            self.out_hex(bswap32(x))
            self.out_hex(bswap16(x))
            o.nl()
            bad += p != self.pop_hand(x)
            bad += c != self.clz_hand(x)
            bad += t != self.ctz_hand(x)
            bad += bswap32(x) != self.bswap_hand(x)
            bad += (p & 1) != (self.pop_hand(x) & 1)
        q, z = 0x0000001000000000, 0
        o.str("64-bit bit ops:")
        self.out_int(popcount(q | 0xF0F0))
        self.out_int(64 - q.bit_length())
        self.out_int(ctz(q))
        self.out_int(ffs(z))
        self.out_hex64(bswap64(0x0102030405060708 + q))
        o.nl()
        o.str("builtin vs hand mismatches")
        self.out_int(bad)
        o.nl()

    def arith64(self):
        o = self.out
        o.str("== 64-bit signed div/mod\n")
        for a in LV:
            o.i64(a)
            o.char(":")
            for d in LD:
                if a == LLONG_MIN and d == -1:
                    continue
                self.out_i64(cdiv(a, d))
                self.out_i64(cmod(a, d))
            o.nl()
        o.str("== 64-bit unsigned div/mod, mul, add, sub\n")
        for a in LV:
            a &= M64
            h = 0
            for d in LD:
                d &= M64
                h = (h * 1099511628211) & M64
                h ^= a // d
                h = (h + a % d) & M64
                h ^= (a * d) & M64
                h = (h + a + d) & M64
                h ^= (a - d) & M64
            o.hex64(a)
            o.char(":")
            self.out_hex64(h)
            self.out_hex64(a * 0x9E3779B97F4A7C15)
            o.nl()
        o.str("== 64-bit shifts (x<<s, (s64)x>>s, x>>s)\n")
        x = (LV[5] & M64) ^ 0x8000000000000000
        sx = s64(x)
        h = 0
        for s in range(64):
            cnt = s & (VMASK * 2 + 1)
            a = (x << cnt) & M64
            b = (sx >> cnt) & M64
            c = x >> cnt
            h = ((h * 31) ^ a ^ (b * 3) ^ (c * 7)) & M64
            if s % 16 == 0 or s in (31, 32, 33, 63):
                o.str("s=")
                o.uint(s)
                self.out_hex64(a)
                self.out_hex64(b)
                self.out_hex64(c)
                o.nl()
        o.str("shift64 hash")
        self.out_hex64(h)
        o.nl()
        o.str("== widening multiply\n")
        for i in range(0, len(SV), 2):
            a, b = SV[i], SV[len(SV) - 1 - i]
            o.int(a)
            o.char("*")
            o.int(b)
            o.char(":")
            self.out_i64(a * b)
            self.out_hex64((a & M32) * (b & M32))
            self.out_hex((a * b) & M32)
            o.nl()
        o.str("64-bit compare:")
        for i in range(len(LV) - 1):
            x, y = LV[i], LV[i + 1]
            self.out_int((x < y) * 4 + ((x & M64) < (y & M64)) * 2 + (x == y))
        o.nl()

    def wrap_and_ext(self):
        o = self.out
        umax, big = M32, 0x80000000
        a, b, m = INT_MAX, INT_MIN, -5
        ub, sb, pc, uw, sw = 0xF0, s8(0x80), s8(0xE9), 0x8000, s16(0xFF7F)

        o.str("== unsigned wraparound:")
        self.out_hex((umax + VONE) & M32)
        self.out_hex((0 - VONE) & M32)
        self.out_hex((umax * umax) & M32)
        self.out_hex((big * 2) & M32)
        self.out_hex((big + big) & M32)
        self.out_hex((umax + 5) & M16)
        self.out_hex((ub + 0x20) & M8)
        o.nl()

        def signed_op(exact):          # __builtin_*_overflow into an s32
            r = s32(exact)
            return int(r != exact), r

        def unsigned_op(exact):        # ... into a u32
            r = exact & M32
            return int(r != exact), r

        o.str("overflow builtins:")
        for ovf, r in (signed_op(a + 1), signed_op(b - 1), signed_op(a * 2), signed_op(m * 3)):
            self.out_int(ovf)
            self.out_int(r)
        for ovf, r in (unsigned_op(umax + VONE), unsigned_op(0 - VONE), unsigned_op(big * 2)):
            self.out_int(ovf)
            self.out_hex(r)
        o.nl()

        o.str("sign/zero extension:")
        for v in (sb, sb & M8, ub, s8(ub), pc, pc & M8, uw, s16(uw), sw, sw & M16):
            self.out_int(v)
        self.out_hex(sb & M32)
        self.out_hex64(sw & M64)
        self.out_hex64(m & M32)
        self.out_hex64(m & M64)
        o.nl()

        o.str("mixed compare (signed<, unsigned<):")
        for i in range(5):
            for j in range(5):
                x, y = SV[i * 2], SV[j * 2 + 1]
                lt, ult = int(x < y), int((x & M32) < (y & M32))
                o.char(" ")
                o.uint(lt)
                o.uint(ult)
                self.mix(lt * 2 + ult)
        o.nl()

        o.str("abs/min/max:")
        for i in range(0, len(SV), 3):
            x, y = SV[i], SV[(i + 5) % len(SV)]
            self.out_int(-x if x < 0 and x != INT_MIN else x)
            self.out_int(min(x, y))
            self.out_int(max(x, y))
            self.out_hex(max(x & M32, y & M32))
        o.nl()

    def run(self):
        self.div32()
        self.shifts()
        self.rotates()
        self.bitops()
        self.arith64()
        self.wrap_and_ext()
        self.out.str("hash")
        self.out.char(" ")
        self.out.hex32(self.hash)
        self.out.nl()
        return self.out.text(), self.hash & 0x7F


def main(argv=None) -> tuple[str, int]:
    return IntArith().run()
