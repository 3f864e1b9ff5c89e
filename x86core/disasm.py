"""Intel-syntax disassembly, printed the way GNU objdump prints it.

`format_instruction` turns one decoded `Instruction` into the text
`objdump -d -M intel` shows after the instruction bytes (binutils 2.40), from
the decoded form alone: the bytes are never decoded again.  `disassemble`
sweeps a byte string the way objdump does, and `format_listing` prints its
lines ("   0:\t55                   \tpush   ebp").

objdump's habits reproduced here:
  * the mnemonic, with any prefixes printed in front of it, is padded to six
    characters and one space before the operands;
  * prefixes the instruction does not use are printed by name in the order
    they came: segment overrides as `es` ... `gs` (`ds je`), 0x66 as
    `data16` (`data32` in 16-bit code), 0x67 as `addr16` (`addr32`), `lock`,
    F3 as `rep` on MOVS/STOS/LODS/INS/OUTS and `repz` elsewhere, F2 as
    `repnz` (`bnd` on branches), `xacquire`/`xrelease` for HLE, and 3E on an
    indirect CALL/JMP as `notrack`; a used segment override is printed inside
    the memory operand (`DWORD PTR fs:[eax]`);
  * memory operands carry BYTE/WORD/DWORD/FWORD/QWORD/TBYTE PTR except LEA's,
    the descriptor-table loads and stores (`sgdtd [eax]`) and the x87
    environment and state images (`fnstenv [eax]`);
  * a disp32 with no base or index prints as `ds:0x1234`, a SIB with no
    index register as `[eax+eiz*1]`, displacements signed (`[ebp-0x4]`),
    immediates as unsigned hex of their operand size (`push 0xffffffff`);
  * string operands always name their segment (`BYTE PTR es:[edi]`), moffs
    too (`mov eax,ds:0x1234`), branch targets are absolute addresses;
  * operand-size suffixes where the size is not the mode's default:
    `pushw`/`pushd`, `callw`, `retw`, `iretw`, `pushaw`, `enterw`,
    `fnstenvw` ..., and always for SGDT/SIDT/LGDT/LIDT (`sgdtd`);
  * `xchg ax,ax` for 66 90, `shl eax,1` for D0-D3, `st`/`st(i)` for x87;
  * FWAIT followed by an x87 instruction is one instruction, the `n` of the
    no-wait mnemonic dropped (`9b db e3` is `finit`);
  * where objdump does not know an instruction our decoder accepts (SALC,
    the undocumented x87 aliases FSTP1, FCOM2, FXCH4 ... of `x87.py`) it
    prints "(bad)" after all the prefixes, and so do we;
  * a run of 14 prefixes is a line of its own, as objdump gives up there.

Not reproduced: how many bytes objdump's own "(bad)" swallows (it prints
what it fetched: `0f 04`, or `(bad)  [eax]` for a blank x87 memory form, or
15 bytes for an instruction over the length limit) -- an undecodable
encoding prints "(bad)" here and the sweep goes on one byte later, as the
decoded form gives nothing more; and prefixes an instruction ignores on the
i386 but later processors read as part of the opcode (F3 0F BC is `repz bsf`
here, `tzcnt` to objdump; 66/F2/F3 0F 09 is `wbinvd` with a prefix).
"""
from __future__ import annotations

from collections.abc import Iterator

from . import opcodes, x87
from .decoder import decode
from .instruction import (CREG, DREG, FAR, IMM, MEM, REG, REL, SREG, STREG,
                          Instruction, NeedMore, Operand,
                          REG8_NAMES, REG16_NAMES, REG32_NAMES, SEG_NAMES)

__all__ = ["format_instruction", "disassemble", "format_listing"]

_PTR = {1: "BYTE PTR ", 2: "WORD PTR ", 4: "DWORD PTR ", 6: "FWORD PTR ",
        8: "QWORD PTR ", 10: "TBYTE PTR ", 16: "XMMWORD PTR "}
_INDEX16 = ("bx+si", "bx+di", "bp+si", "bp+di", "si", "di", "bp", "bx")
_REG_NAMES = {1: REG8_NAMES, 2: REG16_NAMES, 4: REG32_NAMES}
_SEG_PREFIX = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}
_PREFIX_BYTES = frozenset(_SEG_PREFIX) | {0x66, 0x67, 0xF0, 0xF2, 0xF3}
_MAX_PREFIXES = 14      # objdump's limit (MAX_CODE_LENGTH - 1)

