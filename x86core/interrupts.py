"""Interrupt and exception delivery, and IRET (Intel SDM Vol. 3 ch. 6,
Vol. 2 INT n/INTO/INT3/INT1 and IRET).

Contract (called by cpu.py):
- deliver_exception(cpu, exc) -> bool: deliver a CPUException raised by an
  instruction (cpu.eip already on the faulting instruction, or after it for
  traps / INT n).  True when delivered; raises TripleFault on shutdown.
- deliver_interrupt(cpu, vector): an external interrupt from the INTR line
  (the caller has checked EFLAGS.IF and the interrupt shadow).
- iret(cpu, size): the IRET instruction (size 2 or 4 bytes of frame slots).

What is modelled:
- Real-address mode: the IVT at IDTR base (limit check, #GP), FLAGS CS IP
  pushed (#SS when the stack has no room), IF TF AC cleared.
- Protected mode: IDT limit and gate type (#GP(vector*8+2+EXT)), the gate
  DPL check for INT n/INT3/INTO only (#GP(vector*8+2)), gate present
  (#NP(vector*8+2+EXT)); 16- and 32-bit interrupt and trap gates; task gates
  through transfers.task_switch_via_gate; the target code segment (null:
  #GP(EXT); beyond the table, not code, DPL > CPL: #GP(sel+EXT); not
  present: #NP(sel+EXT)); a move to an inner ring with SS:ESP from the TSS
  (#TS(TSS sel+EXT) when the TSS is too short; #TS(EXT) null SS; #TS(SS+EXT)
  for SS RPL/DPL/type/table limit; #SS(SS+EXT) not present or no room);
  same-ring entry (conforming or DPL = CPL; #SS(EXT) no room); the gate
  offset against the new CS limit (#GP(EXT)); the frame SS ESP EFLAGS CS
  EIP error code (2-byte slots for 16-bit gates, 4-byte slots for 32-bit
  gates, selectors zero-extended); TF NT RF VM cleared, IF cleared for
  interrupt gates only.  Interrupts and exceptions in virtual-8086 mode:
  INT n with IOPL < 3 is #GP(0); a gate must lead to a DPL 0 non-conforming
  code segment (else #GP(sel+EXT)), GS FS DS ES are pushed and nulled.
- RF in the pushed EFLAGS image: 1 for fault-class exceptions other than
  #DB, 0 for INT n/INT3/INTO, EFLAGS.RF otherwise (SDM 17.3.1.1).
- Double faults (Table 6-5): a contributory exception (#DE #TS #NP #SS
  #GP) while delivering a contributory one, or a contributory exception or
  #PF while delivering a #PF, becomes #DF(0); anything while delivering a
  #DF is a triple fault (TripleFault, "shutdown" in cpu.run).  Otherwise
  the new exception is delivered instead of the first.
- Atomicity: every descriptor read, check, stack slot limit and stack page
  (write access at the new CPL) and each descriptor's accessed-bit write is
  checked before anything changes, so a fault during delivery leaves the
  machine as it was and the new exception is delivered from that state.
  When delivering an INT n/INT3/INTO fails, the fault is reported on the
  instruction itself (saved EIP = its first byte; a prefixed INT is not
  recognised: the saved EIP is then that of its CD opcode byte).
- Faults raised during delivery carry EXT = 1 unless the event was INT n,
  INT3 or INTO.  They go to cpu.exception_hook first, as any exception.
- IRET: real mode; V86 mode (IOPL 3, else #GP(0)); NT = 1: task return via
  transfers.task_return; protected mode to the same ring and to an outer
  ring (SS:ESP popped and checked, DS ES FS GS that the outer ring may not
  use are nulled); IF loaded only when CPL <= IOPL, IOPL/VIF/VIP only at
  CPL 0, RF AC ID only for 32-bit IRET; return to virtual-8086 mode
  (32-bit IRET at CPL 0 with VM in the popped EFLAGS).  A return to a
  16-bit stack segment keeps ESP[31:16] of the stack IRET ran on (the
  behaviour Linux's espfix exists for).

Stack segments: a slot is inside the segment when every byte of it is
(expand-down segments hold limit+1 .. 0xFFFF or 0xFFFFFFFF); offsets wrap
at 16 bits on a stack whose B flag is clear.

Not modelled: CR4.VME / PVI virtual interrupts, NMI blocking, single-step
(#DB) traps on delivery, RF being cleared after each instruction (that is
the run loop's), CS limit checks on the interrupted code.

No IDT: in protected mode with the IDTR still at its reset value (base 0,
limit 0x3FF), no IDT was ever loaded; an exception is then not delivered
(deliver_exception returns False) and cpu.run stops with "exception", the
state at the fault: what bare-CPU runs (linux.py, the executor tests) rely
on.  Real mode's IVT at 0 is of course used.

Tracing: functions in TRACE_HOOKS are called with a Delivery record after
each delivery and each IRET (nothing is built while the list is empty).
"""
from __future__ import annotations

