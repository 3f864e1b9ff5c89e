"""What each instruction does, as generators of Python source.

One function per mnemonic (or family), registered in SEMANTICS and called by
the block compiler once per decoded instruction, never at run time.  Each
writes lines through an Emitter (codegen.py) and, for a control transfer,
returns the expression for the next EIP.  Semantics and flag effects follow
the Intel SDM Vol. 2 pages of each instruction; flags the SDM leaves
undefined are computed as Intel hardware (and Unicorn/QEMU) leave them where
that is known, and the differential tests mask the rest.
"""
from __future__ import annotations

from . import flags as F
from .codegen import ALU_OPS, ARITH_KIND, CONDS, MASKS, SIGNS, Emitter, Place, Unsupported
from .instruction import FAR, IMM, MEM, REG, REL, SREG, CREG, DREG, Instruction

SEMANTICS = {}
NEXT = "NEXT"       # placeholder in returned expressions: the next instruction's EIP


def semantics(*names):
    def register(fn):
        for name in names:
            SEMANTICS[name] = fn
        return fn
    return register


# -- data movement -------------------------------------------------------------------

@semantics("mov")
def mov(em: Emitter, insn: Instruction):
    dst, src = insn.operands
    if dst.kind == SREG:
        em.emit(f"LOADSEG({dst.reg}, {em.read(src, insn)} & 0xFFFF)")
        return
    if dst.kind in (CREG, DREG) or src.kind in (CREG, DREG):
        return mov_system(em, insn)
    if src.kind == SREG:
        value = f"SS_[{src.reg}]"
        if dst.kind == REG and dst.size == 4:
            em.set_reg(4, dst.reg, value)      # a 32-bit register gets the zero-extended selector
        else:
            em.operand(dst, insn).put(value)    # memory, or a 16-bit register
        return
    if dst.kind == REG and dst.size == 4 and src.kind == MEM:
        # Straight into the register (assigned only if the read succeeds).
        a = em.address(src, insn, once=True)
        em.regs_written.add(dst.reg)
        em.load(a, 4, into=f"r{dst.reg}")
        return
    value = em.read(src, insn)
    if dst.kind == REG:
        em.set_reg(dst.size, dst.reg, value)
    else:
        em.store(em.address(dst, insn, once=True), dst.size, value)


def mov_system(em, insn):
    dst, src = insn.operands
    if dst.kind == CREG:
        em.emit(f"WRITE_CR({dst.reg}, {em.reg(4, src.reg)})")
    elif dst.kind == DREG:
        em.emit(f"WRITE_DR({dst.reg}, {em.reg(4, src.reg)})")
    elif src.kind == CREG:
        v = em.new("v")
        em.emit(f"{v} = READ_CR({src.reg})")
        em.set_reg(4, dst.reg, v)
    else:
        v = em.new("v")
        em.emit(f"{v} = READ_DR({src.reg})")
        em.set_reg(4, dst.reg, v)


@semantics("movzx", "movsx")
def movx(em, insn):
    dst, src = insn.operands
    value = em.read(src, insn)
    if insn.mnemonic == "movsx":
        sign = SIGNS[src.size]
        value = f"(({value} ^ {sign:#x}) - {sign:#x}) & {MASKS[dst.size]:#x}"
    em.set_reg(dst.size, dst.reg, value)


@semantics("lea")
def lea(em, insn):
    dst, src = insn.operands
    off = em.offset(src, insn.adsize)
    em.set_reg(dst.size, dst.reg, f"({off}) & {MASKS[dst.size]:#x}" if dst.size == 2 else off)


@semantics("xchg")
def xchg(em, insn):
    a, b = insn.operands
    if a.kind == REG and b.kind == REG:
        va, vb = em.new("x"), em.new("x")
        em.emit(f"{va} = {em.reg(a.size, a.reg)}; {vb} = {em.reg(b.size, b.reg)}")
        em.set_reg(a.size, a.reg, vb)
        em.set_reg(b.size, b.reg, va)
        return
    mem, reg = (a, b) if a.kind == MEM else (b, a)
    place = em.operand(mem, insn)
    old = place.get()
    place.put(em.reg(reg.size, reg.reg))
    em.set_reg(reg.size, reg.reg, old)


@semantics("fwait")
def fwait(em, insn):
    # WAIT checks for pending x87 exceptions; with no FPU there are none,
    # but CR0.TS with CR0.MP makes it #NM (SDM Vol. 3 table 2-2).
    em.emit("if cpu.cr0 & 0xA == 0xA: raise FAULT(7)")


@semantics("nop", "pause")
def nop(em, insn):
    pass


@semantics("cbw", "cwde")
def cbw(em, insn):
    if insn.opsize == 16:
        em.set_reg(2, 0, f"((r0 & 0xFF ^ 0x80) - 0x80) & 0xFFFF")
    else:
        em.set_reg(4, 0, f"((r0 & 0xFFFF ^ 0x8000) - 0x8000) & 0xFFFFFFFF")
    em.regs_read.add(0)


@semantics("cwd", "cdq")
def cwd(em, insn):
    em.regs_read.add(0)
    if insn.opsize == 16:
        em.set_reg(2, 2, "(0xFFFF if r0 & 0x8000 else 0)")
    else:
        em.set_reg(4, 2, "(0xFFFFFFFF if r0 & 0x80000000 else 0)")


@semantics("xlat")
def xlat(em, insn):
    base = "r3" if insn.adsize == 32 else "(r3 & 0xFFFF)"
    em.regs_read.update((0, 3))
    off = f"({base} + (r0 & 0xFF)) & {0xFFFFFFFF if insn.adsize == 32 else 0xFFFF:#x}"
    seg = insn.segment if insn.segment >= 0 else 3
    v = em.load(em.linear(seg, off), 1)
    em.set_reg(1, 0, v)


@semantics("bswap")
def bswap(em, insn):
    (op,) = insn.operands
    r = em.reg(4, op.reg)
    if op.size == 2:        # undefined by Intel; processors clear the register's low word
        em.set_reg(2, op.reg, "0")
        return
    em.set_reg(4, op.reg, f"int.from_bytes({r}.to_bytes(4, 'little'), 'big')")


# -- arithmetic ----------------------------------------------------------------------

