"""The threaded tier's handler library: every shape's code, compiled once per installation.

A threaded handler's code depends only on its shape (interpreter.py), and
the shapes are a closed set: the mnemonics, operand forms, address forms,
flag liveness and fused branches that interpreter.plan_block can produce,
about 6,400 of them.  None depends on the guest program, so they are the
emulator's own code, like the interpreter loop of any threaded-code
machine: they are compiled once and kept beside the package's bytecode
(__pycache__/handlers.<python>.marshal).  Meeting a shape then costs a
marshal.loads (about 2 us), where compile() cost about 110 us: compile() was
a tenth of a cold run.

The file is used only when its digest matches: this module's and the
sources the handlers are generated from (interpreter, codegen, flags), the
Python implementation and marshal's format.  A missing or stale one is built
at import, as CPython builds a .pyc (about 0.8 s), and, as with a .pyc, not
while PYTHONDONTWRITEBYTECODE is set: then only the explicit
`python -m x86core.handler_library` writes it (dev.py runs it, as one would
run compileall), and until then every shape is compiled when first met,
once per process.  A file that cannot be written leaves a library built in
memory for the process.  X86CORE_HANDLER_LIBRARY=0 turns the library off
(benchmarks.mips measures both ways).
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
         where: Path | None = None, build_missing: bool | None = None) -> dict:
    """The library for these sources, or {} (every shape compiled when met).
    A missing or stale one is built and saved when `build_missing`, which by
    default follows CPython's rule for .pyc files: not while
    PYTHONDONTWRITEBYTECODE (sys.dont_write_bytecode) is set."""
    if not enabled():
        return {}
    where = where or path()
    want = digest()
    library = read(where, want)
    if library is None:
        if not (not sys.dont_write_bytecode if build_missing is None else build_missing):
            return {}
        library = build(shapes(), compile_shape)
        write(where, want, library)
    return library


def main(argv: list[str] | None = None) -> int:
    """Build the library if it is missing or stale (or always: --force)."""
    import time
    from . import interpreter
    where, want = path(), digest()
    if "--force" in (argv if argv is not None else sys.argv[1:]):
        where.unlink(missing_ok=True)
    elif read(where, want) is not None:
        print(f"handler library up to date: {where}")
        return 0
    t = time.perf_counter()
    library = build(interpreter.every_shape(), interpreter.compile_shape)
    if not write(where, want, library):
        print(f"handler library: cannot write {where}", file=sys.stderr)
        return 1
    print(f"handler library: {len(library):,} shapes in {time.perf_counter() - t:.2f} s, {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
