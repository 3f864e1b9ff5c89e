"""Differential test of x86core.decoder against iced-x86, the oracle for what
real processors decode.

Both decoders' answers are normalised to the same plain tuples:
    ("invalid",)                                  iced: Code.INVALID; ours: Undefined
    ("needmore",)                                 iced: NO_MORE_BYTES; ours: NeedMore
    ("outside", iced mnemonic)                    iced decoded something outside our
                                                  supported set (SSE, VMX, ...)
    (length, mnemonic, operands, extras)          an instruction of the supported set:
                                                  extras are prefixes, sizes, condition
                                                  and the branch/privileged/string flags
    ("x87", length, mnemonic)                     an x87 instruction
and compared.  Where iced decodes an instruction outside the supported set,
ours must be Undefined unless ALLOWED_OUTSIDE documents why not.

The supported set is defined in iced's own terms (CLASS below): every
legacy-encoded instruction whose CPUID features are those of the 8086 to the
486 plus the Pentium/P6 integer extras in opcodes.py.  x87 (D8-DF) is compared
by length and mnemonic only, and only once x86core.x87.FORMS is filled in:
while it is empty, `x87_pending` filters x87 out of every comparison.

Printed at the end of the run (and with -s after the module): how many cases
were compared and how many mismatched.
"""
from __future__ import annotations

import collections
import random

import iced_x86 as ic
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from x86core import x87
from x86core.decoder import decode
from x86core.instruction import (CREG, DREG, FAR, IMM, MEM, REG, REL, SREG, STREG,
                                 F_BRANCH, F_PRIVILEGED, F_STRING,
                                 Instruction, NeedMore, Undefined)

X87_ENABLED = bool(x87.FORMS)


def _names(enum_module) -> dict[int, str]:
    return {getattr(enum_module, k): k for k in dir(enum_module)
            if k.isupper() and isinstance(getattr(enum_module, k), int)}


CODE_NAMES = _names(ic.Code)
MNEMONIC_NAMES = _names(ic.Mnemonic)
FEATURE_NAMES = _names(ic.CpuidFeature)

# --------------------------------------------------------------------------
# The supported set, in iced's terms
# --------------------------------------------------------------------------

# CPUID features of the instructions we decode: the 8086 ... 486 integer set
# and the Pentium/P6 extras listed in opcodes.py.
INTEGER_FEATURES = frozenset({
    "INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486",
    "CPUID", "CX8", "CMOV", "TSC", "MSR", "PAUSE", "MULTIBYTENOP",
})
# FPU287: FNSTSW AX, and FNSETPM, which the 387 and later execute as FNOP.
X87_FEATURES = frozenset({"FPU", "FPU287", "FPU387"})
# Codes with integer features that are still not ours: data directives, and the
# deliberately undefined UD0/UD1 (ours: plain #UD, which is what they do).
NOT_OURS = frozenset({"INVALID", "DECLAREBYTE", "DECLAREWORD", "DECLAREDWORD",
                      "DECLAREQWORD", "ZERO_BYTES"})
NOT_OURS_MNEMONICS = frozenset({"UD0", "UD1"})


def _classify(code: int) -> str | None:
    """'int' for the integer supported set, 'x87' for x87, None otherwise."""
    name = CODE_NAMES[code]
    info = ic.OpCodeInfo(code)
    if name in NOT_OURS or MNEMONIC_NAMES[info.mnemonic] in NOT_OURS_MNEMONICS:
        return None
    if name.startswith("RESERVEDNOP"):
        # iced's "reserved NOPs" 0F 0D, 0F 18-1F with any ModRM.reg.  Of these
        # opcodes.py has 0F 1F, as NOP Ev for every reg value (the SDM lists
        # /0; P6 and later execute them all as NOPs); the rest are not ours.
        return "int" if name.endswith("_0F1F") else None
    probe = ic.Instruction()
    probe.code = code
    features = {FEATURE_NAMES[f] for f in probe.cpuid_features()}
    if features <= INTEGER_FEATURES:
        return "int"
    if features <= INTEGER_FEATURES | X87_FEATURES:
        return "x87"
    return None


CLASS = {code: _classify(code) for code in CODE_NAMES}

