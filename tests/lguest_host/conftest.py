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
