"""Running benchmark programs in the Guest and reading the Host's counters.

The lguest benchmarks (syscall, faults, hypercalls, guest_mips) run a Guest
exactly as the `lguest` command does - a Launcher, the Python Guest kernel,
the Host on the x86core CPU - with two additions that only a benchmark needs:

* ``MarkingKernel``, the Guest kernel plus two system calls that the
  benchmark programs (benchmarks/programs/lgbench.c) use: MARK (record a
  ``Mark``: the wall clock, the CPU's retired instructions and the Host's
  counters, at a phase boundary of the program) and FLUSH (the Guest asks
  the Host to drop its shadow of the user mappings, LHCALL_FLUSH_TLB(0),
  while its own page tables keep them).  Both numbers are unused by Linux,
  so natively they are -ENOSYS and the programs run unchanged;
* ``run_program``: boot and run one program, keep stdout, and time boot and
  run separately.

Only benchmarks import this: the Guest kernel proper (lguest_guest) knows
nothing of marks, and the Host is read, never changed.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import attrs

from lguest_guest import boot
from lguest_guest.entry import EAX, EBX, PtRegs
from lguest_guest.kernel import Kernel
from lguest_host.abi import SYSCALL_VECTOR
from lguest_host.launcher import Launcher

from . import common

PROGRAMS = common.ROOT / "benchmarks" / "programs" / "bin"
LGBENCH = PROGRAMS / "lgbench"
TEST_PROGRAMS = common.ROOT / "tests" / "programs"

SYS_MARK = 0x4C47          # must match lgbench.c
SYS_FLUSH = 0x4C48


@attrs.frozen
class Mark:
    """The machine's counters when the program made MARK(id)."""
    id: int
    t: float                    # time.perf_counter()
    icount: int                 # instructions retired by the CPU (all rings)
    entries: int                # Switcher entries: each is one exit to the Host
    demand_faults: int          # #PF the Host fixed in its shadow alone
    reflected_faults: int       # #PF handed to the Guest kernel
    reflected_traps: int        # every trap the Host delivered (deliver_trap)
    hypercalls: int             # trap and ring hypercalls
    async_hypercalls: int
    syscalls: int               # system calls the Guest kernel handled


DELTA_FIELDS = ("icount", "entries", "demand_faults", "reflected_faults", "reflected_traps",
                "hypercalls", "async_hypercalls", "syscalls")


def delta(a: Mark, b: Mark) -> dict:
    """Counters from mark a to mark b: seconds and every counter."""
    out = {"seconds": b.t - a.t}
    for name in DELTA_FIELDS:
        out[name] = getattr(b, name) - getattr(a, name)
    return out


def snapshot(launcher: Launcher, kernel: Kernel, mark_id: int) -> Mark:
    t = time.perf_counter()
    st = launcher.cpu.lg.stats
    return Mark(id=mark_id, t=t, icount=launcher.host.hw.icount, entries=st.entries,
                demand_faults=st.demand_faults, reflected_faults=st.reflected_faults,
                reflected_traps=sum(st.reflected_traps.values()),
                hypercalls=sum(st.hypercalls.values()), async_hypercalls=st.async_hypercalls,
                syscalls=kernel.task.syscalls if kernel.task else 0)


class MarkingKernel(Kernel):
    """The Guest kernel with the benchmarks' MARK and FLUSH system calls.

    `probe(id)` is called at every MARK (run_program sets it to take a
    snapshot); the marks are kept in `marks`, in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.marks: list[Mark] = []
        self.probe = None

    def handle_trap(self, frame: int):
        nr = self.hw.regs[EAX]
        if nr in (SYS_MARK, SYS_FLUSH):
            vector = yield from self.mem.read_u32(frame + PtRegs.vector)
            if vector == SYSCALL_VECTOR:
                if nr == SYS_MARK:
                    if self.probe is not None:
                        self.marks.append(self.probe(self.hw.regs[EBX]))
                else:
                    yield from boot.lguest_flush_tlb_user(self)
                yield from self.mem.write_u32(frame + PtRegs.eax, 0)
                return None
        return (yield from super().handle_trap(frame))


@attrs.define
class GuestRun:
    status: int | None
    reason: str | None
    stdout: bytes
    stderr: bytes
    boot_seconds: float         # Launcher.boot: memory layout, Host init
    run_seconds: float          # Launcher.run: the Guest from its first instruction
    icount: int
    entries: int
    marks: list
    launcher: object
    kernel: object

    @property
    def seconds(self) -> float:
        return self.boot_seconds + self.run_seconds

    def phase(self, a: int, b: int) -> dict:
        """Counters between the program's MARK(a) and MARK(b)."""
        by_id = {m.id: m for m in self.marks}
        if a not in by_id or b not in by_id:
            raise ValueError(f"marks {a} and {b} not both reached (got "
                             f"{sorted(by_id)}; status {self.status}, {self.reason})")
        return delta(by_id[a], by_id[b])


def run_program(program: Path | bytes, argv: list[str], *, direct_traps: bool = True,
                mem_mib: int = 32, kernel: Kernel | None = None, cache: bool = True,
                budget: int | None = None, name: str | None = None) -> GuestRun:
    """Boot a Guest running `program` (a path or the ELF bytes) with `argv`,
    run it to the end and return what happened.  cache=False turns the CPU's
    block cache off (every instruction decoded and dispatched alone)."""
    if isinstance(program, (str, Path)):
        data = Path(program).read_bytes()
        name = name or Path(program).name
    else:
        data = bytes(program)
        name = name or "prog"
    out, err = io.BytesIO(), io.BytesIO()
    launcher = Launcher(mem_mib, direct_traps=direct_traps, stdin=io.BytesIO(),
                        stdout=out, stderr=err)
    launcher.host.hw.blocks.enabled = cache
    kernel = kernel if kernel is not None else MarkingKernel()
    if isinstance(kernel, MarkingKernel):
        kernel.probe = lambda mark_id: snapshot(launcher, kernel, mark_id)
    t0 = time.perf_counter()
    launcher.boot(kernel, list(argv), [], [(name, data)])
    t1 = time.perf_counter()
    outcome = launcher.run(budget)
    t2 = time.perf_counter()
    return GuestRun(status=outcome.status, reason=outcome.reason, stdout=out.getvalue(),
                    stderr=err.getvalue(), boot_seconds=t1 - t0, run_seconds=t2 - t1,
                    icount=launcher.host.hw.icount, entries=launcher.cpu.lg.stats.entries,
                    marks=list(getattr(kernel, "marks", [])), launcher=launcher,
                    kernel=kernel)


def median(values) -> float:
    return common.summarize(values)["median"]
