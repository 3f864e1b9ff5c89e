"""A small assembler for the i386: Intel-syntax text -> bytes.

    asm("int 0x80")                      -> b"\\xcd\\x80"
    assemble(text, base=0x7C00, bits=16) -> Program(code, labels, constants, listing)

What it models
    The integer instruction set of the i386 (plus the few later opcodes the
    decoder knows: CPUID, RDTSC, CMOVcc, the 0F 1F NOP, ...), the data and
    layout directives a boot sector, a Switcher or a test needs, and 16-bit
    code (`bits 16` / `.code16`) next to 32-bit code.  x87 instructions are out
    of scope (FWAIT is the only one).  The encodings come from the decoder's
    own opcode maps (`opcodes.ONE_BYTE/TWO_BYTE/GROUPS`, Intel SDM Appendix A
    notation): every entry is turned into a template "mnemonic, opcode, ModRM
    reg, operand specs", so the assembler and the decoder share one table.

Conventions: GNU as, `as --32 -msyntax=intel -mnaked-reg` (+ `.intel_syntax noprefix`)
    The output is byte-for-byte what GNU as 2.40 produces for the same text
    (the tests check tens of thousands of lines against it), including its
    choices: the shortest encoding; on a tie the sign-extended imm8 form
    (`add ax, 1` is 66 83 C0 01, not 66 05 01 00), then the lower opcode
    (`add eax, ebx` is 01 D8, `mov eax, ebx` 89 D8); the eAX short forms,
    moffs (A1) for `mov eax, [disp]`, `int 3` as CC, no displacement for
    `[ebx+0]`, a segment prefix only when it differs from the default
    segment, prefixes in the order segment, 67, 66, F2/F3, F0.  Jumps and
    conditional jumps to labels start short and become near when the
    distance needs it (passes repeat to a fixpoint, as GNU relaxes).

    Values that are not known where they are used (a label, a symbol defined
    further down) get the full-size form, as GNU's single pass does: `push
    OFFSET label` is 68 imm32, `[ebx + later]` has a disp32.  A difference of
    two labels already seen, with no relaxable jump or alignment between them,
    is a known constant.

    A bare operand that names a label is a *memory* operand (MASM/GNU rule):
    `mov eax, label` loads from label, `mov eax, OFFSET label` loads its
    address; a symbol defined by `equ`/`=` before the use is a number.

Syntax
    statements     one per line, or separated by `;`
    comments       `#` or `//` to the end of the line (not inside quotes)
    labels         `name:` (several per line allowed); GNU local labels `1:`
                   referenced as `1b` / `1f`; `.` and `$` are the current address
    numbers        0x1F, 0b101, 42, 017 (octal, as GNU), 'A' (character)
    expressions    + - * / % << >> & | ^ ~ and parentheses (C precedence);
                   labels may only be added or subtracted
    constants      `name equ expr`, `name = expr`, `.equ/.set name, expr`
    data           db/dw/dd/dq and .byte/.word/.short/.long/.int/.quad (lists;
                   db/.byte also take strings), .ascii/.asciz/.string,
                   .space/.skip/.zero N[, fill], .fill N[, size[, value]],
                   `times N <statement>`
    layout         align/.align/.balign N[, fill[, max]] and .p2align k (code
                   is padded with GNU's NOP patterns), .org offset[, fill]
                   (an offset from the start, as in GNU; a label-relative
                   value is an address), bits 16|32 / .code16 / .code32
    operands       eax ax al, es..gs, cr0 cr2-cr4, dr0-dr7; memory
                   `[base+index*scale+disp]`, `disp[base]`, `[b][i*s]`, with
                   BYTE/WORD/DWORD/FWORD/QWORD/TBYTE [PTR] and `es:[edi]`,
                   `fs:0x10`; `eiz` forces a SIB with no index (objdump's
                   spelling); immediates, `OFFSET sym`; far `0x8:label`;
                   SHORT and NEAR [PTR] are accepted and ignored, as GNU
                   does (the jump size is always chosen by relaxation)
    prefixes       rep repe repz repne repnz lock, es cs ss ds fs gs,
                   data16 data32 addr16 addr32 (they set the operand/address
                   size, as GNU's `data32 jmp 0x8:x` in 16-bit code), and
                   objdump's bnd notrack xacquire xrelease; alone or before
                   an instruction
    mnemonics      as the decoder names them, plus the usual aliases: all
                   condition-code spellings (jz, setnae, cmovpe ...), size
                   suffixes (movsb/movsw/movsd, pushad, pushfw, iretd, retfw,
                   pushw/pushd, lgdtw/lgdtd, callw/jmpw ...), xlatb, wait, sal,
                   loopz/loopnz, pause, one-operand shifts (`shr eax`), the
                   two-operand `imul eax, 5`, `aam`/`aad` without operand

Where it differs from GNU as (on purpose)
    It refuses what GNU only warns about or silently wraps (`mov al, 256`,
    `mov al, -129`, `[si+0x10000]`, `push 0xffffffff` in 16-bit code) and
    what the i386 would reject (`mov cs, ax`, cr1, cr5-cr7).  It accepts a
    few things GNU 2.40 does not: `salc`, `eiz`, db/dw/dd/dq, `times`,
    `bits`, `align`, a numeric target for loop/jcxz (resolved against
    `base`), `data16` where the operands already say 16 bits, a bare address
    above 64K in 16-bit code (with 67; GNU truncates it), a jump target in
    16-bit code taken modulo 64K (IP wraps; objdump prints such targets
    unwrapped).  `jmpw target` is a direct jump with a 16-bit operand size
    (GNU makes it an indirect one); `sgdtw FWORD PTR [x]` in 16-bit code has
    no 66 (GNU lets FWORD win).  Alignment is of addresses (base + offset);
    GNU aligns section offsets, the same thing when `base` is aligned.

Errors are `AsmError(line, message)` (the 1-based line number and a message:
unknown mnemonic, bad operand combination, undefined symbol, value out of
range, ...) and nothing else escapes.
"""
from __future__ import annotations

import functools
import re

import attrs

from . import opcodes
from .instruction import (CREG, DREG, REG, SREG, REG8_NAMES, REG16_NAMES,
                          REG32_NAMES, SEG_NAMES, CS, DS, ES, SS)

__all__ = ["asm", "assemble", "AsmError", "Program", "ListingLine", "vector_stubs"]


# --------------------------------------------------------------------------
# Public API

