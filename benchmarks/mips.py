"""Emulation speed: guest MIPS on the C test programs, block cache on and off,
against the same algorithms written directly in Python.

    python -m benchmarks.mips [--quick | --tiny] [--workloads a,b] [--repeats N]
                              [--off-repeats N] [--off-limit N] [--no-write]

For each workload (tests/programs/bin/NAME, a static i386 program) it reports

* instructions retired (cpu.icount) and the run time under x86core with the
  block cache ON (median of the repeats, spread = (max-min)/median), MIPS;
* the same with the block cache OFF (every instruction fetched, decoded and
  dispatched alone) and the cache speedup = MIPS on / MIPS off;
* the run time of benchmarks/pyref/NAME.py - a faithful Python port of the C
  source (same algorithm, same data sizes, same printed lines, checked against
  tests/programs/expected/) - and emulated time / direct-Python time.

Only `Process.run()` is timed (not the ELF load).  Every run starts with a
fresh CPU.  Compiled blocks are shared by every CPU in a process
(x86core.blocks.Recipe), so the cache-ON figure is taken three times: COLD,
with that store emptied before each run (every block of the program decoded
and compiled in the timed run; the threaded tier's handlers made from the
handler library, which is program-independent and built at install:
x86core/handler_library.py): the figure the goal is judged on; NO-LIB, the
same with every handler's shape compiled in the run as well (what COLD was
before the library: it shows what the library saves; COLD and NO-LIB runs
alternate, as this machine's speed drifts over seconds); and WARM, after one
untimed run of the same program (its hot code starting as the regions
compiled then, hardly any compiling: what a program run again, or a long
run, sees).  The guest's
output and exit status are compared with the expected files on every run.

Modes: full (default: every workload, cache ON x5, cache OFF x2 - several
minutes, cache OFF is 30-40x slower), --quick (cache ON x2 on every workload,
cache OFF x1 on the three smallest), --tiny (one workload, one repeat, the
cache-OFF run cut at --off-limit instructions: for the test suite).
Results go to benchmarks/results/mips.json.
"""
from __future__ import annotations

import argparse
import io
import sys

from . import common
from . import pyref

PROGRAMS = common.ROOT / "tests" / "programs"
WORKLOADS = ("crc32", "sort", "sha256", "sieve", "recursion", "intarith", "demo")
GOAL_MIPS = 10.0
GOAL_CACHE_SPEEDUP = 5.0

PLANS = {
    "full": {"workloads": WORKLOADS, "on_repeats": 5, "off_workloads": WORKLOADS,
             "off_repeats": 2, "py_repeats": 7, "off_limit": None},
    "quick": {"workloads": WORKLOADS, "on_repeats": 2,
              "off_workloads": ("sha256", "intarith", "crc32"),
              "off_repeats": 1, "py_repeats": 3, "off_limit": None},
    "tiny": {"workloads": ("sha256",), "on_repeats": 1, "off_workloads": ("sha256",),
             "off_repeats": 1, "py_repeats": 1, "off_limit": 50_000},
}


# ---------------------------------------------------------------------------
# One workload
# ---------------------------------------------------------------------------

def expected(name: str) -> tuple[bytes, int]:
    out = (PROGRAMS / "expected" / f"{name}.out").read_bytes()
    status = int((PROGRAMS / "expected" / f"{name}.status").read_text().split()[0])
    return out, status


def _new_process(name: str, cache: bool):
    from x86core.linux import Process
    out = io.BytesIO()
    proc = Process(str(PROGRAMS / "bin" / name), [name], [], stdout=out, stderr=io.BytesIO(),
                   cache=cache)
    return proc, out


