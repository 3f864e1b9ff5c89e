"""The x86 half of running a Guest, after drivers/lguest/x86/core.c:
copy_in_guest_info, run_guest_once (through the Switcher, on the CPU),
lguest_arch_run_guest, lguest_arch_handle_trap, emulate_insn, the x86
hypercalls, lguest_arch_setup_regs and lguest_arch_host_init.

The Host "calls" the Switcher as Linux's lcall does: the CPU is put at ring 0
in the Switcher's code segment with EAX and ESP pointing at this CPU's
struct lguest_pages, and run.  It comes back when the Switcher halts.  The
virtual clock takes the CPU back from a Guest that never traps: when the
instruction budget runs out, the Host raises its own timer interrupt
(HOST_TIMER_VECTOR), which the Guest's IDT sends into the Switcher like any
other external interrupt.
"""
import struct

from x86core import flags as fl
from x86core.cpu import CR0_PE, CR0_PG, CR0_TS, CR0_WP
from x86core.decoder import decode
from x86core.instruction import Instruction
from x86core.segmentation import CS, DS, ES, SS_REG, Descriptor

from ..abi import (GUEST_PL, LGUEST_TRAP_ENTRY, PAGE_SIZE, REGS_SIZE, TSS_SELECTOR,
                   X86_EFLAGS_BIT1, X86_EFLAGS_IF, __KERNEL_CS, __KERNEL_DS,
                   FIRST_EXTERNAL_VECTOR, GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS,
                   GDT_ENTRY_TSS, LHCALL_LOAD_GDT_ENTRY, LHCALL_LOAD_IDT_ENTRY,
                   LHCALL_LOAD_TLS, LguestData, LGUEST_CS, LGUEST_DS)
from .. import interrupts_and_traps as it, page_tables, segments
from ..core import lgread_bytes, lguest_address_ok, lgwrite
from ..lg import VIRTUAL_HZ, CHANGED_ALL, CHANGED_GDT, CHANGED_GDT_TLS, CHANGED_IDT, LgCpu, kill_guest
from .switcher_32 import (GUEST_GDT, GUEST_GDT_DESC, GUEST_IDT, GUEST_IDT_DESC, GUEST_TSS,
                          HOST_TIMER_VECTOR, TSS_ESP0, TSS_ESP1, TSS_IOMAP, TSS_SIZE,
                          TSS_SS0, TSS_SS1)

_IDT_ENTRY = struct.Struct("<II")
_GDT_ENTRY = struct.Struct("<Q")
_SEGMENT_FIELDS = ("gs", "fs", "ds", "es", "cs", "ss")


class HostState:
    """The Switcher's read-only state for one CPU, as the Host last wrote it:
    the IDT and GDT the CPU uses while the Guest runs (struct lguest_ro_state)."""

    def __init__(self, switcher):
        self.switcher = switcher
        self.idt = [(0, 0)] * 256
        self.gdt = [0] * 32
        # The hidden-cache attributes of LGUEST_CS and LGUEST_DS, which the
        # Host's "lcall" loads on every entry (the entries never change).
        self.lguest_cs_attr = self.lguest_ds_attr = 0


def lguest_arch_host_init(host) -> HostState:
    """Fill the read-only state page: the TSS whose ring-0 stack is the end of
    lguest_regs, the default IDT (every vector into the Switcher) and the
    default GDT (the Switcher's segments and the TSS)."""
    sw = host.switcher
    state = HostState(sw)
    mem = host.mem
    tss = sw.state_phys + GUEST_TSS
    mem.ram[tss:tss + TSS_SIZE] = 0
    mem.write(tss + TSS_ESP0, 4, sw.regs_linear + REGS_SIZE)
    mem.write(tss + TSS_SS0, 2, LGUEST_DS)
    # The I/O bitmap starts past the TSS limit: every IN/OUT from ring 1 or 3 faults.
    mem.write(tss + TSS_IOMAP, 2, TSS_SIZE)
    mem.write(sw.state_phys + GUEST_IDT_DESC, 2, 256 * 8 - 1)
    mem.write(sw.state_phys + GUEST_IDT_DESC + 2, 4, sw.state_linear + GUEST_IDT)
    mem.write(sw.state_phys + GUEST_GDT_DESC, 2, 32 * 8 - 1)
    mem.write(sw.state_phys + GUEST_GDT_DESC + 2, 4, sw.state_linear + GUEST_GDT)
    it.setup_default_idt_entries(state.idt, sw.stubs)
    segments.setup_default_gdt_entries(state.gdt, sw.state_linear + GUEST_TSS)
    state.lguest_cs_attr = Descriptor.parse(state.gdt[GDT_ENTRY_LGUEST_CS]).attr | 1
    state.lguest_ds_attr = Descriptor.parse(state.gdt[GDT_ENTRY_LGUEST_DS]).attr | 1
    _write_idt(host, state)
    _write_gdt(host, state)
    return state