@semantics("add", "sub", "and", "or", "xor", "cmp", "test")
def alu(em, insn):
    dst, src = insn.operands
    size = dst.size
    kind = ARITH_KIND[insn.mnemonic]
    if dst.kind == REG and size == 4:
        return alu_reg32(em, insn, kind)
    place = em.operand(dst, insn)
    a = place.get()
    b = em.read(src, insn)
    # A copy unless b is a constant or a register the result cannot overwrite
    # (ADD EAX,EAX must keep the old EAX as the flags' second input).
    if b.startswith("(") or (dst.kind == REG and b == f"r{dst.reg}"):
        bv = em.new("b")
        em.emit(f"{bv} = {b}")
        b = bv
    if insn.mnemonic == "cmp":
        em.set_flags(kind, size, "", a, b)  # flags.K_CMP: no result
        return
    r = em.new("r")
    op = ALU_OPS[insn.mnemonic]
    if op in "+-":
        em.emit(f"{r} = ({a} {op} {b}) & {MASKS[size]:#x}")
    else:
        em.emit(f"{r} = {a} {op} {b}")
    if insn.mnemonic not in ("cmp", "test"):
        place.put(r)
    em.set_flags(kind, size, r, a, b)


def alu_reg32(em, insn, kind):
    """The common case in one line and no temporaries: a 32-bit register
    destination, whose inputs go straight into the flag locals."""
    dst, src = insn.operands
    b = em.read(src, insn)          # a memory source is loaded (and may fault) first
    name = insn.mnemonic
    op = ALU_OPS[name]

    def result(x: str, y: str) -> str:
        return f"({x} {op} {y}) & 0xffffffff" if op in "+-" else f"{x} {op} {y}"
    _reg32(em, dst.reg, kind, result, b, writes=name not in ("cmp", "test"))


def _reg32(em, reg: int, kind: int, result, b: str = "0", writes: bool = True) -> None:
    """An operation on a 32-bit register in one line, no temporaries:
    result(x, y) is its value from the register x and the second input y
    (`b`, already read); with its flags live the inputs go straight into
    fa and fb (fb first: `b` may read the flags before, as INC's carry
    does), the value into fr and the register."""
    d = em.reg(4, reg)
    em.known = (kind, 4)
    if writes:
        em.regs_written.add(reg)
    if not em.flags_live:
        if writes:
            em.emit(f"{d} = {result(d, b)}")
        return
    em.uses_flags = True
    if kind == F.K_CMP:
        em.emit(f"fb = {b}; fa = {d}; fo = {kind | 4 << 4}")      # no result (flags.K_CMP)
        return
    into = f"{d} = fr" if writes else "fr"
    if kind == F.K_LOGIC:
        # Its flags are the result's alone (flags.K_LOGIC): fa and fb stay as they were.
        em.emit(f"{into} = {result(d, b)}; fo = {kind | 4 << 4}")
        return
    em.emit(f"fb = {b}; fa = {d}; {into} = {result('fa', 'fb')}; fo = {kind | 4 << 4}")


@semantics("adc", "sbb")
def adc(em, insn):
    dst, src = insn.operands
    size = dst.size
    place = em.operand(dst, insn)
    a = place.get()
    b = em.read(src, insn)
    bv = em.new("b")
    em.emit(f"{bv} = {b}")
    c = em.new("c")
    em.emit(f"{c} = {em.carry()}")
    r = em.new("r")
    if insn.mnemonic == "adc":
        em.emit(f"{r} = ({a} + {bv} + {c}) & {MASKS[size]:#x}")
        kinds = (F.K_ADC | size << 4, F.K_ADD | size << 4)
    else:
        em.emit(f"{r} = ({a} - {bv} - {c}) & {MASKS[size]:#x}")
        kinds = (F.K_SBB | size << 4, F.K_SUB | size << 4)
    place.put(r)
    em.set_flags_dynamic(f"{kinds[0]} if {c} else {kinds[1]}", r, a, bv)


@semantics("inc", "dec")
def incdec(em, insn):
    (dst,) = insn.operands
    size = dst.size
    kind = F.K_INC if insn.mnemonic == "inc" else F.K_DEC
    if dst.kind == REG and size == 4:
        step = "+" if kind == F.K_INC else "-"
        # INC and DEC keep CF: the carry of the flags before, into fb.
        _reg32(em, dst.reg, kind, lambda x, _: f"({x} {step} 1) & 0xffffffff",
               em.carry() if em.flags_live else "0")
        return
    place = em.operand(dst, insn)
    a = place.get()
    r = em.new("r")
    sign = "+" if insn.mnemonic == "inc" else "-"
    em.emit(f"{r} = ({a} {sign} 1) & {MASKS[size]:#x}")
    place.put(r)
    if em.flags_live:
        c = em.new("c")
        em.emit(f"{c} = {em.carry()}")     # before fo changes
        em.set_flags(F.K_INC if sign == "+" else F.K_DEC, size, r, a, c)
    else:
        em.known = (F.K_INC if sign == "+" else F.K_DEC, size)


@semantics("neg")
def neg(em, insn):
    (dst,) = insn.operands
    if dst.kind == REG and dst.size == 4:
        _reg32(em, dst.reg, F.K_NEG, lambda x, _: f"-{x} & 0xffffffff")
        return
    place = em.operand(dst, insn)
    a = place.get()
    r = em.new("r")
    em.emit(f"{r} = -{a} & {MASKS[dst.size]:#x}")
    place.put(r)
    em.set_flags(F.K_NEG, dst.size, r, a, "0")


@semantics("not")
def not_(em, insn):
    (dst,) = insn.operands
    place = em.operand(dst, insn)
    a = place.get()
    place.put(f"{a} ^ {MASKS[dst.size]:#x}")


@semantics("mul", "imul")
def mul(em, insn):
    ops = insn.operands
    if insn.mnemonic == "imul" and len(ops) > 1:
        return imul_n(em, insn)
    (src,) = ops
    size = src.size
    bits = size * 8
    b = em.read(src, insn)
    bv = em.new("b")
    em.emit(f"{bv} = {b}")
    a = em.reg(size, 0)
    p = em.new("m")
    if insn.mnemonic == "mul":
        em.emit(f"{p} = {a} * {bv}")
        over = f"{p} >> {bits}"
    else:
        sign = SIGNS[size]
        em.emit(f"{p} = (({a} ^ {sign:#x}) - {sign:#x}) * (({bv} ^ {sign:#x}) - {sign:#x})")
        # Overflow: the signed product does not fit the low half.  Decided
        # here, on the signed product, before it is masked to the register pair.
        over = em.new("o")
        em.emit(f"{over} = ((({p} & {MASKS[size]:#x}) ^ {sign:#x}) - {sign:#x}) != {p}")
        em.emit(f"{p} &= {MASKS[size * 2]:#x}")
    lo = f"{p} & {MASKS[size]:#x}"
    if size == 1:
        em.set_reg(2, 0, f"{p} & 0xFFFF")
    else:
        em.set_reg(size, 0, lo)
        em.set_reg(size, 2, f"{p} >> {bits}")
    if em.flags_live:
        lo_v = em.new("l")
        em.emit(f"{lo_v} = {lo}")
        em.set_flags(F.K_RESULT, size, lo_v, "0", f"{F.CF | F.OF} if {over} else 0")
    else:
        em.known = (F.K_RESULT, size)


