"""Helpers shared by the benchmarks: timing with repeats, machine description,
JSON results, fixed-width tables and progress lines.

Conventions for a benchmark module `benchmarks/NAME.py` (see __main__.py):

* ``run(quick: bool = False, ...) -> dict`` does the measurement, writes
  ``benchmarks/results/NAME.json`` (``write_json``) and returns the same dict;
  it may also accept ``tiny=True`` (the smallest run that still exercises every
  code path, for the test suite);
* ``table(result) -> str`` renders the result for a terminal;
* progress goes to stderr (``progress``), tables to stdout.

The results directory can be redirected with the environment variable
``BENCHMARKS_RESULTS_DIR`` (the tests do, so they never overwrite real runs).
"""
from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_ENV = "BENCHMARKS_RESULTS_DIR"
QUIET_ENV = "BENCHMARKS_QUIET"


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def summarize(samples: Sequence[float]) -> dict:
    """Median and spread of timing samples (seconds).

    Keys: n, median, mean, min, max, q1, q3, iqr, spread_pct ((max-min)/median,
    in percent) and the raw samples.  With one sample the quartiles equal it.
    """
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("no samples")
    med = statistics.median(xs)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {
        "n": len(xs),
        "median": med,
        "mean": statistics.fmean(xs),
        "min": xs[0],
        "max": xs[-1],
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "spread_pct": 100.0 * (xs[-1] - xs[0]) / med if med > 0 else 0.0,
        "samples": [float(s) for s in samples],
    }


def time_call(body: Callable[[Any], Any], repeats: int, setup: Callable[[], Any] | None = None,
              warmup: int = 0, label: str | None = None) -> tuple[dict, Any]:
    """Time ``body(setup())`` `repeats` times (setup is not timed).

    Returns ``(summarize(samples), last body result)``.  A garbage collection
    runs before every sample so one sample's garbage is not charged to the next.
    With `label`, each sample is reported on stderr.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    result = None
    for _ in range(warmup):
        body(setup() if setup else None)
    samples = []
    for i in range(repeats):
        state = setup() if setup else None
        gc.collect()
        t0 = time.perf_counter()
        result = body(state)
        samples.append(time.perf_counter() - t0)
        if label:
            progress(f"{label} {i + 1}/{repeats}: {samples[-1]:.3f} s")
    return summarize(samples), result


def geomean(values: Iterable[float]) -> float | None:
    vs = [v for v in values if v is not None and v > 0]
    if not vs:
        return None
    return math.exp(sum(math.log(v) for v in vs) / len(vs))


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------

_T0 = time.perf_counter()


def progress(message: str) -> None:
    """A progress line on stderr, stamped with seconds since import.

    Silenced by BENCHMARKS_QUIET=1."""
    if os.environ.get(QUIET_ENV, "") not in ("", "0"):
        return
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------

def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_revision() -> dict | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=5)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """Where the numbers were taken: OS, CPU, Python, numpy, source revision."""
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "numpy": numpy_version,
        "git": _git_revision(),
        # Other work on the machine skews times (never counts): 1/5/15-minute
        # load averages when the result was assembled, i.e. just after measuring.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
        else None,
    }


def machine_line(m: dict) -> str:
    """One line for a table's notes: CPU, Python, load."""
    load = m.get("load_average")
    return (f"{m['cpu_model']} ({m['cpus']} cpus), {m['python_implementation']} {m['python']}"
            + (f", load average {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)" if load else ""))


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)


