"""The threaded tier (x86core/interpreter.py): what it takes, and that code
run as threaded code ends in the state single-stepping reaches."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from x86core import decode, interpreter
from x86core.asm import asm
from x86core.cpu import CPU

from .test_blocks import CODE, DATA, machine as paged_machine

_REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")
_BYTE_REGS = ("al", "bl", "cl", "dl", "ah", "bh", "ch", "dh")


def machine(threaded: bool, cache: bool = True) -> CPU:
    """test_blocks' flat ring-0 machine with paging, new code threaded or not."""
    cpu = paged_machine()
    cpu.blocks.enabled = cache
    cpu.blocks.threaded = threaded
    return cpu


def _state(cpu: CPU) -> tuple:
    return (list(cpu.regs), cpu.get_eflags(), cpu.eip, cpu.icount,
            bytes(cpu.mem.view[DATA:DATA + 0x200]), bytes(cpu.mem.view[0x7F00:0x8100]))


@pytest.fixture
def never_promoted(monkeypatch):
    monkeypatch.setattr(interpreter, "HOT_INSNS", 1 << 60)


# -- what the tier takes --------------------------------------------------------------------

TAKEN = [
    "mov eax, ebx", "mov eax, 0x12345678", "mov eax, [ebx+8]", "mov [esp+4], ecx",
    "mov dword [0x50000], 7", "mov al, ch", "mov byte [esi], 0x41", "mov dh, [edi+ecx*2]",
    "movzx eax, byte [ebx]", "movsx ecx, word [ebp-4]", "movzx edx, ah", "lea eax, [ebx+ecx*4+8]",
    "add eax, ebx", "sub eax, 5", "and ecx, [edx]", "or [eax], ebx", "xor dword [esp], 1",
    "cmp al, bl", "test byte [ebx], 0x80", "adc eax, ecx", "sbb edx, [ebx]",
    "inc eax", "dec byte [ebx]", "neg ecx", "not dword [ebx]",
    "shl eax, 3", "shr ebx, cl", "sar byte [esi], 1", "rol ecx, 7", "ror dl, 3",
    "mul ecx", "imul dword [ebx]", "imul eax, ebx", "imul eax, [ebx], 12", "div ecx", "idiv ebx",
    "cdq", "cwde", "xchg eax, ecx", "push eax", "push 0x12", "push dword [ebx]", "pop ecx", "leave",
    "call eax", "call dword [ebx]", "jmp eax", "jmp dword [ebx+4]", "ret", "ret 8",
    "sete al", "setl byte [ebx]", "cmovne eax, ebx", "cmovg eax, [ebx]", "nop",
]
REFUSED = [
    "mov eax, fs:[0]", "mov ax, bx", "add ax, 1", "rep movsb", "lock add [eax], ebx",
    "mov eax, [bx+si]", "int 0x80", "shl eax, 0", "bswap eax", "pushf", "mov ds, ax",
    "xchg [eax], ebx", "shld eax, ebx, 3",
]


@pytest.mark.parametrize("text", TAKEN)
def test_the_tier_takes(text):
    insn = decode(asm(text))
    assert interpreter.plan(insn, insn.length, True) is not None, text


@pytest.mark.parametrize("text", REFUSED)
def test_the_tier_leaves_to_the_compiled_tiers(text):
    insn = decode(asm(text))
    assert interpreter.plan(insn, insn.length, True) is None, text


def test_a_shape_is_compiled_once():
    key = interpreter.plan(decode(asm("add eax, [ebx+8]")), 3, True)[0]
    first = interpreter.factory(key)
    assert interpreter.factory(key) is first
    other = interpreter.plan(decode(asm("add ecx, [esi+0x100]")), 3, True)[0]
    assert other == key                 # other registers and numbers: the same shape


def test_a_block_is_threaded_code_until_its_region_is_compiled(monkeypatch):
    monkeypatch.setattr(interpreter, "HOT_INSNS", 100)
    cpu = machine(True)
    cpu.mem.load(CODE, asm("mov ecx, 1000\nl: add ebx, ecx\ndec ecx\njnz l\nhlt", base=CODE))
    cpu.eip = CODE
    assert cpu.run() == "halt" and cpu.regs[3] == sum(range(1, 1001))
    assert cpu.blocks.threaded_blocks >= 2 and cpu.blocks.regions >= 1


# -- threaded code is invisible -------------------------------------------------------------

def _operand(draw, size: int, memory: bool = True) -> str:
    kinds = ["reg", "mem"] if memory else ["reg"]
    kind = draw(st.sampled_from(kinds))
    if kind == "reg":
        return draw(st.sampled_from(_REGS if size == 4 else _BYTE_REGS))
    width = "dword" if size == 4 else "byte"
    return f"{width} [{DATA + draw(st.integers(0, 0x1F)) * 4:#x}]"