# iced mnemonic -> ours, where the names differ.  Everything else is iced's
# name in lower case (Setb -> "setb", Cmovae -> "cmovae", Jecxz -> "jecxz").
ICED_MNEMONIC = {
    # operand size in the name (ours: "16-bit/32-bit" pairs in opcodes.py)
    "PUSHA": "pushaw", "PUSHAD": "pusha", "POPA": "popaw", "POPAD": "popa",
    "PUSHF": "pushfw", "PUSHFD": "pushf", "POPF": "popfw", "POPFD": "popf",
    "IRET": "iretw", "IRETD": "iret",
    # string instructions: ours carry the size in the operands
    "MOVSB": "movs", "MOVSW": "movs", "MOVSD": "movs",
    "CMPSB": "cmps", "CMPSW": "cmps", "CMPSD": "cmps",
    "STOSB": "stos", "STOSW": "stos", "STOSD": "stos",
    "LODSB": "lods", "LODSW": "lods", "LODSD": "lods",
    "SCASB": "scas", "SCASW": "scas", "SCASD": "scas",
    "INSB": "ins", "INSW": "ins", "INSD": "ins",
    "OUTSB": "outs", "OUTSW": "outs", "OUTSD": "outs",
    "XLATB": "xlat",
    "WAIT": "fwait",
    "RESERVEDNOP": "nop",       # 0F 1F /1-/7 (see _classify)
}


def our_mnemonic(iced_mnemonic: int) -> str:
    name = MNEMONIC_NAMES[iced_mnemonic]
    return ICED_MNEMONIC.get(name, name.lower())


# iced decodes these outside the supported set where we decode an instruction.
# Each entry: the decoder options under which iced decodes what a processor of
# our generation does (that decoding is then compared in full), or X87_EXTRA
# (compared like the rest of x87: length and mnemonic); and why.
X87_EXTRA = "x87"
ALLOWED_OUTSIDE = {
    "TZCNT": (ic.DecoderOptions.NO_MPFX_0FBC,
              "F3 0F BC is TZCNT only with BMI1; before BMI (our CPUID) it executes "
              "as BSF with an ignored REP prefix, which is what we decode"),
    "LZCNT": (ic.DecoderOptions.NO_MPFX_0FBD,
              "F3 0F BD is LZCNT only with ABM/LZCNT; before it, BSR with an "
              "ignored REP prefix, which is what we decode"),
    "WBNOINVD": (ic.DecoderOptions.NO_WBNOINVD,
                 "F3 0F 09 is WBNOINVD only on processors that have it; before, "
                 "WBINVD with an ignored REP prefix, which is what we decode"),
    # x87.py's docstring explains it: it decodes the x87 map as iced and
    # objdump do, including FISTTP (SSE3, but in the x87 map).
    "FISTTP": (X87_EXTRA, "SSE3's FISTTP sits in the x87 map; x87.py decodes it"),
}

# --------------------------------------------------------------------------
# Registers
# --------------------------------------------------------------------------

