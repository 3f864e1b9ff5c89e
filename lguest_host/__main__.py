"""The `lguest` command: run a static i386 Linux program as the user process
of a Guest kernel, on the lguest Host, on the Python CPU.

    lguest run PROG [ARGS...]        stdin/stdout/stderr pass through; exits with PROG's status
    lguest run                       a bundled demo program, explained
    lguest run --reflect-syscalls    every system call goes through the Host (no direct trap)
    lguest run --stats               exits, hypercalls, faults and system calls afterwards
    lguest run --mem MIB             Guest memory (default 64)
    lguest run --file PATH           put a host file in the Guest's archive (an argument that
                                     names an existing file is put there anyway)
    lguest run --env K=V ...         the program's environment (default PATH, HOME, TERM)
    lguest run --strace              each system call on stderr
    lguest run --budget N            stop after N instructions

Errors (a missing or malformed program, a Guest the Host had to kill) are one
line on stderr and a non-zero status, never a traceback (LGUEST_DEBUG=1
shows it for internal errors).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "x86core" / "samples" / "demo"
EX_SOFTWARE = 70


def _fail(message: str, status: int = 1) -> int:
    print(f"lguest: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lguest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a static i386 program in a Guest")
    run.add_argument("--reflect-syscalls", action="store_true",
                     help="turn direct traps off: system calls are reflected by the Host")
    run.add_argument("--stats", action="store_true", help="print exit and hypercall counters")
    run.add_argument("--mem", type=int, default=64, metavar="MIB", help="Guest memory in MiB")
    run.add_argument("--file", action="append", default=[], metavar="PATH",
                     help="put this host file in the Guest's archive")
    run.add_argument("--syscall-vector", type=lambda s: int(s, 0), default=None,
                     help="allow a second system call vector (the module parameter)")
    run.add_argument("--budget", type=int, default=None,
                     help="stop after this many instructions (a runaway guard)")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                     help="the Guest program's environment (repeatable; replaces the default)")
    run.add_argument("--strace", action="store_true",
                     help="print each system call the Guest kernel serves, on stderr")
    run.add_argument("prog", nargs="?", help="static i386 ELF executable")
    run.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def guest_files(prog: str, args: list[str], extra: list[str]) -> list:
    """The program first, then --file paths and arguments naming host files."""
    files = [(prog, Path(prog).read_bytes())]
    seen = {prog}
    for path in list(extra) + list(args):
        if path not in seen and os.path.isfile(path):
            try:
                files.append((path, Path(path).read_bytes()))
                seen.add(path)
            except OSError:
                pass
    return files


def cmd_run(ns) -> int:
    from x86core.elf import ELFError, parse_elf
    from lguest_guest.kernel import Kernel
    from .launcher import Launcher
    from .lguest_user import LauncherError
    prog = ns.prog
    args = list(ns.args)
    if prog is None:
        prog = str(DEMO)
        print("lguest: no program given; running the bundled demo, a static i386 program,\n"
              "as the user process of a Python Guest kernel on the lguest Host: its system\n"
              "calls enter the Guest kernel by a direct trap gate (--reflect-syscalls sends\n"
              "them through the Host instead).", file=sys.stderr)
    try:
        data = Path(prog).read_bytes()
    except OSError as e:
        return _fail(f"{prog}: {e.strerror}")
    try:
        parse_elf(data)
    except ELFError as e:
        return _fail(f"{prog}: {e}", 126)
    try:
        files = guest_files(prog, args, ns.file)
        launcher = Launcher(ns.mem, direct_traps=not ns.reflect_syscalls,
                            syscall_vector=ns.syscall_vector)
    except (OSError, ValueError) as e:
        return _fail(str(e))
    trace = None
    if ns.strace:
        def trace(nr, args, result):
            print(f"[{nr}] ({', '.join(hex(a) for a in args[:4])}) = {result}", file=sys.stderr)
    kernel = Kernel(trace=trace)
    envp = list(ns.env) if ns.env else ["PATH=/bin:/usr/bin", "HOME=/", "TERM=dumb"]
    started = time.perf_counter()
    try:
        launcher.boot(kernel, [prog] + args, envp, files)
    except LauncherError as e:
        return _fail(str(e))
    outcome = launcher.run(ns.budget)
    elapsed = time.perf_counter() - started
    if ns.stats:
        print_stats(launcher, kernel, elapsed)
    if outcome.reason is not None and outcome.status is None:
        if outcome.exit is not None and outcome.exit.kind == "budget":
            return _fail(f"{prog}: stopped after {ns.budget:,} instructions (--budget)")
        return _fail(f"Guest stopped: {outcome.reason}")
    return outcome.status if outcome.status is not None else 1


def print_stats(launcher, kernel, elapsed: float) -> None:
    from .abi import HCALL_NAMES, SYSCALL_VECTOR
    lg = launcher.cpu.lg
    st = lg.stats
    hw = launcher.host.hw
    err = sys.stderr
    total = kernel.task.syscalls if kernel.task else 0
    reflected = st.reflected_traps.get(SYSCALL_VECTOR, 0)
    print(f"--- lguest stats ({elapsed:.2f} s, {hw.icount:,} instructions, "
          f"{hw.icount / max(elapsed, 1e-9) / 1e6:.2f} MIPS)", file=err)
    print(f"system calls: {total} ({total - reflected} direct, {reflected} reflected)", file=err)
    print(f"Switcher entries: {st.entries}", file=err)
    print("exits by trap: " + ", ".join(f"{n:#x}:{c}" for n, c in sorted(st.exits.items())),
          file=err)
    print("hypercalls: " + ", ".join(f"{HCALL_NAMES.get(n, n)}:{c}"
                                     for n, c in sorted(st.hypercalls.items())), file=err)
    print(f"  of which from the async ring: {st.async_hypercalls}", file=err)
    print(f"page faults: {st.demand_faults} fixed by the Host (shadow), "
          f"{st.reflected_faults} reflected to the Guest", file=err)
    print("traps reflected: " + ", ".join(f"{n:#x}:{c}" for n, c in
                                          sorted(st.reflected_traps.items())), file=err)
    print("interrupts: " + ", ".join(f"irq{n}:{c}" for n, c in sorted(st.interrupts.items())),
          file=err)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return cmd_run(ns)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`lguest run PROG | head`): quiet, as SIGPIPE would be.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except Exception as e:                  # an internal error: one line, not a traceback
        if os.environ.get("LGUEST_DEBUG"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (LGUEST_DEBUG=1 shows more)",
                     EX_SOFTWARE)


if __name__ == "__main__":
    sys.exit(main())
