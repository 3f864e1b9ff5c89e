"""An executable reference model of interrupt and exception delivery.

Written straight from the Intel SDM pseudo-code (Vol. 2 "INT n/INTO/INT3/
INT1 - Call to Interrupt Procedure"; Vol. 3 ch. 6: Table 6-5 for double
faults, 6.13 for error codes; 17.3.1.1 for RF in the pushed image), slow
and plain, on an immutable description of the machine (`MachineState`).
It shares no code with interrupts.py (nor with segmentation.py or the
CPU): descriptors are decoded here from their bytes, the page walk is done
here from a page map, memory is read byte by byte.

    outcome = deliver(state, event)

returns one of
- Delivered: the frame and other memory writes in the order made, the new
  segment registers, EIP, ESP, EFLAGS, CPL, and CR2 if a page fault was met;
- TaskSwitch: the event reached a present task gate (the switch itself is
  transfers.py's business and is not modelled here);
- Shutdown: a fault while delivering a double fault.

Conventions the fast path shares (they are definitions, not SDM text):
- a stack slot is inside its segment when all its bytes are (expand-down:
  above the limit, up to 0xFFFF or 0xFFFFFFFF by the B flag); stack offsets
  wrap at 16 bits when the stack segment's B flag is clear;
- segment selectors are pushed zero-extended into 4-byte slots;
- loading CS or SS from a descriptor whose accessed bit is clear sets it
  (one byte written at descriptor + 5, after the frame: frame pages are
  checked first, then the SS descriptor, then the CS descriptor);
- pages: the state's page map is an identity map (physical = linear), so
  one page directory entry's flags and one flags word per mapped page
  describe it; physical memory beyond `MachineState.memory_size` reads as
  0xFF and ignores writes;
- when an INT n/INT3/INTO fails to deliver, the fault's saved EIP is the
  instruction's own address (Event.fault_eip); for other events it is the
  address the event itself would have pushed.
"""
from __future__ import annotations

from typing import Optional

import attrs

# EFLAGS bits.
CF, TF, IF, DF_FLAG, NT, RF, VM, AC = 0x1, 0x100, 0x200, 0x400, 0x4000, 0x10000, 0x20000, 0x40000

# Vectors.
V_DE, V_DB, V_DF, V_TS, V_NP, V_SS, V_GP, V_PF, V_MC = 0, 1, 8, 10, 11, 12, 13, 14, 18
CONTRIBUTORY = (V_DE, V_TS, V_NP, V_SS, V_GP)

ES, CS, SS, DS, FS, GS = range(6)


# -- the machine description ------------------------------------------------------------------

@attrs.frozen
class Seg:
    """A segment register (or LDTR, TR): selector and hidden cache.
    attr = access byte | flags nibble (G D/B 0 AVL) << 12."""
    selector: int
    base: int = 0
    limit: int = 0xFFFF
    attr: int = 0


@attrs.frozen
class Table:
    """Bytes at a linear address; `limit` as the table register holds it."""
    base: int
    limit: int
    data: bytes


@attrs.frozen
class Paging:
    """An identity map: linear page n is physical page n where mapped.
    pde: flags of page-directory entry 0 (linear 0-4 MiB; higher entries
    are not present).  pte: (page number, flags) for each mapped page.
    Flags: P = 1, R/W = 2, U/S = 4.  wp: CR0.WP."""
    pde: int
    pte: tuple[tuple[int, int], ...]
    wp: bool = True


@attrs.frozen
class Event:
    """What is delivered.  kind: "fault", "trap", "interrupt" (external,
    through INTR), "software" (INT n, INT3, INTO).  return_eip: the EIP
    the frame saves; fault_eip: the EIP a fault raised while delivering it
    saves (the INT instruction's own address for software interrupts).
    one_byte: INT3 or INTO (not IOPL-sensitive in virtual-8086 mode)."""
    kind: str
    vector: int
    error_code: Optional[int] = None
    return_eip: int = 0
    fault_eip: int = 0
    one_byte: bool = False


