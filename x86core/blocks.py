"""The block cache: decode once, compile to Python, run many times.

A block is the run of instructions from an EIP up to a control transfer, an
instruction that changes how later code is fetched or run, or the end of the
page.  Its instructions become the body of one Python function (generated
source, compiled once) with the registers in locals.

Blocks are found by linear address within a set chosen by the mode bits that
change what the bytes mean (code size, CPL, flat segments, stack size, CS
base), and each remembers the physical address it was compiled from (and,
for a block that runs onto a second page, that page's physical page too): a
lookup whose pages now map elsewhere recompiles, so a remapped page never
runs stale code.  Physical pages holding compiled code are kept out of the
write TLB; the first write to one lands in the slow path, which drops that
page's blocks (self-modifying code).  A write into the block that is running
takes effect from the next block, as the 386's prefetch queue did until the
next jump.

With the cache off, every instruction is fetched and decoded on every
execution and run as a block of one (its compiled code is memoized by
address and bytes, so the comparison measures decoding and dispatch, not
Python's compiler).
"""
from __future__ import annotations

import struct

from . import flags as F
from .codegen import (FLAG_READERS, FULL_FLAG_WRITERS, PARTIAL_FLAG_WRITERS, Emitter,
                      Unsupported)
from .decoder import decode
from .exceptions import DE, CPUException, fault
from .instruction import MEM, F_BRANCH, F_STOP, Instruction, NeedMore, Undefined
from .semantics import SEMANTICS, SYSTEM

MAX_BLOCK = 48
LOOP_BUDGET = 256       # iterations of a self-looping block per call
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


# What a block's code may name, bound once per block as closure cells (so
# every name is a fast local lookup) without repeating them in the source
# that Python must compile for each block.
_RUNTIME_NAMES = (
    "cpu M TR TW U16 U32 U64 P16 P32 P64 RS WS SB SS_ CARRY FLAGS COND PARITY CPUException "
    "EF CLD STD CLI STI HLT LOADSEG POPF CPUID RDTSC PORT_IN PORT_OUT SYSTEM RDMSR WRMSR "
    "READ_CR WRITE_CR READ_DR WRITE_DR FARJMP FARCALL FARRET IRET DIVERR SOFTINT TRAP FAULT "
    "SMAX SWMAX CHK"
).split()
_PARAMS = ", ".join(_RUNTIME_NAMES + ["INSN", "LINES", "EIPS", "NEXTS", "N"])


def _runtime(cpu) -> tuple:
    """The values of _RUNTIME_NAMES for this CPU in its current mode."""
    h = cpu.helpers
    return (cpu, cpu.mem.view, cpu.tlb_r, cpu.tlb_w,
            _ST[2].unpack_from, _ST[4].unpack_from, _ST[8].unpack_from,
            _ST[2].pack_into, _ST[4].pack_into, _ST[8].pack_into,
            cpu.read_slow, cpu.write_slow, cpu.seg_base, cpu.seg_sel, F.carry,
            F.eval_flags, F.condition, F.PARITY, CPUException,
            h.eflags, h.cld, h.std, h.cli, h.sti, h.hlt, h.load_segment, h.popf, cpu.cpuid,
            h.rdtsc, h.port_in, h.port_out, h.system, h.rdmsr, h.wrmsr, h.read_cr, h.write_cr,
            h.read_dr, h.write_dr, h.far_jump, h.far_call, h.far_ret, h.iret, h.divide_error,
            h.software_interrupt, h.trap, h.fault,
            cpu.seg_max_read, cpu.seg_max_write, cpu.check_segment)


