"""Far control transfers: JMP/CALL/RET far, call gates, task switches
(Intel SDM Vol. 3 ch. 5.8, 7; Vol. 2 JMP, CALL, RET).

Contract (called by cpu.py; on entry cpu.regs/eip/lazy flags are current;
a raised fault is reported on the instruction itself by the block):
- far_jump(cpu, selector, offset, next_eip=None)
- far_call(cpu, selector, offset, next_eip, size)   size = 2 or 4
- far_ret(cpu, size, release)                       release = RET imm16
Each sets cpu.eip (and CS via segmentation.load_cs) or raises.

For interrupts.py:
- task_switch_via_gate(cpu, selector, source, *, next_eip=None,
  error_code=None, ext=False): switch tasks through a task gate (in the GDT
  or LDT) or straight to a TSS descriptor named by `selector` (for an IDT
  task gate pass the gate's TSS selector).  source is "jmp", "call" or
  "int" ("int" nests like CALL: busy, NT, back link).  The EIP saved in the
  old TSS is next_eip, or cpu.eip when it is None (what delivery of an
  interrupt has already set up).  error_code, when given, is pushed on the
  new task's stack (an exception delivered through a task gate).  ext sets
  the EXT bit of the error codes raised (hardware interrupts, exceptions).
  Privilege checks on the gate itself (DPL vs CPL) are the caller's.
- task_return(cpu, next_eip=None): IRET with EFLAGS.NT = 1, back to the
  task named by the current TSS's back link.

Atomicity: every check that the SDM places before the transfer (descriptor
types, privilege, presence, limits, stack room, the pages the stack pushes
touch) is made before any register, segment or memory changes, so a fault
leaves the machine as it was.  A task switch commits once the new TSS has
been read and the old one can be written; a fault after that point
(Table 7-1 conditions 5-14: LDT, CS, SS, data segments, EIP limit) belongs
to the new task and is delivered here, through cpu.raise_exception, with
the new task's state (a compiled block would otherwise write the old
task's registers back over it).

Not modelled: 16-bit TSSs as the *old* task on an I/O bitmap check (no
bitmap there), debug traps on task switch (T flag), V86 task entry/exit
beyond loading the segment registers as real-mode selectors.
"""
from __future__ import annotations

from . import segmentation as sg
from .exceptions import GP, NP, SS, TS, CPUException, fault

ES, CS, SS_REG, DS, FS, GS = range(6)
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
VM = 0x20000
NT = 0x4000

# System descriptor types (S = 0).
TSS16_AVAIL, LDT_TYPE, TSS16_BUSY, CALL_GATE16, TASK_GATE = 1, 2, 3, 4, 5
TSS32_AVAIL, TSS32_BUSY, CALL_GATE32 = 9, 0xB, 0xC
AVAILABLE_TSS = (TSS16_AVAIL, TSS32_AVAIL)
BUSY_TSS = (TSS16_BUSY, TSS32_BUSY)

# 32-bit TSS offsets (SDM Vol. 3 Fig. 7-2) and the 16-bit TSS (Fig. 7-11).
TSS32 = dict(link=0x00, cr3=0x1C, eip=0x20, eflags=0x24, regs=0x28, segs=0x48, ldt=0x60,
             trap=0x64, min_limit=0x67)
TSS16 = dict(link=0x00, eip=0x0E, eflags=0x10, regs=0x12, segs=0x22, ldt=0x2A, min_limit=0x2B)


# -- small helpers -------------------------------------------------------------------------

def _protected(cpu) -> bool:
    return bool(cpu.cr0 & 1) and not cpu.eflags & VM


def _stack32(cpu) -> bool:
    # The same rule the block compiler uses for PUSH/POP.
    return bool(cpu.seg_attr[SS_REG] & 0x4000) or cpu.flat


def _in_limit(offset: int, size: int, limit: int, attr: int) -> bool:
    """Whether bytes offset..offset+size-1 lie inside a data segment
    (expand-down segments hold limit+1 .. 0xFFFF or 0xFFFFFFFF)."""
    if attr & 0x1C == 0x14:                 # S=1, data, expand-down
        upper = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
        return offset > limit and offset + size - 1 <= upper
    return offset + size - 1 <= limit


