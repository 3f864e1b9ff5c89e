"""Instruction semantics as Python source: the block compiler's back end.

Each decoded instruction becomes a few lines of Python inside one function per
block.  Registers live in locals r0..r7 for the block's life; the arithmetic
flags live in locals fo fr fa fb (the lazy form of flags.py).  Semantics
follow the Intel SDM Vol. 2 instruction pages.

Two rules keep exceptions precise.  Within an instruction, everything that
can fault (memory reads and writes, #DE) happens before any register or flag
local changes, so when an exception leaves the block the locals still hold
the state at the start of the faulting instruction; the block's handler
writes them back and finds that instruction from the traceback's line
number.  And flags computation is skipped only where flag liveness proves it
dead: no reader and no possible fault before the next full flags write.
"""
from __future__ import annotations

from . import flags as F
from .instruction import CREG, DREG, FAR, IMM, MEM, REG, REL, SREG, Instruction
from .exceptions import BR, DE, GP, NM, OF, UD, BP, DB
from .memory import PAGE_MASK

MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
SIGNS = {1: 0x80, 2: 0x8000, 4: 0x80000000}
ARITH_KIND = {"add": F.K_ADD, "sub": F.K_SUB, "cmp": F.K_CMP,
              "and": F.K_LOGIC, "or": F.K_LOGIC, "xor": F.K_LOGIC, "test": F.K_LOGIC}
# The Python operator of each two-operand ALU instruction (CMP and TEST compute
# SUB's and AND's, though a CMP keeps only its inputs: flags.K_CMP).
ALU_OPS = {"add": "+", "sub": "-", "cmp": "-", "and": "&", "or": "|", "xor": "^", "test": "&"}
# Instructions that leave all six arithmetic flags defined from scratch.
FULL_FLAG_WRITERS = frozenset({
    "add", "sub", "cmp", "and", "or", "xor", "test", "neg", "adc", "sbb",
    "cmpxchg", "xadd", "mul", "imul", "popf", "popfw", "daa", "das",
    "aaa", "aas", "aam", "aad", "bsf", "bsr", "cmpxchg8b", "cmps", "scas",
})
CONDS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
# Instructions whose results depend on incoming flags.
FLAG_READERS = frozenset({
    "adc", "sbb", "pushf", "pushfw", "lahf", "into", "daa", "das", "aaa", "aas",
    "rcl", "rcr", "salc", "int", "int3", "int1", "iret", "iretw", "cmc",
} | {f"j{c}" for c in CONDS} | {f"set{c}" for c in CONDS} | {f"cmov{c}" for c in CONDS})
# Instructions that touch flags but keep some of the old ones (read them to pass them on).
PARTIAL_FLAG_WRITERS = frozenset({
    "inc", "dec", "rol", "ror", "rcl", "rcr", "shl", "sal", "shr", "sar", "shld", "shrd",
    "bt", "bts", "btr", "btc", "sahf", "clc", "stc", "cmc", "lar", "lsl", "verr", "verw",
    "arpl",
})


def signed32(value: int) -> int:
    """A dword (a displacement) read as two's complement."""
    return (value + 0x80000000 & 0xFFFFFFFF) - 0x80000000


def tlb_key(a: str, keep: int = 0) -> str:
    """The TLB key of the address expression `a`: its page base (cpu.tlb_r),
    with the low bits `keep` of `a` kept so that an address with any of them
    set misses (3: a dword's alignment).  Folded when `a` is a number."""
    if a.isdigit():
        return f"{int(a) & (PAGE_MASK | keep):#x}"
    return f"{a} & 0x{PAGE_MASK | keep:X}"


def tlb_page(tlb: str, a: str, keep: int = 0) -> str:
    """The TLB probe for `a`: its physical page base, KeyError on a miss."""
    return f"{tlb}[{tlb_key(a, keep)}]"


def page_address(tlb: str, a: str) -> str:
    """The physical address of `a` through `tlb` (KeyError when not there)."""
    offset = f"{int(a) & 0xFFF}" if a.isdigit() else f"{a} & 0xFFF"
    return f"{tlb_page(tlb, a)} | {offset}"


