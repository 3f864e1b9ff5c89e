"""The Guest kernel's system calls (lguest_guest/syscalls.py, mm.py,
binfmt_elf.py), run as real i386 code in the Guest:

* tests/programs/guest/bin/sysprobe, a self-checking C program (brk, mmap,
  munmap, mprotect, mremap, open/read/lseek/fstat/pread/dup/fcntl of a file
  the Launcher passes in, getdents64, getcwd, readlink of /proc/self/exe,
  uname, ids, prlimit, prctl names, getrandom, the clocks, nanosleep,
  writev, ioctl TCGETS/TIOCGWINSZ, -ENOSYS, -EFAULT on bad pointers), whose
  output must equal its native output (recorded, and a native run now
  where this machine runs i386 code), in both system call modes;
* its ways to die (SIGSEGV, SIGFPE, SIGILL, SIGABRT) with a shell's status;
* virtual time: a 5 s nanosleep is HALT plus the timer, instant in wall time;
* hand-assembled flat programs for the register convention;
* properties of the address-space bookkeeping and of path lookup.
"""
from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from lguest_guest import mm as mmu
from lguest_guest import syscalls
from lguest_guest.kernel import Kernel
from lguest_host.launcher import Launcher
from tests.lguest_guest.test_programs import (native_i386, native_status, run_cli,
                                              run_native)
from tests.programs_table import PROGRAMS_DIR
from x86core.asm import assemble

GUEST_DIR = PROGRAMS_DIR / "guest"
SYSPROBE = GUEST_DIR / "bin" / "sysprobe"
DATA = GUEST_DIR / "data.txt"
EXPECTED_ALL = (GUEST_DIR / "expected" / "sysprobe-all.out").read_bytes()
MODES = {"direct": True, "reflected": False}


def boot_guest(files, argv, *, envp=(), direct=True, mem_mib=32, stdin=b"", trace=None):
    """A Launcher and Kernel booted on `files` (the program first), not yet run."""
    launcher = Launcher(mem_mib, direct_traps=direct, stdin=io.BytesIO(stdin),
                        stdout=io.BytesIO(), stderr=io.BytesIO())
    kernel = Kernel(trace=trace)
    launcher.boot(kernel, list(argv), list(envp), list(files))
    return launcher, kernel


def run_probe(*args, direct=True, stdin=b"", trace=None, files=(), mem_mib=32):
    prog = str(SYSPROBE)
    launcher, kernel = boot_guest([(prog, SYSPROBE.read_bytes()), *files], [prog, *args],
                                  direct=direct, stdin=stdin, trace=trace, mem_mib=mem_mib)
    outcome = launcher.run()
    return outcome, launcher.stdout.getvalue(), launcher.stderr.getvalue(), launcher, kernel


# -- the probe ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_sysprobe_all_checks_pass_like_native(mode):
    seen = []
    outcome, out, err, _, kernel = run_probe(
        "all", str(DATA), direct=MODES[mode], files=[(str(DATA), DATA.read_bytes())],
        trace=lambda nr, args, result: seen.append((nr, result)))
    assert b"FAIL" not in out, out.decode()
    assert out == EXPECTED_ALL
    assert outcome.status == 0 and outcome.reason is None, err
    # The calls the probe makes went through the table, and the unknown one did not.
    assert (999, -syscalls.ENOSYS) in seen
    made = {nr for nr, _ in seen}
    assert {45, 192, 91, 125, 163, 5, 3, 19, 140, 180, 197, 195, 220, 183, 85, 122,
            355, 265, 78, 162, 146, 54, 172, 191, 258, 224}.issubset(made)
    assert kernel.task.syscalls == len(seen) + 1          # exit never returns


def test_sysprobe_all_under_the_command_and_natively():
    """The command (arguments naming host files go into the Guest's archive)
    against this machine running the same binary from "/"."""
    run = run_cli([SYSPROBE, "all", DATA], cwd=Path("/"))
    assert run.stdout == EXPECTED_ALL
    assert run.status == 0
    if not native_i386():
        pytest.skip("this machine cannot run i386 programs natively")
    native = run_native(SYSPROBE, [str(SYSPROBE), "all", str(DATA)], cwd="/")
    assert native.stdout == run.stdout
    assert native.returncode == 0