def gate_fields(desc: sg.Descriptor) -> tuple[int, int, int]:
    """A call/task/interrupt gate's (selector, offset, parameter count)."""
    lo, hi = desc.raw & 0xFFFFFFFF, desc.raw >> 32
    offset = (lo & 0xFFFF) | (hi & 0xFFFF0000)
    if desc.type in (CALL_GATE16, 6, 7):    # 16-bit gates: 16-bit offset
        offset &= 0xFFFF
    return lo >> 16 & 0xFFFF, offset, hi & 0x1F


class _Stack:
    """Pushes and pops on one stack segment, staged: limits and pages are
    checked for all of them before any byte is written."""

    def __init__(self, cpu, base, limit, attr, esp, user, b32, checked, error_code=0):
        self.cpu, self.base, self.limit, self.attr = cpu, base, limit, attr
        self.user, self.b32, self.checked, self.error_code = user, b32, checked, error_code
        self.mask = 0xFFFFFFFF if b32 else 0xFFFF
        self.esp = esp
        self.sp = esp & self.mask
        self.items: list[tuple[int, int, int]] = []

    @classmethod
    def current(cls, cpu, error_code=0):
        return cls(cpu, cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG], cpu.seg_attr[SS_REG],
                   cpu.regs[ESP], cpu.cpl == 3, _stack32(cpu), _protected(cpu), error_code)

    def _check(self, offset: int, size: int) -> None:
        if self.checked and not _in_limit(offset, size, self.limit, self.attr):
            raise fault(SS, self.error_code)

    def push(self, size: int, value: int) -> None:
        self.sp = (self.sp - size) & self.mask
        self._check(self.sp, size)
        self.items.append((self.sp, size, value & ((1 << 8 * size) - 1)))

    def read(self, offset: int, size: int) -> int:
        """The value `offset` bytes above the current top (no pop)."""
        off = (self.sp + offset) & self.mask
        self._check(off, size)
        return self.cpu.read_linear((self.base + off) & 0xFFFFFFFF, size, self.user)

    def pop(self, size: int) -> int:
        value = self.read(0, size)
        self.sp = (self.sp + size) & self.mask
        return value

    def release(self, n: int) -> None:
        self.sp = (self.sp + n) & self.mask

    def probe(self) -> None:
        """Translate every page the staged pushes write (#PF before any write)."""
        for off, size, _ in self.items:
            lin = (self.base + off) & 0xFFFFFFFF
            self.cpu.translate(lin, True, self.user)
            last = (lin + size - 1) & 0xFFFFFFFF
            if last >> 12 != lin >> 12:
                self.cpu.translate(last, True, self.user)

    def commit(self) -> None:
        for off, size, value in self.items:
            self.cpu.write_linear((self.base + off) & 0xFFFFFFFF, size, value, self.user)
        self.cpu.regs[ESP] = self.new_esp()

    def new_esp(self) -> int:
        return self.sp if self.b32 else (self.esp & 0xFFFF0000) | self.sp


def _next_eip_of_block(cpu) -> int:
    """The EIP after the far transfer that ends the running block.

    cpu.far_jump / cpu.iret do not pass it on; while they are called the
    block has not moved cpu.eip off its first instruction, and the transfer
    is the block's last: decode forward to it.
    """
    from .decoder import decode
    from .instruction import F_BRANCH, F_STOP
    eip = cpu.eip
    mask = 0xFFFFFFFF if cpu.bits == 32 else 0xFFFF
    for _ in range(64):
        lin = (cpu.seg_base[CS] + eip) & 0xFFFFFFFF
        insn = decode(cpu.fetch(lin, 15), 0, cpu.bits)
        if not insn.ok:
            break
        eip = (eip + insn.length) & mask
        if insn.flags & (F_BRANCH | F_STOP) or insn.mnemonic in ("retf", "iret", "iretw"):
            return eip
    return cpu.eip


# -- real mode and V86 -------------------------------------------------------------------------

def _real_target(cpu, selector: int, offset: int) -> None:
    # In V86 mode CS is reloaded with limit 0xFFFF; real mode keeps the cached limit.
    limit = 0xFFFF if cpu.eflags & VM else cpu.seg_limit[CS]
    if offset > limit:
        raise fault(GP, 0)


