"""The lguest benchmarks (syscall, hypercalls, faults, guest_mips, startup)
run in their tiny modes and measure what they say they measure.

No wall-clock assertions: the checks are on counts (instructions, Host
entries, faults, hypercalls), on outputs, and on the shape of the results.
The benchmark program lgbench is also checked against native execution.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from benchmarks import __main__ as runner
from benchmarks import common, faults, guest, guest_mips, hypercalls, startup, syscall

NATIVE_OK = sys.platform == "linux" and os.access(guest.LGBENCH, os.X_OK)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv(common.RESULTS_ENV, str(tmp_path))
    monkeypatch.setenv(common.QUIET_ENV, "1")
    return tmp_path


def _native(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(guest.LGBENCH), *args], capture_output=True, timeout=20)


def _finite(obj) -> bool:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, (int, float)):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return True


# -- the benchmark program, natively and in the Guest ------------------------------------------

@pytest.mark.skipif(not NATIVE_OK, reason="needs native i386 execution")
@settings(max_examples=6, deadline=None)
@given(mode=st.sampled_from(["getpid", "touch"]), n=st.integers(1, 40),
       direct=st.booleans())
def test_lgbench_same_output_natively_and_in_the_guest(mode, n, direct):
    native = _native([mode, str(n)])
    run = guest.run_program(guest.LGBENCH, ["lgbench", mode, str(n)], direct_traps=direct)
    assert run.reason is None
    assert (run.status, run.stdout) == (native.returncode, native.stdout)
    assert native.returncode == 0


def test_marks_are_ordered_and_counters_monotonic():
    run = guest.run_program(guest.LGBENCH, ["lgbench", "touch", "12"])
    assert [m.id for m in run.marks] == [1, 2, 3, 4, 5]
    for a, b in zip(run.marks, run.marks[1:]):
        for field in ("t",) + guest.DELTA_FIELDS:
            assert getattr(b, field) >= getattr(a, field), field
    with pytest.raises(ValueError):
        run.phase(1, 9)


def test_flush_makes_the_retouch_the_hosts_alone():
    n = 24
    run = guest.run_program(guest.LGBENCH, ["lgbench", "touch", str(n)])
    first, retouch, write = run.phase(1, 2), run.phase(3, 4), run.phase(4, 5)
    # First touch: every page is a fault the Guest must handle.
    assert first["reflected_faults"] == n
    # After FLUSH the Guest's PTEs are still there: the Host refills alone.
    assert retouch["reflected_faults"] == 0 and retouch["demand_faults"] >= n
    assert retouch["hypercalls"] == 0 and retouch["syscalls"] == 0
    # A first write to a clean page: the Host marks it dirty, one fault each.
    assert write["reflected_faults"] == 0 and write["demand_faults"] == n


def test_without_flush_the_retouch_does_not_fault():
    """The plain Guest kernel answers FLUSH with -ENOSYS: no shadow is dropped."""
    from lguest_guest.kernel import Kernel

    class Plain(guest.MarkingKernel):
        def handle_trap(self, frame):
            if self.hw.regs[guest.EAX] == guest.SYS_FLUSH:
                return (yield from Kernel.handle_trap(self, frame))
            return (yield from super().handle_trap(frame))

    run = guest.run_program(guest.LGBENCH, ["lgbench", "touch", "10"], kernel=Plain())
    assert run.status == 0
    assert run.phase(3, 4)["demand_faults"] == 0


# -- syscall --------------------------------------------------------------------------------------

def test_syscall_tiny(results):
    result = syscall.run(tiny=True)
    n = result["plan"]["calls"]
    d, r = result["paths"]["direct"], result["paths"]["reflected"]
    assert result["all_output_ok"]
    # Direct: no exit to the Host; reflected: one per call (the closing mark's
    # own system call falls inside the window too).
    assert d["entries_per_call"] == 0 and d["reflected_traps_per_call"] == 0
    assert round(r["entries_per_call"] * n) == n + 1
    assert round(r["reflected_traps_per_call"] * n) == n + 1
    assert d["syscalls_per_call"] == r["syscalls_per_call"] == 1
    # The reflected path runs the Switcher as well: more instructions per call.
    assert r["instructions_per_call"] > d["instructions_per_call"] > 0
    assert d["instructions_consistent"] and r["instructions_consistent"]
    assert set(result["goals"]) == {"ratio", "direct_us"}
    assert result["ratios"]["hardware"] == pytest.approx(1750 / 270)
    assert _finite(result)
    saved = json.loads((results / "syscall.json").read_text())
    assert saved["paths"]["direct"]["instructions_per_call"] == d["instructions_per_call"]
    text = syscall.table(result)
    assert "reflected/direct" in text and "270" in text and "goal" in text


# -- hypercalls -----------------------------------------------------------------------------------

def test_hypercalls_tiny(results):
    result = hypercalls.run(tiny=True)
    n = result["plan"]["updates"]
    trap, lazy = result["ways"]["trap"], result["ways"]["lazy"]
    assert trap["ok"] and lazy["ok"] and result["all_output_ok"]
    assert trap["entries"] == n and trap["hypercalls"] == n and trap["async_hypercalls"] == 0
    # The ring takes 64; a full ring costs one trap, leaving lazy mode one more.
    ring = result["plan"]["ring_size"]
    assert lazy["entries"] <= n // ring + 2
    assert lazy["hypercalls"] == n + 1                       # + LHCALL_FLUSH_ASYNC
    assert lazy["async_hypercalls"] >= n - n // ring - 1
    assert trap["pages_checked"] == lazy["pages_checked"] == n
    assert result["ratios"]["entries"] == trap["entries"] / lazy["entries"]
    assert result["goals"]["entries"]["met"]            # counts, not time
    assert _finite(result)
    assert "trap/lazy" in hypercalls.table(result)


def test_hypercalls_check_catches_a_host_ignoring_set_pte(monkeypatch):
    from lguest_host import page_tables
    monkeypatch.setattr(page_tables, "guest_set_pte", lambda *args: None)
    for lazy in (False, True):
        r = hypercalls.one_run(40, lazy)
        assert not r["ok"] and r["errors"]


# -- faults ---------------------------------------------------------------------------------------

def test_faults_tiny(results):
    result = faults.run(tiny=True)
    n = result["plan"]["pages"]
    refl, host = result["phases"][faults.REFLECTED], result["phases"][faults.HOST]
    assert result["all_output_ok"]
    assert refl["faults"] == n and refl["reflected_faults"] == n
    assert host["faults"] >= n and host["reflected_faults"] == 0
    # A reflected fault: the #PF exit and the SET_PTE hypercall of the Guest's
    # handler; a Host-only fault: just the #PF exit.
    assert refl["entries_per_fault"] >= 2 and refl["hypercalls_per_fault"] >= 1
    assert host["entries_per_fault"] == pytest.approx(1.0, abs=0.2)
    assert refl["instructions_per_fault"] > host["instructions_per_fault"]
    assert _finite(result)
    assert json.loads((results / "faults.json").read_text())["plan"]["pages"] == n
    assert "reflected" in faults.table(result)


# -- guest_mips -----------------------------------------------------------------------------------

def test_guest_mips_tiny(results):
    result = guest_mips.run(tiny=True)
    w = result["workloads"]["sha256"]
    assert result["summary"]["all_output_ok"]
    assert w["cache_on"]["output_ok"] and w["cache_on"]["status"] == 0
    warm = w["cache_on_warm"]
    assert warm["output_ok"] and warm["instructions"] == w["instructions"]
    assert result["summary"]["mips_warm_geomean"] > 0
    # The Guest runs the program and its kernel's entry code and the Switcher:
    # more instructions than bare x86core, not wildly more.
    assert w["bare"]["instructions"] < w["instructions"] < 2 * w["bare"]["instructions"]
    assert w["cache_off"]["partial"]
    assert w["cache_off"]["instructions"] >= guest_mips.PLANS["tiny"]["off_limit"]
    for key in ("cache_speedup", "guest_over_bare", "guest_over_python"):
        assert w[key] > 0
    assert result["baseline"]["output_ok"] and result["baseline"]["instructions"] > 0
    assert set(result["goals"]) == {"mips", "python_ratio"}
    assert _finite(result)
    assert "sha256" in guest_mips.table(result)


# -- startup --------------------------------------------------------------------------------------

def test_choose_program_falls_back_to_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("LGUEST_BUSYBOX", raising=False)
    monkeypatch.setattr(startup, "BUSYBOX_CACHE", tmp_path / "none")
    prog = startup.choose_program(None)
    assert prog["kind"] == "demo" and "fell back" in prog["note"]
    cache = tmp_path / "cache"
    (cache / "bin").mkdir(parents=True)
    (cache / "busybox.txt").write_text("not an ELF")
    monkeypatch.setattr(startup, "BUSYBOX_CACHE", cache)
    assert startup.choose_program(None)["kind"] == "demo"
    (cache / "bin" / "busybox").write_bytes(b"\x7fELF" + bytes(60))
    prog = startup.choose_program(None)
    assert prog["kind"] == "busybox" and prog["args"] == ["echo", "hi"]
    assert prog["expected"] == b"hi\n"


def test_stats_line_parsing():
    err = b"noise\n--- lguest stats (0.25 s, 1,234,567 instructions, 4.90 MIPS)\nmore\n"
    assert startup._stats_line(err) == {"guest_run_seconds": 0.25, "instructions": 1234567}
    assert startup._stats_line(b"nothing here") == {}


def test_measure_reports_the_childs_own_peak_rss():
    """A big parent must not inflate the child's peak RSS (Linux carries it
    across fork and exec; startup.measure forks from a small interpreter)."""
    import numpy
    ballast = numpy.ones(160 << 20, dtype=numpy.uint8)     # 160 MiB, touched
    small = startup.measure([sys.executable, "-c", "pass"])
    big = startup.measure([sys.executable, "-c",
                           "import numpy; a = numpy.ones(96 << 20, dtype=numpy.uint8)"])
    del ballast
    assert small["status"] == 0 and big["status"] == 0
    assert 1 < small["rss_mib"] < 80
    assert big["rss_mib"] > small["rss_mib"] + 80


def test_startup_tiny(results):
    result = startup.run(tiny=True)
    assert result["all_output_ok"], result["rows"]["lguest run"].get("problem")
    rows = result["rows"]
    assert set(rows) == {"python -c pass", "import lguest", "lguest run"}
    for r in rows.values():
        assert r["peak_rss_mib"] > 1 and r["wall_seconds"]["median"] > 0
    # Running a Guest imports everything the import row does, and more.
    assert rows["lguest run"]["peak_rss_mib"] >= rows["python -c pass"]["peak_rss_mib"]
    assert rows["lguest run"].get("instructions", 0) > 0, "the --stats line was not parsed"
    assert set(result["goals"]) == {"wall", "rss"}
    assert "lguest run" in startup.table(result)


# -- charts and the runner ------------------------------------------------------------------------

def test_bar_chart_without_matplotlib(results, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert common.bar_chart("x", [{"labels": ["a"], "values": [1.0]}]) is None
    assert not (results / "x.png").exists()


def test_bar_chart_with_matplotlib(results):
    pytest.importorskip("matplotlib")
    path = common.bar_chart("x", [
        {"title": "t", "ylabel": "y", "labels": ["a", "b"], "values": [1.0, None],
         "errors": [(0.1, 0.2), (0, 0)], "goal": 0.5},
        {"labels": ["a", "b"], "series": {"s1": [1, 2], "s2": [3, 4]}, "log": True},
    ], title="T")
    assert path == results / "x.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_error_bars():
    s = common.summarize([1.0, 2.0, 4.0])
    assert common.error_bars(s, 10) == (10.0, 20.0)


def test_registry_has_the_lguest_benchmarks():
    assert {"guest_mips", "syscall", "hypercalls", "faults", "startup"} <= set(runner.REGISTRY)


def test_runner_prints_goals(results, capsys):
    assert runner.main(["hypercalls", "faults", "--tiny"]) == 0
    out = capsys.readouterr().out
    assert "== hypercalls" in out and "== faults" in out and "== goals" in out
    assert "Host entries trap / lazy" in out
