"""The zeroth tier: threaded code for code that has run only a few times.

A block the cache meets for the first time is not compiled.  Each of its
instructions becomes a handler made by a handler factory, and the block is a
tuple of those handlers that a small runner calls in turn.  Building one
costs the decoding (about 5 us an instruction) and 3 us more for the plan and
the handlers, where generating and compiling the block's Python source costs
about 40 us an instruction; compile() was most of the cost of code that runs
only a few times (a program's set-up, its one-off paths, the first
iterations of everything).  A threaded block counts the
instructions it retires and, after HOT_INSNS of them, asks the block cache
to compile its region (the second tier, blocks.py).

Handlers keep the state where compiled code keeps it between blocks: the
registers in cpu.regs, the arithmetic flags as cpu.lazy (flags.py).  Within
a handler every access that may fault comes before any change of state, so
an exception leaves the state of the instruction's start, and the runner's
frame tells which handler raised it (BlockCache.unwind).

A handler's code depends only on the instruction's shape: the mnemonic, the
kinds and sizes of its operands, the form of its address, whether its flags
are observed, and the branch fused into it.  The numbers (registers,
displacement, immediate, next EIP, branch target) are the factory's
arguments.  The shapes are a closed set (every_shape: 6,356) and their code
is compiled ahead, once per installation (handler_library.py); a program
meets a few hundred of them.  An
instruction outside this subset (system instructions, string instructions,
segment overrides, 16-bit addressing, anything rare) ends the threaded block
before it, and is compiled as the first tier from there.  Semantics and flag
conventions are those of semantics.py (the SDM's), held to the same Unicorn
differential tests.
"""
from __future__ import annotations

import builtins
import marshal
import re
from types import CodeType, FunctionType

from . import flags as F
from . import handler_library
from .codegen import ALU_OPS, ARITH_KIND, MASKS, SIGNS, dword_index, page_address, signed32
from .instruction import IMM, MEM, REG, REL, Instruction

HOT_INSNS = 2048        # instructions a threaded block retires before its region is compiled

# Names a handler's code may use.  The first group is bound per CPU
# (blocks._runtime); the second is the instruction's numbers (plan()).
_ENV = ("R", "cpu", "TR", "TW", "M", "W32", "RA", "WA", "RS", "WS", "RD2", "WR2",
        "CARRY", "COND", "DIVERR", "PARITY")
_OPERAND = ("G0", "H0", "K0", "G1", "H1", "K1", "I0", "I1", "I2", "B", "X", "S", "D", "N",
            "NXT", "TGT")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SHIFTS = frozenset({"shl", "sal", "shr", "sar", "rol", "ror"})
_CCS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
_JCC = {f"j{c}": n for n, c in enumerate(_CCS)}
_SETCC = {f"set{c}": n for n, c in enumerate(_CCS)}
_CMOV = {f"cmov{c}": n for n, c in enumerate(_CCS)}
# Flag producers a following Jcc is fused into.
_FUSABLE = frozenset(ALU_OPS) | {"inc", "dec"}
# The shapes whose code depends on whether their flags are observed; for
# the others (MOV, LEA, PUSH ...) one shape serves, one factory compiled.
_WRITES_FLAGS = _FUSABLE | _SHIFTS | {"neg", "mul", "imul"}


class _Source:
    """The body of one handler, its operands as Python expressions.  The
    instruction's numbers are names (G0, D, I1 ...) bound by the factory."""

    def __init__(self):
        self.lines: list[str] = []

    def emit(self, line: str) -> None:
        self.lines.append(line)

    # -- memory: the TLB probe inline for bytes and aligned dwords --------------------
    # As in compiled code (codegen.Emitter.load): a TLB miss raises KeyError.
    def load(self, size: int, addr: str, into: str) -> None:
        if size == 4:
            self.emit(f"try: {into} = W32[{dword_index('TR', addr)}]")
            self.emit(f"except KeyError: {into} = RA({addr}, 4)")
        elif size == 1:
            self.emit(f"try: {into} = M[{page_address('TR', addr)}]")
            self.emit(f"except KeyError: {into} = RS({addr}, 1)")
        else:
            self.emit(f"{into} = RD2({addr})")

    def store(self, size: int, addr: str, value: str) -> None:
        if size == 4:
            self.emit(f"try: W32[{dword_index('TW', addr)}] = {value}")
            self.emit(f"except KeyError: WA({addr}, 4, {value})")
        elif size == 1:
            self.emit(f"try: M[{page_address('TW', addr)}] = {value}")
            self.emit(f"except KeyError: WS({addr}, 1, {value})")
        else:
            self.emit(f"WR2({addr}, {value})")

    # -- operands ------------------------------------------------------------------------
    def read(self, shape: tuple, slot: int, into: str) -> None:
        """Operand `slot` of the shape into the local `into` (a memory
        operand's address is already in `a`)."""
        kind, size = shape[slot]
        if kind == "r":
            self.emit(f"{into} = {_reg(size, slot)}")
        elif kind == "i":
            self.emit(f"{into} = I{slot}")
        else:
            self.load(size, "a", into)

    def write(self, shape: tuple, slot: int, value: str) -> None:
        kind, size = shape[slot]
        if kind == "m":
            self.store(size, "a", value)
        elif size == 4:
            self.emit(f"R[G{slot}] = {value}")
        elif size == 2:
            self.emit(f"R[G{slot}] = R[G{slot}] & 0xFFFF0000 | {value}")
        else:
            self.emit(f"R[G{slot}] = R[G{slot}] & K{slot} | {value} << H{slot}")