def _real_jump(cpu, selector: int, offset: int) -> None:
    _real_target(cpu, selector, offset)
    sg.load_cs(cpu, selector, None, 3 if cpu.eflags & VM else 0)
    cpu.eip = offset


# -- checks on a code-segment target ------------------------------------------------------------

def descriptor_or(cpu, selector: int, vector: int, err: int) -> tuple[sg.Descriptor, int]:
    """read_descriptor, with a selector beyond its table's limit (or in a
    null LDT) reported as `vector`(err) instead of #GP (task switches and
    inner stacks raise #TS there)."""
    if selector & 4:
        outside = cpu.ldtr[0] & ~3 == 0 or (selector & ~7) + 7 > cpu.ldtr[2]
    else:
        outside = (selector & ~7) + 7 > cpu.gdtr[1]
    if outside:
        raise fault(vector, err)
    return sg.read_descriptor(cpu, selector, err)


def _read(cpu, selector: int) -> tuple[sg.Descriptor, int]:
    if selector & ~3 == 0:
        raise fault(GP, 0)
    return sg.read_descriptor(cpu, selector)


def _check_direct_code(cpu, selector: int, desc: sg.Descriptor) -> None:
    """JMP/CALL straight to a code segment (SDM JMP/CALL, 'code segment')."""
    err = selector & 0xFFFC
    rpl = selector & 3
    if not desc.is_code:
        raise fault(GP, err)
    if desc.conforming:
        if desc.dpl > cpu.cpl:
            raise fault(GP, err)
    elif rpl > cpu.cpl or desc.dpl != cpu.cpl:
        raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)


def _gate_target(cpu, gate: sg.Descriptor, gate_sel: int, jump: bool):
    """Checks on a call gate and the code segment it names; returns
    (code selector, code descriptor, its address, offset)."""
    gerr = gate_sel & 0xFFFC
    if gate.dpl < cpu.cpl or (gate_sel & 3) > gate.dpl:
        raise fault(GP, gerr)
    if not gate.present:
        raise fault(NP, gerr)
    csel, offset, _ = gate_fields(gate)
    if csel & ~3 == 0:
        raise fault(GP, 0)
    cdesc, caddr = sg.read_descriptor(cpu, csel)
    cerr = csel & 0xFFFC
    if not cdesc.is_code:
        raise fault(GP, cerr)
    if jump:
        # JMP never changes privilege: conforming DPL <= CPL, else DPL == CPL.
        if (cdesc.conforming and cdesc.dpl > cpu.cpl) or (not cdesc.conforming and cdesc.dpl != cpu.cpl):
            raise fault(GP, cerr)
    elif cdesc.dpl > cpu.cpl:
        raise fault(GP, cerr)
    if not cdesc.present:
        raise fault(NP, cerr)
    return csel, cdesc, caddr, offset


def _task_target(cpu, selector: int, desc: sg.Descriptor) -> tuple[int, sg.Descriptor, int]:
    """JMP/CALL to a TSS descriptor or through a task gate: the checks up to
    the switch; returns the TSS selector, descriptor and address."""
    err = selector & 0xFFFC
    if desc.dpl < cpu.cpl or (selector & 3) > desc.dpl:
        raise fault(GP, err)
    if desc.type == TASK_GATE:
        if not desc.present:
            raise fault(NP, err)
        selector, _, _ = gate_fields(desc)
        err = selector & 0xFFFC
        if selector & 4 or selector & ~3 == 0:
            raise fault(GP, err)
        desc, addr = sg.read_descriptor(cpu, selector)
        if desc.s or desc.type not in AVAILABLE_TSS:
            raise fault(GP, err)
    else:
        if selector & 4:
            raise fault(GP, err)
        desc, addr = sg.read_descriptor(cpu, selector)
        if desc.type not in AVAILABLE_TSS:          # busy: #GP(TSS selector)
            raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)
    return selector, desc, addr


# -- JMP far ---------------------------------------------------------------------------------