import struct

import attrs

from . import flags as F
from . import segmentation as sg
from . import transfers
from .exceptions import DE, DF, GP, NP, PF, SS, TS, CPUException, TripleFault, fault
from .memory import PAGE_MASK

ES, CS, SS_REG, DS, FS, GS = range(6)
ESP = 4
DB, MC = 1, 18

CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})
# Fault-class exceptions (RF set in the pushed image); #DB is excluded as an
# instruction breakpoint may be its cause, #DF and #MC are aborts.
FAULT_CLASS_NO_RF = frozenset({DB, DF, MC})

FAULT, TRAP, INTERRUPT, SOFTWARE = "fault", "trap", "interrupt", "software"

# Gate types (descriptor type field with S = 0).
TASK_GATE, INT_GATE16, TRAP_GATE16, INT_GATE32, TRAP_GATE32 = 5, 6, 7, 0xE, 0xF
GATE_TYPES = frozenset({TASK_GATE, INT_GATE16, TRAP_GATE16, INT_GATE32, TRAP_GATE32})

# EFLAGS bits an IRET may load (before the CPL/IOPL-dependent ones).
_IRET_ALWAYS = F.ARITH | F.TF | F.DF | F.NT
_IRET_32 = F.RF | F.AC | F.ID
_REAL_IRET_LOAD, _REAL_IRET_KEEP = 0x257FD5, 0x1A0000
V86_DATA_ATTR, V86_CODE_ATTR = 0xF3, 0xFB

TRACE_HOOKS: list = []


@attrs.frozen
class Delivery:
    """One event delivery (or IRET) as the trace hooks see it."""
    kind: str                   # "fault" "trap" "interrupt" "software" or "iret"
    vector: int | None          # None for IRET
    error_code: int | None      # as pushed (None: none pushed)
    old_cs: int
    old_eip: int
    new_cs: int
    new_eip: int
    old_cpl: int
    new_cpl: int
    stack_switched: bool


# -- entry points ----------------------------------------------------------------------------

def deliver_exception(cpu, exc: CPUException) -> bool:
    if exc.software:
        kind = SOFTWARE
    elif exc.trap:
        kind = TRAP
    else:
        kind = FAULT
    if cpu.cr0 & 1 and cpu.idtr == (0, 0x3FF):
        return False            # no IDT was ever loaded: see the module docstring
    return _deliver(cpu, exc.vector, exc.error_code, kind)


def deliver_interrupt(cpu, vector: int) -> None:
    _deliver(cpu, vector, None, INTERRUPT)