def dword_index(tlb: str, a: str) -> str:
    """The index in the dword view of the aligned dword at `a`, raising
    KeyError (to the slow path) when `a` is unaligned or its page is not
    in `tlb`."""
    if a.isdigit() and not int(a) & 3:
        word = (int(a) & 0xFFF) >> 2
        return f"{tlb_page(tlb, a)} >> 2 | {word}" if word else f"{tlb_page(tlb, a)} >> 2"
    return f"({tlb_page(tlb, a, 3)} | {a} & 0xFFF) >> 2"


def _in_frame(op) -> bool:
    """A dword at ESP + 4k in the page's reach (see Emitter._frame_slot)."""
    return op.base == 4 and op.index < 0 and op.size == 4 and 0 <= signed32(op.disp) < 4096 \
        and not op.disp & 3


# Instructions that move ESP (the operands aside): a stretch of stack-frame
# accesses ends at them.
_STACK_MOVERS = frozenset({
    "push", "pop", "call", "ret", "retf", "leave", "enter", "pusha", "pushaw", "popa",
    "popaw", "pushf", "pushfw", "popf", "popfw", "iret", "iretw", "int", "int3", "into",
})
# Instructions whose operand 0 is read, not written (a frame access's direction).
_READS_FIRST = frozenset({"cmp", "test", "bt", "mul", "imul", "div", "idiv"})


def plan_frames(insns: list[Instruction]) -> list[str | None]:
    """For each instruction of a straight run, the page local its stack-frame
    accesses go through (Emitter._frame_slot): "sp_r" for a stretch of
    unchanged ESP that only reads its frame, "sp_w" (the write TLB's page,
    which reads as well) for one that writes it too, None where the stretch
    has one access or none: a probe (three lines) costs more to compile and
    to run than the one access it would serve.  A guess from the operands;
    the emitter still follows ESP itself, so a wrong one only costs speed."""
    out: list[str | None] = [None] * len(insns)
    start, reads, writes = 0, 0, 0

    def close(end: int) -> None:
        if reads + writes >= 2:
            page = "sp_w" if writes else "sp_r"
            for i in range(start, end):
                out[i] = page

    for i, insn in enumerate(insns):
        name = insn.mnemonic
        moves = name in _STACK_MOVERS or any(
            op.kind == REG and op.reg == 4 and op.size != 1 for op in insn.operands)
        if moves or insn.adsize != 32:
            close(i)
            start, reads, writes = i + 1, 0, 0
            continue
        for slot, op in enumerate(insn.operands):
            if op.kind == MEM and _in_frame(op):
                if slot or name in _READS_FIRST:
                    reads += 1
                else:
                    writes += 1
    close(len(insns))
    return out


class _Written(set):
    """Emitter.regs_written, counting the writes of ESP into `esp`."""

    def __init__(self, esp: list):
        super().__init__()
        self.esp = esp

    def add(self, n: int) -> None:
        if n == 4:
            self.esp[0] += 1
        super().add(n)

    def update(self, *sets) -> None:
        for regs in sets:
            for n in regs:
                self.add(n)


class Unsupported(Exception):
    """An instruction the executor does not implement yet: #UD at run time."""


