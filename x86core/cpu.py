"""The i386 processor: architectural state and the run loop.

State follows the Intel SDM Vol. 3 ch. 2: general registers, EIP, EFLAGS,
segment registers with their hidden descriptor caches, CR0-CR4, the
descriptor-table registers, DR0-DR7 and the TSC.  EFLAGS is kept in two
parts: the system bits in `eflags`, and the six arithmetic flags as the lazy
(op, res, a, b) of `flags.py`.

Memory is reached through two TLBs (dicts from linear page number to
physical page base), one for reads and one for writes, for the current
privilege class.  Compiled blocks test the TLB inline and fall back to
`read_slow` / `write_slow` here, which walk the page tables, fill the TLB,
reach device hooks and catch writes to pages holding compiled code.
"""
from __future__ import annotations

import contextlib
import gc
import struct

from . import flags as fl
from . import interrupts, segmentation, system_instructions, transfers
from .blocks import BlockCache
from .exceptions import GP, PF, UD, CPUException, TripleFault, fault
from .memory import PAGE_MASK, PAGE_SHIFT, IOBus, PhysicalMemory
from .system import Helpers

EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
ES, CS, SS, DS, FS, GS = range(6)

CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 0x10000, 0x40000, 0x20000000, 0x40000000, 0x80000000
CR4_PSE, CR4_PGE, CR4_TSD, CR4_DE = 0x10, 0x80, 0x4, 0x8

PTE_P, PTE_W, PTE_U, PTE_A, PTE_D, PTE_PS, PTE_G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100

_U32 = struct.Struct("<I").unpack_from


