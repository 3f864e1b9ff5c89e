"""Emulation speed inside lguest: the executor workloads (tests/programs)
as Guest user programs at ring 3 with paging on, block cache on and off,
against bare x86core and the same algorithms in plain Python.

    python -m benchmarks.guest_mips [--quick | --tiny] [--workloads a,b] [--repeats N]
                                    [--off-limit N] [--no-write]

For each workload (tests/programs/bin/NAME) it reports

* the Guest run: `lguest run NAME` in-process (Launcher, the Python Guest
  kernel, the Host and its Switcher on the x86core CPU), timed from the
  Guest's first instruction to power-off (Launcher.run; the Launcher's
  memory layout is not in it, the Guest kernel's boot and the ELF load
  are).  Instructions = every instruction the CPU retired (user program,
  Guest entry code, Switcher), MIPS = instructions / time; output and exit
  status are checked against tests/programs/expected on every run;
* "net" MIPS: the same with a run of an empty program (lgbench printing its
  usage) subtracted, i.e. without the fixed cost of booting the Guest;
* the block cache OFF (host.hw.blocks.enabled = False) and the cache
  speedup;
* bare x86core (benchmarks/mips.py's Process.run: the same program at
  ring 3 under the Linux system-call emulation, no Guest kernel or Host)
  and lguest's overhead over it;
* the plain-Python port (benchmarks/pyref) and emulated time / Python time.

Compiled blocks are shared by every CPU in the process (x86core.blocks),
so as in benchmarks.mips the cache-on runs are COLD (that store emptied
before each run: the figures the goals are judged on) and, after one untimed
run, WARM (hot code from its start as the regions compiled then).

Goals (the issue's): >= 10 MIPS in the Guest with the cache on (geomean),
and within 4x of the direct Python (geomean of Guest time / Python time).
Results: benchmarks/results/guest_mips.json (and guest_mips.png).
"""
from __future__ import annotations

import argparse
import sys

from . import common, guest, mips

WORKLOADS = mips.WORKLOADS
GOAL_MIPS = 10.0
GOAL_PY_RATIO = 4.0

PLANS = {
    "full": {"workloads": WORKLOADS, "on_repeats": 5, "off_workloads": WORKLOADS,
             "off_repeats": 1, "bare_repeats": 3, "py_repeats": 7, "off_limit": None,
             "base_repeats": 5},
    "quick": {"workloads": WORKLOADS, "on_repeats": 2, "off_workloads": ("sha256",),
              "off_repeats": 1, "bare_repeats": 1, "py_repeats": 3, "off_limit": None,
              "base_repeats": 3},
    "tiny": {"workloads": ("sha256",), "on_repeats": 1, "off_workloads": ("sha256",),
             "off_repeats": 1, "bare_repeats": 1, "py_repeats": 1, "off_limit": 60_000,
             "base_repeats": 1},
}


def guest_runs(name: str, cache: bool, repeats: int, limit: int | None = None,
               warm: bool = False) -> dict:
    """`repeats` Guest runs of tests/programs/bin/NAME; `limit` caps the
    instructions (a partial run, whose output is not checked).  Cold runs
    start with no compiled code in the process, `warm` ones after a run."""
    from x86core import blocks
    want_out, want_status = mips.expected(name)
    samples, runs = [], []
    if warm:
        guest.run_program(mips.PROGRAMS / "bin" / name, [name], cache=cache, budget=limit)
    for i in range(repeats):
        if not warm:
            blocks.clear_recipes()
        r = guest.run_program(mips.PROGRAMS / "bin" / name, [name], cache=cache, budget=limit)
        samples.append(r.run_seconds)
        runs.append(r)
        common.progress(f"guest_mips: {name} cache {'on' if cache else 'off'}"
                        f"{' warm' if warm else ''} {i + 1}/"
                        f"{repeats}: {r.run_seconds:.3f} s, {r.icount:,} insns")
    last = runs[-1]
    partial = limit is not None and last.status is None and last.icount >= limit
    ok = partial or all(r.status == want_status and r.stdout == want_out for r in runs)
    timing = common.summarize(samples)
    res = {
        "cache": cache,
        "instructions": last.icount,
        "instructions_consistent": len({r.icount for r in runs}) == 1,
        "entries": last.entries,
        "partial": partial,
        "limit": limit,
        "seconds": timing,
        "boot_seconds": guest.median([r.boot_seconds for r in runs]),
        "mips": last.icount / timing["median"] / 1e6,
        "status": last.status,
        "output_ok": ok,
    }
    if not ok:
        res["problem"] = (f"exit status {last.status} (want {want_status}), "
                          f"output {'matches' if last.stdout == want_out else 'differs'}; "
                          f"{last.reason}")
        common.progress(f"guest_mips: {name}: WRONG RESULT: {res['problem']}")
    return res