def _deliver(cpu, vector: int, error_code, kind: str) -> bool:
    """Deliver one event; a fault on the way is combined with it per SDM
    Table 6-5 and delivered in its place."""
    while True:
        try:
            _deliver_once(cpu, vector, error_code, kind)
            return True
        except CPUException as second:
            if kind == SOFTWARE:
                # The INT instruction faulted: report it on the instruction.
                cpu.eip = _software_start(cpu, vector)[0]
            first_is_exception = kind in (FAULT, TRAP)
            if first_is_exception and vector == DF:
                raise TripleFault(f"{second} while delivering #DF") from None
            s = second.vector
            if first_is_exception and ((vector in CONTRIBUTORY and s in CONTRIBUTORY) or
                                       (vector == PF and (s in CONTRIBUTORY or s == PF))):
                vector, error_code = DF, 0
            else:
                vector, error_code = s, second.error_code
            kind = FAULT
            hook = cpu.exception_hook
            if hook is not None and hook(cpu, CPUException(vector, error_code)):
                return True


def _software_start(cpu, vector: int) -> tuple[int, bool]:
    """Where the INT n / INT3 / INTO that raised `vector` starts (cpu.eip is
    after it), and whether it was the one-byte INT3 (CC) or INTO (CE)."""
    eip = cpu.eip
    cr2 = cpu.cr2
    try:
        last = cpu.read_linear((cpu.seg_base[CS] + eip - 1) & 0xFFFFFFFF, 1, cpu.cpl == 3)
    except CPUException:
        last = -1
    cpu.cr2 = cr2
    one_byte = (vector == 3 and last == 0xCC) or (vector == 4 and last == 0xCE)
    mask = 0xFFFFFFFF if cpu.bits == 32 else 0xFFFF
    return (eip - (1 if one_byte else 2)) & mask, one_byte


# -- helpers ---------------------------------------------------------------------------------

def _fill(cpu, lin: int, write: bool, user: bool) -> int:
    """Translate for an access at the given privilege (#PF as it would
    raise) and enter plain RAM pages in that privilege class's TLB, as
    cpu._fill does for the current class.  Returns the physical page."""
    phys = cpu.translate(lin, write, user) & 0xFFFFF000
    mem = cpu.mem
    ppn = phys >> 12
    if ppn not in mem.device_pages and phys + 4096 <= mem.size:
        tlb_r, tlb_w = cpu._tlbs[user]
        tlb_r[lin & PAGE_MASK] = phys
        if write and not cpu.blocks.holds_code(ppn):
            tlb_w[lin & PAGE_MASK] = phys
    return phys


def _read(cpu, lin: int, size: int, user: bool = False) -> int:
    """A read the processor makes for itself (supervisor for the tables, at
    the stack's privilege for pops), through that privilege class's TLB."""
    off = lin & 0xFFF
    if off + size <= 4096:
        page = cpu._tlbs[user][0].get(lin & PAGE_MASK)
        if page is None:
            page = _fill(cpu, lin, False, user)
        return cpu.mem.read(page | off, size)
    return cpu.read_linear(lin, size, user)


def _descriptor(cpu, selector: int):
    """(Descriptor, linear address) for a selector, or None when it lies
    beyond its table's limit (or names the LDT while LDTR is null)."""
    if selector & 4:
        lsel, base, limit, _ = cpu.ldtr
        if lsel & ~3 == 0:
            return None
    else:
        base, limit = cpu.gdtr
    index = selector & 0xFFF8
    if index + 7 > limit:
        return None
    addr = (base + index) & 0xFFFFFFFF
    return sg.Descriptor.parse(_read(cpu, addr, 8)), addr


def _in_limit(offset: int, size: int, limit: int, attr: int) -> bool:
    if attr & 0x1C == 0x14:                     # expand-down data segment
        upper = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
        return offset > limit and offset + size - 1 <= upper
    return offset + size - 1 <= limit


def _stack_slots(base, limit, attr, esp, b32, slot, values, err):
    """The pushes of `values` (first pushed first), `slot` bytes each, on a
    stack segment: [(linear, size, value)] and the new ESP; fault(SS, err)
    when a slot falls outside the segment."""
    mask = 0xFFFFFFFF if b32 else 0xFFFF
    sp = esp & mask
    out = []
    vmask = (1 << (8 * slot)) - 1
    for value in values:
        sp = (sp - slot) & mask
        if not _in_limit(sp, slot, limit, attr):
            raise fault(SS, err)
        out.append(((base + sp) & 0xFFFFFFFF, slot, value & vmask))
    new_esp = sp if b32 else (esp & 0xFFFF0000) | sp
    return out, new_esp