def far_jump(cpu, selector: int, offset: int, next_eip: int | None = None) -> None:
    selector &= 0xFFFF
    if not _protected(cpu):
        _real_jump(cpu, selector, offset)
        return
    desc, addr = _read(cpu, selector)
    err = selector & 0xFFFC
    if desc.s:
        _check_direct_code(cpu, selector, desc)
        if offset > desc.limit:
            raise fault(GP, 0)
        sg.set_accessed(cpu, addr, desc)
        sg.load_cs(cpu, selector, desc, cpu.cpl)
        cpu.eip = offset
        return
    if desc.type in (CALL_GATE16, CALL_GATE32):
        csel, cdesc, caddr, target = _gate_target(cpu, desc, selector, jump=True)
        if target > cdesc.limit:
            raise fault(GP, 0)
        sg.set_accessed(cpu, caddr, cdesc)
        sg.load_cs(cpu, csel, cdesc, cpu.cpl)
        cpu.eip = target
        return
    if desc.type in (TASK_GATE, TSS16_AVAIL, TSS32_AVAIL, TSS16_BUSY, TSS32_BUSY):
        tsel, tdesc, taddr = _task_target(cpu, selector, desc)
        if next_eip is None:
            next_eip = _next_eip_of_block(cpu)
        _switch_and_settle(cpu, tsel, tdesc, taddr, "jmp", next_eip, None, 0)
        return
    raise fault(GP, err)


# -- CALL far --------------------------------------------------------------------------------

def far_call(cpu, selector: int, offset: int, next_eip: int, size: int) -> None:
    selector &= 0xFFFF
    if not _protected(cpu):
        stack = _Stack.current(cpu)
        stack.push(size, cpu.seg_sel[CS])
        stack.push(size, next_eip)
        _real_target(cpu, selector, offset)
        stack.probe()
        stack.commit()
        sg.load_cs(cpu, selector, None, 3 if cpu.eflags & VM else 0)
        cpu.eip = offset
        return
    desc, addr = _read(cpu, selector)
    if desc.s:
        _check_direct_code(cpu, selector, desc)
        _call_same_level(cpu, size, next_eip, selector, desc, addr, offset)
        return
    if desc.type in (CALL_GATE16, CALL_GATE32):
        _call_gate(cpu, selector, desc, next_eip)
        return
    if desc.type in (TASK_GATE, TSS16_AVAIL, TSS32_AVAIL, TSS16_BUSY, TSS32_BUSY):
        tsel, tdesc, taddr = _task_target(cpu, selector, desc)
        _switch_and_settle(cpu, tsel, tdesc, taddr, "call", next_eip, None, 0)
        return
    raise fault(GP, selector & 0xFFFC)


def tss_stack(cpu, cpl: int, ext: int = 0) -> tuple[int, int]:
    """The SS:ESP for privilege level `cpl` from the current TSS (SDM 5.8.5);
    #TS(TSS selector) when the TSS is too short to hold them."""
    tsel, tbase, tlimit, tattr = cpu.tr
    if tattr & 0xF in (TSS32_AVAIL, TSS32_BUSY):
        at = 4 + 8 * cpl
        if at + 5 > tlimit:
            raise fault(TS, (tsel & 0xFFFC) | ext)
        esp = cpu.read_system((tbase + at) & 0xFFFFFFFF, 4)
        ss = cpu.read_system((tbase + at + 4) & 0xFFFFFFFF, 2)
    else:
        at = 2 + 4 * cpl
        if at + 3 > tlimit:
            raise fault(TS, (tsel & 0xFFFC) | ext)
        esp = cpu.read_system((tbase + at) & 0xFFFFFFFF, 2)
        ss = cpu.read_system((tbase + at + 2) & 0xFFFFFFFF, 2)
    return ss, esp


def check_inner_stack(cpu, ss: int, cpl: int, ext: int = 0) -> tuple[sg.Descriptor, int]:
    """The checks on a stack segment taken from the TSS for a move to a
    more privileged level (CALL through a gate, interrupts): #TS(SS) for a
    bad selector or descriptor, #SS(SS) when not present."""
    if ss & ~3 == 0:
        raise fault(TS, ext)
    err = (ss & 0xFFFC) | ext
    desc, addr = descriptor_or(cpu, ss, TS, err)
    if (ss & 3) != cpl or desc.dpl != cpl or not desc.writable:
        raise fault(TS, err)
    if not desc.present:
        raise fault(SS, err)
    return desc, addr


