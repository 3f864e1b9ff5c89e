"""Hypercalls, after drivers/lguest/hypercalls.c (Linux 2.6.32): the Guest's
requests to the Host, made either by trap (`int $0x1f`, registers EAX, EBX,
ECX, EDX, ESI, which x86/core.py turns into cpu.hcall) or queued in the
asynchronous ring inside struct lguest_data.

do_hcall is one big dispatch; do_async_hcalls runs the ring in order, always
before the trap hypercall that brought the Guest out; initialize handles the
very first hypercall, which must be LHCALL_LGUEST_INIT.  Anything the Guest
gets wrong kills it with a reason; nothing here raises.
"""
import struct

import attrs

from . import interrupts_and_traps, page_tables
from .abi import (HCALL_ARGS_SIZE, LGUEST_SHUTDOWN_RESTART, LHCALL_FLUSH_ASYNC,
                  LHCALL_FLUSH_TLB, LHCALL_HALT, LHCALL_LGUEST_INIT, LHCALL_NEW_PGTABLE,
                  LHCALL_NOTIFY, LHCALL_RING_SIZE, LHCALL_SEND_INTERRUPTS, LHCALL_SET_CLOCKEVENT,
                  LHCALL_SET_PGD, LHCALL_SET_PMD, LHCALL_SET_PTE, LHCALL_SET_STACK,
                  LHCALL_SHUTDOWN, LHCALL_TS, PAGE_SIZE, LguestData)
from .core import lgread, lgread_bytes, lguest_address_ok, lgwrite, write_timestamp
from .lg import LgCpu, kill_guest
from .x86 import core as x86_core

SHUTDOWN_MSG_MAX = 128          # Linux's char msg[128], NUL included
HCALL_DONE = 0xFF               # a ring slot the Host has finished with (or never filled)

_ARGS = struct.Struct("<5I")


def _u32(value) -> int:
    return int(value) & 0xFFFFFFFF


@attrs.define
class HcallArgs:
    """struct hcall_args: the call number and its four arguments, as the
    32-bit values the Guest's registers (or ring slot) held."""
    arg0: int = attrs.field(default=0, converter=_u32)
    arg1: int = attrs.field(default=0, converter=_u32)
    arg2: int = attrs.field(default=0, converter=_u32)
    arg3: int = attrs.field(default=0, converter=_u32)
    arg4: int = attrs.field(default=0, converter=_u32)

    @classmethod
    def unpack(cls, raw: bytes) -> "HcallArgs":
        return cls(*_ARGS.unpack(raw))


def _shutdown_message(cpu: LgCpu, addr: int) -> str:
    """The Guest's NUL-terminated reason.  Linux copies a fixed 128 bytes, so
    a reason in the last 127 bytes of Guest memory would be a bad read there;
    we read what fits, which changes only the message, never who dies."""
    limit = cpu.lg.pfn_limit * PAGE_SIZE
    length = SHUTDOWN_MSG_MAX
    if 0 <= addr < limit:
        length = min(length, limit - addr)
    raw = lgread_bytes(cpu, addr, length)[:SHUTDOWN_MSG_MAX - 1]
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def do_hcall(cpu: LgCpu, args: HcallArgs) -> None:
    """Carry out one hypercall (from a trap or from the ring)."""
    lg = cpu.lg
    call = args.arg0
    lg.stats.hypercalls[call] += 1
    if call in (LHCALL_FLUSH_ASYNC, LHCALL_SEND_INTERRUPTS):
        # Trapping out was the point: the ring has just been run, and the
        # run loop delivers pending interrupts before the Guest runs again.
        pass
    elif call == LHCALL_LGUEST_INIT:
        kill_guest(cpu, "already have lguest_data")
    elif call == LHCALL_SHUTDOWN:
        # A bad address kills the Guest inside lgread_bytes first; that
        # reason is the one kept.
        kill_guest(cpu, "CRASH: %s", _shutdown_message(cpu, args.arg1))
        lg.shutdown_reason = args.arg2
        if args.arg2 == LGUEST_SHUTDOWN_RESTART:
            lg.dead = "restart"
    elif call == LHCALL_FLUSH_TLB:
        if args.arg1:
            page_tables.guest_pagetable_clear_all(cpu)
        else:
            page_tables.guest_pagetable_flush_user(cpu)
    elif call == LHCALL_NEW_PGTABLE:
        page_tables.guest_new_pagetable(cpu, args.arg1)
    elif call == LHCALL_SET_STACK:
        interrupts_and_traps.guest_set_stack(cpu, args.arg1, args.arg2, args.arg3)
    elif call == LHCALL_SET_PTE:
        page_tables.guest_set_pte(cpu, args.arg1, args.arg2, args.arg3)
    elif call == LHCALL_SET_PGD:
        page_tables.guest_set_pgd(lg, args.arg1, args.arg2)
    elif call == LHCALL_SET_PMD:
        page_tables.guest_set_pmd(lg, args.arg1, args.arg2)
    elif call == LHCALL_SET_CLOCKEVENT:
        interrupts_and_traps.guest_set_clockevent(cpu, args.arg1)
    elif call == LHCALL_TS:
        cpu.ts = args.arg1
    elif call == LHCALL_HALT:
        cpu.halted = True
    elif call == LHCALL_NOTIFY:
        cpu.pending_notify = args.arg1
    elif not x86_core.lguest_arch_do_hcall(cpu, args):
        kill_guest(cpu, "Bad hypercall %i", call)