DEATHS = {"segv": (139, "segmentation fault at 0x0"), "munmapped": (139, "segmentation fault"),
          "rowrite": (139, "segmentation fault"), "protnone": (139, "segmentation fault"),
          "div0": (136, "divide error"), "ud2": (132, "invalid opcode"),
          "abort": (134, "signal sent to itself")}


@pytest.mark.parametrize("how", DEATHS)
def test_a_program_dies_like_a_native_one(how):
    status, what = DEATHS[how]
    outcome, out, err, _, _ = run_probe(how)
    assert outcome.status == status and outcome.reason is None
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and what in lines[0] and f"killed by signal {status - 128}" in lines[0]
    if native_i386():
        native = run_native(SYSPROBE, ["sysprobe", how])
        assert native_status(native.returncode) == status
        assert native.stdout == out


def test_a_segfault_in_reflected_mode_too():
    outcome, _, err, launcher, _ = run_probe("munmapped", direct=False)
    assert outcome.status == 139
    assert launcher.cpu.lg.stats.reflected_faults >= 1


def test_a_long_nanosleep_is_virtual_time():
    """nanosleep(5 s): the kernel arms the clock event and HALTs; the Host
    jumps its virtual clock to the timer, so it costs no wall time, and
    CLOCK_MONOTONIC (from lguest_data.time) moved 5 s."""
    started = time.perf_counter()
    outcome, out, err, launcher, _ = run_probe("sleep", "5000")
    wall = time.perf_counter() - started
    assert out == b"nanosleep 0\nslept enough: yes\n", err
    assert outcome.status == 0
    assert launcher.host.now_ns() >= 5 * 10**9
    assert wall < 5
    stats = launcher.cpu.lg.stats
    assert stats.hypercalls[10] >= 1                   # LHCALL_HALT
    assert stats.interrupts[0] >= 1                    # the timer's irq 0
    # More than one clock event: one is at most 2^32 ns.
    assert stats.hypercalls[9] >= 2                    # LHCALL_SET_CLOCKEVENT


def test_the_stack_grows_on_faults_the_guest_handles():
    outcome, out, _, launcher, kernel = run_probe("stack", "600", direct=False)
    assert (out, outcome.status) == (b"stack ok\n", 0)
    assert launcher.cpu.lg.stats.reflected_faults > 100
    stack = next(v for v in kernel.mm.vmas if v.name == "[stack]")
    assert mmu.STACK_TOP - stack.start >= 600 * 1024


def test_heap_pages_arrive_on_first_touch():
    outcome, out, _, launcher, _ = run_probe("heap", "4")
    assert outcome.status == 0
    assert out == b"pages touched, sum %d\n" % sum(range(1024))
    assert launcher.cpu.lg.stats.reflected_faults >= 1024


def test_running_out_of_guest_memory_kills_the_program():
    outcome, out, err, _, _ = run_probe("heap", "12", mem_mib=8)
    assert outcome.status == 137 and outcome.reason is None
    assert b"out of memory" in err and len(err.splitlines()) == 1


def test_stdin_reaches_read_through_the_console():
    data = bytes(range(256)) * 5
    outcome, out, _, _, _ = run_probe("cat", stdin=data)
    assert out == data + b"bytes 1280\n"
    assert outcome.status == 0


# -- hand-assembled programs -----------------------------------------------------------------------
BASE = 0x08048000


def flat_elf(source: str, *, bss: int = 0, e_type: int = 2, extra_phdrs: tuple = ()) -> bytes:
    """A minimal static ELF32 executable: one RWX PT_LOAD holding the
    headers and the code assembled from `source` (entry at `_start`)."""
    phnum = 1 + len(extra_phdrs)
    header_size = 52 + 32 * phnum
    program = assemble(source, base=BASE + header_size)
    size = header_size + len(program.code)
    ehdr = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", e_type, 3, 1, program.labels["_start"], 52, 0, 0, 52, 32, phnum,
        40, 0, 0)
    phdrs = struct.pack("<8I", 1, 0, BASE, BASE, size, size + bss, 7, 0x1000)
    for ph in extra_phdrs:
        phdrs += struct.pack("<8I", *ph)
    return ehdr + phdrs + program.code


EXIT = "mov eax, 1; int 0x80"


def run_flat(source: str, files=(), direct=True, **kw):
    launcher, kernel = boot_guest([("flat", flat_elf(source, **kw)), *files], ["flat"],
                                  direct=direct)
    outcome = launcher.run(budget=5_000_000)
    return outcome, launcher


