"""The block cache: decode once, run new code threaded, compile what is hot.

A block is the run of instructions from an EIP up to a control transfer, an
instruction that changes how later code is fetched or run, or the end of
the page.  Code runs in tiers, as JIT compilers do.  A block met for the
first time runs as threaded code (interpreter.py: a handler per
instruction, nothing compiled) where that tier takes its instructions, and
otherwise as a first-tier block: one Python function (generated source,
compiled once) with the registers in locals, written to be cheap to compile,
since Python's compile() is most of the cost of code that runs a few times.
A threaded block that has retired interpreter.HOT_INSNS instructions, or a
first-tier block that has run HOT_RUNS times, is compiled again as a region:
it and the code it branches to on its page that has run more than a few
times (both ways of conditional branches, direct jumps, calls and their
return sites; NODE_SHARE) in one
function that moves between them without returning to the run loop, memory
accesses inline.

Blocks are found by linear address within a set chosen by the mode bits that
change what the bytes mean (code size, CPL, flat segments, stack size, CS
base), and each remembers the physical address it was compiled from (and,
for a block that runs onto a second page, that page's physical page too): a
lookup whose pages now map elsewhere recompiles, so a remapped page never
runs stale code.  Physical pages holding compiled code are kept out of the
write TLB; the first write to one lands in the slow path, which drops that
page's blocks (self-modifying code).  Code written takes effect from the next
jump, as on the processor: a running block leaves at its next edge.

With the cache off, every instruction is fetched and decoded on every
execution and run as a block of one (its compiled code is memoized by
address and bytes, so the comparison measures decoding and dispatch, not
Python's compiler).
"""
from __future__ import annotations

import functools
import hashlib
import re
import struct

import attrs

from . import flags as F
from . import interpreter
from .codegen import (CONDS, FLAG_READERS, FULL_FLAG_WRITERS, PARTIAL_FLAG_WRITERS, Emitter,
                      Unsupported, plan_frames, tlb_key)
from .decoder import decode
from .exceptions import DE, CPUException, fault
from .instruction import IMM, MEM, REG, REL, F_BRANCH, F_STOP, Instruction, NeedMore, Undefined
from .semantics import SEMANTICS, SYSTEM

MAX_BLOCK = 48          # instructions in a first-tier block
MAX_REGION = 96         # instructions in a second-tier region
MAX_NODES = 16          # straight runs of instructions in a region
HOT_RUNS = 64           # runs (or loop iterations) of a first-tier block before its region is compiled
# A lower-tier block that has retired fewer than HOT_INSNS / NODE_SHARE
# instructions is left out of the regions around it (it runs as itself).
NODE_SHARE = 32
LOOP_BUDGET = 256       # a call of a loop or region runs at most this times its length in instructions
_ST = {n: struct.Struct(f) for n, f in ((2, "<H"), (4, "<I"), (8, "<Q"))}
# Register-only forms of these cannot fault, so flag work before them may be skipped.
NONFAULTING = frozenset({
    "add", "sub", "and", "or", "xor", "cmp", "test", "adc", "sbb", "inc", "dec", "neg",
    "not", "mov", "movzx", "movsx", "lea", "xchg", "nop", "pause", "bswap", "cbw", "cwde",
    "cwd", "cdq", "shl", "sal", "shr", "sar", "rol", "ror", "rcl", "rcr", "shld", "shrd",
    "bt", "bts", "btr", "btc", "bsf", "bsr", "mul", "imul", "lahf", "sahf", "clc", "stc",
    "cmc", "salc", "daa", "das", "aaa", "aas", "aad", "cmpxchg", "xadd", "jmp", "loop",
    "loope", "loopne", "jcxz", "jecxz", "cld", "std",
} | {n for n in SEMANTICS if n[:1] == "j" or n[:3] in ("set",) or n[:4] == "cmov"})
# Instructions that call into the CPU's own methods, which may read or change
# any register: the block writes its locals back before and reloads after.
SYNC = frozenset(SYSTEM) | {"iret", "iretw", "retf"}
_FAR = frozenset({"jmp", "call"})
# Shifts that, by a constant other than 0, set every arithmetic flag.
_ALL_FLAG_SHIFTS = frozenset({"shl", "sal", "shr", "sar"})
# Conditional branches: both ways stay in a region.
_CONDITIONAL = frozenset({f"j{c}" for c in CONDS} | {"loop", "loope", "loopne", "jcxz", "jecxz"})


# What a block's code may name.  The block's source is a bare `def block(...)`
# run in a namespace holding these (and the block's own tables): in hot code
# the names it uses often become its parameters' defaults, which Python reads
# as fast locals, while compile() never sees the long list.
_RUNTIME_NAMES = (
    "cpu R M W32 TRG TWG TR TW U16 U64 P16 P64 RS WS RA WA SB SS_ CARRY FLAGS COND PARITY "
    "CPUException CLD STD CLI STI HLT LOADSEG POPF CPUID RDTSC PORT_IN PORT_OUT SYSTEM "
    "RDMSR WRMSR READ_CR WRITE_CR READ_DR WRITE_DR FARJMP FARCALL FARRET IRET DIVERR "
    "SOFTINT SOFTINT_SYNCED TRAP FAULT SMAX SWMAX CHK RD1 RD2 RD4 RD8 WR1 WR2 WR4 WR8 PV NOPAGE"
).split()
# Bound as parameter defaults when the block's source names them.
_FAST_NAMES = frozenset("cpu R M W32 TRG TWG TR TW U16 U64 P16 P64 RS WS RA WA SB CARRY COND "
                        "PARITY CHK SMAX SWMAX RUNS SMC BUDGET PCS RD1 RD2 RD4 RD8 WR1 WR2 WR4 "
                        "WR8 PV NOPAGE".split())
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Hot code that writes memory (and so perhaps code) names one of these.
_STORES = re.compile(r"TWG\(|TW\[|WS\(|WA\(|WR\d\(|PORT_")


@attrs.define
class Recipe:
    """What decoding and compiling a block produced, before it is bound to a
    CPU: shared by every CPU in the process that meets the same bytes at
    the same address in the same mode (_RECIPES), so a program run again,
    or code dropped and met again, costs no second compile.  Never changed
    once made (not attrs-frozen only because a frozen class's __init__ is
    three times slower, and every block built makes one)."""
    source: str
    code: object                # the compiled `def block`
    lines: list                 # source line -> index of its instruction
    pos: list                   # source line -> its instruction's place in its node
    insns: list                 # (eip, Instruction)
    hi: int                     # one past the last byte, from the first page's start
    stop: bool                  # Block.stop
    promotable: bool            # first tier, counting its runs
    nodes: tuple = ()           # a region's node start EIPs, in the order of their numbers
    entries: tuple = ()         # the numbers of those the region dispatches to by pc
    threaded: tuple | None = None   # the zeroth tier's plan (interpreter.plan_block), not compiled