class AsmError(Exception):
    """An error in the assembler source: `line` (1-based) and `message`."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@attrs.frozen
class ListingLine:
    address: int          # address of the line's first byte
    data: bytes           # bytes the line produced
    source: str           # the source line as written
    line: int             # 1-based line number


@attrs.frozen
class Program:
    code: bytes
    labels: dict          # label -> address (base + offset); local `1:` labels left out
    constants: dict       # equ / = / .set symbols -> value
    listing: tuple        # ListingLine per source line that produced bytes or labels
    base: int = 0

    def format_listing(self) -> str:
        return "\n".join(f"{ln.address:08x}  {ln.data.hex(' '):<24}  {ln.source}"
                         for ln in self.listing)


def asm(text: str, base: int = 0, bits: int = 32) -> bytes:
    """Assemble Intel-syntax `text` placed at address `base`; return the bytes."""
    return assemble(text, base, bits).code


def assemble(text: str, base: int = 0, bits: int = 32) -> Program:
    """Assemble Intel-syntax `text` placed at address `base` in `bits`-bit code."""
    if bits not in (16, 32):
        raise AsmError(0, f"bits must be 16 or 32, not {bits!r}")
    if not isinstance(text, str):
        raise AsmError(0, "the source must be a str")
    if not isinstance(base, int) or not 0 <= base <= 0xFFFFFFFF:
        raise AsmError(0, f"base {base!r} is not a 32-bit address")
    source = _Parser(bits).parse(text)
    return _Assembler(source, base).run()


class _Fail(Exception):
    """Internal: an error in the statement being processed (line added later)."""


# --------------------------------------------------------------------------
# Registers and keywords

_GPR = {}                                   # name -> (number, size)
for _i, _n in enumerate(REG32_NAMES):
    _GPR[_n] = (_i, 4)
for _i, _n in enumerate(REG16_NAMES):
    _GPR[_n] = (_i, 2)
for _i, _n in enumerate(REG8_NAMES):
    _GPR[_n] = (_i, 1)
_REGISTERS = {n: (REG, num, size) for n, (num, size) in _GPR.items()}
_REGISTERS.update({n: (SREG, i, 2) for i, n in enumerate(SEG_NAMES)})
_REGISTERS.update({f"cr{i}": (CREG, i, 4) for i in range(8)})
_REGISTERS.update({f"dr{i}": (DREG, i, 4) for i in range(8)})
_EIZ = "eiz"                                # SIB "no index", objdump's spelling
_CONTROL_REGS = (0, 2, 3, 4)                # those the i386 (and the decoder) has

_SIZE_WORDS = {"byte": 1, "word": 2, "dword": 4, "fword": 6, "qword": 8, "tbyte": 10}
_SIZE_NAMES = {1: "BYTE", 2: "WORD", 4: "DWORD", 6: "FWORD", 8: "QWORD", 10: "TBYTE"}
_SEG_PREFIX = (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65)
_PREFIX_WORDS = {   # word -> (slot, value)
    "rep": ("rep", 0xF3), "repe": ("rep", 0xF3), "repz": ("rep", 0xF3),
    "repne": ("rep", 0xF2), "repnz": ("rep", 0xF2), "lock": ("lock", 0xF0),
    "data16": ("data", 16), "data32": ("data", 32),
    "addr16": ("addr", 16), "addr32": ("addr", 32),
    **{name: ("seg", i) for i, name in enumerate(SEG_NAMES)},
    # Later processors' hints, as objdump prints them: MPX `bnd` (F2 on a
    # branch), CET `notrack` (3E on an indirect branch), HLE xacquire/xrelease.
    "bnd": ("rep", 0xF2), "notrack": ("seg", DS),
    "xacquire": ("rep", 0xF2), "xrelease": ("rep", 0xF3),
}
_RESERVED = set(_REGISTERS) | {_EIZ} | set(_SIZE_WORDS) | {
    "ptr", "offset", "short", "near", "far", "flat"}


# --------------------------------------------------------------------------
# Templates: the decoder's opcode maps turned around

@attrs.frozen
class _Spec:
    method: str       # E G M R S C D I J O A X Y Z, "reg"/"sreg" (fixed), "one"
    size: str         # b w d q s v z p a y bs or "" (no size: LEA's M)
    fixed: int = -1   # register number of a fixed register operand


@attrs.frozen
class _Template:
    mnemonic: str
    opcode: tuple     # opcode bytes (0F xx for the two-byte map)
    ext: int          # ModRM.reg from the group, -1 if none
    specs: tuple
    opsize: int = 0   # 16/32 for the halves of "cbw/cwde", else 0
    adsize: int = 0   # 16/32 for "jcxz/jecxz"
    prefix: int = 0   # a mandatory prefix (PAUSE's F3)
    order: int = 0    # position in the maps: the tie-break

    @property
    def modrm(self) -> bool:
        return self.ext >= 0 or any(s.method in "EGMRSCD" for s in self.specs)


_FIXED_SPECS = {
    "AL": ("reg", "b", 0), "CL": ("reg", "b", 1), "DL": ("reg", "b", 2), "BL": ("reg", "b", 3),
    "AH": ("reg", "b", 4), "CH": ("reg", "b", 5), "DH": ("reg", "b", 6), "BH": ("reg", "b", 7),
    "AX": ("reg", "w", 0), "CX": ("reg", "w", 1), "DX": ("reg", "w", 2), "BX": ("reg", "w", 3),
    **{f"e{r}": ("reg", "v", i) for i, r in enumerate(
        ("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI"))},
    **{s.upper(): ("sreg", "w", i) for i, s in enumerate(SEG_NAMES)},
}
# Entries GNU never emits: 82 (an alias of 80), F6/F7 /1 (TEST), C0-D3 /6 (SAL).
_ALIAS_ENCODINGS = {((0x82,), -1), ((0xF6,), 1), ((0xF7,), 1),
                    ((0xD0,), 6), ((0xD1,), 6), ((0xD2,), 6), ((0xD3,), 6),
                    ((0xC0,), 6), ((0xC1,), 6)}
# Mnemonics whose "a/b" names are "default/word": pusha (default) pushaw, pushad.
_SIZE_SUFFIXED = {"pusha", "popa", "pushf", "popf", "iret"}


def _parse_spec(text: str) -> _Spec:
    if text in _FIXED_SPECS:
        return _Spec(*_FIXED_SPECS[text])
    if text == "1":
        return _Spec("one", "b")
    return _Spec(text[0], text[1:])


def _specs_of(rest: str, inherited: tuple) -> tuple:
    if rest.startswith("+"):                # "+Ib/Iz": appended to the group's operands
        byte_spec, _, word_spec = rest[1:].partition("/")
        extra = byte_spec if inherited[0].size == "b" else word_spec
        return inherited + (_parse_spec(extra),)
    if rest:
        return tuple(_parse_spec(s) for s in rest.split(","))
    return inherited


def _build_templates() -> dict:
    index: dict[str, list] = {}
    seen = set()
    order = 0

    def add(name, opcode, ext, specs, **kw):
        nonlocal order
        if (opcode, ext) in _ALIAS_ENCODINGS or (opcode, -1) in _ALIAS_ENCODINGS:
            return
        if any(s.method == "Z" for s in specs):         # 40+r ... : one template per row
            opcode = opcode[:-1] + (opcode[-1] & ~7,)
        key = (name, opcode, ext, specs)
        if key in seen:
            return
        seen.add(key)
        order += 1
        index.setdefault(name, []).append(
            _Template(name, opcode, ext, specs, order=order, **kw))

    def add_entry(text, opcode, ext=-1, inherited=()):
        name, _, rest = text.partition(" ")
        specs = _specs_of(rest, inherited)
        if "/" not in name:
            add(name, opcode, ext, specs)
            return
        short, long = name.split("/")
        if long == "jecxz":
            add(short, opcode, ext, specs, adsize=16)
            add(long, opcode, ext, specs, adsize=32)
        elif long in _SIZE_SUFFIXED:
            add(long, opcode, ext, specs)
            add(short, opcode, ext, specs, opsize=16)
            add(long + "d", opcode, ext, specs, opsize=32)
        else:
            add(short, opcode, ext, specs, opsize=16)
            add(long, opcode, ext, specs, opsize=32)

    def add_map(table, escape):
        for op in sorted(table):
            text = table[op]
            opcode = escape + (op,)
            if not text.startswith("@"):
                add_entry(text, opcode)
                continue
            group, _, rest = text[1:].partition(" ")
            inherited = tuple(_parse_spec(s) for s in rest.split(",")) if rest else ()
            for ext, entry in enumerate(opcodes.GROUPS[group]):
                for form in (entry if isinstance(entry, tuple) else (entry,)):
                    if form is not None:
                        add_entry(form, opcode, ext, inherited)

    add_map(opcodes.ONE_BYTE, ())
    add_map(opcodes.TWO_BYTE, (0x0F,))
    add("pause", (0x90,), -1, (), prefix=0xF3)
    return index


_TEMPLATES = _build_templates()

_CC_ALIASES = {"z": "e", "nz": "ne", "c": "b", "nae": "b", "nc": "ae", "nb": "ae",
               "na": "be", "nbe": "a", "pe": "p", "po": "np", "nge": "l", "nl": "ge",
               "ng": "le", "nle": "g"}
_ALIASES = {"sal": "shl", "wait": "fwait", "xlatb": "xlat", "loopz": "loope",
            "loopnz": "loopne"}
for _cc, _canon in _CC_ALIASES.items():
    for _stem in ("j", "set", "cmov"):
        _ALIASES[_stem + _cc] = _stem + _canon
# Mnemonics taking a w/d suffix that sets the operand size (pushw, lgdtd, retfw ...).
_SUFFIX_OK = {"push", "pop", "ret", "retf", "call", "jmp", "enter", "leave",
              "lgdt", "lidt", "sgdt", "sidt"}
_STRING_OPERANDS = {   # bare string mnemonic -> its operands ("X"/"Y" memory, registers)
    "movs": ("Y", "X"), "cmps": ("X", "Y"), "stos": ("Y", "A"), "lods": ("A", "X"),
    "scas": ("A", "Y"), "ins": ("Y", "dx"), "outs": ("dx", "X"),
}
_DEFAULT_SIZED = {"push", "pop", "call", "jmp"}   # an unsized [mem] takes the mode's size
_SHIFTS = set(opcodes.GROUPS["grp2"])
_REP_OK = set(opcodes.STRING) | {"ret", "nop"}
_BRANCHES = {name for name, tpls in _TEMPLATES.items()
             if any(s.method == "J" for t in tpls for s in t.specs)}
_RELAXABLE = {name for name in _BRANCHES
              if {s.size for t in _TEMPLATES[name] for s in t.specs if s.method == "J"}
              == {"b", "z"}}          # jmp and jcc: have both a short and a near form


def _mnemonic(word: str):
    """Assembler mnemonic -> (table mnemonic, forced operand size, string size)."""
    word = _ALIASES.get(word, word)
    if word in _TEMPLATES:
        return word, 0, 0
    stem, suffix = word[:-1], word[-1:]
    if stem in _STRING_OPERANDS and suffix in "bwd":
        return stem, {"b": 0, "w": 16, "d": 32}[suffix], {"b": 1, "w": 2, "d": 4}[suffix]
    if stem in _SUFFIX_OK and suffix in "wd":
        return stem, 16 if suffix == "w" else 32, 0
    return None, 0, 0


# --------------------------------------------------------------------------
# Source text -> tokens

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d[\w$]*)
  | (?P<id>[A-Za-z_.$?@][\w.$?@]*)
  | (?P<str>"(?:\\.|[^"\\])*")
  | (?P<chr>'(?:\\.|[^'\\])*')
  | (?P<op><<|>>|[-+*/%~&|^()\[\],:=])
""", re.VERBOSE)
_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "a": 7, "b": 8, "f": 12, "v": 11,
            "e": 27, "\\": 92, "'": 39, '"': 34}


def _split_statements(line: str) -> list:
    """Strip a `#` or `//` comment and split at `;`, both outside quotes."""
    parts, start, quote, i = [], 0, "", 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#" or line.startswith("//", i):
            break
        elif c == ";":
            parts.append(line[start:i])
            start = i + 1
        i += 1
    parts.append(line[start:i])
    return [p for p in parts if p.strip()]