def _plan(cpu, writes, user: bool, plan: list) -> None:
    """Translate every page `writes` touch for writing (#PF now, before
    anything is written) and add (physical, size, value) pieces to plan."""
    tlb = cpu._tlbs[user][1]
    for lin, size, value in writes:
        off = lin & 0xFFF
        if off + size <= 4096:
            page = tlb.get(lin & PAGE_MASK)
            if page is not None:                # writable at this privilege, RAM, no code
                plan.append((page | off, size, value))
                continue
        done = 0
        while done < size:
            a = (lin + done) & 0xFFFFFFFF
            n = min(size - done, 4096 - (a & 0xFFF))
            phys = _fill(cpu, a, True, user) | (a & 0xFFF)
            plan.append((phys, n, (value >> (8 * done)) & ((1 << (8 * n)) - 1)))
            done += n


def _plan_accessed(cpu, desc, addr: int, plan: list) -> None:
    """The accessed-bit write a segment load makes (supervisor, to the table)."""
    if not desc.type & 1:
        _plan(cpu, [((addr + 5) & 0xFFFFFFFF, 1, (desc.raw >> 40 & 0xFF) | 1)], False, plan)


def _commit(cpu, plan: list) -> None:
    wp = cpu._write_phys
    for phys, n, value in plan:
        if n == 3:
            wp(phys, 2, value & 0xFFFF)
            wp(phys + 2, 1, value >> 16)
        else:
            wp(phys, n, value)


def _set_seg(cpu, seg: int, selector: int, base: int, limit: int, attr: int) -> None:
    cpu.seg_sel[seg] = selector
    cpu.seg_base[seg] = base
    cpu.seg_limit[seg] = limit
    cpu.seg_attr[seg] = attr


def _trace(kind, vector, error_code, old_cs, old_eip, old_cpl, cpu, switched) -> None:
    record = Delivery(kind, vector, error_code, old_cs, old_eip, cpu.seg_sel[CS], cpu.eip,
                      old_cpl, cpu.cpl, switched)
    for hook in list(TRACE_HOOKS):
        hook(record)


# -- delivery ----------------------------------------------------------------------------------