class Emitter:
    """Generates the body of one block."""

    def __init__(self, flat: bool, cpl: int, stack32: bool = True, compact: bool = False):
        self.flat = flat
        # First-tier code: memory accesses are calls (RD4(a), WR4(a, v)),
        # a quarter of the source of the inline TLB lookup that hot code
        # gets, for about a third more time per access.
        self.compact = compact
        self.cpl = cpl
        self.stack32 = stack32
        self.lines: list[str] = []
        self.line_insn: list[int] = []    # instruction index of each body line
        self.index = 0
        self.regs_read: set[int] = set()
        # ESP's writes are counted (self._esp): the stack page found for a
        # frame (_frame_slot) holds until the next one.
        self._esp = [0]
        self.regs_written: set[int] = _Written(self._esp)
        self.uses_flags = False
        self.tmp = 0
        self.known = None                 # (kind, size) of the flags producer, if known here
        self.checked: dict[str, tuple[int, str]] = {}   # address local -> (segment, offset local)
        self.frames: dict[str, tuple[int, int]] = {}    # address local -> (dword at ESP + 4k: k, ESP's count)
        self.frame_pages: dict[str, int] = {}           # sp_q, sp_r, sp_w -> ESP's count when found
        self.guard_lines: dict[str, int] = {}           # sp_q, sp_r, sp_w -> its blank line here
        self.insn_esp = 0
        self.frame: str | None = None     # this instruction's frame page (plan_frames)
        self.flags_live = True
        self.synced = False               # some instruction calls into the CPU (SYNC_OUT)

    # -- plumbing -----------------------------------------------------------------
    def emit(self, line: str, indent: int = 0) -> None:
        self.lines.append("    " * indent + line)
        self.line_insn.append(self.index)

    def indent_since(self, start: int, levels: int = 1) -> None:
        """Put the lines emitted since `start` inside the block opened just before."""
        for i in range(start, len(self.lines)):
            self.lines[i] = "    " * levels + self.lines[i]

    def begin_instruction(self, insn: Instruction, frame: str | None = None) -> None:
        """Temporaries are numbered afresh for each instruction: what was
        known about an earlier one's names is gone (the stack pages found
        stay, while ESP does).  An instruction with a dword operand in a
        stack frame whose accesses go through `frame` (plan_frames) gets
        blank lines where that page's probe goes if one of its accesses
        needs it (_frame_slot): filled later, they keep the line numbers the
        instruction's code takes."""
        self.tmp = 0
        self.checked = {}
        self.frames = {}
        self.insn_esp = esp = self._esp[0]
        self.guard_lines = {}
        self.frame = frame
        if frame is None or self.compact or not self.flat or insn.adsize != 32 or not any(
                op.kind == MEM and _in_frame(op) for op in insn.operands):
            return
        for name in ("sp_q", frame):
            if self.frame_pages.get(name) != esp:
                self.guard_lines[name] = len(self.lines)
                self.emit("")
                if name != "sp_q":
                    self.emit("")

    def forget_frame(self) -> None:
        """ESP may have changed behind the emitter's back (a node's start,
        which may be entered from anywhere; a call into the CPU)."""
        self._esp[0] += 1

    def new(self, stem: str = "t") -> str:
        self.tmp += 1
        return f"{stem}_{self.tmp}"

    # -- registers ---------------------------------------------------------------------
    def reg(self, size: int, n: int) -> str:
        if size == 4:
            self.regs_read.add(n)
            return f"r{n}"
        if size == 2:
            self.regs_read.add(n)
            return f"(r{n} & 0xFFFF)"
        if n < 4:
            self.regs_read.add(n)
            return f"(r{n} & 0xFF)"
        self.regs_read.add(n - 4)
        return f"(r{n - 4} >> 8 & 0xFF)"

    def set_reg(self, size: int, n: int, expr: str) -> None:
        """expr must already be masked to `size`."""
        if size == 4:
            self.regs_written.add(n)
            if expr != f"r{n}":
                self.emit(f"r{n} = {expr}")
        elif size == 2:
            self.regs_read.add(n)
            self.regs_written.add(n)
            self.emit(f"r{n} = r{n} & 0xFFFF0000 | {expr}")
        elif n < 4:
            self.regs_read.add(n)
            self.regs_written.add(n)
            self.emit(f"r{n} = r{n} & 0xFFFFFF00 | {expr}")
        else:
            self.regs_read.add(n - 4)
            self.regs_written.add(n - 4)
            self.emit(f"r{n - 4} = r{n - 4} & 0xFFFF00FF | ({expr}) << 8")

    # -- memory ---------------------------------------------------------------------------
    def offset(self, op, adsize: int, wrap: bool = True) -> str:
        """The effective address of memory operand `op`; `wrap`: reduced
        modulo 2^32 (not needed for an address that only goes to an access
        in a flat segment, whose TLB probe misses past 2^32 and whose slow
        path wraps it)."""
        parts = []
        if op.base >= 0:
            parts.append(self.reg(4, op.base))
        if op.index >= 0:
            idx = self.reg(4, op.index)
            parts.append(idx if op.scale == 1 else f"{idx} * {op.scale}")
        if not parts and adsize == 32:
            return str(op.disp & 0xFFFFFFFF)        # an absolute address
        if op.disp or not parts:
            if adsize == 32 and wrap:
                parts.append(str(op.disp & 0xFFFFFFFF))
            else:
                # Unwrapped, a negative displacement stays negative: added as
                # 2^32 - d it would carry every address past 2^32 (a miss).
                disp = op.disp if adsize == 16 else signed32(op.disp)
                parts.append(str(disp))
        expr = " + ".join(parts).replace("+ -", "- ")
        if adsize == 16:
            return f"({expr}) & 0xFFFF"
        if len(parts) == 1 and op.base >= 0 and not op.disp:
            return expr
        return f"({expr}) & 0xFFFFFFFF" if wrap else expr

    def linear(self, seg: int, offset_expr: str, once: bool = False) -> str:
        """Emit the linear address into a fresh local and return its name.
        Outside flat segments (and always for FS/GS) the offset is kept so
        the access can be checked against the segment's limit and type.
        An address used `once`, by the access emitted next, needs no local
        of its own when it is already a name (a register or a temporary)."""
        if self.flat and seg not in (4, 5) and (offset_expr.isdigit() or once and (
                offset_expr.isidentifier() or self.compact)):
            return offset_expr      # (a number needs no local: its probe folds, tlb_page)
        a = self.new("a")
        if self.flat and seg not in (4, 5):
            self.emit(f"{a} = {offset_expr}")
        else:
            o = self.new("o")
            self.emit(f"{o} = {offset_expr}")
            self.emit(f"{a} = ({o} + SB[{seg}]) & 0xFFFFFFFF")
            self.checked[a] = (seg, o)
        return a

    def check_segment(self, a: str, size: int, write: bool) -> None:
        """The limit/type check of SDM Vol. 3 5.3 for an access at `a`: one
        comparison against the segment's precomputed maximum offset; the
        exact rules (expand-down, null, read-only) in cpu.check_segment."""
        if a in self.checked:
            seg, o = self.checked[a]
            table = "SWMAX" if write else "SMAX"
            self.emit(f"if {o} > {table}[{seg}] - {size - 1}: CHK({seg}, {o}, {size}, {int(write)})")

    def address(self, op, insn: Instruction, once: bool = False) -> str:
        unwrapped = self.flat and op.seg not in (4, 5) and insn.adsize == 32 and not self.compact
        offset = self.offset(op, insn.adsize, wrap=not unwrapped)
        if unwrapped and _in_frame(op):
            # In a stack frame (_frame_slot): used once, only the slow path
            # computes the address.
            a = offset if once else self.linear(op.seg, offset)
            self.frames[a] = (signed32(op.disp) >> 2, self._esp[0])
            return a
        return self.linear(op.seg, offset, once)

    def load(self, a: str, size: int, into: str | None = None) -> str:
        """Emit a read of `size` bytes at `a`; the local holding it (`into`
        if given: the value lands there only once the read has succeeded)."""
        self.check_segment(a, size, False)
        v = into or self.new("v")
        if self.compact:
            self.emit(f"{v} = RD{size}({a})")
            return v
        slot = self._frame_slot(a, False) if size == 4 else None
        if slot is not None:
            self.emit(f"try: {v} = {slot}")
            self.emit(f"except IndexError: {v} = RA({a}, 4)")
            return v
        a = self._named(a)
        # The TLB probe is a subscript: a miss raises KeyError, which costs
        # nothing until raised, and takes the slow path (which fills the
        # TLB or faults).  Aligned dwords (nearly all of them) are one index
        # into the dword view, probed with the address's two low bits kept
        # (an unaligned one misses: cpu.tlb_r); the rest go through read_any.
        if size == 1:
            self.emit(f"try: {v} = M[{page_address('TR', a)}]")
            self.emit(f"except KeyError: {v} = RS({a}, 1)")
        elif size == 4:
            self.emit(f"try: {v} = W32[{dword_index('TR', a)}]")
            self.emit(f"except KeyError: {v} = RA({a}, 4)")
        else:
            un = {2: "U16", 8: "U64"}[size]
            self.emit(f"try: {v} = {un}(M, {page_address('TR', a)})[0] if "
                      f"{a} & 0xFFF <= {4096 - size} else RS({a}, {size})")
            self.emit(f"except KeyError: {v} = RS({a}, {size})")
        return v

    def store(self, a: str, size: int, expr: str) -> None:
        self.check_segment(a, size, True)
        if self.compact:
            self.emit(f"WR{size}({a}, {expr})")
            return
        if size == 4:
            slot = self._frame_slot(a, True)
            if slot is not None:
                self.emit(f"try: {slot} = {expr}")
                self.emit(f"except IndexError: WA({a}, 4, {expr})")
                return
        a = self._named(a)
        if size == 1:
            self.emit(f"try: M[{page_address('TW', a)}] = {expr}")
            self.emit(f"except KeyError: WS({a}, 1, {expr})")
        elif size == 4:
            self.emit(f"try: W32[{dword_index('TW', a)}] = {expr}")
            self.emit(f"except KeyError: WA({a}, 4, {expr})")
        else:
            slow = f"WS({a}, {size}, {expr})"
            pk = {2: "P16", 8: "P64"}[size]
            self.emit(f"if {a} & 0xFFF > {4096 - size}: {slow}")
            self.emit("else:")
            self.emit(f"try: {pk}(M, {page_address('TW', a)}, {expr})", 1)
            self.emit(f"except KeyError: {slow}", 1)

    def _frame_slot(self, a: str, write: bool) -> str | None:
        """The dword at `a` = ESP + 4k as `sp_r[sp_q + k]` (or sp_w: the
        instruction's frame page, plan_frames), or None.  A stack frame is
        addressed from ESP over and over between two changes of ESP: the TLB
        probe is made once, where the first such access's instruction starts
        (which puts ESP's page's dwords in sp_r, from the read TLB, or sp_w,
        from the write TLB, and ESP's dword index in it in sp_q), and each
        access is one index.  A frame running off the page, a page not
        in the TLB and an unaligned ESP raise IndexError into the slow path,
        which reads, writes or faults as the inline probe's miss would."""
        slot = self.frames.get(a)
        page = self.frame
        if slot is None or slot[1] != self._esp[0] or page is None or (write and page == "sp_r"):
            return None
        k, esp = slot
        if self.frame_pages.get(page) != esp:
            if esp != self.insn_esp or page not in self.guard_lines:
                return None         # ESP moved earlier in this instruction
            if self.frame_pages.get("sp_q") != esp:
                self.lines[self.guard_lines["sp_q"]] = "sp_q = (r4 & 0xFFF) >> 2"
                self.frame_pages["sp_q"] = esp
            at = self.guard_lines[page]
            tlb = "TW" if page == "sp_w" else "TR"
            self.lines[at] = f"try: {page} = PV[{tlb_page(tlb, 'r4', 3)}]"
            self.lines[at + 1] = f"except KeyError: {page} = NOPAGE"
            self.frame_pages[page] = esp
            self.regs_read.add(4)
        return f"{page}[sp_q + {k}]" if k else f"{page}[sp_q]"

    def _named(self, a: str) -> str:
        """An address expression in a local of its own (it is used several
        times, and `a & 0xFFFFF003` must not bind into it)."""
        if a.isidentifier() or a.isdigit():
            return a
        name = self.new("a")
        self.emit(f"{name} = {a}")
        return name

    # -- operands as values -----------------------------------------------------------------
    def read(self, op, insn: Instruction) -> str:
        if op.kind == REG:
            return self.reg(op.size, op.reg)
        if op.kind == IMM:
            return str(op.imm)
        if op.kind == MEM:
            return self.load(self.address(op, insn, once=True), op.size)
        if op.kind == SREG:
            return f"SS_[{op.reg}]"
        raise Unsupported(f"operand kind {op.kind}")

    def operand(self, op, insn: Instruction) -> "Place":
        """A destination that is read and then written (read-modify-write)."""
        if op.kind == REG:
            return Place(self, op.size, reg=op.reg)
        if op.kind == MEM:
            return Place(self, op.size, addr=self.address(op, insn))
        raise Unsupported(f"destination kind {op.kind}")

    # -- flags ----------------------------------------------------------------------------
    def set_flags(self, kind: int, size: int, res: str, a: str = "0", b: str = "0") -> None:
        self.known = (kind, size)
        if not self.flags_live:
            return
        self.uses_flags = True
        if kind == F.K_CMP:
            self.emit(f"fo = {kind | size << 4}; fa = {a}; fb = {b}")     # no res (flags.K_CMP)
        elif kind == F.K_LOGIC:
            self.emit(f"fo = {kind | size << 4}; fr = {res}")             # res alone (K_LOGIC)
        else:
            self.emit(f"fo = {kind | size << 4}; fr = {res}; fa = {a}; fb = {b}")

    def set_flags_dynamic(self, op_expr: str, res: str, a: str, b: str) -> None:
        self.known = None
        if not self.flags_live:
            return
        self.uses_flags = True
        self.emit(f"fo = {op_expr}; fr = {res}; fa = {a}; fb = {b}")

    def set_raw_flags(self, expr: str) -> None:
        """All six arithmetic flags given as bits."""
        self.known = (F.K_RAW, 4)
        self.uses_flags = True
        # fa first: expr may read the old fo/fr/fa/fb.
        self.emit(f"fa = {expr}; fo = {F.K_RAW}; fr = 0; fb = 0")

    def carry(self) -> str:
        self.uses_flags = True
        if self.known is not None and self.known[0] in F.CARRY_SOURCES:
            return F.CARRY_SOURCES[self.known[0]]
        # A producer not known here (a node's start): inline for the two
        # kinds that come before INC, DEC, ADC and SBB most often (a CMP or
        # SUB, a logic op), a call for the rest.
        return (f"({F.CARRY_SOURCES[F.K_SUB]} if fo & 15 == {F.K_CMP} or fo & 15 == {F.K_SUB} else "
                f"{F.CARRY_SOURCES[F.K_LOGIC]} if fo & 15 == {F.K_LOGIC} else CARRY(fo, fr, fa, fb))")

    def all_flags(self) -> str:
        self.uses_flags = True
        if self.known is not None and self.known[0] == F.K_RAW:
            return "fa"
        return "FLAGS(fo, fr, fa, fb)"

    def condition(self, cc: int) -> str:
        self.uses_flags = True
        if self.known is not None:
            src = F.condition_source(cc, *self.known)
            if src is not None:
                return src
        return f"COND({cc}, fo, fr, fa, fb)"


class Place:
    """A register or a memory location whose address is already computed."""

    def __init__(self, em: Emitter, size: int, reg: int = -1, addr: str | None = None):
        self.em, self.size, self.reg_no, self.addr = em, size, reg, addr
        self.is_mem = addr is not None

    def get(self) -> str:
        if self.is_mem:
            return self.em.load(self.addr, self.size)
        v = self.em.new("d")
        self.em.emit(f"{v} = {self.em.reg(self.size, self.reg_no)}")
        return v

    def put(self, expr: str) -> None:
        if self.is_mem:
            self.em.store(self.addr, self.size, expr)
        else:
            self.em.set_reg(self.size, self.reg_no, expr)