def emulate(name: str, cache: bool, repeats: int, limit: int | None = None,
            warm: bool = False, library: bool = True) -> dict:
    """Time `repeats` runs of NAME under x86core (cache on/off; `limit` caps the
    instructions run, making a partial run whose output is not checked).
    Cold runs start with no compiled code in the process; `warm` runs start
    with the code one untimed run compiled; without the `library`, threaded-
    tier handlers are compiled as their shapes are met."""
    from x86core import blocks, interpreter
    want_out, want_status = expected(name)
    runs = []

    def setup():
        interpreter.use_library(library)
        if not warm:
            blocks.clear_recipes()
        return _new_process(name, cache)

    def body(state):
        proc, out = state
        status = proc.run(limit)
        runs.append((proc.cpu.icount, proc.cpu.blocks.compiled, status, out.getvalue(),
                     proc.reason, proc.cpu.blocks.reused))
        return status

    label = (f"mips: {name} cache {'on' if cache else 'off'}{' warm' if warm else ''}"
             f"{'' if library else ' no-lib'}")
    if warm:
        blocks.clear_recipes()
        _new_process(name, cache)[0].run(limit)
    try:
        timing, _ = common.time_call(body, repeats, setup=setup, label=label)
    finally:
        interpreter.use_library(True)
    counts = {r[0] for r in runs}
    icount, compiled, status, output, reason, _ = runs[-1]
    partial = limit is not None and icount >= limit and status == 124
    ok = partial or (status == want_status and output == want_out)
    res = {
        "cache": cache,
        "warm": warm,
        "instructions": icount,
        "instructions_consistent": len(counts) == 1,
        "partial": partial,
        "limit": limit,
        **_rates(icount, timing),
        "blocks_compiled": compiled,
        "blocks_reused": runs[-1][5],
        "status": status,
        "output_ok": ok,
    }
    if not ok:
        res["problem"] = (f"exit status {status} (want {want_status}), output "
                          f"{'matches' if output == want_out else 'differs'}; {reason}")
        common.progress(f"mips: {name}: WRONG RESULT: {res['problem']}")
    common.progress(f"{label}: {icount:,} insns, median {timing['median']:.3f} s, "
                    f"{res['mips']:.3f} MIPS")
    return res


def python_reference(name: str, repeats: int) -> dict:
    """Time the direct-Python port and check it prints what the C program prints."""
    module = pyref.load(name)
    want_out, want_status = expected(name)
    timing, (text, status) = common.time_call(lambda _: module.main([name]), repeats)
    got = text.encode()
    if got != want_out or status != want_status:
        raise AssertionError(f"benchmarks/pyref/{name}.py does not reproduce "
                             f"tests/programs/expected/{name}.out (status {status}, "
                             f"want {want_status})")
    common.progress(f"mips: {name} python: median {timing['median'] * 1e3:.2f} ms")
    return {"seconds": timing, "output_ok": True}


def _rates(icount: int, timing: dict) -> dict:
    """The timing and the MIPS figures it gives for `icount` instructions."""
    rates = [icount / s for s in timing["samples"] if s > 0]
    return {"seconds": timing, "mips": icount / timing["median"] / 1e6,
            "mips_min": min(rates) / 1e6, "mips_max": max(rates) / 1e6}


def interleaved(name: str, repeats: int) -> tuple[dict, dict]:
    """Cold runs with the handler library and without, one of each in turn
    (alternating which goes first): this machine's speed drifts by tens of
    percent over seconds, which two blocks of runs would measure as well."""
    runs: dict[bool, list] = {True: [], False: []}
    for i in range(repeats):
        for library in ((True, False) if i % 2 == 0 else (False, True)):
            runs[library].append(emulate(name, True, 1, library=library))
    return merged(runs[True]), merged(runs[False])


def merged(results: list[dict]) -> dict:
    """One emulate() result from several of the same configuration."""
    out = dict(results[-1])
    samples = [s for r in results for s in r["seconds"]["samples"]]
    out.update(_rates(out["instructions"], common.summarize(samples)))
    out["instructions_consistent"] = all(r["instructions_consistent"] for r in results) and \
        len({r["instructions"] for r in results}) == 1
    out["output_ok"] = all(r["output_ok"] for r in results)
    problems = [r["problem"] for r in results if "problem" in r]
    if problems:
        out["problem"] = problems[0]
    return out


def measure_workload(name: str, plan: dict) -> dict:
    on, no_library = interleaved(name, plan["on_repeats"])
    warm = emulate(name, True, plan["on_repeats"], warm=True)
    off = None
    if name in plan["off_workloads"]:
        off = emulate(name, False, plan["off_repeats"], plan["off_limit"])
    py = python_reference(name, plan["py_repeats"])
    emu_s = on["seconds"]["median"]
    py_s = py["seconds"]["median"]
    return {
        "instructions": on["instructions"],
        "cache_on": on,
        "cache_on_warm": warm,
        "cache_on_no_library": no_library,
        "cache_off": off,
        "cache_speedup": on["mips"] / off["mips"] if off else None,
        "python": py,
        "emulated_over_python": emu_s / py_s if py_s > 0 else None,
        # guest instructions over the Python port's time: the "MIPS" plain Python
        # would need to match the port doing the same work
        "python_equivalent_mips": on["instructions"] / py_s / 1e6 if py_s > 0 else None,
        "output_ok": on["output_ok"] and warm["output_ok"] and no_library["output_ok"]
        and (off is None or off["output_ok"]) and py["output_ok"],
    }


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------

