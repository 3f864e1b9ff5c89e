"""Running a program as the Guest's user process, for tests and benchmarks."""
import io

import attrs

from lguest_guest.kernel import Kernel
from lguest_host.launcher import Launcher


@attrs.define
class GuestRun:
    status: int | None
    stdout: bytes
    stderr: bytes
    reason: str | None
    launcher: object
    kernel: object


def run_in_guest(program: bytes, argv, envp=(), files=(), *, direct_traps=True, mem_mib=32,
                 stdin=b"", budget=None, name="prog") -> GuestRun:
    out, err = io.BytesIO(), io.BytesIO()
    launcher = Launcher(mem_mib, direct_traps=direct_traps, stdin=io.BytesIO(stdin),
                        stdout=out, stderr=err)
    kernel = Kernel()
    launcher.boot(kernel, list(argv), list(envp), [(name, program)] + list(files))
    outcome = launcher.run(budget)
    return GuestRun(outcome.status, out.getvalue(), err.getvalue(), outcome.reason,
                    launcher, kernel)