def baseline(repeats: int) -> dict:
    """An empty Guest program (lgbench with no arguments prints its usage):
    the fixed cost of booting the Guest and exiting (cold, as the runs it
    is subtracted from)."""
    from x86core import blocks
    runs = []
    for _ in range(repeats):
        blocks.clear_recipes()
        runs.append(guest.run_program(guest.LGBENCH, ["lgbench"]))
    return {"seconds": common.summarize([r.run_seconds for r in runs]),
            "instructions": runs[-1].icount, "entries": runs[-1].entries,
            "output_ok": all(r.status == 64 for r in runs)}


def measure_workload(name: str, plan: dict, base: dict) -> dict:
    on = guest_runs(name, True, plan["on_repeats"])
    warm = guest_runs(name, True, plan["on_repeats"], warm=True)
    off = None
    if name in plan["off_workloads"]:
        off = guest_runs(name, False, plan["off_repeats"], plan["off_limit"])
    bare = mips.emulate(name, True, plan["bare_repeats"])
    py = mips.python_reference(name, plan["py_repeats"])
    guest_s = on["seconds"]["median"]
    py_s = py["seconds"]["median"]
    net_s = guest_s - base["seconds"]["median"]
    net_insns = on["instructions"] - base["instructions"]
    return {
        "instructions": on["instructions"],
        "cache_on": on,
        "cache_on_warm": warm,
        "cache_off": off,
        "cache_speedup": on["mips"] / off["mips"] if off else None,
        "net_mips": net_insns / net_s / 1e6 if net_s > 0 and net_insns > 0 else None,
        "bare": {"instructions": bare["instructions"], "seconds": bare["seconds"],
                 "mips": bare["mips"], "output_ok": bare["output_ok"]},
        "guest_over_bare": guest_s / bare["seconds"]["median"],
        "python": py,
        "guest_over_python": guest_s / py_s if py_s > 0 else None,
        "output_ok": on["output_ok"] and warm["output_ok"] and (off is None or off["output_ok"])
        and bare["output_ok"] and py["output_ok"],
    }


def run(quick: bool = False, tiny: bool = False, workloads: list[str] | None = None,
        repeats: int | None = None, off_limit: int | None = None,
        write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode])
    if workloads:
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
        plan["workloads"] = tuple(workloads)
    if repeats:
        plan["on_repeats"] = plan["py_repeats"] = repeats
    if off_limit is not None:
        plan["off_limit"] = off_limit or None
    plan["off_workloads"] = tuple(w for w in plan["off_workloads"] if w in plan["workloads"])
    common.progress(f"guest_mips: {mode} run, workloads {', '.join(plan['workloads'])}; "
                    f"cache off on {', '.join(plan['off_workloads']) or 'none'}")
    base = baseline(plan["base_repeats"])
    figures = {name: measure_workload(name, plan, base) for name in plan["workloads"]}

    on_mips = [f["cache_on"]["mips"] for f in figures.values()]
    net = [f["net_mips"] for f in figures.values() if f["net_mips"]]
    speedups = [f["cache_speedup"] for f in figures.values() if f["cache_speedup"]]
    py_ratios = [f["guest_over_python"] for f in figures.values() if f["guest_over_python"]]
    summary = {
        "mips_geomean": common.geomean(on_mips),
        "mips_min": min(on_mips),
        "mips_max": max(on_mips),
        "mips_warm_geomean": common.geomean([f["cache_on_warm"]["mips"]
                                             for f in figures.values()]),
        "net_mips_geomean": common.geomean(net),
        "bare_mips_geomean": common.geomean([f["bare"]["mips"] for f in figures.values()]),
        "cache_speedup_geomean": common.geomean(speedups),
        "guest_over_bare_geomean": common.geomean([f["guest_over_bare"]
                                                   for f in figures.values()]),
        "guest_over_python_geomean": common.geomean(py_ratios),
        "all_output_ok": all(f["output_ok"] for f in figures.values()) and base["output_ok"],
    }
    goals = {
        "mips": {"goal": GOAL_MIPS, "value": summary["mips_geomean"],
                 "met": summary["mips_geomean"] >= GOAL_MIPS,
                 "what": "Guest MIPS, block cache on (geomean)"},
        "python_ratio": {"goal": GOAL_PY_RATIO, "value": summary["guest_over_python_geomean"],
                         "met": bool(py_ratios)
                         and summary["guest_over_python_geomean"] <= GOAL_PY_RATIO,
                         "what": "Guest run time / direct Python time (geomean)"},
    }
    result = {
        "benchmark": "guest_mips",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
        "baseline": base,
        "workloads": figures,
        "summary": summary,
        "goals": goals,
    }
    if write:
        result["json_path"] = str(common.write_json("guest_mips", result))
        names = list(figures)
        panels = [
            {"title": "MIPS: in the Guest vs bare x86core", "ylabel": "MIPS",
             "labels": names,
             "series": {"Guest (cache on)": [figures[n]["cache_on"]["mips"] for n in names],
                        "bare x86core": [figures[n]["bare"]["mips"] for n in names]},
             "goal": GOAL_MIPS, "goal_label": f"goal {GOAL_MIPS:g} MIPS"},
            {"title": "Guest time / plain Python time", "ylabel": "ratio (log)",
             "labels": names, "values": [figures[n]["guest_over_python"] for n in names],
             "log": True, "goal": GOAL_PY_RATIO, "goal_label": f"goal {GOAL_PY_RATIO:g}x"},
        ]
        off = [n for n in names if figures[n]["cache_off"]]
        if off:
            panels.append({"title": "Guest MIPS, block cache on vs off", "ylabel": "MIPS (log)",
                           "labels": off, "log": True,
                           "series": {"cache on": [figures[n]["cache_on"]["mips"] for n in off],
                                      "cache off": [figures[n]["cache_off"]["mips"]
                                                    for n in off]}})
        png = common.bar_chart("guest_mips", panels,
                               title="guest MIPS: tests/programs as lguest user programs")
        if png:
            result["png_path"] = str(png)
    return result


