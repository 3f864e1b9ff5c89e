"""Hypercall batching: PTE updates queued in the async ring (lazy MMU mode)
vs one hypercall trap each.

    python -m benchmarks.hypercalls [--quick | --tiny] [--updates N] [--repeats N] [--no-write]

The Guest kernel here is the real one (lguest_guest) with a different
start_kernel: after lguest_init and paging_init it makes a user address
space with one page table, switches to it, lets the Host build the shadow of
that table (one read through it), maps every slot of it, and then, between
two clock readings, changes N PTEs of the table with lguest_set_pte_at - the paravirt op that
writes the PTE and tells the Host with LHCALL_SET_PTE:

* trap: outside lazy MMU mode every update is `int $0x1f`, one exit to the
  Host each;
* lazy: between lguest_enter_lazy_mmu_mode and lguest_leave_lazy_mmu_mode
  the updates go into the 64-slot ring in struct lguest_data (lazy_hcall ->
  async_hcall); the Host runs the ring whenever the Guest traps - when the
  ring is full the next update is a trap, and leaving lazy mode flushes it
  with LHCALL_FLUSH_ASYNC.

Both ways the Host really updates its shadow (the PTEs are present and
accessed, so do_set_pte fills the shadow entries), and afterwards the kernel
reads every remapped page through the CPU's MMU and checks it sees the page
it mapped there.  Figures: Host entries (lg.stats.entries), hypercalls run
from the ring, CPU instructions and wall time for the N updates.  Goals:
lazy mode >= 5x fewer Host entries and >= 3x faster.
Results: benchmarks/results/hypercalls.json (and hypercalls.png).
"""
from __future__ import annotations

import argparse
import struct
import sys
import time

from lguest_guest import boot, mm as mmu
from lguest_guest.kernel import Kernel
from lguest_host.abi import PAGE_OFFSET, PAGE_SIZE, BootParams, LHCALL_RING_SIZE

from . import common, guest

GOAL_ENTRIES = 5.0
GOAL_SPEEDUP = 3.0
BASE = 0x10000000                       # user addresses of the table (one 4 MiB table)
TARGETS = 16                            # physical pages the PTEs point at, in turn
PTE_FLAGS = mmu.PTE_P | mmu.PTE_W | mmu.PTE_U | mmu.PTE_A
MODES = ("trap", "lazy")

PLANS = {
    "full": {"updates": 1000, "repeats": 7},
    "quick": {"updates": 1000, "repeats": 3},
    "tiny": {"updates": 100, "repeats": 1},
}


