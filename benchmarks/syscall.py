"""System call cost in the Guest: direct trap gate vs reflected through the Host.

    python -m benchmarks.syscall [--quick | --tiny] [--calls N] [--repeats N] [--no-write]

The Guest user program benchmarks/programs/bin/lgbench makes N getpid()
system calls in a C loop (`int $0x80`).  With direct traps (Launcher
direct_traps=True, the default of `lguest run`) the CPU delivers int $0x80
straight to the Guest kernel through the trap gate the Host copied into the
IDT; reflected (direct_traps=False, `lguest run --reflect-syscalls`) every
system call exits to the Host through the Switcher and the Host builds the
trap frame on the Guest's stack (deliver_trap), as in Linux's lguest.

The loop is bracketed by two MARK system calls (benchmarks/guest.py), which
record the wall clock, the CPU's retired instructions (host.hw.icount, every
ring) and the Host's counters (lg.stats.entries: Switcher entries, i.e. exits
to the Host).  Per call = (counter at the second mark - at the first) / N, so
boot and exit are not in it.  As a cross-check the whole run is also timed
against a run with N = 0: (T(N) - T(0)) / N (the "slope" column).

Direct and reflected runs alternate, `repeats` of each; times are medians,
spread = (max - min) / median.  The published figures for real hardware are
shown next to ours: 270 ns direct, 1750 ns reflected (6.5x).  Goals: direct
at least 6.5x cheaper than reflected, and a direct call under 5 us.
Results: benchmarks/results/syscall.json (and syscall.png with matplotlib).
"""
from __future__ import annotations

import argparse
import sys

from . import common, guest

HARDWARE_NS = {"direct": 270.0, "reflected": 1750.0}
HARDWARE_RATIO = 6.5                    # the published "6.5x"
GOAL_RATIO = 6.5
GOAL_DIRECT_US = 5.0
MODES = ("direct", "reflected")

PLANS = {
    "full": {"calls": 5000, "repeats": 7},
    "quick": {"calls": 2000, "repeats": 3},
    "tiny": {"calls": 50, "repeats": 1},
}


def one_run(direct: bool, calls: int) -> dict:
    """One Guest running `lgbench getpid CALLS`: per-call figures between the marks."""
    run = guest.run_program(guest.LGBENCH, ["lgbench", "getpid", str(calls)],
                            direct_traps=direct)
    want = f"getpid calls {calls}\nsame pid {calls}\n".encode()
    ok = run.status == 0 and run.stdout == want
    out = {"whole_seconds": run.seconds, "ok": ok, "status": run.status,
           "reason": run.reason}
    if calls:
        p = run.phase(1, 2)
        out.update(seconds=p["seconds"], per_call={
            "seconds": p["seconds"] / calls,
            "instructions": p["icount"] / calls,
            "entries": p["entries"] / calls,
            "reflected_traps": p["reflected_traps"] / calls,
            "syscalls": p["syscalls"] / calls,
        })
    return out


