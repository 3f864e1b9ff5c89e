"""Start-up cost of the `lguest` command: wall time and peak memory of
`lguest run busybox echo hi` as a subprocess.

    python -m benchmarks.startup [--quick | --tiny] [--program PATH] [--repeats N]
                                 [--mem MIB] [--no-write]

Each run is a fresh `python -m lguest_host run --mem 64 PROG ARGS` (the same
code as the installed `lguest` script), timed from fork to exit, with its
peak resident set size from os.wait4 - in a small interpreter that forks it,
because Linux carries the peak RSS across fork and exec and this benchmark
process is larger than the Guest's would be.  Two reference rows come
first: the bare interpreter (`python -c pass`) and importing the Host, the
Guest kernel and the CPU without running anything.

The program is busybox from the test set-up's cache (tests/.cache/busybox,
filled by tests/busybox.py; --fetch-busybox runs that first), running
`echo hi`; when it is not there the bundled tests/programs/bin/demo runs
instead and the table says so.  Goals:
wall time <= 2 s, a 64 MiB Guest in <= 200 MiB peak RSS.
Results: benchmarks/results/startup.json (and startup.png with matplotlib).
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common

GOAL_SECONDS = 2.0
GOAL_RSS_MIB = 200.0
BUSYBOX_CACHE = common.ROOT / "tests" / ".cache" / "busybox"
DEMO = common.ROOT / "tests" / "programs" / "bin" / "demo"
IMPORTS = "import lguest_host.launcher, lguest_host.hypercalls, lguest_guest.kernel, x86core.cpu"

PLANS = {
    "full": {"repeats": 7},
    "quick": {"repeats": 3},
    "tiny": {"repeats": 1},
}


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def find_busybox() -> Path | None:
    """A busybox binary in the test cache (any ELF file whose name starts
    with "busybox"), or None.  Nothing is downloaded here."""
    env = os.environ.get("LGUEST_BUSYBOX")
    if env and _is_elf(Path(env)):
        return Path(env)
    if not BUSYBOX_CACHE.is_dir():
        return None
    # Where tests/busybox.py puts it first, then anything that looks like it.
    exact = BUSYBOX_CACHE / "root" / "bin" / "busybox"
    if exact.is_file() and _is_elf(exact):
        return exact
    for path in sorted(BUSYBOX_CACHE.rglob("busybox*")):
        if path.is_file() and _is_elf(path):
            return path
    return None


def fetch_busybox() -> str | None:
    """Fetch busybox into the cache with the test set-up's tests/busybox.py
    (apt-get download; only on request: --fetch-busybox).  The reason it
    could not, or None."""
    try:
        from tests import busybox
        busybox.ensure_busybox()
    except Exception as e:                  # BusyboxUnavailable, or no tests/busybox.py
        return f"{type(e).__name__}: {e}"
    return None


def choose_program(program: str | None) -> dict:
    """What to run: (path, arguments after it, expected stdout, description)."""
    if program:
        path = Path(program)
        return {"path": path, "args": [], "expected": None, "kind": "given",
                "note": f"{path} (given)"}
    busybox = find_busybox()
    if busybox is not None:
        return {"path": busybox, "args": ["echo", "hi"], "expected": b"hi\n",
                "kind": "busybox", "note": f"busybox echo hi ({busybox})"}
    # demo prints its argv[0]: natively recorded as "demo", here the path given.
    expected = (common.ROOT / "tests" / "programs" / "expected" / "demo.out").read_bytes()
    expected = expected.replace(b"argv[0] = demo", b"argv[0] = " + str(DEMO).encode())
    return {"path": DEMO, "args": [], "expected": expected,
            "kind": "demo", "note": "busybox not found in tests/.cache/busybox: fell back to "
                                    "tests/programs/bin/demo"}


# The measuring parent: a bare interpreter that forks and execs the command
# and reports the child's wall time and rusage.  Linux carries a process's
# peak RSS across fork and exec, so a child forked straight from this
# (large) benchmark process would report at least our own size; forked from
# this small one it reports its own.
_WRAPPER = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    f.write(repr((wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime,
                  os.waitstatus_to_exitcode(status))))
"""