# Opcodes whose mnemonic objdump suffixes with w (16-bit operands in 32-bit
# code) or d (32-bit operands in 16-bit code).  The decoder's own 16-bit
# names (pushaw, iretw ...) are mapped back to the stem first.
_STEMS = {"pushaw": "pusha", "popaw": "popa", "pushfw": "pushf", "popfw": "popf",
          "iretw": "iret"}
_SUFFIXED_OPCODES = frozenset({
    0x06, 0x07, 0x0E, 0x16, 0x17, 0x1E, 0x1F, 0x0FA0, 0x0FA1, 0x0FA8, 0x0FA9,  # push/pop Sreg
    0x68, 0x6A,                     # push imm
    0x60, 0x61, 0x9C, 0x9D, 0xCF,   # pusha popa pushf popf iret
    0xE8, 0xE9,                     # call/jmp rel16/32
    0xC2, 0xC3, 0xCA, 0xCB,         # ret retf
    0xC8, 0xC9,                     # enter leave
})
_X87_SUFFIXED = frozenset({"fldenv", "fnstenv", "frstor", "fnsave"})
_DESCRIPTOR_TABLE = frozenset({"sgdt", "sidt", "lgdt", "lidt"})
# Branches: F2 prints as `bnd`.
_BND_OPCODES = frozenset({0xE8, 0xE9, 0xEB, 0xC2, 0xC3} | set(range(0x70, 0x80))
                         | set(range(0x0F80, 0x0F90)))
_REP_STRING = frozenset({"movs", "stos", "lods", "ins", "outs"})
_HLE_LOCKABLE = opcodes.LOCKABLE
# objdump's names for what the decoder calls fneni ... (8087/287 leftovers).
_X87_OBJDUMP_NAMES = {"fneni": "fneni(8087 only)", "fndisi": "fndisi(8087 only)",
                      "fnsetpm": "fnsetpm(287 only)"}
# Decoded here, "(bad)" to objdump.
_OBJDUMP_BAD_OPCODES = frozenset({0xD6})  # SALC


def _spec(insn: Instruction) -> str:
    """The opcode-map text of the decoded instruction's form (groups resolved)."""
    op = insn.opcode
    if 0xD8 <= op <= 0xDF:
        modrm = insn.modrm
        key = (op, modrm >> 3 & 7) if modrm < 0xC0 else (op, modrm)
        text = x87.FORMS.get(key) or x87.FORMS.get((op, 8 + (modrm >> 3 & 7)), "")
        return text
    text = opcodes.TWO_BYTE.get(op & 0xFF, "") if op > 0xFF else opcodes.ONE_BYTE.get(op, "")
    if text.startswith("@"):
        group, _, ops = text[1:].partition(" ")
        entry = opcodes.GROUPS[group][insn.modrm >> 3 & 7]
        if isinstance(entry, tuple):
            entry = entry[1] if insn.modrm >= 0xC0 else entry[0]
        entry = entry or ""
        name, _, rest = entry.partition(" ")
        if not rest:
            rest = ops
        elif rest.startswith("+"):
            rest = ops + "," + rest[1:]
        return f"{name} {rest}"
    return text


def _uses_opsize(insn: Instruction, spec: str) -> bool:
    """Whether objdump counts the 0x66 prefix as used by this instruction."""
    op = insn.opcode
    if op == 0xEB or 0x70 <= op <= 0x7F or 0xE0 <= op <= 0xE3:
        return False        # rel8 branches, LOOP, JCXZ: objdump prints data16
    if op == 0x90:
        return insn.mnemonic != "pause"     # 66 90 is xchg ax,ax
    if op in _SUFFIXED_OPCODES or op in (0x9A, 0xEA):
        return True
    name, _, ops = spec.partition(" ")
    if "/" in name:
        return True
    if insn.mnemonic in _X87_SUFFIXED or insn.mnemonic in _DESCRIPTOR_TABLE:
        return True
    if op in (0x8C, 0x8E) and insn.modrm < 0xC0:
        return False        # MOV Sreg with memory: always a word
    for tok in ops.replace("+", "").split(","):
        tok = tok.split("/")[0]
        if not tok:
            continue
        if tok[0] == "e" and tok[1:2].isupper():      # eAX ...
            return True
        if tok[0] in "EGMIJZOXYA" and tok[1:] in ("v", "z", "p", "a", "bs"):
            return True
        if tok[1:] == "y" and insn.modrm >= 0xC0:   # Ey: a word in memory
            return True
    return False