def _reg(size: int, slot: int) -> str:
    if size == 4:
        return f"R[G{slot}]"
    if size == 2:
        return f"(R[G{slot}] & 0xFFFF)"
    return f"(R[G{slot}] >> H{slot} & 0xFF)"


def _address(form: str, wrap: bool) -> str:
    """The effective address of a 32-bit memory operand in a flat segment;
    unwrapped (it may pass 2^32) when it only goes to an access, whose TLB
    probe then misses and whose slow path wraps it."""
    expr = {"d": "D", "b": "R[B]", "bd": "R[B] + D", "bx": "R[B] + R[X] + D",
            "bxs": "R[B] + R[X] * S + D", "xs": "R[X] * S + D"}[form]
    return f"({expr}) & 0xFFFFFFFF" if wrap and "+" in expr else expr


def _flags_store(fo: int) -> str:
    return f"cpu.lazy = ({fo}, fr, fa, fb)"


def _condition(src: _Source, cc: int, into: str) -> None:
    """Condition cc of the lazy flags into the local `into`: inline after a
    32-bit CMP, SUB or logic op (most conditions test one), else through
    flags.condition."""
    src.emit("fo, fr, fa, fb = cpu.lazy")
    cmp = F.condition_source(cc, F.K_CMP, 4)
    sub = F.condition_source(cc, F.K_SUB, 4)
    logic = F.condition_source(cc, F.K_LOGIC, 4)
    src.emit(f"if fo == {F.K_CMP | 4 << 4}: {into} = {cmp}")
    src.emit(f"elif fo == {F.K_SUB | 4 << 4}: {into} = {sub}")
    src.emit(f"elif fo == {F.K_LOGIC | 4 << 4}: {into} = {logic}")
    src.emit(f"else: {into} = COND({cc}, fo, fr, fa, fb)")


def _carry(src: _Source, into: str) -> None:
    """CF of the lazy flags (as 0 or 1) into `into`, inline for the kinds
    that precede INC, DEC, ADC and SBB most often."""
    src.emit("fo, fr, fa, fb = cpu.lazy")
    src.emit("k = fo & 15")
    kinds_by_source: dict[str, list[int]] = {}
    for kind, source in F.CARRY_SOURCES.items():
        kinds_by_source.setdefault(source, []).append(kind)
    test = "if"
    for source, kinds in kinds_by_source.items():
        src.emit(f"{test} {' or '.join(f'k == {k}' for k in kinds)}: {into} = {source}")
        test = "elif"
    src.emit(f"else: {into} = CARRY(fo, fr, fa, fb)")


def _branch(cc: int, kind: int, size: int) -> str:
    """`return` of a Jcc fused into the flag producer before it (whose
    result and inputs are the locals fr, fa, fb)."""
    cond = F.condition_source(cc, kind, size)
    if cond is None:
        cond = f"COND({cc}, {kind | size << 4}, fr, fa, fb)"
    return f"return TGT if {cond} else NXT"


# ---------------------------------------------------------------------------------------
# Source of a handler, by shape.  A shape is (mnemonic, operands, address form,
# flags observed, fused condition or -1, extra) with operands a tuple of
# (kind, size), kind "r", "m" or "i".

