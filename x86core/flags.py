"""EFLAGS, computed lazily.

Arithmetic instructions do not compute CF PF AF ZF SF OF; they leave
(op, res, a, b): which operation at which size, its masked result and its
inputs.  The flags are derived only when something reads them (Jcc, ADC,
PUSHF, an interrupt frame).  Where the block compiler knows at compile time
which operation produced the flags, it emits the condition directly
(`cmp; jl` becomes a signed comparison of the two inputs), so most
conditions never touch the functions here.

Undefined flags follow what Intel processors do as Unicorn/QEMU model them:
AF = 0 after logic ops, shifts, MUL and IMUL; OF after a multi-bit shift as
for a 1-bit shift of its last step, after RCL/RCR the sign change of the
whole rotate (semantics.py documents each; tests/x86core/
test_executor_unicorn.py lists the few deliberate differences).
"""
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL, NT, RF, VM, AC, VIF, VIP, ID = 0x3000, 0x4000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000
ARITH = CF | PF | AF | ZF | SF | OF
RESERVED_ONE = 0x2
# Bits software can ever see set on an i386-P6 class processor (VIF/VIP/ID writable from ring 0).
DEFINED = ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID

# Operation kinds; op = kind | size_in_bytes << 4.
K_ADD = 0       # res = a + b           CF = res < a
K_ADC = 1       # res = a + b + 1       CF = res <= a
K_SUB = 2       # res = a - b           CF = a < b
K_SBB = 3       # res = a - b - 1       CF = a <= b
K_LOGIC = 4     # CF = OF = 0, AF = 0
K_INC = 5       # b = CF carried through; OF = res == sign; AF = low nibble wrapped
K_DEC = 6       # b = CF carried through
K_NEG = 7       # res = -a              CF = a != 0
K_RAW = 8       # a = the six arithmetic flags themselves (after POPF, SAHF, MUL, shifts...)
K_RESULT = 9    # ZF SF PF from res, CF/OF/AF from b's bits (shifts, IMUL ...)
K_MERGE = 10    # res = the lazy flags before (a tuple, never itself K_MERGE); b's CF and
                # OF replace theirs (rotates: the old flags are not evaluated to change two)
K_CMP = 11      # K_SUB whose res is not computed (CMP: nothing else needs a - b, and a
                # reader of ZF or of the orderings needs only a and b); res is junk

PARITY = bytes(0 if bin(i).count("1") & 1 else PF for i in range(256))
SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000}
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


def eval_flags(op: int, res: int, a: int, b: int) -> int:
    """The six arithmetic flags for a lazy (op, res, a, b)."""
    kind = op & 15
    if kind == K_RAW:
        return a
    if kind == K_MERGE:
        return eval_flags(*res) & ~(CF | OF) | b & (CF | OF)
    size = op >> 4
    sign = SIGN[size]
    if kind == K_CMP:
        kind, res = K_SUB, (a - b) & MASK[size]
    f = PARITY[res & 0xFF]
    if res == 0:
        f |= ZF
    if res & sign:
        f |= SF
    if kind == K_LOGIC:
        return f
    if kind == K_RESULT:
        return f | (b & (CF | OF | AF))
    if kind == K_ADD:
        if res < a:
            f |= CF
        f |= (a ^ b ^ res) & AF
        if (a ^ res) & (b ^ res) & sign:
            f |= OF
    elif kind == K_ADC:
        if res <= a:
            f |= CF
        f |= (a ^ b ^ res) & AF
        if (a ^ res) & (b ^ res) & sign:
            f |= OF
    elif kind == K_SUB:
        if a < b:
            f |= CF
        f |= (a ^ b ^ res) & AF
        if (a ^ b) & (a ^ res) & sign:
            f |= OF
    elif kind == K_SBB:
        if a <= b:
            f |= CF
        f |= (a ^ b ^ res) & AF
        if (a ^ b) & (a ^ res) & sign:
            f |= OF
    elif kind == K_INC:
        f |= b & CF
        if res & 0xF == 0:
            f |= AF
        if res == sign:
            f |= OF
    elif kind == K_DEC:
        f |= b & CF
        if res & 0xF == 0xF:
            f |= AF
        if res == sign - 1:
            f |= OF
    elif kind == K_NEG:
        if res:
            f |= CF
        f |= (a ^ res) & AF
        if res == sign:
            f |= OF
    return f


def carry(op: int, res: int, a: int, b: int) -> int:
    """CF alone, 0 or 1: what ADC, SBB, RCL, RCR, INC and DEC need."""
    kind = op & 15
    if kind == K_ADD:
        return 1 if res < a else 0
    if kind == K_SUB or kind == K_CMP:
        return 1 if a < b else 0
    if kind == K_LOGIC:
        return 0
    if kind == K_RAW:
        return a & CF
    if kind == K_ADC:
        return 1 if res <= a else 0
    if kind == K_SBB:
        return 1 if a <= b else 0
    if kind == K_NEG:
        return 1 if res else 0
    return b & CF       # K_INC, K_DEC, K_RESULT, K_MERGE