def _write_idt(host, state: HostState) -> None:
    base = state.switcher.state_phys + GUEST_IDT
    buf = b"".join(_IDT_ENTRY.pack(a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in state.idt)
    host.mem.ram[base:base + len(buf)] = memoryview(buf)


def _write_gdt(host, state: HostState) -> None:
    base = state.switcher.state_phys + GUEST_GDT
    gdt = list(state.gdt)
    # TR stays loaded between runs (nothing else uses the CPU), so the
    # descriptor says busy, as it would after the LTR.
    gdt[GDT_ENTRY_TSS] |= 0x2 << 40
    buf = b"".join(_GDT_ENTRY.pack(d & 0xFFFFFFFFFFFFFFFF) for d in gdt)
    host.mem.ram[base:base + len(buf)] = memoryview(buf)


def lguest_arch_setup_regs(cpu: LgCpu, start: int) -> None:
    """The Guest's first registers: ring 1 kernel segments, interrupts on,
    EIP at `start`, ESI at the boot information (guest-physical 0)."""
    regs = cpu.regs
    regs.ds = regs.es = regs.ss = __KERNEL_DS | GUEST_PL
    regs.cs = __KERNEL_CS | GUEST_PL
    regs.eflags = X86_EFLAGS_IF | X86_EFLAGS_BIT1
    regs.eip = start
    regs.esi = 0
    segments.setup_guest_gdt(cpu)


def copy_in_guest_info(cpu: LgCpu, state: HostState) -> None:
    """Bring the Switcher's state up to date with this Guest: its stack for
    ring 1 in the TSS and, when they changed, its IDT and GDT."""
    host = cpu.lg.host
    sw = state.switcher
    if cpu.last_pages is not state:
        cpu.last_pages = state
        cpu.changed = CHANGED_ALL
    page_tables.map_switcher_in_guest(cpu, sw)
    tss = sw.state_phys + GUEST_TSS
    host.mem.write(tss + TSS_ESP1, 4, cpu.esp1)
    host.mem.write(tss + TSS_SS1, 2, cpu.ss1)
    if cpu.changed & CHANGED_IDT:
        it.copy_traps(cpu, state.idt, sw.stubs)
        _write_idt(host, state)
    if cpu.changed & CHANGED_GDT:
        segments.copy_gdt(cpu, state.gdt)
        _write_gdt(host, state)
    elif cpu.changed & CHANGED_GDT_TLS:
        segments.copy_gdt_tls(cpu, state.gdt)
        _write_gdt(host, state)
    cpu.changed = 0


def _enter_switcher(hw, state: HostState, cr3: int, ts: bool) -> None:
    """The Host's lcall into the Switcher: ring 0, LGUEST_CS/DS, interrupts
    off, EAX = this CPU's lguest_pages, ESP = its lguest_regs."""
    # Linux's Switcher loads the Guest's CR3 on every entry (the Host runs
    # on its own page tables in between), and the load empties the TLB:
    # the Guest refills it after every exit.  So do we.
    hw.cr0 |= CR0_PE | CR0_PG | CR0_WP
    hw.write_cr(3, cr3)
    hw.cr0 = (hw.cr0 | CR0_TS) if ts else (hw.cr0 & ~CR0_TS)
    sw = state.switcher
    code, data = state.lguest_cs_attr, state.lguest_ds_attr
    for seg, sel, attr in ((CS, LGUEST_CS, code), (SS_REG, LGUEST_DS, data),
                           (DS, LGUEST_DS, data), (ES, LGUEST_DS, data)):
        hw.seg_sel[seg] = sel
        hw.seg_base[seg] = 0
        hw.seg_limit[seg] = 0xFFFFFFFF
        hw.seg_attr[seg] = attr
    hw.cpl = 0
    hw.bits = 32
    hw.eflags = fl.RESERVED_ONE
    hw.lazy = (fl.K_RAW, 0, 0, 0)
    hw.regs[0] = sw.pages_linear
    hw.regs[4] = sw.regs_linear
    hw.eip = sw.switch_to_guest
    hw.halted = False
    hw.inhibit_irq = False
    hw.mode_changed()


def _load_tr(hw, sw) -> None:
    """TR is loaded once (LTR's effect) and stays: between runs nothing else
    uses this CPU, unlike Linux's Host, which has its own TSS."""
    hw.tr = (TSS_SELECTOR, sw.state_linear + GUEST_TSS, TSS_SIZE - 1, 0x8B)


def run_guest_once(cpu: LgCpu, state: HostState, stop_at: int | None) -> None:
    """Enter the Guest through the Switcher and run until it comes back."""
    lg = cpu.lg
    host = lg.host
    hw = host.hw
    sw = state.switcher
    regs = cpu.regs
    if regs.cs & 3 == 0 or regs.ss & 3 == 0:
        # The Switcher's IRET runs at ring 0: with an RPL 0 selector it
        # would stay there (LGUEST_CS is a valid ring-0 code segment), and
        # run the Guest with the Host's privilege.  With RPL 1-3 the IRET's
        # own checks refuse every DPL 0 segment, and a fault there is caught
        # below as a fault in the Switcher.
        kill_guest(cpu, "bad segment in the Guest's registers: cs %#x ss %#x",
                   regs.cs, regs.ss)
        return
    copy_in_guest_info(cpu, state)
    host.mem.load(sw.regs_phys, cpu.regs.pack())
    if hw.tr[0] != TSS_SELECTOR:
        _load_tr(hw, sw)
    _enter_switcher(hw, state, page_tables.current_pgdir(cpu), bool(cpu.ts))
    lg.stats.entries += 1
    budget = None
    if stop_at is not None:
        budget = max(1, stop_at - hw.icount)
    if cpu.hrt_expires is not None:
        until_timer = max(1, (cpu.hrt_expires - host.now_ns()) * VIRTUAL_HZ // 1_000_000_000)
        budget = until_timer if budget is None else min(budget, until_timer)
    try:
        outcome = hw.run(budget)
        if outcome == "limit":
            outcome = _take_cpu_back(hw)
    except Exception as e:          # noqa: BLE001 - the CPU model failed on the Guest's code
        # A bug in the CPU model, met by running the Guest's instructions:
        # the Guest cannot go on, but the Host must not fall over with it.
        kill_guest(cpu, "the CPU failed at %#x: %s: %s", hw.eip, type(e).__name__, e)
        return
    if outcome != "halt":
        kill_guest(cpu, "the Guest stopped the CPU: %s", getattr(hw, "stop_reason", outcome))
        return
    if hw.eip != sw.halt_eip or hw.regs[4] != sw.regs_linear or hw.cpl != 0:
        kill_guest(cpu, "fault in the Switcher%s: the Guest's state would not load",
                   _switcher_fault(host, sw))
        return
    cpu.regs.unpack_from(host.mem.view, sw.regs_phys)
    for name in _SEGMENT_FIELDS:
        setattr(cpu.regs, name, getattr(cpu.regs, name) & 0xFFFF)
    lg.stats.exits[cpu.regs.trapnum] += 1


def _switcher_fault(host, sw) -> str:
    """What went wrong when the Switcher did not come back cleanly.  A fault
    while it loaded the Guest's state (a segment register, the IRET) was
    taken at ring 0 on the stack it was popping, so the stub's frame (the
    eleven registers, trap number, error code, EIP) is just below where
    lguest_regs should have ended up."""
    hw = host.hw
    esp = hw.regs[4]
    if hw.eip == sw.halt_eip and hw.cpl == 0 and \
            sw.pages_linear <= esp and esp + 4 * 14 <= sw.regs_linear + REGS_SIZE:
        frame = sw.pages_phys + (esp - sw.pages_linear)
        trap, err, eip = (host.mem.read(frame + 4 * i, 4) for i in (11, 12, 13))
        return f": trap {trap} ({err:#x}) at {eip:#x}"
    return f" at {hw.eip:#x}"


def _take_cpu_back(hw) -> str:
    """The Host's timer fires: one external interrupt, which the Switcher's
    IDT entry turns into an exit."""
    pending = [HOST_TIMER_VECTOR]
    hw.irq_line = lambda: pending.pop() if pending else None
    try:
        return hw.run(10_000)
    finally:
        hw.irq_line = None


def lguest_arch_run_guest(cpu: LgCpu, stop_at: int | None = None) -> None:
    host = cpu.lg.host
    if host.state is None:
        host.state = lguest_arch_host_init(host)
    run_guest_once(cpu, host.state, stop_at)
    if cpu.regs.trapnum == 14:
        cpu.last_pagefault = host.hw.cr2


def lguest_arch_handle_trap(cpu: LgCpu) -> None:
    """Decide what the trap the Guest came back with means."""
    lg = cpu.lg
    if lg.dead is not None:
        return
    regs = cpu.regs
    trapnum = regs.trapnum
    if trapnum == 13:
        if regs.errcode == 0 and emulate_insn(cpu):
            return
    elif trapnum == 14:
        if page_tables.demand_page(cpu, cpu.last_pagefault, regs.errcode):
            lg.stats.demand_faults += 1
            return
        lg.stats.reflected_faults += 1
        if lg.lguest_data is not None:
            lgwrite(cpu, lg.lguest_data + LguestData.cr2, 4, cpu.last_pagefault)
    elif trapnum == 7:
        if not cpu.ts:
            return
    elif trapnum == LGUEST_TRAP_ENTRY:
        from ..hypercalls import HcallArgs
        cpu.hcall = HcallArgs(regs.eax, regs.ebx, regs.ecx, regs.edx, regs.esi)
        return
    elif trapnum >= FIRST_EXTERNAL_VECTOR and not it.could_be_syscall(lg, trapnum):
        # A Host interrupt (our timer): already handled, nothing for the Guest.
        return
    if not it.deliver_trap(cpu, trapnum):
        kill_guest(cpu, "unhandled trap %d at %#x (%#x)", trapnum, regs.eip,
                   cpu.last_pagefault if trapnum == 14 else regs.errcode)


# -- emulate_insn: IN and OUT from the Guest kernel ------------------------------------
_IN_OUT = {0xE4: ("in", 1), 0xE5: ("in", 4), 0xEC: ("in", 1), 0xED: ("in", 4),
           0xE6: ("out", 1), 0xE7: ("out", 4), 0xEE: ("out", 1), 0xEF: ("out", 4)}


def emulate_insn(cpu: LgCpu) -> bool:
    """The Guest kernel's IN and OUT fault (IOPL 0, no I/O bitmap): there are
    no devices behind them, so IN reads all ones and OUT goes nowhere; EIP
    steps over the instruction.  Anything else is the Guest's #GP."""
    regs = cpu.regs
    if regs.cs & 3 != GUEST_PL:
        return False
    phys = page_tables.guest_pa(cpu, regs.eip)
    if cpu.lg.dead is not None or not lguest_address_ok(cpu.lg, phys, 1):
        return False
    room = min(15, cpu.lg.pfn_limit * PAGE_SIZE - phys, PAGE_SIZE - (regs.eip & 0xFFF))
    code = lgread_bytes(cpu, phys, room)
    insn = decode(code, 0, 32)
    if not isinstance(insn, Instruction):
        return False
    prefixes = code[:insn.length]
    opcode = None
    size16 = False
    for i, byte in enumerate(prefixes):
        if byte == 0x66:
            size16 = True
            continue
        opcode = byte
        break
    if opcode not in _IN_OUT or any(b not in (0x66, opcode) for b in code[:i]):
        return False
    kind, size = _IN_OUT[opcode]
    if size == 4 and size16:
        size = 2
    if kind == "in":
        mask = (1 << 8 * size) - 1
        regs.eax = (regs.eax & ~mask | mask) & 0xFFFFFFFF
    regs.eip = (regs.eip + insn.length) & 0xFFFFFFFF
    return True


# -- x86 hypercalls ---------------------------------------------------------------------
def lguest_arch_do_hcall(cpu: LgCpu, args) -> bool:
    """The hypercalls about x86 descriptor tables; False if `args` is not one."""
    if args.arg0 == LHCALL_LOAD_GDT_ENTRY:
        segments.load_guest_gdt_entry(cpu, args.arg1, args.arg2, args.arg3)
    elif args.arg0 == LHCALL_LOAD_IDT_ENTRY:
        it.load_guest_idt_entry(cpu, args.arg1, args.arg2, args.arg3)
    elif args.arg0 == LHCALL_LOAD_TLS:
        segments.guest_load_tls(cpu, args.arg1)
    else:
        return False
    return True


def lguest_arch_init_hypercalls(cpu: LgCpu) -> bool:
    """LHCALL_LGUEST_INIT's x86 part: check and remember where lguest_data
    is, tell the Guest the TSC rate, check its system call vector.  False
    if the address is bad."""
    lg = cpu.lg
    addr = cpu.hcall.arg1
    if not lguest_address_ok(lg, addr, LguestData.SIZE):
        return False
    lg.lguest_data = addr
    lgwrite(cpu, addr + LguestData.tsc_khz, 4, lg.tsc_khz)
    if not it.check_syscall_vector(lg):
        kill_guest(cpu, "bad syscall vector")
    return True