def _call_gate(cpu, selector: int, gate: sg.Descriptor, next_eip: int) -> None:
    csel, cdesc, caddr, target = _gate_target(cpu, gate, selector, jump=False)
    gsize = 4 if gate.type == CALL_GATE32 else 2
    _, _, count = gate_fields(gate)
    if not cdesc.conforming and cdesc.dpl < cpu.cpl:
        # MORE-PRIVILEGE: the stack for the new level comes from the TSS.
        new_cpl = cdesc.dpl
        ss, esp = tss_stack(cpu, new_cpl)
        ssdesc, ssaddr = check_inner_stack(cpu, ss, new_cpl)
        ss_err = ss & 0xFFFC
        old = _Stack.current(cpu)
        params = [old.read(i * gsize, gsize) for i in range(count)]
        new = _Stack(cpu, ssdesc.base, ssdesc.limit, ssdesc.attr | 1, esp, new_cpl == 3,
                     ssdesc.db, True, ss_err)
        new.push(gsize, cpu.seg_sel[SS_REG])
        new.push(gsize, cpu.regs[ESP])
        for value in reversed(params):
            new.push(gsize, value)
        new.push(gsize, cpu.seg_sel[CS])
        new.push(gsize, next_eip)
        if target > cdesc.limit:
            raise fault(GP, 0)
        new.probe()
        # Commit.
        sg.set_accessed(cpu, ssaddr, ssdesc)
        sg.set_accessed(cpu, caddr, cdesc)
        new.commit()
        cpu.seg_sel[SS_REG] = (ss & ~3) | new_cpl
        cpu.seg_base[SS_REG] = ssdesc.base
        cpu.seg_limit[SS_REG] = ssdesc.limit
        cpu.seg_attr[SS_REG] = ssdesc.attr | 1
        sg.load_cs(cpu, csel, cdesc, new_cpl)
        cpu.eip = target
        return
    # SAME-PRIVILEGE (a conforming segment, or one at the CPL).
    _call_same_level(cpu, gsize, next_eip, csel, cdesc, caddr, target)


def _call_same_level(cpu, size, next_eip, selector, desc, addr, target) -> None:
    """Push CS:EIP on the current stack and enter `desc` at the CPL; every
    check (stack room, the target within the limit) before anything changes."""
    stack = _Stack.current(cpu)
    stack.push(size, cpu.seg_sel[CS])
    stack.push(size, next_eip)
    if target > desc.limit:
        raise fault(GP, 0)
    stack.probe()
    sg.set_accessed(cpu, addr, desc)
    stack.commit()
    sg.load_cs(cpu, selector, desc, cpu.cpl)
    cpu.eip = target


# -- RET far ---------------------------------------------------------------------------------

def far_ret(cpu, size: int, release: int) -> None:
    stack = _Stack.current(cpu)
    eip = stack.read(0, size)
    selector = stack.read(size, size) & 0xFFFF
    if not _protected(cpu):
        _real_target(cpu, selector, eip)
        stack.release(2 * size + release)
        cpu.regs[ESP] = stack.new_esp()
        sg.load_cs(cpu, selector, None, 3 if cpu.eflags & VM else 0)
        cpu.eip = eip
        return
    if selector & ~3 == 0:
        raise fault(GP, 0)
    err = selector & 0xFFFC
    rpl = selector & 3
    desc, addr = sg.read_descriptor(cpu, selector)
    if rpl < cpu.cpl:
        raise fault(GP, err)
    if not desc.is_code:
        raise fault(GP, err)
    if desc.conforming:
        if desc.dpl > rpl:
            raise fault(GP, err)
    elif desc.dpl != rpl:
        raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)
    if rpl == cpu.cpl:
        if eip > desc.limit:
            raise fault(GP, 0)
        stack.release(2 * size + release)
        sg.set_accessed(cpu, addr, desc)
        cpu.regs[ESP] = stack.new_esp()
        sg.load_cs(cpu, selector, desc, rpl)
        cpu.eip = eip
        return
    # RETURN-TO-OUTER-PRIVILEGE-LEVEL.
    stack.release(2 * size + release)
    new_esp = stack.read(0, size)
    ss = stack.read(size, size) & 0xFFFF
    if ss & ~3 == 0:
        raise fault(GP, 0)
    ss_err = ss & 0xFFFC
    ssdesc, ssaddr = sg.read_descriptor(cpu, ss)
    if (ss & 3) != rpl or not ssdesc.writable or ssdesc.dpl != rpl:
        raise fault(GP, ss_err)
    if not ssdesc.present:
        raise fault(SS, ss_err)
    if eip > desc.limit:
        raise fault(GP, 0)
    # Commit.
    sg.set_accessed(cpu, addr, desc)
    sg.set_accessed(cpu, ssaddr, ssdesc)
    sg.load_cs(cpu, selector, desc, rpl)
    cpu.eip = eip
    cpu.seg_sel[SS_REG] = ss
    cpu.seg_base[SS_REG] = ssdesc.base
    cpu.seg_limit[SS_REG] = ssdesc.limit
    cpu.seg_attr[SS_REG] = ssdesc.attr | 1
    if ssdesc.db:
        cpu.regs[ESP] = (new_esp + release) & 0xFFFFFFFF
    else:
        cpu.regs[ESP] = (cpu.regs[ESP] & 0xFFFF0000) | ((new_esp + release) & 0xFFFF)
    null_outer_segments(cpu)
    cpu.mode_changed()