@pytest.mark.parametrize("mode", MODES)
def test_a_system_call_preserves_every_register_but_eax(mode):
    regs = {"ebx": 0x11111111, "ecx": 0x22222222, "edx": 0x33333333, "esi": 0x44444444,
            "edi": 0x55555555, "ebp": 0x66666666}
    setup = "; ".join(f"mov {r}, {v:#x}" for r, v in regs.items())
    checks = "\n".join(f"cmp {r}, {v:#x}\njne bad" for r, v in regs.items())
    source = f"""
    _start:
        {setup}
        mov eax, 20
        int 0x80
        {checks}
        cmp eax, 1
        jne bad
        mov ebx, 0
        {EXIT}
    bad:
        mov ebx, 1
        {EXIT}
    """
    outcome, _ = run_flat(source, direct=MODES[mode])
    assert outcome.status == 0, outcome.reason


def test_mmap2_takes_its_page_offset_in_ebp():
    """mmap2's sixth argument (the file page) arrives in EBP: map page 1 of a
    two-page file and exit with its first byte."""
    source = f"""
    _start:
        mov eax, 5
        mov ebx, OFFSET path
        xor ecx, ecx
        int 0x80
        mov edi, eax
        mov eax, 192
        xor ebx, ebx
        mov ecx, 4096
        mov edx, 1
        mov esi, 2
        mov ebp, 1
        int 0x80
        movzx ebx, BYTE PTR [eax]
        {EXIT}
    path:
        .asciz "/pages"
    """
    outcome, _ = run_flat(source, files=[("/pages", b"A" * 4096 + b"B" * 4096)])
    assert outcome.status == ord("B")


def test_an_unknown_system_call_is_enosys():
    source = f"""
    _start:
        mov eax, 386
        int 0x80
        mov ebx, eax
        neg ebx
        {EXIT}
    """
    outcome, _ = run_flat(source)
    assert outcome.status == syscalls.ENOSYS


def test_a_bss_larger_than_the_file_reads_zero():
    source = f"""
    _start:
        mov esi, OFFSET end
        mov ecx, 20000
        xor ebx, ebx
    1:
        or bl, BYTE PTR [esi]
        inc esi
        loop 1b
        mov BYTE PTR [end + 19999], 7
        {EXIT}
    end:
    """
    outcome, _ = run_flat(source, bss=20000)
    assert outcome.status == 0


# -- properties of the bookkeeping ---------------------------------------------------------------
PAGE = 4096
LO = mmu.MMAP_BASE


def _pages_of(mm):
    out = {}
    for v in mm.vmas:
        for p in range(v.start, v.end, PAGE):
            out[p] = (v.prot, v.name)
    return out


ops = st.lists(st.tuples(st.sampled_from(["map", "unmap", "protect"]),
                         st.integers(0, 48), st.integers(1, 16), st.integers(0, 7)),
               max_size=30)


@given(ops)
def test_areas_stay_sorted_disjoint_and_merged(operations):
    """Any mix of mapping, unmapping and protecting keeps the areas sorted,
    disjoint, non-empty and merged, and every page has the rights the last
    operation on it gave (a page model)."""
    mm = mmu.Mm(pgdir=0)
    model = {}
    for op, first, count, prot in operations:
        start, end = LO + first * PAGE, LO + (first + count) * PAGE
        if op == "map":
            mm.carve(start, end)
            mm.add_vma(start, end, prot)
            model.update({p: (prot, "") for p in range(start, end, PAGE)})
        elif op == "unmap":
            mm.carve(start, end)
            for p in range(start, end, PAGE):
                model.pop(p, None)
        elif mm.covered(start, end):
            for piece in mm.carve(start, end):
                piece.prot = prot
                mm.insert(piece)
            model.update({p: (prot, "") for p in range(start, end, PAGE)})
        else:
            assert any(p not in model for p in range(start, end, PAGE))
    assert _pages_of(mm) == model
    for a, b in zip(mm.vmas, mm.vmas[1:]):
        assert a.end <= b.start
        assert not (a.end == b.start and a.prot == b.prot)      # would have merged
    assert all(v.end > v.start for v in mm.vmas)


@given(st.integers(1, 64), st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)),
                                    max_size=10))