def _mode_bits(insn: Instruction) -> int:
    """The code segment's default size (the `bits` it was decoded with)."""
    if 0x66 in insn.prefixes:
        return 48 - insn.opsize
    return insn.opsize


def _is_string(insn: Instruction) -> bool:
    return 0xA4 <= insn.opcode <= 0xA7 or 0xAA <= insn.opcode <= 0xAF or 0x6C <= insn.opcode <= 0x6F


def _mnemonic(insn: Instruction, bits: int) -> str:
    name = insn.mnemonic
    if name == "sal":
        return "shl"            # group 2 /6, the SAL alias: objdump says shl
    op = insn.opcode
    if op == 0x90 and name == "nop" and insn.opsize != bits:
        return "xchg"
    if op in _SUFFIXED_OPCODES or name in _X87_SUFFIXED:
        name = _STEMS.get(name, name)
        if insn.opsize != bits:
            name += "w" if insn.opsize == 16 else "d"
    elif name in _DESCRIPTOR_TABLE:
        name += "w" if insn.opsize == 16 else "d"
    return _X87_OBJDUMP_NAMES.get(name, name)


def _uses_segment(insn: Instruction) -> bool:
    """Whether a segment override prefix reaches a memory operand."""
    if insn.opcode == 0xD7:
        return True
    for o in insn.operands:
        if o.kind == MEM and not (_is_string(insn) and o.base == 7):
            return True
    return False


def _uses_adsize(insn: Instruction) -> bool:
    op = insn.opcode
    if op in (0xA0, 0xA1, 0xA2, 0xA3):
        return False        # objdump prints addr16 on moffs forms
    if op == 0xE3 or op == 0xD7 or _is_string(insn):
        return True
    for o in insn.operands:
        if o.kind == MEM:
            if insn.adsize == 16 or o.base >= 0 or o.index >= 0:
                return True
            # A 32-bit address with no base or index register: objdump counts
            # the prefix as used only for the [eiz*1+disp32] it prints in
            # 32-bit code.
            return insn.sib >= 0 and _mode_bits(insn) == 32
    return False


def _plain_prefix_name(p: int, bits: int) -> str:
    if p in _SEG_PREFIX:
        return SEG_NAMES[_SEG_PREFIX[p]]
    if p == 0x66:
        return "data16" if bits == 32 else "data32"
    if p == 0x67:
        return "addr16" if bits == 32 else "addr32"
    return {0xF0: "lock", 0xF2: "repnz", 0xF3: "repz"}[p]


def _prefix_names(insn: Instruction, bits: int, spec: str) -> list[str]:
    prefixes = insn.prefixes
    if not prefixes:
        return []
    last = {}
    for i, p in enumerate(prefixes):
        kind = "seg" if p in _SEG_PREFIX else p
        last[kind] = i
    names: list[str | None] = [_plain_prefix_name(p, bits) for p in prefixes]
    op = insn.opcode
    mem_dest = bool(insn.operands) and insn.operands[0].kind == MEM
    if "seg" in last:
        i = last["seg"]
        if _notrack(insn):
            names[i] = "notrack"
        elif _uses_segment(insn):
            names[i] = None
    if 0x66 in last and _uses_opsize(insn, spec):
        names[last[0x66]] = None
    if 0x67 in last and _uses_adsize(insn):
        names[last[0x67]] = None
    repz, repnz = last.get(0xF3, -1), last.get(0xF2, -1)
    if repz >= 0:
        if insn.mnemonic == "pause":
            names[repz] = None
        elif _is_string(insn) and insn.mnemonic in _REP_STRING:
            names[repz] = "rep"
    if repnz >= 0 and (op in _BND_OPCODES or (op == 0xFF and (insn.modrm >> 3 & 7) in (2, 4))):
        names[repnz] = "bnd"
    # Hardware lock elision: XACQUIRE (F2) / XRELEASE (F3); on MOV, F3 if it came last.
    if mem_dest and (repz >= 0 or repnz >= 0):
        if (insn.lock and insn.mnemonic in _HLE_LOCKABLE) or op in (0x86, 0x87):
            if repz >= 0:
                names[repz] = "xrelease"
            if repnz >= 0:
                names[repnz] = "xacquire"
        elif op in (0x88, 0x89, 0xC6, 0xC7) and repz > repnz:
            names[repz] = "xrelease"
    return [n for n in names if n]


