"""Executor properties that need no reference machine.

Precise exceptions inside compiled blocks, self-modifying and remapped code,
REP string instructions stopped by a fault part-way, the block cache on and
off running whole programs to the same result, and regressions for
instruction bugs the Unicorn differential test found.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from x86core import flags as F
from x86core.asm import assemble
from x86core.cpu import CPU
from x86core.exceptions import DE, PF, UD

PAGE_DIR, PAGE_TABLE = 0x70000, 0x71000
MAPPED = 0x60                   # linear pages 0..0x5F identity-mapped at start
CODE = 0x1000
STACK_TOP = 0x9000
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)


class Machine:
    """A CPU at CPL 0, flat segments, paging on with an identity map of the
    low pages that tests punch holes in and remap."""

    def __init__(self, cache: bool = True, threaded: bool = True):
        cpu = self.cpu = CPU(1 << 20)
        cpu.load_flat_segments()
        for page in range(MAPPED):
            self.map(page << 12, page << 12)
        cpu.mem.write(PAGE_DIR, 4, PAGE_TABLE | 7)
        cpu.write_cr(3, PAGE_DIR)
        cpu.write_cr(0, cpu.cr0 | 0x80000000)
        cpu.blocks.enabled = cache
        cpu.blocks.threaded = threaded
        cpu.regs[ESP] = STACK_TOP
        cpu.set_eflags(0x202)
        self.exceptions = []
        cpu.exception_hook = lambda cpu, exc: self.exceptions.append(exc) and False

    def map(self, lin: int, phys: int, present: bool = True) -> None:
        self.cpu.mem.write(PAGE_TABLE + 4 * (lin >> 12), 4, phys | (7 if present else 0))
        self.cpu.invlpg(lin)

    def unmap(self, lin: int) -> None:
        self.map(lin, 0, present=False)

    def load(self, text: str, base: int = CODE) -> dict[str, int]:
        program = assemble(text, base=base)
        self.cpu.mem.load(base, program.code)      # physical = linear for mapped pages
        self.cpu.blocks.flush()                    # a bulk load is no CPU write: no SMC check
        return program.labels

    def run(self, start: int = CODE, limit: int = 10_000) -> str:
        self.cpu.eip = start
        return self.cpu.run(max_instructions=limit)

    def resume(self, limit: int = 10_000) -> str:
        return self.cpu.run(max_instructions=limit)

    @property
    def last(self):
        return self.exceptions[-1]


@pytest.fixture(params=["threaded", "compiled", "nocache"])
def machine(request):
    """The cache on with new code as threaded code (the default), the cache
    on with new code compiled as the first tier, and the cache off."""
    return Machine(cache=request.param != "nocache", threaded=request.param == "threaded")


# -- precise exceptions -----------------------------------------------------------------------

def test_page_fault_in_third_instruction_of_a_block(machine):
    cpu = machine.cpu
    labels = machine.load("""
        mov eax, 5
        add ebx, eax            # flags of this ADD are what the fault must show
    fault:
        mov ecx, [0x50000]      # not present
        mov edx, 7
        add eax, eax
        hlt
    """)
    machine.unmap(0x50000)
    cpu.mem.write(0x50000, 4, 0xCAFE)
    cpu.regs[EBX] = 0x7FFFFFFE
    cpu.regs[ECX] = cpu.regs[EDX] = 0x11111111
    assert machine.run() == "exception"
    exc = machine.last
    assert exc.vector == PF and exc.error_code == 0 and cpu.cr2 == 0x50000
    assert cpu.eip == labels["fault"]
    assert cpu.icount == 2
    assert cpu.regs[EAX] == 5 and cpu.regs[EBX] == 0x80000003
    assert cpu.regs[ECX] == 0x11111111 and cpu.regs[EDX] == 0x11111111
    # 0x7FFFFFFE + 5: signed overflow, sign set, no carry; AF from 0xE + 5.
    assert cpu.get_eflags() & F.ARITH == F.OF | F.SF | F.AF | F.PF
    if cpu.blocks.enabled:
        assert cpu.blocks.current[CODE].count >= 5      # the fault really was mid-block
    # The instruction restarts once the page is there, and the rest runs.
    machine.map(0x50000, 0x50000)
    assert machine.resume() == "halt"
    assert cpu.regs[ECX] == 0xCAFE and cpu.regs[EDX] == 7 and cpu.regs[EAX] == 10


def test_divide_error_in_third_instruction_of_a_block(machine):
    cpu = machine.cpu
    labels = machine.load("""
        mov eax, 100
        sub ecx, ecx            # ZF PF set: the flags at the fault
    fault:
        div ecx
        mov ebx, 1
        hlt
    """)
    cpu.regs[EDX] = 0
    cpu.regs[EBX] = 0x2222
    assert machine.run() == "exception"
    assert machine.last.vector == DE
    assert cpu.eip == labels["fault"] and cpu.icount == 2
    assert cpu.regs[EAX] == 100 and cpu.regs[ECX] == 0 and cpu.regs[EBX] == 0x2222
    assert cpu.get_eflags() & F.ARITH == F.ZF | F.PF


def test_fault_sees_flags_of_dead_flag_writers(machine):
    """Flags later overwritten in the block must still be exact at a fault between."""
    cpu = machine.cpu
    machine.load("""
        add eax, ebx            # overwritten by the SUB below
        sub eax, 1              # ... whose flags a fault must still see
        mov edx, [0x50000]
        and eax, 0
        hlt
    """)
    machine.unmap(0x50000)
    cpu.regs[EAX], cpu.regs[EBX] = 0xFFFFFFFF, 1
    assert machine.run() == "exception"
    assert cpu.regs[EAX] == 0xFFFFFFFF
    assert cpu.get_eflags() & F.ARITH == F.CF | F.SF | F.PF | F.AF


def test_write_fault_leaves_memory_and_registers(machine):
    """A store that faults, after a push in the same block, leaves ESP pushed
    once and nothing else written."""
    cpu = machine.cpu
    machine.load("""
        push 0x12345678
        mov dword ptr [0x50ffe], 0xAABBCCDD     # crosses into the absent page
        push 1
        hlt
    """)
    machine.unmap(0x51000)
    before = cpu.mem.dump(0x50000, 0x1000)
    assert machine.run() == "exception"
    assert machine.last.vector == PF and machine.last.error_code == 2 and cpu.cr2 == 0x51000
    assert cpu.regs[ESP] == STACK_TOP - 4 and cpu.mem.read(STACK_TOP - 4, 4) == 0x12345678
    assert cpu.mem.dump(0x50000, 0x1000) == before


def test_cr2_is_the_faulting_byte(machine):
    cpu = machine.cpu
    machine.unmap(0x51000)
    machine.load("mov eax, [0x51234]")
    assert machine.run() == "exception" and cpu.cr2 == 0x51234
    machine.load("mov eax, [0x50ffe]")      # a dword crossing into the absent page
    assert machine.run() == "exception" and cpu.cr2 == 0x51000


def test_cr2_of_a_store_crossing_onto_an_absent_page(machine):
    machine.unmap(0x51000)
    machine.load("mov dword ptr [0x50ffe], eax")
    assert machine.run() == "exception" and machine.cpu.cr2 == 0x51000


# -- REP string instructions stopped part-way ----------------------------------------------------

@pytest.mark.parametrize("down", [False, True], ids=["up", "down"])
def test_rep_movsd_faults_midway(machine, down):
    cpu = machine.cpu
    machine.load(f"""
        {'std' if down else 'cld'}
        rep movsd
        hlt
    """)
    machine.unmap(0x52000)
    src = 0x50000 + (0x20 if down else 0xFE0)       # 8 dwords from the edge (up) / the start (down)
    cpu.mem.load(0x50000, bytes(range(256)) * 16)
    for i in range(0, 0x1000, 4):
        cpu.mem.write(0x50000 + i, 4, 0x1000 + i)
    if down:
        dst = 0x53020                                 # 0x53000 down into the absent 0x52000
        machine.unmap(0x52000)
    else:
        dst = 0x51FE0 + 0x10                          # runs off 0x51FFF into 0x52000 after 4 dwords
    cpu.regs[ESI], cpu.regs[EDI], cpu.regs[ECX] = src, dst, 20
    assert machine.run() == "exception"
    assert machine.last.vector == PF
    assert cpu.eip == CODE + 1
    done = 9 if down else 4                           # iterations that completed
    step = -4 if down else 4
    assert cpu.regs[ECX] == 20 - done
    assert cpu.regs[ESI] == src + step * done and cpu.regs[EDI] == dst + step * done
    assert cpu.cr2 == (0x52FFC if down else 0x52000)
    for i in range(done):
        assert cpu.mem.read(dst + step * i, 4) == cpu.mem.read(src + step * i, 4)
    # Restart with the page present: the rest is copied, ECX reaches 0.
    machine.map(0x52000, 0x52000)
    assert machine.resume() == "halt"
    assert cpu.regs[ECX] == 0 and cpu.regs[EDI] == dst + step * 20


def test_rep_stosb_16bit_addressing_faults_midway(machine):
    """addr16 REP STOSB counts CX and steps DI; the fault leaves both mid-way."""
    cpu = machine.cpu
    machine.load("""
        cld
        addr16 rep stosb
        hlt
    """)
    machine.unmap(0xA000)
    cpu.regs[EAX] = 0x5A
    cpu.regs[EDI] = 0xABCD9FFD                         # DI = 0x9FFD: three bytes to the hole
    cpu.regs[ECX] = 0x77770010
    assert machine.run() == "exception"
    assert cpu.regs[ECX] == 0x7777000D and cpu.regs[EDI] == 0xABCDA000
    assert cpu.mem.dump(0x9FFD, 3) == b"\x5a" * 3


def test_repe_cmpsb_fault_keeps_flags_of_last_iteration(machine):
    cpu = machine.cpu
    machine.load("""
        cld
        repe cmpsb
        hlt
    """)
    machine.unmap(0x52000)
    cpu.mem.load(0x51FFC, b"abcd")
    cpu.mem.load(0x50000, b"abcd")
    cpu.regs[ESI], cpu.regs[EDI], cpu.regs[ECX] = 0x50000, 0x51FFC, 10
    assert machine.run() == "exception"
    assert cpu.regs[ECX] == 6 and cpu.regs[EDI] == 0x52000
    assert cpu.get_eflags() & F.ZF


# -- self-modifying and remapped code --------------------------------------------------------------

def test_code_written_then_jumped_to_runs_new_code(machine):
    cpu = machine.cpu
    machine.load("mov eax, 1\nhlt", base=0x3000)
    assert machine.run(0x3000) == "halt" and cpu.regs[EAX] == 1     # now compiled
    new = assemble("mov eax, 2\nhlt", base=0x3000).code
    lines = [f"mov byte ptr [{0x3000 + i}], {b}" for i, b in enumerate(new)]
    machine.load("\n".join(lines) + "\njmp 0x3000", base=CODE)
    cpu.halted = False
    assert machine.run() == "halt"
    assert cpu.regs[EAX] == 2


def test_code_that_patches_the_next_block(machine):
    """Each pass rewrites the immediate of a block it then runs again."""
    cpu = machine.cpu
    labels = machine.load("""
        mov ecx, 5
    again:
        call patched
        add ebx, eax
        mov byte ptr [patched + 1], cl      # the imm8 of the MOV below
        dec ecx
        jnz again
        hlt
    patched:
        mov eax, 0x99
        ret
    """)
    assert labels["patched"] >> 12 == CODE >> 12        # same page as the writer
    assert machine.run() == "halt"
    # imm: 0x99, then 5, 4, 3, 2 written after runs 1..4.
    assert cpu.regs[EBX] == 0x99 + 5 + 4 + 3 + 2


def test_remapped_page_never_runs_stale_code(machine):
    cpu = machine.cpu
    machine.load("mov eax, 0xA\nhlt", base=0x20000)
    machine.load("mov eax, 0xB\nhlt", base=0x21000)
    machine.map(0x5000, 0x20000)
    assert machine.run(0x5000) == "halt" and cpu.regs[EAX] == 0xA
    machine.map(0x5000, 0x21000)                # PTE change + INVLPG
    cpu.halted = False
    assert machine.run(0x5000) == "halt" and cpu.regs[EAX] == 0xB
    # The same through a CR3 reload.
    cpu.mem.write(PAGE_TABLE + 4 * 5, 4, 0x20000 | 7)
    cpu.write_cr(3, PAGE_DIR)
    cpu.halted = False
    assert machine.run(0x5000) == "halt" and cpu.regs[EAX] == 0xA


def test_write_through_an_alias_invalidates_code(machine):
    """Code reached through one linear page and rewritten through another
    that maps the same physical page."""
    cpu = machine.cpu
    machine.load("mov eax, 1\nhlt", base=0x20000)
    machine.map(0x5000, 0x20000)
    machine.map(0x6000, 0x20000)
    assert machine.run(0x5000) == "halt" and cpu.regs[EAX] == 1
    machine.load("mov dword ptr [0x6001], 7\njmp 0x5000", base=CODE)
    cpu.halted = False
    assert machine.run() == "halt" and cpu.regs[EAX] == 7


# -- instruction regressions (found by the Unicorn differential test) ---------------------------------

def run_code(text: str, regs=None, eflags=0x202, cache=True, data=None) -> CPU:
    m = Machine(cache)
    cpu = m.cpu
    m.load(text + "\nhlt")
    if data:
        for addr, value in data.items():
            cpu.mem.load(addr, value)
    for n, v in (regs or {}).items():
        cpu.regs[n] = v
    cpu.set_eflags(eflags)
    why = m.run()
    assert why == "halt", (why, m.exceptions)
    return cpu


@pytest.mark.parametrize("cache", [True, False])
def test_add_register_to_itself_flags(cache):
    cpu = run_code("add eax, eax", {EAX: 0x40000000}, cache=cache)
    assert cpu.regs[EAX] == 0x80000000
    assert cpu.get_eflags() & F.ARITH == F.OF | F.SF | F.PF
    cpu = run_code("sub ecx, ecx\nja 1f\n1:", {ECX: 5}, cache=cache)
    assert cpu.get_eflags() & F.ARITH == F.ZF | F.PF


def test_xadd_same_register_keeps_the_sum():
    assert run_code("xadd eax, eax", {EAX: 3}).regs[EAX] == 6


def test_conditions_after_flags_loaded_whole():
    """SAHF / rotates leave the flags as bits; Jcc, SETcc, CMOVcc must read them."""
    cpu = run_code("sahf\nsete bl\nsets bh\ncmovp ecx, edx\njl 1f\nmov esi, 1\n1:",
                   {EAX: (F.ZF | F.PF | F.SF) << 8, EBX: 0, ECX: 0, EDX: 9, ESI: 0})
    assert cpu.regs[EBX] & 0xFFFF == 0x0101 and cpu.regs[ECX] == 9 and cpu.regs[ESI] == 0
    cpu = run_code("ror byte ptr [0x8000], 1\ncmovs ecx, edx", {ECX: 0, EDX: 1}, eflags=0x282,
                   data={0x8000: b"\x02"})
    assert cpu.regs[ECX] == 1           # SF survives the rotate


def test_imul_byte_negative_product_no_overflow():
    cpu = run_code("imul bl", {EAX: 0xFE, EBX: 1})
    assert cpu.regs[EAX] & 0xFFFF == 0xFFFE
    assert not cpu.get_eflags() & (F.CF | F.OF)
    cpu = run_code("imul ebx", {EAX: 0xFFFFFFFE, EBX: 0x7FFFFFFF})
    assert cpu.regs[EAX] == 2 and cpu.regs[EDX] == 0xFFFFFFFF
    assert cpu.get_eflags() & (F.CF | F.OF) == F.CF | F.OF


def test_bt_memory_with_register_offset():
    # bit 25 of the word at [edx-0xd] is bit 9 of the word after it.
    cpu = run_code("btc word ptr [edx-0xd], di", {EDX: 0x8010, EDI: 25},
                   data={0x8003: b"\x00\x00\x00\x02"})
    assert cpu.mem.read(0x8005, 2) == 0
    assert cpu.get_eflags() & F.CF
    cpu = run_code("bts dword ptr [0x8010], ecx", {ECX: (-33) & 0xFFFFFFFF})
    assert cpu.mem.read(0x8008, 4) == 0x80000000      # bit -33: bit 31 of the dword 8 below


def test_aaa_aas():
    cpu = run_code("aas", {EAX: 0x0205}, eflags=0x202 | F.AF)
    assert cpu.regs[EAX] & 0xFFFF == 0x000F           # AX - 6 borrows from AH, then AH - 1
    assert cpu.get_eflags() & (F.AF | F.CF) == F.AF | F.CF
    cpu = run_code("aaa", {EAX: 0x00FB})
    assert cpu.regs[EAX] & 0xFFFF == 0x0201


def test_enter_does_not_touch_the_allocation():
    """ENTER's allocation is not accessed: no fault even when it spans absent pages."""
    cpu = run_code("enter 0xF000, 0", {EBP: 0x1234})
    assert cpu.regs[ESP] == (STACK_TOP - 4 - 0xF000) & 0xFFFFFFFF and cpu.regs[EBP] == STACK_TOP - 4