@attrs.frozen
class MachineState:
    """Everything delivery can look at.  `memory` is loaded first, then the
    LDT, TSS, GDT and IDT bytes (a later one wins where they overlap)."""
    pe: bool
    cpl: int
    eflags: int
    eip: int
    regs: tuple[int, ...]
    segs: tuple[Seg, ...]           # ES CS SS DS FS GS
    gdt: Table
    idt: Table
    ldtr: Seg = Seg(0, 0, 0, 0)
    ldt: bytes = b""                # at ldtr.base
    tr: Seg = Seg(0, 0, 0xFFFF, 0x8B)
    tss: bytes = b""                # at tr.base
    paging: Optional[Paging] = None
    memory: tuple[tuple[int, bytes], ...] = ()
    memory_size: int = 1 << 20
    cr2: int = 0

    def regions(self) -> list[tuple[int, bytes]]:
        out = list(self.memory)
        if self.ldt:
            out.append((self.ldtr.base, self.ldt))
        if self.tss:
            out.append((self.tr.base, self.tss))
        out.append((self.gdt.base, self.gdt.data))
        out.append((self.idt.base, self.idt.data))
        return out

    def phys_byte(self, addr: int) -> int:
        if addr >= self.memory_size:
            return 0xFF
        for base, data in reversed(self.regions()):
            if base <= addr < base + len(data):
                return data[addr - base]
        return 0


# -- outcomes --------------------------------------------------------------------------------

@attrs.frozen
class Delivered:
    vector: int
    kind: str
    error_code: Optional[int]                   # pushed; None when none is
    writes: tuple[tuple[int, int, int], ...]    # (linear, size, value) in order
    segs: tuple[Seg, ...]                       # ES CS SS DS FS GS after delivery
    eip: int
    esp: int
    eflags: int
    cpl: int
    cr2: Optional[int]                          # the last page-fault address met, if any


@attrs.frozen
class TaskSwitch:
    vector: int
    tss_selector: int
    error_code: Optional[int]
    ext: int
    cr2: Optional[int]


@attrs.frozen
class Shutdown:
    reason: str


class Fault(Exception):
    def __init__(self, vector: int, error_code: int = 0):
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code


# -- the model -------------------------------------------------------------------------------

def deliver(state: MachineState, event: Event):
    """Deliver `event` in `state`; a fault on the way becomes the next event
    (or #DF, or shutdown) per SDM Table 6-5, delivered from the same state."""
    cr2 = None
    while True:
        run = _Delivery(state)
        try:
            out = run.deliver(event)
        except Fault as second:
            cr2 = run.cr2 if run.cr2 is not None else cr2
            first_is_exception = event.kind in ("fault", "trap")
            if first_is_exception and event.vector == V_DF:
                return Shutdown(f"vector {second.vector} while delivering #DF")
            first_class = _class(event.vector) if first_is_exception else "benign"
            second_class = _class(second.vector)
            if (first_class == "contributory" and second_class == "contributory") or \
                    (first_class == "page fault" and second_class in ("contributory", "page fault")):
                vector, code = V_DF, 0
            else:
                vector, code = second.vector, second.error_code
            eip = event.fault_eip
            event = Event("fault", vector, code, eip, eip)
            continue
        if isinstance(out, TaskSwitch):
            return attrs.evolve(out, cr2=cr2 if run.cr2 is None else run.cr2)
        return attrs.evolve(out, cr2=cr2)


def _class(vector: int) -> str:
    if vector in CONTRIBUTORY:
        return "contributory"
    if vector == V_PF:
        return "page fault"
    if vector == V_DF:
        return "double fault"
    return "benign"


def _error_code(selector: int, idt: int, ext: int) -> int:
    """SDM 6.13: selector index and TI, the IDT bit, the EXT bit."""
    return (selector & 0xFFFC) | (2 if idt else 0) | ext


@attrs.frozen
class _Desc:
    """A descriptor decoded from its 8 bytes (SDM Vol. 3 3.4.5, 6.11)."""
    lo: int
    hi: int

    @property
    def base(self):
        return (self.lo >> 16) | ((self.hi & 0xFF) << 16) | (self.hi & 0xFF000000)

    @property
    def limit(self):
        raw = (self.lo & 0xFFFF) | (self.hi & 0xF0000)
        return (raw << 12) | 0xFFF if self.hi & (1 << 23) else raw

    @property
    def type(self):
        return self.hi >> 8 & 0xF

    @property
    def s(self):
        return bool(self.hi & (1 << 12))

    @property
    def dpl(self):
        return self.hi >> 13 & 3

    @property
    def present(self):
        return bool(self.hi & (1 << 15))

    @property
    def big(self):
        return bool(self.hi & (1 << 22))

    @property
    def is_code(self):
        return self.s and bool(self.type & 8)

    @property
    def conforming(self):
        return self.is_code and bool(self.type & 4)

    @property
    def writable_data(self):
        return self.s and not self.type & 8 and bool(self.type & 2)

    @property
    def accessed(self):
        return bool(self.type & 1)

    @property
    def cache_attr(self):
        return (self.hi >> 8 & 0xFF) | ((self.hi >> 20 & 0xF) << 12)

    # gate fields
    @property
    def gate_selector(self):
        return self.lo >> 16

    @property
    def gate_offset(self):
        return (self.lo & 0xFFFF) | (self.hi & 0xFFFF0000)