def test_get_unmapped_area_finds_free_space(length, taken):
    mm = mmu.Mm(pgdir=0)
    for first, count in taken:
        mm.carve(LO + first * PAGE, LO + (first + count) * PAGE)
        mm.add_vma(LO + first * PAGE, LO + (first + count) * PAGE, 3)
    addr = mm.get_unmapped_area(length * PAGE)
    assert addr is not None and addr >= LO and addr % PAGE == 0
    assert not mm.overlaps(addr, addr + length * PAGE)


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d"]), max_size=8),
       st.sampled_from(["/", "/a", "/a/b"]))
def test_canonical_paths_are_absolute_and_stable(parts, cwd):
    path = "/".join(parts)
    c = syscalls.canonical(path, cwd)
    assert c.startswith("/") and "//" not in c and "/./" not in c + "/" and "/../" not in c + "/"
    assert syscalls.canonical(c) == c


class _NoKernel:
    trace = None


def _task(files):
    return syscalls.Task(_NoKernel(), ["prog"], files)


def test_path_lookup_in_the_archive_tree():
    t = _task([("bin/prog", b"\x7fELF"), ("/data/x.txt", b"hello"), ("./rel.txt", b"r")])
    node, where = t.resolve("/data/x.txt")
    assert node.data == b"hello" and where == "/data/x.txt"
    assert t.resolve("/data/../rel.txt")[0].data == b"r"
    assert t.resolve("rel.txt")[0].data == b"r"                 # cwd is /
    assert t.resolve("/data")[0].kind == syscalls.S_IFDIR
    assert t.resolve("/data/x.txt/more")[1] == -syscalls.ENOTDIR
    assert t.resolve("/nope")[1] == -syscalls.ENOENT
    assert t.resolve("/data/x.txt/")[1] == -syscalls.ENOTDIR
    exe = t.resolve("/proc/self/exe", follow=False)[0]
    assert exe.kind == syscalls.S_IFLNK and exe.target == "/bin/prog"
    assert t.resolve("/proc/self/exe")[0].data == b"\x7fELF"
    stdout = t.resolve("/dev/stdout")[0]
    assert stdout.magic_fd == 1 and stdout.kind == syscalls.S_IFIFO
    assert t.resolve("/dev/null")[0].device == "null"
    assert sorted(n.path for n in t.tree.children("/data")) == ["/data/x.txt"]


# -- robustness: any system call with any arguments ------------------------------------------------
# Calls that end or block the program on purpose (exit, signals to itself,
# pause, futex waits, sleeps) are left out; everything else must return.
NEVER_RETURN = {1, 29, 37, 162, 238, 240, 252, 267, 270, 407}
SYSCALL_NRS = st.one_of(st.sampled_from(sorted(set(syscalls.SYSCALLS) - NEVER_RETURN)),
                        st.integers(0, 500).filter(lambda n: n not in NEVER_RETURN))
ARGS = st.one_of(st.sampled_from(["buf", "buf+4093", 0, 1, 2, 3, 0xFFFFFFFF, 0x1000, 0xFFF,
                                  0x40000000, 0xBFFFF000, 0xC0000000, 0xFFFFF000, 0x7FFFFFFF,
                                  0x80000000, 4096, 65536]),
                 st.integers(0, 0xFFFFFFFF))


@given(st.lists(st.tuples(SYSCALL_NRS, st.lists(ARGS, min_size=6, max_size=6)),
                min_size=1, max_size=6))
def test_no_system_call_crashes_the_kernel(calls):
    """Whatever a program asks, the Guest kernel answers (or kills the
    program with a signal): it never panics and the Host never has to."""
    lines = ["_start:"]
    for nr, args in calls:
        regs = ["ebx", "ecx", "edx", "esi", "edi", "ebp"]
        for reg, arg in zip(regs, args):
            value = f"OFFSET {arg}" if isinstance(arg, str) else f"{arg:#x}"
            lines.append(f"    mov {reg}, {value}")
        lines += [f"    mov eax, {nr}", "    int 0x80"]
    lines += ["    mov ebx, 0", f"    {EXIT}", "buf:"]
    outcome, launcher = run_flat("\n".join(lines), bss=1 << 16,
                                 files=[("/f", b"file data" * 100)])
    assert outcome.reason is None, outcome.reason
    assert outcome.status is not None
    assert b"kernel bug" not in launcher.stderr.getvalue()
