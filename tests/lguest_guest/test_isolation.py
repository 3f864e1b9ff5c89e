"""The Guest reaches the Host only through the machine: no Python call goes
from lguest_guest into lguest_host objects.  The one thing the Guest may
import from the Host's package is lguest_host.abi, the shared header
(constants and struct layouts).

Two checks: statically, every import in lguest_guest/*.py (and any dynamic
import machinery) is looked at with `ast`; at run time, sys.setprofile
watches a whole program run in a Guest and no frame of lguest_guest code
may have a function of lguest_host (other than abi) as its direct callee.
Each check is shown to catch a violation first (a negative control), so a
pass means something.
"""
import ast
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

import lguest_guest
from lguest_host.core import lguest_address_ok
from tests.lguest_guest.guest_run import run_in_guest
from tests.programs_table import load_programs

ALLOWED = "lguest_host.abi"
GUEST_DIR = Path(lguest_guest.__file__).resolve().parent


# -- static: the imports ------------------------------------------------------------------------
def import_violations(source: str, filename: str = "<source>") -> list[str]:
    """What in `source` reaches lguest_host beyond abi, or imports dynamically."""
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "lguest_host" and alias.name != ALLOWED:
                    bad.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lguest_host":
                for alias in node.names:
                    if alias.name != "abi":
                        bad.append(f"{where}: from lguest_host import {alias.name}")
            elif node.module.split(".")[0] == "lguest_host" and node.module != ALLOWED:
                bad.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("__import__", "import_module"):
                bad.append(f"{where}: dynamic import ({name})")
        elif isinstance(node, ast.Attribute) and node.attr == "modules" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            bad.append(f"{where}: sys.modules")
    return bad


@pytest.mark.parametrize("source, flagged", [
    ("from lguest_host.abi import PAGE_SIZE, LguestData", False),
    ("from lguest_host import abi", False),
    ("import lguest_host.abi as abi", False),
    ("from .entry import Hypercall", False),
    ("from lguest_host.core import lgread", True),
    ("from lguest_host import abi, core", True),
    ("import lguest_host.page_tables as pt", True),
    ("import lguest_host", True),
    ("def f():\n    from lguest_host.x86 import core\n", True),
    ("import importlib\nm = importlib.import_module('lguest_host.core')", True),
    ("m = __import__('lguest_host')", True),
    ("import sys\nm = sys.modules['lguest_host.core']", True),
])
def test_import_checker_catches_host_imports(source, flagged):
    assert bool(import_violations(source)) == flagged


def test_guest_sources_import_only_the_abi_from_the_host():
    files = sorted(GUEST_DIR.rglob("*.py"))
    assert len(files) >= 8
    bad = []
    uses_abi = 0
    for path in files:
        source = path.read_text()
        bad += import_violations(source, str(path.relative_to(GUEST_DIR.parent)))
        uses_abi += "lguest_host.abi" in source
    assert bad == []
    assert uses_abi >= 3            # the checker did see the Guest's abi imports


# -- at run time: who calls whom -----------------------------------------------------------------
def _module_of_callable(fn) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        return type(owner).__module__ or ""
    return getattr(fn, "__module__", None) or ""


class CallWatch:
    """A profile hook recording calls by lguest_guest frames: the modules
    of their direct callees, and the ones that are lguest_host (not abi)."""

    def __init__(self):
        self.violations = []
        self.callees = Counter()          # top-level package of callees of guest frames
        self.host_to_guest = 0            # the other direction, which is allowed

    def __call__(self, frame, event, arg):
        if event == "call":
            back = frame.f_back
            if back is None:
                return
            caller = back.f_globals.get("__name__") or ""
            callee = frame.f_globals.get("__name__") or ""
            what = frame.f_code.co_qualname
        elif event == "c_call":
            caller = frame.f_globals.get("__name__") or ""
            callee = _module_of_callable(arg)
            what = getattr(arg, "__qualname__", repr(arg))
        else:
            return
        if caller.startswith("lguest_guest"):
            self.callees[callee.split(".")[0]] += 1
            if callee.startswith("lguest_host") and callee != ALLOWED:
                self.violations.append(f"{caller} -> {callee}.{what}")
        elif caller.startswith("lguest_host") and callee.startswith("lguest_guest"):
            self.host_to_guest += 1

    def run(self, fn, *args, **kw):
        old = sys.getprofile()
        sys.setprofile(self)
        try:
            return fn(*args, **kw)
        finally:
            sys.setprofile(old)


def test_call_watch_catches_a_guest_calling_the_host():
    """The negative control: a module named as Guest code calling a Host function."""
    probe = types.ModuleType("lguest_guest._isolation_probe")
    exec("def peek(lg):\n    return lguest_address_ok(lg, 0, 4)\n", probe.__dict__)
    probe.__dict__["lguest_address_ok"] = lguest_address_ok

    class FakeLg:
        pfn_limit = 1

    watch = CallWatch()
    assert watch.run(probe.peek, FakeLg()) is True
    assert watch.violations == [
        "lguest_guest._isolation_probe -> lguest_host.core.lguest_address_ok"]


@pytest.mark.parametrize("direct_traps", [True, False])
def test_no_guest_frame_calls_into_the_host_while_a_program_runs(direct_traps):
    program = next(p for p in load_programs() if p.name == "strings")
    watch = CallWatch()
    run = watch.run(run_in_guest, program.path.read_bytes(), list(program.argv),
                    program.env, name=program.name, mem_mib=8, direct_traps=direct_traps)
    # The run was real: the program did its work inside the Guest.
    assert run.status == program.expected_status and run.stdout == program.expected_stdout
    assert watch.violations == []
    # The hook saw the Guest's calls (into itself and into the hardware) and
    # the Host's calls into the Guest (through the CPU's native entry points
    # and the Launcher loading the kernel).
    assert watch.callees["lguest_guest"] > 100 and watch.callees["x86core"] > 10
    assert watch.host_to_guest > 0