def _notrack(insn: Instruction) -> bool:
    """objdump turns the last segment prefix of an indirect CALL/JMP into NOTRACK
    when any of the prefixes is 3E."""
    return (insn.opcode == 0xFF and (insn.modrm >> 3 & 7) in (2, 4)
            and 0x3E in insn.prefixes)


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _mem_text(insn: Instruction, o: Operand, seg_shown: bool) -> str:
    op = insn.opcode
    seg = SEG_NAMES[o.seg] + ":" if seg_shown else ""
    if op in (0xA0, 0xA1, 0xA2, 0xA3):                  # moffs
        return (SEG_NAMES[o.seg] + ":") + _hex(o.disp & 0xFFFFFFFF)
    if insn.mnemonic in _X87_SUFFIXED or insn.mnemonic in _DESCRIPTOR_TABLE:
        ptr = ""
    elif insn.mnemonic == "invlpg":
        ptr = "BYTE PTR "           # the decoder gives it no data size
    else:
        ptr = _PTR.get(o.size, "")
    if _is_string(insn) and insn.modrm < 0:             # DS:eSI / ES:eDI
        names = REG32_NAMES if insn.adsize == 32 else REG16_NAMES
        return f"{ptr}{SEG_NAMES[o.seg]}:[{names[o.base]}]"
    mod = insn.modrm >> 6
    rm = insn.modrm & 7
    disp = o.disp
    if insn.adsize == 16:
        if mod == 0 and rm == 6:
            return f"{ptr}{seg or 'ds:'}{_hex(disp & 0xFFFF)}"
        text = _INDEX16[rm]
        if disp or mod:
            text += "+" + _hex(disp) if disp >= 0 else "-" + _hex(-disp)
        return f"{ptr}{seg}[{text}]"
    if not _bracketed(insn, o):
        return f"{ptr}{seg or 'ds:'}{_hex(disp & 0xFFFFFFFF)}"
    text = REG32_NAMES[o.base] if o.base >= 0 else ""
    if insn.sib >= 0:
        scale_bits = insn.sib >> 6
        need_index = o.base < 0 and o.index < 0 and _mode_bits(insn) == 32
        if scale_bits or need_index or o.index >= 0 or (o.base >= 0 and o.base != 4):
            if o.base >= 0:
                text += "+"
            text += REG32_NAMES[o.index] if o.index >= 0 else "eiz"
            text += f"*{1 << scale_bits}"
    if o.disp_size:
        text += "+" + _hex(disp) if disp >= 0 else "-" + _hex(-disp)
    return f"{ptr}{seg}[{text}]"


def _bracketed(insn: Instruction, o: Operand) -> bool:
    """Whether objdump prints a 32-bit address in brackets rather than as
    `ds:0x1234`: it has a base or an index, or a SIB that objdump shows as
    `[eiz*N+disp]` (scale above 1, or any scale in 32-bit code)."""
    if o.base >= 0 or o.index >= 0:
        return True
    if insn.sib < 0:
        return False
    return _mode_bits(insn) == 32 or insn.sib >> 6 != 0


def _branch_target(insn: Instruction, o: Operand, address: int) -> int:
    op = insn.opcode
    nxt = address + insn.length
    if op in (0xE8, 0xE9) or 0x0F80 <= op <= 0x0F8F:
        if insn.opsize == 16:
            high = 0 if 0x66 in insn.prefixes else nxt & ~0xFFFF
            return ((nxt + o.imm) & 0xFFFF) | high
    return (nxt + o.imm) & 0xFFFFFFFF