def imul_n(em, insn):
    ops = insn.operands
    dst = ops[0]
    size = dst.size
    sign = SIGNS[size]
    if len(ops) == 2:
        a, b = em.read(ops[0], insn), em.read(ops[1], insn)
    else:
        a, b = em.read(ops[1], insn), em.read(ops[2], insn)
    av, bv = em.new("a"), em.new("b")
    em.emit(f"{av} = {a}; {bv} = {b}")
    p = em.new("m")
    em.emit(f"{p} = (({av} ^ {sign:#x}) - {sign:#x}) * (({bv} ^ {sign:#x}) - {sign:#x})")
    lo = em.new("l")
    em.emit(f"{lo} = {p} & {MASKS[size]:#x}")
    em.set_reg(size, dst.reg, lo)
    em.set_flags(F.K_RESULT, size, lo, "0",
                 f"{F.CF | F.OF} if (({lo} ^ {sign:#x}) - {sign:#x}) != {p} else 0")


@semantics("div", "idiv")
def div(em, insn):
    (src,) = insn.operands
    size = src.size
    bits = size * 8
    mask = MASKS[size]
    b = em.read(src, insn)
    d = em.new("d")
    em.emit(f"{d} = {b}")
    n = em.new("n")
    if size == 1:
        em.emit(f"{n} = {em.reg(2, 0)}")
    else:
        em.emit(f"{n} = {em.reg(size, 2)} << {bits} | {em.reg(size, 0)}")
    q, r = em.new("q"), em.new("r")
    if insn.mnemonic == "div":
        em.emit(f"if {d} == 0 or {n} // {d} > {mask:#x}: raise DIVERR()")
        em.emit(f"{q}, {r} = divmod({n}, {d})")
    else:
        wide = SIGNS[size] << bits
        sign = SIGNS[size]
        em.emit(f"if {d} == 0: raise DIVERR()")
        em.emit(f"{n} = ({n} ^ {wide:#x}) - {wide:#x}; {d} = ({d} ^ {sign:#x}) - {sign:#x}")
        em.emit(f"{q} = abs({n}) // abs({d})")
        em.emit(f"if ({n} < 0) != ({d} < 0): {q} = -{q}")
        em.emit(f"{r} = {n} - {q} * {d}")
        em.emit(f"if not {-sign} <= {q} < {sign}: raise DIVERR()")
    if size == 1:
        em.set_reg(2, 0, f"({r} & 0xFF) << 8 | ({q} & 0xFF)")
    else:
        em.set_reg(size, 0, f"{q} & {mask:#x}")
        em.set_reg(size, 2, f"{r} & {mask:#x}")
    # Flags are undefined after DIV/IDIV; Intel hardware leaves them unchanged.


# -- shifts and rotates ----------------------------------------------------------------

@semantics("shl", "sal", "shr", "sar", "rol", "ror", "rcl", "rcr")
def shift(em, insn):
    dst, cnt = insn.operands
    size = dst.size
    bits = size * 8
    mask = MASKS[size]
    sign = SIGNS[size]
    name = "shl" if insn.mnemonic == "sal" else insn.mnemonic
    if cnt.kind == IMM and dst.kind == REG and size == 4 and not em.flags_live \
            and name in ("shl", "shr", "sar", "rol", "ror"):
        # No flags to produce: one line.
        count = cnt.imm & 0x1F
        if count:
            d = em.reg(4, dst.reg)
            em.known = None
            em.set_reg(4, dst.reg, {"shl": f"({d} << {count}) & 0xffffffff",
                                    "shr": f"{d} >> {count}",
                                    "sar": f"((({d} ^ 0x80000000) - 0x80000000) >> {count}) "
                                           "& 0xffffffff",
                                    "rol": f"({d} << {count} | {d} >> {32 - count}) & 0xffffffff",
                                    "ror": f"({d} >> {count} | {d} << {32 - count}) & 0xffffffff",
                                    }[name])
        return
    place = em.operand(dst, insn)
    if dst.kind == REG and size == 4:
        # The register itself: every use of it comes before the result is put.
        a = em.reg(4, dst.reg)
    else:
        a = place.get()
    if cnt.kind == IMM:
        count = cnt.imm & 0x1F
        if name in ("rcl", "rcr"):
            count %= bits + 1
        if count == 0:
            return          # flags and destination untouched (memory is not even written)
        n = str(count)      # a constant: the expressions below fold
    else:
        count = None
        n = em.new("n")
        em.emit(f"{n} = {em.reg(1, 1)} & 0x1F")
        if name in ("rcl", "rcr"):
            em.emit(f"{n} %= {bits + 1}")
    body = []           # lines guarded by "count != 0"
    r = em.new("r")
    c = em.new("c")
    o = em.new("o")
    if name == "shl":
        if count is None:
            carry = f"({a} >> ({bits} - {n})) & 1 if {n} <= {bits} else 0"
        else:
            carry = f"({a} >> {bits - count}) & 1" if count <= bits else "0"
        body += [f"{r} = ({a} << {n}) & {mask:#x}",
                 f"{c} = {carry}",
                 f"{o} = ({r} >> {bits - 1} ^ {c}) & 1"]
    elif name == "shr":
        last = f"({n} - 1)" if count is None else str(count - 1)
        body += [f"{r} = {a} >> {n}",
                 f"{c} = ({a} >> {last}) & 1",
                 f"{o} = ({a} >> {last} ^ {r}) >> {bits - 1} & 1"]
    elif name == "sar":
        last = f"({n} - 1)" if count is None else str(count - 1)
        body += [f"{r} = ((({a} ^ {sign:#x}) - {sign:#x}) >> {n}) & {mask:#x}",
                 f"{c} = ((({a} ^ {sign:#x}) - {sign:#x}) >> {last}) & 1",
                 f"{o} = 0"]
    elif name in ("rol", "ror"):
        if count is None:
            k = em.new("k")
            body.append(f"{k} = {n} % {bits}")
        else:
            k = str(count % bits)
        if name == "rol":
            body += [f"{r} = ({a} << {k} | {a} >> ({bits} - {k})) & {mask:#x}",
                     f"{c} = {r} & 1",
                     f"{o} = ({r} >> {bits - 1} ^ {c}) & 1"]
        else:
            body += [f"{r} = ({a} >> {k} | {a} << ({bits} - {k})) & {mask:#x}",
                     f"{c} = {r} >> {bits - 1} & 1",
                     f"{o} = ({r} >> {bits - 1} ^ {r} >> {bits - 2}) & 1"]
    else:   # rcl, rcr: rotate through CF as a (bits+1)-bit quantity
        ci = em.carry()
        w = em.new("w")
        body.append(f"{w} = {ci} << {bits} | {a}" if name == "rcl" else f"{w} = {a} << 1 | {ci}")
        # OF is defined for a count of 1 only (SDM RCL/RCR); for every count
        # we give the sign change, which is that for 1 and what Unicorn/QEMU give.
        if name == "rcl":
            body += [f"{w} = ({w} << {n} | {w} >> ({bits + 1} - {n})) & {(1 << (bits + 1)) - 1:#x}",
                     f"{r} = {w} & {mask:#x}", f"{c} = {w} >> {bits}",
                     f"{o} = ({a} ^ {r}) >> {bits - 1} & 1"]
        else:
            body += [f"{w} = ({w} >> {n} | {w} << ({bits + 1} - {n})) & {(1 << (bits + 1)) - 1:#x}",
                     f"{r} = {w} >> 1", f"{c} = {w} & 1",
                     f"{o} = ({a} ^ {r}) >> {bits - 1} & 1"]
    if not em.flags_live:
        # Nothing will read CF or OF: only the result is computed.
        body = [line for line in body if not line.startswith((f"{c} = ", f"{o} = "))]
    guarded = cnt.kind != IMM
    if guarded:
        em.emit(f"if {n}:")
    for line in body:
        em.emit(line, 1 if guarded else 0)
    _shift_result(em, place, r, c, o, name, size, guarded)