class Block:
    __slots__ = ("fn", "phys", "count", "source", "insns", "span", "tail", "stop")

    def __init__(self, fn, phys, count, source, insns):
        self.fn, self.phys, self.count, self.source, self.insns = fn, phys, count, source, insns
        self.span = 1
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
        self.single: dict[tuple, Block] = {}     # cache-off memo of one-instruction code
        self.compiled = 0

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
        self.clear_fast()
        self.cpu.mem.watched.discard(ppn)
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
                for vpn in [v for v, p in tw.items() if p >> 12 == ppn]:
                    del tw[vpn]
        entries.append((table, key))

    # -- running ----------------------------------------------------------------------------
    def run_one(self) -> None:
        cpu = self.cpu
        lin = (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF
        page = cpu.tlb_r.get(lin >> 12)
        if page is None:
            # Fill the TLB as any read does, so the next dispatch of code on
            # this page (and the fast chain) finds it.
            page = cpu._fill(lin, False)
        phys = page | lin & 0xFFF
        if self.enabled and cpu.trace is None:
            block = self.current.get(lin)
            if block is None or block.phys != phys or (block.tail is not None and not self._tail_holds(block)):
                block = self.build(lin, phys, MAX_BLOCK)
                self.current[lin] = block
                self._protect(phys >> 12, self.current, lin)
                if block.tail is not None:
                    self._protect(block.tail[1], self.current, lin)
            cpu.eip = block.fn()
            return
        self._run_single(lin, phys)

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
        cpu.eip = block.fn()

    def _tail_holds(self, block: Block) -> bool:
        """Whether the second page of a page-crossing block still maps where it did."""
        vpn, ppn = block.tail
        page = self.cpu.tlb_r.get(vpn)
        if page is None:
            cr2 = self.cpu.cr2
            try:
                page = self.cpu.translate(vpn << 12, False)
            except CPUException:
                self.cpu.cr2 = cr2  # only a probe: no fault is taken here
                return False        # rebuilt: the fetch fault belongs to its instruction
        return page >> 12 == ppn

    # -- building ------------------------------------------------------------------------------
    def build(self, lin: int, phys: int, limit: int, code: bytes | None = None) -> Block:
        cpu = self.cpu
        if code is None:
            code = cpu.fetch(lin, 4096 - (lin & 0xFFF) + 15)
        page_left = 4096 - (lin & 0xFFF)
        native = cpu.native
        if native is not None and cpu.cpl != 3 and code[:2] == b"\x0f\x0b":
            handler = native.entries.get(lin)
            if handler is not None:
                return self._native_block(handler, phys)
        eip = cpu.eip
        insns: list[tuple[int, Instruction]] = []
        pos = 0
        bad = None
        entries = native.entries if native is not None and cpu.cpl != 3 else ()
        while len(insns) < limit and pos < page_left:
            if insns and entries and ((lin + pos) & 0xFFFFFFFF) in entries:
                break                   # a native entry point starts its own block
            insn = decode(code, pos, cpu.bits)
            if isinstance(insn, NeedMore):
                if not insns:
                    # The instruction runs onto a page that cannot be fetched.
                    cpu.translate((lin + len(code)) & 0xFFFFFFFF, False)
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
            insns.append((eip + pos, insn))
            pos += insn.length
            if insn.flags & (F_BRANCH | F_STOP) or insn.mnemonic in SYNC:
                break
        if bad is not None:
            return self._faulting_block(bad, phys)
        try:
            source, fn = self.generate(insns, may_loop=limit > 1)
        except Unsupported:
            if len(insns) == 1:
                return self._faulting_block(fault(6), phys)
            return self.build(lin, phys, len(insns) - 1, code)
        self.compiled += 1
        block = Block(fn, phys, len(insns), source, insns)
        block.span = pos if pos else 1
        last = (lin + block.span - 1) & 0xFFFFFFFF
        if last >> 12 != lin >> 12:
            block.tail = (last >> 12, cpu.translate(last, False) >> 12)
        end = insns[-1][1]
        block.stop = block.tail is not None or bool(end.flags & F_STOP) or end.mnemonic in SYNC \
            or end.mnemonic in ("int", "int3", "into", "int1") or (end.mnemonic in _FAR and any(
                o.kind == 8 or (o.kind == MEM and o.size == end.opsize // 8 + 2) for o in end.operands))
        return block

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

    def generate(self, insns, may_loop: bool = True):
        """Python source and function for `insns`.  A block that branches
        back to its own start becomes a loop unless `may_loop` is False
        (single-instruction execution: stepping, tracing, the cache off)."""
        cpu = self.cpu
        em = Emitter(cpu.flat, cpu.cpl, self.mode_key()[3])
        live = _flag_liveness([i for _, i in insns])
        eips, nexts = [], []
        exit_expr = None
        synced_exit = False
        loop = None
        for index, (eip, insn) in enumerate(insns):
            em.index = index
            em.flags_live = live[index]
            em.tmp = 0
            nxt = (eip + insn.length) & (0xFFFFFFFF if insn.opsize == 32 or cpu.bits == 32 else 0xFFFF)
            eips.append(eip)
            nexts.append(nxt)
            sync = insn.mnemonic in SYNC or (insn.mnemonic in _FAR and any(
                o.kind == 8 or (o.kind == MEM and o.size == insn.opsize // 8 + 2) for o in insn.operands))
            if sync:
                em.emit(f"SYNC_OUT {eip}")
            result = SEMANTICS[insn.mnemonic](em, insn)
            if sync:
                if result is None:
                    em.emit("SYNC_IN")
                synced_exit = result == "EIPNOW()"
            mask = 0xFFFFFFFF if insn.opsize == 32 else 0xFFFF
            if isinstance(result, tuple):
                target = (nxt + result[-1]) & mask
                if result[0] == "REL":
                    exit_expr = str(target)
                    taken = "True"
                elif result[0] == "JCC":
                    taken = em.condition(result[1])
                    exit_expr = f"{target} if {taken} else {nxt}"
                else:   # JIF
                    taken = result[1]
                    exit_expr = f"{target} if {taken} else {nxt}"
                if target == eips[0] and not synced_exit and may_loop:
                    # The block branches back to itself: run it as a loop.
                    loop = (taken, nxt, target)
            elif result is not None:
                exit_expr = result.replace("NEXT", str(nxt))
            em.lines = [l.replace("NEXT", str(nxt)) for l in em.lines]
        if exit_expr is None:
            exit_expr = str(nexts[-1])
        return self._assemble(em, insns, eips, nexts, exit_expr, synced_exit, loop)

    def _assemble(self, em, insns, eips, nexts, exit_expr, synced_exit, loop=None):
        all_regs = ", ".join(f"r{n}" for n in range(8))
        has_sync = any(l.strip().startswith("SYNC_OUT") for l in em.lines)
        flags = em.uses_flags or has_sync
        if has_sync:
            # Sync points hand every register to the CPU's methods: keep them all.
            load_regs = f"{all_regs} = R"
            written = list(range(8))
        else:
            load_regs = "".join(f"r{n} = R[{n}]; " for n in sorted(em.regs_read | em.regs_written)) or "pass"
            written = sorted(em.regs_written)
        store_regs = "".join(f"R[{n}] = r{n}; " for n in written)
        head = [
            f"def make({_PARAMS}):",
            "    def block():",
            "        R = cpu.regs",
            f"        {load_regs}",
        ]
        if flags:
            head.append("        fo, fr, fa, fb = cpu.lazy")
        head.append("        try:")
        indent = "            "
        if loop is not None:
            # A self-loop keeps registers and flags in locals across
            # iterations; LOOP_BUDGET bounds how long it runs before the
            # run loop (interrupts, instruction limits) sees control again.
            head += ["            it = 0", "            while True:"]
            indent += "    "
        first_body_line = len(head) + 1
        body = []
        line_insn = []
        for line, idx in zip(em.lines, em.line_insn):
            if line.strip().startswith("SYNC_OUT"):
                # The CPU's method sees every register, the flags and its own EIP.
                ind = line[:len(line) - len(line.lstrip())]
                here = line.split()[1]
                line = f"{ind}R[:] = ({all_regs}); cpu.eip = {here}" + \
                    ("; cpu.lazy = (fo, fr, fa, fb)" if flags else "")
            elif line.strip() == "SYNC_IN":
                ind = line[:len(line) - len(line.lstrip())]
                line = f"{ind}{all_regs} = R" + ("; fo, fr, fa, fb = cpu.lazy" if flags else "")
            body.append(indent + line)
            line_insn.append(idx)
        if not body:
            body.append(indent + "pass")
            line_insn.append(0)
        if loop is not None:
            taken, fall, start = loop
            body += [f"{indent}it += 1",
                     f"{indent}if not ({taken}):",
                     f"{indent}    nx = {fall}; break",
                     f"{indent}if it >= {LOOP_BUDGET}:",
                     f"{indent}    nx = {start}; break"]
            line_insn += [len(insns) - 1] * 5
            exit_expr = "nx"
        tail = [
            "        except CPUException as e:",
            # A fault raised inside a task switch belongs to the new task,
            # whose state the CPU already holds: nothing of ours to write back.
            "            if e.in_new_task: raise",
            "            k = LINES[e.__traceback__.tb_lineno]",
        ]
        if store_regs:
            tail.append(f"            {store_regs}")
        if flags:
            tail.append("            cpu.lazy = (fo, fr, fa, fb)")
        tail += [
            "            if e.trap:",
            "                cpu.eip = NEXTS[k]; cpu.icount += k + 1",
            "            else:",
            "                cpu.eip = EIPS[k]; cpu.icount += k",
            "            raise",
        ]
        if loop is not None:
            tail.insert(-5, "            cpu.icount += it * N")
        if synced_exit:
            # The CPU's own method (far transfer, IRET) has set EIP.
            tail.append("        cpu.icount += N; return cpu.eip")
        else:
            if store_regs:
                tail.append(f"        {store_regs}")
            if flags:
                tail.append("        cpu.lazy = (fo, fr, fa, fb)")
            count = "N * it" if loop is not None else "N"
            tail.append(f"        cpu.icount += {count}; return {exit_expr}")
        tail.append("    return block")
        source = "\n".join(head + body + tail)
        lines = [0] * (len(head) + len(body) + 2)
        for i, idx in enumerate(line_insn):
            lines[first_body_line + i] = idx
        namespace: dict = {}
        exec(compile(source, f"<block {eips[0] if eips else 0:#x}>", "exec"), namespace)
        cpu = self.cpu
        fn = namespace["make"](*_runtime(self.cpu), [i for _, i in insns], lines, eips, nexts,
                               len(insns))
        return source, fn


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
        faults = name not in NONFAULTING or any(o.kind == MEM for o in insn.operands) \
            or name in SYNC
        reads = name in FLAG_READERS or name in ("loope", "loopne") or \
            (name in PARTIAL_FLAG_WRITERS and live) or name in SYNC or \
            (insn.rep and name in ("cmps", "scas"))
        writes_all = name in FULL_FLAG_WRITERS and not (insn.rep and name in ("cmps", "scas"))
        live = reads or faults or (live and not writes_all)
    return out