def _tokenize(text: str) -> list:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise _Fail(f"unexpected character {text[pos]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def _unescape(body: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c != "\\":
            out += c.encode("utf-8")
            continue
        if i >= len(body):
            raise _Fail("string ends with a backslash")
        c = body[i]
        i += 1
        if c in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i:])
            if not digits:
                raise _Fail("\\x needs hex digits")
            out.append(int(digits.group(), 16))
            i += len(digits.group())
        elif c in "01234567":
            digits = re.match(r"[0-7]{0,2}", body[i:]).group()
            value = int(c + digits, 8)
            if value > 0xFF:
                raise _Fail(f"octal escape \\{c + digits} out of range")
            out.append(value)
            i += len(digits)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        else:
            raise _Fail(f"unknown escape \\{c}")
    return bytes(out)


def _number(text: str):
    """A numeric token -> int, or ("local", digits, "b"/"f") for `1b` / `1f`."""
    t = text.lower()
    if re.fullmatch(r"0x[0-9a-f]+", t):
        return int(t, 16)
    if re.fullmatch(r"0b[01]+", t):
        return int(t[2:], 2)
    if re.fullmatch(r"\d+[bf]", t):
        return ("local", t[:-1], t[-1])
    if re.fullmatch(r"0[0-7]+", t):
        return int(t, 8)
    if re.fullmatch(r"[1-9]\d*|0", t):
        return int(t)
    raise _Fail(f"bad number {text!r}")


class _Cursor:
    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self, ahead=0):
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else (None, None)

    def word(self, ahead=0):
        """The lower-cased identifier at the cursor, or None."""
        kind, text = self.peek(ahead)
        return text.lower() if kind == "id" else None

    def next(self):
        tok = self.peek()
        if tok[0] is None:
            raise _Fail("unexpected end of statement")
        self.pos += 1
        return tok

    def accept(self, text) -> bool:
        kind, tok = self.peek()
        if kind == "op" and tok == text or kind == "id" and tok.lower() == text:
            self.pos += 1
            return True
        return False

    def expect(self, text):
        if not self.accept(text):
            found = self.peek()[1]
            raise _Fail(f"expected {text!r}, found {found!r}" if found else
                        f"expected {text!r} at the end of the statement")

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)


# --------------------------------------------------------------------------
# Parsed statements

class _Stmt:
    """One statement: what it is, where it came from, and layout state."""
    __slots__ = ("kind", "line", "index", "bits", "frag", "args", "offset", "size",
                 "long", "relaxable")

    def __init__(self, kind, line, bits, frag, args):
        self.kind = kind          # label equ insn data align org space times
        self.line = line
        self.index = 0            # position in the statement list (text order)
        self.bits = bits
        self.frag = frag          # GNU frag: bumped after relaxable jumps and alignment
        self.args = args
        self.offset = 0
        self.size = 0
        self.long = False         # relaxable jump: near form chosen
        self.relaxable = False


@attrs.frozen
class _Insn:
    prefixes: tuple       # prefix words
    mnemonic: str         # as written (lower case)
    operands: tuple       # parsed operands


@attrs.frozen
class _Source:
    statements: list
    lines: list           # source lines
    symbols: dict         # name -> ("label"|"const", statement index)
    display: dict         # internal local-label name -> how it was written
    has_label: dict       # const name -> its expression refers to labels