@st.composite
def _instruction(draw) -> str:
    family = draw(st.sampled_from(("alu", "alu", "unary", "shift", "mov", "movx", "lea",
                                   "mul", "cc", "stack", "adc")))
    size = draw(st.sampled_from((4, 4, 1)))
    if family == "alu":
        op = draw(st.sampled_from(("add", "sub", "and", "or", "xor", "cmp", "test")))
        dst = _operand(draw, size)
        src = draw(st.one_of(st.just("imm"), st.just("reg")))
        if src == "imm":
            src = str(draw(st.integers(0, 0xFF if size == 1 else 0xFFFFFFFF)))
        else:
            src = _operand(draw, size, memory="[" not in dst)
        return f"{op} {dst}, {src}"
    if family == "adc":
        op = draw(st.sampled_from(("adc", "sbb")))
        return f"{op} {_operand(draw, 4)}, {draw(st.sampled_from(_REGS))}"
    if family == "unary":
        op = draw(st.sampled_from(("inc", "dec", "neg", "not")))
        return f"{op} {_operand(draw, 4 if op in ('neg', 'not') else size)}"
    if family == "shift":
        op = draw(st.sampled_from(("shl", "shr", "sar", "rol", "ror")))
        count = draw(st.one_of(st.integers(1, 31).map(str), st.just("cl")))
        return f"{op} {_operand(draw, size)}, {count}"
    if family == "mov":
        return f"mov {draw(st.sampled_from(_REGS))}, {_operand(draw, 4)}"
    if family == "movx":
        op = draw(st.sampled_from(("movzx", "movsx")))
        return f"{op} {draw(st.sampled_from(_REGS))}, {_operand(draw, 1)}"
    if family == "lea":
        return (f"lea {draw(st.sampled_from(_REGS))}, [{draw(st.sampled_from(_REGS))}"
                f"+{draw(st.sampled_from(_REGS))}*{draw(st.sampled_from((1, 2, 4, 8)))}+"
                f"{draw(st.integers(0, 0xFFFF))}]")
    if family == "mul":
        return draw(st.sampled_from(("mul ebx", "imul ecx", "imul eax, esi", "imul edx, ebx, 7",
                                     "cdq", "cwde")))
    if family == "cc":
        cc = draw(st.sampled_from(("e", "ne", "b", "ae", "l", "ge", "le", "g", "s", "o", "p")))
        if draw(st.booleans()):
            return f"set{cc} {_operand(draw, 1)}"
        return f"cmov{cc} {draw(st.sampled_from(_REGS))}, {_operand(draw, 4)}"
    return draw(st.sampled_from(("push eax\npop ebx", "push dword [0x50010]\npop ecx",
                                 "push 0x77\npop edx", "xchg eax, esi")))


@st.composite
def _block(draw) -> str:
    """Straight-line code, then a flag producer and a conditional branch
    (fused into it) or a branch on flags set earlier, over a skipped path."""
    body = draw(st.lists(_instruction(), min_size=1, max_size=10))
    cc = draw(st.sampled_from(("z", "nz", "c", "nc", "l", "ge", "le", "g", "s", "ns", "o",
                               "no", "p", "np", "a", "be")))
    tail = draw(st.sampled_from(("fused", "late")))
    lines = [*body]
    if tail == "fused":
        lines.append(draw(_instruction().filter(lambda t: t.split()[0] in
                                                ("add", "sub", "and", "or", "xor", "cmp",
                                                 "test", "inc", "dec"))))
    lines += [f"j{cc} skip", "mov edi, 0x1234", "skip: hlt"]
    return "\n".join(lines)


@given(_block(), st.lists(st.integers(0, 0xFFFFFFFF), min_size=7, max_size=7),
       st.integers(0, 0xFFF))
def test_threaded_code_ends_in_the_state_single_steps_reach(text, regs, flags):
    states = []
    for threaded, cache in ((True, True), (False, False)):
        cpu = machine(threaded, cache)
        cpu.mem.load(CODE, asm(text, base=CODE))
        cpu.eip = CODE
        cpu.regs[:4] = regs[:4]
        cpu.regs[5:] = regs[4:]
        cpu.regs[1] &= 0xFFFF00FF       # CL small enough, CH free
        cpu.set_eflags(0x2 | flags & 0x8D5)
        assert cpu.run(max_instructions=1000) == "halt"
        states.append(_state(cpu))
    assert states[0] == states[1]


def test_a_fault_in_a_threaded_loop_is_precise(never_promoted):
    # The loop's load walks up a page at a time onto an absent page.
    cpu = machine(True)
    cpu.mem.write(0x101000 + 4 * 0x60, 4, 0)            # page 0x60000 absent
    cpu.mem.load(CODE, asm("mov ecx, 0\nmov esi, 0x5c000\n"
                           "l: add ebx, [esi]\nadd esi, 0x1000\ninc ecx\njmp l", base=CODE))
    cpu.eip = CODE
    assert cpu.run() == "stop"
    assert cpu.last_exception.vector == 14 and cpu.cr2 == 0x60000
    assert cpu.eip == CODE + len(asm("mov ecx, 0\nmov esi, 0x5c000"))
    assert cpu.regs[1] == 4 and cpu.regs[6] == 0x60000
    assert cpu.icount == 2 + 4 * 4                      # four whole iterations before it