def _deliver_once(cpu, vector: int, error_code, kind: str) -> None:
    if not cpu.cr0 & 1:
        _deliver_real(cpu, vector, kind)
        return
    ext = 0 if kind == SOFTWARE else 1
    eflags = cpu.get_eflags()
    vm = eflags & F.VM
    cpl = cpu.cpl
    if kind == SOFTWARE and vm and (eflags >> 12 & 3) < 3 and not _software_start(cpu, vector)[1]:
        raise fault(GP, 0)      # INT n in V86 mode is IOPL-sensitive (INT3, INTO are not)
    idt_err = vector * 8 + 2 + ext
    idt_base, idt_limit = cpu.idtr
    if vector * 8 + 7 > idt_limit:
        raise fault(GP, idt_err)
    raw = _read(cpu, (idt_base + vector * 8) & 0xFFFFFFFF, 8)
    hi = raw >> 32
    gtype = hi >> 8 & 0x1F                      # type with the S bit: gates have S = 0
    if gtype not in GATE_TYPES:
        raise fault(GP, idt_err)
    if kind == SOFTWARE and cpl > (hi >> 13 & 3):
        raise fault(GP, idt_err)
    if not hi & 0x8000:
        raise fault(NP, idt_err)
    selector = raw >> 16 & 0xFFFF
    pushes_error = error_code is not None and kind != SOFTWARE and kind != INTERRUPT
    if gtype == TASK_GATE:
        _task_gate(cpu, selector, vector, error_code if pushes_error else None, ext, kind,
                   eflags, cpl)
        return
    gate32 = bool(gtype & 8)
    offset = ((raw & 0xFFFF) | (hi & 0xFFFF0000)) if gate32 else raw & 0xFFFF
    # The target code segment.
    if selector & ~3 == 0:
        raise fault(GP, ext)
    sel_err = (selector & 0xFFFC) | ext
    found = _descriptor(cpu, selector)
    if found is None:
        raise fault(GP, sel_err)
    cdesc, caddr = found
    if not cdesc.is_code or cdesc.dpl > cpl:
        raise fault(GP, sel_err)
    if not cdesc.present:
        raise fault(NP, sel_err)
    if not cdesc.conforming and cdesc.dpl < cpl:
        if vm and cdesc.dpl != 0:
            raise fault(GP, sel_err)
        inner = True
        new_cpl = cdesc.dpl
    else:
        if vm:
            raise fault(GP, sel_err)
        inner = False
        new_cpl = cpl

    image = eflags
    if kind == FAULT and vector not in FAULT_CLASS_NO_RF:
        image |= F.RF
    elif kind == SOFTWARE:
        image &= ~F.RF
    old_cs, old_eip = cpu.seg_sel[CS], cpu.eip
    slot = 4 if gate32 else 2
    values = [image, old_cs, old_eip]
    if inner:
        # The inner stack from the TSS (SDM INTER-PRIVILEGE-LEVEL-INTERRUPT).
        tsel, tbase, tlimit, tattr = cpu.tr
        if tattr & 8:                           # 32-bit TSS
            at = (new_cpl << 3) + 4
            if at + 5 > tlimit:
                raise fault(TS, (tsel & 0xFFFC) | ext)
            new_ss = _read(cpu, (tbase + at + 4) & 0xFFFFFFFF, 2)
            new_esp = _read(cpu, (tbase + at) & 0xFFFFFFFF, 4)
        else:
            at = (new_cpl << 2) + 2
            if at + 3 > tlimit:
                raise fault(TS, (tsel & 0xFFFC) | ext)
            new_ss = _read(cpu, (tbase + at + 2) & 0xFFFFFFFF, 2)
            new_esp = _read(cpu, (tbase + at) & 0xFFFFFFFF, 2)
        if new_ss & ~3 == 0:
            raise fault(TS, ext)
        ss_err = (new_ss & 0xFFFC) | ext
        if new_ss & 3 != new_cpl:
            raise fault(TS, ss_err)
        found = _descriptor(cpu, new_ss)
        if found is None:
            raise fault(TS, ss_err)
        sdesc, saddr = found
        if sdesc.dpl != new_cpl or not sdesc.writable:
            raise fault(TS, ss_err)
        if not sdesc.present:
            raise fault(SS, ss_err)
        ss_attr = sdesc.attr | 1
        values[:0] = [cpu.seg_sel[SS_REG], cpu.regs[ESP]]
        if vm:
            values[:0] = [cpu.seg_sel[GS], cpu.seg_sel[FS], cpu.seg_sel[DS], cpu.seg_sel[ES]]
        if pushes_error:
            values.append(error_code)
        writes, esp = _stack_slots(sdesc.base, sdesc.limit, ss_attr, new_esp, sdesc.db, slot,
                                   values, ss_err)
    else:
        if pushes_error:
            values.append(error_code)
        writes, esp = _stack_slots(cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG],
                                   cpu.seg_attr[SS_REG], cpu.regs[ESP],
                                   bool(cpu.seg_attr[SS_REG] & 0x4000), slot, values, ext)
    if offset > cdesc.limit:
        raise fault(GP, ext)
    plan: list = []
    _plan(cpu, writes, new_cpl == 3, plan)
    if inner:
        _plan_accessed(cpu, sdesc, saddr, plan)
    _plan_accessed(cpu, cdesc, caddr, plan)

    # Commit: nothing below can fault.
    _commit(cpu, plan)
    new_flags = eflags & ~(F.TF | F.NT | F.RF | F.VM)
    if not gtype & 1:
        new_flags &= ~F.IF
    cpu.set_eflags(new_flags)
    if inner:
        _set_seg(cpu, SS_REG, new_ss, sdesc.base, sdesc.limit, ss_attr)
        if vm:
            for seg in (ES, DS, FS, GS):
                _set_seg(cpu, seg, 0, 0, 0, 0)
    cpu.regs[ESP] = esp
    sg.load_cs(cpu, selector, cdesc, new_cpl)
    cpu.eip = offset
    if TRACE_HOOKS:
        _trace(kind, vector, error_code if pushes_error else None, old_cs, old_eip, cpl, cpu,
               inner)