# CF as a Python expression over the locals fr, fa, fb, by the kind that
# produced the flags, where it needs no call (the others: carry()).  In the
# order the threaded tier tests them: most often first.
CARRY_SOURCES = {
    K_CMP: "(1 if fa < fb else 0)",
    K_SUB: "(1 if fa < fb else 0)",
    K_LOGIC: "0",
    K_ADD: "(1 if fr < fa else 0)",
    K_INC: "(fb & 1)", K_DEC: "(fb & 1)", K_RESULT: "(fb & 1)", K_MERGE: "(fb & 1)",
    K_RAW: "(fa & 1)",
}


def condition(cc: int, op: int, res: int, a: int, b: int) -> bool:
    """Condition code cc (0-15, Intel order O NO B AE E NE BE A S NS P NP L GE LE G)."""
    f = eval_flags(op, res, a, b)
    base = cc >> 1
    if base == 0:
        t = f & OF
    elif base == 1:
        t = f & CF
    elif base == 2:
        t = f & ZF
    elif base == 3:
        t = f & (CF | ZF)
    elif base == 4:
        t = f & SF
    elif base == 5:
        t = f & PF
    elif base == 6:
        t = bool(f & SF) != bool(f & OF)
    else:
        t = (f & ZF) or bool(f & SF) != bool(f & OF)
    return (not t) if cc & 1 else bool(t)


def condition_source(cc: int, kind: int, size: int) -> str | None:
    """A Python expression over the locals fr, fa, fb for condition cc after an
    operation of `kind` known at compile time; None where only the generic
    `condition()` will do."""
    positive = _CONDITION_SOURCES.get((kind, cc >> 1))
    if kind == K_MERGE:
        # fr is the flags before as a tuple: only CF and OF are at hand.
        if positive is None:
            return None
        return f"not ({positive})" if cc & 1 else f"({positive})"
    sign = SIGN[size]
    if kind == K_RAW:
        # fa holds the flags themselves; fr is not a result here.
        positive = _RAW_CONDITIONS[cc >> 1]
    elif positive is None:
        if cc >> 1 == 2:
            positive = "fr == 0"
        elif cc >> 1 == 4:
            positive = f"fr & {sign:#x}"
        elif cc >> 1 == 5:
            positive = "PARITY[fr & 0xFF]"
        else:
            return None
    positive = positive.replace("SIGN", f"{sign:#x}")
    return f"not ({positive})" if cc & 1 else f"({positive})"


_RAW_CONDITIONS = (
    f"fa & {OF:#x}", f"fa & {CF:#x}", f"fa & {ZF:#x}", f"fa & {CF | ZF:#x}",
    f"fa & {SF:#x}", f"fa & {PF:#x}",
    f"(fa & {SF:#x} == 0) != (fa & {OF:#x} == 0)",
    f"fa & {ZF:#x} or (fa & {SF:#x} == 0) != (fa & {OF:#x} == 0)",
)

_CONDITION_SOURCES = {
    # after SUB/CMP: unsigned and signed orderings of the inputs themselves
    (K_SUB, 1): "fa < fb",
    (K_SUB, 3): "fa <= fb",
    (K_SUB, 6): "(fa ^ SIGN) < (fb ^ SIGN)",
    (K_SUB, 7): "(fa ^ SIGN) <= (fb ^ SIGN)",
    (K_SUB, 0): "(fa ^ fb) & (fa ^ fr) & SIGN",
    # after CMP: the same, with a - b where SUB has it in fr
    (K_CMP, 0): "(fa ^ fb) & (fa ^ (fa - fb)) & SIGN",
    (K_CMP, 1): "fa < fb",
    (K_CMP, 2): "fa == fb",
    (K_CMP, 3): "fa <= fb",
    (K_CMP, 4): "(fa - fb) & SIGN",
    (K_CMP, 5): "PARITY[(fa - fb) & 0xFF]",
    (K_CMP, 6): "(fa ^ SIGN) < (fb ^ SIGN)",
    (K_CMP, 7): "(fa ^ SIGN) <= (fb ^ SIGN)",
    # after AND/OR/XOR/TEST: CF = OF = 0
    (K_LOGIC, 0): "False",
    (K_LOGIC, 1): "False",
    (K_LOGIC, 3): "fr == 0",
    (K_LOGIC, 6): "fr & SIGN",
    (K_LOGIC, 7): "fr == 0 or fr & SIGN",
    # after a rotate: CF and OF in b
    (K_MERGE, 0): f"fb & {OF:#x}",
    (K_MERGE, 1): f"fb & {CF:#x}",
    # after ADD: carry out is a wrapped result
    (K_ADD, 1): "fr < fa",
    (K_ADD, 3): "fr < fa or fr == 0",
}