def run(quick: bool = False, tiny: bool = False, workloads: list[str] | None = None,
        repeats: int | None = None, off_repeats: int | None = None,
        off_limit: int | None = None, write: bool = True) -> dict:
    from x86core import interpreter
    interpreter.ensure_library()        # (not timed: a part of the installation)
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode])
    if workloads:
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
        plan["workloads"] = tuple(workloads)
        if mode == "full" or tiny:
            plan["off_workloads"] = tuple(workloads)
    if repeats:
        plan["on_repeats"] = plan["py_repeats"] = repeats
    if off_repeats:
        plan["off_repeats"] = off_repeats
    if off_limit is not None:
        plan["off_limit"] = off_limit or None
    plan["off_workloads"] = tuple(w for w in plan["off_workloads"] if w in plan["workloads"])

    common.progress(f"mips: {mode} run, workloads {', '.join(plan['workloads'])}; "
                    f"cache off on {', '.join(plan['off_workloads']) or 'none'}")
    figures = {}
    for name in plan["workloads"]:
        figures[name] = measure_workload(name, plan)

    on_mips = [f["cache_on"]["mips"] for f in figures.values()]
    warm_mips = [f["cache_on_warm"]["mips"] for f in figures.values()]
    no_library_mips = [f["cache_on_no_library"]["mips"] for f in figures.values()]
    total_insns = sum(f["instructions"] for f in figures.values())
    total_on_s = sum(f["cache_on"]["seconds"]["median"] for f in figures.values())
    speedups = [f["cache_speedup"] for f in figures.values() if f["cache_speedup"]]
    py_ratios = [f["emulated_over_python"] for f in figures.values()
                 if f["emulated_over_python"]]
    summary = {
        "mips_geomean": common.geomean(on_mips),
        "mips_aggregate": total_insns / total_on_s / 1e6,
        "mips_min": min(on_mips),
        "mips_max": max(on_mips),
        "mips_warm_geomean": common.geomean(warm_mips),
        "mips_warm_min": min(warm_mips),
        "mips_warm_max": max(warm_mips),
        "mips_no_library_geomean": common.geomean(no_library_mips),
        "handler_library_shapes": interpreter.library_shapes(),
        "cache_speedup_geomean": common.geomean(speedups),
        "cache_speedup_min": min(speedups) if speedups else None,
        "emulated_over_python_geomean": common.geomean(py_ratios),
        "all_output_ok": all(f["output_ok"] for f in figures.values()),
    }
    goals = {
        "mips": {"goal": GOAL_MIPS, "value": summary["mips_geomean"],
                 "met": summary["mips_geomean"] >= GOAL_MIPS,
                 "what": "guest MIPS with the block cache on, compiling included (geometric mean)"},
        "mips_warm": {"goal": GOAL_MIPS, "value": summary["mips_warm_geomean"],
                      "met": summary["mips_warm_geomean"] >= GOAL_MIPS,
                      "what": "the same with the code compiled by an earlier run (geometric mean)"},
        "cache_speedup": {"goal": GOAL_CACHE_SPEEDUP, "value": summary["cache_speedup_geomean"],
                          "met": bool(speedups) and summary["cache_speedup_geomean"]
                          >= GOAL_CACHE_SPEEDUP,
                          "what": "MIPS cache on / MIPS cache off (geometric mean)"},
    }
    result = {
        "benchmark": "mips",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
        "workloads": figures,
        "summary": summary,
        "goals": goals,
    }
    if write:
        result["json_path"] = str(common.write_json("mips", result))
    return result