def _shift_result(em, place, r, c, o, name, size, guarded):
    """Store the result and the flags of a shift/rotate (inside `if count:` when guarded)."""
    start = len(em.lines)
    place.put(r)
    live = em.flags_live
    if name in ("rol", "ror", "rcl", "rcr"):
        # Only CF and OF change; the rest are carried over from before.
        if not live:
            em.known = None
        elif em.known is not None and em.known[0] == F.K_RAW:
            old = em.all_flags()
            em.set_raw_flags(f"({old}) & {~(F.CF | F.OF) & 0xFFF:#x} | {c} | {o} << 11")
        else:
            # The flags before are kept whole, not evaluated (flags.K_MERGE).
            em.uses_flags = True
            em.emit(f"if fo != {F.K_MERGE}: fr = (fo, fr, fa, fb); fo = {F.K_MERGE}")
            em.emit(f"fb = {c} | {o} << 11")
            em.known = (F.K_MERGE, size)
    else:
        # AF is undefined after a shift; processors leave it cleared.
        em.set_flags(F.K_RESULT, size, r, "0", f"{c} | {o} << 11")
    if guarded:
        em.indent_since(start)
        em.known = None     # count may have been zero: the old flags survive


@semantics("shld", "shrd")
def shxd(em, insn):
    dst, src, cnt = insn.operands
    size = dst.size
    bits = size * 8
    mask = MASKS[size]
    place = em.operand(dst, insn)
    a = place.get()
    b = em.new("b")
    em.emit(f"{b} = {em.reg(size, src.reg)}")
    n = em.new("n")
    em.emit(f"{n} = {cnt.imm & 0x1F if cnt.kind == IMM else em.reg(1, 1) + ' & 0x1F'}")
    r, c, o = em.new("r"), em.new("c"), em.new("o")
    em.emit(f"if {n}:")
    # The destination shifts through a concatenation with the source.  Counts
    # above 16 are undefined for 16-bit operands; Intel processors (and QEMU)
    # shift A:B:A, so the destination's own bits come round again: that is
    # the 48-bit `w` below.  OF is defined for a count of 1 only; for every
    # count it is the sign change of the last step, as QEMU computes it.
    w = em.new("w")
    if insn.mnemonic == "shld":
        wide = f"({a} << 32 | {b} << 16 | {a})" if bits == 16 else f"({a} << 32 | {b})"
        em.emit(f"{w} = {wide} << ({n} - 1)", 1)      # after all but the last step
        em.emit(f"{r} = ({w} >> 31) & {mask:#x}", 1)
        em.emit(f"{c} = ({w} >> {31 + bits}) & 1", 1)
        em.emit(f"{o} = ({r} >> {bits - 1} ^ {c}) & 1", 1)
    else:
        wide = f"({a} << 32 | {b} << 16 | {a})" if bits == 16 else f"({b} << 32 | {a})"
        em.emit(f"{w} = {wide} >> ({n} - 1)", 1)      # after all but the last step
        em.emit(f"{c} = {w} & 1", 1)
        em.emit(f"{r} = ({w} >> 1) & {mask:#x}", 1)
        em.emit(f"{o} = ({w} ^ {r}) >> {bits - 1} & 1", 1)
    _shift_result(em, place, r, c, o, "shl", size, True)


# -- bit operations --------------------------------------------------------------------

@semantics("bt", "bts", "btr", "btc")
def bt(em, insn):
    dst, src = insn.operands
    size = dst.size
    bits = size * 8
    if dst.kind == MEM and src.kind == REG:
        # The bit offset is a signed index from the operand's address (SDM BT).
        off = em.new("o")
        sign = SIGNS[size]
        em.emit(f"{off} = ({em.reg(size, src.reg)} ^ {sign:#x}) - {sign:#x}")
        base = em.offset(dst, insn.adsize)
        a = em.new("e")
        em.emit(f"{a} = (({base}) + ({off} >> {bits.bit_length() - 1}) * {size}) & "
                f"{0xFFFFFFFF if insn.adsize == 32 else 0xFFFF:#x}")
        addr = em.linear(dst.seg, a)
        place = Place(em, size, addr=addr)
        bit = f"({off} & {bits - 1})"
    else:
        place = em.operand(dst, insn)
        bit = f"({src.imm & (bits - 1)})" if src.kind == IMM else f"({em.reg(size, src.reg)} & {bits - 1})"
    v = place.get()
    c = em.new("c")
    em.emit(f"{c} = {v} >> {bit} & 1")
    if insn.mnemonic == "bts":
        place.put(f"{v} | 1 << {bit}")
    elif insn.mnemonic == "btr":
        place.put(f"{v} & ~(1 << {bit}) & {MASKS[size]:#x}")
    elif insn.mnemonic == "btc":
        place.put(f"{v} ^ 1 << {bit}")
    # CF is the bit; ZF is unaffected; OF SF AF PF are undefined and we keep
    # them.  (QEMU's depend on its internal lazy-flags state, which nothing
    # cheap can mirror: the differential test masks those four.)
    if em.flags_live:
        old = em.all_flags()
        em.set_raw_flags(f"({old}) & {~F.CF & 0xFFF:#x} | {c}")
    else:
        em.known = None


@semantics("bsf", "bsr")
def bsf(em, insn):
    dst, src = insn.operands
    v = em.new("v")
    em.emit(f"{v} = {em.read(src, insn)}")
    em.emit(f"if {v}:")
    if insn.mnemonic == "bsf":
        idx = f"({v} & -{v}).bit_length() - 1"
    else:
        idx = f"{v}.bit_length() - 1"
    start = len(em.lines)
    em.set_reg(dst.size, dst.reg, idx)
    em.indent_since(start)
    # ZF = source was zero, when the destination is left unchanged (as
    # processors do).  The other flags are undefined; Unicorn/QEMU derive
    # them from the source as for a logic op, and so do we.
    em.set_flags(F.K_LOGIC, src.size, v)