# (mode, CS limit, EIP, tier, limit, digest of the page's bytes, native entries
# on the page) -> Recipe
_RECIPES: dict[tuple, "Recipe"] = {}
_RECIPE_LIMIT = 4096
# (digest of a page's bytes, code size) -> {offset: decoded instruction}: a
# region, or a block built again, does not decode its instructions again.
_DECODED: dict[tuple, dict] = {}


def clear_recipes() -> None:
    """Forget every compiled block and decoded page, and the threaded
    tier's handler factories (benchmarks measuring a cold start)."""
    _RECIPES.clear()
    _DECODED.clear()
    interpreter.clear_factories()


def _software_interrupt_synced(vector: int) -> CPUException:
    """INT n from a block that has already given the CPU its state."""
    exc = CPUException(vector, trap=True, software=True)
    exc.unwound = True
    return exc


def _runtime(cpu) -> dict:
    """The values of _RUNTIME_NAMES for this CPU with its current TLBs."""
    h = cpu.helpers
    tlb_r, tlb_w = cpu.tlb_r, cpu.tlb_w
    M = cpu.mem.view
    unpack = {2: _ST[2].unpack_from, 4: _ST[4].unpack_from, 8: _ST[8].unpack_from}
    pack = {2: _ST[2].pack_into, 4: _ST[4].pack_into, 8: _ST[8].pack_into}
    tr_get, tw_get, read_slow, write_slow = tlb_r.get, tlb_w.get, cpu.read_slow, cpu.write_slow

    def read_any(lin: int, size: int) -> int:
        """A read off the aligned fast path: unaligned, or a TLB miss."""
        page = tr_get(lin & 0xFFFFF000)
        off = lin & 0xFFF
        if page is not None and off + size <= 4096:
            return unpack[size](M, page | off)[0]
        return read_slow(lin, size)

    def write_any(lin: int, size: int, value: int) -> None:
        page = tw_get(lin & 0xFFFFF000)
        off = lin & 0xFFF
        if page is not None and off + size <= 4096:
            pack[size](M, page | off, value)
        else:
            write_slow(lin, size, value)

    W32 = cpu.mem.view32
    U16 = unpack[2]

    # First-tier code's memory accesses (Emitter.compact): the inline
    # sequences of codegen.load/store as functions.
    def rd1(lin: int) -> int:
        page = tr_get(lin & 0xFFFFF000)
        return M[page | lin & 0xFFF] if page is not None else read_slow(lin, 1)

    def rd2(lin: int) -> int:
        page = tr_get(lin & 0xFFFFF000)
        if page is not None and lin & 0xFFF <= 4094:
            return U16(M, page | lin & 0xFFF)[0]
        return read_slow(lin, 2)

    def rd4(lin: int) -> int:
        page = tr_get(lin & 0xFFFFF000)
        if page is not None and not lin & 3:
            return W32[(page | lin & 0xFFF) >> 2]
        return read_any(lin, 4)

    def rd8(lin: int) -> int:
        return read_any(lin, 8)

    def wr1(lin: int, value: int) -> None:
        page = tw_get(lin & 0xFFFFF000)
        if page is not None:
            M[page | lin & 0xFFF] = value
        else:
            write_slow(lin, 1, value)

    def wr2(lin: int, value: int) -> None:
        write_any(lin, 2, value)

    def wr4(lin: int, value: int) -> None:
        page = tw_get(lin & 0xFFFFF000)
        if page is not None and not lin & 3:
            W32[(page | lin & 0xFFF) >> 2] = value
        else:
            write_any(lin, 4, value)

    def wr8(lin: int, value: int) -> None:
        write_any(lin, 8, value)

    return dict(zip(_RUNTIME_NAMES, (
        cpu, cpu.regs, M, W32, tr_get, tw_get, tlb_r, tlb_w,
        unpack[2], unpack[8], pack[2], pack[8], read_slow, write_slow, read_any, write_any,
        cpu.seg_base, cpu.seg_sel, F.carry, F.eval_flags, F.condition, F.PARITY, CPUException,
        h.cld, h.std, h.cli, h.sti, h.hlt, h.load_segment, h.popf, cpu.cpuid,
        h.rdtsc, h.port_in, h.port_out, h.system, h.rdmsr, h.wrmsr, h.read_cr, h.write_cr,
        h.read_dr, h.write_dr, h.far_jump, h.far_call, h.far_ret, h.iret, h.divide_error,
        h.software_interrupt, _software_interrupt_synced, h.trap, h.fault,
        cpu.seg_max_read, cpu.seg_max_write, cpu.check_segment,
        rd1, rd2, rd4, rd8, wr1, wr2, wr4, wr8, cpu.mem.dword_pages, _NOPAGE)))


# The stack page of a frame that cannot be indexed directly (not in the TLB,
# ESP unaligned): every index raises IndexError, to the slow path.
_NOPAGE = memoryview(bytearray()).cast("I")


class Block:
    __slots__ = ("fn", "phys", "count", "source", "insns", "tail", "stop", "nodes")

    def __init__(self, fn, phys, count, source, insns):
        self.fn, self.phys, self.count, self.source, self.insns = fn, phys, count, source, insns
        # A region's nodes that can be entered, (number, EIP), the first its
        # entry; () for other hot code and a node's own entry (_enter_nodes);
        # None for the lower tiers.
        self.nodes = None
        # (linear, physical) page numbers of the block's last byte when it runs
        # onto a second page, whose mapping is checked on every lookup too.
        self.tail = None
        # After this block the mode, TLB or interrupt state may differ: the
        # run loop's fast path hands control back to the careful one.
        self.stop = True