def run(quick: bool = False, tiny: bool = False, calls: int | None = None,
        repeats: int | None = None, write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode])
    if calls:
        plan["calls"] = calls
    if repeats:
        plan["repeats"] = repeats
    n = plan["calls"]
    common.progress(f"syscall: {mode} run, {n} getpid calls x {plan['repeats']} repeats, "
                    f"direct and reflected")
    runs = {m: [] for m in MODES}
    baselines = {m: [] for m in MODES}
    for i in range(plan["repeats"]):
        for m in MODES:
            r = one_run(m == "direct", n)
            b = one_run(m == "direct", 0)
            runs[m].append(r)
            baselines[m].append(b)
            common.progress(f"syscall: {m} {i + 1}/{plan['repeats']}: "
                            f"{r['per_call']['seconds'] * 1e6:.1f} us/call, "
                            f"{r['per_call']['instructions']:.1f} insns/call")

    paths = {}
    for m in MODES:
        rs, bs = runs[m], baselines[m]
        per_call = common.summarize([r["per_call"]["seconds"] for r in rs])
        slope = (guest.median([r["whole_seconds"] for r in rs])
                 - guest.median([b["whole_seconds"] for b in bs])) / n
        last = rs[-1]["per_call"]
        paths[m] = {
            "direct_traps": m == "direct",
            "per_call_seconds": per_call,
            "per_call_us": per_call["median"] * 1e6,
            "slope_us": slope * 1e6,
            "instructions_per_call": last["instructions"],
            "instructions_consistent": len({r["per_call"]["instructions"] for r in rs}) == 1,
            "entries_per_call": last["entries"],
            "reflected_traps_per_call": last["reflected_traps"],
            "syscalls_per_call": last["syscalls"],
            "whole_run_seconds": common.summarize([r["whole_seconds"] for r in rs]),
            "baseline_run_seconds": common.summarize([b["whole_seconds"] for b in bs]),
            "hardware_ns": HARDWARE_NS[m],
            "times_hardware": per_call["median"] * 1e9 / HARDWARE_NS[m],
            "output_ok": all(r["ok"] for r in rs + bs),
        }
    d, r = paths["direct"], paths["reflected"]
    ratios = {
        "time": r["per_call_us"] / d["per_call_us"],
        "slope": r["slope_us"] / d["slope_us"] if d["slope_us"] > 0 else None,
        "instructions": (r["instructions_per_call"] / d["instructions_per_call"]
                         if d["instructions_per_call"] else None),
        "entries": r["entries_per_call"] - d["entries_per_call"],
        "hardware": HARDWARE_NS["reflected"] / HARDWARE_NS["direct"],
    }
    goals = {
        "ratio": {"goal": GOAL_RATIO, "value": ratios["time"],
                  "met": ratios["time"] >= GOAL_RATIO,
                  "what": "reflected time per call / direct time per call"},
        "direct_us": {"goal": GOAL_DIRECT_US, "value": d["per_call_us"],
                      "met": d["per_call_us"] < GOAL_DIRECT_US,
                      "what": "direct system call, microseconds"},
    }
    result = {
        "benchmark": "syscall",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": plan,
        "paths": paths,
        "ratios": ratios,
        "goals": goals,
        "all_output_ok": d["output_ok"] and r["output_ok"],
    }
    if write:
        result["json_path"] = str(common.write_json("syscall", result))
        png = common.bar_chart("syscall", [
            {"title": "this machine: us per getpid", "ylabel": "microseconds",
             "labels": list(MODES), "values": [paths[m]["per_call_us"] for m in MODES],
             "errors": [common.error_bars(paths[m]["per_call_seconds"], 1e6) for m in MODES],
             "goal": GOAL_DIRECT_US, "goal_label": f"goal: direct < {GOAL_DIRECT_US:g} us"},
            {"title": "real hardware (published): ns per call", "ylabel": "nanoseconds",
             "labels": list(MODES), "values": [HARDWARE_NS[m] for m in MODES]},
            {"title": "instructions and Host entries per call", "ylabel": "per call",
             "labels": ["insns direct", "insns refl.", "entries direct", "entries refl."],
             "values": [d["instructions_per_call"], r["instructions_per_call"],
                        d["entries_per_call"], r["entries_per_call"]]},
        ], title=f"system calls: direct vs reflected (N={n}, {plan['repeats']} repeats)")
        if png:
            result["png_path"] = str(png)
    return result


def table(result: dict) -> str:
    headers = ("path", "us/call", "spread", "slope us", "insns/call", "entries/call",
               "hw ns", "x hw")
    rows = []
    for m in MODES:
        p = result["paths"][m]
        s = p["per_call_seconds"]
        rows.append((m + ("" if p["output_ok"] else " (WRONG OUTPUT)"), p["per_call_us"],
                     f"{s['spread_pct']:.0f}%" if s["n"] > 1 else "-", p["slope_us"],
                     p["instructions_per_call"], p["entries_per_call"], p["hardware_ns"],
                     common.fmt(p["times_hardware"]) + "x"))
    ra = result["ratios"]
    rows.append(("reflected/direct", common.fmt(ra["time"]) + "x", "",
                 common.fmt(ra["slope"]) + "x" if ra["slope"] else "-",
                 common.fmt(ra["instructions"]) + "x" if ra["instructions"] else "-",
                 f"+{common.fmt(ra['entries'])}", common.fmt(ra["hardware"]) + "x", ""))
    g = result["goals"]

    def verdict(goal):
        return "MET" if goal["met"] else "not met"

    plan = result["plan"]
    m = result["machine"]
    notes = [
        "",
        f"goal direct >= {GOAL_RATIO:g}x cheaper than reflected: {verdict(g['ratio'])} "
        f"({common.fmt(ra['time'])}x; hardware {common.fmt(ra['hardware'])}x)",
        f"goal direct < {GOAL_DIRECT_US:g} us per call: {verdict(g['direct_us'])} "
        f"({common.fmt(g['direct_us']['value'])} us)",
        f"N={plan['calls']:,} getpid calls between two marks, x{plan['repeats']} each way; "
        "us/call = median, spread = (max-min)/median; slope = (T(N) - T(0)) / N over whole "
        "runs; insns = CPU instructions retired (user loop, entry code, Switcher); entries "
        "= exits to the Host",
        common.machine_line(m),
    ]
    notes.extend(common.written_notes(result))
    return common.format_table(headers, rows, title="syscall: getpid from a Guest user "
                               "program, direct trap vs reflected by the Host", notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N=2000, 3 repeats")
    mode.add_argument("--tiny", action="store_true", help="N=50, 1 repeat (tests)")
    ap.add_argument("--calls", type=int, help="system calls per run (N)")
    ap.add_argument("--repeats", type=int, help="runs of each path")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON or PNG")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny, calls=args.calls, repeats=args.repeats,
                 write=not args.no_write)
    print(table(result))
    return 0 if result["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