def _generate(key: tuple) -> list[str]:
    name, ops, form, live, cc, extra = key
    src = _Source()
    if form:
        src.emit(f"a = {_address(form, wrap=name == 'lea')}")
    if name == "mov":
        src.read(ops, 1, "v")
        src.write(ops, 0, "v")
    elif name in ("movzx", "movsx"):
        src.read(ops, 1, "v")
        size = ops[1][1]
        if name == "movsx":
            src.emit(f"v = ((v ^ {SIGNS[size]:#x}) - {SIGNS[size]:#x}) & {MASKS[ops[0][1]]:#x}")
        src.write(ops, 0, "v")
    elif name == "lea":
        src.write(ops, 0, "a")
    elif name in ALU_OPS:
        size = ops[0][1]
        src.read(ops, 0, "fa")
        src.read(ops, 1, "fb")
        op = ALU_OPS[name]
        if name == "cmp":
            if live:
                src.emit(f"cpu.lazy = ({F.K_CMP | size << 4}, 0, fa, fb)")     # no result
        else:
            src.emit(f"fr = (fa {op} fb) & {MASKS[size]:#x}" if op in "+-" else f"fr = fa {op} fb")
            if name != "test":
                src.write(ops, 0, "fr")
            if live:
                src.emit(_flags_store(ARITH_KIND[name] | size << 4))
        if cc >= 0:
            src.emit(_branch(cc, ARITH_KIND[name], size))
    elif name in ("adc", "sbb"):
        size = ops[0][1]
        _carry(src, "c")
        src.read(ops, 0, "fa")
        src.read(ops, 1, "fb")
        sign, kinds = ("+", (F.K_ADC, F.K_ADD)) if name == "adc" else ("-", (F.K_SBB, F.K_SUB))
        src.emit(f"fr = (fa {sign} fb {sign} c) & {MASKS[size]:#x}")
        src.write(ops, 0, "fr")
        src.emit(f"cpu.lazy = ({kinds[0] | size << 4} if c else {kinds[1] | size << 4}, "
                 "fr, fa, fb)")
    elif name in ("inc", "dec"):
        size = ops[0][1]
        if live:
            _carry(src, "c")            # INC and DEC keep CF
        src.read(ops, 0, "fa")
        src.emit(f"fr = (fa {'+' if name == 'inc' else '-'} 1) & {MASKS[size]:#x}")
        src.write(ops, 0, "fr")
        kind = F.K_INC if name == "inc" else F.K_DEC
        if live:
            src.emit("fb = c")
            src.emit(_flags_store(kind | size << 4))
        if cc >= 0:
            src.emit(_branch(cc, kind, size))
    elif name == "neg":
        size = ops[0][1]
        src.read(ops, 0, "fa")
        src.emit(f"fr = -fa & {MASKS[size]:#x}")
        src.write(ops, 0, "fr")
        if live:
            src.emit(f"cpu.lazy = ({F.K_NEG | size << 4}, fr, fa, 0)")
    elif name == "not":
        src.read(ops, 0, "fa")
        src.write(ops, 0, f"fa ^ {MASKS[ops[0][1]]:#x}")
    elif name in _SHIFTS:
        _shift(src, name, ops, live, extra)
    elif name == "mul" or (name == "imul" and len(ops) == 1):
        src.read(ops, 0, "b")
        if name == "mul":
            src.emit("m = R[0] * b")
            src.emit("o = m >> 32")
        else:
            src.emit("m = ((R[0] ^ 0x80000000) - 0x80000000) * ((b ^ 0x80000000) - 0x80000000)")
            src.emit("o = ((m & 0xFFFFFFFF ^ 0x80000000) - 0x80000000) != m")
            src.emit("m &= 0xFFFFFFFFFFFFFFFF")
        src.emit("fr = m & 0xFFFFFFFF")
        src.emit("R[0] = fr")
        src.emit("R[2] = m >> 32")
        if live:
            src.emit(f"cpu.lazy = ({F.K_RESULT | 4 << 4}, fr, 0, {F.CF | F.OF} if o else 0)")
    elif name == "imul":
        size = ops[0][1]
        src.read(ops, len(ops) - 2, "x")
        src.read(ops, len(ops) - 1, "y")
        sign = SIGNS[size]
        src.emit(f"m = ((x ^ {sign:#x}) - {sign:#x}) * ((y ^ {sign:#x}) - {sign:#x})")
        src.emit(f"fr = m & {MASKS[size]:#x}")
        src.write(ops, 0, "fr")
        if live:
            src.emit(f"cpu.lazy = ({F.K_RESULT | size << 4}, fr, 0, "
                     f"{F.CF | F.OF} if ((fr ^ {sign:#x}) - {sign:#x}) != m else 0)")
    elif name in ("div", "idiv"):
        src.read(ops, 0, "d")
        src.emit("n = R[2] << 32 | R[0]")
        if name == "div":
            src.emit("if d == 0 or n // d > 0xFFFFFFFF: raise DIVERR()")
            src.emit("q, r = divmod(n, d)")
        else:
            src.emit("if d == 0: raise DIVERR()")
            src.emit("n = (n ^ 0x8000000000000000) - 0x8000000000000000; "
                     "d = (d ^ 0x80000000) - 0x80000000")
            src.emit("q = abs(n) // abs(d)")
            src.emit("if (n < 0) != (d < 0): q = -q")
            src.emit("r = n - q * d")
            src.emit("if not -0x80000000 <= q < 0x80000000: raise DIVERR()")
        src.emit("R[0] = q & 0xFFFFFFFF")
        src.emit("R[2] = r & 0xFFFFFFFF")
    elif name == "cdq":
        src.emit("R[2] = 0xFFFFFFFF if R[0] & 0x80000000 else 0")
    elif name == "cwde":
        src.emit("R[0] = ((R[0] & 0xFFFF ^ 0x8000) - 0x8000) & 0xFFFFFFFF")
    elif name == "xchg":
        src.emit("x = R[G0]; R[G0] = R[G1]; R[G1] = x")
    elif name == "push":
        # The value is read (through the old ESP) before ESP moves; the
        # store faults before ESP changes.
        src.read(ops, 0, "v")
        src.emit("s = (R[4] - 4) & 0xFFFFFFFF")
        src.store(4, "s", "v")
        src.emit("R[4] = s")
    elif name == "pop":
        src.emit("s = R[4]")
        src.load(4, "s", "v")
        src.emit("R[4] = (s + 4) & 0xFFFFFFFF")
        src.emit("R[G0] = v")            # POP ESP: the popped value wins
    elif name == "leave":
        src.emit("s = R[5]")
        src.load(4, "s", "v")
        src.emit("R[4] = (s + 4) & 0xFFFFFFFF")
        src.emit("R[5] = v")
    elif name == "call":
        if ops[0][0] == "j":
            src.emit("t = TGT")
        else:
            src.read(ops, 0, "t")
        src.emit("s = (R[4] - 4) & 0xFFFFFFFF")
        src.store(4, "s", "NXT")
        src.emit("R[4] = s")
        src.emit("return t")
    elif name == "ret":
        src.emit("s = R[4]")
        src.load(4, "s", "v")
        # RET imm16: the bytes released are a number (I0), not a shape each.
        src.emit(f"R[4] = (s + {'4 + I0' if ops else '4'}) & 0xFFFFFFFF")
        src.emit("return v")
    elif name == "jmp":
        if ops[0][0] == "j":
            src.emit("return TGT")
        else:
            src.read(ops, 0, "t")
            src.emit("return t")
    elif name in _JCC:
        _condition(src, _JCC[name], "t")
        src.emit("return TGT if t else NXT")
    elif name in _SETCC:
        _condition(src, _SETCC[name], "t")
        src.write(ops, 0, "(1 if t else 0)")
    elif name in _CMOV:
        src.read(ops, 1, "v")           # read (and maybe fault) whatever the condition
        _condition(src, _CMOV[name], "t")
        src.emit("if t: R[G0] = v")
    else:
        raise AssertionError(f"no handler source for {key}")
    return src.lines