def table(result: dict) -> str:
    headers = ("workload", "insns", "guest s", "spread", "MIPS", "net MIPS", "warm MIPS",
               "off MIPS", "cache x", "bare MIPS", "guest/bare", "python s", "guest/py")
    rows = []
    for name, f in result["workloads"].items():
        on, off = f["cache_on"], f["cache_off"]
        rows.append((
            name + ("" if f["output_ok"] else " (WRONG OUTPUT)"),
            f["instructions"],
            on["seconds"]["median"],
            f"{on['seconds']['spread_pct']:.0f}%" if on["seconds"]["n"] > 1 else "-",
            on["mips"],
            f["net_mips"],
            f["cache_on_warm"]["mips"],
            (common.fmt(off["mips"]) + ("*" if off["partial"] else "")) if off else "-",
            common.fmt(f["cache_speedup"]) + "x" if f["cache_speedup"] else "-",
            f["bare"]["mips"],
            common.fmt(f["guest_over_bare"]) + "x",
            f["python"]["seconds"]["median"],
            common.fmt(f["guest_over_python"]) + "x",
        ))
    s, g = result["summary"], result["goals"]
    rows.append(("geomean", "", "", "", s["mips_geomean"], s["net_mips_geomean"],
                 s["mips_warm_geomean"], "",
                 common.fmt(s["cache_speedup_geomean"]) + "x" if s["cache_speedup_geomean"]
                 else "-", s["bare_mips_geomean"],
                 common.fmt(s["guest_over_bare_geomean"]) + "x", "",
                 common.fmt(s["guest_over_python_geomean"]) + "x"))

    def verdict(goal):
        return "MET" if goal["met"] else "not met"

    base = result["baseline"]
    plan = result["plan"]
    m = result["machine"]
    notes = [
        "",
        f"goal >= {GOAL_MIPS:g} MIPS in the Guest (cache on): {verdict(g['mips'])} - geomean "
        f"{common.fmt(s['mips_geomean'])} (net of boot {common.fmt(s['net_mips_geomean'])}), "
        f"range {common.fmt(s['mips_min'])}..{common.fmt(s['mips_max'])}; warm (code compiled "
        f"by an earlier run) {common.fmt(s['mips_warm_geomean'])}",
        f"goal within {GOAL_PY_RATIO:g}x of direct Python: {verdict(g['python_ratio'])} - "
        f"geomean {common.fmt(s['guest_over_python_geomean'])}x",
        f"guest s = Launcher.run (Guest boot, ELF load, program, exit); net = minus an empty "
        f"program's run ({common.fmt(base['seconds']['median'] * 1e3)} ms, "
        f"{base['instructions']:,} insns); bare = x86core Process.run, no Guest kernel/Host; "
        "python = benchmarks/pyref port, output checked",
        f"mode {result['mode']}: guest x{plan['on_repeats']} cold and warm, cache off x{plan['off_repeats']} "
        f"on {len(plan['off_workloads'])} workload(s), bare x{plan['bare_repeats']}, python "
        f"x{plan['py_repeats']}; medians, spread = (max-min)/median"
        + (f"; * = cache-off run cut at {plan['off_limit']:,} insns"
           if any(f["cache_off"] and f["cache_off"]["partial"]
                  for f in result["workloads"].values()) else ""),
        common.machine_line(m),
    ]
    notes.extend(common.written_notes(result))
    return common.format_table(headers, rows, title="guest_mips: tests/programs as lguest "
                               "Guest user programs (ring 3, paging on)", notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 repeats, cache off on sha256")
    mode.add_argument("--tiny", action="store_true", help="sha256 once (tests)")
    ap.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--repeats", type=int, help="Guest and python repeats")
    ap.add_argument("--off-limit", type=int, help="cap cache-off runs at N insns (0: no cap)")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON or PNG")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny,
                 workloads=args.workloads.split(",") if args.workloads else None,
                 repeats=args.repeats, off_limit=args.off_limit, write=not args.no_write)
    print(table(result))
    return 0 if result["summary"]["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
