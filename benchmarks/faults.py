"""Page-fault cost in the Guest: a fault the Host fixes in its shadow page
tables alone vs a fault reflected to the Guest kernel.

    python -m benchmarks.faults [--quick | --tiny] [--pages N] [--repeats N] [--no-write]

The Guest user program benchmarks/programs/bin/lgbench (`touch N`) maps N
fresh anonymous pages and, between MARK system calls (benchmarks/guest.py):

1. first touch - reads one word of each page.  The Guest's own page tables
   have no PTE yet, so the Host's demand_page cannot fix the fault and
   reflects it (cr2 in lguest_data, deliver_trap): the Guest kernel allocates
   a page, installs the PTE (set_pte_at: an LHCALL_SET_PTE hypercall, which
   fills the Host's shadow entry at once) and returns;
2. FLUSH - the benchmark kernel makes LHCALL_FLUSH_TLB(0): the Host drops
   its shadow of the user mappings, the Guest's PTEs stay;
3. re-touch - reads each page again: every fault is now the Host's alone
   (demand_page copies the Guest PTE into the shadow, read-only since the
   page is clean) and the Guest never sees it;
4. first write - writes each page: a write fault on a clean page, fixed by
   the Host alone, which marks the Guest PTE dirty as the MMU would.

Per fault = phase time / faults of the phase's kind (lg.stats.reflected_faults
or demand_faults); instructions and Host entries per fault alongside.
Results: benchmarks/results/faults.json (and faults.png with matplotlib).
"""
from __future__ import annotations

import argparse
import sys

from . import common, guest

PHASES = {
    # name: (from mark, to mark, which counter counts the faults, what it is)
    "first touch (reflected)": (1, 2, "reflected_faults",
                                "read of a page the Guest has not mapped: the Guest "
                                "kernel's fault handler maps it"),
    "re-touch (Host only)": (3, 4, "demand_faults",
                             "read after the Host dropped its shadow: demand_page "
                             "refills it"),
    "first write (Host only)": (4, 5, "demand_faults",
                                "write to a clean page: demand_page marks it dirty"),
}
REFLECTED, HOST = "first touch (reflected)", "re-touch (Host only)"

PLANS = {
    "full": {"pages": 2000, "repeats": 5},
    "quick": {"pages": 500, "repeats": 3},
    "tiny": {"pages": 16, "repeats": 1},
}


def one_run(pages: int) -> dict:
    run = guest.run_program(guest.LGBENCH, ["lgbench", "touch", str(pages)])
    want = f"pages {pages}\nchecksum {pages * (pages - 1) // 2}\n".encode()
    out = {"ok": run.status == 0 and run.stdout == want, "status": run.status,
           "reason": run.reason, "phases": {}}
    for name, (a, b, counter, _) in PHASES.items():
        p = run.phase(a, b)
        faults = p[counter]
        out["phases"][name] = dict(p, faults=faults,
                                   per_fault_seconds=p["seconds"] / faults if faults else None)
    return out


def run(quick: bool = False, tiny: bool = False, pages: int | None = None,
        repeats: int | None = None, write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode])
    if pages:
        plan["pages"] = pages
    if repeats:
        plan["repeats"] = repeats
    n = plan["pages"]
    common.progress(f"faults: {mode} run, {n} pages x {plan['repeats']} repeats")
    runs = []
    for i in range(plan["repeats"]):
        runs.append(one_run(n))
        ph = runs[-1]["phases"]
        common.progress(f"faults: {i + 1}/{plan['repeats']}: reflected "
                        f"{(ph[REFLECTED]['per_fault_seconds'] or 0) * 1e6:.0f} us/fault, "
                        f"Host-only {(ph[HOST]['per_fault_seconds'] or 0) * 1e6:.0f} us/fault")

    phases = {}
    for name, (_, _, counter, what) in PHASES.items():
        samples = [r["phases"][name] for r in runs]
        last = samples[-1]
        faults = last["faults"]
        times = [s["per_fault_seconds"] for s in samples if s["per_fault_seconds"]]
        per = common.summarize(times) if times else None
        phases[name] = {
            "what": what,
            "counter": counter,
            "pages": n,
            "faults": faults,
            "faults_consistent": len({s["faults"] for s in samples}) == 1,
            "demand_faults": last["demand_faults"],
            "reflected_faults": last["reflected_faults"],
            "phase_seconds": common.summarize([s["seconds"] for s in samples]),
            "per_fault_seconds": per,
            "per_fault_us": per["median"] * 1e6 if per else None,
            "instructions_per_fault": last["icount"] / faults if faults else None,
            "entries_per_fault": last["entries"] / faults if faults else None,
            "hypercalls_per_fault": last["hypercalls"] / faults if faults else None,
        }
    refl, host = phases[REFLECTED], phases[HOST]
    ratio = (refl["per_fault_us"] / host["per_fault_us"]
             if refl["per_fault_us"] and host["per_fault_us"] else None)
    result = {
        "benchmark": "faults",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": plan,
        "phases": phases,
        "ratios": {"reflected_over_host": ratio},
        "all_output_ok": all(r["ok"] for r in runs),
    }
    if write:
        result["json_path"] = str(common.write_json("faults", result))
        names = list(PHASES)
        png = common.bar_chart("faults", [
            {"title": "time per fault", "ylabel": "microseconds", "labels": names,
             "values": [phases[k]["per_fault_us"] for k in names],
             "errors": [common.error_bars(phases[k]["per_fault_seconds"], 1e6)
                        if phases[k]["per_fault_seconds"] else (0, 0) for k in names]},
            {"title": "Host entries per fault", "ylabel": "entries", "labels": names,
             "values": [phases[k]["entries_per_fault"] for k in names]},
        ], title=f"page faults: reflected to the Guest vs fixed by the Host ({n} pages)")
        if png:
            result["png_path"] = str(png)
    return result


def table(result: dict) -> str:
    headers = ("phase", "faults", "us/fault", "spread", "insns/fault", "entries/fault",
               "hcalls/fault")
    rows = []
    for name, p in result["phases"].items():
        s = p["per_fault_seconds"]
        rows.append((name, p["faults"], p["per_fault_us"],
                     f"{s['spread_pct']:.0f}%" if s and s["n"] > 1 else "-",
                     p["instructions_per_fault"], p["entries_per_fault"],
                     p["hypercalls_per_fault"]))
    ratio = result["ratios"]["reflected_over_host"]
    plan = result["plan"]
    m = result["machine"]
    notes = [
        "",
        f"a reflected fault costs {common.fmt(ratio)}x a fault the Host fixes alone"
        if ratio else "no ratio (a phase had no faults)",
        f"{plan['pages']:,} fresh anonymous pages, x{plan['repeats']}; us/fault = median of "
        "phase time / faults of that kind (reflected_faults or demand_faults); insns = CPU "
        "instructions retired in the phase, entries = exits to the Host"
        + ("" if result["all_output_ok"] else "; WRONG OUTPUT in some run"),
        common.machine_line(m),
    ]
    notes.extend(common.written_notes(result))
    return common.format_table(headers, rows, title="faults: shadow page faults fixed by "
                               "the Host vs reflected to the Guest", notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="500 pages, 3 repeats")
    mode.add_argument("--tiny", action="store_true", help="16 pages, 1 repeat (tests)")
    ap.add_argument("--pages", type=int, help="pages touched per run")
    ap.add_argument("--repeats", type=int, help="runs")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON or PNG")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny, pages=args.pages, repeats=args.repeats,
                 write=not args.no_write)
    print(table(result))
    return 0 if result["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