def _task_gate(cpu, tss_selector, vector, error_code, ext, kind, eflags, cpl) -> None:
    """A task gate in the IDT: a nested task switch (transfers.py does it)."""
    switch = getattr(transfers, "task_switch_via_gate", None)
    if switch is None:
        raise fault(GP, (tss_selector & 0xFFFC) | ext)
    old_cs, old_eip = cpu.seg_sel[CS], cpu.eip
    switch(cpu, tss_selector, "int", error_code=error_code, ext=bool(ext))
    if TRACE_HOOKS:
        _trace(kind, vector, error_code, old_cs, old_eip, cpl, cpu, True)


def _deliver_real(cpu, vector: int, kind: str) -> None:
    """Real-address mode (SDM 6.3.3, INT n REAL-ADDRESS-MODE): the IVT."""
    base, limit = cpu.idtr
    if vector * 4 + 3 > limit:
        raise fault(GP, 0)
    entry = cpu.read_system((base + vector * 4) & 0xFFFFFFFF, 4)
    eflags = cpu.get_eflags()
    old_cs, old_eip = cpu.seg_sel[CS], cpu.eip
    attr = cpu.seg_attr[SS_REG]
    writes, esp = _stack_slots(cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG], attr & ~0x1C | 0x10,
                               cpu.regs[ESP], bool(attr & 0x4000), 2,
                               [eflags, old_cs, old_eip], 0)
    plan: list = []
    _plan(cpu, writes, False, plan)
    _commit(cpu, plan)
    cpu.set_eflags(eflags & ~(F.IF | F.TF | F.AC))
    cpu.regs[ESP] = esp
    sg.load_cs(cpu, entry >> 16, None, 0)
    cpu.eip = entry & 0xFFFF
    if TRACE_HOOKS:
        _trace(kind, vector, None, old_cs, old_eip, 0, cpu, False)


# -- IRET ----------------------------------------------------------------------------------------

_SLOTS = {(size, n): struct.Struct(f"<{n}{'I' if size == 4 else 'H'}").unpack_from
          for size in (2, 4) for n in (2, 3)}


class _Pops:
    """Reads of successive stack slots above SS:ESP (no change until commit)."""

    def __init__(self, cpu, size: int):
        self.cpu = cpu
        self.size = size
        attr = cpu.seg_attr[SS_REG]
        self.b32 = bool(attr & 0x4000)
        self.mask = 0xFFFFFFFF if self.b32 else 0xFFFF
        self.esp = cpu.regs[ESP]
        self.sp = self.esp & self.mask
        self.check = bool(cpu.cr0 & 1) and not cpu.eflags & F.VM
        self.user = cpu.cpl == 3
        self.base, self.limit, self.attr = cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG], attr

    def pop(self) -> int:
        size, sp = self.size, self.sp
        if not _in_limit(sp, size, self.limit, self.attr if self.check else self.attr & ~0x1C | 0x10):
            raise fault(SS, 0)
        value = _read(self.cpu, (self.base + sp) & 0xFFFFFFFF, size, self.user)
        self.sp = (sp + size) & self.mask
        return value

    def pop_many(self, n: int) -> tuple:
        """n successive slots: read at once when they lie in one page of RAM
        the TLB already maps and inside the segment (nothing can fault, so
        the order of the checks cannot show); one by one otherwise."""
        size, sp = self.size, self.sp
        total = size * n
        if self.check and sp + total <= self.mask + 1 and \
                _in_limit(sp, total, self.limit, self.attr):
            lin = (self.base + sp) & 0xFFFFFFFF
            if (lin & 0xFFF) + total <= 4096:
                page = self.cpu._tlbs[self.user][0].get(lin & PAGE_MASK)
                if page is not None:
                    self.sp = (sp + total) & self.mask
                    return _SLOTS[size, n](self.cpu.mem.view, page | (lin & 0xFFF))
        return tuple(self.pop() for _ in range(n))

    def new_esp(self) -> int:
        return self.sp if self.b32 else (self.esp & 0xFFFF0000) | self.sp