def table(result: dict) -> str:
    headers = ("workload", "insns", "on s", "spread", "MIPS", "blocks", "no-lib MIPS", "warm s",
               "warm MIPS",
               "off s", "off MIPS", "cache x", "python s", "emu/py")
    rows = []
    for name, f in result["workloads"].items():
        on, off, py = f["cache_on"], f["cache_off"], f["python"]
        off_s = None
        if off:
            off_s = common.fmt(off["seconds"]["median"]) + ("*" if off["partial"] else "")
        rows.append((
            name + ("" if f["output_ok"] else " (WRONG OUTPUT)"),
            f["instructions"],
            on["seconds"]["median"],
            f"{on['seconds']['spread_pct']:.0f}%" if on["seconds"]["n"] > 1 else "-",
            on["mips"],
            on["blocks_compiled"],
            f["cache_on_no_library"]["mips"],
            f["cache_on_warm"]["seconds"]["median"],
            f["cache_on_warm"]["mips"],
            off_s or "-",
            off["mips"] if off else None,
            common.fmt(f["cache_speedup"]) + "x" if f["cache_speedup"] else "-",
            py["seconds"]["median"],
            common.fmt(f["emulated_over_python"]) + "x",
        ))
    s, g = result["summary"], result["goals"]
    rows.append(("geomean", "", "", "", s["mips_geomean"], "", s["mips_no_library_geomean"], "",
                 s["mips_warm_geomean"], "", "",
                 common.fmt(s["cache_speedup_geomean"]) + "x" if s["cache_speedup_geomean"]
                 else "-", "", common.fmt(s["emulated_over_python_geomean"]) + "x"))
    m = result["machine"]
    plan = result["plan"]

    def verdict(goal):
        return "MET" if goal["met"] else "not met"

    notes = [
        "",
        f"goal >= {GOAL_MIPS:g} MIPS (cache on): {verdict(g['mips'])} - geomean "
        f"{common.fmt(s['mips_geomean'])}, range {common.fmt(s['mips_min'])}.."
        f"{common.fmt(s['mips_max'])}, aggregate {common.fmt(s['mips_aggregate'])}",
        f"goal >= {GOAL_MIPS:g} MIPS, warm (blocks compiled by an earlier run): "
        f"{verdict(g['mips_warm'])} - geomean {common.fmt(s['mips_warm_geomean'])}, range "
        f"{common.fmt(s['mips_warm_min'])}..{common.fmt(s['mips_warm_max'])}",
        f"goal block cache >= {GOAL_CACHE_SPEEDUP:g}x: {verdict(g['cache_speedup'])} - geomean "
        + (f"{common.fmt(s['cache_speedup_geomean'])}x, min {common.fmt(s['cache_speedup_min'])}x"
           if s["cache_speedup_geomean"] else "n/a (no cache-off runs)"),
        f"no-lib: cold with every threaded-tier shape compiled in the run, not taken from "
        f"the handler library ({s['handler_library_shapes']:,} shapes, built once per "
        f"installation: x86core/handler_library.py) - geomean {common.fmt(s['mips_no_library_geomean'])}",
        f"emu/py: emulated run time / the same algorithm in plain Python "
        f"(benchmarks/pyref, output checked) - geomean "
        f"{common.fmt(s['emulated_over_python_geomean'])}x",
        f"mode {result['mode']}: cache on x{plan['on_repeats']} cold and x{plan['on_repeats']} "
        f"warm, cache off "
        f"x{plan['off_repeats']} on {len(plan['off_workloads'])} workload(s), python "
        f"x{plan['py_repeats']}; times are medians, spread = (max-min)/median"
        + ("; * = cache-off run cut at %s insns" % f"{plan['off_limit']:,}"
           if any(f["cache_off"] and f["cache_off"]["partial"]
                  for f in result["workloads"].values()) else ""),
        f"{m['cpu_model']} ({m['cpus']} cpus), {m['python_implementation']} {m['python']}, "
        f"numpy {m['numpy']}, {m['platform']}",
    ]
    if "json_path" in result:
        notes.append(f"written to {result['json_path']}")
    return common.format_table(headers, rows, title="mips: guest instructions per second "
                               "(x86core, static i386 test programs)", notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer repeats, cache off on 3 only")
    mode.add_argument("--tiny", action="store_true", help="one workload, one repeat (tests)")
    ap.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--repeats", type=int, help="cache-on and python repeats")
    ap.add_argument("--off-repeats", type=int, help="cache-off repeats")
    ap.add_argument("--off-limit", type=int,
                    help="cap cache-off runs at N instructions (0: no cap)")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny,
                 workloads=args.workloads.split(",") if args.workloads else None,
                 repeats=args.repeats, off_repeats=args.off_repeats, off_limit=args.off_limit,
                 write=not args.no_write)
    print(table(result))
    return 0 if result["summary"]["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
