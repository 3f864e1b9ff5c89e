"""The Host's core, after drivers/lguest/core.c: the machine the Host owns,
checked access to Guest memory (lguest_address_ok, lgread, lgwrite), the
virtual clock, and run_guest, the loop the Launcher's read() of /dev/lguest
ran in.

A Guest misbehaving never raises here: kill_guest records why, and run_guest
returns to the Launcher with the reason.
"""
import struct
import time

import attrs

from x86core.cpu import CPU
from x86core.memory import PhysicalMemory

from .abi import LGUEST_IRQS, PAGE_SIZE
from .lg import (HOST_RESERVED, POOL_START, VIRTUAL_HZ, LgCpu, Lguest, PagePool,
                 kill_guest)

_U = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"),
      8: struct.Struct("<Q")}


@attrs.define(eq=False)
class Host:
    """What loading the lguest module set up: the machine (memory and CPU),
    the Switcher mapped at SWITCHER_ADDR, and the pool shadow pages come from."""
    mem: PhysicalMemory
    hw: CPU
    pool: PagePool
    switcher: object = None             # x86.switcher_32.Switcher
    state: object = None                # x86.core.HostState, made on the first run
    skipped_ns: int = 0                 # virtual time slept away in HALT
    boot_wall_ns: int = attrs.field(factory=time.time_ns)

    def now_ns(self) -> int:
        """The virtual clock: retired instructions at VIRTUAL_HZ, plus sleeps."""
        return self.hw.icount * 1_000_000_000 // VIRTUAL_HZ + self.skipped_ns


def lguest_host_init(guest_bytes: int) -> Host:
    """Build the machine for one Guest of `guest_bytes` and map the Switcher
    (the module's init(): map_switcher, init_pagetables, init_interrupts)."""
    from .x86.switcher_32 import map_switcher
    if guest_bytes <= 0 or guest_bytes % PAGE_SIZE:
        raise ValueError("Guest memory must be a positive number of pages")
    mem = PhysicalMemory(HOST_RESERVED + guest_bytes)
    hw = CPU(mem)
    host = Host(mem=mem, hw=hw, pool=PagePool(mem, POOL_START, HOST_RESERVED))
    host.switcher = map_switcher(host)
    return host


# -- Guest memory -------------------------------------------------------------------
def lguest_address_ok(lg: Lguest, addr: int, length: int) -> bool:
    """Is [addr, addr+length) inside the Guest's memory (guest-physical)?"""
    return 0 <= addr and length >= 0 and addr + length <= lg.pfn_limit * PAGE_SIZE \
        and addr + length >= addr


def lgread_bytes(cpu: LgCpu, addr: int, length: int) -> bytes:
    """__lgread: copy from guest-physical memory; a bad address kills the
    Guest and reads as zeroes."""
    lg = cpu.lg
    if not lguest_address_ok(lg, addr, length):
        kill_guest(cpu, "bad read address %#x len %u", addr, length)
        return bytes(length if 0 <= length < 1 << 20 else 0)
    base = lg.mem_base + addr
    return lg.host.mem.ram[base:base + length].tobytes()


def lgwrite_bytes(cpu: LgCpu, addr: int, data: bytes) -> None:
    """__lgwrite: copy into guest-physical memory; a bad address kills the Guest."""
    lg = cpu.lg
    if not lguest_address_ok(lg, addr, len(data)):
        kill_guest(cpu, "bad write address %#x len %u", addr, len(data))
        return
    lg.host.mem.load(lg.mem_base + addr, data)


def lgread(cpu: LgCpu, addr: int, size: int = 4) -> int:
    """lgread of a 1, 2, 4 or 8-byte little-endian unsigned value."""
    lg = cpu.lg
    if not lguest_address_ok(lg, addr, size):
        kill_guest(cpu, "bad read address %#x len %u", addr, size)
        return 0
    return _U[size].unpack_from(lg.host.mem.view, lg.mem_base + addr)[0]


def lgwrite(cpu: LgCpu, addr: int, size: int, value: int) -> None:
    """lgwrite of a 1, 2, 4 or 8-byte little-endian value."""
    lg = cpu.lg
    if not lguest_address_ok(lg, addr, size):
        kill_guest(cpu, "bad write address %#x len %u", addr, size)
        return
    mem = lg.host.mem
    phys = lg.mem_base + addr
    _U[size].pack_into(mem.view, phys, value & ((1 << 8 * size) - 1))
    if mem.watched:
        mem.touched(phys, size)


# -- the run loop ---------------------------------------------------------------------
@attrs.frozen
class Exit:
    """Why run_guest returned to the Launcher: "notify" (value: the address
    the Guest passed to LHCALL_NOTIFY), "dead" (value: the reason), "halted"
    (asleep with no interrupt or timer that could wake it), or "budget"
    (the instruction budget the Launcher gave ran out)."""
    kind: str
    value: object = None


def run_guest(cpu: LgCpu, budget: int | None = None) -> Exit:
    """Run the Guest until something needs the Launcher (core.c run_guest).
    `budget` bounds the instructions retired in this call."""
    from . import hypercalls, interrupts_and_traps as it
    from .x86 import core as x86
    lg = cpu.lg
    host = lg.host
    stop_at = None if budget is None else host.hw.icount + budget
    while lg.dead is None:
        # A hypercall by trap; the async ring is run on the way (do_hypercalls).
        if cpu.hcall is not None:
            hypercalls.do_hypercalls(cpu)
        # NOTIFY goes out to the Launcher: devices are its business.
        if cpu.pending_notify:
            addr, cpu.pending_notify = cpu.pending_notify, 0
            return Exit("notify", addr)
        it.check_timer(cpu)
        irq, more = it.interrupt_pending(cpu)
        if irq < LGUEST_IRQS:
            it.try_deliver_interrupt(cpu, irq, more)
        if lg.dead is not None:
            break
        if cpu.halted:
            if it.interrupt_pending(cpu)[0] < LGUEST_IRQS:
                continue
            if cpu.hrt_expires is None:
                return Exit("halted")
            # Sleep: the virtual clock jumps to the timer, and the TSC with
            # it (tsc_khz tells the Guest they run together).
            skip = max(0, cpu.hrt_expires - host.now_ns())
            host.skipped_ns += skip
            host.hw.tsc_offset += skip * VIRTUAL_HZ // 1_000_000_000
            continue
        if stop_at is not None and host.hw.icount >= stop_at:
            return Exit("budget")
        x86.lguest_arch_run_guest(cpu, stop_at)
        x86.lguest_arch_handle_trap(cpu)
    return Exit("dead", lg.dead)


def write_timestamp(cpu: LgCpu) -> None:
    """Put the time into lguest_data.time (hypercalls.c write_timestamp): the
    wall clock when the Host started, advanced by the virtual clock, so it
    agrees with the Guest's timer and runs are reproducible."""
    from .abi import LguestData
    host = cpu.lg.host
    ns = host.boot_wall_ns + host.now_ns()
    lgwrite(cpu, cpu.lg.lguest_data + LguestData.time_sec, 4, ns // 1_000_000_000)
    lgwrite(cpu, cpu.lg.lguest_data + LguestData.time_nsec, 4, ns % 1_000_000_000)