def _iret_flags(old: int, temp: int, size: int, cpl: int) -> int:
    mask = _IRET_ALWAYS
    if size == 4:
        mask |= _IRET_32
    if cpl <= (old >> 12 & 3):
        mask |= F.IF
    if cpl == 0:
        mask |= F.IOPL
        if size == 4:
            mask |= F.VIF | F.VIP
    return (old & ~mask) | (temp & mask)


def iret(cpu, size: int) -> None:
    old_cs, old_eip, old_cpl = cpu.seg_sel[CS], cpu.eip, cpu.cpl
    if not cpu.cr0 & 1:
        _iret_real(cpu, size)
        switched = False
    elif cpu.eflags & F.VM:
        _iret_v86(cpu, size)
        switched = False
    elif cpu.eflags & F.NT:
        task_return = getattr(transfers, "task_return", None)
        if task_return is None:
            raise fault(GP, 0)
        task_return(cpu)
        switched = True
    else:
        switched = _iret_protected(cpu, size)
    if TRACE_HOOKS:
        _trace("iret", None, None, old_cs, old_eip, old_cpl, cpu, switched)


def _iret_real(cpu, size: int) -> None:
    stack = _Pops(cpu, size)
    eip = stack.pop()
    cs = stack.pop() & 0xFFFF
    temp = stack.pop()
    if eip > cpu.seg_limit[CS]:
        raise fault(GP, 0)
    old = cpu.get_eflags()
    if size == 4:
        new = (temp & _REAL_IRET_LOAD) | (old & _REAL_IRET_KEEP)
    else:
        new = (old & 0xFFFF0000) | temp
    cpu.regs[ESP] = stack.new_esp()
    cpu.set_eflags(new)
    sg.load_cs(cpu, cs, None, 0)
    cpu.eip = eip


def _iret_v86(cpu, size: int) -> None:
    """IRET in virtual-8086 mode: with IOPL 3 a real-mode style return that
    leaves VM, IOPL, VIP, VIF alone; otherwise #GP(0) to the monitor."""
    old = cpu.get_eflags()
    if old >> 12 & 3 != 3:
        raise fault(GP, 0)
    stack = _Pops(cpu, size)
    eip = stack.pop()
    cs = stack.pop() & 0xFFFF
    temp = stack.pop()
    if eip > 0xFFFF:
        raise fault(GP, 0)
    if size == 4:
        keep = F.VM | F.IOPL | F.VIP | F.VIF
        new = (old & keep) | (temp & ~keep)
    else:
        new = (old & (0xFFFF0000 | F.IOPL)) | (temp & ~F.IOPL & 0xFFFF)
    cpu.regs[ESP] = stack.new_esp()
    cpu.set_eflags(new)
    cpu.seg_attr[CS] = V86_CODE_ATTR
    sg.load_cs(cpu, cs, None, 3)
    cpu.eip = eip