def write_json(name: str, data: dict) -> Path:
    """Write `data` to results_dir()/NAME.json (pretty, sorted as given)."""
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    """A compact cell: None -> '-', floats to `digits` significant-ish places."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000:
            return f"{value:,.0f}"
        decimals = max(0, digits - 1 - int(math.floor(math.log10(mag))))
        return f"{value:.{decimals}f}"
    return str(value)


def _numeric(cell: str) -> bool:
    s = cell.strip().replace(",", "").rstrip("x%").lstrip("+-")
    if s in ("", "-"):
        return cell.strip() == "-"
    try:
        float(s)
        return True
    except ValueError:
        return False


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
                 notes: Sequence[str] = ()) -> str:
    """A fixed-width text table.  Cells that are not strings go through fmt();
    numeric-looking columns are right-aligned, the rest left-aligned."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    ncol = len(headers)
    for row in cells:
        if len(row) != ncol:
            raise ValueError(f"row has {len(row)} cells, table has {ncol} columns")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [bool(cells) and all(_numeric(r[i]) for r in cells) for i in range(ncol)]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    out.extend(notes)
    return "\n".join(out)


def print_table(headers, rows, title=None, notes=()) -> None:
    print(format_table(headers, rows, title, notes), flush=True)


def generic_table(result: dict, title: str | None = None) -> str:
    """Fallback rendering for a result without a table(): its scalar entries."""
    rows = [(k, v) for k, v in result.items()
            if isinstance(v, (int, float, str, bool)) or v is None]
    return format_table(("key", "value"), rows, title)


# ---------------------------------------------------------------------------
# Charts (optional: matplotlib, the `plot` extra)
# ---------------------------------------------------------------------------

def plotting_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def bar_chart(name: str, panels: Sequence[dict], title: str | None = None) -> Path | None:
    """Write results_dir()/NAME.png: one bar chart per panel, side by side.

    A panel is a dict with "title", "ylabel", "labels" and either "values"
    (one bar per label; optionally "errors": (low, high) distances for error
    bars) or "series" ({series name: values}, grouped bars per label with a
    legend); optionally "log" (a log axis), "goal" (a horizontal line) and
    "goal_label".  Returns the path, or None when matplotlib is not
    installed (the PNG is optional: the `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 0.6, 4.2),
                             squeeze=False)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]
    for ax, panel in zip(axes[0], panels):
        labels = list(panel["labels"])
        if "series" in panel:
            series = {k: [v if v is not None else 0.0 for v in vs]
                      for k, vs in panel["series"].items()}
        else:
            series = {"": [v if v is not None else 0.0 for v in panel["values"]]}
        width = 0.8 / len(series)
        for j, (sname, values) in enumerate(series.items()):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(values))]
            yerr = None
            if panel.get("errors") and len(series) == 1:
                low, high = zip(*panel["errors"])
                yerr = [list(low), list(high)]
            colour = colours[j % len(colours)] if len(series) > 1 else \
                [colours[i % len(colours)] for i in range(len(values))]
            ax.bar(xs, values, width=width, yerr=yerr, capsize=3, color=colour,
                   label=sname or None)
            for x, v in zip(xs, values):
                ax.annotate(fmt(float(v)), (x, v), ha="center", va="bottom",
                            fontsize=6 if len(series) > 1 else 7)
        ax.set_xticks(range(len(labels)))
        tilt = len(labels) > 3
        ax.set_xticklabels(labels, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                           fontsize=8)
        ax.set_title(panel.get("title", ""), fontsize=9)
        ax.set_ylabel(panel.get("ylabel", ""), fontsize=8)
        if panel.get("log"):
            ax.set_yscale("log")
        if panel.get("goal") is not None:
            ax.axhline(panel["goal"], color="black", linestyle="--", linewidth=0.8,
                       label=panel.get("goal_label", "goal"))
        if len(series) > 1 or panel.get("goal") is not None:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = results_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def error_bars(summary: dict, scale: float = 1.0) -> tuple[float, float]:
    """(median - min, max - median) of a summarize() result, scaled."""
    return ((summary["median"] - summary["min"]) * scale,
            (summary["max"] - summary["median"]) * scale)


def written_notes(result: dict) -> list[str]:
    """The table note saying where a result's JSON (and chart) went."""
    if "json_path" not in result:
        return []
    chart = (f" and {result['png_path']}" if "png_path" in result
             else " (no chart: matplotlib not installed)")
    return [f"written to {result['json_path']}{chart}"]
