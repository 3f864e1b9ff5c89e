"""Run benchmarks:  python -m benchmarks [NAME ...] [--quick] [--tiny] [--list]

With no NAME, every benchmark in REGISTRY runs, in order.  Each one's table
is printed to stdout as it finishes (progress goes to stderr) and its result
is written to benchmarks/results/NAME.json by the benchmark itself (with
matplotlib installed - the `plot` extra - some also draw NAME.png).  After
more than one benchmark, a last table lists every goal a result states
(its "goals": {key: {goal, value, met, what}}) as MET or not met.

A benchmark is a module with ``run(quick=False, ...) -> dict`` and, optionally,
``table(result) -> str`` (otherwise the result's scalar entries are shown).
To add one, write benchmarks/NAME.py and add one line to REGISTRY.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import traceback

from . import common

# name -> (module, one-line description)
REGISTRY: dict[str, tuple[str, str]] = {
    "decode": ("benchmarks.decode", "decoder throughput on gcc -m32 code"),
    "mips": ("benchmarks.mips", "guest MIPS, block cache on/off, vs direct Python"),
    "cost": ("benchmarks.cost", "host instructions per guest instruction (valgrind), cold/warm"),
    "guest_mips": ("benchmarks.guest_mips",
                   "the same workloads as lguest Guest user programs (ring 3, paging on)"),
    "syscall": ("benchmarks.syscall", "getpid in the Guest: direct trap vs reflected"),
    "hypercalls": ("benchmarks.hypercalls", "PTE updates: async ring (lazy MMU) vs traps"),
    "faults": ("benchmarks.faults", "page faults: fixed by the Host vs reflected to the Guest"),
    "startup": ("benchmarks.startup", "`lguest run` as a subprocess: wall time, peak RSS"),
}


def load(name: str):
    return importlib.import_module(REGISTRY[name][0])


def run_one(name: str, quick: bool = False, tiny: bool = False) -> dict:
    """Import benchmark NAME and call its run(): tiny=True is passed only to a
    run() that accepts it (others get quick=True instead)."""
    module = load(name)
    kwargs = {"quick": quick or tiny}
    if tiny and "tiny" in inspect.signature(module.run).parameters:
        kwargs["tiny"] = True
    result = module.run(**kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"{name}.run() returned {type(result).__name__}, not dict")
    return result


def render(name: str, result: dict) -> str:
    module = load(name)
    table = getattr(module, "table", None)
    if callable(table):
        return table(result)
    return common.generic_table(result, title=name)


def goal_rows(name: str, result: dict) -> list[tuple]:
    """One row per entry of a result's "goals" ({key: {goal, value, met, what}})."""
    rows = []
    for goal in (result.get("goals") or {}).values():
        rows.append((name, goal.get("what", ""), common.fmt(goal.get("goal")),
                     common.fmt(goal.get("value")), "MET" if goal.get("met") else "not met"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="Run the project's benchmarks.")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run (default: all of {', '.join(REGISTRY)})")
    ap.add_argument("--quick", action="store_true", help="fewer repeats / smaller inputs")
    ap.add_argument("--tiny", action="store_true",
                    help="smallest runs that still exercise everything (used by the tests)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)

    if args.list:
        for name, (module, what) in REGISTRY.items():
            print(f"{name:12} {what}  ({module})")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")

    failed = []
    goals = []
    for name in args.names or list(REGISTRY):
        common.progress(f"== {name}")
        t0 = time.perf_counter()
        try:
            result = run_one(name, quick=args.quick, tiny=args.tiny)
            text = render(name, result)
        except Exception:                       # report it, go on with the others
            traceback.print_exc()
            print(f"== {name}: FAILED\n", flush=True)
            failed.append(name)
            continue
        print(f"== {name} ({time.perf_counter() - t0:.1f} s)")
        print(text)
        print(flush=True)
        goals.extend(goal_rows(name, result))
    if len(goals) > 1:
        print(common.format_table(("benchmark", "goal", "target", "measured", "verdict"),
                                  goals, title="== goals"), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
