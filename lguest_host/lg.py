"""The Host's records, after drivers/lguest/lg.h: the machine the Host owns
(`Host`: physical memory, the CPU, the Switcher's pages, the pool shadow page
tables come from), one Guest (`Lguest`), its virtual CPU (`LgCpu`), and
kill_guest.

Host-physical layout (one numpy array, x86core.PhysicalMemory):

    0x0000  Switcher text (mapped at SWITCHER_ADDR)
    0x1000  struct lguest_pages for CPU 0: the regs page
    0x2000                                 the read-only state page (GDT, IDT, TSS)
    0x3000  the Switcher's PTE page (every shadow PGD's entry 1023 points here)
    0x4000  .. HOST_RESERVED: the pool shadow page tables are allocated from
    HOST_RESERVED ..: Guest memory (guest-physical 0 is host-physical mem_base)
"""
from collections import Counter

import attrs

from .abi import (GDT_ENTRIES, IDT_ENTRIES, LGUEST_IRQS, PAGE_SIZE, SYSCALL_VECTOR,
                  LguestRegs)

SWITCHER_TEXT_PHYS = 0x0000
LGUEST_PAGES_PHYS = 0x1000          # CPU 0; two pages per CPU
SWITCHER_PTE_PHYS = 0x3000
POOL_START = 0x4000
HOST_RESERVED = 8 << 20             # Switcher, state pages, shadow page tables

# The virtual clock: the CPU's retired-instruction count at this rate, plus
# the time skipped while the Guest sleeps in LHCALL_HALT.  1 GHz makes one
# instruction one nanosecond; tsc_khz tells the Guest the same.
VIRTUAL_HZ = 1_000_000_000


class PoolExhausted(Exception):
    """No free page for a shadow page table (the caller drops its shadows)."""


@attrs.define(eq=False)
class PagePool:
    """Host pages for shadow page tables: a free list over [start, end)."""
    mem: object
    start: int
    end: int
    free: list = attrs.field(factory=list)
    next_unused: int = -1

    def __attrs_post_init__(self):
        self.next_unused = self.start

    def get_zeroed_page(self) -> int:
        if self.free:
            page = self.free.pop()
        elif self.next_unused < self.end:
            page = self.next_unused
            self.next_unused += PAGE_SIZE
        else:
            raise PoolExhausted(f"no free shadow page in {self.start:#x}-{self.end:#x}")
        self.mem.ram[page:page + PAGE_SIZE] = 0
        return page

    def free_page(self, page: int) -> None:
        self.free.append(page)

    def in_use(self) -> int:
        return (self.next_unused - self.start) // PAGE_SIZE - len(self.free)


@attrs.define(eq=False)
class Pgdir:
    """One cached shadow: the Guest's page directory (guest-physical) and the
    shadow page directory the CPU really walks (host-physical, 0 = none)."""
    gpgdir: int = -1
    pgdir: int = 0


@attrs.define(eq=False)
class Stats:
    """Per-exit statistics: why the Guest came back to the Host, and what it asked."""
    exits: Counter = attrs.field(factory=Counter)         # trapnum -> count
    hypercalls: Counter = attrs.field(factory=Counter)    # LHCALL_* -> count (trap and ring)
    async_hypercalls: int = 0                             # of those, run from the ring
    demand_faults: int = 0                                # #PF fixed in the shadow
    reflected_faults: int = 0                             # #PF handed to the Guest
    reflected_traps: Counter = attrs.field(factory=Counter)  # vector -> deliver_trap
    interrupts: Counter = attrs.field(factory=Counter)    # virtual irq -> delivered
    entries: int = 0                                      # Switcher entries


@attrs.define(eq=False)
class LgCpu:
    """struct lg_cpu: one virtual CPU of a Guest."""
    id: int
    lg: "Lguest"
    regs: LguestRegs = attrs.field(factory=LguestRegs)
    cr2: int = 0
    ts: int = 0
    esp1: int = 0
    ss1: int = 0
    changed: int = 0                    # CHANGED_IDT | CHANGED_GDT | CHANGED_GDT_TLS
    pending_notify: int = 0
    regs_page: int = LGUEST_PAGES_PHYS  # host-physical
    last_pages: int | None = None       # whose state was last copied in (None: nobody)
    cpu_pgd: int = 0                    # index into lg.pgdirs of the current shadow
    hcall: object = None                # the pending trap hypercall's args, or None
    next_hcall: int = 0
    hrt_expires: int | None = None      # virtual ns of the next timer irq, None = stopped
    halted: bool = False
    irqs_pending: int = 0               # bitmap of LGUEST_IRQS
    # struct lg_cpu_arch
    gdt: list = attrs.field(factory=lambda: [0] * GDT_ENTRIES)            # u64 descriptors
    idt: list = attrs.field(factory=lambda: [(0, 0)] * IDT_ENTRIES)       # (a, b) words
    last_pagefault: int = 0


CHANGED_IDT, CHANGED_GDT, CHANGED_GDT_TLS = 1, 2, 4
CHANGED_ALL = 3


@attrs.define(eq=False)
class Lguest:
    """struct lguest: one Guest."""
    host: "object"                      # the Host (machine, Switcher, pool)
    mem_base: int                       # host-physical address of guest-physical 0
    pfn_limit: int
    lguest_data: int | None = None      # guest-physical, None until LHCALL_LGUEST_INIT
    cpus: list = attrs.field(factory=list)
    kernel_address: int = 0
    pgdirs: list = attrs.field(factory=lambda: [Pgdir() for _ in range(4)])
    pgdir_next: int = 0                 # round-robin eviction (Linux picks at random)
    noirq_start: int = 0
    noirq_end: int = 0
    stack_pages: int = 0
    tsc_khz: int = VIRTUAL_HZ // 1000
    dead: str | None = None
    # Host configuration (module parameters and our switches)
    syscall_vectors: frozenset = frozenset({SYSCALL_VECTOR})
    direct_traps: bool = True           # False: every trap is reflected through the Host
    stats: Stats = attrs.field(factory=Stats)
    shutdown_reason: int = 0            # LGUEST_SHUTDOWN_* when the Guest asked to stop

    @property
    def nr_cpus(self) -> int:
        return len(self.cpus)


def kill_guest(cpu: LgCpu, fmt: str, *args) -> None:
    """Mark the Guest dead with a reason; the first reason wins.  The run loop
    stops before the Guest runs again; nothing raises."""
    if cpu.lg.dead is None:
        try:
            cpu.lg.dead = fmt % args if args else fmt
        except (TypeError, ValueError):
            cpu.lg.dead = f"{fmt} {args!r}"


assert LGUEST_IRQS == 32