class BlockCache:
    def __init__(self, cpu):
        self.cpu = cpu
        self.enabled = True
        self.modes: dict[tuple, dict[int, Block]] = {}
        self.current: dict[int, Block] = {}
        # Linear EIP -> block function, for blocks already checked against
        # the current mapping and mode (see cpu.run's fast path).  Emptied
        # whenever a mapping, the mode or a code page changes.
        self.fast: dict[int, object] = {}
        self.fasts: dict[tuple, dict] = {}        # one fast table per mode, kept across switches
        self.page_blocks: dict[int, list[tuple[dict, int]]] = {}
        self.page_code: dict[int, tuple[bytes, bytes]] = {}    # _page_code: ppn -> (bytes, digest)
        self.single: dict[tuple, Block] = {}     # cache-off memo of one-instruction code
        # Set when a page holding compiled code is written: a running block
        # checks it at its loop edges and between a region's nodes, so code
        # stored before a jump is the code run after it, as on the processor.
        self.code_written = [0]
        self.compiled = 0           # blocks compiled by this CPU
        self.reused = 0             # blocks built from a recipe already compiled
        self.regions = 0        # of those compiled, second-tier ones (regions)
        self.runtimes: dict[int, dict] = {}      # _runtime() by the TLB pair it binds
        self.envs: dict[int, tuple] = {}         # interpreter.environment() of each runtime
        # (id of mode table, linear EIP) of first-tier blocks that proved hot
        self.hot: set[tuple[int, int]] = set()
        # Compile every block as the second tier from its first run (tests
        # that hold the hot code to an oracle without running it 64 times).
        self.hot_from_start = False
        # Code met for the first time runs as threaded code (interpreter.py)
        # where that tier takes it; False compiles it as the first tier.
        self.threaded = True
        self.threaded_blocks = 0    # blocks built as threaded code by this CPU
        self._decoded: dict[int, object] = {}   # the page being built: offset -> instruction

    # -- keys and invalidation ----------------------------------------------------------
    def mode_key(self) -> tuple:
        cpu = self.cpu
        return (cpu.bits, cpu.cpl, cpu.flat, cpu.seg_attr[2] & 0x4000 != 0 or cpu.flat,
                cpu.seg_base[1])

    def select_mode(self) -> None:
        key = self.mode_key()
        self.current = self.modes.setdefault(key, {})
        # A system call switches modes twice; each mode's validated blocks
        # stay valid across the switch (mappings and code changes empty them all).
        self.fast = self.fasts.setdefault(key, {})

    def clear_fast(self) -> None:
        for table in self.fasts.values():
            table.clear()
        self.fast.clear()

    def holds_code(self, ppn: int) -> bool:
        return ppn in self.page_blocks

    def invalidate_page(self, ppn: int) -> None:
        # A block running now leaves at its next edge (see generate).
        self.code_written[0] = 1
        self.clear_fast()
        self.cpu.mem.watched.discard(ppn)
        self.page_code.pop(ppn, None)
        for table, key in self.page_blocks.pop(ppn, ()):
            table.pop(key, None)
        self.single = {k: v for k, v in self.single.items() if v.phys >> 12 != ppn}

    def paging_changed(self) -> None:
        """Blocks are validated against their physical page on lookup; only
        the already-validated fast tables must go."""
        self.clear_fast()

    def flush(self) -> None:
        for ppn in list(self.page_blocks):
            self.invalidate_page(ppn)
        self.single.clear()

    def _protect(self, ppn: int, table: dict, key: int) -> None:
        entries = self.page_blocks.get(ppn)
        if entries is None:
            self.page_blocks[ppn] = entries = []
            self.cpu.mem.watched.add(ppn)
            cpu = self.cpu
            for tw in (cpu._tlbs[False][1], cpu._tlbs[True][1]):
                for base in [b for b, p in tw.items() if p >> 12 == ppn]:
                    del tw[base]
        entries.append((table, key))

    # -- running ----------------------------------------------------------------------------
    def run_one(self) -> None:
        cpu = self.cpu
        lin = (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF
        page = cpu.tlb_r.get(lin & 0xFFFFF000)
        if page is None:
            # Fill the TLB as any read does, so the next dispatch of code on
            # this page (and the fast chain) finds it.
            page = cpu._fill(lin, False)
        phys = page | lin & 0xFFF
        if self.enabled and cpu.trace is None:
            block = self.current.get(lin)
            if block is None or block.phys != phys or (block.tail is not None and not self._tail_holds(block)):
                block = self.build(lin, phys, MAX_BLOCK,
                                   hot=self.hot_from_start or (id(self.current), lin) in self.hot)
                self.current[lin] = block
                self._protect(phys >> 12, self.current, lin)
                if block.tail is not None:
                    self._protect(block.tail[1], self.current, lin)
                if block.nodes:
                    self._enter_nodes(block, lin)
            try:
                cpu.eip = block.fn()
            except CPUException as exc:
                self.unwind(exc)
                raise
            return
        self._run_single(lin, phys)

    def _enter_nodes(self, region: Block, lin: int) -> None:
        """A region can be entered at any of its nodes, since each starts
        with nothing known: a jump into its middle from outside (a return
        to a call site, a branch from another region) runs the region's
        code there instead of a block of its own that would grow hot and
        compile the same instructions again as a second region.  An EIP
        that hot code already holds (a region's own entry, a node of another
        region, a hot block) keeps it."""
        page, base = region.phys & ~0xFFF, lin - region.nodes[0][1]
        current = self.current
        for k, eip in region.nodes[1:]:
            at = (base + eip) & 0xFFFFFFFF
            old = current.get(at)
            if old is not None and old.nodes is not None:
                continue
            entry = Block(functools.partial(region.fn, k), page | at & 0xFFF, 0, "", [])
            entry.tail, entry.stop, entry.nodes = region.tail, region.stop, ()
            current[at] = entry
            self._protect(page >> 12, current, at)
            if entry.tail is not None:
                self._protect(entry.tail[1], current, at)
            for fast in self.fasts.values():
                fast.pop(at, None)

    def run_single(self) -> None:
        """Exactly one instruction (the interrupt shadow after STI/MOV SS)."""
        cpu = self.cpu
        lin = (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF
        self._run_single(lin, cpu.translate(lin, False))

    def _run_single(self, lin: int, phys: int) -> None:
        # Cache off: fetch and decode this one instruction every time.
        cpu = self.cpu
        code = cpu.fetch(lin, 15)
        insn = decode(code, 0, cpu.bits)
        key = (lin, phys, code[:insn.length] if insn.ok else code, self.mode_key())
        block = self.single.get(key)
        if block is None:
            block = self.build(lin, phys, 1, code)
            self.single[key] = block
            self.page_blocks.setdefault(phys >> 12, [])
        if cpu.trace is not None and insn.ok:
            cpu.trace(cpu, insn)
        try:
            cpu.eip = block.fn()
        except CPUException as exc:
            self.unwind(exc)
            raise

    def _tail_holds(self, block: Block) -> bool:
        """Whether the second page of a page-crossing block still maps where it did."""
        base, ppn = block.tail
        page = self.cpu.tlb_r.get(base)
        if page is None:
            cr2 = self.cpu.cr2
            try:
                page = self.cpu.translate(base, False)
            except CPUException:
                self.cpu.cr2 = cr2  # only a probe: no fault is taken here
                return False        # rebuilt: the fetch fault belongs to its instruction
        return page >> 12 == ppn

    # -- building ------------------------------------------------------------------------------
    def build(self, lin: int, phys: int, limit: int, code: bytes | None = None,
              hot: bool = False) -> Block:
        """Decode and compile the block at `lin` (physical `phys`).

        A first-tier block ends at its first branch and counts its runs;
        `hot` compiles the second tier, a region (_translate_region).  Only
        one page's bytes (plus the tail of an instruction that runs off its
        end) go into either, so the page checks that guard a plain block
        guard a region too."""
        cpu = self.cpu
        start = lin & 0xFFF
        whole_page = code is None
        if whole_page:
            # The whole page: a region may take in code before `lin`.
            code, digest = self._page_code(lin, phys)
        else:
            code = bytes(start) + code
            digest = hashlib.blake2b(code, digest_size=16).digest()
        native = cpu.native
        if native is not None and cpu.cpl != 3 and code[start:start + 2] == b"\x0f\x0b":
            handler = native.entries.get(lin)
            if handler is not None:
                return self._native_block(handler, phys)
        entries = native.entries if native is not None and cpu.cpl != 3 else ()
        key = (self.mode_key(), cpu.seg_limit[1], lin, hot, limit, self.threaded, digest,
               tuple(sorted(e for e in entries if e >> 12 == lin >> 12)) if entries else ())
        recipe = None
        if not hot and limit > 1:
            # Code that proved hot before (a program run again, code dropped
            # and met again) starts as the region compiled then.
            recipe = _RECIPES.get((*key[:3], True, *key[4:]))
        if recipe is None:
            recipe = _RECIPES.get(key)
        if recipe is None:
            if whole_page:
                if len(_DECODED) >= _RECIPE_LIMIT:
                    _DECODED.clear()
                self._decoded = _DECODED.setdefault((digest, cpu.bits), {})
            else:
                self._decoded = {}      # the cache off: every instruction decoded every time
            recipe = self._translate(lin, phys, limit, code, hot, entries)
            if isinstance(recipe, Block):
                return recipe           # a fault or a missing FPU, decided at decode time
            if len(_RECIPES) >= _RECIPE_LIMIT:
                _RECIPES.clear()
            _RECIPES[key] = recipe
        else:
            self.reused += 1
        return self._instantiate(recipe, lin, phys)

    def _page_code(self, lin: int, phys: int) -> tuple[bytes, bytes]:
        """The bytes of the page at `lin` and the 15 after it (an
        instruction may run off its end), and what identifies them: a digest
        of the page and the tail itself.  A page holding compiled code is
        watched (a write drops its blocks, invalidate_page): its bytes and
        digest are kept until then, and only the tail is fetched again."""
        cpu = self.cpu
        ppn = phys >> 12
        kept = self.page_code.get(ppn)
        if kept is None:
            code = cpu.fetch(lin & 0xFFFFF000, 4096 + 15)
            page, tail = code[:4096], code[4096:]
            digest = hashlib.blake2b(page, digest_size=16).digest()
            if ppn in self.page_blocks and ppn not in cpu.mem.device_pages and len(page) == 4096:
                self.page_code[ppn] = (page, digest)
        else:
            page, digest = kept
            tail = cpu.fetch(((lin | 0xFFF) + 1) & 0xFFFFFFFF, 15, ahead=True)
            code = page + tail
        return code, digest + tail

    def _decode(self, code: bytes, off: int):
        insn = self._decoded.get(off)
        if insn is None:
            insn = self._decoded[off] = decode(code, off, self.cpu.bits)
        return insn

    def _translate(self, lin: int, phys: int, limit: int, code: bytes, hot: bool, entries,
                   region: bool = True):
        """Decode and generate: the block's Recipe, or a Block that raises
        the fault the first instruction's bytes raise."""
        cpu = self.cpu
        if hot and limit > 1 and cpu.bits == 32 and region:
            try:
                return self._translate_region(lin, code, entries)
            except Unsupported:
                # Something in the region the executor cannot compile: the
                # block alone, as the first tier would have it (shortened
                # before the instruction if need be).
                return self._translate(lin, phys, limit, code, hot, entries, region=False)
        base = lin & 0xFFFFF000
        start = lin & 0xFFF
        eip0 = cpu.eip
        insns: list[tuple[int, Instruction]] = []
        off, eip = start, eip0
        hi = start + 1              # one past the last byte decoded, from the page start
        bad = None
        while len(insns) < limit and off < 4096:
            if insns and entries and (base + off) in entries:
                break                   # a native entry point starts its own block
            insn = self._decode(code, off)
            if isinstance(insn, NeedMore):
                if not insns:
                    # The instruction runs onto a page that cannot be fetched.
                    cpu.translate((base + len(code)) & 0xFFFFFFFF, False)
                    bad = fault(13)
                break
            if isinstance(insn, Undefined):
                if not insns:
                    bad = fault(insn.vector)
                break
            if insn.flags & 8:
                # x87 with no FPU fitted: #NM while CR0.EM or CR0.TS is set
                # (the OS emulates or lazily restores), else #UD.  Decided
                # when it runs: CR0 may change after the block is built.
                if not insns:
                    return self._x87_block(phys)
                break
            if insn.mnemonic not in SEMANTICS:
                if not insns:
                    bad = fault(6)
                break
            insns.append((eip, insn))
            hi = max(hi, off + insn.length)
            if insn.flags & (F_BRANCH | F_STOP) or insn.mnemonic in SYNC:
                break
            off += insn.length
            eip = (eip + insn.length) & 0xFFFFFFFF
        if bad is not None:
            return self._faulting_block(bad, phys)
        if self.threaded and not hot and limit > 1 and cpu.bits == 32 and cpu.flat \
                and self.mode_key()[3]:
            threaded = interpreter.plan_block(insns, _flag_liveness)
            if threaded is not None:
                insns = insns[:threaded[1]]
                last_eip, last = insns[-1]
                hi = start + ((last_eip - eip0) & 0xFFFFFFFF) + last.length
                return Recipe("", None, [], [], insns, hi, _stops(last, hi), True,
                              threaded=threaded)
        # A first-tier block is compiled again once it proves hot: with its
        # memory accesses inline, and with the code around it as a region.
        promotable = not hot and limit > 1
        try:
            source, code_obj, lines, pos, _ = self.generate(
                [insns], may_loop=limit > 1, promote=promotable, compact=not hot)
        except Unsupported:
            if len(insns) == 1:
                return self._faulting_block(fault(6), phys)
            return self._translate(lin, phys, len(insns) - 1, code, hot, entries, region)
        return Recipe(source, code_obj, lines, pos, insns, hi, _stops(insns[-1][1], hi),
                      promotable)

    def _translate_region(self, lin: int, code: bytes, entries) -> "Recipe":
        """The second tier: the hot block and the code it branches to on
        its page, as one function.  The region is a set of nodes, each a
        straight run of instructions ending at a branch (or where the next
        node starts); found breadth-first from the entry through direct
        jumps, both ways of conditional branches and the return sites of
        calls, up to MAX_REGION instructions in MAX_NODES nodes.  A branch
        to a node's start stays in the function; any other leaves it."""
        cpu = self.cpu
        base = lin & 0xFFFFF000
        start = lin & 0xFFF
        eip0 = cpu.eip
        cs_limit = cpu.seg_limit[1]

        ran_here, hot, table = self.current, self.hot, id(self.current)

        def ran(eip: int) -> bool:
            # Only code that has run often enough (a block here now, or one
            # dropped on its way to its own region): the paths a program
            # has not taken, or taken a few times, leave the region (and
            # run as their own blocks when they come).
            at = (lin + eip - eip0) & 0xFFFFFFFF
            if self.hot_from_start or (table, at) in hot:
                return True
            block = ran_here.get(at)
            if block is None:
                return False
            retired = getattr(block.fn, "retired", None)
            return retired is None or retired() * NODE_SHARE >= interpreter.HOT_INSNS

        def inside(eip: int) -> bool:
            off = start + (eip - eip0)
            return 0 <= off < 4096 and eip <= cs_limit and (base + off) not in entries

        nodes: list[list[tuple[int, Instruction]]] = []
        starts: set[int] = set()
        work = [eip0]
        total = 0
        hi = start + 1
        while work and len(nodes) < MAX_NODES and total < MAX_REGION:
            first = work.pop(0)
            if first in starts:
                continue
            insns: list[tuple[int, Instruction]] = []
            eip = first
            off = start + (first - eip0)
            while total + len(insns) < MAX_REGION and off < 4096:
                if insns and (eip in starts or (base + off) in entries):
                    break               # runs into another node, or a native entry
                insn = self._decode(code, off)
                if not isinstance(insn, Instruction) or insn.flags & 8 \
                        or insn.mnemonic not in SEMANTICS:
                    break               # left for the first tier to fault on
                insns.append((eip, insn))
                hi = max(hi, off + insn.length)
                nxt = (eip + insn.length) & 0xFFFFFFFF
                name = insn.mnemonic
                if insn.flags & (F_BRANCH | F_STOP) or name in SYNC:
                    if insn.opsize == 32 and insn.operands and insn.operands[0].kind == REL:
                        work.append((nxt + insn.operands[0].imm) & 0xFFFFFFFF)
                    if name in _CONDITIONAL or name == "call":
                        work.append(nxt)        # the fall-through, the return site
                    break
                off += insn.length
                eip = nxt
            if not insns:
                continue                # a node that cannot start: leaving for it exits
            starts.add(first)
            nodes.append(insns)
            total += len(insns)
            work = [w for w in work if w not in starts and inside(w) and ran(w)]
        if not nodes or nodes[0][0][0] != eip0:
            # The entry itself does not decode (a fault, an FPU instruction):
            # the first tier's path makes the block that raises it.
            raise Unsupported("region entry")
        insns = [pair for node in nodes for pair in node]
        self.regions += 1
        if len(nodes) == 1:
            # Nothing to switch between: a plain block (a loop if it
            # branches back to its start), with its memory accesses inline.
            source, code_obj, lines, pos, _ = self.generate(nodes)
            return Recipe(source, code_obj, lines, pos, insns, hi, _stops(insns[-1][1], hi), False)
        source, code_obj, lines, pos, dispatch = self.generate(nodes, region=True)
        return Recipe(source, code_obj, lines, pos, insns, hi,
                      hi > 4096 or any(_stops(node[-1][1], 0) for node in nodes), False,
                      tuple(node[0][0] for node in nodes), entries=dispatch)

    def _instantiate(self, recipe: "Recipe", lin: int, phys: int) -> Block:
        """A runnable Block from a recipe: the compiled code bound to this
        CPU's registers, memory and TLBs."""
        cpu = self.cpu
        runtime = self.runtimes.get(id(cpu.tlb_r))
        if runtime is None:
            runtime = self.runtimes[id(cpu.tlb_r)] = _runtime(cpu)
        insns = recipe.insns
        n = len(insns)
        if recipe.threaded is not None:
            self.threaded_blocks += 1
            env = self.envs.get(id(cpu.tlb_r))
            if env is None:
                env = self.envs[id(cpu.tlb_r)] = interpreter.environment(runtime)
            fn = interpreter.instantiate(recipe.threaded, env, insns[0][0],
                                         LOOP_BUDGET * n, self.code_written,
                                         functools.partial(self._promote, self.current, lin))
            return self._bind(Block(fn, phys, n, "", insns), recipe, lin)
        namespace = dict(runtime, INSN=[i for _, i in insns], LINES=recipe.lines, POS=recipe.pos,
                         PCS={recipe.nodes[number]: number for number in recipe.entries},
                         STARTS=recipe.nodes,
                         EIPS=[e for e, _ in insns],
                         NEXTS=[(e + i.length) & (0xFFFFFFFF if i.opsize == 32 or cpu.bits == 32
                                                  else 0xFFFF) for e, i in insns],
                         BUDGET=LOOP_BUDGET * max(n, 1), RUNS=[HOT_RUNS],
                         SMC=self.code_written,
                         PROMOTE=functools.partial(self._promote, self.current, lin)
                         if recipe.promotable else None)
        exec(recipe.code, namespace)
        block = Block(namespace["block"], phys, n, recipe.source, insns)
        if recipe.promotable:
            runs = namespace["RUNS"]
            block.fn.retired = lambda: (HOT_RUNS - runs[0]) * n
        else:
            # Hot code: a region's entries (number, EIP), or () for one node.
            block.nodes = tuple((number, recipe.nodes[number]) for number in recipe.entries)
        return self._bind(block, recipe, lin)

    def _bind(self, block: Block, recipe: "Recipe", lin: int) -> Block:
        """The page checks a block's recipe asks for."""
        cpu = self.cpu
        if recipe.hi > 4096:
            last = ((lin & 0xFFFFF000) + recipe.hi - 1) & 0xFFFFFFFF
            block.tail = (last & 0xFFFFF000, cpu.translate(last, False) >> 12)
        block.stop = recipe.stop
        return block

    def unwind(self, exc: CPUException) -> None:
        """A block raised `exc`: give the CPU the state its locals held at
        the start of the faulting instruction (after it, for a trap), and
        EIP there.  Blocks carry no handler of their own (cheaper to
        compile); the run loop calls this with the traceback, in which the
        block's frame still holds its locals, and its line number names the
        instruction (LINES)."""
        if exc.in_new_task or getattr(exc, "unwound", False):
            # Raised inside a task switch: the CPU already holds the new
            # task's state, and nothing of the old block's belongs there.
            return
        exc.unwound = True
        found = None
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename.startswith("<block") or code in interpreter.RUNNER_CODES:
                found = tb
            tb = tb.tb_next
        if found is None:
            return                  # raised outside compiled code: nothing to write back
        frame = found.tb_frame
        if frame.f_code in interpreter.RUNNER_CODES:
            interpreter.unwind(self.cpu, frame, exc)
            return
        names, local = frame.f_globals, frame.f_locals
        k = names["LINES"][found.tb_lineno]
        cpu = self.cpu
        if "r0" in local:
            cpu.regs[:] = [local[f"r{n}"] for n in range(8)]
        if "fo" in local:
            cpu.lazy = (local["fo"], local["fr"], local["fa"], local["fb"])
        done = local.get("ic", 0) + names["POS"][found.tb_lineno]
        if exc.trap:
            cpu.eip = names["NEXTS"][k]
            cpu.icount += done + 1
        else:
            cpu.eip = names["EIPS"][k]
            cpu.icount += done

    def _promote(self, table: dict, lin: int) -> None:
        """A first-tier block has run HOT_RUNS times: drop it, so that the
        next dispatch at `lin` compiles its region."""
        self.hot.add((id(table), lin))
        table.pop(lin, None)
        for fast in self.fasts.values():
            fast.pop(lin, None)

    def _native_block(self, handler, phys: int) -> Block:
        """A native entry point (x86core.native): the UD2 there runs the
        Python function instead of faulting.  Called directly from the
        block, it costs a call rather than an exception and an IDT lookup."""
        cpu = self.cpu

        def run_native():
            handler(cpu)                # sets EIP; a fault it raises leaves EIP here
            cpu.icount += 1
            return cpu.eip
        return Block(run_native, phys, 1, "", [])

    def _x87_block(self, phys: int) -> Block:
        cpu = self.cpu

        def no_fpu():
            raise fault(7 if cpu.cr0 & 0xC else 6)      # CR0.EM | CR0.TS
        return Block(no_fpu, phys, 0, "", [])

    def _faulting_block(self, exc: CPUException, phys: int) -> Block:
        def raise_it():
            raise CPUException(exc.vector, exc.error_code)
        return Block(raise_it, phys, 0, "", [])

    def generate(self, nodes, may_loop: bool = True, promote: bool = False,
                 compact: bool = False, region: bool = False):
        """Python source, its code object and its line tables (instruction
        index, and position within its node, by source line) for `nodes`:
        one straight run of instructions (the first tier), or a region's
        nodes (`region`).  In a first-tier block a branch back to its first
        instruction makes it a loop unless `may_loop` is False
        (single-instruction execution: stepping, tracing, the cache off).
        A `promote` block counts its runs in RUNS and calls PROMOTE after
        HOT_RUNS of them."""
        cpu = self.cpu
        em = Emitter(cpu.flat, cpu.cpl, self.mode_key()[3], compact=compact)
        eips = []
        exits = []                  # per node: its lines, length, exit (None: synced), stops, branch
        loop = False
        positions = []              # position within its node, by emitted line
        start = nodes[0][0][0]
        index = 0
        for node in nodes:
            first_line = len(em.lines)
            em.known = None         # a node may be entered from anywhere
            em.forget_frame()
            live = _flag_liveness([i for _, i in node])
            frames = plan_frames([i for _, i in node])
            exit_expr = None
            branch = None           # (condition, target, fall-through) of a static exit
            run_left, run_from = 0, 0   # a run of pushes or pops (_stack_run) being emitted
            for pos, (eip, insn) in enumerate(node):
                line0 = len(em.lines)
                em.index = index
                em.flags_live = live[pos]
                em.begin_instruction(insn, frames[pos])
                if not run_left and not compact and em.flat and em.stack32:
                    run_left = _stack_run(em, node, pos)
                    run_from = len(em.lines)
                    # One by one (the rare case): memory accesses as calls,
                    # less source to compile.
                    em.compact = bool(run_left)
                nxt = (eip + insn.length) & (0xFFFFFFFF if insn.opsize == 32 or cpu.bits == 32
                                             else 0xFFFF)
                eips.append(eip)
                sync = insn.mnemonic in SYNC or _far_transfer(insn)
                if sync:
                    em.synced = True
                    em.forget_frame()
                    em.emit(f"SYNC_OUT {eip}")
                result = SEMANTICS[insn.mnemonic](em, insn)
                if sync and result is None:
                    em.emit("SYNC_IN")
                if result == "EIPNOW()":
                    exit_expr = branch = None   # the CPU's method has set EIP
                    em.emit(f"cpu.icount += {'ic + ' if region else ''}{pos + 1}; "
                            "return cpu.eip")
                elif isinstance(result, tuple):
                    target = (nxt + result[-1]) & (0xFFFFFFFF if insn.opsize == 32 else 0xFFFF)
                    taken = {"REL": "True", "JCC": None, "JIF": None}[result[0]]
                    if taken is None:
                        taken = em.condition(result[1]) if result[0] == "JCC" else result[1]
                    if not region and target == start and may_loop:
                        # A branch back to the block's start: run it as a
                        # loop, registers and flags staying in locals.
                        loop = True
                        self._loop_edge(em, taken, pos, start)
                        exit_expr = str(nxt)
                    else:
                        exit_expr = str(target) if taken == "True" else \
                            f"{target} if {taken} else {nxt}"
                        branch = (taken, target, nxt)
                elif isinstance(result, str):
                    exit_expr, branch = result.replace("NEXT", str(nxt)), None
                else:
                    exit_expr, branch = str(nxt), ("True", nxt, nxt)
                for i in range(line0, len(em.lines)):
                    line = em.lines[i].replace("NEXT", str(nxt))
                    if "raise SOFTINT(" in line:
                        # A software interrupt (every system call) hands the
                        # CPU its state itself, sparing unwind() the frame.
                        state = [f"cpu.eip = {nxt}",
                                 f"cpu.icount += {'ic + ' if region else ''}{pos + 1}"]
                        if em.regs_read or em.regs_written:
                            state.insert(0, "R[:] = (r0, r1, r2, r3, r4, r5, r6, r7)")
                        if em.uses_flags:
                            state.insert(0, "cpu.lazy = (fo, fr, fa, fb)")
                        line = line.replace("raise SOFTINT(",
                                            "; ".join(state) + "; raise SOFTINT_SYNCED(")
                    em.lines[i] = line
                positions += [pos] * (len(em.lines) - line0)
                index += 1
                if run_left:
                    run_left -= 1
                    if not run_left:
                        em.indent_since(run_from)     # the instructions one by one: the else
                        em.compact = False
            exits.append((first_line, len(em.lines), len(node), exit_expr,
                          _stops(node[-1][1], 0), branch))
        return self._assemble(em, nodes, eips, exits, positions, loop, promote, region)

    @staticmethod
    def _loop_edge(em, taken: str, pos: int, start: int) -> None:
        """A branch back to the block's start: run it as a loop, registers
        and flags staying in locals across iterations, until BUDGET
        instructions or a write to code."""
        em.emit(f"if {taken}:")
        em.emit(f"ic += {pos + 1}", 1)
        em.emit("if ic < BUDGET and not SMC[0]: continue", 1)
        em.emit(f"SMC[0] = 0; nx = {start}; break", 1)

    def _assemble(self, em, nodes, eips, exits, positions, loop, promote, region):
        all_regs = ", ".join(f"r{n}" for n in range(8))
        has_sync = em.synced
        flags = em.uses_flags or has_sync
        # All eight registers in and out, each in one statement: cheaper to
        # run and to compile than picking out the ones used.
        used = has_sync or em.regs_read or em.regs_written
        head = [f"{all_regs} = R" if used else "pass"]
        if flags:
            head.append("fo, fr, fa, fb = cpu.lazy")
        if loop or region:
            # Instructions retired before the current iteration or node;
            # BUDGET bounds how long the block runs before the run loop
            # (interrupts, instruction limits) sees control again.
            head.append("ic = 0")
        indent = ""
        if loop or region:
            head.append("while True:")
            indent = "    "
        if promote:
            # Runs (and a loop's iterations) until the block is compiled again.
            head += [f"{indent}RUNS[0] -= 1", f"{indent}if not RUNS[0]: PROMOTE()"]
        body, line_insn, line_pos = [], [], []

        def add(text: str, insn: int, pos: int) -> None:
            body.append(text)
            line_insn.append(insn)
            line_pos.append(pos)

        number_of = {node[0][0]: number for number, node in enumerate(nodes)}
        firsts = [0]                # each node's first instruction index
        for e in exits:
            firsts.append(firsts[-1] + e[2])
        exit_final = None

        def node_lines(number: int, inner: str) -> None:
            first, end = exits[number][:2]
            for i in range(first, end):
                line = em.lines[i]
                if has_sync:
                    stripped = line.strip()
                    ind = line[:len(line) - len(stripped)]
                    if stripped.startswith("SYNC_OUT"):
                        # The CPU's method sees every register, the flags and its own EIP.
                        line = f"{ind}R[:] = ({all_regs}); cpu.eip = {stripped.split()[1]}" + \
                            ("; cpu.lazy = (fo, fr, fa, fb)" if flags else "")
                    elif stripped == "SYNC_IN":
                        line = f"{ind}{all_regs} = R" + \
                            ("; fo, fr, fa, fb = cpu.lazy" if flags else "")
                add(inner + line, em.line_insn[i], positions[i])

        if region:
            inlined = _inlined_nodes(nodes, exits, number_of)

            def region_node(number: int, inner: str, top: int) -> None:
                # `top`: the node whose `if pc ==` holds this code (itself, or
                # the one it follows in line): a move to a node tested before
                # it goes round the loop at once (`continue`), past the tests after it.
                node_lines(number, inner)
                first, end, count, exit_expr, stops, branch = exits[number]
                if exit_expr is None:
                    return              # the CPU's method has set EIP and returned
                last = firsts[number] + count - 1

                def put(text: str, ind: str = inner) -> None:
                    add(ind + text, last, count - 1)
                stores = any(_STORES.search(em.lines[i]) for i in range(first, end))
                ahead = [] if stops or branch is None else \
                    [number_of.get(b) for b in branch[1:2 if branch[0] == "True" else 3]]
                if not inlined.intersection(ahead):
                    # (After a store, the code-write test follows the move: no `continue`.)
                    moves = _transition(exit_expr, count, stops, branch, number_of,
                                        -1 if stores else top)
                    for line in moves:
                        put(line)
                    if stores and any("pc =" in line for line in moves):
                        # This node may have written code: on only if it did not.
                        put("if SMC[0]: SMC[0] = 0; nx = STARTS[pc]; break")
                    return
                # A successor entered from here alone follows in line: no
                # pc to set and test.
                taken, target, fall = branch

                def go(to, eip: int, ind: str) -> None:
                    if to is None:
                        put(f"nx = {eip}; break", ind)
                        return
                    if stores:
                        put(f"if SMC[0]: SMC[0] = 0; nx = {eip}; break", ind)
                    if to in inlined:
                        region_node(to, ind, top)
                    else:
                        put(f"pc = {to}" + _round(to, top), ind)
                put(f"ic += {count}")
                if taken == "True":
                    go(ahead[0], target, inner)
                else:
                    put(f"if {taken}:")
                    go(ahead[0], target, inner + "    ")
                    put("else:")
                    go(ahead[1], fall, inner + "    ")

            # Back to the run loop after BUDGET instructions.  Nodes are
            # tested in their order (BFS from the entry), each after the one
            # before, so a branch to a later node goes straight on and only
            # one to an earlier node (every cycle has one) comes round here.
            add(f"{indent}if ic >= BUDGET: nx = STARTS[pc]; break", 0, 0)
            for number in range(len(exits)):
                if number not in inlined:
                    add(f"{indent}if pc == {number}:", firsts[number], 0)
                    region_node(number, indent + "    ", number)
            dispatch = tuple(n for n in range(len(exits)) if n not in inlined)
        else:
            dispatch = ()
            for number, (first, end, count, exit_expr, stops, branch) in enumerate(exits):
                node_lines(number, indent)
                last = firsts[number] + count - 1
                if exit_expr is not None:
                    if loop:
                        add(f"{indent}nx = {exit_expr}; ic += {count}; break", last, count - 1)
                    else:
                        exit_final = exit_expr
        if not body:
            add("pass", 0, 0)
        tail = []
        if exits[-1][3] is not None or region:
            # An exception leaves the block's frame as it stands: unwind()
            # writes its locals back from the traceback.
            if has_sync or em.regs_written:
                tail.append(f"R[:] = ({all_regs})")
            if flags:
                tail.append("cpu.lazy = (fo, fr, fa, fb)")
            if loop or region:
                tail.append("cpu.icount += ic; return nx")
            else:
                tail.append(f"cpu.icount += {len(eips)}; return {exit_final}")
        text = head + body + tail
        # First-tier code takes the runtime's names as globals, sparing the
        # compiler the parameter list; hot code reads them as fast locals.
        names = () if em.compact else sorted(set(_IDENT.findall("\n".join(text))) & _FAST_NAMES)
        # A region is entered at its first node, or at node `pc` (_enter_nodes).
        params = ["pc=0"] * region + [f"{x}={x}" for x in names]
        source = "\n".join([f"def block({', '.join(params)}):"] +
                           ["    " + line for line in text])
        first_body_line = len(head) + 2
        lines = [0] * (len(head) + len(body) + 3)
        pos = [0] * len(lines)
        for i, (k, p) in enumerate(zip(line_insn, line_pos)):
            lines[first_body_line + i] = k
            pos[first_body_line + i] = p
        self.compiled += 1
        return (source, compile(source, f"<block {eips[0] if eips else 0:#x}>", "exec"), lines, pos,
                dispatch)


def _inlined_nodes(nodes, exits, number_of: dict) -> set[int]:
    """The region nodes entered by one static edge alone (a branch or a fall
    into them from one other node), which follow that edge in line.  The
    entry, the routines called and the return sites of calls (entered from
    other code, and by RET through PCS) and nodes with two ways in stay
    numbered: the loop dispatches to them by pc (and _enter_nodes to them)."""
    ways_in = [0] * len(exits)
    for number, (_, _, _, exit_expr, stops, branch) in enumerate(exits):
        if exit_expr is None or stops or branch is None:
            continue
        taken, target, fall = branch
        for eip in ((target,) if taken == "True" else (target, fall)):
            to = number_of.get(eip)
            if to is not None:
                ways_in[to] += 1
        if nodes[number][-1][1].mnemonic == "call":
            # A routine is called from elsewhere too, and returns by RET.
            for eip in (target, fall):
                if eip in number_of:
                    ways_in[number_of[eip]] += 2
    return {n for n in range(1, len(exits)) if ways_in[n] == 1}


def _round(to: int, top: int) -> str:
    """After `pc = to` in the code under node top's test: `continue` when
    node `to` is tested before it (the loop's top is nearer than the tests after)."""
    return "; continue" if to <= top else ""


def _transition(exit_expr: str, count: int, stops: bool, branch, number_of: dict,
                top: int) -> list[str]:
    """The lines ending a region's node: on to the node its successor
    starts (its number known here for a static branch, looked up in PCS
    for a computed one), or out of the block with `nx`."""
    if stops:
        # After an instruction that may change the mode or interrupts,
        # always back to the run loop.
        return [f"nx = {exit_expr}; ic += {count}; break"]
    if branch is None:
        return [f"nx = {exit_expr}; ic += {count}; pc = PCS.get(nx, -1)", "if pc < 0: break"]
    taken, target, fall = branch
    to, past = number_of.get(target), number_of.get(fall)
    if taken == "True":
        return [f"ic += {count}; pc = {to}{_round(to, top)}" if to is not None else
                f"nx = {target}; ic += {count}; break"]
    if to is not None and past is not None:
        if to > top and past > top:
            return [f"ic += {count}; pc = {to} if {taken} else {past}"]
        return [f"ic += {count}", f"if {taken}: pc = {to}{_round(to, top)}",
                f"else: pc = {past}{_round(past, top)}"]
    if to is not None:
        return [f"ic += {count}", f"if {taken}: pc = {to}{_round(to, top)}",
                f"else: nx = {fall}; break"]
    if past is not None:
        return [f"ic += {count}", f"if not ({taken}): pc = {past}{_round(past, top)}",
                f"else: nx = {target}; break"]
    return [f"nx = {exit_expr}; ic += {count}; break"]


def _stack_run(em, node, pos: int) -> int:
    """Consecutive PUSHes (of registers other than ESP, or immediates) or
    POPs (into registers other than ESP, and the RET after them) from
    node[pos], as function prologues and epilogues have them: when there
    are two or more, emit
    their fast path - one TLB probe, and straight dword accesses when the
    whole run lies in one mapped page - and open the `else:` under which
    the caller emits them one by one (which alone can fault).  Returns the
    run's length, or 0."""
    def pushed(insn) -> str | None:
        if insn.mnemonic != "push" or insn.opsize != 32:
            return None
        (op,) = insn.operands
        if op.kind == REG and op.size == 4 and op.reg != 4:
            return f"r{op.reg}"
        return str(op.imm & 0xFFFFFFFF) if op.kind == IMM else None

    def popped(insn) -> int | None:
        if insn.mnemonic != "pop" or insn.opsize != 32:
            return None
        (op,) = insn.operands
        return op.reg if op.kind == REG and op.size == 4 and op.reg != 4 else None

    for take in (pushed, popped):
        items = []
        for _, insn in node[pos:]:
            item = take(insn)
            if item is None:
                break
            items.append(item)
        # An epilogue's RET after its POPs reads the next dword of the run.
        ret = bool(take is popped and items and pos + len(items) < len(node)
                   and _plain_ret(node[pos + len(items)][1]))
        if len(items) + ret >= 2:
            break
    else:
        return 0
    n = len(items) + ret        # dwords (and instructions) in the run
    em.regs_read.add(4)
    em.regs_written.add(4)
    if take is pushed:
        em.regs_read.update(int(v[1:]) for v in items if v[0] == "r")
        em.emit(f"s_s = (r4 - {4 * n}) & 0xFFFFFFFF")
        em.emit(f"p_s = TWG({tlb_key('s_s', 3)})")        # (misses when unaligned)
        em.emit(f"if p_s is not None and s_s & 0xFFF <= {4096 - 4 * n}:")
        em.emit("k_s = (p_s | s_s & 0xFFF) >> 2", 1)
        em.emit("; ".join(f"W32[k_s + {n - 1 - i}] = {v}" if i < n - 1 else f"W32[k_s] = {v}"
                          for i, v in enumerate(items)), 1)
        em.emit("r4 = s_s", 1)
    else:
        em.regs_written.update(items)
        reads = [f"r{r}" for r in items] + ["rt"] * ret       # rt: ret()'s return address
        em.emit(f"p_s = TRG({tlb_key('r4', 3)})")
        em.emit(f"if p_s is not None and r4 & 0xFFF <= {4096 - 4 * n}:")
        em.emit("k_s = (p_s | r4 & 0xFFF) >> 2", 1)
        em.emit("; ".join(f"{r} = W32[k_s + {i}]" if i else f"{r} = W32[k_s]"
                          for i, r in enumerate(reads)), 1)
        em.emit(f"r4 = (r4 + {4 * n}) & 0xFFFFFFFF", 1)
    em.emit("else:")
    return n


def _plain_ret(insn: Instruction) -> bool:
    return insn.mnemonic == "ret" and insn.opsize == 32 and not insn.operands


def _stops(insn: Instruction, hi: int) -> bool:
    """Whether the run loop's fast path must hand back to the careful one
    after `insn` (the mode, the TLB or the interrupt state may have changed),
    or after a block reaching `hi` bytes into its page (a second page to check)."""
    # INT n, INT3 and INT1 always raise, so nothing runs after them in the
    # block: they need no stop (a region calling a system call wrapper on
    # one of its paths stays in the fast chain).  INTO may fall through.
    return hi > 4096 or bool(insn.flags & F_STOP) or insn.mnemonic in SYNC \
        or insn.mnemonic == "into" or _far_transfer(insn)


def _far_transfer(insn: Instruction) -> bool:
    """A JMP or CALL to another code segment: done by the CPU's own method."""
    return insn.mnemonic in _FAR and any(
        o.kind == 8 or (o.kind == MEM and o.size == insn.opsize // 8 + 2) for o in insn.operands)


def _flag_liveness(insns: list[Instruction]) -> list[bool]:
    """For each instruction, whether the flags it produces can be observed:
    by a later reader, by a fault (which must see exact EFLAGS), or after
    the block."""
    live = True
    out = [True] * len(insns)
    for i in range(len(insns) - 1, -1, -1):
        insn = insns[i]
        name = insn.mnemonic
        out[i] = live
        # (LEA and the long NOP name memory without touching it.)
        faults = name not in NONFAULTING or name in SYNC or \
            (name not in ("lea", "nop") and any(o.kind == MEM for o in insn.operands))
        # A shift by a constant other than 0 sets every flag (AF cleared, as
        # processors leave it); by 0 or CL it may keep them all.
        shifts = name in _ALL_FLAG_SHIFTS and insn.operands[1].kind == IMM and \
            insn.operands[1].imm & 0x1F
        # A conditional branch reads the flags (and at the end of a region's
        # node hands them on).
        reads = name in FLAG_READERS or name in _CONDITIONAL or \
            (name in PARTIAL_FLAG_WRITERS and live and not shifts) or name in SYNC or \
            (insn.rep and name in ("cmps", "scas"))
        writes_all = name in FULL_FLAG_WRITERS and not (insn.rep and name in ("cmps", "scas")) \
            or bool(shifts)
        live = reads or faults or (live and not writes_all)
    return out
