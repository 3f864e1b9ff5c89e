"""Bare-metal boot: the reset state, the firmware ROM at both its places, the
debug and POST ports, images run from the reset vector, and `python -m
x86core boot`."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import build as images
from x86core import boot, interrupts
from x86core.asm import assemble
from x86core.boot import BootError, Machine, boot_image, reset
from x86core.cpu import CPU
from x86core.exceptions import TripleFault
from x86core.memory import PhysicalMemory

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGES = ROOT / "tests" / "images"
PROTECTED_ROM = IMAGES / "protected.rom"
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
ES, CS, SS, DS, FS, GS = range(6)

# A real-mode-only firmware: the reset vector's near jump (CS keeps its
# FFFF0000 base, so this runs from the top alias), a string read through
# DS = F000 (the low alias), port E9, both POST ports, HLT.
REAL_MODE_ONLY = """
bits 16
start:
    mov al, 0x11
    out 0x80, al
    mov ax, 0xF000
    mov ds, ax
    mov si, OFFSET msg - 0xF0000
    mov dx, 0xE9
1:  lodsb
    test al, al
    jz 2f
    out dx, al
    jmp 1b
2:  mov ax, 0x1234
    mov dx, 0x190
    out dx, ax
    mov al, 0x22
    out 0x80, al
    cli
    hlt
msg: db "real mode", 10, 0
.org 0xFFF0
    jmp start