def null_outer_segments(cpu) -> None:
    """After a return to an outer level (RET far, IRET): ES, DS, FS, GS that
    hold data or non-conforming code segments more privileged than the new
    CPL are loaded with the null selector (SDM RET, IRET)."""
    for seg in (ES, DS, FS, GS):
        attr = cpu.seg_attr[seg]
        if not attr & 0x10:                      # null/unusable or system: nothing to do
            continue
        conforming_code = attr & 0xC == 0xC
        if not conforming_code and (attr >> 5 & 3) < cpu.cpl:
            cpu.seg_sel[seg] = 0
            cpu.seg_base[seg] = 0
            cpu.seg_limit[seg] = 0
            cpu.seg_attr[seg] = 0


# -- hardware task switching (SDM Vol. 3 ch. 7) -----------------------------------------------

def _set_busy(cpu, addr: int, busy: bool) -> None:
    byte = cpu.read_system(addr + 5, 1)
    cpu.write_system(addr + 5, 1, (byte | 2) if busy else (byte & ~2))


def _layout(attr_or_type: int) -> dict:
    return TSS32 if attr_or_type & 8 else TSS16


def task_switch_via_gate(cpu, selector: int, source: str, *, next_eip: int | None = None,
                         error_code: int | None = None, ext: bool = False) -> None:
    """See the module docstring.  Checks (raising before any change):
    the TSS selector must name the GDT, an available TSS, present."""
    ext_bit = 1 if ext else 0
    selector &= 0xFFFF
    desc, addr = sg.read_descriptor(cpu, selector, (selector & 0xFFFC) | ext_bit)
    if not desc.s and desc.type == TASK_GATE:
        if not desc.present:
            raise fault(NP, (selector & 0xFFFC) | ext_bit)
        selector, _, _ = gate_fields(desc)
        desc = None
    err = (selector & 0xFFFC) | ext_bit
    if desc is None:
        if selector & 4 or selector & ~3 == 0:
            raise fault(GP, err)
        desc, addr = sg.read_descriptor(cpu, selector, err)
    if selector & 4 or desc.s or desc.type not in AVAILABLE_TSS:
        raise fault(GP, err)
    if not desc.present:
        raise fault(NP, err)
    if next_eip is None:
        next_eip = cpu.eip
    _switch_and_settle(cpu, selector, desc, addr, source, next_eip, error_code, ext_bit)


def task_return(cpu, next_eip: int | None = None) -> None:
    """IRET with NT set: back to the task in the current TSS's link field.
    #TS(link) for a link that is not a busy TSS in the GDT, #NP(link) when
    that TSS is not present."""
    tsel, tbase, tlimit, tattr = cpu.tr
    link = cpu.read_system(tbase, 2)
    err = link & 0xFFFC
    if link & 4 or link & ~3 == 0:
        raise fault(TS, err)
    desc, addr = descriptor_or(cpu, link, TS, err)
    if desc.s or desc.type not in BUSY_TSS:
        raise fault(TS, err)
    if not desc.present:
        raise fault(NP, err)
    if next_eip is None:
        next_eip = _next_eip_of_block(cpu)
    _switch_and_settle(cpu, link, desc, addr, "iret", next_eip, None, 0)


