"""The threaded tier's handler library (x86core/handler_library.py): it holds
every shape the tier can make, its code is what compiling the shape gives,
and a missing, stale or broken file never changes what runs."""
from __future__ import annotations

import io
import marshal
import sys

import pytest
from hypothesis import given

from x86core import blocks, decode, handler_library, interpreter
from x86core.asm import asm
from x86core.linux import Process

from .test_executor import PROGRAMS
from .test_interpreter import TAKEN, _instruction

EVERY = frozenset(interpreter.every_shape())


def _keys(text: str) -> list[tuple]:
    """The shapes one instruction may take: as planned, with its flags dead,
    and with each Jcc fused into it."""
    insn = decode(asm(text))
    key = interpreter.plan(insn, insn.length, True)[0]
    keys = [key]
    if key[0] in interpreter._WRITES_FLAGS:
        keys.append((*key[:3], False, *key[4:]))
    if key[0] in interpreter._FUSABLE:
        keys += [(*key[:3], True, cc, key[5]) for cc in range(16)]
    return [k for k in keys if k[0] != "nop"]


@pytest.mark.parametrize("text", [t for t in TAKEN if t != "nop"])
def test_every_shape_holds_the_shapes_of_what_the_tier_takes(text):
    assert set(_keys(text)) <= EVERY


@given(_instruction())
def test_every_shape_holds_the_shape_of_any_instruction_the_tier_takes(text):
    insn = decode(asm(text))
    if interpreter.plan(insn, insn.length, True) is not None:
        assert set(_keys(text)) <= EVERY


@pytest.mark.parametrize("name", ["intarith", "sort", "strings"])
def test_a_program_meets_no_shape_outside_the_library(name):
    blocks.clear_recipes()
    proc = Process(str(PROGRAMS / "bin" / name), [name], [], stdout=io.BytesIO(),
                   stderr=io.BytesIO(), cache=True)
    proc.run(None)
    met = set(interpreter._FACTORIES)
    assert met and met <= EVERY


def test_the_library_code_is_the_compiled_code():
    library = handler_library.read(handler_library.path(), handler_library.digest())
    if library is None:
        pytest.skip("the package directory holds no library (not writable)")
    assert set(library) == EVERY
    for key in sorted(EVERY, key=repr)[::7]:
        stored, made = marshal.loads(library[key]), interpreter.compile_shape(key)
        assert (stored.co_code, stored.co_consts, stored.co_varnames, stored.co_names) == \
            (made.co_code, made.co_consts, made.co_varnames, made.co_names), key


SOME = [("mov", (("r", 4), ("r", 4)), "", True, -1, 0),
        ("add", (("r", 4), ("m", 4)), "bd", True, 4, 0)]


@pytest.mark.parametrize("dont_write", [False, True])
def test_a_missing_library_is_built_and_saved_unless_bytecode_is_not_written(
        tmp_path, monkeypatch, dont_write):
    # As CPython's .pyc files: PYTHONDONTWRITEBYTECODE (sys.dont_write_bytecode)
    # stops the import from writing one; the explicit build writes it anyway.
    monkeypatch.setattr(sys, "dont_write_bytecode", dont_write)
    where = tmp_path / "lib.marshal"
    library = handler_library.load(lambda: SOME, interpreter.compile_shape, where)
    if dont_write:
        assert library == {} and not where.exists()
        library = handler_library.load(lambda: SOME, interpreter.compile_shape, where,
                                       build_missing=True)
    assert set(library) == set(SOME)
    assert handler_library.read(where, handler_library.digest()) == library


def test_the_command_builds_a_stale_library_only(tmp_path, monkeypatch, capsys):
    where = tmp_path / "lib.marshal"
    monkeypatch.setattr(handler_library, "path", lambda: where)
    monkeypatch.setattr(interpreter, "every_shape", lambda: iter(SOME))
    assert handler_library.main([]) == 0 and "2 shapes" in capsys.readouterr().out
    assert handler_library.main([]) == 0 and "up to date" in capsys.readouterr().out
    assert handler_library.main(["--force"]) == 0 and "2 shapes" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not marshal at all", marshal.dumps(("stale", {}))])
def test_a_broken_or_stale_library_is_built_again(tmp_path, content):
    where = tmp_path / "lib.marshal"
    where.write_bytes(content)
    library = handler_library.load(lambda: SOME, interpreter.compile_shape, where,
                                   build_missing=True)
    assert set(library) == set(SOME)
    assert handler_library.read(where, handler_library.digest()) == library


def test_a_library_that_cannot_be_written_stays_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    where = blocker / "sub" / "lib.marshal"     # a directory that cannot exist
    library = handler_library.load(lambda: SOME, interpreter.compile_shape, where,
                                   build_missing=True)
    assert set(library) == set(SOME) and not where.exists()
    assert not list(tmp_path.glob("**/*.tmp"))


def test_the_switch_turns_the_library_off(monkeypatch, tmp_path):
    monkeypatch.setenv("X86CORE_HANDLER_LIBRARY", "0")
    assert handler_library.load(lambda: SOME, interpreter.compile_shape,
                                tmp_path / "lib.marshal") == {}


def test_handlers_compiled_in_the_run_behave_as_the_library_s():
    """The same program with shapes compiled when met: same output, same count."""
    def run():
        blocks.clear_recipes()
        out = io.BytesIO()
        proc = Process(str(PROGRAMS / "bin" / "crc32"), ["crc32"], [], stdout=out,
                       stderr=io.BytesIO(), cache=True)
        return proc.run(None), out.getvalue(), proc.cpu.icount
    with_library = run()
    interpreter.use_library(False)
    try:
        assert run() == with_library
        assert interpreter._FACTORIES
    finally:
        interpreter.use_library(True)


def test_a_damaged_entry_is_compiled_instead(monkeypatch):
    key = SOME[1]
    monkeypatch.setattr(interpreter, "_LIBRARY", {key: b"\x00garbage", SOME[0]: marshal.dumps(1)})
    monkeypatch.setattr(interpreter, "_FACTORIES", {})
    for shape in SOME:
        make, operands = interpreter.factory(shape)
        assert operands and callable(make)
