"""The Launcher (lguest_host/launcher.py) and /dev/lguest (lguest_user.py):
memory layout, boot page tables, the argument block and file archive (read
back with the Python Guest's own parsers), the early console and the
console device as a hand-assembled Guest uses them, how a run ends, and
the requests the Host refuses.
"""
import io
import struct

import pytest
from hypothesis import given, strategies as st

from lguest_guest.syscalls import parse_archive, parse_args
from lguest_host import lguest_user
from lguest_host.abi import (BOOT_MAGIC, PAGE_OFFSET, PAGE_SIZE, BootParams, ConsoleDevice,
                             LguestData)
from lguest_host.launcher import Launcher, pack_archive, pack_args
from lguest_host.lg import HOST_RESERVED
from lguest_host.lguest_user import LauncherError

from . import miniguest as m

MSG = 0xB000                            # data the kernel image carries
RESULTS = 0xB800                        # where the Guest copies console results
EIO = -5


def launcher(stdin=b"", mem_mib=2, **kw):
    out, err = io.BytesIO(), io.BytesIO()
    la = Launcher(mem_mib, stdin=io.BytesIO(stdin), stdout=out, stderr=err, **kw)
    return la, out, err


def console(la, cmd, fd, buf, length, result_slot) -> list:
    """Ops for one console request and a copy of its result."""
    c = la.console_phys
    return [m.store(c + ConsoleDevice.cmd, cmd), m.store(c + ConsoleDevice.fd, fd),
            m.store(c + ConsoleDevice.buf, buf), m.store(c + ConsoleDevice.len, length),
            m.hcall(17, c), m.copy(c + ConsoleDevice.result, RESULTS + 4 * result_slot)]


def results(la, n) -> list:
    return list(struct.unpack(f"<{n}i", la.guest_read(RESULTS, 4 * n)))


def init() -> list:
    return [m.hcall(1, m.LGUEST_DATA), m.hcall(7, m.KDS, m.KSTACK_TOP, 1)]


# -- the console device ------------------------------------------------------------------------
def test_console_device_write_read_exit():
    la, out, err = launcher(stdin=b"typed input")
    data = {MSG: b"hello, world\n", MSG + 0x40: b"to stderr", MSG + 0x80: b"early words\0",
            MSG + 0xC0: b"goodbye\0"}
    ops = init()
    ops += console(la, ConsoleDevice.CMD_WRITE, 1, MSG, 13, 0)
    ops += console(la, ConsoleDevice.CMD_WRITE, 2, MSG + 0x40, 9, 1)
    ops += console(la, ConsoleDevice.CMD_READ, 0, MSG + 0x200, 5, 2)
    ops += console(la, ConsoleDevice.CMD_READ, 0, MSG + 0x205, 100, 3)
    ops += console(la, ConsoleDevice.CMD_READ, 0, MSG + 0x300, 100, 4)     # end of input
    ops += [m.hcall(17, MSG + 0x80)]                                       # early console
    ops += console(la, ConsoleDevice.CMD_EXIT, 7, 0, 0, 5)
    ops += [m.hcall(2, MSG + 0xC0, 1), m.end("spin_k")]
    kernel = m.LauncherKernel(ops, data)
    la.boot(kernel, ["prog"])
    assert kernel.attached is la.host.hw
    outcome = la.run(100_000)
    assert out.getvalue() == b"hello, world\n"
    assert err.getvalue() == b"to stderrearly words"
    assert results(la, 6) == [13, 9, 5, 6, 0, 0]
    assert la.guest_read(MSG + 0x200, 11) == b"typed input"
    # The exit status, then a power-off: no reason to report.
    assert (outcome.status, outcome.reason) == (7, None)
    assert outcome.exit.kind == "dead"