def test_shld_shrd_16bit_counts_above_16():
    """Undefined by the SDM; Intel processors (and QEMU) shift A:B:A."""
    cpu = run_code("shld ax, bx, 20", {EAX: 0x1234, EBX: 0xABCD})
    assert cpu.regs[EAX] & 0xFFFF == 0xBCD1
    cpu = run_code("shrd ax, bx, 20", {EAX: 0x1234, EBX: 0xABCD})
    assert cpu.regs[EAX] & 0xFFFF == 0x4ABC


def test_rcl_rcr_overflow_flag_is_sign_change():
    """OF is defined for a count of 1; for larger counts we give the sign
    change of the whole rotate, as QEMU does (not MSB ^ CF)."""
    cpu = run_code("rcl al, 2", {EAX: 0x40})
    assert cpu.regs[EAX] & 0xFF == 0x00 and cpu.get_eflags() & (F.CF | F.OF) == F.CF
    cpu = run_code("rcr al, 2", {EAX: 0x81})
    assert cpu.regs[EAX] & 0xFF == 0xA0 and cpu.get_eflags() & (F.CF | F.OF) == 0


def test_lock_on_register_destination_is_undefined(machine):
    machine.load(".byte 0xf0, 0x01, 0xd8")          # lock add eax, ebx
    assert machine.run() == "exception" and machine.last.vector == UD and machine.cpu.eip == CODE