def _shift(src: _Source, name: str, ops: tuple, live: bool, by_cl: bool) -> None:
    """SHL SHR SAR ROL ROR by an immediate (N, already masked, never 0) or
    by CL; flags as semantics.shift leaves them."""
    size = ops[0][1]
    bits, mask, sign = size * 8, MASKS[size], SIGNS[size]
    src.read(ops, 0, "fa")                  # read (and maybe fault) whatever the count
    if by_cl:
        src.emit("n = R[1] & 0x1F")
        src.emit("if not n: return")          # count 0: flags and destination untouched
    else:
        src.emit("n = N")
    name = "shl" if name == "sal" else name
    if name == "shl":
        src.emit(f"fr = (fa << n) & {mask:#x}")
        src.emit(f"c = (fa >> ({bits} - n)) & 1" + ("" if bits == 32 else f" if n <= {bits} else 0"))
        src.emit(f"o = (fr >> {bits - 1} ^ c) & 1")
    elif name == "shr":
        src.emit("fr = fa >> n")
        src.emit("c = (fa >> (n - 1)) & 1")
        src.emit(f"o = (fa >> (n - 1) ^ fr) >> {bits - 1} & 1")
    elif name == "sar":
        src.emit(f"x = (fa ^ {sign:#x}) - {sign:#x}")
        src.emit(f"fr = (x >> n) & {mask:#x}")
        src.emit("c = (x >> (n - 1)) & 1")
        src.emit("o = 0")
    else:
        src.emit(f"k = n % {bits}")
        if name == "rol":
            src.emit(f"fr = (fa << k | fa >> ({bits} - k)) & {mask:#x}")
            src.emit("c = fr & 1")
            src.emit(f"o = (fr >> {bits - 1} ^ c) & 1")
        else:
            src.emit(f"fr = (fa >> k | fa << ({bits} - k)) & {mask:#x}")
            src.emit(f"c = fr >> {bits - 1} & 1")
            src.emit(f"o = (fr >> {bits - 1} ^ fr >> {bits - 2}) & 1")
    src.write(ops, 0, "fr")
    if not live:
        return
    if name in ("rol", "ror"):
        # Only CF and OF change; the others are carried over.
        src.emit("l = cpu.lazy")
        src.emit(f"cpu.lazy = ({F.K_MERGE}, l if l[0] != {F.K_MERGE} else l[1], 0, c | o << 11)")
    else:
        # AF is undefined after a shift; processors leave it cleared.
        src.emit(f"cpu.lazy = ({F.K_RESULT | size << 4}, fr, 0, c | o << 11)")