@pytest.mark.parametrize("cmd,fd,buf,length", [
    (ConsoleDevice.CMD_WRITE, 0, MSG, 4),                 # not an output
    (ConsoleDevice.CMD_WRITE, 3, MSG, 4),
    (ConsoleDevice.CMD_READ, 1, MSG, 4),                  # not an input
    (ConsoleDevice.CMD_WRITE, 1, 2 << 20, 4),             # the device page itself
    (ConsoleDevice.CMD_WRITE, 1, (2 << 20) - 2, 4),       # runs past RAM
    (ConsoleDevice.CMD_READ, 0, 0xFFFFFFFF, 4),
    (ConsoleDevice.CMD_WRITE, 1, 0, (1 << 20) + 1),       # too long
    (99, 1, MSG, 4),                                      # no such command
])
def test_console_device_refuses_bad_requests(cmd, fd, buf, length):
    la, out, err = launcher(stdin=b"abcd")
    ops = init() + console(la, cmd, fd, buf, length, 0) + [m.end("halt_k")]
    la.boot(m.LauncherKernel(ops, {MSG: b"data"}), ["prog"])
    before = la.guest_read(0, 2 << 20)
    outcome = la.run(100_000)
    assert results(la, 1) == [EIO]
    assert out.getvalue() == b"" and err.getvalue() == b""
    assert outcome.status is None and outcome.reason.startswith("unhandled trap 13")
    # Nothing else in the Guest's memory changed but the result and its copy.
    after = la.guest_read(0, 2 << 20)
    changed = {i // 4096 for i in range(0, len(before), 4096)
               if before[i:i + 4096] != after[i:i + 4096]}
    assert changed <= {RESULTS // 4096, m.LGUEST_DATA // 4096, m.KSTACK // 4096,
                       (m.KSTACK_TOP - 1) // 4096}


def test_notify_of_an_address_that_is_no_device_is_ignored():
    la, out, err = launcher()
    ops = init() + [m.hcall(17, (2 << 20) + 8), m.hcall(17, 0x7FFFFFFF),
                    m.hcall(17, 0xFFFFFFFF), m.end("halt_k")]
    la.boot(m.LauncherKernel(ops), ["prog"])
    outcome = la.run(100_000)
    assert out.getvalue() == b"" and err.getvalue() == b""
    assert outcome.reason.startswith("unhandled trap 13")


def test_early_console_is_one_string_of_at_most_256_bytes():
    la, out, err = launcher()
    ops = init() + [m.hcall(17, MSG), m.end("halt_k")]
    la.boot(m.LauncherKernel(ops, {MSG: b"x" * 300}), ["prog"])
    la.run(100_000)
    assert err.getvalue() == b"x" * 256


# -- how runs end ------------------------------------------------------------------------------
@pytest.mark.parametrize("ops,status,reason", [
    ([m.hcall(10), m.end("spin_k")], None, "the Guest halted with nothing to wake it"),
    ([m.end("spin_k")], None, "stopped: budget"),
    ([m.hcall(2, MSG, 1), m.end("spin_k")], None, "CRASH: why"),
    ([m.hcall(2, MSG, 2), m.end("spin_k")], None, "restart"),
    ([m.hcall(3), m.end("spin_k")], None, "Bad hypercall 3"),
])
def test_outcomes(ops, status, reason):
    la, out, err = launcher()
    la.boot(m.LauncherKernel(init() + ops, {MSG: b"why\0"}), ["prog"])
    outcome = la.run(50_000)
    assert (outcome.status, outcome.reason) == (status, reason)


def test_exit_status_without_power_off_keeps_the_reason():
    la, out, err = launcher()
    ops = init() + console(la, ConsoleDevice.CMD_EXIT, 3, 0, 0, 0) + [m.hcall(2, MSG, 2),
                                                                     m.end("spin_k")]
    la.boot(m.LauncherKernel(ops, {MSG: b"\0"}), ["prog"])
    outcome = la.run(50_000)
    assert (outcome.status, outcome.reason) == (3, "restart")


# -- layout ----------------------------------------------------------------------------------
def test_boot_lays_out_memory_and_page_tables():
    la, _, _ = launcher(mem_mib=4)
    kernel = m.LauncherKernel([m.end("halt_k")])
    files = [("prog", b"\x7fELF" + bytes(100)), ("data.txt", b"abc")]
    la.boot(kernel, ["prog", "-x"], ["A=1"], files)
    params = dict(zip(("magic", "ram", "args", "args_len", "initrd", "initrd_size",
                       "console", "first_free"),
                      struct.unpack("<8I", la.guest_read(0, BootParams.SIZE))))
    assert params["magic"] == BOOT_MAGIC and params["ram"] == 4 << 20
    assert params["console"] == 4 << 20 == la.console_phys
    assert params["args"] >= kernel.image.load_phys + kernel.image.size
    assert parse_args(la.guest_read(params["args"], params["args_len"])) == \
        (["prog", "-x"], ["A=1"])
    assert parse_archive(la.guest_read(params["initrd"], params["initrd_size"])) == files
    assert la.guest_read(kernel.image.load_phys, 64) == kernel.image.code[:64]
    # The page tables: every page (the device page too) at 0 and at
    # PAGE_OFFSET, supervisor read/write, nothing else.
    pgdir = la.cpu.lg.pgdirs[0].gpgdir
    assert pgdir % PAGE_SIZE == 0 and pgdir < params["first_free"]
    pages = (4 << 20) // PAGE_SIZE + 1
    pgd = struct.unpack("<1024I", la.guest_read(pgdir, PAGE_SIZE))
    used = [i for i, e in enumerate(pgd) if e & 1]
    top = PAGE_OFFSET >> 22
    tables = (pages + 1023) // 1024                     # 4 MiB and the device page: 2
    assert used == [*range(tables), *range(top, top + tables)]
    for i in range(tables):
        assert pgd[i] == pgd[top + i] and pgd[i] & 0x7 == 0x3
        table = struct.unpack("<1024I", la.guest_read(pgd[i] & ~0xFFF, PAGE_SIZE))
        for j, pte in enumerate(table):
            pfn = i * 1024 + j
            if pfn < pages:
                assert pte == pfn << 12 | 0x63
            else:
                assert pte == 0
    assert params["first_free"] <= 4 << 20


# What a command line holds: any bytes but NUL, as Python decodes them
# (UTF-8 with surrogateescape, so b"\xff" is "\udcff").
ARG_STRINGS = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape")) | st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1)


@given(st.lists(ARG_STRINGS, max_size=5), st.lists(ARG_STRINGS, max_size=5))
def test_args_round_trip_through_the_guests_parser(argv, envp):
    assert parse_args(pack_args(argv, envp)) == (argv, envp)


def test_a_non_utf8_argument_reaches_the_program_as_its_bytes():
    """Differential: the same static program natively and in the Guest, with
    an argument that is not UTF-8 (the Launcher once raised on it)."""
    import subprocess
    from tests.lguest_guest.guest_run import run_in_guest
    from tests.programs_table import PROGRAMS_DIR
    path = PROGRAMS_DIR / "bin" / "args"
    native = subprocess.run(["args", b"\xff\xfe", "abc"], executable=path, env={"A": "\xe9"},
                            capture_output=True)
    guest = run_in_guest(path.read_bytes(), ["args", "\udcff\udcfe", "abc"], ["A=\xe9"],
                         mem_mib=8)
    assert guest.stdout == native.stdout and b"\xff\xfe" in native.stdout
    assert guest.status == native.returncode


@given(st.lists(st.tuples(ARG_STRINGS, st.binary(max_size=40)), max_size=5))
def test_archive_round_trip_through_the_guests_parser(files):
    blob = pack_archive(files)
    assert len(blob) % 4 == 0
    assert parse_archive(blob) == [(n, d) for n, d in files]


def test_an_empty_argument_survives():
    assert parse_args(pack_args(["prog", "", "x"], ["A=1"])) == (["prog", "", "x"], ["A=1"])


def test_boot_refuses_what_does_not_fit():
    la, _, _ = launcher(mem_mib=2)
    with pytest.raises(LauncherError, match="give the Guest more memory"):
        la.boot(m.LauncherKernel([m.end("halt_k")]), ["prog"], [], [("big", bytes(3 << 20))])


@pytest.mark.parametrize("mem", [0, 1, 1025])
def test_launcher_refuses_memory_sizes(mem):
    with pytest.raises(ValueError):
        Launcher(mem)


@pytest.mark.parametrize("vector", [0x20, 0x2F, 0x3F, 0xEF, 0x100, 0x1F, 0x0, -1])
def test_launcher_refuses_taken_syscall_vectors(vector):
    with pytest.raises(ValueError):
        Launcher(2, syscall_vector=vector)


@pytest.mark.parametrize("vector", [0x40, 0x80, 0xEE, 0xFF])
def test_launcher_allows_a_second_syscall_vector(vector):
    la = Launcher(2, syscall_vector=vector)
    assert la.config["syscall_vectors"] == frozenset({0x80, vector})


def test_second_syscall_vector_reaches_the_host():
    la, _, _ = launcher(syscall_vector=0x40)
    ops = init() + [m.hcall(6, 0x40, *m.gate(m.label("handler"))), m.end("halt_k")]
    la.boot(m.LauncherKernel(ops), ["prog"])
    assert la.cpu.lg.syscall_vectors == frozenset({0x80, 0x40})


# -- /dev/lguest ------------------------------------------------------------------------------
def host_for(pages=16):
    from lguest_host.core import lguest_host_init
    return lguest_host_init(pages * PAGE_SIZE)


@pytest.mark.parametrize("base,pfnlimit,pgdir,why", [
    (HOST_RESERVED + 1, 8, 0, "not page aligned"),
    (HOST_RESERVED - PAGE_SIZE, 8, 0, "overlaps the Host's pages"),
    (0, 8, 0, "the Switcher"),
    (HOST_RESERVED, 0, 0, "no memory"),
    (HOST_RESERVED, 17, 0, "beyond the machine"),
    (HOST_RESERVED + 8 * PAGE_SIZE, 9, 0, "runs past the end"),
    (HOST_RESERVED, 8, 8 * PAGE_SIZE, "page directory beyond its memory"),
    (HOST_RESERVED, 8, 0x100, "page directory not a page"),
    (HOST_RESERVED, 8, -PAGE_SIZE, "negative page directory"),
])
def test_initialize_refusals(base, pfnlimit, pgdir, why):
    host = host_for()
    with pytest.raises(LauncherError):
        lguest_user.initialize(host, base, pfnlimit, pgdir, 0x1000)


def test_initialize_sets_up_the_guest():
    host = host_for()
    cpu = lguest_user.initialize(host, HOST_RESERVED + PAGE_SIZE, 8, 2 * PAGE_SIZE, 0x1234,
                                 direct_traps=False)
    lg = cpu.lg
    assert lg.mem_base == HOST_RESERVED + PAGE_SIZE and lg.pfn_limit == 8
    assert lg.pgdirs[0].gpgdir == 2 * PAGE_SIZE and lg.pgdirs[0].pgdir
    assert cpu.regs.eip == 0x1234 and cpu.regs.cs == m.KCS
    assert cpu.hrt_expires is None and not lg.direct_traps and lg.dead is None
    assert lg.lguest_data is None


def test_user_send_irq():
    host = host_for()
    cpu = lguest_user.initialize(host, HOST_RESERVED, 8, 0, 0)
    for irq in (0, 5, 31):
        lguest_user.user_send_irq(cpu, irq)
    assert cpu.irqs_pending == 1 | 1 << 5 | 1 << 31
    for bad in (-1, 32, 1000):
        with pytest.raises(LauncherError):
            lguest_user.user_send_irq(cpu, bad)
    assert cpu.irqs_pending == 1 | 1 << 5 | 1 << 31


def test_user_send_irq_wakes_a_halted_guest():
    la, _, _ = launcher()
    ops = init() + [m.hcall(6, 0x23, *m.gate(m.label("handler"), 0xE, 0)), m.hcall(10),
                    m.end("spin_k")]
    la.boot(m.LauncherKernel(ops), ["prog"])
    la.cpu.lg.host.mem.write(HOST_RESERVED + m.LGUEST_DATA + LguestData.blocked_interrupts,
                             4, 0)
    assert la.run(50_000).reason == "the Guest halted with nothing to wake it"
    lguest_user.user_send_irq(la.cpu, 3)
    outcome = la.run(50_000)
    assert outcome.reason == f"unhandled trap 13 at {m.label('handler'):#x} (0x0)"
    assert la.cpu.lg.stats.interrupts[3] == 1