def _operand_text(insn: Instruction, o: Operand, address: int, seg_shown: bool,
                  n: int) -> str:
    kind = o.kind
    if kind == REG:
        return _REG_NAMES[o.size][o.reg]
    if kind == MEM:
        return _mem_text(insn, o, seg_shown)
    if kind == IMM:
        if insn.opcode in (0xD0, 0xD1) and n == 1:
            return "1"
        return _hex(o.imm)
    if kind == REL:
        return _hex(_branch_target(insn, o, address))
    if kind == SREG:
        return SEG_NAMES[o.reg]
    if kind == STREG:
        return f"st({o.reg})"
    if kind == CREG:
        return f"cr{o.reg}"
    if kind == DREG:
        return f"dr{o.reg}"
    if kind == FAR:
        return f"{_hex(o.sel)}:{_hex(o.imm)}"
    raise ValueError(f"unknown operand kind {kind}")


def _objdump_bad(insn: Instruction) -> bool:
    if insn.opcode in _OBJDUMP_BAD_OPCODES:
        return True
    return (0xD8 <= insn.opcode <= 0xDF and insn.modrm >= 0xC0
            and (insn.opcode, insn.modrm >> 3 & 7) in x87.OBJDUMP_UNKNOWN_ROWS)


def format_instruction(insn: Instruction, address: int = 0, *, fwait: bool = False) -> str:
    """The Intel-syntax text objdump prints for `insn` at `address`.

    `fwait` formats an x87 instruction preceded by FWAIT as objdump shows the
    pair: FNSTENV as FSTENV and so on.
    """
    bits = _mode_bits(insn)
    if _objdump_bad(insn):      # every prefix printed, none used
        return " ".join([_plain_prefix_name(p, bits) for p in insn.prefixes] + ["(bad)"])
    spec = _spec(insn)
    prefixes = _prefix_names(insn, bits, spec)
    mnemonic = _mnemonic(insn, bits)
    if fwait and mnemonic.startswith("fn") and mnemonic != "fnop":
        mnemonic = "f" + mnemonic[2:]
    seg_shown = insn.segment >= 0 and _uses_segment(insn) and not _notrack(insn)
    operands = insn.operands
    if insn.opcode == 0xD7:     # XLAT: objdump shows its implicit operand
        names = REG32_NAMES if insn.adsize == 32 else REG16_NAMES
        seg = SEG_NAMES[insn.segment if insn.segment >= 0 else 3]
        texts = [f"BYTE PTR {seg}:[{names[3]}]"]
    elif insn.opcode == 0x90 and mnemonic == "xchg":
        names = _REG_NAMES[insn.opsize >> 3]
        texts = [names[0], names[0]]
    elif len(operands) == 2 and operands[0].kind == STREG and operands[1].kind == STREG:
        sti = operands[0].reg if insn.opcode in (0xDC, 0xDE) else operands[1].reg
        texts = [f"st({sti})", "st"] if insn.opcode in (0xDC, 0xDE) else ["st", f"st({sti})"]
    else:
        texts = [_operand_text(insn, o, address, seg_shown, n) for n, o in enumerate(operands)]
    head = " ".join(prefixes + [mnemonic])
    if not texts:
        return head
    return f"{head:<6} " + ",".join(texts)