_FACTORIES: dict[tuple, tuple] = {}     # shape -> (factory, its operand parameters)
# Handlers name nothing global but builtins (abs, divmod).
_GLOBALS = {"__builtins__": builtins}
_ENV_NAMES = frozenset(_ENV)


def factory(key: tuple) -> tuple:
    """The factory for a shape, its handler compiled once (handler_library:
    once per installation; a shape outside it, once per process):
    make(E, *operands) with E the CPU's environment (_ENV, in order) and the
    instruction's numbers in the order of the parameters returned.  The
    handler's code takes what it names as parameters with defaults, which
    make() gives each handler it makes: no wrapper to compile (a third of
    the time compile() took with one), and fast locals where closures
    would be cells."""
    made = _FACTORIES.get(key)
    if made is None:
        code = _stored(key) or compile_shape(key)
        params = code.co_varnames[:code.co_argcount]
        env_at = tuple(_ENV.index(name) for name in params if name in _ENV_NAMES)
        operands = params[len(env_at):]
        made = _FACTORIES[key] = (_maker(code, env_at, _GLOBALS), operands)
    return made


def _stored(key: tuple):
    """The shape's code from the library, or None (not there, or damaged)."""
    stored = _LIBRARY.get(key)
    if stored is None:
        return None
    try:
        code = marshal.loads(stored)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def compile_shape(key: tuple):
    """The code of a shape's handler: its environment names, then its
    numbers (sorted), as parameters."""
    body = _generate(key) or ["pass"]     # (falling off the end returns None)
    names = set(_IDENT.findall("\n".join(body)))
    operands = sorted(names & set(_OPERAND))
    # No defaults in the source (less to parse): make() gives them all.
    params = [name for name in _ENV if name in names] + operands
    source = "\n".join([f"def handler({', '.join(params)}):", *[f"    {line}" for line in body]])
    namespace: dict = {}
    exec(compile(source, f"<handler {key[0]}>", "exec"), namespace)
    return namespace["handler"].__code__


def _maker(code, env_at: tuple, namespace: dict):
    def make(E, *numbers):
        return FunctionType(code, namespace, "handler", (*[E[n] for n in env_at], *numbers))
    return make


def environment(runtime: dict) -> tuple:
    """What a CPU gives every factory (E): blocks._runtime's values of _ENV,
    and last the handlers made with them so far, by factory and arguments."""
    return (*(runtime[name] for name in _ENV), {})


def clear_factories() -> None:
    """Forget the compiled handler factories (benchmarks measuring a cold start)."""
    _FACTORIES.clear()


# ---------------------------------------------------------------------------------------
# Planning: which shape an instruction has and its numbers.

_SLOT_NAMES = tuple((f"G{n}", f"H{n}", f"K{n}", f"I{n}") for n in range(3))