class _Parser:
    def __init__(self, bits):
        self.bits = bits
        self.frag = 0
        self.statements = []
        self.symbols = {}
        self.display = {}
        self.has_label = {}
        self.local_counts = {}
        self.line = 0

    def parse(self, text: str) -> _Source:
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            self.line = number
            try:
                for part in _split_statements(line):
                    self._statement(_Cursor(_tokenize(part)))
            except _Fail as e:
                raise AsmError(number, str(e)) from None
            except RecursionError:
                raise AsmError(number, "expression nested too deeply") from None
            except Exception as e:      # a bug: still report it against its line
                raise AsmError(number, f"internal error: {e!r}") from e
        for i, st in enumerate(self.statements):
            st.index = i
        return _Source(self.statements, lines, self.symbols, self.display, self.has_label)

    # -- statements

    def _add(self, kind, args):
        st = _Stmt(kind, self.line, self.bits, self.frag, args)
        self.statements.append(st)
        return st

    def _define(self, name, kind):
        if name in self.symbols:
            raise _Fail(f"symbol {self.display.get(name, name)!r} already defined")
        if name.lower() in _RESERVED:
            raise _Fail(f"{name!r} is a reserved word and cannot be a symbol")
        self.symbols[name] = (kind, len(self.statements))

    def _statement(self, cur: _Cursor):
        while cur.peek(1) == ("op", ":") and cur.peek()[0] in ("id", "num") \
                and cur.word() not in _PREFIX_WORDS:
            if cur.word() in _REGISTERS:
                raise _Fail(f"{cur.word()!r} is a reserved word and cannot be a label")
            kind, text = cur.next()
            cur.next()
            name = self._label_name(kind, text)
            self._define(name, "label")
            self._add("label", name)
        if cur.at_end():
            return
        kind, text = cur.peek()
        if kind != "id":
            raise _Fail(f"expected an instruction or directive, found {text!r}")
        word = text.lower()
        if cur.peek(1) == ("op", "=") or cur.word(1) == "equ":
            cur.next()
            cur.next()
            self._equ(text, cur)
        elif word == "times":
            cur.next()
            count = self._expr(cur)
            inner = self._sub_statement(cur)
            self._add("times", (count, inner))
        elif self._directive(word, cur):
            pass
        else:
            self._add_insn(self._insn(cur))

    def _label_name(self, kind, text):
        if kind == "num":
            if not text.isdigit():
                raise _Fail(f"bad local label {text!r}")
            n = self.local_counts.get(text, 0)
            self.local_counts[text] = n + 1
            name = f"{text}\x02{n}"
            self.display[name] = f"{text} (local label)"
            return name
        return text

    def _sub_statement(self, cur):
        """The statement after `times N`: an instruction or a data directive."""
        saved = self.statements
        self.statements = []
        try:
            word = cur.word()
            if word is None:
                raise _Fail("times needs a statement to repeat")
            if not self._directive(word, cur):
                self._add_insn(self._insn(cur), in_times=True)
            if len(self.statements) != 1 or self.statements[0].kind not in ("insn", "data"):
                raise _Fail("times repeats one instruction or data directive")
            return self.statements[0]
        finally:
            self.statements = saved

    def _equ(self, name, cur):
        expr = self._expr(cur)
        self._end(cur)
        self.has_label[name] = self._refers_to_labels(expr)
        self._define(name, "const")
        self._add("equ", (name, expr))

    def _refers_to_labels(self, expr) -> bool:
        if expr[0] == ".":
            return True
        if expr[0] == "s":
            kind = self.symbols.get(expr[1], ("fwd",))[0]
            return kind != "const" or self.has_label.get(expr[1], True)
        return any(self._refers_to_labels(e) for e in expr[1:] if isinstance(e, tuple))

    def _end(self, cur):
        if not cur.at_end():
            raise _Fail(f"junk {cur.peek()[1]!r} at the end of the statement")

    # -- directives

    def _directive(self, word, cur) -> bool:
        d = word.lstrip(".") if word.startswith(".") else word
        dotted = word.startswith(".")
        data_sizes = {"byte": 1, "word": 2, "short": 2, "long": 4, "int": 4, "quad": 8}
        nasm_data = {"db": 1, "dw": 2, "dd": 4, "dq": 8}
        if (dotted and d in data_sizes) or (not dotted and d in nasm_data):
            cur.next()
            size = data_sizes[d] if dotted else nasm_data[d]
            self._add("data", (size, self._data_items(cur, strings=size == 1)))
        elif dotted and d in ("ascii", "asciz", "string"):
            cur.next()
            items = self._data_items(cur, strings=True)
            if any(not isinstance(i, bytes) for i in items):
                raise _Fail(f".{d} takes strings only")
            if d != "ascii":
                items = [s + b"\0" for s in items]
            self._add("data", (1, items))
        elif (dotted and d in ("align", "balign", "p2align")) or word == "align":
            cur.next()
            args = self._args(cur, 1, 3)
            self._add("align", (d == "p2align", *args, *(None,) * (3 - len(args))))
            self.frag += 1
        elif word in (".org", "org"):
            cur.next()
            args = self._args(cur, 1, 2)
            self._add("org", (args[0], args[1] if len(args) > 1 else None))
            self.frag += 1
        elif dotted and d in ("space", "skip", "zero"):
            cur.next()
            args = self._args(cur, 1, 1 if d == "zero" else 2)
            self._add("space", (args[0], 1, args[1] if len(args) > 1 else None))
        elif dotted and d == "fill":
            cur.next()
            args = self._args(cur, 1, 3)
            self._add("space", (args[0], args[1] if len(args) > 1 else ("n", 1),
                                args[2] if len(args) > 2 else None))
        elif word in ("bits", "use16", "use32", ".code16", ".code32"):
            cur.next()
            if word == "bits":
                kind, text = cur.next()
                if text not in ("16", "32"):
                    raise _Fail(f"bits must be 16 or 32, not {text!r}")
                self.bits = int(text)
            else:
                self.bits = int(word[-2:])
            self._end(cur)
        elif dotted and d in ("equ", "set"):
            cur.next()
            kind, name = cur.next()
            if kind != "id":
                raise _Fail(f"{word} needs a symbol name")
            cur.expect(",")
            self._equ(name, cur)
        elif dotted and d in ("intel_syntax", "text", "globl", "global", "local",
                              "type", "size", "file", "ident"):
            cur.pos = len(cur.tokens)                  # accepted and ignored
        elif dotted and d in ("att_syntax", "code64"):
            raise _Fail(f"{word} is not supported")
        elif dotted and _mnemonic(word)[0] is None:
            raise _Fail(f"unknown directive {word!r}")
        else:
            return False
        return True

    def _args(self, cur, low, high):
        args = [] if cur.at_end() else [self._expr(cur)]
        while cur.accept(","):
            args.append(None if cur.peek() == ("op", ",") or cur.at_end() else self._expr(cur))
        self._end(cur)
        if not low <= len(args) <= high or args[0] is None:
            raise _Fail(f"expected {low} to {high} arguments")
        return args

    def _data_items(self, cur, strings):
        items = []
        while True:
            kind, text = cur.peek()
            if kind == "str" or (kind == "chr" and strings and len(_unescape(text[1:-1])) != 1
                                 and cur.peek(1)[1] in (",", None)):
                if not strings:
                    raise _Fail("strings are allowed in db/.byte/.ascii only")
                cur.next()
                items.append(_unescape(text[1:-1]))
            else:
                items.append(self._expr(cur))
            if not cur.accept(","):
                break
        self._end(cur)
        return items

    # -- instructions

    def _add_insn(self, insn, in_times=False):
        st = self._add("insn", insn)
        name, _, _ = _mnemonic(insn.mnemonic)
        if name in _RELAXABLE and not in_times and len(insn.operands) == 1:
            op = insn.operands[0]
            if op[0] == "expr" and self._refers_to_labels(op[2]):
                st.relaxable = True
                self.frag += 1

    def _insn(self, cur) -> _Insn:
        prefixes = []
        while cur.word() in _PREFIX_WORDS and cur.peek(1) != ("op", ":"):
            prefixes.append(cur.next()[1].lower())
        if cur.at_end():
            return _Insn(tuple(prefixes), "", ())
        kind, text = cur.next()
        if kind != "id":
            raise _Fail(f"expected a mnemonic, found {text!r}")
        mnemonic = text.lower()
        operands = []
        if not cur.at_end():
            operands.append(self._operand(cur))
            while cur.accept(","):
                operands.append(self._operand(cur))
        self._end(cur)
        return _Insn(tuple(prefixes), mnemonic, tuple(operands))

    def _operand(self, cur):
        """-> ("reg", name) | ("mem", size, seg, expr) | ("expr", size, expr, offset)
              | ("far", selector expr, offset expr)"""
        size = 0
        if cur.word() in _SIZE_WORDS:
            size = _SIZE_WORDS[cur.next()[1].lower()]
            cur.accept("ptr")
        if cur.accept("short") or cur.accept("near"):     # ignored, as GNU does
            cur.accept("ptr")
        if cur.accept("offset"):
            if cur.word() == "flat" and cur.peek(1) == ("op", ":"):
                cur.pos += 2
            return ("expr", size, self._expr(cur), True)
        word = cur.word()
        if word in _REGISTERS and cur.peek(1) == ("op", ":") and _REGISTERS[word][0] == SREG:
            cur.pos += 2
            return ("mem", size, SEG_NAMES.index(word), self._memory_expr(cur, bracket=False))
        if word in _REGISTERS and cur.peek(1)[1] in (",", None):
            cur.next()
            if size:
                raise _Fail(f"{_SIZE_NAMES[size]} PTR before a register")
            return ("reg", word)
        if cur.peek() == ("op", "["):
            return ("mem", size, -1, self._memory_expr(cur, bracket=True))
        expr = self._expr(cur)
        if cur.peek() == ("op", "["):
            return ("mem", size, -1, ("b", "+", expr, self._memory_expr(cur, bracket=True)))
        if cur.accept(":"):
            return ("far", expr, self._expr(cur))
        return ("expr", size, expr, False)

    def _memory_expr(self, cur, bracket):
        """`[...]` (several in a row add up), or a bare displacement after `seg:`."""
        if not bracket and cur.peek() != ("op", "["):
            return self._expr(cur, regs=True)
        expr = None
        while cur.accept("["):
            part = self._expr(cur, regs=True)
            cur.expect("]")
            expr = part if expr is None else ("b", "+", expr, part)
        if cur.peek()[0] == "op" and cur.peek()[1] in ("+", "-"):   # `[ebx]+4`, as MASM
            sign = cur.next()[1]
            expr = ("b", sign, expr, self._expr(cur, regs=True, level=5))
        return expr

    # -- expressions (C precedence)

    _BINARY = (("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "%"))

    def _expr(self, cur, regs=False, level=0):
        if level == len(self._BINARY):
            return self._unary(cur, regs)
        left = self._expr(cur, regs, level + 1)
        while cur.peek()[0] == "op" and cur.peek()[1] in self._BINARY[level]:
            op = cur.next()[1]
            left = ("b", op, left, self._expr(cur, regs, level + 1))
        return left

    def _unary(self, cur, regs):
        kind, text = cur.peek()
        if kind == "op" and text in "-+~":
            cur.next()
            inner = self._unary(cur, regs)
            return inner if text == "+" else ("u", text, inner)
        if cur.accept("("):
            inner = self._expr(cur, regs)
            cur.expect(")")
            return inner
        kind, text = cur.next()
        if kind == "num":
            value = _number(text)
            if isinstance(value, tuple):
                return ("s", self._local_ref(value[1], value[2], text))
            return ("n", value)
        if kind == "chr":
            chars = _unescape(text[1:-1])
            if len(chars) != 1:
                raise _Fail(f"character constant {text} is not one character")
            return ("n", chars[0])
        if kind == "id":
            word = text.lower()
            if text in (".", "$"):
                return (".",)
            if word in _REGISTERS or word == _EIZ:
                if not regs:
                    raise _Fail(f"register {word} not allowed here "
                                "(registers belong inside [...] in an address)")
                return ("r", word)
            if word in _RESERVED:
                raise _Fail(f"unexpected {text!r}")
            return ("s", text)
        raise _Fail(f"unexpected {text!r} in expression")

    def _local_ref(self, digits, direction, text):
        n = self.local_counts.get(digits, 0)
        if direction == "b":
            if n == 0:
                raise _Fail(f"{text}: no local label {digits} before this")
            return f"{digits}\x02{n - 1}"
        name = f"{digits}\x02{n}"
        self.display.setdefault(name, text)
        return name


# --------------------------------------------------------------------------
# Values

class _Val:
    """An evaluated expression: its value now, plus what GNU's one pass would
    know about it.  `regs` lists (register, coefficient, scale written) for
    addresses; `frags` the net count of labels per frag (label differences
    inside one frag cancel); `forward` a symbol defined further down."""
    __slots__ = ("value", "regs", "frags", "forward")

    def __init__(self, value, regs=(), frags=None, forward=False):
        self.value = value
        self.regs = regs
        self.frags = frags or {}
        self.forward = forward

    @property
    def known(self) -> bool:
        """Known where it is used, so a short encoding may be chosen."""
        return not self.forward and not self.frags

    @property
    def reloc(self) -> int:
        return sum(self.frags.values())

    @property
    def plain(self) -> bool:
        return not self.regs and not self.frags


def _merge(a: dict, b: dict, sign: int) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
        if out[k] == 0:
            del out[k]
    return out


def _scale(val: _Val, c: int) -> _Val:
    regs = tuple((r, coef * c, True) for r, coef, _ in val.regs)
    frags = {k: v * c for k, v in val.frags.items() if v * c}
    return _Val(val.value * c, regs, frags, val.forward)


def _c_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _binary(op, a: _Val, b: _Val) -> _Val:
    if op in "+-":
        sign = 1 if op == "+" else -1
        regs = a.regs + tuple((r, sign * c, s) for r, c, s in b.regs)
        return _Val(a.value + sign * b.value, regs, _merge(a.frags, b.frags, sign),
                    a.forward or b.forward)
    if op == "*":
        if a.plain:
            a, b = b, a
        if not b.plain:
            raise _Fail("only a register or a constant may be multiplied" if a.regs or b.regs
                        else "labels may only be added or subtracted")
        if a.regs and not b.known:
            raise _Fail("a scale must be a constant")
        out = _scale(a, b.value)
        out.forward = a.forward or b.forward
        return out
    if not a.plain or not b.plain:
        raise _Fail(f"operator {op} needs constants")
    x, y = a.value, b.value
    if op in "/%" and y == 0:
        raise _Fail("division by zero")
    if op in ("<<", ">>") and not 0 <= y < 256:
        raise _Fail(f"bad shift count {y}")
    value = {"/": lambda: _c_div(x, y), "%": lambda: x - y * _c_div(x, y),
             "<<": lambda: x << y, ">>": lambda: x >> y, "&": lambda: x & y,
             "|": lambda: x | y, "^": lambda: x ^ y}[op]()
    return _Val(value, forward=a.forward or b.forward)


# --------------------------------------------------------------------------
# Operands ready for matching

class _RegOp:
    __slots__ = ("kind", "num", "size")

    def __init__(self, kind, num, size):
        self.kind, self.num, self.size = kind, num, size


class _MemOp:
    __slots__ = ("size", "seg", "base", "index", "scale", "disp", "adsize")

    def __init__(self, size, seg, base, index, scale, disp, adsize):
        self.size = size        # bytes, 0 if not written
        self.seg = seg          # explicit segment, -1 for none
        self.base = base        # register number or -1
        self.index = index      # register number, 4 for eiz, -1 for none
        self.scale = scale
        self.disp = disp        # _Val
        self.adsize = adsize    # 16/32 from the registers, 0 if none

    @property
    def moffs(self) -> bool:
        return self.base < 0 and self.index < 0


class _ImmOp:
    __slots__ = ("val", "size")

    def __init__(self, val, size):
        self.val, self.size = val, size


class _TargetOp:
    __slots__ = ("val",)

    def __init__(self, val):
        self.val = val


class _FarOp:
    __slots__ = ("sel", "off")

    def __init__(self, sel, off):
        self.sel, self.off = sel, off


_RM16 = {(3, 6): 0, (3, 7): 1, (5, 6): 2, (5, 7): 3, (6,): 4, (7,): 5, (5,): 6, (3,): 7}


def _memory_registers(regs):
    """(register, coefficient, scale written) terms -> (base, index, scale, adsize)."""
    base = index = -1
    scale = 1
    sizes = set()
    unscaled = []
    for name, coef, written in regs:
        if coef <= 0:
            raise _Fail(f"register {name} cannot be subtracted")
        if name == _EIZ:
            num, size = 4, 4
        else:
            kind, num, size = _REGISTERS[name]
            if kind != REG or size == 1:
                raise _Fail(f"{name} cannot address memory")
        sizes.add(size)
        if written or coef != 1 or name == _EIZ:
            if index >= 0:
                raise _Fail("only one register may be scaled")
            if coef not in (1, 2, 4, 8):
                raise _Fail(f"scale {coef} is not 1, 2, 4 or 8")
            index, scale = num, coef
            if num == 4 and name != _EIZ:
                raise _Fail("esp cannot be an index register")
        else:
            unscaled.append(num)
    if len(sizes) > 1:
        raise _Fail("16-bit and 32-bit registers mixed in an address")
    adsize = 16 if sizes == {2} else 32 if sizes else 0
    if len(unscaled) > 2 or (unscaled and len(unscaled) + (index >= 0) > 2):
        raise _Fail("too many registers in an address")
    if unscaled:
        base = unscaled[0]
        if len(unscaled) == 2:
            index = unscaled[1]
            if index == 4 and adsize == 32:
                if base == 4:
                    raise _Fail("esp cannot be an index register")
                base, index = index, base
    if adsize == 16:
        if index >= 0 and scale != 1:
            raise _Fail("16-bit addresses have no scale")
        key = tuple(sorted(r for r in (base, index) if r >= 0))
        if key not in _RM16:
            raise _Fail("16-bit addresses are [bx|bp] + [si|di] + disp")
    return base, index, scale, adsize


# --------------------------------------------------------------------------
# The assembler proper

@attrs.define
class _Ctx:
    """Per-statement state while encoding."""
    address: int          # absolute address of the statement
    bits: int
    strict: bool          # final pass: range errors are real
    opsize: int = 0       # forced by a suffix or data16/data32
    adsize: int = 0       # forced by addr16/addr32
    long: bool = False    # relaxable jump is in its near form
    relaxable: bool = False


class _Enc:
    __slots__ = ("code", "order", "guess", "unpinned")

    def __init__(self, code, order, guess, unpinned):
        self.code = code
        self.order = order
        self.guess = guess          # size an unsized [mem] was given (0: none)
        self.unpinned = unpinned    # an unsized [mem] took the default operand size


class _Range(Exception):
    """Internal: a value does not fit the template's field."""


def _fits(value: int, size: int) -> bool:
    bits = size * 8
    return -(1 << (bits - 1)) <= value < (1 << bits)


def _signed(value: int, size: int) -> int:
    bits = size * 8
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _le(value: int, size: int) -> bytes:
    return (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little")


class _Assembler:
    MAX_PASSES = 100

    def __init__(self, source: _Source, base: int):
        self.src = source
        self.base = base
        self.labels = {}        # name -> value this pass (previous pass for forward ones)
        self.dot_delta = 0      # `.` inside a data list: bytes already emitted
        self.consts = {}        # name -> _Val
        self.line_text = source.lines
        self._check_circular_constants()

    def _check_circular_constants(self):
        """`x = y` with `y = x + 1`: an error, not a value found by iterating."""
        uses = {}
        for st in self.src.statements:
            if st.kind == "equ":
                name, expr = st.args
                uses[name] = (st.line, set(_symbols_in(expr)) & self.src.symbols.keys())
        state = {}

        def visit(name, path):
            if state.get(name) == "done" or name not in uses:
                return
            if state.get(name) == "active":
                raise AsmError(uses[name][0], "circular definition: "
                               + " -> ".join(path[path.index(name):] + [name]))
            state[name] = "active"
            for used in sorted(uses[name][1]):
                visit(used, path + [name])
            state[name] = "done"

        for name in uses:
            visit(name, [])

    # -- driver

    def run(self) -> Program:
        stmts = self.src.statements
        relaxable = [st for st in stmts if st.relaxable]
        for _ in range(self.MAX_PASSES):
            self._settle()
            grown = [st for st in relaxable if not st.long and not self._short_fits(st)]
            if not grown:
                break
            for st in grown:
                st.long = True
        else:
            raise AsmError(stmts[-1].line if stmts else 0, "jump relaxation does not converge")
        chunks = self._pass(strict=True)
        code = b"".join(chunks)
        return Program(code=code, labels=self._public_labels(),
                       constants={k: v.value for k, v in self.consts.items()},
                       listing=self._listing(chunks), base=self.base)

    def _settle(self):
        """Passes until every label, constant and size stays put."""
        previous = None
        changed = []
        for _ in range(self.MAX_PASSES):
            self._pass(strict=False)
            state = (dict(self.labels), {k: v.value for k, v in self.consts.items()},
                     [st.size for st in self.src.statements])
            if state == previous:
                return
            if previous is not None:
                changed = [st for st, old in zip(self.src.statements, previous[2])
                           if st.size != old]
            previous = state
        line = (changed or self.src.statements)[0].line
        raise AsmError(line, "the layout does not settle (an .org or alignment that "
                             "depends on what follows it?)")

    def _short_fits(self, st) -> bool:
        target = self._eval(st.args.operands[0][2], st).value
        return -128 <= _signed(target - (self.base + st.offset + st.size), 4) <= 127

    def _pass(self, strict):
        offset = 0
        chunks = []
        for st in self.src.statements:
            st.offset = offset
            try:
                data = self._emit(st, strict)
            except _Fail as e:
                raise AsmError(st.line, str(e)) from None
            except RecursionError:
                raise AsmError(st.line, "expression nested too deeply") from None
            except Exception as e:      # a bug: still report it against its line
                raise AsmError(st.line, f"internal error: {e!r}") from e
            st.size = len(data)
            chunks.append(data)
            offset += len(data)
        return chunks

    def _public_labels(self):
        return {name: value for name, value in self.labels.items() if "\x02" not in name}

    def _listing(self, chunks):
        rows = {}
        for st, data in zip(self.src.statements, chunks):
            if st.line not in rows:
                rows[st.line] = [self.base + st.offset, b""]
            rows[st.line][1] += data
        return tuple(ListingLine(address, bytes(data), self.line_text[line - 1], line)
                     for line, (address, data) in sorted(rows.items()))

    # -- statements

    def _emit(self, st, strict) -> bytes:
        address = self.base + st.offset
        if st.kind == "label":
            self.labels[st.args] = address
            return b""
        if st.kind == "equ":
            name, expr = st.args
            val = self._eval(expr, st)
            if val.regs:
                raise _Fail("a register in a constant")
            self.consts[name] = val
            return b""
        if st.kind == "insn":
            return self._insn(st, address, strict)
        if st.kind == "data":
            return self._data(st, strict)
        if st.kind == "align":
            return self._align(st, address)
        if st.kind == "org":
            return self._org(st, strict)
        if st.kind == "space":
            return self._space(st, strict)
        if st.kind == "times":
            return self._times(st, strict)
        raise _Fail(f"unknown statement kind {st.kind}")

    def _const(self, expr, st, what) -> int:
        val = self._eval(expr, st)
        if not val.plain or val.forward:
            raise _Fail(f"{what} must be a constant known here")
        return val.value

    def _data(self, st, strict) -> bytes:
        size, items = st.args
        out = bytearray()
        for item in items:
            if isinstance(item, bytes):
                out += item
                continue
            self.dot_delta = len(out)           # GNU: `.long ., .` is 0, 4
            try:
                val = self._eval(item, st)
            finally:
                self.dot_delta = 0
            if val.regs:
                raise _Fail("a register in data")
            if strict and not _fits(val.value, size):
                raise _Fail(f"value {val.value:#x} does not fit in {size} byte(s)")
            out += _le(val.value, size)
        return bytes(out)

    def _align(self, st, address) -> bytes:
        p2, n_expr, fill_expr, max_expr = st.args
        n = self._const(n_expr, st, "an alignment")
        if p2:
            if not 0 <= n < 32:
                raise _Fail(f"bad .p2align {n}")
            n = 1 << n
        if n <= 0 or n & (n - 1):
            raise _Fail(f"alignment {n} is not a power of 2")
        pad = -address % n
        if max_expr is not None and pad > self._const(max_expr, st, "a maximum"):
            return b""
        if fill_expr is None:
            return _nops(pad, st.bits)
        fill = self._const(fill_expr, st, "a fill value")
        if not _fits(fill, 1):
            raise _Fail(f"fill value {fill:#x} is not a byte")
        return _le(fill, 1) * pad

    def _org(self, st, strict) -> bytes:
        target_expr, fill_expr = st.args
        val = self._eval(target_expr, st)
        if val.regs or val.reloc not in (0, 1):
            raise _Fail(".org needs an offset or an address")
        target = val.value - (self.base if val.reloc else 0)
        fill = 0 if fill_expr is None else self._const(fill_expr, st, "a fill value")
        if target < st.offset:
            if not strict:
                return b""          # a forward label not placed yet
            raise _Fail(f".org {target:#x} moves backwards (now at offset {st.offset:#x})")
        if target - st.offset > 1 << 24:
            raise _Fail(".org too far ahead")
        return _le(fill, 1) * (target - st.offset)

    def _space(self, st, strict) -> bytes:
        count_expr, size_expr, fill_expr = st.args
        count = self._const(count_expr, st, "a count")
        size = self._const(size_expr, st, "a size") if isinstance(size_expr, tuple) else 1
        fill = 0 if fill_expr is None else self._eval(fill_expr, st).value
        if not 0 <= count <= 1 << 24 or size not in (1, 2, 4, 8):
            raise _Fail(f"bad count {count} or size {size}")
        if strict and not _fits(fill, min(size, 4)):
            raise _Fail(f"fill value {fill:#x} out of range")
        return _le(fill, size) * count

    def _times(self, st, strict) -> bytes:
        count_expr, inner = st.args
        count = self._const(count_expr, st, "a times count")
        if not 0 <= count <= 1 << 20:
            raise _Fail(f"bad times count {count}")
        out = b""
        for _ in range(count):
            inner.offset = st.offset + len(out)
            inner.index = st.index
            out += self._emit(inner, strict)
        return out

    # -- expressions

    def _eval(self, expr, st) -> _Val:
        tag = expr[0]
        if tag == "n":
            return _Val(expr[1])
        if tag == "s":
            return self._symbol(expr[1], st)
        if tag == ".":
            return _Val(self.base + st.offset + self.dot_delta, frags={st.frag: 1})
        if tag == "r":
            return _Val(0, regs=((expr[1], 1, False),))
        if tag == "u":
            val = self._eval(expr[2], st)
            if expr[1] == "-":
                return _scale(val, -1)
            if not val.plain:
                raise _Fail("~ needs a constant")
            return _Val(~val.value, forward=val.forward)
        return _binary(expr[1], self._eval(expr[2], st), self._eval(expr[3], st))

    def _symbol(self, name, st) -> _Val:
        kind_index = self.src.symbols.get(name)
        if kind_index is None:
            raise _Fail(f"undefined symbol {self.src.display.get(name, name)!r}")
        kind, index = kind_index
        forward = index > st.index
        if kind == "label":
            frag = self.src.statements[index].frag
            return _Val(self.labels.get(name, 0), frags={frag: 1}, forward=forward)
        val = self.consts.get(name)
        if val is None:
            return _Val(0, forward=True)
        return _Val(val.value, val.regs, val.frags, val.forward or forward)

    # -- instructions

    def _insn(self, st, address, strict) -> bytes:
        insn = st.args
        ctx = _Ctx(address=address, bits=st.bits, strict=strict, long=st.long,
                   relaxable=st.relaxable)
        slots = self._prefix_words(insn.prefixes, ctx)
        if not insn.mnemonic:
            return _prefix_bytes(slots)
        name, forced, string_size = _mnemonic(insn.mnemonic)
        if name is None:
            raise _Fail(f"unknown mnemonic {insn.mnemonic!r}")
        if forced:
            if ctx.opsize and ctx.opsize != forced:
                raise _Fail(f"{insn.mnemonic} conflicts with the data prefix")
            ctx.opsize = forced
        ops = [self._operand(op, name, st) for op in insn.operands]
        name, ops = self._rewrite(name, insn.mnemonic, ops, string_size, slots, ctx)
        self._check_prefixes(name, ops, slots)
        return self._choose(name, ops, slots, ctx)

    def _prefix_words(self, words, ctx) -> dict:
        """Explicit prefixes -> slots {"seg"|"addr"|"data"|"rep"|"lock": value,
        slot + " word": the word written}."""
        slots = {}
        for word in words:
            slot, value = _PREFIX_WORDS[word]
            if slot in slots:
                raise _Fail(f"two {slot} prefixes ({word})")
            if slot == "data":
                if value == ctx.bits:
                    raise _Fail(f"{word} in {ctx.bits}-bit code")
                ctx.opsize = value
            elif slot == "addr":
                if value == ctx.bits:
                    raise _Fail(f"{word} in {ctx.bits}-bit code")
                ctx.adsize = value
            slots[slot] = value
            slots[slot + " word"] = word
        return slots

    def _check_prefixes(self, name, ops, slots):
        mem_dest = bool(ops) and (isinstance(ops[0], _MemOp) or (
            name == "xchg" and any(isinstance(op, _MemOp) for op in ops)))
        if "lock" in slots and (name not in opcodes.LOCKABLE or not mem_dest):
            raise _Fail(f"lock prefix on {name or 'nothing'} (lockable instructions "
                        "with a memory destination only)")
        word = slots.get("rep word")
        if word == "bnd":
            if name not in _BRANCHES and name not in ("ret", "retf"):
                raise _Fail(f"bnd prefix on {name} (branches only)")
        elif word in ("xacquire", "xrelease"):
            if not ("lock" in slots or name == "xchg" and mem_dest
                    or word == "xrelease" and name == "mov" and mem_dest):
                raise _Fail(f"{word} needs a locked instruction")
        elif word and name not in _REP_OK:
            raise _Fail(f"{word} prefix on {name} (string instructions only)")
        if slots.get("seg word") == "notrack" and not (
                name in ("call", "jmp") and ops and not isinstance(ops[0], (_TargetOp, _FarOp))):
            raise _Fail("notrack prefix on an instruction other than an indirect call/jmp")

    def _operand(self, op, mnemonic, st):
        tag = op[0]
        if tag == "reg":
            kind, num, size = _REGISTERS[op[1]]
            if kind == CREG and num not in _CONTROL_REGS:
                raise _Fail(f"{op[1]} does not exist on the i386")
            return _RegOp(kind, num, size)
        if tag == "far":
            return _FarOp(self._plain(op[1], st), self._plain(op[2], st))
        if tag == "mem":
            _, size, seg, expr = op
            val = self._eval(expr, st)
            base, index, scale, adsize = _memory_registers(val.regs)
            val.regs = ()
            return _MemOp(size, seg, base, index, scale, val, adsize)
        _, size, expr, offset = op
        val = self._plain(expr, st)
        if mnemonic in _BRANCHES:
            return _TargetOp(val)
        if not offset and (val.reloc or self._bare_forward_symbol(expr, st)):
            return _MemOp(size, -1, -1, -1, 1, val, 0)     # `mov eax, label`: memory
        return _ImmOp(val, size)

    def _plain(self, expr, st) -> _Val:
        val = self._eval(expr, st)
        if val.regs:
            raise _Fail("registers belong inside [...]")
        return val

    def _bare_forward_symbol(self, expr, st) -> bool:
        """GNU reads a symbol it has not seen yet (alone, or +- a number) as a
        memory operand, even if it turns out to be an `equ` constant."""
        while expr[0] == "b" and expr[1] in "+-" and expr[3][0] == "n":
            expr = expr[2]
        if expr[0] != "s":
            return False
        kind, index = self.src.symbols[expr[1]]
        return index > st.index

    def _rewrite(self, name, written, ops, string_size, slots, ctx):
        """The implicit-operand spellings: movsb, shr eax, imul eax, 5, aam, int 3, xlat."""
        if string_size:
            if ops:
                raise _Fail(f"{written} takes no operands (use {name} with operands)")
            return name, self._string_operands(name, string_size, ctx)
        if name in _SHIFTS and len(ops) == 1:
            ops.append(_ImmOp(_Val(1), 0))
        elif name == "imul" and len(ops) == 2 and isinstance(ops[1], _ImmOp):
            ops.insert(1, ops[0])
        elif name in ("aam", "aad") and not ops:
            ops.append(_ImmOp(_Val(10), 0))
        elif name == "int" and len(ops) == 1 and isinstance(ops[0], _ImmOp) \
                and ops[0].val.known and ops[0].val.value == 3:
            name, ops = "int3", []
        elif name == "xlat" and len(ops) == 1:
            name, ops = "xlat", self._xlat_operand(ops[0], slots, ctx)
        elif name in _DEFAULT_SIZED:
            for op in ops:
                if isinstance(op, _MemOp) and not op.size:
                    op.size = (ctx.opsize or ctx.bits) // 8
        if name == "bswap" and ops and isinstance(ops[0], _RegOp) and ops[0].size != 4:
            raise _Fail("bswap needs a 32-bit register")
        return name, ops

    def _string_operands(self, name, size, ctx):
        adsize = ctx.adsize or ctx.bits
        si, di = 6, 7
        ops = []
        for role in _STRING_OPERANDS[name]:
            if role == "X":
                ops.append(_MemOp(size, -1, si, -1, 1, _Val(0), adsize))
            elif role == "Y":
                ops.append(_MemOp(size, ES, di, -1, 1, _Val(0), adsize))
            elif role == "A":
                ops.append(_RegOp(REG, 0, size))
            else:
                ops.append(_RegOp(REG, 2, 2))
        return ops

    def _xlat_operand(self, op, slots, ctx):
        if not (isinstance(op, _MemOp) and op.base == 3 and op.index < 0
                and op.disp.known and op.disp.value == 0 and op.size in (0, 1)):
            raise _Fail("xlat takes BYTE PTR [ebx] (or [bx])")
        if op.seg >= 0 and op.seg != DS:
            if "seg" in slots:
                raise _Fail("two segment prefixes")
            slots["seg"] = op.seg
        if op.adsize != (ctx.adsize or ctx.bits):
            if ctx.adsize:
                raise _Fail("address size mismatch")
            ctx.adsize = op.adsize
        return []

    def _choose(self, name, ops, slots, ctx) -> bytes:
        encs = []
        range_error = None
        swaps = (False, True) if name in ("xchg", "test") and len(ops) == 2 else (False,)
        for tpl in _TEMPLATES[name]:
            if not self._jump_form_ok(tpl, ops, ctx):
                continue
            for swapped in swaps:
                variant = ops[::-1] if swapped else ops
                try:
                    enc = _match(tpl, variant, slots, ctx)
                except _Range as e:
                    range_error = range_error or str(e)
                    continue
                if enc is not None:
                    # On a tie GNU takes the sign-extended imm8 form (66 83 /0 ib
                    # over 66 05 iw), then the lower opcode, then the operands as written.
                    bs = any(s.size == "bs" for s in tpl.specs)
                    enc.order = (not bs, tpl.order, swapped)
                    encs.append(enc)
        if not encs:
            if range_error:
                raise _Fail(range_error)
            raise _Fail(f"invalid operands for {name}: {_describe(ops)}")
        if any(e.unpinned for e in encs) or len({e.guess for e in encs if e.guess}) > 1:
            raise _Fail(f"ambiguous operand size for {name}: "
                        "say BYTE/WORD/DWORD PTR")
        best = min(encs, key=lambda e: (len(e.code), e.order))
        return best.code

    def _jump_form_ok(self, tpl, ops, ctx) -> bool:
        """Short or near form for a jump: relaxation state, or a numeric target."""
        j = [s for s in tpl.specs if s.method == "J"]
        if not j or not ops or not isinstance(ops[0], _TargetOp):
            return True
        short_form = j[0].size == "b"
        if tpl.mnemonic not in _RELAXABLE:
            return True
        if ctx.relaxable:
            return short_form != ctx.long
        return not short_form          # a numeric target: the near form (as GNU)


def _symbols_in(expr):
    if expr[0] == "s":
        yield expr[1]
    for part in expr[1:]:
        if isinstance(part, tuple):
            yield from _symbols_in(part)


def _describe(ops) -> str:
    parts = []
    for op in ops:
        if isinstance(op, _RegOp):
            parts.append({REG: f"reg{op.size * 8}", SREG: "sreg", CREG: "creg",
                          DREG: "dreg"}[op.kind])
        elif isinstance(op, _MemOp):
            parts.append(f"{_SIZE_NAMES.get(op.size, 'unsized').lower()} mem"
                         if op.size else "mem")
        elif isinstance(op, _ImmOp):
            parts.append("imm")
        elif isinstance(op, _TargetOp):
            parts.append("target")
        else:
            parts.append("far pointer")
    return ", ".join(parts) or "none"


def _prefix_bytes(slots) -> bytes:
    """Explicit prefixes alone (`rep`, `lock`, `es`, `data16`) in GNU's order."""
    out = bytearray()
    if "seg" in slots:
        out.append(_SEG_PREFIX[slots["seg"]])
    if "addr" in slots:
        out.append(0x67)
    if "data" in slots:
        out.append(0x66)
    if "rep" in slots:
        out.append(slots["rep"])
    if "lock" in slots:
        out.append(0xF0)
    return bytes(out)


# --------------------------------------------------------------------------
# Matching one template

_V_SIZES = ("v", "z", "bs")


def _pin(spec: _Spec, op) -> int:
    """The operand size (16/32) this operand forces through this spec; 0 none, -1 clash."""
    size = op.size if isinstance(op, (_RegOp, _MemOp, _ImmOp)) else 0
    if not size:
        return 0
    if spec.size in _V_SIZES:
        return {2: 16, 4: 32}.get(size, -1)
    if spec.size == "p":
        return {4: 16, 6: 32}.get(size, -1)
    if spec.size == "a":
        return {4: 16, 8: 32}.get(size, -1)
    return 0


def _opsize(tpl, ops, ctx):
    """(operand size, pinned?) for this template, or None when the operands clash."""
    pin = weak = soft = 0
    for spec, op in zip(tpl.specs, ops):
        if spec.size == "y":
            if isinstance(op, _RegOp) and tpl.specs[0].method != "S":
                weak = {2: 16, 4: 32}.get(op.size, -1)
            continue
        if spec.size == "s" and isinstance(op, _MemOp) and op.size == 6:
            soft = 32               # GNU: `lgdt FWORD PTR [bx]` in 16-bit code gets 66
            continue
        p = _pin(spec, op)
        if p < 0 or (p and pin and p != pin):
            return None
        pin = pin or p
    if weak < 0:
        return None
    if pin and weak == 32 and pin == 16:
        return None                 # lar ax, ebx
    pin = pin or weak
    forced = tpl.opsize or ctx.opsize
    if forced:
        if pin and pin != forced:
            return None
        return forced, True
    pin = pin or soft
    return (pin, True) if pin else (ctx.bits, False)


def _spec_size(spec: _Spec, opsize: int, op) -> int:
    s = spec.size
    if s in _V_SIZES:
        return opsize // 8
    if s == "p":
        return opsize // 8 + 2
    if s == "a":
        return opsize // 4
    if s == "y":
        return op.size if isinstance(op, _RegOp) else 2
    return {"b": 1, "w": 2, "d": 4, "q": 8, "s": 6, "": 0}[s]


def _kind_ok(spec: _Spec, op) -> bool:
    m = spec.method
    if isinstance(op, _RegOp):
        if op.kind == REG:
            return m in "EGRZ" and len(m) == 1 or (m == "reg" and op.num == spec.fixed)
        if op.kind == SREG:
            return m == "S" or (m == "sreg" and op.num == spec.fixed)
        return m == ("C" if op.kind == CREG else "D")
    if isinstance(op, _MemOp):
        return m in ("E", "M", "X", "Y") or (m == "O" and op.moffs)
    if isinstance(op, _ImmOp):
        return m in ("I", "one")
    if isinstance(op, _TargetOp):
        return m == "J"
    return m == "A"


def _match(tpl: _Template, ops, slots, ctx):
    """Encode `ops` with `tpl`, or None if they do not fit it."""
    specs = tpl.specs
    if len(ops) != len(specs) or not all(_kind_ok(s, o) for s, o in zip(specs, ops)):
        return None
    sized = _opsize(tpl, ops, ctx)
    if sized is None:
        return None
    opsize, pinned = sized
    guess = 0
    unpinned = False
    for spec, op in zip(specs, ops):
        size = _spec_size(spec, opsize, op)
        if isinstance(op, _RegOp):
            if op.kind == REG and (op.size != size if spec.size != "y"
                                   else op.size not in (2, 4)):
                return None
        elif isinstance(op, _MemOp):
            if op.size and size and op.size != size:
                return None
            if not op.size and spec.method != "M" and spec.size != "y":
                guess = size
                unpinned = unpinned or (spec.size in _V_SIZES and not pinned)
        elif isinstance(op, _ImmOp) and op.size and spec.method == "I" \
                and op.size != size and spec.size not in _V_SIZES:
            return None
    if tpl.mnemonic == "mov" and specs[0].method == "S" and ops[0].num == CS:
        raise _Fail("mov cs, ... is undefined on the i386")
    enc = _Encoder(tpl, ops, slots, ctx, opsize)
    code = enc.encode()
    if code is None:
        return None
    return _Enc(code, 0, guess, unpinned)


class _Encoder:
    """Bytes for one template and operand list."""

    def __init__(self, tpl, ops, slots, ctx, opsize):
        self.tpl, self.ops, self.slots, self.ctx, self.opsize = tpl, ops, slots, ctx, opsize
        self.adsize = tpl.adsize or 0
        self.seg = -1

    def encode(self):
        tpl, ctx = self.tpl, self.ctx
        opcode = bytearray(tpl.opcode)
        modrm_tail = b""
        reg_field = tpl.ext
        rm_op = None
        imm = bytearray()
        rel = None
        for spec, op in zip(tpl.specs, self.ops):
            m = spec.method
            if m in ("G", "S", "C", "D"):
                reg_field = op.num
            elif m in ("E", "M", "R"):
                rm_op = op
            elif m == "Z":
                opcode[-1] |= op.num
            elif m in ("I", "one"):
                part = self._immediate(spec, op)
                if part is None:
                    return None
                imm += part
            elif m == "J":
                rel = (spec, op)
            elif m == "O":
                self._use_memory(op)
                imm += self._moffs(op)
            elif m == "A":
                imm += self._far(op)
            elif m in ("X", "Y"):
                if not self._string_operand(m, op):
                    return None
        if tpl.modrm:
            modrm_tail = self._modrm(reg_field, rm_op)
        prefixes = self._prefixes()
        body = prefixes + bytes(opcode) + modrm_tail + bytes(imm)
        if rel is not None:
            return self._relative(body, *rel)
        return body

    # -- pieces

    def _prefixes(self) -> bytes:
        slots, ctx = self.slots, self.ctx
        out = bytearray()
        seg = self.seg
        if seg >= 0 and "seg" in slots and slots["seg"] != seg:
            raise _Fail("two segment prefixes")
        if seg < 0:
            seg = slots.get("seg", -1)
        if seg >= 0:
            out.append(_SEG_PREFIX[seg])
        adsize = self.adsize or ctx.adsize or ctx.bits
        if ctx.adsize and adsize != ctx.adsize:
            raise _Fail("address size prefix conflicts with the operands")
        if adsize != ctx.bits:
            out.append(0x67)
        if self.opsize != ctx.bits:
            out.append(0x66)
        rep = slots.get("rep", 0)
        if self.tpl.prefix:
            if rep:
                raise _Fail("two rep prefixes")
            rep = self.tpl.prefix
        if rep:
            out.append(rep)
        if "lock" in slots:
            out.append(0xF0)
        return bytes(out)

    def _immediate(self, spec, op):
        val = op.val
        if spec.method == "one":
            return b"" if val.known and val.value == 1 else None
        if spec.size == "bs":
            if not val.known:
                return None
            self._check_range(val, self.opsize // 8)
            small = _signed(val.value, self.opsize // 8)
            return _le(small, 1) if -128 <= small <= 127 else None
        size = _spec_size(spec, self.opsize, op)
        self._check_range(val, size)
        return _le(val.value, size)

    def _check_range(self, val, size):
        if (val.known or self.ctx.strict) and not _fits(val.value, size):
            raise _Range(f"value {val.value:#x} out of range for {size * 8} bits")

    def _relative(self, body, spec, op):
        """The displacement, which wraps like (E)IP: within 4 GB, or within
        64 KB with a 16-bit operand size (so 0x10038 and 0xFFFFFF82 are 0x0038
        and 0xFF82 there, as objdump prints such targets)."""
        ctx = self.ctx
        size = 1 if spec.size == "b" else self.opsize // 8
        target = op.val.value
        if ctx.strict and not 0 <= target <= 0xFFFFFFFF:
            raise _Fail(f"jump target {target:#x} is not a 32-bit address")
        rel = _signed(target - (ctx.address + len(body) + size), self.opsize // 8)
        if size == 1 and ctx.strict and not -128 <= rel <= 127:
            raise _Fail(f"jump target out of range for a short jump ({rel:+d} bytes)")
        return body + _le(rel, size)

    def _far(self, op):
        size = self.opsize // 8
        for val, n, what in ((op.off, size, "offset"), (op.sel, 2, "selector")):
            if (val.known or self.ctx.strict) and not 0 <= val.value < 1 << (8 * n):
                raise _Range(f"far pointer {what} {val.value:#x} out of range")
        return _le(op.off.value, size) + _le(op.sel.value, 2)

    def _use_memory(self, mem):
        """Address size and segment prefix for a memory operand."""
        adsize = mem.adsize or self.ctx.adsize or self._absolute_adsize(mem)
        self.adsize = adsize
        if adsize == 16:
            default = SS if 5 in (mem.base, mem.index) else DS
        else:
            default = SS if mem.base in (4, 5) else DS
        self._explicit_segment(mem.seg, default)
        return adsize

    def _explicit_segment(self, seg, default):
        if seg < 0:
            return
        if "seg" in self.slots:
            raise _Fail("two segment prefixes (a prefix and one in the operand)")
        if seg != default:
            self.seg = seg

    def _absolute_adsize(self, mem):
        """A bare address in 16-bit code: 16-bit unless it does not fit (then 67)."""
        bits = self.ctx.bits
        if bits == 16 and mem.disp.known and not -0x8000 <= mem.disp.value <= 0xFFFF:
            return 32
        return bits

    def _moffs(self, mem):
        size = self.adsize // 8
        self._check_disp(mem.disp, size)
        return _le(mem.disp.value, size)

    def _check_disp(self, val, size):
        if (val.known or self.ctx.strict) and not _fits(val.value, size):
            raise _Range(f"displacement {val.value:#x} out of range for {size * 8}-bit addressing")

    def _string_operand(self, method, mem) -> bool:
        wanted = 6 if method == "X" else 7
        if mem.base != wanted or mem.index >= 0 or not mem.disp.known or mem.disp.value:
            return False
        if method == "Y" and mem.seg not in (-1, ES):
            raise _Fail("the string destination must be es:[edi]")
        adsize = mem.adsize or self.ctx.bits
        if self.adsize and self.adsize != adsize:
            raise _Fail("string operands with different address sizes")
        self.adsize = adsize
        if method == "X":
            self._explicit_segment(mem.seg, DS)
        return True

    def _modrm(self, reg_field, rm_op) -> bytes:
        reg_field = max(reg_field, 0)
        if isinstance(rm_op, _RegOp):
            return bytes([0xC0 | reg_field << 3 | rm_op.num])
        adsize = self._use_memory(rm_op)
        if adsize == 32:
            return _modrm32(reg_field, rm_op, self)
        return _modrm16(reg_field, rm_op, self)


def _disp_kind(val, size, base_needs_disp) -> int:
    """0, 1 or `size` bytes of displacement."""
    if not val.known:
        return size
    small = _signed(val.value, size)
    if small == 0 and not base_needs_disp:
        return 0
    return 1 if -128 <= small <= 127 else size


def _modrm32(reg, mem, enc) -> bytes:
    base, index, disp = mem.base, mem.index, mem.disp
    enc._check_disp(disp, 4)
    if base < 0 and index < 0:
        return bytes([reg << 3 | 5]) + _le(disp.value, 4)
    ss = {1: 0, 2: 1, 4: 2, 8: 3}[mem.scale]
    if base < 0:
        return bytes([reg << 3 | 4, ss << 6 | index << 3 | 5]) + _le(disp.value, 4)
    kind = _disp_kind(disp, 4, base == 5)
    mod = {0: 0, 1: 1, 4: 2}[kind]
    if index < 0 and base != 4:
        head = bytes([mod << 6 | reg << 3 | base])
    else:
        sib_index = 4 if index < 0 else index
        head = bytes([mod << 6 | reg << 3 | 4, ss << 6 | sib_index << 3 | base])
    return head + _le(disp.value, kind)


def _modrm16(reg, mem, enc) -> bytes:
    disp = mem.disp
    enc._check_disp(disp, 2)
    regs = tuple(sorted(r for r in (mem.base, mem.index) if r >= 0))
    if not regs:
        return bytes([reg << 3 | 6]) + _le(disp.value, 2)
    kind = _disp_kind(disp, 2, regs == (5,))
    mod = {0: 0, 1: 1, 2: 2}[kind]
    return bytes([mod << 6 | reg << 3 | _RM16[regs]]) + _le(disp.value, kind)


# --------------------------------------------------------------------------
# GNU's NOP padding for code alignment (tc-i386.c, i386_generate_nops)

_NOPS32 = (b"\x90", b"\x66\x90", b"\x8d\x76\x00", b"\x8d\x74\x26\x00", None,
           b"\x8d\xb6\x00\x00\x00\x00", b"\x8d\xb4\x26\x00\x00\x00\x00")
_NOPS16 = (b"\x90", b"\x66\x90", b"\x8d\x74\x00", b"\x8d\xb4\x00\x00")


def _nops(count: int, bits: int) -> bytes:
    patterns = _NOPS16 if bits == 16 else _NOPS32
    longest = len(patterns)
    out = b""
    if count // longest > 2:                    # more than two NOPs: jump over them
        if count - 2 <= 127:
            out = bytes([0xEB, count - 2])
            count -= 2
        else:
            jump = b"\x66\xe9" if bits == 16 else b"\xe9"
            count -= len(jump) + 4
            out = jump + _le(count, 4)
    return out + _nop_run(patterns, count, longest)


def _nop_run(patterns, count, longest) -> bytes:
    nop = patterns[longest - 1]
    last = count % longest
    out = nop * (count // longest)
    if last:
        tail = patterns[last - 1]
        out += tail if tail is not None else patterns[last - 2] + patterns[0]
    return out


# --------------------------------------------------------------------------
# Interrupt entry stubs

@functools.cache
def _stub_templates() -> tuple[bytes, bytes, bytes]:
    """`push 0`, and `push imm32` / `jmp rel32` with their 4-byte fields cut off."""
    push_imm = asm("push 0x12345678")
    jmp_rel = asm("jmp 0x12345678", base=0)
    assert push_imm[-4:] == (0x12345678).to_bytes(4, "little") and len(push_imm) == 5
    assert jmp_rel[-4:] == (0x12345678 - 5).to_bytes(4, "little") and len(jmp_rel) == 5
    return asm("push 0"), push_imm[:-4], jmp_rel[:-4]


def vector_stubs(base: int, target: int, error_code_vectors, count: int = 256
                 ) -> tuple[bytes, list[int]]:
    """The table of entry stubs an IDT points into: for each vector, `push 0`
    where the CPU pushes no error code (so every frame has one), `push
    vector` and `jmp target`.  The instructions are assembled once and
    stamped out with their operands: assembling 768 lines on every start
    took the better part of a second.  Returns (code at `base`, the address
    of each vector's stub)."""
    push0, push_imm, jmp_rel = _stub_templates()
    out = bytearray()
    addresses = []
    for vector in range(count):
        addresses.append(base + len(out))
        if vector not in error_code_vectors:
            out += push0
        out += push_imm + vector.to_bytes(4, "little")
        after = base + len(out) + 5
        out += jmp_rel + ((target - after) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out), addresses