def clear_hcall(cpu: LgCpu, n: int) -> None:
    """Mark ring slot n done, so the Guest may fill it again."""
    lgwrite(cpu, cpu.lg.lguest_data + LguestData.hcall_status + n, 1, HCALL_DONE)


def do_async_hcalls(cpu: LgCpu) -> None:
    """Run the ring's ready slots, in the order the Guest filled them: from
    where we stopped last time (next_hcall) up to the first empty slot, at
    most once round."""
    lg = cpu.lg
    base = lg.lguest_data
    # One snapshot of the status bytes: slots the Guest readies while we
    # work wait for the next visit, as in Linux.
    status = lgread_bytes(cpu, base + LguestData.hcall_status, LHCALL_RING_SIZE)
    if lg.dead is not None:
        return
    for _ in range(LHCALL_RING_SIZE):
        n = cpu.next_hcall
        if status[n] == HCALL_DONE:
            break
        cpu.next_hcall = (n + 1) % LHCALL_RING_SIZE
        slot = base + LguestData.hcalls + n * HCALL_ARGS_SIZE
        if not lguest_address_ok(lg, slot, HCALL_ARGS_SIZE):
            kill_guest(cpu, "Fetching async hypercalls")
            break
        args = HcallArgs.unpack(lgread_bytes(cpu, slot, HCALL_ARGS_SIZE))
        lg.stats.async_hypercalls += 1
        do_hcall(cpu, args)
        clear_hcall(cpu, n)
        # The Launcher must see a NOTIFY before anything queued after it
        # happens; a dead Guest gets nothing more done.
        if cpu.pending_notify or lg.dead is not None:
            break


def initialize(cpu: LgCpu) -> None:
    """The Guest's first hypercall: where its struct lguest_data is."""
    lg = cpu.lg
    args = cpu.hcall
    if args.arg0 != LHCALL_LGUEST_INIT:
        kill_guest(cpu, "hypercall %i before INIT", args.arg0)
        return
    lg.stats.hypercalls[LHCALL_LGUEST_INIT] += 1
    if not x86_core.lguest_arch_init_hypercalls(cpu) or lg.lguest_data is None:
        kill_guest(cpu, "bad guest page %#x", args.arg1)
        return
    # The eip range (the Guest's iret path) where no interrupt may be delivered.
    lg.noirq_start = lgread(cpu, lg.lguest_data + LguestData.noirq_start)
    lg.noirq_end = lgread(cpu, lg.lguest_data + LguestData.noirq_end)
    write_timestamp(cpu)
    page_tables.page_table_guest_data_init(cpu)
    # Linux: the writes above may have been the first to a Guest page and
    # moved it (copy on write); drop every shadow so none names the old page.
    page_tables.guest_pagetable_clear_all(cpu)


def do_hypercalls(cpu: LgCpu) -> None:
    """The run loop found a trap hypercall (cpu.hcall): run the ring first,
    then the call itself."""
    if cpu.lg.lguest_data is None:
        if cpu.hcall is not None:
            initialize(cpu)
        cpu.hcall = None
        return
    do_async_hcalls(cpu)
    # A NOTIFY from the ring goes to the Launcher first; the trap hypercall
    # stays pending and runs when the Launcher lets the Guest go on.
    if cpu.pending_notify:
        return
    if cpu.hcall is not None and cpu.lg.dead is None:
        do_hcall(cpu, cpu.hcall)
    cpu.hcall = None