def disassemble(code, base: int = 0, bits: int = 32) -> Iterator[tuple[int, bytes, str]]:
    """Sweep `code` (loaded at `base`) like objdump -D: (address, bytes, text).

    An undecodable encoding prints as "(bad)" and the sweep goes on one byte
    later.  Where the bytes run out inside an instruction, objdump prints the
    first byte on its own, as the prefix it names or as `.byte 0xNN`, and
    goes on one byte later; so do we.  Fourteen prefixes in a row print as
    one line of prefix names, and FWAIT merges with a following x87
    instruction, as in objdump.
    """
    code = bytes(code)
    pos = 0
    end = len(code)
    while pos < end:
        run = 0
        while run < _MAX_PREFIXES and pos + run < end and code[pos + run] in _PREFIX_BYTES:
            run += 1
        if run == _MAX_PREFIXES:
            # objdump gives up after 14 prefixes and prints them as a line.
            raw = code[pos:pos + run]
            yield base + pos, raw, " ".join(_plain_prefix_name(p, bits) for p in raw)
            pos += run
            continue
        insn = decode(code, pos, bits)
        if isinstance(insn, Instruction):
            if insn.opcode == 0x9B:
                merged = _fwait_x87(code, pos, insn, bits)
                if merged == "truncated":
                    insn = NeedMore(needed=1, have=insn.length)
                elif merged is not None:
                    length, x87_insn = merged
                    text = format_instruction(x87_insn, base + pos, fwait=True)
                    yield base + pos, code[pos:pos + length], text
                    pos += length
                    continue
        if isinstance(insn, Instruction):
            yield base + pos, insn.raw, format_instruction(insn, base + pos)
            pos += insn.length
        elif isinstance(insn, NeedMore):
            first = code[pos]
            if first in _PREFIX_BYTES:
                text = _plain_prefix_name(first, bits)
            else:
                text = f".byte {_hex(first)}"
            yield base + pos, code[pos:pos + 1], text
            pos += 1
        else:
            yield base + pos, code[pos:pos + 1], "(bad)"
            pos += 1


def _fwait_x87(code: bytes, pos: int, fwait: Instruction, bits: int):
    """objdump's view of FWAIT before an x87 instruction: one instruction.

    objdump scans prefixes; an FWAIT met with no prefix before it is taken as
    a prefix too and the scan goes on (up to a second FWAIT), while one met
    after other prefixes ends the scan.  If an x87 escape comes next, all of
    it is one instruction, the prefixes (wherever they stood) applying to the
    x87 instruction.  Returns (length, the x87 instruction decoded with those
    prefixes), None when objdump prints the FWAIT on its own, or "truncated"
    when the code ends in what objdump takes for one instruction that began
    with prefixes (it then prints just the first byte, as for any truncated
    instruction).
    """
    prefixes = bytearray(fwait.prefixes)
    at = pos + fwait.length
    if prefixes and at >= len(code):
        return "truncated"
    if not prefixes:
        while at < len(code) and code[at] in _PREFIX_BYTES:
            prefixes.append(code[at])
            at += 1
        if at < len(code) and code[at] == 0x9B:
            at += 1
    if at >= len(code) or not 0xD8 <= code[at] <= 0xDF:
        return None
    insn = decode(bytes(prefixes) + code[at:at + 15], 0, bits)
    if isinstance(insn, NeedMore) and fwait.prefixes:
        return "truncated"
    if not isinstance(insn, Instruction):
        return None
    return at - pos + insn.length - len(prefixes), insn


def _address_width(base: int, size: int) -> int:
    """How many hex digits objdump gives addresses in a section ending at base+size."""
    digits = f"{(base + size) & 0xFFFFFFFF:08x}"
    skip = len(digits) - len(digits.lstrip("0"))
    if skip == len(digits) and base != 0:
        skip = 0
    if skip:
        skip = (skip - 1) & -4
    return 8 - skip


def format_listing(code, base: int = 0, bits: int = 32, octets_per_line: int = 7) -> str:
    """objdump -D's instruction lines for `code` at `base`, one per line.

    "ADDR:\\tBYTES\\tTEXT": the address in hex right-aligned as objdump pads
    it, the bytes (at most seven per line, the rest on continuation lines),
    then the instruction text.
    """
    width = _address_width(base, len(code))
    lines = []
    for address, raw, text in disassemble(code, base, bits):
        for start in range(0, len(raw), octets_per_line):
            chunk = raw[start:start + octets_per_line]
            hexbytes = "".join(f"{b:02x} " for b in chunk)
            # objdump prints the address's last `width` hex digits, with
            # leading zeros as spaces (so a wrapped section shows ff00:).
            digits = f"{(address + start) & 0xFFFFFFFF:08x}"[8 - width:]
            addr = digits.lstrip("0").rjust(width) if digits.strip("0") else "0".rjust(width)
            if start == 0:
                lines.append(f"{addr}:\t{hexbytes:<{octets_per_line * 3}}\t{text}")
            else:
                lines.append(f"{addr}:\t{hexbytes}")
    return "\n".join(lines) + ("\n" if lines else "")
