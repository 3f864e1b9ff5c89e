"""The threaded tier's handler library: every shape's code, compiled once per installation.

A threaded handler's code depends only on its shape (interpreter.py), and
the shapes are a closed set: the mnemonics, operand forms, address forms,
flag liveness and fused branches that interpreter.plan_block can produce,
about 6,400 of them.  None depends on the guest program, so they are the
emulator's own code, like the interpreter loop of any threaded-code
machine: compiling them is done once, when the package is first imported,
and kept beside the package's bytecode (__pycache__), as CPython keeps its
.pyc files.  Meeting a shape then costs a marshal.loads (about 2 us), where
compile() cost about 110 us: compile() was a tenth of a cold run.

The file is used only when its digest matches: this module's and the
sources the handlers are generated from (interpreter, codegen, flags), the
Python implementation and marshal's format.  A stale or unreadable file is
built again; one that cannot be written leaves the library in memory for the
process.  X86CORE_HANDLER_LIBRARY=0 turns the library off (every shape is
then compiled when first met, as benchmarks.mips --no-library measures).
"""
from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

_HERE = Path(__file__).resolve().parent
# What the handlers' code is made from.
_SOURCES = ("handler_library.py", "interpreter.py", "codegen.py", "flags.py")


def path() -> Path:
    return _HERE / "__pycache__" / f"handlers.{sys.implementation.cache_tag}.marshal"


def digest() -> str:
    h = hashlib.sha256(f"{sys.implementation.cache_tag} {marshal.version}".encode())
    for name in _SOURCES:
        h.update((_HERE / name).read_bytes())
    return h.hexdigest()


def enabled() -> bool:
    return os.environ.get("X86CORE_HANDLER_LIBRARY", "1") != "0"


def read(where: Path, want: str) -> dict | None:
    """The library in `where` ({shape: marshalled code}), None when it is
    missing, unreadable or made from other sources."""
    try:
        made, shapes = marshal.loads(where.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return shapes if made == want and isinstance(shapes, dict) else None


def build(shapes: Iterable[tuple], compile_shape: Callable[[tuple], object]) -> dict:
    return {key: marshal.dumps(compile_shape(key)) for key in shapes}


def write(where: Path, made: str, shapes: dict) -> bool:
    """Write atomically (a concurrent reader sees the old file or the new one)."""
    tmp = where.with_name(f"{where.name}.{os.getpid()}.tmp")
    try:
        where.parent.mkdir(exist_ok=True)
        tmp.write_bytes(marshal.dumps((made, shapes)))
        os.replace(tmp, where)
        return True
    except OSError:
        with contextlib.suppress(OSError):      # (its directory may never have been made)
            tmp.unlink(missing_ok=True)
        return False


def load(shapes: Callable[[], Iterable[tuple]], compile_shape: Callable[[tuple], object],
         where: Path | None = None) -> dict:
    """The library, built (and saved) first when there is none for these sources."""
    if not enabled():
        return {}
    where = where or path()
    want = digest()
    library = read(where, want)
    if library is None:
        library = build(shapes(), compile_shape)
        write(where, want, library)
    return library