def _switch_and_settle(cpu, selector, desc, addr, source, next_eip, error_code, ext) -> None:
    exc = switch_task(cpu, selector, desc, addr, source, next_eip, error_code, ext)
    if exc is not None:
        # A fault in the new task's context: deliver it from its state.
        if not cpu.raise_exception(exc):
            exc.in_new_task = True
            raise exc


def switch_task(cpu, selector, desc, addr, source, next_eip, error_code=None, ext=0):
    """Steps 3-14 of SDM 7.3 once the target TSS passed its checks.
    Raises before the commit point; returns the CPUException met after it
    (new task's context), or None."""
    new_layout = _layout(desc.type)
    err = (selector & 0xFFFC) | ext
    if desc.limit < new_layout["min_limit"]:
        raise fault(TS, err)
    old_sel, old_base, old_limit, old_attr = cpu.tr
    old_layout = _layout(old_attr)
    if old_sel & ~3 == 0 or old_limit < old_layout["min_limit"]:
        raise fault(TS, (old_sel & 0xFFFC) | ext)
    nb = desc.base

    # Read the whole new TSS first: a #PF here leaves everything untouched.
    def rd(off, size):
        return cpu.read_system((nb + off) & 0xFFFFFFFF, size)

    w = 4 if new_layout is TSS32 else 2
    new_eip = rd(new_layout["eip"], w)
    new_eflags = rd(new_layout["eflags"], w)
    new_regs = [rd(new_layout["regs"] + w * i, w) for i in range(8)]
    nseg = 6 if new_layout is TSS32 else 4
    new_segs = [rd(new_layout["segs"] + (4 if w == 4 else 2) * i, 2) for i in range(nseg)]
    new_ldt = rd(new_layout["ldt"], 2)
    new_cr3 = rd(new_layout["cr3"], 4) if new_layout is TSS32 else None
    # Probe the writes: the old TSS's dynamic fields, both descriptors' busy
    # bytes, the new TSS's back link.
    ob = old_base
    ow = 4 if old_layout is TSS32 else 2
    for off in (old_layout["eip"], old_layout["segs"] + (4 * 6 if ow == 4 else 2 * 4) - 1):
        cpu.translate((ob + off) & 0xFFFFFFFF, True, False)
    old_desc_addr = None
    if source in ("jmp", "iret"):
        _, old_desc_addr = sg.read_descriptor(cpu, old_sel, (old_sel & 0xFFFC) | ext)
        cpu.translate(old_desc_addr + 5, True, False)
    if source in ("jmp", "call", "int"):
        cpu.translate(addr + 5, True, False)
    if source in ("call", "int"):
        cpu.translate(nb & 0xFFFFFFFF, True, False)

    # -- commit: save the old task --------------------------------------------------------
    eflags = cpu.get_eflags()
    if source == "iret":
        eflags &= ~NT
    if old_desc_addr is not None:
        _set_busy(cpu, old_desc_addr, False)

    def wr(off, size, value):
        cpu.write_system((ob + off) & 0xFFFFFFFF, size, value & ((1 << 8 * size) - 1))

    wr(old_layout["eip"], ow, next_eip)
    wr(old_layout["eflags"], ow, eflags)
    for i in range(8):
        wr(old_layout["regs"] + ow * i, ow, cpu.regs[i])
    for i in range(6 if ow == 4 else 4):
        wr(old_layout["segs"] + (4 if ow == 4 else 2) * i, 2, cpu.seg_sel[i])

    # -- the new task ---------------------------------------------------------------------
    if source in ("call", "int"):
        new_eflags |= NT
        cpu.write_system(nb & 0xFFFFFFFF, 2, old_sel)
    if source in ("jmp", "call", "int"):
        _set_busy(cpu, addr, True)
    tss_type = desc.type | 2
    attr = (desc.attr & ~0xF) | tss_type
    cpu.tr = (selector, desc.base, desc.limit, attr)
    cpu.cr0 |= 0x8                                   # CR0.TS
    cpu.dr[7] &= ~0x55                               # local breakpoint enables
    if new_cr3 is not None and cpu.cr0 & 0x80000000:
        cpu.write_cr(3, new_cr3)
    if w == 4:
        cpu.regs[:] = [v & 0xFFFFFFFF for v in new_regs]
        cpu.set_eflags(new_eflags)
    else:
        cpu.regs[:] = [(cpu.regs[i] & 0xFFFF0000) | v for i, v in enumerate(new_regs)]
        cpu.set_eflags((cpu.get_eflags() & 0xFFFF0000 & ~VM) | new_eflags)
        new_eip &= 0xFFFF
    cpu.eip = new_eip
    # Selectors first, descriptors after: a fault below leaves the new
    # selectors visible in the new task (SDM 7.3 step 13).
    for i, s in enumerate(new_segs):
        cpu.seg_sel[i] = s
    cpu.ldtr = (new_ldt, 0, 0, 0)
    try:
        _load_task_segments(cpu, new_segs, new_ldt, ext)
        if error_code is not None:
            stack = _Stack.current(cpu)
            stack.push(w, error_code)
            stack.probe()
            stack.commit()
        if cpu.eip > cpu.seg_limit[CS]:
            raise fault(GP, ext)
    except CPUException as exc:
        cpu.mode_changed()
        return exc
    cpu.mode_changed()
    return None