# -- whole programs: cache on and off agree ----------------------------------------------------------

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
FAST_UNCACHED = {"args", "tls", "strings"}


def _programs():
    out = []
    for line in (PROGRAMS / "programs.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, env, *argv = line.split("\t")
        out.append((name, [] if env == "-" else env.split(" "), argv))
    return out


def _run_program(name, env, argv, cache, threaded=True):
    from x86core.linux import Process
    out = io.BytesIO()
    process = Process(str(PROGRAMS / "bin" / name), argv, env, stdout=out, cache=cache)
    process.cpu.blocks.threaded = threaded
    status = process.run()
    return status, out.getvalue(), process.cpu.icount


def _expected(name):
    return (int((PROGRAMS / "expected" / f"{name}.status").read_text()),
            (PROGRAMS / "expected" / f"{name}.out").read_bytes())


@pytest.mark.parametrize("name,env,argv", [pytest.param(*p, id=p[0]) for p in _programs()])
def test_program_cached(name, env, argv):
    status, out, _ = _run_program(name, env, argv, True)
    assert (status, out) == _expected(name)


@pytest.mark.parametrize("name,env,argv", [
    pytest.param(*p, id=p[0], marks=() if p[0] in FAST_UNCACHED else pytest.mark.slow) for p in _programs()])
def test_program_cache_off_matches_cache_on(name, env, argv):
    on = _run_program(name, env, argv, True)
    off = _run_program(name, env, argv, False)
    assert off[:2] == _expected(name)
    assert off == on            # same output, status and instruction count


@pytest.mark.parametrize("name,env,argv", [pytest.param(*p, id=p[0]) for p in _programs()])
def test_program_tiers_agree(name, env, argv, monkeypatch):
    """Each program with its code run only as threaded code (never
    promoted), only compiled (no threaded tier), and as it runs by default:
    the same output, status and instruction count."""
    from x86core import interpreter
    default = _run_program(name, env, argv, True)
    compiled = _run_program(name, env, argv, True, threaded=False)
    monkeypatch.setattr(interpreter, "HOT_INSNS", 1 << 60)
    threaded = _run_program(name, env, argv, True)
    assert default[:2] == _expected(name)
    assert threaded == compiled == default


def test_instruction_across_a_remapped_page_boundary(machine):
    """A block whose last instruction straddles two pages is stale when the
    second page is remapped, or its physical page written."""
    cpu = machine.cpu
    code = assemble("mov eax, 0x11223344\nhlt").code       # B8 44 33 22 11 F4
    cpu.mem.load(0x20FFE, code[:2])                        # B8 44 | 33 22 11 F4
    cpu.mem.load(0x30000, code[2:])
    cpu.mem.load(0x31000, bytes([0x66, 0x55, 0x44, 0xF4]))
    machine.map(0x5000, 0x20000)
    machine.map(0x6000, 0x30000)
    assert machine.run(0x5FFE) == "halt" and cpu.regs[EAX] == 0x11223344
    machine.map(0x6000, 0x31000)
    cpu.halted = False
    assert machine.run(0x5FFE) == "halt" and cpu.regs[EAX] == 0x44556644
    # A write to the second page through another linear address.
    machine.map(0x7000, 0x31000)
    machine.load("mov byte ptr [0x7001], 0x77\njmp 0x5ffe", base=CODE)
    cpu.halted = False
    assert machine.run() == "halt" and cpu.regs[EAX] == 0x44776644


def test_flags_set_by_a_system_instruction_in_mid_block(machine):
    """A system instruction the CPU's own method carries out (VERR here) may
    change the flags; conditions after it in the same block must read them."""
    cpu = machine.cpu

    def verr(insn):
        cpu.lazy = (F.K_RAW, 0, F.CF, 0)          # ZF clear: "not readable"
    cpu.system_instruction = verr
    machine.load("""
        cmp eax, eax            # ZF set, known to the compiler as a CMP
        verr ax
        setz bl
        jz 1f
        mov ecx, 1
    1:  hlt
    """)
    cpu.regs[EBX] = cpu.regs[ECX] = 0
    assert machine.run() == "halt"
    assert cpu.regs[EBX] == 0 and cpu.regs[ECX] == 1