# -- conditions --------------------------------------------------------------------------

for _cc, _name in enumerate(CONDS):
    def _jcc(em, insn, cc=_cc):
        target = insn.operands[0].imm
        return ("JCC", cc, target)

    def _setcc(em, insn, cc=_cc):
        (dst,) = insn.operands
        cond = em.condition(cc)
        value = f"(1 if {cond} else 0)"
        if dst.kind == REG:
            em.set_reg(1, dst.reg, value)
        else:
            em.store(em.address(dst, insn), 1, value)

    def _cmov(em, insn, cc=_cc):
        dst, src = insn.operands
        v = em.new("v")
        # The source is read (and may fault) whatever the condition.
        em.emit(f"{v} = {em.read(src, insn)}")
        cond = em.condition(cc)
        em.emit(f"if {cond}:")
        start = len(em.lines)
        em.set_reg(dst.size, dst.reg, v)
        em.indent_since(start)

    SEMANTICS[f"j{_name}"] = _jcc
    SEMANTICS[f"set{_name}"] = _setcc
    SEMANTICS[f"cmov{_name}"] = _cmov


@semantics("salc")
def salc(em, insn):
    em.set_reg(1, 0, f"(0xFF if {em.carry()} else 0)")


@semantics("lahf")
def lahf(em, insn):
    em.set_reg(1, 4, f"({em.all_flags()}) & 0xD5 | 2")


@semantics("sahf")
def sahf(em, insn):
    old = em.all_flags()
    em.set_raw_flags(f"({old}) & {F.OF:#x} | {em.reg(1, 4)} & 0xD5")


@semantics("clc", "stc", "cmc")
def carry_flag(em, insn):
    old = em.all_flags()
    if insn.mnemonic == "clc":
        em.set_raw_flags(f"({old}) & {~F.CF & 0xFFF:#x}")
    elif insn.mnemonic == "stc":
        em.set_raw_flags(f"({old}) | 1")
    else:
        em.set_raw_flags(f"({old}) ^ 1")


# -- the stack ---------------------------------------------------------------------------

def push(em: Emitter, size: int, value: str) -> None:
    """Write below ESP, then move ESP: a fault leaves ESP as it was."""
    s = em.new("s")
    em.regs_read.add(4)
    if em.stack32:
        em.emit(f"{s} = (r4 - {size}) & 0xFFFFFFFF")
    else:
        em.emit(f"{s} = (r4 - {size}) & 0xFFFF")
    v = value
    if not value.isidentifier() and not value.isdigit():
        v = em.new("v")
        em.emit(f"{v} = {value}")
    em.store(em.linear(2, s, once=True), size, v)
    _set_sp(em, s)


def _set_sp(em, s):
    if em.stack32:
        em.set_reg(4, 4, s)
    else:
        em.set_reg(2, 4, s)


def pop(em: Emitter, size: int, into: str | None = None) -> tuple[str, str]:
    """Read the top of the stack (into the local `into`, if given); returns
    (value, new sp) without moving ESP: the new SP as an expression of ESP,
    which stays as it was until the caller sets it."""
    sp = "r4" if em.stack32 else "(r4 & 0xFFFF)"
    em.regs_read.add(4)
    v = em.load(em.linear(2, sp, once=True), size, into)
    return v, f"(({sp} + {size}) & {0xFFFFFFFF if em.stack32 else 0xFFFF:#x})"


@semantics("push")
def push_(em, insn):
    (src,) = insn.operands
    size = insn.opsize // 8
    if src.kind == SREG:
        push(em, size, f"SS_[{src.reg}]")
    elif src.kind == IMM:
        push(em, size, str(src.imm & MASKS[size]))
    elif src.kind == REG:
        # ESP too: push() stores before it moves ESP, so the value is the old one.
        push(em, size, em.reg(size, src.reg))
    elif src.kind == MEM:
        push(em, size, em.read(src, insn))  # read (through the old ESP) before the decrement
    else:
        v = em.new("v")
        em.emit(f"{v} = {em.read(src, insn)}")
        push(em, size, v)


@semantics("pop")
def pop_(em, insn):
    (dst,) = insn.operands
    size = insn.opsize // 8
    if dst.kind == REG and size == 4 and dst.reg != 4:
        # The common POP r32: straight into the register (assigned only if
        # the read succeeds), then ESP.
        em.regs_written.add(dst.reg)
        _set_sp(em, pop(em, size, into=f"r{dst.reg}")[1])
        return
    v, s = pop(em, size)
    if dst.kind == SREG:
        em.emit(f"LOADSEG({dst.reg}, {v})")
        _set_sp(em, s)
    elif dst.kind == REG:
        _set_sp(em, s)
        em.set_reg(size, dst.reg, v)    # POP ESP: the popped value wins
    else:
        # POP to memory computes the address with ESP already incremented.
        saved = em.new("k")
        em.emit(f"{saved} = r4")
        if em.stack32:
            em.emit(f"r4 = {s}")
        else:
            em.emit(f"r4 = r4 & 0xFFFF0000 | {s}")
        em.regs_written.add(4)
        try:
            a = em.address(dst, insn)
        finally:
            em.emit(f"r4 = {saved}")
        em.store(a, size, v)
        _set_sp(em, s)


@semantics("pusha", "pushaw")
def pusha(em, insn):
    size = insn.opsize // 8
    sp = em.new("k")
    em.emit(f"{sp} = {em.reg(size, 4)}")
    # Check the whole frame before writing: either all eight go or none.
    base = em.new("s")
    stack_mask = 0xFFFFFFFF if em.stack32 else 0xFFFF
    em.emit(f"{base} = ({em.reg(4 if em.stack32 else 2, 4)} - {8 * size}) & {stack_mask:#x}")
    for i, reg in enumerate((0, 1, 2, 3, 4, 5, 6, 7)):
        value = sp if reg == 4 else em.reg(size, reg)
        off = f"({base} + {(7 - i) * size}) & {stack_mask:#x}"
        em.store(em.linear(2, off), size, value)
    _set_sp(em, base)


@semantics("popa", "popaw")
def popa(em, insn):
    size = insn.opsize // 8
    stack_mask = 0xFFFFFFFF if em.stack32 else 0xFFFF
    sp = "r4" if em.stack32 else "(r4 & 0xFFFF)"
    em.regs_read.add(4)
    vals = []
    for i in range(8):
        vals.append(em.load(em.linear(2, f"({sp} + {i * size}) & {stack_mask:#x}"), size))
    s = em.new("s")
    em.emit(f"{s} = ({sp} + {8 * size}) & {stack_mask:#x}")
    for i, reg in enumerate((7, 6, 5, 4, 3, 2, 1, 0)):
        if reg != 4:                # the saved ESP is skipped
            em.set_reg(size, reg, vals[i])
    _set_sp(em, s)