class PteUpdateKernel(Kernel):
    """Boots like the Guest kernel, then makes `updates` PTE updates (lazy or
    one trap each) between two probes and powers off.  `errors` lists pages
    that did not read back as mapped."""

    def __init__(self, updates: int, lazy: bool, probe):
        super().__init__()
        self.updates = updates
        self.lazy = lazy
        self.probe = probe
        self.samples: dict[int, object] = {}
        self.errors: list[str] = []
        self.checked = 0

    def start_kernel(self):
        yield from boot.lguest_init(self)
        raw = yield from self.mem.read(PAGE_OFFSET, BootParams.SIZE)
        ram_size, first_free = struct.unpack_from("<I", raw, BootParams.ram_size)[0], \
            struct.unpack_from("<I", raw, BootParams.first_free)[0]
        self.pages = mmu.PageAllocator(first_free, ram_size)
        yield from mmu.paging_init(self, ram_size + PAGE_SIZE)
        mm = yield from mmu.mm_alloc(self)
        # The pages the PTEs will point at, each holding its own number.
        targets = []
        for i in range(TARGETS):
            pa = yield from mmu.get_zeroed_page(self)
            yield from self.mem.write_u32(PAGE_OFFSET + pa, 0xB0A70000 + i)
            targets.append(pa)
        yield from mmu.map_page(self, mm, BASE, targets[0], mmu.PROT_READ | mmu.PROT_WRITE)
        yield from boot.lguest_write_cr3(self, mm.pgdir)
        # One access through the table makes the Host build its shadow of it,
        # so every update below has a shadow entry to change.
        yield from self.mem.read_u32(BASE)
        table_pte, _ = yield from mmu.lookup_pte(self, mm, BASE)
        slots = min(self.updates, 1024)
        # Before the clock starts: every slot mapped to another target than
        # the measured updates will give it, so the check afterwards shows
        # that the Host applied them (its shadow entries are present now).
        yield from boot.lguest_enter_lazy_mmu_mode(self)
        for slot in range(slots):
            yield from boot.lguest_set_pte_at(self, mm.pgdir, BASE + slot * PAGE_SIZE,
                                              table_pte + slot * 4,
                                              targets[(slot + 1) % TARGETS] | PTE_FLAGS)
        yield from boot.lguest_leave_lazy_mmu_mode(self)
        for slot in range(slots):
            # Cheap when the Host filled the shadow on SET_PTE; if it did
            # not, this faults the old mapping in, and the check fails.
            yield from self.mem.read_u32(BASE + slot * PAGE_SIZE)

        self.samples[1] = self.probe()
        if self.lazy:
            yield from boot.lguest_enter_lazy_mmu_mode(self)
        for i in range(self.updates):
            slot = i % slots
            pte = targets[i % TARGETS] | PTE_FLAGS
            yield from boot.lguest_set_pte_at(self, mm.pgdir, BASE + slot * PAGE_SIZE,
                                              table_pte + slot * 4, pte)
        if self.lazy:
            yield from boot.lguest_leave_lazy_mmu_mode(self)
        self.samples[2] = self.probe()

        # Every slot maps the target its last update named.
        last = {}
        for i in range(self.updates):
            last[i % slots] = i % TARGETS
        for slot, target in last.items():
            got = yield from self.mem.read_u32(BASE + slot * PAGE_SIZE)
            self.checked += 1
            if got != 0xB0A70000 + target:
                self.errors.append(f"page {slot}: read {got:#x}, mapped target {target}")
                if len(self.errors) > 5:
                    break
        yield from boot.lguest_power_off(self, b"pte updates done")


def one_run(updates: int, lazy: bool) -> dict:
    from lguest_host.launcher import Launcher
    import io
    launcher = Launcher(16, stdin=io.BytesIO(), stdout=io.BytesIO(), stderr=io.BytesIO())

    def probe():
        st = launcher.cpu.lg.stats
        return (time.perf_counter(), launcher.host.hw.icount, st.entries,
                sum(st.hypercalls.values()), st.async_hypercalls)

    kernel = PteUpdateKernel(updates, lazy, probe)
    launcher.boot(kernel)
    outcome = launcher.run()
    ok = (outcome.reason is not None and "pte updates done" in outcome.reason
          and not kernel.errors and kernel.checked > 0 and 1 in kernel.samples
          and 2 in kernel.samples)
    out = {"ok": ok, "reason": outcome.reason, "errors": kernel.errors,
           "pages_checked": kernel.checked}
    if 1 in kernel.samples and 2 in kernel.samples:
        a, b = kernel.samples[1], kernel.samples[2]
        out.update(seconds=b[0] - a[0], instructions=b[1] - a[1], entries=b[2] - a[2],
                   hypercalls=b[3] - a[3], async_hypercalls=b[4] - a[4])
    return out