def _address_form(op, values: dict) -> str | None:
    """The address form of a memory operand (a flat DS/ES/SS access with
    32-bit addressing), its numbers in `values`."""
    if op.seg >= 4:
        return None             # FS/GS: a base and a limit check (the compiled tiers)
    # Signed: an unwrapped address (_address) with a negative displacement
    # must not carry past 2^32.  An absolute address is the unsigned one.
    values["D"] = disp = signed32(op.disp)
    base, index = op.base, op.index
    if base >= 0:
        values["B"] = base
    if index >= 0:
        values["X"] = index
        values["S"] = op.scale
        if base < 0:
            return "xs"
        return "bx" if op.scale == 1 else "bxs"
    if base >= 0:
        return "bd" if disp else "b"
    values["D"] = disp & 0xFFFFFFFF
    return "d"


def plan(insn: Instruction, nxt: int, live: bool) -> tuple | None:
    """(shape, numbers) of one instruction of 32-bit flat code, or None when
    it is left to the compiled tiers.  `live`: its flags may be observed
    (plan_block fuses a Jcc into the shape after)."""
    name = insn.mnemonic
    if name == "nop" or name == "pause":
        return ("nop",), {}             # also the long NOPs with a memory operand: no access
    allowed = _FAMILIES.get(name)
    if allowed is None or insn.opsize != 32 or insn.adsize != 32 or insn.rep or insn.lock:
        return None
    values = {"NXT": nxt}
    ops = []
    kinds = ""
    sizes = ()
    form = ""
    for slot, op in enumerate(insn.operands):
        kind, size = op.kind, op.size
        if kind == REG:
            g, h, k, _ = _SLOT_NAMES[slot]
            if size == 1:
                reg = op.reg
                values[g] = reg & 3
                values[h] = 8 if reg >= 4 else 0
                values[k] = 0xFFFF00FF if reg >= 4 else 0xFFFFFF00
            else:
                values[g] = op.reg
            letter = "r"
        elif kind == MEM:
            form = _address_form(op, values)
            if form is None:
                return None
            letter = "m"
        elif kind == IMM:
            values[_SLOT_NAMES[slot][3]] = op.imm & MASKS[size]
            letter = "i"
        elif kind == REL:
            values["TGT"] = (nxt + op.imm) & 0xFFFFFFFF
            letter, size = "j", 4
        else:
            return None
        kinds += letter
        sizes += (size,)
        ops.append((letter, size))
    if (kinds, sizes) not in allowed:
        return None
    if name in _SHIFTS:
        if kinds[1] == "i":
            values["N"] = insn.operands[1].imm & 0x1F
            del values["I1"]
            if not values["N"]:
                return None     # count 0: nothing happens (rare: left to the compiled tiers)
        elif insn.operands[1].reg == 1:
            del values["G1"], values["H1"], values["K1"]       # by CL
        else:
            return None
    ops, extra = _shape_operands(name, kinds, tuple(ops))
    return (name, ops, form, live, -1, extra), values


def _shape_operands(name: str, kinds: str, ops: tuple) -> tuple[tuple, int]:
    """A shape's operands and its `extra` from the instruction's: a shift
    keeps its destination (the count is N, or CL: extra 1), LEA's source is
    an address, not a read of memory."""
    if name in _SHIFTS:
        return ops[:1], int(kinds[1] == "r")
    if name == "lea":
        return (ops[0], ("m", 0)), 0
    return ops, 0


def _family(*patterns: str) -> frozenset:
    """The (kinds, sizes) an instruction may have, from patterns
    "KINDS:SIZES" ("rm:44": a register and a memory operand, both dwords)."""
    out = set()
    for pattern in patterns:
        kinds, sizes = pattern.split(":")
        out.add((kinds, tuple(int(c) for c in sizes)))
    return frozenset(out)


_ALU_FORMS = ("rr:44", "ri:44", "rm:44", "mr:44", "mi:44",
              "rr:11", "ri:11", "rm:11", "mr:11", "mi:11")
_CC_FORMS = {**{m: _family("r:1", "m:1") for m in _SETCC},
             **{m: _family("rr:44", "rm:44") for m in _CMOV},
             **{m: _family("j:4") for m in _JCC}}