@semantics("pushf", "pushfw")
def pushf(em, insn):
    size = insn.opsize // 8
    if em.cpl == 3 and not em.flat:
        # In V86 mode PUSHF is IOPL-sensitive (SDM PUSHF): #GP(0) below IOPL 3.
        em.emit("if cpu.eflags & 0x20000 and cpu.eflags & 0x3000 != 0x3000: raise FAULT(13)")
    # VM and RF are never copied to the stack image (SDM PUSHF).
    push(em, size, f"(cpu.eflags | {em.all_flags()}) & {MASKS[size] & ~0x30000:#x}")


@semantics("popf", "popfw")
def popf(em, insn):
    size = insn.opsize // 8
    v, s = pop(em, size)
    em.emit(f"POPF({v}, {size})")
    em.set_raw_flags(f"{v} & {F.ARITH:#x}")
    _set_sp(em, s)


@semantics("enter")
def enter(em, insn):
    alloc, level = insn.operands[0].imm, insn.operands[1].imm & 31
    size = insn.opsize // 8
    mask = 0xFFFFFFFF if em.stack32 else 0xFFFF
    sp = "r4" if em.stack32 else "(r4 & 0xFFFF)"
    bp = "r5" if em.stack32 else "(r5 & 0xFFFF)"
    em.regs_read.update((4, 5))
    frame = em.new("f")
    em.emit(f"{frame} = ({sp} - {size}) & {mask:#x}")
    em.store(em.linear(2, frame), size, em.reg(size, 5))
    cur = frame
    if level:
        for i in range(1, level):
            src = em.load(em.linear(2, f"({bp} - {i * size}) & {mask:#x}"), size)
            nxt = em.new("f")
            em.emit(f"{nxt} = ({cur} - {size}) & {mask:#x}")
            em.store(em.linear(2, nxt), size, src)
            cur = nxt
        nxt = em.new("f")
        em.emit(f"{nxt} = ({cur} - {size}) & {mask:#x}")
        em.store(em.linear(2, nxt), size, f"{frame} & {MASKS[size]:#x}")
        cur = nxt
    end = em.new("s")
    # The allocated space itself is not accessed (SDM ENTER): no probe.
    em.emit(f"{end} = ({cur} - {alloc}) & {mask:#x}")
    em.set_reg(size, 5, f"{frame} & {MASKS[size]:#x}")
    _set_sp(em, end)


@semantics("leave")
def leave(em, insn):
    size = insn.opsize // 8
    bp = "r5" if em.stack32 else "(r5 & 0xFFFF)"
    em.regs_read.add(5)
    v = em.load(em.linear(2, bp), size)
    s = em.new("s")
    em.emit(f"{s} = ({bp} + {size}) & {0xFFFFFFFF if em.stack32 else 0xFFFF:#x}")
    em.set_reg(size, 5, v)
    _set_sp(em, s)


# -- control transfer ------------------------------------------------------------------------
# A branch generator returns the next-EIP expression; the block ends there.

@semantics("jmp")
def jmp(em, insn):
    (t,) = insn.operands
    if t.kind == REL:
        return ("REL", t.imm)
    if t.kind == FAR:
        em.emit(f"FARJMP({t.sel}, {t.imm}, NEXT)")
        return "EIPNOW()"
    if t.kind == MEM and t.size == insn.opsize // 8 + 2:
        return far_indirect(em, insn, t, "FARJMP")
    v = em.new("j")
    em.emit(f"{v} = {em.read(t, insn)}")
    return v


def far_indirect(em, insn, t, fn):
    size = insn.opsize // 8
    a = em.address(t, insn)
    off = em.load(a, size)
    sel = em.load(f"({a} + {size}) & 0xFFFFFFFF", 2)
    em.emit(f"{fn}({sel}, {off}, NEXT)")
    return "EIPNOW()"


@semantics("call")
def call(em, insn):
    (t,) = insn.operands
    size = insn.opsize // 8
    if t.kind == FAR:
        em.emit(f"FARCALL({t.sel}, {t.imm}, NEXT, {size})")
        return "EIPNOW()"
    if t.kind == MEM and t.size == size + 2:
        a = em.address(t, insn)
        off = em.load(a, size)
        sel = em.load(f"({a} + {size}) & 0xFFFFFFFF", 2)
        em.emit(f"FARCALL({sel}, {off}, NEXT, {size})")
        return "EIPNOW()"
    if t.kind == REL:
        target = ("REL", t.imm)
    else:
        v = em.new("j")
        em.emit(f"{v} = {em.read(t, insn)}")
        target = v
    push(em, size, "NEXT")
    return target


@semantics("ret")
def ret(em, insn):
    size = insn.opsize // 8
    # The return address in a local of its own name, which a run of POPs
    # ending in this RET also fills (blocks._stack_run).
    v, s = pop(em, size, into="rt")
    if insn.operands:
        imm = insn.operands[0].imm
        s2 = em.new("s")
        em.emit(f"{s2} = ({s} + {imm}) & {0xFFFFFFFF if em.stack32 else 0xFFFF:#x}")
        s = s2
    _set_sp(em, s)
    return v


@semantics("retf")
def retf(em, insn):
    imm = insn.operands[0].imm if insn.operands else 0
    em.emit(f"FARRET({insn.opsize // 8}, {imm})")
    return "EIPNOW()"


@semantics("iret", "iretw")
def iret(em, insn):
    em.emit(f"IRET({insn.opsize // 8})")
    return "EIPNOW()"