def run(quick: bool = False, tiny: bool = False, updates: int | None = None,
        repeats: int | None = None, write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode])
    if updates:
        plan["updates"] = updates
    if repeats:
        plan["repeats"] = repeats
    n = plan["updates"]
    common.progress(f"hypercalls: {mode} run, {n} PTE updates x {plan['repeats']} repeats, "
                    "trap and lazy")
    runs = {m: [] for m in MODES}
    for i in range(plan["repeats"]):
        for m in MODES:
            r = one_run(n, m == "lazy")
            runs[m].append(r)
            common.progress(f"hypercalls: {m} {i + 1}/{plan['repeats']}: "
                            f"{r.get('seconds', 0) * 1e3:.1f} ms, {r.get('entries')} entries"
                            + ("" if r["ok"] else f" FAILED: {r['reason']} {r['errors']}"))
    ways = {}
    for m in MODES:
        rs = [r for r in runs[m] if "seconds" in r]
        last = rs[-1]
        secs = common.summarize([r["seconds"] for r in rs])
        ways[m] = {
            "seconds": secs,
            "per_update_us": secs["median"] / n * 1e6,
            "entries": last["entries"],
            "entries_consistent": len({r["entries"] for r in rs}) == 1,
            "hypercalls": last["hypercalls"],
            "async_hypercalls": last["async_hypercalls"],
            "instructions": last["instructions"],
            "pages_checked": last["pages_checked"],
            "ok": all(r["ok"] for r in runs[m]),
        }
    t, lz = ways["trap"], ways["lazy"]
    ratios = {
        "entries": t["entries"] / lz["entries"] if lz["entries"] else None,
        "speedup": t["seconds"]["median"] / lz["seconds"]["median"],
        "instructions": t["instructions"] / lz["instructions"] if lz["instructions"] else None,
    }
    goals = {
        "entries": {"goal": GOAL_ENTRIES, "value": ratios["entries"],
                    "met": bool(ratios["entries"]) and ratios["entries"] >= GOAL_ENTRIES,
                    "what": "Host entries trap / lazy"},
        "speedup": {"goal": GOAL_SPEEDUP, "value": ratios["speedup"],
                    "met": ratios["speedup"] >= GOAL_SPEEDUP,
                    "what": "time trap / lazy"},
    }
    result = {
        "benchmark": "hypercalls",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": dict(plan, ring_size=LHCALL_RING_SIZE),
        "ways": ways,
        "ratios": ratios,
        "goals": goals,
        "all_output_ok": t["ok"] and lz["ok"],
    }
    if write:
        result["json_path"] = str(common.write_json("hypercalls", result))
        png = common.bar_chart("hypercalls", [
            {"title": f"time for {n} PTE updates", "ylabel": "milliseconds",
             "labels": list(MODES), "values": [ways[m]["seconds"]["median"] * 1e3
                                               for m in MODES],
             "errors": [common.error_bars(ways[m]["seconds"], 1e3) for m in MODES]},
            {"title": "Host entries", "ylabel": "entries", "labels": list(MODES),
             "values": [ways[m]["entries"] for m in MODES]},
        ], title="hypercalls: one trap per PTE update vs the async ring (lazy MMU mode)")
        if png:
            result["png_path"] = str(png)
    return result


def table(result: dict) -> str:
    headers = ("way", "ms", "spread", "us/update", "entries", "hypercalls", "from ring",
               "insns")
    rows = []
    for m in MODES:
        w = result["ways"][m]
        s = w["seconds"]
        rows.append((m + ("" if w["ok"] else " (FAILED CHECK)"), s["median"] * 1e3,
                     f"{s['spread_pct']:.0f}%" if s["n"] > 1 else "-", w["per_update_us"],
                     w["entries"], w["hypercalls"], w["async_hypercalls"], w["instructions"]))
    ra, g = result["ratios"], result["goals"]
    rows.append(("trap/lazy", common.fmt(ra["speedup"]) + "x", "", "",
                 common.fmt(ra["entries"]) + "x" if ra["entries"] else "-", "", "",
                 common.fmt(ra["instructions"]) + "x" if ra["instructions"] else "-"))

    def verdict(goal):
        return "MET" if goal["met"] else "not met"

    plan = result["plan"]
    m = result["machine"]
    notes = [
        "",
        f"goal >= {GOAL_ENTRIES:g}x fewer Host entries in lazy mode: {verdict(g['entries'])} "
        f"({common.fmt(ra['entries'])}x)",
        f"goal lazy >= {GOAL_SPEEDUP:g}x faster: {verdict(g['speedup'])} "
        f"({common.fmt(ra['speedup'])}x)",
        f"{plan['updates']:,} LHCALL_SET_PTE updates of one page table (ring of "
        f"{plan['ring_size']}), x{plan['repeats']} each way; times are medians, "
        "spread = (max-min)/median; every remapped page read back through the MMU",
        common.machine_line(m),
    ]
    notes.extend(common.written_notes(result))
    return common.format_table(headers, rows, title="hypercalls: PTE updates, one trap each "
                               "vs batched in the async ring", notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 repeats")
    mode.add_argument("--tiny", action="store_true", help="100 updates, 1 repeat (tests)")
    ap.add_argument("--updates", type=int, help="PTE updates per run")
    ap.add_argument("--repeats", type=int, help="runs of each way")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON or PNG")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny, updates=args.updates,
                 repeats=args.repeats, write=not args.no_write)
    print(table(result))
    return 0 if result["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