def _iret_protected(cpu, size: int) -> bool:
    """Protected-mode IRET to the same or an outer ring, or to V86 mode.
    True when the stack was switched."""
    cpl = cpu.cpl
    stack = _Pops(cpu, size)
    eip, cs, temp = stack.pop_many(3)
    cs &= 0xFFFF
    old = cpu.get_eflags()
    if size == 4 and temp & F.VM and cpl == 0:
        _iret_to_v86(cpu, stack, eip, cs, temp)
        return True
    if cs & ~3 == 0:
        raise fault(GP, 0)
    err = cs & 0xFFFC
    found = _descriptor(cpu, cs)
    if found is None:
        raise fault(GP, err)
    cdesc, caddr = found
    rpl = cs & 3
    if not cdesc.is_code or rpl < cpl:
        raise fault(GP, err)
    if cdesc.conforming:
        if cdesc.dpl > rpl:
            raise fault(GP, err)
    elif cdesc.dpl != rpl:
        raise fault(GP, err)
    if not cdesc.present:
        raise fault(NP, err)
    new_flags = _iret_flags(old, temp, size, cpl)
    plan: list = []
    if rpl == cpl:
        if eip > cdesc.limit:
            raise fault(GP, 0)
        _plan_accessed(cpu, cdesc, caddr, plan)
        _commit(cpu, plan)
        cpu.regs[ESP] = stack.new_esp()
        cpu.set_eflags(new_flags)
        sg.load_cs(cpu, cs, cdesc, cpl)
        cpu.eip = eip
        return False
    # RETURN-TO-OUTER-PRIVILEGE-LEVEL
    new_esp, ss = stack.pop_many(2)
    ss &= 0xFFFF
    if ss & ~3 == 0:
        raise fault(GP, 0)
    ss_err = ss & 0xFFFC
    found = _descriptor(cpu, ss)
    if found is None:
        raise fault(GP, ss_err)
    sdesc, saddr = found
    if ss & 3 != rpl or not sdesc.writable or sdesc.dpl != rpl:
        raise fault(GP, ss_err)
    if not sdesc.present:
        raise fault(SS, ss_err)
    if eip > cdesc.limit:
        raise fault(GP, 0)
    _plan_accessed(cpu, cdesc, caddr, plan)
    _plan_accessed(cpu, sdesc, saddr, plan)
    _commit(cpu, plan)
    if not sdesc.db:
        # Only SP is loaded on a 16-bit stack: ESP[31:16] stay as they were.
        new_esp = (cpu.regs[ESP] & 0xFFFF0000) | (new_esp & 0xFFFF)
    elif size == 2:
        new_esp &= 0xFFFF
    cpu.regs[ESP] = new_esp
    cpu.set_eflags(new_flags)
    _set_seg(cpu, SS_REG, ss, sdesc.base, sdesc.limit, sdesc.attr | 1)
    for seg in (ES, DS, FS, GS):
        attr = cpu.seg_attr[seg]
        if cpu.seg_sel[seg] & ~3 == 0 or not attr & 0x10:
            _set_seg(cpu, seg, 0, 0, 0, 0)          # a null (unusable) register stays null
        elif attr & 0xC != 0xC and (attr >> 5 & 3) < rpl:
            _set_seg(cpu, seg, 0, 0, 0, 0)          # data or non-conforming code, too privileged
    sg.load_cs(cpu, cs, cdesc, rpl)
    cpu.eip = eip
    return True


def _iret_to_v86(cpu, stack: _Pops, eip: int, cs: int, temp: int) -> None:
    """RETURN-TO-VIRTUAL-8086-MODE: ESP SS ES DS FS GS follow on the stack."""
    esp = stack.pop()
    ss, es, ds, fs, gs = (stack.pop() & 0xFFFF for _ in range(5))
    if eip > 0xFFFF:
        raise fault(GP, 0)
    cpu.set_eflags(temp)
    for seg, sel in ((SS_REG, ss), (ES, es), (DS, ds), (FS, fs), (GS, gs)):
        _set_seg(cpu, seg, sel, sel << 4, 0xFFFF, V86_DATA_ATTR)
    cpu.regs[ESP] = esp
    cpu.seg_attr[CS] = V86_CODE_ATTR
    sg.load_cs(cpu, cs, None, 3)
    cpu.eip = eip