.org 0x10000
"""


def real_mode_rom() -> bytes:
    return assemble(REAL_MODE_ONLY, base=0xF0000, bits=16).code


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "x86core", *args], cwd=ROOT,
                          capture_output=True, timeout=300)


# -- the reset state ------------------------------------------------------------------------

def test_reset_state_is_table_9_1():
    cpu = CPU(PhysicalMemory(1 << 20))
    # Dirty everything first: reset must not depend on a fresh CPU.
    cpu.load_flat_segments()
    cpu.regs[:] = [0xDEAD] * 8
    cpu.cr2, cpu.cr3, cpu.cr4 = 1, 0x1000, 0x10
    cpu.dr[:] = [5] * 8
    cpu.gdtr = cpu.idtr = (0x1234, 7)
    cpu.cpl = 3
    cpu.halted = True
    cpu.set_eflags(0x246)
    reset(cpu)
    assert cpu.eip == 0xFFF0
    assert (cpu.seg_sel[CS], cpu.seg_base[CS], cpu.seg_limit[CS]) == (0xF000, 0xFFFF0000, 0xFFFF)
    for seg in (ES, SS, DS, FS, GS):
        assert (cpu.seg_sel[seg], cpu.seg_base[seg], cpu.seg_limit[seg]) == (0, 0, 0xFFFF)
        assert cpu.seg_attr[seg] & 0x80            # present
    assert cpu.get_eflags() == 0x00000002
    assert cpu.cr0 == 0x60000010
    assert (cpu.cr2, cpu.cr3, cpu.cr4) == (0, 0, 0)
    assert cpu.regs[EDX] == cpu.cpuid(1)[0] == 0x00000633
    assert [cpu.regs[r] for r in (EAX, ECX, EBX, ESP, EBP, ESI, EDI)] == [0] * 7
    assert cpu.gdtr == (0, 0xFFFF) and cpu.idtr == (0, 0xFFFF)
    assert cpu.ldtr[:3] == (0, 0, 0xFFFF) and cpu.tr[:3] == (0, 0, 0xFFFF)
    assert cpu.dr[:4] == [0, 0, 0, 0]
    assert (cpu.dr[6], cpu.dr[7]) == (0xFFFF0FF0, 0x00000400)
    assert (cpu.bits, cpu.cpl, cpu.halted, cpu.flat) == (16, 0, False, False)
    assert cpu.icount == 0


def test_first_fetch_is_16_bytes_below_4_gib():
    machine = Machine(1 << 20)
    rom = bytearray(0x10000)
    rom[0xFFF0:0xFFF4] = b"\x90\x90\xf4\xcc"
    machine.load_rom(bytes(rom))
    cpu = machine.cpu
    assert (cpu.seg_base[CS] + cpu.eip) == 0xFFFFFFF0
    assert cpu.fetch(0xFFFFFFF0, 4) == b"\x90\x90\xf4\xcc"
    assert machine.run(10) == "halt"
    assert cpu.eip == 0xFFF3 and cpu.icount == 3


# -- the ROM at two places ------------------------------------------------------------------

@pytest.mark.parametrize("size,low,high", [(0x10000, 0xF0000, 0xFFFF0000),
                                           (0x20000, 0xE0000, 0xFFFE0000)])
def test_rom_answers_below_1_mib_and_below_4_gib(size, low, high):
    data = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(size))
    machine = Machine(2 << 20)
    machine.load_rom(data)
    mem, cpu = machine.mem, machine.cpu
    assert mem.read(0xFFFFFFF0, 1) == mem.read(0xFFFF0, 1) == data[-16]
    for offset in (0, 1, 0xFFF, 0x1000, size // 2 + 3, size - 4):
        assert mem.read(low + offset, 4) == mem.read(high + offset, 4) \
            == int.from_bytes(data[offset:offset + 4], "little")
    assert cpu.fetch(high, 16) == cpu.fetch(low, 16) == data[:16]
    assert cpu.read_slow(0xFFFFFFFC, 4) == int.from_bytes(data[-4:], "little")
    # Read-only: writes are dropped at both places, and the RAM beneath the
    # low alias is not what a read returns.
    cpu.write_slow(low + 0x10, 4, 0xFFFFFFFF)
    cpu.write_slow(high + 0x10, 4, 0xFFFFFFFF)
    assert mem.read(low + 0x10, 4) == mem.read(high + 0x10, 4) == \
        int.from_bytes(data[0x10:0x14], "little")
    # Neither alias ever enters the TLB (every access reaches the ROM).
    assert low & 0xFFFFF000 not in cpu.tlb_r and high & 0xFFFFF000 not in cpu.tlb_r
    # Just below the alias, above the end of RAM: nothing answers.
    assert mem.read(high - 4, 4) == 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 512, 0xFFFF, 0x10001, 0x30000])
def test_rom_of_another_size_is_refused(size):
    with pytest.raises(BootError, match="64 KiB or 128 KiB"):
        Machine(1 << 20).load_rom(bytes(size))


def test_one_rom_mapped_twice_is_one_device():
    mem = PhysicalMemory(1 << 20)
    rom = mem.map_rom(b"\x01\x02\x03\x04" * 1024, 0x10000, 0xFFFFF000)
    assert [r[2] for r in mem.regions] == [rom, rom]
    assert mem.read(0xFFFFF000, 4) == mem.read(0x10000, 4) == 0x04030201
    assert mem.read(0xFFFFFFFE, 4) == 0xFFFF0403        # past the end of 4 GiB: floats high
    with pytest.raises(ValueError):
        mem.map_device(0xFFFFF000, 0x2000, rom)


# -- ports ------------------------------------------------------------------------------------

def test_debug_port_and_post_codes():
    out, err = io.BytesIO(), io.StringIO()
    machine = Machine(1 << 20, out=out, err=err, post=True)
    machine.io.write(0xE9, 1, ord("h"))
    machine.io.write(0xE9, 2, 0x4169)             # only the low byte, as Bochs and QEMU
    machine.io.write(0x80, 1, 0x12)
    machine.io.write(0x190, 2, 0xBEEF)
    assert out.getvalue() == b"hi"
    assert err.getvalue() == "POST 0x80: 0x12\nPOST 0x190: 0xbeef\n"
    assert machine.post_codes == [(0x80, 0x12), (0x190, 0xBEEF)]
    assert machine.io.read(0xE9, 1) == 0xE9       # the port E9 hack's presence check


def test_post_codes_are_quiet_without_post():
    err = io.StringIO()
    machine = Machine(1 << 20, out=io.BytesIO(), err=err)
    machine.io.write(0x80, 1, 0x12)
    assert err.getvalue() == "" and machine.post_codes == [(0x80, 0x12)]


def test_debug_port_output_is_written_through():
    class Recorder(io.RawIOBase):
        def __init__(self):
            self.flushes = 0
            self.data = b""

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

        def flush(self):
            self.flushes += 1

    out = Recorder()
    machine = Machine(1 << 20, out=out)
    for ch in b"abc":
        machine.io.write(0xE9, 1, ch)
    assert out.data == b"abc" and out.flushes >= 3


# -- running images ----------------------------------------------------------------------------

def test_real_mode_image_runs_from_the_reset_vector(tmp_path):
    image = tmp_path / "real.rom"
    image.write_bytes(real_mode_rom())
    out, err = io.BytesIO(), io.StringIO()
    machine = boot_image(image, post=True, max_instructions=10_000, out=out, err=err)
    assert machine.result == "halt"
    assert out.getvalue() == b"real mode\n"
    assert machine.post_codes == [(0x80, 0x11), (0x190, 0x1234), (0x80, 0x22)]
    assert err.getvalue() == "POST 0x80: 0x11\nPOST 0x190: 0x1234\nPOST 0x80: 0x22\n"
    cpu = machine.cpu
    assert (cpu.seg_sel[CS], cpu.seg_base[CS]) == (0xF000, 0xFFFF0000)   # never reloaded
    assert re.fullmatch(r"halted at f000:00[0-9a-f]{2}", machine.describe())


def test_boot_sector_image_runs_at_7c00():
    code = assemble("""
        bits 16
        mov al, dl
        out 0xE9, al
        mov al, 'k'
        out 0xE9, al
        hlt
    """, base=0x7C00, bits=16).code
    out = io.BytesIO()
    machine = Machine(1 << 20, out=out)
    machine.load_boot_sector(code)
    assert machine.run(100) == "halt"
    assert out.getvalue() == b"\x80k"
    assert machine.describe() == f"halted at 0000:{0x7C00 + len(code):04x}"


def test_instruction_limit_and_shutdown_are_described(monkeypatch):
    rom = bytearray(0x10000)
    rom[0xFFF0:0xFFF2] = b"\xeb\xfe"                # jmp $
    machine = Machine(1 << 20, out=io.BytesIO())
    machine.load_rom(bytes(rom))
    assert machine.run(50) == "limit"
    # The limit is checked between blocks: a self-loop may run a little past it.
    assert machine.cpu.icount >= 50
    assert machine.describe() == \
        f"instruction limit reached at f000:fff0 after {machine.cpu.icount} instructions"
    assert boot.EXIT_STATUS["limit"] == 3

    def triple(cpu, exc):
        raise TripleFault(f"{exc} while delivering #DF")
    rom[0xFFF0:0xFFF2] = b"\x0f\x0b"                # ud2
    machine = Machine(1 << 20, out=io.BytesIO())
    machine.load_rom(bytes(rom))
    monkeypatch.setattr(interrupts, "deliver_exception", triple)
    assert machine.run(50) == "shutdown"
    assert machine.describe() == "shutdown (triple fault) at f000:fff0: #UD while delivering #DF"

    machine = Machine(1 << 20, out=io.BytesIO())
    machine.load_rom(bytes(rom))
    monkeypatch.setattr(interrupts, "deliver_exception", lambda cpu, exc: False)
    assert machine.run(50) == "exception"
    assert machine.describe() == "unhandled #UD at f000:fff0"


def test_event_printer_formats_a_delivery():
    err = io.StringIO()
    record = interrupts.Delivery("fault", 14, 6, 0x1B, 0x1000, 0x08, 0x2000, 3, 0, True)
    boot.event_printer(err)(record)
    assert err.getvalue() == "event: fault #PF(0x6) 001b:00001000 -> 0008:00002000 cpl 3->0 stack switched\n"


def test_event_printer_takes_anything():
    err = io.StringIO()
    printer = boot.event_printer(err)
    printer(CPU(4096), "exception", 14, error_code=6, from_cpl=3)
    printer("gate", vector=0x80)
    assert err.getvalue().splitlines() == [
        "event: exception 0xe error_code=0x6 from_cpl=0x3", "event: gate vector=0x80"]


# -- the protected-mode image -------------------------------------------------------------------

EXPECTED_OUTPUT = (b"real mode\nprotected mode\npaging\nsyscall from ring 3\n"
                   b"page fault at 00300abc\n")


def test_checked_in_rom_matches_its_source():
    assert PROTECTED_ROM.read_bytes() == images.build("protected")


def test_protected_image_layout():
    data = PROTECTED_ROM.read_bytes()
    assert len(data) == 0x10000
    assert data[0xFFF0] == 0xEA                      # far jmp at the reset vector
    program = assemble((IMAGES / "protected.asm").read_text(), base=0xF0000, bits=16)
    assert data[0xFFF1:0xFFF5] == (program.labels["start16"] - 0xF0000).to_bytes(2, "little") \
        + b"\x00\xf0"
    assert program.labels["user_code"] % 4096 == 0  # the ring-3 page is a page of its own


def test_protected_image_end_to_end():
    out, err = io.BytesIO(), io.StringIO()
    machine = boot_image(PROTECTED_ROM, post=True, max_instructions=1_000_000, out=out, err=err)
    assert out.getvalue() == EXPECTED_OUTPUT, machine.describe()
    assert machine.result == "halt", machine.describe()
    assert [v for p, v in machine.post_codes] == [1, 2, 3, 4, 5, 6]
    assert err.getvalue() == "".join(f"POST 0x80: {v:#04x}\n" for v in range(1, 7))
    cpu = machine.cpu
    assert cpu.cpl == 0 and cpu.seg_sel[CS] == 0x08 and not cpu.eflags & 0x200
    assert cpu.cr2 == 0x00300ABC
    assert cpu.cr0 & 0x80000001 == 0x80000001
    assert re.fullmatch(r"halted at 0008:000f[0-9a-f]{4}", machine.describe())
    # The #PF frame on the ring-0 stack: error code 6 (user write, not
    # present), the faulting EIP in the ring-3 page, CS 0x1B, SS 0x23.
    esp = cpu.regs[ESP]
    frame = [cpu.mem.read(esp + 4 * i, 4) for i in range(6)]
    assert frame[0] == 6 and frame[2] == 0x1B and frame[5] == 0x23
    assert frame[1] >> 12 == 0xF1


def test_boot_cli_runs_the_protected_image():
    out = run_cli("boot", str(PROTECTED_ROM), "--rom", "--post", "--max-instructions", "1000000")
    assert out.stdout == EXPECTED_OUTPUT, out.stderr.decode()
    lines = out.stderr.decode().splitlines()
    assert lines[:6] == [f"POST 0x80: {v:#04x}" for v in range(1, 7)]
    assert re.fullmatch(r"x86core: halted at 0008:000f[0-9a-f]{4}", lines[-1])
    assert out.returncode == 0


def test_boot_cli_traces_gates_and_privilege_changes():
    out = run_cli("boot", str(PROTECTED_ROM), "--rom", "--trace-events")
    assert out.stdout == EXPECTED_OUTPUT and out.returncode == 0, out.stderr.decode()
    events = [l for l in out.stderr.decode().splitlines() if l.startswith("event: ")]
    pattern = [r"iret .* -> 001b:000f1000 cpl 0->3 stack switched",
               r"software INT 0x80 001b:000f100c -> 0008:000f[0-9a-f]{4} cpl 3->0 stack switched",
               r"iret .* -> 001b:000f100c cpl 0->3 stack switched",
               r"fault #PF\(0x6\) 001b:000f100c -> 0008:000f[0-9a-f]{4} cpl 3->0 stack switched"]
    assert len(events) == len(pattern), events
    for line, want in zip(events, pattern):
        assert re.fullmatch("event: " + want, line), line


# -- the command line ----------------------------------------------------------------------------

def test_boot_cli_real_mode_image(tmp_path):
    image = tmp_path / "real.rom"
    image.write_bytes(real_mode_rom())
    out = run_cli("boot", str(image), "--rom", "--post")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"real mode\n"
    lines = out.stderr.decode().splitlines()
    assert lines[:3] == ["POST 0x80: 0x11", "POST 0x190: 0x1234", "POST 0x80: 0x22"]
    assert re.fullmatch(r"x86core: halted at f000:00[0-9a-f]{2}", lines[-1])
    quiet = run_cli("boot", str(image), "--rom", "--trace-events")
    assert quiet.stdout == b"real mode\n" and "POST" not in quiet.stderr.decode()
    assert quiet.returncode == 0


def test_boot_cli_instruction_limit(tmp_path):
    rom = bytearray(0x10000)
    rom[0xFFF0:0xFFF2] = b"\xeb\xfe"
    image = tmp_path / "spin.rom"
    image.write_bytes(bytes(rom))
    out = run_cli("boot", str(image), "--rom", "--max-instructions", "100")
    assert out.returncode == 3
    assert re.fullmatch(r"x86core: instruction limit reached at f000:fff0 after \d+ instructions\n",
                        out.stderr.decode())


@pytest.mark.parametrize("setup,message", [
    (None, r"x86core: .*missing\.rom: No such file or directory"),
    (bytes(1000), r"x86core: .*bad\.rom: a ROM image must be 64 KiB or 128 KiB, not 1000 bytes"),
    (b"", r"x86core: .*bad\.rom: a ROM image must be 64 KiB or 128 KiB, not 0 bytes"),
])
def test_boot_cli_errors_are_one_line(tmp_path, setup, message):
    if setup is None:
        path = tmp_path / "missing.rom"
    else:
        path = tmp_path / "bad.rom"
        path.write_bytes(setup)
    out = run_cli("boot", str(path), "--rom")
    err = out.stderr.decode()
    assert out.returncode == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.fullmatch(message + "\n", err), err
    assert out.stdout == b""


def test_boot_cli_directory_is_one_line(tmp_path):
    out = run_cli("boot", str(tmp_path), "--rom")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert b"Traceback" not in out.stderr


def test_boot_cli_boot_sector_too_big(tmp_path):
    path = tmp_path / "big.img"
    path.write_bytes(bytes(0xA0000))
    out = run_cli("boot", str(path))
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert b"does not fit" in out.stderr
