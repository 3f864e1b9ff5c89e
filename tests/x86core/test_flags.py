"""The lazy flags of flags.py against a plain reference computation.

For each operation kind at 8, 16 and 32 bits the reference computes the six
arithmetic flags the way the Intel SDM defines them (carries and overflows
from the full-precision integer result), and every lazy path must agree:
eval_flags, carry, condition, and condition_source's compiled expressions.
"""
from __future__ import annotations

from hypothesis import given, strategies as st

from x86core import flags as F

SIZES = (1, 2, 4)
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
BITS = {1: 8, 2: 16, 4: 32}
# Intel order: O NO B AE E NE BE A S NS P NP L GE LE G.
CONDITIONS = range(16)


def signed(value: int, size: int) -> int:
    sign = 1 << (BITS[size] - 1)
    return (value ^ sign) - sign


def fits(value: int, size: int) -> bool:
    half = 1 << (BITS[size] - 1)
    return -half <= value < half


def result_flags(res: int, size: int) -> int:
    f = 0
    if res == 0:
        f |= F.ZF
    if res >> (BITS[size] - 1) & 1:
        f |= F.SF
    if bin(res & 0xFF).count("1") % 2 == 0:
        f |= F.PF
    return f


def reference(kind: str, size: int, a: int, b: int, carry_in: int) -> tuple[int, int, int, int, int]:
    """(flags, lazy op, res, lazy a, lazy b) for one operation as the executor records it."""
    mask = MASK[size]
    if kind in ("add", "adc"):
        c = carry_in if kind == "adc" else 0
        full = a + b + c
        res = full & mask
        f = result_flags(res, size)
        f |= F.CF if full > mask else 0
        f |= F.AF if (a & 0xF) + (b & 0xF) + c > 0xF else 0
        f |= F.OF if not fits(signed(a, size) + signed(b, size) + c, size) else 0
        op = (F.K_ADC if c else F.K_ADD) | size << 4
        return f, op, res, a, b
    if kind in ("sub", "sbb"):
        c = carry_in if kind == "sbb" else 0
        res = (a - b - c) & mask
        f = result_flags(res, size)
        f |= F.CF if a < b + c else 0
        f |= F.AF if (a & 0xF) < (b & 0xF) + c else 0
        f |= F.OF if not fits(signed(a, size) - signed(b, size) - c, size) else 0
        op = (F.K_SBB if c else F.K_SUB) | size << 4
        return f, op, res, a, b
    if kind == "cmp":
        # K_CMP records no result: junk where SUB has a - b must not matter.
        f, _, res, a, b = reference("sub", size, a, b, 0)
        return f, F.K_CMP | size << 4, res ^ 0x5A5A5A5A, a, b
    if kind in ("and", "or", "xor"):
        res = {"and": a & b, "or": a | b, "xor": a ^ b}[kind]
        # CF = OF = 0; AF is undefined and the executor clears it (as QEMU does).
        return result_flags(res, size), F.K_LOGIC | size << 4, res, a, b
    if kind == "inc":
        res = (a + 1) & mask
        f = result_flags(res, size) | carry_in     # CF is not affected
        f |= F.AF if a & 0xF == 0xF else 0
        f |= F.OF if not fits(signed(a, size) + 1, size) else 0
        return f, F.K_INC | size << 4, res, a, carry_in
    if kind == "dec":
        res = (a - 1) & mask
        f = result_flags(res, size) | carry_in
        f |= F.AF if a & 0xF == 0 else 0
        f |= F.OF if not fits(signed(a, size) - 1, size) else 0
        return f, F.K_DEC | size << 4, res, a, carry_in
    if kind == "neg":
        res = -a & mask
        f = result_flags(res, size)
        f |= F.CF if a else 0
        f |= F.AF if a & 0xF else 0
        f |= F.OF if not fits(-signed(a, size), size) else 0
        return f, F.K_NEG | size << 4, res, a, 0
    raise AssertionError(kind)


def condition_reference(cc: int, f: int) -> bool:
    cf, zf, sf, of, pf = (bool(f & x) for x in (F.CF, F.ZF, F.SF, F.OF, F.PF))
    base = (of, cf, zf, cf or zf, sf, pf, sf != of, zf or sf != of)[cc >> 1]
    return not base if cc & 1 else base


_compiled: dict = {}


def compiled(cc: int, kind: int, size: int):
    key = (cc, kind, size)
    if key not in _compiled:
        src = F.condition_source(cc, kind, size)
        _compiled[key] = None if src is None else compile(src, "<cond>", "eval")
    return _compiled[key]


def check(f, op, res, a, b):
    assert F.eval_flags(op, res, a, b) == f, f"eval_flags {F.eval_flags(op, res, a, b):#x} != {f:#x}"
    assert F.carry(op, res, a, b) == f & F.CF
    kind, size = op & 15, op >> 4
    if kind in F.CARRY_SOURCES:
        assert eval(F.CARRY_SOURCES[kind], {}, {"fr": res, "fa": a, "fb": b}) == f & F.CF
    for cc in CONDITIONS:
        want = condition_reference(cc, f)
        assert F.condition(cc, op, res, a, b) == want, f"condition {cc}"
        code = compiled(cc, kind, size)
        if code is not None:
            got = eval(code, {"PARITY": F.PARITY}, {"fr": res, "fa": a, "fb": b, "fo": op})
            assert bool(got) == want, f"condition_source({cc}, {kind}, {size}) = {F.condition_source(cc, kind, size)}"


def operand(size):
    edge = st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                            0xFFFFFFFF, 0xF, 0x10])
    return st.one_of(edge, st.integers(0, MASK[size])).map(lambda v: v & MASK[size])


@st.composite
def operation(draw):
    kind = draw(st.sampled_from(["add", "adc", "sub", "sbb", "cmp", "and", "or", "xor", "inc", "dec",
                                 "neg"]))
    size = draw(st.sampled_from(SIZES))
    return kind, size, draw(operand(size)), draw(operand(size)), draw(st.integers(0, 1))


@given(operation())
def test_lazy_flags_match_reference(op):
    kind, size, a, b, carry_in = op
    check(*reference(kind, size, a, b, carry_in))


@given(st.integers(0, 0xFFF).map(lambda v: v & F.ARITH))
def test_raw_flags(bits):
    """K_RAW carries the flags themselves (after POPF, SAHF, rotates ...)."""
    check(bits, F.K_RAW | 4 << 4, 0, bits, 0)


@given(st.sampled_from(SIZES).flatmap(lambda s: st.tuples(st.just(s), operand(s))),
       st.sampled_from([0, F.CF | F.OF]), st.booleans())
def test_result_flags(size_res, cf_of, af):
    """K_RESULT: SF ZF PF from the result, CF OF AF from b (MUL, IMUL, shifts)."""
    size, res = size_res
    b = cf_of | (F.AF if af else 0)
    check(result_flags(res, size) | b, F.K_RESULT | size << 4, res, 0, b)


@given(operation(), st.integers(0, 1), st.integers(0, 1))
def test_merged_flags(op, cf, of):
    """K_MERGE (rotates): the flags before, kept whole, with CF and OF replaced."""
    before, *lazy = reference(*op)
    check(before & ~(F.CF | F.OF) | cf | of << 11, F.K_MERGE, tuple(lazy), 0, cf | of << 11)


def test_exhaustive_8bit_add_sub():
    """Every 8-bit ADD/SUB/ADC/SBB/CMP input pair, through every lazy path."""
    for kind in ("add", "sub", "adc", "sbb", "cmp"):
        for a in range(256):
            for b in range(0, 256, 7):
                check(*reference(kind, 1, a, b, 1))