@semantics("loop", "loope", "loopne", "jcxz", "jecxz")
def loop(em, insn):
    target = insn.operands[0].imm
    if insn.adsize == 32:
        count, mask = "r1", 0xFFFFFFFF
    else:
        count, mask = "(r1 & 0xFFFF)", 0xFFFF
    em.regs_read.add(1)
    if insn.mnemonic in ("jcxz", "jecxz"):
        return ("JIF", f"{count} == 0", target)
    c = em.new("c")
    em.emit(f"{c} = ({count} - 1) & {mask:#x}")
    em.set_reg(insn.adsize // 8, 1, c)
    cond = f"{c} != 0"
    if insn.mnemonic == "loope":
        cond += f" and {em.condition(4)}"
    elif insn.mnemonic == "loopne":
        cond += f" and {em.condition(5)}"
    return ("JIF", cond, target)


@semantics("int", "int3", "into", "int1")
def int_(em, insn):
    if insn.mnemonic == "into":
        em.emit(f"if {em.condition(0)}: raise SOFTINT(4)")
        return None
    vector = insn.operands[0].imm if insn.mnemonic == "int" else (3 if insn.mnemonic == "int3" else 1)
    em.emit(f"raise SOFTINT({vector})" if insn.mnemonic != "int1" else "raise TRAP(1)")
    return None


@semantics("bound")
def bound(em, insn):
    reg, mem = insn.operands
    size = reg.size
    sign = SIGNS[size]
    a = em.address(mem, insn)
    lo = em.load(a, size)
    hi = em.load(f"({a} + {size}) & 0xFFFFFFFF", size)
    v = em.new("v")
    em.emit(f"{v} = ({em.reg(size, reg.reg)} ^ {sign:#x}) - {sign:#x}")
    em.emit(f"if {v} < ({lo} ^ {sign:#x}) - {sign:#x} or {v} > ({hi} ^ {sign:#x}) - {sign:#x}: "
            f"raise FAULT({5})")


@semantics("ud2")
def ud2(em, insn):
    em.emit("raise FAULT(6)")


# -- string instructions ---------------------------------------------------------------------
# One iteration per pass of a Python loop; registers move after each
# iteration's memory accesses, so a fault mid-REP leaves ECX/ESI/EDI exactly
# where the processor would (the instruction restarts from there).

@semantics("movs", "stos", "lods", "cmps", "scas", "ins", "outs")
def string(em, insn):
    name = insn.mnemonic
    size = insn.operands[0].size if name not in ("outs",) else insn.operands[1].size
    if name == "ins":
        size = insn.operands[0].size
    amask = 0xFFFFFFFF if insn.adsize == 32 else 0xFFFF
    asize = insn.adsize // 8
    em.regs_read.update((1, 2, 6, 7))       # ECX, EDX (INS/OUTS port), ESI, EDI
    step = em.new("d")
    em.emit(f"{step} = -{size} if cpu.eflags & {F.DF:#x} else {size}")
    rep = insn.rep if name not in ("lods",) or insn.rep else 0
    ind = 0
    count = "r1" if asize == 4 else "(r1 & 0xFFFF)"
    if rep:
        em.emit(f"while {count}:")
        ind = 1
    start = len(em.lines)
    si = "r6" if asize == 4 else "(r6 & 0xFFFF)"
    di = "r7" if asize == 4 else "(r7 & 0xFFFF)"
    src_seg = insn.segment if insn.segment >= 0 else 3
    moves_si = name in ("movs", "lods", "cmps", "outs")
    moves_di = name in ("movs", "stos", "cmps", "scas", "ins")
    cmp_a = cmp_b = None
    if name == "movs":
        v = em.load(em.linear(src_seg, si, once=True), size)
        em.store(em.linear(0, di, once=True), size, v)
    elif name == "stos":
        em.store(em.linear(0, di, once=True), size, em.reg(size, 0))
    elif name == "lods":
        v = em.load(em.linear(src_seg, si, once=True), size)
        em.set_reg(size, 0, v)
    elif name == "cmps":
        cmp_a = em.load(em.linear(src_seg, si, once=True), size)
        cmp_b = em.load(em.linear(0, di, once=True), size)
    elif name == "scas":
        cmp_a = em.new("a")
        em.emit(f"{cmp_a} = {em.reg(size, 0)}")
        cmp_b = em.load(em.linear(0, di, once=True), size)
    elif name == "ins":
        v = em.new("v")
        em.emit(f"{v} = PORT_IN(r2 & 0xFFFF, {size})")
        em.store(em.linear(0, di, once=True), size, v)
    elif name == "outs":
        v = em.load(em.linear(src_seg, si, once=True), size)
        em.emit(f"PORT_OUT(r2 & 0xFFFF, {size}, {v})")
    if moves_si:
        em.set_reg(asize, 6, f"({si} + {step}) & {amask:#x}")
    if moves_di:
        em.set_reg(asize, 7, f"({di} + {step}) & {amask:#x}")
    if rep:
        em.set_reg(asize, 1, f"({count} - 1) & {amask:#x}")
    if cmp_a is not None:
        r = em.new("r")
        em.emit(f"{r} = ({cmp_a} - {cmp_b}) & {MASKS[size]:#x}")
        saved = em.flags_live
        em.flags_live = True
        em.set_flags(F.K_SUB, size, r, cmp_a, cmp_b)
        em.flags_live = saved
        if rep == 0xF3:
            em.emit(f"if {r}: break")
        elif rep == 0xF2:
            em.emit(f"if not {r}: break")
    em.indent_since(start, ind)
    if rep and cmp_a is not None:
        em.known = None     # zero iterations leave the old flags


# -- atomics and exchange ---------------------------------------------------------------------

@semantics("cmpxchg")
def cmpxchg(em, insn):
    dst, src = insn.operands
    size = dst.size
    place = em.operand(dst, insn)
    d = place.get()
    acc = em.new("a")
    em.emit(f"{acc} = {em.reg(size, 0)}")
    r = em.new("r")
    em.emit(f"{r} = ({acc} - {d}) & {MASKS[size]:#x}")
    # The destination is always written (the processor's locked cycle does).
    new = em.new("n")
    em.emit(f"{new} = {em.reg(size, src.reg)} if {r} == 0 else {d}")
    place.put(new)
    em.emit(f"if {r}:")
    start = len(em.lines)
    em.set_reg(size, 0, d)
    em.indent_since(start)
    em.set_flags(F.K_SUB, size, r, acc, d)


@semantics("xadd")
def xadd(em, insn):
    dst, src = insn.operands
    size = dst.size
    place = em.operand(dst, insn)
    d = place.get()
    s = em.new("b")
    em.emit(f"{s} = {em.reg(size, src.reg)}")
    r = em.new("r")
    em.emit(f"{r} = ({d} + {s}) & {MASKS[size]:#x}")
    # Source first: for XADD r,r on one register the sum is what remains.
    if place.is_mem:
        place.put(r)
        em.set_reg(size, src.reg, d)
    else:
        em.set_reg(size, src.reg, d)
        place.put(r)
    em.set_flags(F.K_ADD, size, r, d, s)


@semantics("cmpxchg8b")
def cmpxchg8b(em, insn):
    (mem,) = insn.operands
    a = em.address(mem, insn)
    v = em.load(a, 8)
    em.regs_read.update((0, 1, 2, 3))
    eq = em.new("e")
    em.emit(f"{eq} = {v} == (r2 << 32 | r0)")
    em.store(a, 8, f"(r1 << 32 | r3) if {eq} else {v}")
    em.emit(f"if not {eq}: r0 = {v} & 0xFFFFFFFF; r2 = {v} >> 32")
    em.regs_written.update((0, 2))
    old = em.all_flags()
    em.set_raw_flags(f"({old}) & {~F.ZF & 0xFFF:#x} | ({F.ZF} if {eq} else 0)")


# -- decimal arithmetic ---------------------------------------------------------------------------
# Straight from the SDM pseudo-code; the undefined flags are those
# Unicorn/QEMU compute (SF ZF PF from AL; OF as noted).

@semantics("daa", "das")
def daa(em, insn):
    old = em.all_flags()
    f = em.new("f")
    em.emit(f"{f} = {old}")
    al, cf, af = em.new("al"), em.new("cf"), em.new("af")
    em.emit(f"{al} = {em.reg(1, 0)}; {cf} = 0; {af} = 0")
    sub = insn.mnemonic == "das"
    op = "-" if sub else "+"
    em.emit(f"if ({al} & 0xF) > 9 or {f} & {F.AF}:")
    em.emit(f"{af} = {F.AF}", 1)
    if sub:
        em.emit(f"{cf} = 1 if {al} < 6 or {f} & 1 else 0", 1)
    em.emit(f"{al}_n = ({al} {op} 6) & 0xFF", 1)
    if not sub:
        em.emit(f"{cf} = 1 if {al} + 6 > 0xFF or {f} & 1 else 0", 1)
    em.emit(f"else: {al}_n = {al}")
    em.emit(f"if {al} > 0x99 or {f} & 1:")
    em.emit(f"{al}_n = ({al}_n {op} 0x60) & 0xFF; {cf} = 1", 1)
    em.set_reg(1, 0, f"{al}_n")
    em.set_raw_flags(f"{cf} | {af} | PARITY[{al}_n] | ({F.ZF} if {al}_n == 0 else 0) | {al}_n & 0x80")


@semantics("aaa", "aas")
def aaa(em, insn):
    old = em.all_flags()
    f = em.new("f")
    # OF SF ZF PF are undefined; they keep their old values, as in
    # Unicorn/QEMU.  AAS's AX - 6 borrows from AH before AH - 1 (SDM AAS).
    em.emit(f"{f} = {old}")
    ax = em.new("ax")
    em.emit(f"{ax} = {em.reg(2, 0)}")
    sub = insn.mnemonic == "aas"
    adjust = em.new("j")
    em.emit(f"{adjust} = ({ax} & 0xF) > 9 or {f} & {F.AF}")
    em.emit(f"{f} &= {F.OF | F.SF | F.ZF | F.PF:#x}")
    em.emit(f"if {adjust}:")
    if sub:
        em.emit(f"{ax} = (({ax} - 0x106) & 0xFFFF) & 0xFF0F; {f} |= {F.AF | F.CF}", 1)
    else:
        em.emit(f"{ax} = (({ax} + 0x106) & 0xFFFF) & 0xFF0F; {f} |= {F.AF | F.CF}", 1)
    em.emit(f"else: {ax} &= 0xFF0F")
    em.set_reg(2, 0, ax)
    em.set_raw_flags(f)


@semantics("aam")
def aam(em, insn):
    base = insn.operands[0].imm
    if base == 0:
        em.emit("raise DIVERR()")
        return
    al = em.new("al")
    em.emit(f"{al} = {em.reg(1, 0)}")
    em.set_reg(2, 0, f"({al} // {base}) << 8 | {al} % {base}")
    em.set_flags(F.K_LOGIC, 1, f"{al} % {base}")


@semantics("aad")
def aad(em, insn):
    base = insn.operands[0].imm
    r = em.new("r")
    em.emit(f"{r} = ({em.reg(1, 0)} + {em.reg(1, 4)} * {base}) & 0xFF")
    em.set_reg(2, 0, r)
    em.set_flags(F.K_LOGIC, 1, r)


# -- flags control, processor state -----------------------------------------------------------------

@semantics("cld", "std")
def direction(em, insn):
    em.emit("CLD()" if insn.mnemonic == "cld" else "STD()")


@semantics("cli", "sti")
def interrupt_flag(em, insn):
    em.emit(f"{'CLI' if insn.mnemonic == 'cli' else 'STI'}()")


@semantics("hlt")
def hlt(em, insn):
    em.emit("HLT()")


@semantics("cpuid")
def cpuid(em, insn):
    em.regs_read.add(0)
    em.emit("r0, r3, r1, r2 = CPUID(r0)")
    em.regs_written.update((0, 1, 2, 3))


@semantics("rdtsc")
def rdtsc(em, insn):
    t = em.new("t")
    # cpu.icount counts up to the block's start; RDTSC always ends a block.
    em.emit(f"{t} = RDTSC() + {em.index}")
    em.emit(f"r0 = {t} & 0xFFFFFFFF; r2 = {t} >> 32")
    em.regs_written.update((0, 2))


@semantics("rdmsr", "wrmsr")
def msr(em, insn):
    em.regs_read.update((0, 1, 2))
    if insn.mnemonic == "rdmsr":
        t = em.new("t")
        em.emit(f"{t} = RDMSR(r1)")
        em.emit(f"r0 = {t} & 0xFFFFFFFF; r2 = {t} >> 32")
        em.regs_written.update((0, 2))
    else:
        em.emit("WRMSR(r1, r2 << 32 | r0)")


@semantics("in")
def in_(em, insn):
    dst, port = insn.operands
    p = str(port.imm) if port.kind == IMM else "(r2 & 0xFFFF)"
    em.regs_read.add(2)
    v = em.new("v")
    em.emit(f"{v} = PORT_IN({p}, {dst.size})")
    em.set_reg(dst.size, 0, v)


@semantics("out")
def out(em, insn):
    port, src = insn.operands
    p = str(port.imm) if port.kind == IMM else "(r2 & 0xFFFF)"
    em.regs_read.add(2)
    em.emit(f"PORT_OUT({p}, {src.size}, {em.reg(src.size, 0)})")


@semantics("les", "lds", "lss", "lfs", "lgs")
def load_far_pointer(em, insn):
    reg, mem = insn.operands
    size = reg.size
    seg = {"les": 0, "lds": 3, "lss": 2, "lfs": 4, "lgs": 5}[insn.mnemonic]
    a = em.address(mem, insn)
    off = em.load(a, size)
    sel = em.load(f"({a} + {size}) & 0xFFFFFFFF", 2)
    em.emit(f"LOADSEG({seg}, {sel})")
    em.set_reg(size, reg.reg, off)


# System instructions the protection layer implements: each becomes one call
# to a CPU method with its decoded operands, after the privilege check that
# the block's CPL settles at compile time.
SYSTEM = ("lgdt", "lidt", "sgdt", "sidt", "lldt", "sldt", "ltr", "str", "lmsw", "smsw",
          "clts", "invlpg", "invd", "wbinvd", "arpl", "lar", "lsl", "verr", "verw")


@semantics(*SYSTEM)
def system(em, insn):
    em.emit(f"SYSTEM(INSN[{em.index}])")