class CPU:
    def __init__(self, memory: PhysicalMemory | int, io: IOBus | None = None,
                 cpuid: dict[int, tuple[int, int, int, int]] | None = None):
        self.mem = memory if isinstance(memory, PhysicalMemory) else PhysicalMemory(memory)
        self.io = io or IOBus()
        self.regs = [0] * 8
        self.eip = 0
        self.eflags = fl.RESERVED_ONE           # system bits only
        self.lazy = (fl.K_RAW, 0, 0, 0)         # arithmetic flags
        self.seg_sel = [0] * 6
        self.seg_base = [0] * 6
        self.seg_limit = [0xFFFF] * 6
        self.seg_attr = [0] * 6                 # descriptor access byte | flags << 8
        # The largest offset an access may start at before the exact check
        # (check_segment) is needed; -1 sends every access there.  Derived
        # from the caches above by mode_changed().
        self.seg_max_read = [0xFFFF] * 6
        self.seg_max_write = [0xFFFF] * 6
        self._mode_memo: dict[tuple, tuple] = {}
        self.cr0 = CR0_ET
        self.cr2 = self.cr3 = self.cr4 = 0
        self.dr = [0] * 8
        self.dr[6], self.dr[7] = 0xFFFF0FF0, 0x400
        self.gdtr = (0, 0xFFFF)
        self.idtr = (0, 0x3FF)
        self.ldtr = (0, 0, 0xFFFF, 0)           # selector, base, limit, attr
        self.tr = (0, 0, 0xFFFF, 0)
        self.msr: dict[int, int] = {}
        # CPUID leaves (EAX, EBX, ECX, EDX): the default describes what this
        # CPU implements (CPUID below); pass another table to model a different part.
        self.cpuid_leaves = dict(CPUID if cpuid is None else cpuid)
        self.cpl = 0
        self.bits = 16                          # CS.D: default operand/address size
        self.flat = False                       # ES/CS/SS/DS all base 0, limit 4 GiB
        self.halted = False
        self.icount = 0                         # instructions retired (also the TSC)
        self.tsc_offset = 0
        self.irq_line = None                    # callable returning a vector or None
        self.inhibit_irq = False                # the STI / MOV SS interrupt shadow
        # Linear page base -> physical page base.  Keyed by the base, not the
        # page number, so compiled code probes a dword with `a & 0xFFFFF003`:
        # an unaligned address misses (to the slow path) with no test of its
        # own, and an address carried past 2^32 wraps as the adder's does.
        self.tlb_r: dict[int, int] = {}
        self.tlb_w: dict[int, int] = {}
        self._tlbs = {False: ({}, {}), True: ({}, {})}
        self.tlb_global: set[int] = set()       # page bases whose translation has G (CR4.PGE)
        self._last_global = False               # the G bit of the last page walk
        self.blocks = BlockCache(self)
        self.mem.on_watched_write = self.blocks.invalidate_page
        self.helpers = Helpers(self)
        self.exception_hook = None              # bare-metal runs: (cpu, exc) -> handled?
        self.native = None                      # x86core.native.NativeCode, if any
        self.trace = None                       # callable(cpu, insn) per instruction when set

    # -- flags --------------------------------------------------------------
    def get_eflags(self) -> int:
        return self.eflags | fl.eval_flags(*self.lazy)

    def set_eflags(self, value: int) -> None:
        self.eflags = (value & fl.DEFINED & ~fl.ARITH) | fl.RESERVED_ONE
        self.lazy = (fl.K_RAW, 0, value & fl.ARITH, 0)

    # -- segments (flat loads; the protection layer replaces these) ----------
    def load_flat_segments(self, code_sel=0x08, data_sel=0x10) -> None:
        """Protected mode, 32-bit, every segment base 0 limit 4 GiB: what a
        static Linux program sees."""
        self.cr0 |= CR0_PE
        for s in range(6):
            sel = code_sel if s == CS else data_sel
            self.seg_sel[s] = sel | self.cpl
            self.seg_base[s] = 0
            self.seg_limit[s] = 0xFFFFFFFF
            self.seg_attr[s] = 0xC09B if s == CS else 0xC093
        self.bits = 32
        self.mode_changed()

    def mode_changed(self) -> None:
        """Segment, CPL or paging state changed: pick the block set and TLB
        that match it."""
        # Privilege changes (every system call, every trap) come back to a
        # handful of segment states, so the derived bounds are remembered.
        key = (*self.seg_base, *self.seg_limit, *self.seg_attr,
               self.cr0 & CR0_PE, self.eflags & fl.VM)
        derived = self._mode_memo.get(key)
        if derived is None:
            bounds = [self._segment_bounds(s) for s in range(6)]
            flat = all(self.seg_base[s] == 0 and bounds[s][1] == 0xFFFFFFFF
                       for s in (ES, SS, DS)) and self.seg_base[CS] == 0 \
                and self.seg_limit[CS] == 0xFFFFFFFF
            if len(self._mode_memo) > 256:
                self._mode_memo.clear()
            derived = self._mode_memo[key] = ([b[0] for b in bounds], [b[1] for b in bounds], flat)
        self.seg_max_read[:], self.seg_max_write[:], self.flat = derived
        self.tlb_r, self.tlb_w = self._tlbs[self.cpl == 3]
        self.blocks.select_mode()

    def _segment_bounds(self, s: int) -> tuple[int, int]:
        """(max read offset, max write offset) for the fast limit test."""
        limit = self.seg_limit[s]
        if not self.cr0 & CR0_PE or self.eflags & fl.VM:
            return limit, limit
        attr = self.seg_attr[s]
        if not attr & 0x80 or not attr & 0x10:     # unusable (null) or a system descriptor
            return -1, -1
        typ = attr & 0xF
        if typ & 8:                                 # code: readable if R, never writable
            return (limit if typ & 2 else -1), -1
        if typ & 4:                                 # expand-down data: the exact check decides
            return -1, -1
        return limit, (limit if typ & 2 else -1)

    def check_segment(self, seg: int, offset: int, size: int, write: int) -> None:
        """The exact segment check (SDM Vol. 3 5.3, 5.4): raises #GP(0), or
        #SS(0) through SS, when the access is not allowed."""
        from .exceptions import SS as SS_FAULT
        vector = SS_FAULT if seg == SS else GP
        last = offset + size - 1
        if not self.cr0 & CR0_PE or self.eflags & fl.VM:
            if last > self.seg_limit[seg]:
                raise fault(vector, 0)
            return
        attr = self.seg_attr[seg]
        if not attr & 0x80 or not attr & 0x10:
            raise fault(vector, 0)
        typ = attr & 0xF
        if write and (typ & 8 or not typ & 2) or not write and typ & 8 and not typ & 2:
            raise fault(vector, 0)
        limit = self.seg_limit[seg]
        if typ & 8 == 0 and typ & 4:                # expand-down: (limit, top] is valid
            top = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
            if offset <= limit or last > top:
                raise fault(vector, 0)
        elif last > limit:
            raise fault(vector, 0)

    # -- TLB and address translation -----------------------------------------
    def flush_tlb(self, keep_global: bool = False) -> None:
        """Drop cached translations; a CR3 load (keep_global) keeps the
        global ones while CR4.PGE is set (SDM Vol. 3 4.10.4.1)."""
        keep = self.tlb_global if keep_global and self.cr4 & CR4_PGE and self.cr0 & CR0_PG else ()
        for r, w in self._tlbs.values():
            for t in (r, w):
                if keep:
                    for base in [b for b in t if b not in keep]:
                        del t[base]
                else:
                    t.clear()
        if not keep:
            self.tlb_global.clear()
        self.blocks.paging_changed()

    def invlpg(self, lin: int) -> None:
        base = lin & PAGE_MASK
        self.blocks.clear_fast()
        self.tlb_global.discard(base)
        for r, w in self._tlbs.values():
            r.pop(base, None)
            w.pop(base, None)

    def translate(self, lin: int, write: bool, user: bool | None = None) -> int:
        """Linear -> physical address, raising #PF as the page walk would."""
        if not self.cr0 & CR0_PG:
            return lin
        if user is None:
            user = self.cpl == 3
        pde_addr = (self.cr3 & 0xFFFFF000) | (lin >> 20 & 0xFFC)
        pde = self.mem.read(pde_addr, 4)
        err = (2 if write else 0) | (4 if user else 0)
        if not pde & PTE_P:
            raise self._page_fault(lin, err)
        if pde & PTE_PS and self.cr4 & CR4_PSE:
            self._check_access(pde, pde, lin, write, user, err)
            new = pde | PTE_A | (PTE_D if write else 0)
            if new != pde:
                self.mem.write(pde_addr, 4, new)
            self._last_global = bool(pde & PTE_G)
            return (pde & 0xFFC00000) | (lin & 0x3FFFFF)
        pte_addr = (pde & 0xFFFFF000) | (lin >> 10 & 0xFFC)
        pte = self.mem.read(pte_addr, 4)
        if not pte & PTE_P:
            raise self._page_fault(lin, err)
        self._check_access(pde, pte, lin, write, user, err)
        if not pde & PTE_A:
            self.mem.write(pde_addr, 4, pde | PTE_A)
        new = pte | PTE_A | (PTE_D if write else 0)
        if new != pte:
            self.mem.write(pte_addr, 4, new)
        self._last_global = bool(pte & PTE_G)
        return (pte & 0xFFFFF000) | (lin & 0xFFF)

    def _check_access(self, pde, pte, lin, write, user, err):
        # The effective U/S and R/W are the AND of both levels (SDM Vol. 3 4.6).
        if user and not (pde & pte & PTE_U):
            raise self._page_fault(lin, err | 1)
        if write and not (pde & pte & PTE_W) and (user or self.cr0 & CR0_WP):
            raise self._page_fault(lin, err | 1)

    def _page_fault(self, lin: int, err: int) -> CPUException:
        self.cr2 = lin
        return CPUException(PF, err)

    def _fill(self, lin: int, write: bool) -> int:
        """Translate and, where the page is plain RAM, enter it in the TLB.
        Returns the physical page base."""
        # Walk with the exact address: a #PF must report it in CR2.
        self._last_global = False
        phys = self.translate(lin, write) & 0xFFFFF000
        ppn = phys >> PAGE_SHIFT
        if self._last_global and self.cr4 & CR4_PGE:
            self.tlb_global.add(lin & PAGE_MASK)
        mem = self.mem
        if ppn not in mem.device_pages and phys + 4096 <= mem.size:
            base = lin & PAGE_MASK
            self.tlb_r[base] = phys
            mem.enter_page(phys)
            if write and not self.blocks.holds_code(ppn):
                self.tlb_w[base] = phys
        return phys

    def read_slow(self, lin: int, size: int) -> int:
        # Compiled code passes flat addresses unwrapped (base + disp may
        # pass 2^32): they miss the TLB and wrap here, as the address adder does.
        lin &= 0xFFFFFFFF
        off = lin & 0xFFF
        if off + size > 4096:
            return self._read_split(lin, size)
        return self.mem.read(self._fill(lin, False) | off, size)

    def _read_split(self, lin: int, size: int) -> int:
        value = 0
        for i in range(size):
            a = (lin + i) & 0xFFFFFFFF
            value |= self.mem.read(self._fill(a, False) | (a & 0xFFF), 1) << (8 * i)
        return value

    def write_slow(self, lin: int, size: int, value: int) -> None:
        lin &= 0xFFFFFFFF           # see read_slow
        off = lin & 0xFFF
        if off + size > 4096:
            # Translate both pages before writing either: no half-done write on #PF.
            first = self._fill(lin, True)
            second = self._fill(((lin | 0xFFF) + 1) & 0xFFFFFFFF, True)   # its first byte
            for i in range(size):
                a = lin + i
                base = first if (a >> PAGE_SHIFT) == (lin >> PAGE_SHIFT) else second
                self._write_phys(base | (a & 0xFFF), 1, (value >> (8 * i)) & 0xFF)
            return
        self._write_phys(self._fill(lin, True) | off, size, value)

    def _write_phys(self, phys: int, size: int, value: int) -> None:
        self.mem.write(phys, size, value)       # invalidates compiled code it overwrites

    def fetch(self, lin: int, size: int, ahead: bool = False) -> bytes:
        """Instruction bytes from `lin`, up to `size`, stopping at the first
        page that cannot be fetched once at least one byte is in hand (or,
        `ahead`: bytes read ahead of the code that runs, even the first)."""
        out = bytearray()
        while len(out) < size:
            a = (lin + len(out)) & 0xFFFFFFFF
            cr2 = self.cr2
            try:
                phys = self.translate(a, False)
            except CPUException:
                if out or ahead:
                    self.cr2 = cr2      # reading ahead, not a fault: CR2 stays
                    break
                raise
            n = min(size - len(out), 4096 - (a & 0xFFF))
            if phys >> PAGE_SHIFT in self.mem.device_pages or phys + n > self.mem.size:
                out += bytes(self.mem.read(phys + i, 1) for i in range(n))
            else:
                out += self.mem.view[phys:phys + n]
        return bytes(out)

    # -- system tables ---------------------------------------------------------------
    def read_linear(self, lin: int, size: int, user: bool) -> int:
        """A read the processor makes for itself at a given privilege
        (descriptor tables and TSS: user=False; a stack at the new CPL):
        translated once per page, with #PF as the access would raise."""
        out = 0
        done = 0
        while done < size:
            a = (lin + done) & 0xFFFFFFFF
            n = min(size - done, 4096 - (a & 0xFFF))
            phys = self.translate(a, False, user)
            for i in range(n):
                out |= self.mem.read(phys + i, 1) << (8 * (done + i))
            done += n
        return out

    def write_linear(self, lin: int, size: int, value: int, user: bool) -> None:
        """The write twin of read_linear; every page is translated before
        any byte is written, so a #PF leaves memory untouched."""
        chunks = []
        done = 0
        while done < size:
            a = (lin + done) & 0xFFFFFFFF
            n = min(size - done, 4096 - (a & 0xFFF))
            chunks.append((self.translate(a, True, user), done, n))
            done += n
        for phys, start, n in chunks:
            for i in range(n):
                self._write_phys(phys + i, 1, (value >> (8 * (start + i))) & 0xFF)

    def read_system(self, lin: int, size: int) -> int:
        """Descriptor tables, the TSS: supervisor accesses whatever the CPL."""
        return self.read_linear(lin, size, False)

    def write_system(self, lin: int, size: int, value: int) -> None:
        self.write_linear(lin, size, value, False)

    def load_segment(self, seg: int, selector: int) -> None:
        segmentation.load_segment(self, seg, selector)

    def write_cr(self, n: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if n == 0:
            if value & CR0_PG and not value & CR0_PE or value & CR0_NW and not value & CR0_CD:
                raise fault(GP, 0)
            changed = self.cr0 ^ value
            self.cr0 = value | CR0_ET
            if changed & (CR0_PG | CR0_WP | CR0_PE):
                self.flush_tlb()
                self.mode_changed()
        elif n == 2:
            self.cr2 = value
        elif n == 3:
            self.cr3 = value & 0xFFFFF018
            self.flush_tlb(keep_global=True)
        elif n == 4:
            if value & ~0x3FF:
                raise fault(GP, 0)
            changed = self.cr4 ^ value
            self.cr4 = value
            if changed & (CR4_PSE | CR4_PGE):
                self.flush_tlb()
        else:
            raise fault(UD)

    def io_bitmap_allows(self, port: int, size: int) -> bool:
        """The TSS I/O permission bitmap (SDM Vol. 1 18.5.2)."""
        _, base, limit, attr = self.tr
        if self.tr[0] & ~3 == 0 or limit < 0x67:
            return False
        offset = self.read_system(base + 0x66, 2)
        byte = offset + (port >> 3)
        if byte + 1 > limit:
            return False
        bits = self.read_system(base + byte, 2)
        mask = ((1 << size) - 1) << (port & 7)
        return not bits & mask

    # Far transfers, IRET, exception delivery and the descriptor-table
    # instructions live in their own modules (transfers.py, interrupts.py,
    # system_instructions.py), as the SDM chapters they follow.
    def far_jump(self, selector: int, offset: int, next_eip: int | None = None) -> None:
        transfers.far_jump(self, selector, offset, next_eip)

    def far_call(self, selector: int, offset: int, next_eip: int, size: int) -> None:
        transfers.far_call(self, selector, offset, next_eip, size)

    def far_ret(self, size: int, release: int) -> None:
        transfers.far_ret(self, size, release)

    def iret(self, size: int) -> None:
        interrupts.iret(self, size)

    def system_instruction(self, insn) -> None:
        system_instructions.execute(self, insn)

    # -- port I/O ---------------------------------------------------------------
    def port_in(self, port: int, size: int) -> int:
        return self.io.read(port & 0xFFFF, size)

    def port_out(self, port: int, size: int, value: int) -> None:
        self.io.write(port & 0xFFFF, size, value)

    # -- running ------------------------------------------------------------------
    def run(self, max_instructions: int | None = None) -> str:
        """Run until HLT with no interrupt to wake it ("halt"), an exception
        nobody takes ("exception"), a triple fault ("shutdown"), a hook's
        StopExecution ("stop") or `max_instructions` ("limit")."""
        limit = None if max_instructions is None else self.icount + max_instructions
        run_one = self.blocks.run_one
        with _no_full_collections():
            return self._run(limit, run_one)

    def _run(self, limit: int | None, run_one) -> str:
        try:
            while limit is None or self.icount < limit:
                if self.irq_line is not None and self.eflags & fl.IF:
                    if self.inhibit_irq:
                        # The STI / MOV SS shadow: exactly one more instruction first.
                        self.inhibit_irq = False
                        if not self.halted:
                            self._run_guarded(self.blocks.run_single)
                            continue
                    vector = self.irq_line()
                    if vector is not None:
                        self.halted = False
                        self._run_guarded(lambda: interrupts.deliver_interrupt(self, vector))
                        continue
                self.inhibit_irq = False
                if self.halted:
                    return "halt"
                if not self._run_guarded(run_one):
                    return "exception"
                if self.eflags & fl.RF:
                    # RF (set by IRET from a fault frame) lasts one instruction;
                    # with no debug breakpoints modelled, clearing it after the
                    # next block is indistinguishable.
                    self.eflags &= ~fl.RF
                if self.irq_line is None and self.trace is None and self.blocks.enabled \
                        and not self.halted:
                    if not self._run_guarded(lambda: self._run_chain(limit)):
                        return "exception"
        except StopExecution as stop:
            self.stop_reason = str(stop)
            return "stop"
        except TripleFault as tf:
            self.stop_reason = f"triple fault ({tf}) at eip {self.eip:#010x}: shutdown"
            return "shutdown"
        return "limit"

    def _run_chain(self, limit: int | None) -> None:
        """The fast path: run cached blocks back to back with everything the
        dispatch needs in locals.  Leaves for the careful loop on a TLB or
        cache miss, after a block that may change the mode, TLB or interrupt
        state (Block.stop), or at the instruction limit.  A block returns
        the next EIP; an exception leaves with cpu.eip set by unwind(), so
        only normal exits store it here."""
        blocks = self.blocks
        current, fast = blocks.current, blocks.fast
        fast_get, tlb_get = fast.get, self.tlb_r.get
        cs_base = self.seg_base[1]
        eip = self.eip
        try:
            if limit is None and cs_base == 0:
                # The common case, kept to the bare minimum per block: the
                # linear EIP is EIP, and no instruction limit to watch.
                while True:
                    fn = fast_get(eip)
                    if fn is None:
                        page = tlb_get(eip & 0xFFFFF000)
                        block = current.get(eip) if page is not None else None
                        if block is None or block.phys != page | (eip & 0xFFF) or block.stop:
                            break
                        fn = fast[eip] = block.fn
                    eip = fn()
            else:
                limit = 1 << 62 if limit is None else limit
                while self.icount < limit:
                    lin = (cs_base + eip) & 0xFFFFFFFF
                    fn = fast_get(lin)
                    if fn is None:
                        page = tlb_get(lin & 0xFFFFF000)
                        block = current.get(lin) if page is not None else None
                        if block is None or block.phys != page | (lin & 0xFFF) or block.stop:
                            break
                        fn = fast[lin] = block.fn
                    eip = fn()
        except CPUException as exc:
            blocks.unwind(exc)
            raise
        self.eip = eip

    def _run_guarded(self, step) -> bool:
        """Run one step; deliver what it raises.  False when nobody takes it."""
        try:
            step()
        except CPUException as exc:
            if not self.raise_exception(exc):
                self.stop_reason = f"unhandled {exc} at eip {self.eip:#010x}"
                return False
        return True

    def raise_exception(self, exc: CPUException) -> bool:
        """Deliver an exception or software interrupt: to exception_hook if
        one is installed and takes it (bare-metal runs, the Host's
        Switcher), else through the IDT as the processor does."""
        if self.exception_hook is not None and self.exception_hook(self, exc):
            return True
        return interrupts.deliver_exception(self, exc)

    def cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        """CPUID as the SDM describes it: an unknown basic leaf answers as the
        highest basic leaf, an unknown extended leaf with zeros."""
        table = self.cpuid_leaves
        if leaf in table:
            return table[leaf]
        if leaf < 0x80000000:
            return table[max(k for k in table if k < 0x80000000)]
        return (0, 0, 0, 0)

    def rdtsc(self) -> int:
        return (self.icount + self.tsc_offset) & 0xFFFFFFFFFFFFFFFF


@contextlib.contextmanager
def _no_full_collections():
    """No full collection by the cyclic garbage collector while the CPU
    runs.  A run makes many long-lived objects (blocks, handlers, regions),
    which trigger full collections, and a full collection walks every
    object in the process - numpy's and a test harness's as well: 5-25 ms
    each here, up to a tenth of a short program's run.  The young
    generations are still collected; the first collection after the run
    is a full one if the run left enough to warrant it (CPython's own rule),
    so what a run leaves is not kept (gc.freeze instead would be: a process
    running CPU after CPU grew by 18 MiB a round)."""
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(t0, t1, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)


class StopExecution(Exception):
    """Raised by a hook (exit system call, debugger) to end `run` cleanly."""


# CPUID: a P6-class integer processor.  Leaf 1 EDX: TSC (4), MSR (5), CX8 (8),
# CMOV (15); no FPU (0), no MMX/SSE, so software never uses what we lack.
CPUID_VENDOR = b"PyLguestCPU!"
CPUID = {
    0: (1, int.from_bytes(CPUID_VENDOR[0:4], "little"), int.from_bytes(CPUID_VENDOR[8:12], "little"),
        int.from_bytes(CPUID_VENDOR[4:8], "little")),
    1: (0x00000633, 0, 0, (1 << 4) | (1 << 5) | (1 << 8) | (1 << 15)),
    0x80000000: (0x80000000, 0, 0, 0),
}
