"""Executor cost in host instructions: what a guest instruction costs the
machine, counted rather than timed.

    python -m benchmarks.cost [--quick | --tiny] [--workloads a,b] [--no-write]

Wall-clock figures on a shared machine drift (this one's speed has varied
by 1.5-2x within an hour), so A/B comparisons of the executor are made here
by counting: each workload of benchmarks.mips runs under valgrind's
cachegrind (instruction counts only, no cache simulation) in a fresh Python
process, once with nothing run, once with one run (COLD: every block
decoded and compiled in it) and once with two (the second is WARM).  The
differences, over the guest's instruction count, are host instructions per
guest instruction: lower is better.  Two counts of the same run differ by up
to about 3% (hash seeds and the program's AT_RANDOM bytes are fixed; what
remains is allocation and collection timing), so compare geomeans over the
workloads, or medians of a few runs.  At the host's instruction
rate R (instructions/s), MIPS = R / cost.

Needs valgrind (Debian's, on every machine kind here); without it the run
reports that and measures nothing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from . import common
from .mips import WORKLOADS

PLANS = {"full": WORKLOADS, "quick": ("sha256", "intarith", "crc32"), "tiny": ("demo",)}


def child(name: str, runs: int) -> None:
    """In the measured process: `runs` runs of NAME, then one more loaded
    but not run (so every count includes the same loading work)."""
    from .mips import _new_process
    for _ in range(runs):
        _new_process(name, True)[0].run(None)
    _new_process(name, True)


def host_instructions(name: str, runs: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", X86CORE_RANDOM="fixed")
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-m", "benchmarks.cost", "--child", name, str(runs)],
        capture_output=True, text=True, env=env, cwd=common.ROOT)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"valgrind run of {name} failed: {out.stderr[-400:]}")
    return int(found.group(1).replace(",", ""))


def guest_instructions(name: str) -> int:
    from .mips import _new_process
    proc = _new_process(name, True)[0]
    proc.run(None)
    return proc.cpu.icount


def run(quick: bool = False, tiny: bool = False, workloads: list[str] | None = None,
        write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    names = tuple(workloads) if workloads else PLANS[mode]
    result = {"benchmark": "cost", "mode": mode, "date": common.timestamp(),
              "machine": common.machine_info(), "workloads": {}}
    if shutil.which("valgrind") is None:
        result["skipped"] = "valgrind not installed"
        if write:
            result["json_path"] = str(common.write_json("cost", result))
        return result
    from x86core import interpreter
    # The children read the threaded tier's handler library: build it first if stale.
    result["handler_library_shapes"] = interpreter.ensure_library()
    jobs = [(name, runs) for name in names for runs in (0, 1, 2)]
    common.progress(f"cost: {len(jobs)} valgrind runs of {', '.join(names)}")
    with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: host_instructions(*job), jobs)))
    for name in names:
        guest = guest_instructions(name)
        cold = (counts[name, 1] - counts[name, 0]) / guest
        warm = (counts[name, 2] - counts[name, 1]) / guest
        result["workloads"][name] = {"guest_instructions": guest, "cold": cold, "warm": warm}
        common.progress(f"cost: {name}: cold {cold:.0f}, warm {warm:.0f} host instructions "
                        "per guest instruction")
    figures = result["workloads"].values()
    result["summary"] = {"cold_geomean": common.geomean(f["cold"] for f in figures),
                         "warm_geomean": common.geomean(f["warm"] for f in figures)}
    if write:
        result["json_path"] = str(common.write_json("cost", result))
    return result


def table(result: dict) -> str:
    if "skipped" in result:
        return f"cost: skipped ({result['skipped']})"
    rows = [(name, f["guest_instructions"], f["cold"], f["warm"])
            for name, f in result["workloads"].items()]
    s = result["summary"]
    rows.append(("geomean", "", s["cold_geomean"], s["warm_geomean"]))
    notes = ["host instructions (valgrind Ir) per guest instruction; lower is better; "
             "two counts of one run differ by up to ~3%", common.machine_line(result["machine"])]
    if "json_path" in result:
        notes.append(f"written to {result['json_path']}")
    return common.format_table(("workload", "guest insns", "cold", "warm"), rows,
                               title="cost: host instructions per guest instruction", notes=notes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="three workloads")
    mode.add_argument("--tiny", action="store_true", help="one small workload (tests)")
    ap.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny,
                 workloads=args.workloads.split(",") if args.workloads else None,
                 write=not args.no_write)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