def measure(cmd: list[str]) -> dict:
    """Run `cmd` once: wall seconds, peak RSS (MiB), CPU seconds, status, output."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            wrapper = subprocess.run([sys.executable, "-c", _WRAPPER, str(report), *cmd],
                                     cwd=common.ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=err)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if wrapper.returncode != 0 or not report.exists():
            raise RuntimeError(f"could not measure {cmd}: {stderr[-300:]!r}")
        wall, maxrss_kib, cpu, status = ast.literal_eval(report.read_text())
    return {"wall": wall, "rss_mib": maxrss_kib / 1024.0, "cpu": cpu, "status": status,
            "stdout": stdout, "stderr": stderr}


def _stats_line(stderr: bytes) -> dict:
    """From `--stats`: the in-process run time and instructions."""
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("--- lguest stats ("):
            inner = line[len("--- lguest stats ("):].split(")")[0]
            parts = [p.strip() for p in inner.split(",")]
            try:
                secs = float(parts[0].split()[0])
                insns = int("".join(parts[1:]).split()[0].replace(",", "")) \
                    if len(parts) > 1 else None
            except (ValueError, IndexError):
                return {}
            return {"guest_run_seconds": secs, "instructions": insns}
    return {}


def series(label: str, cmd: list[str], repeats: int, expected: bytes | None = None,
           status: int = 0) -> dict:
    samples = []
    for i in range(repeats):
        samples.append(measure(cmd))
        common.progress(f"startup: {label} {i + 1}/{repeats}: {samples[-1]['wall']:.2f} s, "
                        f"{samples[-1]['rss_mib']:.0f} MiB")
    last = samples[-1]
    ok = all(s["status"] == status and (expected is None or s["stdout"] == expected)
             for s in samples)
    res = {
        "command": " ".join(cmd),
        "wall_seconds": common.summarize([s["wall"] for s in samples]),
        "cpu_seconds": common.summarize([s["cpu"] for s in samples]),
        "peak_rss_mib": max(s["rss_mib"] for s in samples),
        "rss_mib_samples": [s["rss_mib"] for s in samples],
        "status": last["status"],
        "output_ok": ok,
    }
    res.update(_stats_line(last["stderr"]))
    if not ok:
        res["problem"] = (f"status {last['status']}, stdout {last['stdout'][:80]!r}, "
                          f"stderr {last['stderr'][-200:]!r}")
        common.progress(f"startup: {label}: WRONG RESULT: {res['problem']}")
    return res


def run(quick: bool = False, tiny: bool = False, program: str | None = None,
        repeats: int | None = None, mem_mib: int = 64, fetch: bool = False,
        write: bool = True) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    plan = dict(PLANS[mode], mem_mib=mem_mib)
    if repeats:
        plan["repeats"] = repeats
    fetch_problem = fetch_busybox() if fetch and not program else None
    prog = choose_program(program)
    if fetch_problem and prog["kind"] == "demo":
        prog["note"] += f" (fetching failed: {fetch_problem})"
    common.progress(f"startup: {mode} run, {prog['note']}, x{plan['repeats']}")
    py = sys.executable
    rows = {
        "python -c pass": series("python", [py, "-c", "pass"], plan["repeats"]),
        "import lguest": series("imports", [py, "-c", IMPORTS], plan["repeats"]),
        "lguest run": series("lguest run", [py, "-m", "lguest_host", "run", "--stats",
                                            "--mem", str(mem_mib), str(prog["path"]),
                                            *prog["args"]],
                             plan["repeats"], prog["expected"]),
    }
    lg = rows["lguest run"]
    goals = {
        "wall": {"goal": GOAL_SECONDS, "value": lg["wall_seconds"]["median"],
                 "met": lg["wall_seconds"]["median"] <= GOAL_SECONDS,
                 "what": "lguest run wall time, seconds (median)"},
        "rss": {"goal": GOAL_RSS_MIB, "value": lg["peak_rss_mib"],
                "met": lg["peak_rss_mib"] <= GOAL_RSS_MIB,
                "what": f"peak RSS of lguest run with a {mem_mib} MiB Guest, MiB"},
    }
    result = {
        "benchmark": "startup",
        "mode": mode,
        "quick": quick or tiny,
        "date": common.timestamp(),
        "machine": common.machine_info(),
        "plan": plan,
        "program": {"kind": prog["kind"], "path": str(prog["path"]), "args": prog["args"],
                    "note": prog["note"]},
        "rows": rows,
        "goals": goals,
        "all_output_ok": all(r["output_ok"] for r in rows.values()),
    }
    if write:
        result["json_path"] = str(common.write_json("startup", result))
        names = list(rows)
        png = common.bar_chart("startup", [
            {"title": "wall time", "ylabel": "seconds", "labels": names,
             "values": [rows[k]["wall_seconds"]["median"] for k in names],
             "errors": [common.error_bars(rows[k]["wall_seconds"]) for k in names],
             "goal": GOAL_SECONDS, "goal_label": f"goal {GOAL_SECONDS:g} s"},
            {"title": "peak RSS", "ylabel": "MiB", "labels": names,
             "values": [rows[k]["peak_rss_mib"] for k in names],
             "goal": GOAL_RSS_MIB, "goal_label": f"goal {GOAL_RSS_MIB:g} MiB"},
        ], title=f"startup: {prog['note'][:70]}")
        if png:
            result["png_path"] = str(png)
    return result


def table(result: dict) -> str:
    headers = ("command", "wall s", "spread", "cpu s", "peak RSS MiB", "in-Guest s", "insns")
    rows = []
    for name, r in result["rows"].items():
        w = r["wall_seconds"]
        rows.append((name + ("" if r["output_ok"] else " (WRONG OUTPUT)"), w["median"],
                     f"{w['spread_pct']:.0f}%" if w["n"] > 1 else "-",
                     r["cpu_seconds"]["median"], r["peak_rss_mib"],
                     r.get("guest_run_seconds"), r.get("instructions")))
    g = result["goals"]

    def verdict(goal):
        return "MET" if goal["met"] else "not met"

    m = result["machine"]
    plan = result["plan"]
    notes = [
        "",
        f"program: {result['program']['note']}",
        f"goal wall time <= {GOAL_SECONDS:g} s: {verdict(g['wall'])} "
        f"({common.fmt(g['wall']['value'])} s)",
        f"goal a {plan['mem_mib']} MiB Guest in <= {GOAL_RSS_MIB:g} MiB: {verdict(g['rss'])} "
        f"({common.fmt(g['rss']['value'])} MiB peak RSS)",
        f"x{plan['repeats']} subprocesses each; wall = fork to exit (median), peak RSS = "
        "largest ru_maxrss of the runs (os.wait4), in-Guest s / insns = its --stats line",
        common.machine_line(m),
    ]
    notes.extend(common.written_notes(result))
    return common.format_table(headers, rows, title="startup: `lguest run` as a subprocess",
                               notes=notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 repeats")
    mode.add_argument("--tiny", action="store_true", help="1 repeat (tests)")
    ap.add_argument("--program", help="run this static i386 program instead of busybox")
    ap.add_argument("--repeats", type=int, help="subprocesses per row")
    ap.add_argument("--mem", type=int, default=64, help="Guest memory in MiB (default 64)")
    ap.add_argument("--fetch-busybox", action="store_true",
                    help="fetch busybox into tests/.cache first (tests/busybox.py: apt-get)")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON or PNG")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, tiny=args.tiny, program=args.program, repeats=args.repeats,
                 mem_mib=args.mem, fetch=args.fetch_busybox, write=not args.no_write)
    print(table(result))
    return 0 if result["all_output_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