class _Delivery:
    """One attempt at delivering one event: reads only; the outcome lists
    the writes.  A Fault leaves nothing behind but cr2."""

    def __init__(self, state: MachineState):
        self.s = state
        self.cr2 = None
        self.pde = state.paging.pde if state.paging else 0
        self.pte = dict(state.paging.pte) if state.paging else {}

    # -- memory --------------------------------------------------------------------------------
    def translate(self, lin: int, write: bool, user: bool) -> int:
        """SDM Vol. 3 4.3 (32-bit paging, 4-KiB pages, identity map)."""
        lin &= 0xFFFFFFFF
        p = self.s.paging
        if p is None:
            return lin
        code = (2 if write else 0) | (4 if user else 0)
        pde = self.pde if lin >> 22 == 0 else 0
        if not pde & 1:
            self.page_fault(lin, code)
        pte = self.pte.get(lin >> 12, 0)
        if not pte & 1:
            self.page_fault(lin, code)
        rights = pde & pte
        if user and not rights & 4:
            self.page_fault(lin, code | 1)
        if write and not rights & 2 and (user or p.wp):
            self.page_fault(lin, code | 1)
        return lin

    def page_fault(self, lin: int, code: int):
        self.cr2 = lin
        raise Fault(V_PF, code)

    def read(self, lin: int, size: int, user: bool = False) -> int:
        value = 0
        for i in range(size):
            phys = self.translate(lin + i, False, user)
            value |= self.s.phys_byte(phys) << (8 * i)
        return value

    def check_write(self, lin: int, size: int, user: bool) -> None:
        for i in range(size):
            self.translate(lin + i, True, user)

    # -- tables ----------------------------------------------------------------------------------
    def descriptor(self, selector: int) -> Optional[tuple[_Desc, int]]:
        """The descriptor a selector names and its address; None beyond the
        table limit (an LDT reference with a null LDTR has no table)."""
        if selector & 4:
            if self.s.ldtr.selector & 0xFFFC == 0:
                return None
            base, limit = self.s.ldtr.base, self.s.ldtr.limit
        else:
            base, limit = self.s.gdt.base, self.s.gdt.limit
        index = selector >> 3
        if index * 8 + 7 > limit:
            return None
        addr = (base + index * 8) & 0xFFFFFFFF
        return _Desc(self.read(addr, 4), self.read(addr + 4, 4)), addr

    # -- stacks ------------------------------------------------------------------------------------
    @staticmethod
    def in_segment(offset: int, size: int, limit: int, attr: int) -> bool:
        expand_down = attr & 0x10 and not attr & 0x8 and attr & 0x4
        for i in range(size):
            o = offset + i
            if expand_down:
                top = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
                if not (limit < o <= top):
                    return False
            elif o > limit:
                return False
        return True

    def pushes(self, seg: Seg, esp: int, slot: int, values: list[int], error: int):
        """Push `values` in order on stack `seg` (SDM "room for N bytes"):
        returns the writes and the new ESP, or #SS(error)."""
        wide = bool(seg.attr & 0x4000)
        writes = []
        sp = esp
        for v in values:
            sp = (sp - slot) % (1 << 32 if wide else 1 << 16)
            if not self.in_segment(sp, slot, seg.limit, seg.attr):
                raise Fault(V_SS, error)
            writes.append(((seg.base + sp) & 0xFFFFFFFF, slot, v % (1 << (8 * slot))))
        new_esp = sp if wide else (esp & 0xFFFF0000) | sp
        return writes, new_esp

    # -- INT n pseudo-code ---------------------------------------------------------------------------
    def deliver(self, ev: Event):
        s = self.s
        if not s.pe:
            return self.real_mode(ev)
        ext = 0 if ev.kind == "software" else 1
        # IF (EFLAGS.VM = 1 and CR4.VME = 0 and EFLAGS.IOPL < 3 and INT n) THEN #GP(0)
        if ev.kind == "software" and s.eflags & VM and (s.eflags >> 12 & 3) < 3 and not ev.one_byte:
            raise Fault(V_GP, 0)
        # IF ((vector_number << 3) + 7) is not within IDT limit ...
        if (ev.vector << 3) + 7 > s.idt.limit:
            raise Fault(V_GP, _error_code(ev.vector << 3, 1, ext))
        gate = _Desc(self.read(s.idt.base + ev.vector * 8, 4),
                     self.read(s.idt.base + ev.vector * 8 + 4, 4))
        # ... or selected IDT descriptor is not an interrupt-, trap-, or task-gate type
        if gate.s or gate.type not in (5, 6, 7, 14, 15):
            raise Fault(V_GP, _error_code(ev.vector << 3, 1, ext))
        # IF software interrupt (* Generated by INT n, INT3, or INTO; does not apply to INT1 *)
        if ev.kind == "software" and s.cpl > gate.dpl:
            raise Fault(V_GP, _error_code(ev.vector << 3, 1, 0))
        if not gate.present:
            raise Fault(V_NP, _error_code(ev.vector << 3, 1, ext))
        has_error = ev.error_code is not None and ev.kind in ("fault", "trap")
        if gate.type == 5:
            return TaskSwitch(ev.vector, gate.gate_selector, ev.error_code if has_error else None,
                              ext, None)
        return self.trap_or_interrupt_gate(ev, gate, ext, has_error)

    def trap_or_interrupt_gate(self, ev: Event, gate: _Desc, ext: int, has_error: bool):
        s = self.s
        sel = gate.gate_selector
        if sel & 0xFFFC == 0 and not sel & 4:
            raise Fault(V_GP, ext)
        found = self.descriptor(sel)
        if found is None:
            raise Fault(V_GP, _error_code(sel, 0, ext))
        code, code_addr = found
        if not code.is_code or code.dpl > s.cpl:
            raise Fault(V_GP, _error_code(sel, 0, ext))
        if not code.present:
            raise Fault(V_NP, _error_code(sel, 0, ext))
        if not code.conforming and code.dpl < s.cpl:
            if s.eflags & VM:
                if code.dpl != 0:
                    raise Fault(V_GP, _error_code(sel, 0, ext))
                return self.inter_privilege(ev, gate, code, code_addr, ext, has_error, v86=True)
            return self.inter_privilege(ev, gate, code, code_addr, ext, has_error, v86=False)
        if s.eflags & VM:
            raise Fault(V_GP, _error_code(sel, 0, ext))
        return self.intra_privilege(ev, gate, code, code_addr, ext, has_error)

    def eflags_image(self, ev: Event) -> int:
        """SDM 17.3.1.1: RF pushed as 1 for fault-class exceptions (not #DB),
        as 0 for software interrupts, as it is otherwise."""
        image = self.s.eflags
        if ev.kind == "fault" and ev.vector not in (V_DB, V_DF, V_MC):
            image |= RF
        if ev.kind == "software":
            image &= ~RF
        return image

    def new_eflags(self, gate: _Desc) -> int:
        flags = self.s.eflags & ~(TF | VM | RF | NT)
        if gate.type in (6, 14):             # interrupt gate
            flags &= ~IF
        return flags

    def inter_privilege(self, ev, gate, code, code_addr, ext, has_error, v86):
        s = self.s
        new_cpl = code.dpl
        tss_32 = bool(s.tr.attr & 8)
        if tss_32:
            at = (new_cpl << 3) + 4
            if at + 5 > s.tr.limit:
                raise Fault(V_TS, _error_code(s.tr.selector, 0, ext))
            new_ss = self.read(s.tr.base + at + 4, 2)
            new_esp = self.read(s.tr.base + at, 4)
        else:
            at = (new_cpl << 2) + 2
            if at + 3 > s.tr.limit:
                raise Fault(V_TS, _error_code(s.tr.selector, 0, ext))
            new_ss = self.read(s.tr.base + at + 2, 2)
            new_esp = self.read(s.tr.base + at, 2)
        if new_ss & 0xFFFC == 0 and not new_ss & 4:
            raise Fault(V_TS, ext)
        if new_ss & 3 != new_cpl:
            raise Fault(V_TS, _error_code(new_ss, 0, ext))
        found = self.descriptor(new_ss)
        if found is None:
            raise Fault(V_TS, _error_code(new_ss, 0, ext))
        stack, stack_addr = found
        if stack.dpl != new_cpl or not stack.writable_data:
            raise Fault(V_TS, _error_code(new_ss, 0, ext))
        if not stack.present:
            raise Fault(V_SS, _error_code(new_ss, 0, ext))
        slot = 4 if gate.type & 8 else 2
        values = []
        if v86:
            values += [s.segs[GS].selector, s.segs[FS].selector, s.segs[DS].selector,
                       s.segs[ES].selector]
        values += [s.segs[SS].selector, s.regs[4], self.eflags_image(ev), s.segs[CS].selector,
                   ev.return_eip]
        if has_error:
            values.append(ev.error_code)
        ss_seg = Seg(new_ss, stack.base, stack.limit, stack.cache_attr | 1)
        writes, esp = self.pushes(ss_seg, new_esp, slot, values, _error_code(new_ss, 0, ext))
        eip = gate.gate_offset if slot == 4 else gate.gate_offset & 0xFFFF
        if eip > code.limit:
            raise Fault(V_GP, ext)
        for lin, size, _ in writes:
            self.check_write(lin, size, user=new_cpl == 3)
        writes += self.accessed_writes(stack, stack_addr)
        writes += self.accessed_writes(code, code_addr)
        segs = list(s.segs)
        segs[SS] = ss_seg
        segs[CS] = Seg((gate.gate_selector & 0xFFFC) | new_cpl, code.base, code.limit,
                       code.cache_attr | 1)
        if v86:
            for r in (ES, DS, FS, GS):
                segs[r] = Seg(0, 0, 0, 0)
        return Delivered(ev.vector, ev.kind, ev.error_code if has_error else None, tuple(writes),
                         tuple(segs), eip, esp, self.new_eflags(gate), new_cpl, None)

    def intra_privilege(self, ev, gate, code, code_addr, ext, has_error):
        s = self.s
        slot = 4 if gate.type & 8 else 2
        values = [self.eflags_image(ev), s.segs[CS].selector, ev.return_eip]
        if has_error:
            values.append(ev.error_code)
        writes, esp = self.pushes(s.segs[SS], s.regs[4], slot, values, ext)
        eip = gate.gate_offset if slot == 4 else gate.gate_offset & 0xFFFF
        if eip > code.limit:
            raise Fault(V_GP, ext)
        for lin, size, _ in writes:
            self.check_write(lin, size, user=s.cpl == 3)
        writes += self.accessed_writes(code, code_addr)
        segs = list(s.segs)
        segs[CS] = Seg((gate.gate_selector & 0xFFFC) | s.cpl, code.base, code.limit,
                       code.cache_attr | 1)
        return Delivered(ev.vector, ev.kind, ev.error_code if has_error else None, tuple(writes),
                         tuple(segs), eip, esp, self.new_eflags(gate), s.cpl, None)

    def accessed_writes(self, desc: _Desc, addr: int) -> list:
        if desc.accessed:
            return []
        byte = (desc.hi >> 8 & 0xFF) | 1
        self.check_write(addr + 5, 1, user=False)
        return [((addr + 5) & 0xFFFFFFFF, 1, byte)]

    def real_mode(self, ev: Event):
        """REAL-ADDRESS-MODE: a 4-byte IVT entry, FLAGS CS IP pushed."""
        s = self.s
        if ev.vector * 4 + 3 > s.idt.limit:
            raise Fault(V_GP, 0)
        ip = self.read(s.idt.base + ev.vector * 4, 2)
        cs = self.read(s.idt.base + ev.vector * 4 + 2, 2)
        ss = s.segs[SS]
        stack = Seg(ss.selector, ss.base, ss.limit, (ss.attr & 0x4000) | 0x13)
        writes, esp = self.pushes(stack, s.regs[4], 2,
                                  [s.eflags, s.segs[CS].selector, ev.return_eip], 0)
        for lin, size, _ in writes:
            self.check_write(lin, size, user=False)
        segs = list(s.segs)
        old = s.segs[CS]
        segs[CS] = Seg(cs, cs << 4, old.limit, old.attr)
        return Delivered(ev.vector, ev.kind, None, tuple(writes), tuple(segs), ip, esp,
                         s.eflags & ~(IF | TF | AC), 0, None)