_FAMILIES = {
    "mov": _family("rr:44", "ri:44", "rm:44", "mr:44", "mi:44",
                   "rr:11", "ri:11", "rm:11", "mr:11", "mi:11"),
    "movzx": _family("rr:41", "rm:41", "rr:42", "rm:42"),
    "movsx": _family("rr:41", "rm:41", "rr:42", "rm:42"),
    "lea": _family("rm:40"),
    **{m: _family(*_ALU_FORMS) for m in ALU_OPS},
    "adc": _family("rr:44", "ri:44", "rm:44", "mr:44", "mi:44"),
    "sbb": _family("rr:44", "ri:44", "rm:44", "mr:44", "mi:44"),
    "inc": _family("r:4", "m:4", "r:1", "m:1"),
    "dec": _family("r:4", "m:4", "r:1", "m:1"),
    "neg": _family("r:4", "m:4"),
    "not": _family("r:4", "m:4"),
    **{m: _family("ri:41", "mi:41", "rr:41", "mr:41", "ri:11", "rr:11", "mi:11", "mr:11")
       for m in _SHIFTS},
    "mul": _family("r:4", "m:4"),
    "imul": _family("r:4", "m:4", "rr:44", "rm:44", "rri:444", "rmi:444"),
    "div": _family("r:4", "m:4"),
    "idiv": _family("r:4", "m:4"),
    "cdq": _family(":"),
    "cwde": _family(":"),
    "xchg": _family("rr:44"),
    "push": _family("r:4", "i:4", "m:4"),
    "pop": _family("r:4"),
    "leave": _family(":"),
    "call": _family("j:4", "r:4", "m:4"),
    "jmp": _family("j:4", "r:4", "m:4"),
    "ret": _family(":", "i:2"),
    **_CC_FORMS,
}

_ADDRESS_FORMS = ("xs", "bx", "bxs", "bd", "b", "d")        # _address_form's answers


def every_shape():
    """Every shape plan_block can give a factory, for handler_library: each
    family's operand forms, with each address form where one operand is in
    memory, flags observed or not where that changes the code, and each
    Jcc fused into a flag producer."""
    for name, allowed in _FAMILIES.items():
        for kinds, sizes in allowed:
            ops, extra = _shape_operands(name, kinds, tuple(zip(kinds, sizes)))
            for form in _ADDRESS_FORMS if "m" in kinds else ("",):
                yield (name, ops, form, True, -1, extra)
                if name in _WRITES_FLAGS:
                    yield (name, ops, form, False, -1, extra)
                if name in _FUSABLE:
                    for cc in range(len(_CCS)):
                        yield (name, ops, form, True, cc, extra)


# ---------------------------------------------------------------------------------------
# Blocks of handlers.

class Steps(tuple):
    """A threaded block's body: its handlers in order, and what unwind()
    needs to name the faulting instruction from the handler that raised
    (attributes: last, starts, eips, nexts)."""


def plan_block(insns: list[tuple[int, Instruction]], liveness) -> tuple | None:
    """The threaded form of the longest prefix of `insns` this tier takes:
    (steps, instructions covered, whether the last step is a branch, the
    branch target or None, and for unwind() each step's first instruction,
    the instructions' EIPs and next EIPs), each step (factory, its operand
    arguments); None when the first instruction is not taken.  A Jcc
    straight after the flag producer it tests is fused into that producer's
    handler."""
    planned = []
    taken = 0
    for eip, insn in insns:
        nxt = (eip + insn.length) & 0xFFFFFFFF
        step = plan(insn, nxt, True)
        if step is None:
            break
        planned.append(step)
        taken += 1
    if not taken:
        return None
    insns = insns[:taken]
    live = liveness([i for _, i in insns])
    steps = []
    for index, ((eip, insn), (key, values)) in enumerate(zip(insns, planned)):
        if key[0] in _JCC and steps and steps[-1][2] == index - 1:
            prev_key, prev_values, prev_index = steps[-1]
            if prev_key[0] in _FUSABLE and prev_key[4] < 0:
                steps[-1] = ((*prev_key[:3], True, _JCC[key[0]], prev_key[5]),
                             {**prev_values, "TGT": values["TGT"], "NXT": values["NXT"]},
                             prev_index)
                continue
        if key[0] == "nop":
            continue            # nothing to run: counted with the block
        if not live[index] and key[0] in _WRITES_FLAGS:
            key = (*key[:3], False, *key[4:])
        steps.append((key, values, index))
    # Blocks end at their first branch: when the prefix kept it, the last
    # step (its own handler, or the producer it is fused into) returns the next EIP.
    branch = _is_branch(insns[-1][1])
    target = steps[-1][1].get("TGT") if branch else None
    made = []
    for key, values, _ in steps:
        make, operands = factory(key)
        made.append((make, tuple(values[name] for name in operands)))
    return (tuple(made), taken, branch, target, [index for _, _, index in steps],
            [e for e, _ in insns], [(e + i.length) & 0xFFFFFFFF for e, i in insns])


