"""/dev/lguest, after drivers/lguest/lguest_user.c: what a Launcher may ask
of the Host (LHREQ_INITIALIZE, reading to run the Guest, LHREQ_IRQ), as
Python calls.  Bad requests raise LauncherError, as the write() would fail
with EINVAL; they never touch a running Guest.
"""
from .abi import LGUEST_IRQS, PAGE_SIZE
from .core import Exit, run_guest
from .lg import HOST_RESERVED, LgCpu, Lguest


class LauncherError(Exception):
    """A request the Host refuses (the EINVAL / EFAULT of the character device)."""


def initialize(host, base: int, pfnlimit: int, pgdir: int, start: int, **config) -> LgCpu:
    """LHREQ_INITIALIZE: the Guest's memory is [base, base + pfnlimit pages)
    of host-physical memory; `pgdir` is the guest-physical address of the
    page directory the Launcher built, `start` the entry point.  `config`
    sets the Host's switches for this Guest (direct_traps, syscall_vectors)."""
    from .interrupts_and_traps import init_clockdev
    from .page_tables import init_guest_pagetable
    from .x86.core import lguest_arch_setup_regs
    if base % PAGE_SIZE or base < HOST_RESERVED or pfnlimit <= 0 \
            or base + pfnlimit * PAGE_SIZE > host.mem.size:
        raise LauncherError(f"Guest memory {base:#x}+{pfnlimit} pages is not free host memory")
    if not 0 <= pgdir < pfnlimit * PAGE_SIZE or pgdir % PAGE_SIZE:
        raise LauncherError(f"page directory {pgdir:#x} is not a page of Guest memory")
    lg = Lguest(host=host, mem_base=base, pfn_limit=pfnlimit, **config)
    cpu = LgCpu(id=0, lg=lg)
    lg.cpus.append(cpu)
    init_guest_pagetable(lg, pgdir)
    lguest_arch_setup_regs(cpu, start)
    init_clockdev(cpu)
    if lg.dead is not None:
        raise LauncherError(lg.dead)
    return cpu


def read(cpu: LgCpu, budget: int | None = None) -> Exit:
    """Run the Guest until it needs the Launcher (a read() of /dev/lguest)."""
    return run_guest(cpu, budget)


def user_send_irq(cpu: LgCpu, irq: int) -> None:
    """LHREQ_IRQ: raise virtual interrupt `irq` in the Guest."""
    from .interrupts_and_traps import set_interrupt
    if not 0 <= irq < LGUEST_IRQS:
        raise LauncherError(f"interrupt {irq} is not one of the Guest's {LGUEST_IRQS}")
    set_interrupt(cpu, irq)