_REGS: dict[int, tuple] = {}
for _size, _names8 in ((1, ("AL", "CL", "DL", "BL", "AH", "CH", "DH", "BH")),
                       (2, ("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")),
                       (4, ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"))):
    for _n, _r in enumerate(_names8):
        _REGS[getattr(ic.Register, _r)] = ("reg", _size, _n)
for _n, _r in enumerate(("ES", "CS", "SS", "DS", "FS", "GS")):
    _REGS[getattr(ic.Register, _r)] = ("sreg", _n)
for _n in range(16):
    _REGS[getattr(ic.Register, f"CR{_n}")] = ("cr", _n)
    _REGS[getattr(ic.Register, f"DR{_n}")] = ("dr", _n)
for _n in range(8):
    _REGS[getattr(ic.Register, f"ST{_n}")] = ("st", _n)
_SEG_NUM = {getattr(ic.Register, r): n for n, r in enumerate(("ES", "CS", "SS", "DS", "FS", "GS"))}
_SEG_NUM[ic.Register.NONE] = -1


def _reg_num(register: int) -> int:
    return -1 if register == ic.Register.NONE else _REGS[register][2]


def _addr_size(register: int) -> int:
    return _REGS[register][1] * 8


_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 6: 0xFFFFFFFF}
K = ic.OpKind
_IMM_SIZE = {K.IMMEDIATE8: 1, K.IMMEDIATE8_2ND: 1, K.IMMEDIATE16: 2, K.IMMEDIATE32: 4,
             K.IMMEDIATE8TO16: 2, K.IMMEDIATE8TO32: 4}

# Conventions where iced and the Intel opcode map differ only in a register's
# width.  LLDT, LTR, VERR, VERW, LMSW and ARPL read (ARPL: writes) only 16 bits:
# the SDM's map writes them Ew, so do we; iced names the 32-bit register
# under a 32-bit operand size (its r32/m16 forms).  LAR/LSL's source and the
# stores SLDT/STR/SMSW/MOV r,Sreg are "Ey" in opcodes.py, as in iced.
_WORD_RM_CODES = frozenset(c for c, n in CODE_NAMES.items()
                           if n in ("LLDT_R32M16", "LTR_R32M16", "VERR_R32M16", "VERW_R32M16",
                                    "LMSW_R32M16", "ARPL_R32M16_R32"))

# Condition codes: iced ConditionCode O=1 .. G=16, ours 0..15.
_COND_MNEMONIC_PREFIXES = ("j", "set", "cmov")
# BOUND ends a block for us (it may raise #BR, a control transfer like INTO's
# #OF); iced's flow control calls it NEXT.  Our convention, kept.
_BRANCH_CONVENTION = {"bound": True}


def iced_view(data: bytes, bits: int, ip: int, options: int = 0, cls: str | None = None):
    """iced's decoding of `data`, normalised (see the module docstring).
    `cls` overrides the class of the instruction (for ALLOWED_OUTSIDE)."""
    decoder = ic.Decoder(bits, data, options, ip=ip)
    ins = decoder.decode()
    if ins.code == ic.Code.INVALID:
        if decoder.last_error == ic.DecoderError.NO_MORE_BYTES:
            return ("needmore",)
        return ("invalid",)
    cls = cls or CLASS[ins.code]
    name = MNEMONIC_NAMES[ins.mnemonic]
    if cls is None:
        return ("outside", name)
    mnemonic = our_mnemonic(ins.mnemonic)
    if cls == "x87":
        return ("x87", ins.len, mnemonic)
    ops = []
    for i in range(ins.op_count):
        kind = ins.op_kind(i)
        if kind == K.REGISTER:
            r = _REGS[ins.op_register(i)]
            if ins.code in _WORD_RM_CODES and i == 0 and r[0] == "reg":
                r = ("reg", 2, r[2])
            if ins.code in _WORD_RM_CODES and i == 1:     # ARPL's Gw
                r = ("reg", 2, r[2])
            ops.append(r)
        elif kind == K.MEMORY:
            size = ic.MemorySizeInfo(ins.memory_size).size
            base, index = ins.memory_base, ins.memory_index
            if mnemonic == "xlat":          # ours: no operand; DS:[eBX+AL] implied
                adsize = _addr_size(base)
                ops.append(("mem", 1, _SEG_NUM[ins.memory_segment], adsize, 3, "al", 1, 0, 0))
                continue
            if base != ic.Register.NONE:
                adsize = _addr_size(base)
            elif index != ic.Register.NONE:
                adsize = _addr_size(index)
            else:
                adsize = ins.memory_displ_size * 8
            if name == "RESERVEDNOP" or name == "NOP":
                size = {32: 4, 16: 2}[ic.OpCodeInfo(ins.code).operand_size]
            ops.append(("mem", size, _SEG_NUM[ins.memory_segment], adsize,
                        _reg_num(base), _reg_num(index), ins.memory_index_scale,
                        ins.memory_displacement & _MASK[adsize // 8], ins.memory_displ_size))
        elif kind in (K.MEMORY_SEG_SI, K.MEMORY_SEG_ESI):
            size = ic.MemorySizeInfo(ins.memory_size).size
            ops.append(("mem", size, _SEG_NUM[ins.memory_segment],
                        16 if kind == K.MEMORY_SEG_SI else 32, 6, -1, 1, 0, 0))
        elif kind in (K.MEMORY_ESDI, K.MEMORY_ESEDI):
            size = ic.MemorySizeInfo(ins.memory_size).size
            ops.append(("mem", size, 0, 16 if kind == K.MEMORY_ESDI else 32, 7, -1, 1, 0, 0))
        elif kind in _IMM_SIZE:
            size = _IMM_SIZE[kind]
            ops.append(("imm", size, ins.immediate(i) & _MASK[size]))
        elif kind in (K.NEAR_BRANCH16, K.NEAR_BRANCH32):
            ops.append(("rel", 2 if kind == K.NEAR_BRANCH16 else 4, ins.near_branch_target))
        elif kind in (K.FAR_BRANCH16, K.FAR_BRANCH32):
            if kind == K.FAR_BRANCH16:
                ops.append(("far", 4, ins.far_branch_selector, ins.far_branch16))
            else:
                ops.append(("far", 6, ins.far_branch_selector, ins.far_branch32))
        else:
            raise AssertionError(f"unexpected iced operand kind {kind} in {CODE_NAMES[ins.code]}")
    if name == "RESERVEDNOP":
        ops = ops[:1]               # iced shows ModRM.reg as a second operand
    info = ic.OpCodeInfo(ins.code)
    extras = {
        "lock": ins.has_lock_prefix,
        "rep": 0xF3 if ins.has_rep_prefix else 0xF2 if ins.has_repne_prefix else 0,
        "segprefix": _SEG_NUM[ins.segment_prefix],
        # Operand and address size where iced's instruction has one (stack
        # width of PUSH/RET/IRET, LGDT's 24-bit base, LOOP's counter ...);
        # None: not compared.
        "opsize": info.operand_size or None,
        "adsize": info.address_size or None,
        "cond": (ins.condition_code - 1 if mnemonic.startswith(_COND_MNEMONIC_PREFIXES)
                 else -1),
        "branch": _BRANCH_CONVENTION.get(mnemonic, ins.flow_control != ic.FlowControl.NEXT),
        "privileged": info.must_be_cpl0,
        "string": ins.is_string_instruction,
    }
    return (ins.len, mnemonic, tuple(ops), extras)


def our_view(data: bytes, bits: int, ip: int):
    """Our decoding of `data`, normalised like iced_view."""
    result = decode(data, 0, bits)
    if isinstance(result, Undefined):
        return ("invalid",)
    if isinstance(result, NeedMore):
        return ("needmore",)
    assert isinstance(result, Instruction)
    if 0xD8 <= result.opcode <= 0xDF:
        return ("x87", result.length, result.mnemonic)
    ops = []
    for op in result.operands:
        if op.kind == REG:
            ops.append(("reg", op.size, op.reg))
        elif op.kind == SREG:
            ops.append(("sreg", op.reg))
        elif op.kind == CREG:
            ops.append(("cr", op.reg))
        elif op.kind == DREG:
            ops.append(("dr", op.reg))
        elif op.kind == STREG:
            ops.append(("st", op.reg))
        elif op.kind == MEM:
            mask = _MASK[result.adsize // 8]
            ops.append(("mem", op.size, op.seg, result.adsize, op.base, op.index, op.scale,
                        op.disp & mask, op.disp_size))
        elif op.kind == IMM:
            ops.append(("imm", op.size, op.imm))
        elif op.kind == REL:
            ops.append(("rel", op.size, result.branch_target(ip)))
        elif op.kind == FAR:
            ops.append(("far", op.size, op.sel, op.imm))
        else:
            raise AssertionError(f"unknown operand kind {op.kind}")
    if result.mnemonic == "xlat":
        seg = result.segment if result.segment >= 0 else 3
        ops.append(("mem", 1, seg, result.adsize, 3, "al", 1, 0, 0))
    extras = {
        "lock": result.lock, "rep": result.rep, "segprefix": result.segment,
        "opsize": result.opsize, "adsize": result.adsize, "cond": result.cond,
        "branch": bool(result.flags & F_BRANCH),
        "privileged": bool(result.flags & F_PRIVILEGED),
        "string": bool(result.flags & F_STRING),
    }
    assert result.raw == data[:result.length]
    assert result.prefixes == tuple(data[:len(result.prefixes)])
    return (result.length, result.mnemonic, tuple(ops), extras)


def _align(theirs, ours):
    """Drop from ours what iced does not say (sizes iced leaves at 0)."""
    if len(theirs) == 4 and len(ours) == 4:
        extras = dict(ours[3])
        for key in ("opsize", "adsize"):
            if theirs[3][key] is None:
                extras[key] = None
        ours = ours[:3] + (extras,)
    return ours


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

STATS = collections.Counter()
MISMATCHES: list[str] = []


def x87_pending(view) -> bool:
    """True while x87.FORMS is empty: x87 escapes are not compared yet."""
    return not X87_ENABLED and view[0] == "x87"


def compare(data: bytes, bits: int, ip: int = 0) -> str | None:
    """Compare both decoders on `data`; None if they agree, else a description."""
    theirs = iced_view(data, bits, ip)
    ours = our_view(data, bits, ip)
    if x87_pending(theirs) or (not X87_ENABLED and ours[0] == "x87"):
        STATS["skipped (x87 pending)"] += 1
        return None
    STATS["compared"] += 1
    ours = _align(theirs, ours)
    verdict = None
    if theirs[0] == "outside":
        allowed = ALLOWED_OUTSIDE.get(theirs[1])
        if ours[0] == "invalid":
            STATS["outside supported set, ours #UD"] += 1
        elif allowed is not None:
            STATS[f"allowlisted {theirs[1]}"] += 1
            if allowed[0] == X87_EXTRA:
                theirs = iced_view(data, bits, ip, cls="x87")
            else:
                theirs = iced_view(data, bits, ip, allowed[0])
                ours = _align(theirs, ours)
            if theirs != ours:
                verdict = f"allowlisted {allowed[1]!r}"
        else:
            verdict = f"iced: {theirs[1]} (outside the supported set)"
    elif theirs[0] == "needmore" and ours[0] == "invalid":
        # Truncated input that ours already rejects from the bytes present.
        if decode(data, 0, bits).vector == 13:
            # Convention: known to exceed 15 bytes, so #GP(0) at once rather
            # than asking for bytes (whose fetch could page-fault) that cannot
            # be part of any instruction; iced asks for more first.
            STATS["truncated, ours already #GP (>15 bytes)"] += 1
        else:
            # Ours decided #UD without the missing bytes, so a completion must
            # be #UD for ours too, and agree with iced as complete input does.
            STATS["truncated, ours already #UD"] += 1
            verdict = _compare_completed(data, bits, ip, ours)
    elif theirs[0] == "invalid" and ours[0] == "needmore":
        # Ours reads the whole instruction before some checks (LOCK): the
        # completed instruction must be #UD for ours too.
        STATS["truncated, ours #UD once complete"] += 1
        verdict = _compare_completed(data, bits, ip, ("invalid",))
    elif theirs[0] == "x87" and theirs != ours:
        verdict = "x87 length/mnemonic"
    elif theirs != ours:
        verdict = "differ"
    if verdict is None:
        return None
    STATS["mismatches"] += 1
    text = (f"{bits}-bit {data.hex(' ')}: {verdict}\n    iced: {theirs}\n    ours: {ours}")
    if len(MISMATCHES) < 50:
        MISMATCHES.append(text)
    return text


def _compare_completed(data: bytes, bits: int, ip: int, want) -> str | None:
    """Complete truncated `data` with zero bytes: ours must answer `want` (an
    Undefined) and the completion must pass `compare`."""
    completed = data + bytes(16)
    if our_view(completed, bits, ip) != want:
        return f"truncated: completing it gives {our_view(completed, bits, ip)}"
    return compare(completed, bits, ip)


def _compare_or_fail(data: bytes, bits: int, ip: int) -> None:
    mismatch = compare(data, bits, ip)
    assert mismatch is None, mismatch


# --------------------------------------------------------------------------
# The run summary: cases compared and mismatches, printed at session end
# (and with -s as each test finishes).
# --------------------------------------------------------------------------

class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("-", "x86core decoder vs iced-x86")
        for line in summary_lines():
            terminalreporter.write_line(line)


def summary_lines() -> list[str]:
    lines = [f"cases compared: {STATS['compared']}, mismatches: {STATS['mismatches']}"
             + ("" if X87_ENABLED else "  (x87 pending: skipped)")]
    for key, count in sorted(STATS.items()):
        if key not in ("compared", "mismatches"):
            lines.append(f"  {key}: {count}")
    lines.extend(MISMATCHES[:10])
    return lines


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("x86core-decoder-iced-summary"):
        manager.register(_Summary(), "x86core-decoder-iced-summary")
    yield
    print("\n" + "\n".join(summary_lines()))


# --------------------------------------------------------------------------
# The tables themselves
# --------------------------------------------------------------------------

def _our_table_mnemonics() -> set[str]:
    from x86core import opcodes
    texts = list(opcodes.ONE_BYTE.values()) + list(opcodes.TWO_BYTE.values())
    for entries in opcodes.GROUPS.values():
        for entry in entries:
            texts.extend(entry if isinstance(entry, tuple) else (entry,))
    names = set()
    for text in texts:
        if text and not text.startswith("@"):
            names.update(text.split(" ")[0].split("/"))
    return names | {"pause"}


def test_mnemonic_mapping_covers_both_tables():
    """Every integer instruction iced counts as ours maps to a name opcodes.py
    defines, and every name in opcodes.py is some supported iced instruction."""
    ours = _our_table_mnemonics()
    mapped = {our_mnemonic(ic.OpCodeInfo(c).mnemonic) for c, cls in CLASS.items() if cls == "int"}
    assert mapped - ours == set()
    assert ours - mapped == set()
    assert all(hasattr(ic.Mnemonic, name) for name in ICED_MNEMONIC)
    assert set(ALLOWED_OUTSIDE) <= set(MNEMONIC_NAMES.values())


def test_supported_set_is_what_we_think():
    def cls(name):
        return CLASS[getattr(ic.Code, name)]
    for name in ("MOV_R32_RM32", "CMPXCHG8B_M64", "CMOVE_R32_RM32", "RDTSC", "PAUSE",
                 "NOP_RM32", "RESERVEDNOP_RM32_R32_0F1F", "SALC", "INT1", "BSWAP_R32",
                 "ADD_RM8_IMM8_82", "INVLPG_M", "UD2", "WAIT", "ARPL_R32M16_R32"):
        assert cls(name) == "int", name
    for name in ("ADDPS_XMM_XMMM128", "SYSENTER", "RDPMC", "UD1_R32_RM32", "UD0",
                 "RESERVEDNOP_RM32_R32_0F18", "PREFETCHW_M8", "ENDBR32", "TZCNT_R32_RM32",
                 "POPCNT_R32_RM32", "MOVBE_R32_M32", "LOADALL386", "CMPXCHG486_RM32_R32"):
        assert cls(name) is None, name
    assert cls("FADD_M32FP") == "x87" and cls("FCMOVB_ST0_STI") == "x87"


# --------------------------------------------------------------------------
# Every opcode of both maps and every group entry
# --------------------------------------------------------------------------

_PREFIX_BYTES = (0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3)
ONE_BYTE_OPCODES = [bytes([b]) for b in range(256) if b not in _PREFIX_BYTES and b != 0x0F]
TWO_BYTE_OPCODES = [bytes([0x0F, b]) for b in range(256)]

prefix_lists = st.lists(st.sampled_from(_PREFIX_BYTES), max_size=4).map(bytes)


@pytest.mark.parametrize("opcode", ONE_BYTE_OPCODES + TWO_BYTE_OPCODES, ids=lambda o: o.hex())
@given(prefixes=prefix_lists, modrm=st.integers(0, 255), tail=st.binary(min_size=14, max_size=14),
       ip=st.integers(0, 0xFFFFFFFF))
# About 500 opcodes, each example 16 comparisons: a sixth of the profile's
# examples per opcode (ci: 10, dev: 33, slow: 833).
@settings(max_examples=max(5, settings.default.max_examples // 6),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])
def test_opcode_map(opcode, prefixes, modrm, tail, ip):
    """One opcode with random prefixes, ModRM, SIB, displacement and
    immediate bytes, for all eight ModRM.reg values (every group entry) in
    16- and 32-bit code."""
    for bits in (16, 32):
        for reg in range(8):
            data = prefixes + opcode + bytes([modrm & 0xC7 | reg << 3]) + tail
            _compare_or_fail(data, bits, ip & ((1 << bits) - 1))


def test_every_opcode_every_modrm():
    """Exhaustively: each opcode of both maps with each ModRM byte, in 16- and
    32-bit code (the SIB, displacement and immediate bytes are random)."""
    rng = random.Random(6)
    failures = []
    for opcode in ONE_BYTE_OPCODES + TWO_BYTE_OPCODES:
        for modrm in range(256):
            tail = rng.randbytes(14)
            for bits in (16, 32):
                mismatch = compare(opcode + bytes([modrm]) + tail, bits, rng.randrange(1 << bits))
                if mismatch and len(failures) < 10:
                    failures.append(mismatch)
    assert not failures, "\n".join(failures)


@given(prefixes=st.lists(st.sampled_from(_PREFIX_BYTES), min_size=5, max_size=16).map(bytes),
       body=st.binary(min_size=1, max_size=16), bits=st.sampled_from((16, 32)))
def test_many_prefixes(prefixes, body, bits):
    """Up to and past the 15-byte limit."""
    _compare_or_fail(prefixes + body + bytes(16), bits, 0)


# --------------------------------------------------------------------------
# Random byte strings
# --------------------------------------------------------------------------

def _random_cases(rng: random.Random, count: int):
    for _ in range(count):
        bits = rng.choice((16, 32))
        choice = rng.random()
        if choice < 0.4:                            # anything, complete
            data = rng.randbytes(16)
        elif choice < 0.6:                          # the 0F map, which uniform bytes rarely reach
            data = (bytes(rng.choice(_PREFIX_BYTES) for _ in range(rng.randrange(0, 3)))
                    + b"\x0f" + rng.randbytes(15))
        elif choice < 0.8:                          # anything, maybe truncated
            data = rng.randbytes(rng.randrange(1, 16))
        else:                                       # heavy on prefixes
            data = (bytes(rng.choice(_PREFIX_BYTES) for _ in range(rng.randrange(1, 15)))
                    + rng.randbytes(rng.randrange(1, 17)))
        yield data, bits, rng.randrange(1 << bits)


def _random_against_iced(seed: int, count: int) -> None:
    rng = random.Random(seed)
    failures = []
    for data, bits, ip in _random_cases(rng, count):
        mismatch = compare(data, bits, ip)
        if mismatch and len(failures) < 10:
            failures.append(mismatch)
    assert not failures, "\n".join(failures)


def test_random_bytes_against_iced():
    _random_against_iced(seed=1, count=20_000)


@given(data=st.binary(min_size=1, max_size=16), bits=st.sampled_from((16, 32)))
def test_random_bytes_against_iced_hypothesis(data, bits):
    _compare_or_fail(data, bits, 0x1000)


def _check_truncations(data: bytes, bits: int, ip: int) -> None:
    """Every proper prefix of a decoded instruction asks for more bytes."""
    full = decode(data, 0, bits)
    if not isinstance(full, Instruction):
        return
    for have in range(full.length):
        part = decode(data[:have], 0, bits)
        assert isinstance(part, NeedMore), (data.hex(), have, part)
        assert part.have == have and 1 <= part.needed <= full.length - have
        assert iced_view(data[:have], bits, ip) == ("needmore",)
        STATS["truncations checked"] += 1


@given(data=st.binary(min_size=16, max_size=16), bits=st.sampled_from((16, 32)))
def test_truncation(data, bits):
    _check_truncations(data, bits, 0)


# --------------------------------------------------------------------------
# Robustness: every byte string decodes to one of the three answers
# --------------------------------------------------------------------------

def _robustness(seed: int, count: int) -> collections.Counter:
    rng = random.Random(seed)
    seen = collections.Counter()
    for _ in range(count):
        bits = 32 if rng.random() < 0.5 else 16
        data = rng.randbytes(rng.randrange(0, 20))
        pos = rng.randrange(0, 3) if len(data) > 3 else 0
        result = decode(data, pos, bits)
        kind = type(result)
        assert kind in (Instruction, Undefined, NeedMore), (data.hex(), result)
        if kind is Instruction:
            assert 1 <= result.length <= 15 and result.raw == data[pos:pos + result.length]
        elif kind is Undefined:
            assert 1 <= result.length <= 15 and result.vector in (6, 13)
        else:
            assert result.needed >= 1 and result.have == len(data) - pos
        seen[kind.__name__] += 1
    return seen


def test_robustness():
    seen = _robustness(seed=2, count=20_000)
    STATS["robustness strings"] += sum(seen.values())
    assert seen["Instruction"] and seen["Undefined"] and seen["NeedMore"]


# --------------------------------------------------------------------------
# The big runs (pytest -m slow, python dev.py test --slow)
# --------------------------------------------------------------------------

@pytest.mark.slow
def test_robustness_big():
    seen = _robustness(seed=3, count=1_000_000)
    STATS["robustness strings"] += sum(seen.values())


@pytest.mark.slow
def test_random_bytes_against_iced_big():
    _random_against_iced(seed=4, count=1_000_000)


@pytest.mark.slow
def test_truncation_big():
    rng = random.Random(5)
    for _ in range(50_000):
        bits = rng.choice((16, 32))
        _check_truncations(rng.randbytes(16), bits, rng.randrange(1 << bits))