def _is_branch(insn: Instruction) -> bool:
    return insn.mnemonic in _JCC or insn.mnemonic in ("jmp", "call", "ret")


def instantiate(plan_: tuple, env: tuple, start: int, budget: int, smc: list, promote):
    """The block function for this CPU: handlers made by their factories
    with the CPU's registers, memory and TLBs (env, environment()), in a runner."""
    steps, count, branch, target, starts, eips, nexts = plan_
    # Handlers are stateless: blocks share them (every PUSH EBP is one
    # handler), though never within a block, whose handlers name their
    # instruction by identity in unwind().
    shared = env[-1]
    handlers = []
    for make, args in steps:
        key = (make, args)
        handler = shared.get(key)
        if handler is None or handler in handlers:
            handler = make(env, *args)
            shared.setdefault(key, handler)
        handlers.append(handler)
    if branch:
        body = Steps(handlers[:-1])
        body.last = handlers[-1]
    else:
        body = Steps(handlers)
        body.last = None
    body.starts, body.eips, body.nexts = starts, eips, nexts
    cpu = env[1]
    if not branch:
        return _falls_through(cpu, body, count, nexts[-1], promote)
    if target == start:
        return _loop(cpu, body, count, start, budget, smc, promote)
    return _ends_in_branch(cpu, body, count, promote)


def _ends_in_branch(cpu, body, count, promote):
    last = body.last
    hot = left = HOT_INSNS

    def block():
        nonlocal left
        for f in body:
            f()
        f = last
        nx = f()
        cpu.icount += count
        left -= count
        if left <= 0:
            promote()
        return nx
    block.retired = lambda: hot - left     # for the region's choice of nodes
    return block


def _falls_through(cpu, body, count, nxt, promote):
    hot = left = HOT_INSNS

    def block():
        nonlocal left
        for f in body:
            f()
        cpu.icount += count
        left -= count
        if left <= 0:
            promote()
        return nxt
    block.retired = lambda: hot - left     # for the region's choice of nodes
    return block


def _loop(cpu, body, count, start, budget, smc, promote):
    """A block whose branch goes back to its own start: iterations run here,
    until the branch leaves, BUDGET instructions or a write to code (which
    takes effect from the next jump, as on the processor)."""
    last = body.last
    hot = left = HOT_INSNS

    def block():
        nonlocal left
        k = 0
        while True:
            for f in body:
                f()
            f = last
            nx = f()
            k += count
            if nx != start:
                break
            if k >= budget or smc[0]:
                smc[0] = 0
                break
        cpu.icount += k
        left -= k
        if left <= 0:
            promote()
        return nx
    block.retired = lambda: hot - left     # for the region's choice of nodes
    return block


# The runners' code: unwind() recognises their frames in a traceback.
RUNNER_CODES = frozenset(const for make in (_ends_in_branch, _falls_through, _loop)
                         for const in make.__code__.co_consts if hasattr(const, "co_code"))


def unwind(cpu, frame, exc) -> None:
    """Give the CPU the EIP and instruction count of the instruction whose
    handler raised `exc` in the runner `frame` (the registers and flags
    are already those of its start)."""
    local = frame.f_locals
    body = local["body"]
    f = local.get("f")
    if f is None:
        return
    if f is body.last:
        k = len(body)
    else:
        k = next(i for i, g in enumerate(body) if g is f)
    index = body.starts[k]
    done = local.get("k", 0) + index
    if exc.trap:
        cpu.eip = body.nexts[index]
        cpu.icount += done + 1
    else:
        cpu.eip = body.eips[index]
        cpu.icount += done


_LOADED = handler_library.load(every_shape, compile_shape)
_LIBRARY = _LOADED          # what factory() takes handlers from
_NO_LIBRARY: dict = {}


def library_shapes() -> int:
    return len(_LIBRARY)


def ensure_library() -> int:
    """Build the library now if it is missing or stale, whatever
    PYTHONDONTWRITEBYTECODE says (benchmarks, before they time anything)."""
    global _LOADED, _LIBRARY
    _LOADED = _LIBRARY = handler_library.load(every_shape, compile_shape, build_missing=True)
    _FACTORIES.clear()
    return len(_LOADED)


def use_library(on: bool) -> None:
    """Take handlers from the library (the default) or compile each shape
    when first met (benchmarks measuring what the library saves)."""
    global _LIBRARY
    wanted = _LOADED if on else _NO_LIBRARY
    if wanted is not _LIBRARY:
        _LIBRARY = wanted
        _FACTORIES.clear()
