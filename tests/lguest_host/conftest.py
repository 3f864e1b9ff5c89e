"""Fixtures for the Host's unit tests: a machine with one Guest and its CPU,
set up as lguest_user.initialize would, but without running anything."""
import pytest

from lguest_host.abi import PAGE_SIZE
from lguest_host.core import lguest_host_init
from lguest_host.lg import HOST_RESERVED, LgCpu, Lguest


def make_guest(mem_bytes: int = 4 << 20, **lg_fields):
    host = lguest_host_init(mem_bytes)
    lg = Lguest(host=host, mem_base=HOST_RESERVED, pfn_limit=mem_bytes // PAGE_SIZE, **lg_fields)
    cpu = LgCpu(id=0, lg=lg)
    lg.cpus.append(cpu)
    return host, lg, cpu


@pytest.fixture
def guest():
    """(host, lg, cpu) for a 4 MiB Guest; guest-physical 0 is host-physical HOST_RESERVED."""
    return make_guest()


# Building a machine assembles and maps the Switcher; unit tests that want a
# new Guest per example share one machine per memory size and reset it.
_SHARED: dict = {}


def shared_guest(mem_bytes: int = 4 << 20, pfn_limit: int | None = None):
    """(host, lg, cpu): a new Guest on a shared machine, with Guest memory
    zeroed, the Switcher's pages as built, the shadow pool empty and the
    CPU's paging state reset."""
    from lguest_host.lg import POOL_START
    if mem_bytes not in _SHARED:
        host = make_guest(mem_bytes)[0]
        _SHARED[mem_bytes] = (host, host.mem.ram[:POOL_START].copy(), host.pool.end)
    host, low, pool_end = _SHARED[mem_bytes]
    host.mem.ram[HOST_RESERVED:] = 0
    host.mem.ram[:POOL_START] = low
    host.pool.free.clear()
    host.pool.next_unused = host.pool.start
    host.pool.end = pool_end
    hw = host.hw
    hw.cr0 = 0x11
    hw.cr3 = 0
    hw.cpl = 0
    hw.flush_tlb()
    hw.mode_changed()
    lg = Lguest(host=host, mem_base=HOST_RESERVED,
                pfn_limit=mem_bytes // PAGE_SIZE if pfn_limit is None else pfn_limit)
    cpu = LgCpu(id=0, lg=lg)
    lg.cpus.append(cpu)
    return host, lg, cpu