def _load_task_segments(cpu, segs, ldt, ext) -> None:
    # LDTR (Table 7-1, 5).
    if ldt & ~3:
        err = (ldt & 0xFFFC) | ext
        if ldt & 4:
            raise fault(TS, err)
        d, _ = descriptor_or(cpu, ldt, TS, err)
        if d.s or d.type != LDT_TYPE or not d.present:
            raise fault(TS, err)
        cpu.ldtr = (ldt, d.base, d.limit, d.attr)
    if cpu.eflags & VM:
        for i, s in enumerate(segs):
            cpu.seg_sel[i] = s
            cpu.seg_base[i] = s << 4
            cpu.seg_limit[i] = 0xFFFF
            cpu.seg_attr[i] = 0xF3 if i != CS else 0xFB
        sg.load_cs(cpu, segs[CS], None, 3)
        return
    # CS (6): its RPL is the new CPL.
    cs = segs[CS]
    cpl = cs & 3
    err = (cs & 0xFFFC) | ext
    if cs & ~3 == 0:
        raise fault(TS, err)
    d, a = descriptor_or(cpu, cs, TS, err)
    if not d.is_code or (d.conforming and d.dpl > cpl) or (not d.conforming and d.dpl != cpl):
        raise fault(TS, err)
    if not d.present:
        raise fault(NP, err)
    sg.set_accessed(cpu, a, d)
    sg.load_cs(cpu, cs, d, cpl)
    # SS (7-10).
    ss = segs[SS_REG]
    err = (ss & 0xFFFC) | ext
    if ss & ~3 == 0:
        raise fault(TS, err)
    d, a = descriptor_or(cpu, ss, TS, err)
    if (ss & 3) != cpl or d.dpl != cpl or not d.writable:
        raise fault(TS, err)
    if not d.present:
        raise fault(SS, err)
    sg.set_accessed(cpu, a, d)
    cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG], cpu.seg_attr[SS_REG] = d.base, d.limit, d.attr | 1
    # DS ES FS GS (11-14).
    for seg in (DS, ES, FS, GS):
        if seg >= len(segs):
            continue
        s = segs[seg]
        if s & ~3 == 0:
            cpu.seg_base[seg] = cpu.seg_limit[seg] = cpu.seg_attr[seg] = 0
            continue
        err = (s & 0xFFFC) | ext
        d, a = descriptor_or(cpu, s, TS, err)
        if not d.s or not d.readable or (not d.conforming and (d.dpl < cpl or d.dpl < (s & 3))):
            raise fault(TS, err)
        if not d.present:
            raise fault(NP, err)
        sg.set_accessed(cpu, a, d)
        cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = d.base, d.limit, d.attr | 1
