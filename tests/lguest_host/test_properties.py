"""The Host's two properties (issue 5, "Must show").

1. Direct delivery and reflection are indistinguishable to the Guest: the
   same Guest, trap and state run twice, once with direct traps (the trap
   gate copied into the IDT the CPU uses) and once with every trap going out
   through the Switcher to deliver_trap; both are stopped at the handler's
   first instruction (a HLT: #GP, which is never direct and which the Guest
   has no handler for, so the Host kills it there with its registers intact)
   and must agree on every register and every byte of Guest memory.

2. Nothing a Guest does can hurt the Host: random hypercalls (by trap and
   through the async ring), random IDT, GDT and page-table entries never
   raise in the Host; each hypercall either takes effect or kills the Guest
   with a reason; Host memory outside the Guest's, the shadow pool and the
   Switcher's pages never changes; no shadow maps anything but Guest memory
   (nor PGD 1023 but the Switcher); the CPU is at ring 0 only in the
   Switcher; the GDT and IDT the CPU runs the Guest with give no way in.

The Guest is the hand-assembled kernel of miniguest.py.  CI runs few
examples; `HYPOTHESIS_PROFILE=slow pytest -m slow` runs the big ones.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis import event as _event, note as _note
from hypothesis.errors import InvalidArgument

from lguest_host import hypercalls, interrupts_and_traps as it, page_tables as pt, segments
from lguest_host.abi import (GUEST_PL, LGUEST_CS, LGUEST_DS, PAGE_SIZE, SWITCHER_ADDR,
                             SWITCHER_PGD_INDEX, USER_DS, X86_EFLAGS_IF, LguestData,
                             __KERNEL_CS)
from lguest_host.core import run_guest
from lguest_host.lg import CHANGED_GDT, CHANGED_IDT, HOST_RESERVED, POOL_START
from lguest_host.x86 import core as x86
from lguest_host.x86.switcher_32 import (GUEST_GDT, GUEST_GDT_DESC, GUEST_IDT, GUEST_IDT_DESC,
                                         GUEST_TSS, TSS_ESP0, TSS_IOMAP, TSS_SIZE, TSS_SS0)
from x86core import interrupts as cpu_interrupts
from x86core.segmentation import make_descriptor

from . import miniguest as m

U32 = st.integers(0, 0xFFFFFFFF)


def event(text: str) -> None:
    """hypothesis.event, also callable from a plain test."""
    try:
        _event(text)
    except InvalidArgument:
        pass


def note(text: str) -> None:
    try:
        _note(text)
    except InvalidArgument:
        pass

# trap snippet -> (vector, pushes an error code)
TRAPS = {
    "t_int80": (0x80, False), "t_int40": (0x40, False), "t_int41": (0x41, False),
    "t_div": (0, False), "t_ud2": (6, False), "t_bound": (5, False), "t_int3": (3, False),
    "t_into": (4, False), "t_int1": (1, False), "t_np": (11, True),
    "t_gp": (13, True),
}
# t_gp is `int 0x41`'s #GP, never direct; its handler stops with #UD rather
# than the #GP every other handler stops with.
SNIPPET = {"t_gp": "t_int41"}
HANDLER = {"t_gp": "handler_ud"}


def handler_of(trap: str) -> int:
    return m.label(HANDLER.get(trap, "handler"))
SYSCALL_VECTORS = frozenset({0x80, 0x40})
EFLAGS_FREE = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800 | 0x400 | 0x40000   # arith, DF, AC


@st.composite
def trap_cases(draw):
    ring = draw(st.sampled_from([1, 3]))
    trap = draw(st.sampled_from(sorted(TRAPS)))
    vector, _ = TRAPS[trap]
    gate_type = draw(st.sampled_from([0xF, 0xF, 0xF, 0xE]))
    dpl = draw(st.sampled_from([3, 3, 1, 0]))
    present = draw(st.sampled_from([True, True, True, False]))
    params = {r: draw(U32) for r in m.GPRS}
    if ring == 1:
        # The stack the trap pushes on (same ring): anywhere in the kernel
        # stack, any alignment, leaving room for the frame.
        params["esp"] = draw(st.integers(m.KSTACK + 32, m.KSTACK_TOP))
        segs = [0, m.KDS, USER_DS]
    else:
        params["esp"] = draw(U32)
        segs = [0, USER_DS]
    params["fs"] = draw(st.sampled_from(segs))
    params["gs"] = draw(st.sampled_from(segs))
    params["eflags"] = 0x202 | (draw(U32) & EFLAGS_FREE)
    params["trap"] = m.label(SNIPPET.get(trap, trap))
    irq_enabled = draw(st.sampled_from([X86_EFLAGS_IF, X86_EFLAGS_IF, 0]))
    return dict(ring=ring, trap=trap, vector=vector, gate_type=gate_type, dpl=dpl,
                present=present, params=params, irq_enabled=irq_enabled)


# The kernel stack's two pages moved to frames 0x40 and 0x41: virtually
# contiguous, physically not next to each other nor to the page above.
SCATTER = [m.store(m.PT0 + 4 * 0xD, 0x40 << 12 | 0x67), m.store(m.PT0 + 4 * 0xC, 0x41 << 12 | 0x67),
           m.hcall(5, 1)]                # FLUSH_TLB(all): the shadow forgets, the stack is re-pinned


def run_case(case: dict, direct: bool) -> m.MiniGuest:
    lo, hi = m.gate(handler_of(case["trap"]), case["gate_type"], case["dpl"], case["present"])
    ops = m.standard_setup() + (SCATTER if case.get("scatter") else []) + [
        m.hcall(6, case["vector"], lo, hi), m.end("scen_k" if case["ring"] == 1 else "scen_u")]
    g = m.build(ops, params=case["params"], irq_enabled=case["irq_enabled"],
                direct_traps=direct, syscall_vectors=SYSCALL_VECTORS)
    g.exit = g.run(100_000)
    return g


REG_NAMES = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "gs", "fs", "ds", "es",
             "trapnum", "errcode", "eip", "cs", "eflags", "esp", "ss")


def regs_of(g) -> dict:
    return {n: getattr(g.cpu.regs, n) for n in REG_NAMES}


def check_same(case: dict) -> None:
    d = run_case(case, True)
    r = run_case(case, False)
    vector, has_err = TRAPS[case["trap"]]
    at_handler = r.cpu.regs.eip == handler_of(case["trap"])
    event(f"ring {case['ring']} {case['trap']}: "
          f"{'handler' if at_handler else 'no delivery'}")
    note(f"direct: {d.exit} {regs_of(d)}")
    note(f"reflect: {r.exit} {regs_of(r)}")
    assert d.exit == r.exit
    assert regs_of(d) == regs_of(r)
    # Which path each run really took: the direct one never saw this trap
    # when its gate could go direct, the reflecting one always did.
    direct_capable = (case["gate_type"] == 0xF and case["present"]
                      and it.guest_may_own_trap(d.lg, vector))
    if at_handler:
        assert r.lg.stats.reflected_traps[vector] == 1
        assert d.lg.stats.reflected_traps[vector] == (0 if direct_capable else 1)
        if direct_capable:
            event("delivered directly in one run, reflected in the other")
    assert d.lg.stats.reflected_traps[vector] == 0 or not direct_capable
    dm, rm = d.ram(), r.ram()
    diff = np.flatnonzero(dm != rm)
    if diff.size and at_handler and direct_capable and not case["irq_enabled"]:
        # The documented difference: reflecting, the Host pushes eflags with
        # IF from irq_enabled; the CPU pushes the real IF, which is always on.
        # Error code, eip, cs, then eflags; where it is in Guest memory.
        slot = pt.guest_pa(r.cpu, r.cpu.regs.esp + 4 * has_err + 8)
        assert diff.min() >= slot and diff.max() < slot + 4
        dv = int.from_bytes(dm[slot:slot + 4].tobytes(), "little")
        rv = int.from_bytes(rm[slot:slot + 4].tobytes(), "little")
        assert dv ^ rv == X86_EFLAGS_IF and dv & X86_EFLAGS_IF
        event("irq_enabled 0: only the saved IF differs")
    else:
        assert diff.size == 0, f"Guest memory differs at {diff[:8]}"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(trap_cases())
def test_direct_and_reflected_delivery_agree(case):
    check_same(case)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(trap_cases())
def test_direct_and_reflected_delivery_agree_slow(case):
    check_same(case)


# Linux 2.6.32's set_guest_interrupt translates the stack pointer once and
# pushes physically below it; ours pushes each word through the page tables
# as the CPU does.  These cases put the frame on a page that is not
# physically next to the one above (every trap from ring 3: esp1 is page
# aligned), where the two would differ.
@pytest.mark.parametrize("ring", [1, 3])
def test_reflection_agrees_on_a_scattered_stack(ring):
    case = dict(ring=ring, trap="t_int80", vector=0x80, gate_type=0xF, dpl=3, present=True,
                irq_enabled=X86_EFLAGS_IF, scatter=True,
                params=dict(eax=5, esp=m.KSTACK_TOP if ring == 1 else 0x1234,
                            eflags=0x202, fs=0, gs=0, trap=m.label("t_int80")))
    check_same(case)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(trap_cases())
def test_direct_and_reflected_delivery_agree_on_a_scattered_stack(case):
    check_same(dict(case, scatter=True))


def test_reflection_marks_the_stack_page_like_the_cpu():
    """A ring-1 trap on a stack page whose Guest PTE is not yet accessed or
    dirty: the CPU's pushes fault into demand_page, which marks the PTE as
    the hardware would; reflection marks it the same way."""
    clean = [m.store(m.PT0 + 4 * 0x30, 0x30 << 12 | 0x3), m.hcall(5, 1)]
    results = []
    for direct in (True, False):
        g = m.build(m.standard_setup() + clean + [
            m.hcall(6, 0x80, *m.gate(m.label("handler"))), m.end("scen_k")],
            params=dict(esp=m.SCRATCH + 0x800, trap=m.label("t_int80")), direct_traps=direct)
        g.run()
        results.append(g.u32(m.PT0 + 4 * 0x30))
    assert results[0] == 0x30 << 12 | 0x63                  # the CPU's path: A and D
    assert results[1] == results[0]


@pytest.mark.parametrize("ring", [1, 3])
@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_every_trap_reaches_the_handler_both_ways(ring, trap):
    """Not vacuous: with a DPL 3 trap gate every snippet reaches the handler
    in both modes, directly when the vector may go direct."""
    case = dict(ring=ring, trap=trap, vector=TRAPS[trap][0], gate_type=0xF, dpl=3,
                present=True, irq_enabled=X86_EFLAGS_IF,
                params=dict(eax=5, ebx=6, ecx=7, edx=8, esi=9, edi=10, ebp=11,
                            esp=m.KSTACK_TOP - 64 if ring == 1 else 0x12345678,
                            eflags=0x202 | 0x800, fs=0, gs=0,
                            trap=m.label(SNIPPET.get(trap, trap))))
    check_same(case)
    d = run_case(case, True)
    vector = TRAPS[trap][0]
    if vector == 0x41:
        # A Host vector that is not a system call: its gate in the IDT the
        # CPU uses stays the Host's (DPL 0), so `int 0x41` is #GP(0x41*8+2)
        # from either ring, whatever the Guest's gate says.
        assert d.exit.value.startswith("unhandled trap 13")
        assert d.cpu.regs.errcode == 0x41 * 8 + 2
        assert d.cpu.regs.eip == m.label(trap)
        return
    assert d.cpu.regs.eip == handler_of(trap)
    assert d.cpu.regs.errcode == 0          # the stop: HLT's #GP or UD2's #UD
    assert d.cpu.regs.cs == __KERNEL_CS | GUEST_PL
    expected_reflections = 0 if it.guest_may_own_trap(d.lg, vector) else 1
    assert d.lg.stats.reflected_traps[vector] == expected_reflections


# =====================================================================================
# 2. Nothing a Guest does hurts the Host.
# =====================================================================================
MARGIN = 256 << 10                      # nobody's memory below and above the Guest's
GUEST_LIMIT = m.GUEST_MEM
KNOWN_HCALLS = (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18, 19)

interesting = st.sampled_from([
    0, 1, 2, 3, 0xFF, 0x1000, 0xFFF, m.PGDIR, m.PT0, m.LGUEST_DATA, m.KSTACK_TOP, m.OPS,
    m.SCRATCH, GUEST_LIMIT - 4, GUEST_LIMIT - 1, GUEST_LIMIT, GUEST_LIMIT + 0x1000,
    0x7FFFFFFF, 0x80000000, 0xBFFFFFFF, 0xC0000000, SWITCHER_ADDR, SWITCHER_ADDR + 0x1000,
    SWITCHER_ADDR + 0x2000, 0xFFFFF000, 0xFFFFFFFC, 0xFFFFFFFF, 1023, 1024, 0x1F, 0x80,
    m.KDS, m.KCS, LGUEST_CS, LGUEST_DS, LGUEST_CS | 1, USER_DS, 0x200])
ARG = st.one_of(interesting, st.integers(0, GUEST_LIMIT + 0x2000), U32)
GUEST_ADDR = st.integers(0, 19).flatmap(
    lambda k: interesting if k == 0 else U32 if k == 1 else
    st.integers(0, GUEST_LIMIT // 4 - 1).map(lambda i: 4 * i))
PAGE_ADDR = st.integers(0, GUEST_LIMIT // PAGE_SIZE - 1).map(lambda p: p * PAGE_SIZE)
DIRECT_CAPABLE = [0, 1, 3, 4, 5, 6, 9, 10, 11, 12, 16, 17, 18, 19, 0x80, 0x40]


def wild(strategy):
    """Mostly `strategy`, sometimes any argument at all."""
    return st.integers(0, 15).flatmap(lambda k: ARG if k == 0 else strategy)


@st.composite
def pte_values(draw):
    k = draw(st.integers(0, 11))
    pfn = draw(st.integers(GUEST_LIMIT // PAGE_SIZE, GUEST_LIMIT // PAGE_SIZE + 4) if k == 0
               else st.integers(0, 0xFFFFF) if k == 1
               else st.integers(0, GUEST_LIMIT // PAGE_SIZE - 1))
    flags = draw(st.integers(0, 0xFFF))
    if draw(st.integers(0, 3)):
        flags |= 0x1                    # present, mostly
    if draw(st.booleans()):
        flags &= ~0x80                  # not a 4 MiB page, half the time
    return pfn << 12 | flags


@st.composite
def descriptors(draw):
    if not draw(st.integers(0, 3)):
        return draw(st.integers(0, (1 << 64) - 1))
    access = 0x90 | draw(st.integers(0, 0x6F))        # present code/data, any DPL and type
    if not draw(st.integers(0, 4)):
        access = draw(st.integers(0, 0xFF))
    return make_descriptor(draw(U32), draw(st.integers(0, 0xFFFFF)) << 12 | 0xFFF,
                           access, draw(st.sampled_from([0xC, 0x4, 0x0, 0x8])))


@st.composite
def idt_entries(draw):
    k = draw(st.integers(0, 19))
    vector = draw(st.sampled_from(DIRECT_CAPABLE) if k < 8
                  else st.sampled_from([2, 7, 8, 13, 14, 15, 0x1F, 0x20, 0x21, 0xEF]) if k < 11
                  else st.sampled_from([256, 300, 0xFFFFFFFF]) if k == 11
                  else st.integers(0, 0xFF))
    if not draw(st.integers(0, 4)):
        lo, hi = draw(U32), draw(U32)
    else:
        handler = draw(st.one_of(st.sampled_from([m.label("handler"), m.label("spin_k"),
                                                  m.label("spin_u"), SWITCHER_ADDR]), U32))
        lo, hi = m.gate(handler, draw(st.sampled_from([0xF, 0xF, 0xF, 0xE, 0xE, 0x5, 0x6, 0xC])),
                        draw(st.integers(0, 3)), draw(st.integers(0, 4)) > 0,
                        draw(st.sampled_from([m.KCS, m.KCS, LGUEST_CS, 0, 0x73, 0x8,
                                              __KERNEL_CS])))
    return m.hcall(6, vector, lo, hi)


def gdt_load(draw) -> list:
    num = draw(st.sampled_from([32, 33, 0xFFFFFFFF]) if not draw(st.integers(0, 19))
               else st.integers(0, 31))
    return [m.hcall(18, num, *m.split(draw(descriptors())))]


def tls_load(draw) -> list:
    ops = []
    for i in range(3):
        d = draw(descriptors()) if draw(st.integers(0, 3)) else 0
        ops += [m.store(m.SCRATCH + 8 * i, d & 0xFFFFFFFF),
                m.store(m.SCRATCH + 8 * i + 4, d >> 32)]
    return ops + [m.hcall(16, draw(wild(st.just(m.SCRATCH))))]


def sensible_hcall(draw) -> tuple:
    """One hypercall: a known number with arguments that are mostly
    plausible (and sometimes anything)."""
    n = draw(st.sampled_from([0, 4, 4, 5, 5, 6, 6, 6, 7, 7, 8, 9, 9, 10, 13, 14, 14, 14, 15,
                              16, 17, 18, 18, 19] * 3 + [1, 2]))
    a = [0, 0, 0, 0]
    if n == 4:
        a[0] = draw(wild(st.sampled_from([m.PGDIR, m.PT0, m.SCRATCH]) | PAGE_ADDR))
    elif n == 5:
        a[0] = draw(st.sampled_from([0, 1]))
    elif n == 6:
        return draw(idt_entries())[1:]
    elif n == 7:
        a[:3] = [draw(wild(st.just(m.KDS))),
                 draw(wild(st.sampled_from([m.KSTACK_TOP, m.KSTACK_TOP, m.SCRATCH]) | PAGE_ADDR)),
                 draw(wild(st.sampled_from([0, 1, 2])))]
    elif n == 8:
        a[0] = draw(st.sampled_from([0, 1]))
    elif n == 9:
        a[0] = draw(wild(st.sampled_from([0, 500, 5_000, 50_000, 10 ** 9])))
    elif n in (13, 15):
        a[:2] = [draw(wild(st.just(m.PGDIR))),
                 draw(wild(st.integers(0, 1023) | st.sampled_from([0, 1, 1022, 1023])))]
    elif n == 14:
        a[:3] = [draw(wild(st.just(m.PGDIR))), draw(GUEST_ADDR), draw(pte_values())]
    elif n == 16:
        a[0] = draw(wild(st.just(m.SCRATCH)))
    elif n == 17:
        a[0] = draw(ARG)
    elif n == 18:
        return gdt_load(draw)[0][1:]
    elif n in (1, 2):
        a[:2] = [draw(ARG), draw(st.sampled_from([1, 2, 3]))]
    else:
        a = [draw(ARG) for _ in range(4)]
    return (n, *a)


@st.composite
def fuzz_ops(draw):
    kind = draw(st.sampled_from(
        ["known"] * 14 + ["idt"] * 4 + ["gdt"] * 3 + ["tls"] * 2 + ["pte"] * 3 +
        ["set_pte"] * 3 + ["pgd"] * 2 + ["touch"] * 3 + ["poke"] * 3 + ["hcall"] +
        ["top", "stack_pte", "stack_pte"]))
    if kind == "hcall":
        return [m.hcall(draw(st.one_of(st.integers(0, 24), U32)), *[draw(ARG) for _ in range(4)])]
    if kind == "known":
        return [m.hcall(*sensible_hcall(draw))]
    if kind == "idt":
        return [draw(idt_entries())]
    if kind == "gdt":
        return gdt_load(draw)
    if kind == "tls":
        return tls_load(draw)
    if kind == "pte":                   # the Guest writes its own page table
        index = draw(st.integers(0, 1023))
        return [m.store(m.PT0 + 4 * index, draw(pte_values())),
                m.load(index << 12) if draw(st.booleans()) else m.store(index << 12, 0)]
    if kind == "set_pte":
        vaddr = draw(GUEST_ADDR)
        value = draw(pte_values())
        ops = []
        if draw(st.booleans()) and vaddr < 1 << 22:
            ops.append(m.store(m.PT0 + 4 * (vaddr >> 12), value))
        return ops + [m.hcall(14, draw(wild(st.just(m.PGDIR))), vaddr, value), m.load(vaddr)]
    if kind == "top":
        # The Guest maps something at the Switcher's address in its own
        # directory and touches it there.
        value = draw(st.one_of(st.just(m.PT0 | 0x67), pte_values()))
        return [m.store(m.PGDIR + 4 * 1023, value), m.hcall(15, m.PGDIR, 1023),
                m.load(SWITCHER_ADDR + draw(st.integers(0, 300)) * PAGE_SIZE)]
    if kind == "stack_pte":
        # Its stack's PTE points elsewhere (maybe outside its memory), then
        # a reflected page fault pushes a frame there.
        beyond = st.integers(GUEST_LIMIT >> 12, (GUEST_LIMIT + MARGIN >> 12) - 1)
        value = draw(st.one_of(pte_values(), beyond.map(lambda pfn: pfn << 12 | 0x67)))
        return [m.store(m.PT0 + 4 * draw(st.sampled_from([0xC, 0xD, 0xE])), value),
                m.load(draw(st.sampled_from([0x00800000, 0x40000000, 0x00100000])))]
    if kind == "pgd":
        index = draw(st.one_of(st.integers(0, 1023), st.sampled_from([0, 1, 767, 768, 1022,
                                                                     1023])))
        value = draw(st.one_of(pte_values(), st.just(m.PT0 | 0x67)))
        return [m.store(m.PGDIR + 4 * index, value), m.hcall(15, m.PGDIR, index),
                m.load(index << 22 | draw(st.integers(0, 1023)) << 12)]
    if kind == "touch":
        return [m.load(draw(st.one_of(GUEST_ADDR, st.integers(SWITCHER_ADDR, 0xFFFFFFFC))))]
    return [m.store(draw(GUEST_ADDR), draw(U32))]


@st.composite
def ring_entries(draw):
    return sensible_hcall(draw)


@st.composite
def fuzz_cases(draw):
    setup = m.standard_setup() if draw(st.integers(0, 19)) else []
    if setup and draw(st.integers(0, 4)):
        # Fault handlers that skip the op that faulted, so one bad op does
        # not end the run (trap gates: some of them go direct).
        recover = m.label("op_recover")
        setup += [m.hcall(6, v, *m.gate(recover, draw(st.sampled_from([0xE, 0xF])), 0))
                  for v in (0, 1, 3, 4, 5, 6, 10, 11, 12, 13, 14, 16, 17)]
    chunks = draw(st.lists(fuzz_ops(), min_size=5, max_size=60))
    ops = (setup + [op for chunk in chunks for op in chunk])[:600]
    cont = draw(st.sampled_from(["spin_k", "spin_u_k", "halt_k", "scen_k", "scen_u"]))
    trap = draw(st.sampled_from(sorted(TRAPS) + ["t_load", "t_store", "t_iopl"]))
    ring = draw(st.lists(st.tuples(st.integers(0, 63), ring_entries()), max_size=8))
    return dict(ops=ops + [m.end(cont)], trap=trap, ring=ring,
                direct=draw(st.booleans()),
                irq_enabled=draw(st.sampled_from([0, X86_EFLAGS_IF])),
                blocked=draw(st.sampled_from([0, 0xFFFFFFFF, 0xFFFFFFFE])),
                irqs=draw(st.lists(st.integers(0, 31), max_size=3)),
                syscall_vec=draw(st.sampled_from([0x80] * 10 + [0x40] * 8 + [0x81, 0x20])),
                kernel_address=draw(st.sampled_from([0] * 6 + [0x80000] * 6 +
                                                    [0xC0000000] * 6 + [0xFFC00000])),
                params={r: draw(U32) for r in m.GPRS} | {"esp": draw(U32)})


class Violation(AssertionError):
    pass


def _u32(mem, addr):
    return int.from_bytes(mem.ram[addr:addr + 4].tobytes(), "little")


class HostWatch:
    """Checks the Host's safety invariants after every trip into the Guest
    and every hypercall, and records what happened."""

    def __init__(self, g):
        self.g = g
        host = g.host
        self.sw = host.switcher
        mem = host.mem
        self.text = mem.ram[0:0x1000].copy()
        self.pte_page = mem.ram[self.sw.pte_page:self.sw.pte_page + PAGE_SIZE].copy()
        # Nobody's memory around the Guest's: a canary.
        rng = np.random.default_rng(1)
        self.outside = [(HOST_RESERVED, g.base), (g.base + g.size, mem.size)]
        for lo, hi in self.outside:
            mem.ram[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8)
        self.canary = [mem.ram[lo:hi].copy() for lo, hi in self.outside]
        self.runs = 0
        self.calls = []

    # -- after each run_guest_once -------------------------------------------------------
    def after_run(self, cpu):
        self.runs += 1
        host = self.g.host
        hw = host.hw
        sw = self.sw
        mem = host.mem
        if cpu.lg.dead is None:
            if hw.cpl != 0 or hw.eip != sw.halt_eip:
                raise Violation(f"back in the Host at cpl {hw.cpl} eip {hw.eip:#x}")
            if cpu.regs.cs & 3 == 0 or cpu.regs.ss & 3 == 0:
                raise Violation(f"the Guest ran at ring 0: cs {cpu.regs.cs:#x}")
        self.check_memory(mem)
        self.check_tables(cpu, mem)
        self.check_shadows(cpu, mem)

    def check_memory(self, mem):
        if not np.array_equal(mem.ram[0:0x1000], self.text):
            raise Violation("the Switcher's text changed")
        page = mem.ram[self.sw.pte_page:self.sw.pte_page + PAGE_SIZE].view("<u4")
        before = self.pte_page.view("<u4")
        # The CPU sets accessed and dirty bits as it walks; nothing else may change.
        if not np.array_equal(page & ~np.uint32(0x60), before & ~np.uint32(0x60)):
            raise Violation("the Switcher's PTE page changed")
        for (lo, hi), canary in zip(self.outside, self.canary):
            if not np.array_equal(mem.ram[lo:hi], canary):
                where = lo + int(np.flatnonzero(mem.ram[lo:hi] != canary)[0])
                raise Violation(f"Host memory outside the Guest changed at {where:#x}")

    def check_tables(self, cpu, mem):
        sw = self.sw
        state = sw.state_phys
        tss = state + GUEST_TSS
        assert _u32(mem, tss + TSS_ESP0) == sw.regs_linear + 72
        assert _u32(mem, tss + TSS_SS0) & 0xFFFF == LGUEST_DS
        assert _u32(mem, tss + TSS_IOMAP - 2) >> 16 == TSS_SIZE
        assert _u32(mem, state + GUEST_IDT_DESC + 2) == sw.state_linear + GUEST_IDT
        assert _u32(mem, state + GUEST_GDT_DESC + 2) == sw.state_linear + GUEST_GDT
        gdt = mem.ram[state + GUEST_GDT:state + GUEST_GDT + 256].view("<u8")
        for i, d in enumerate(int(x) for x in gdt):
            present, system, dpl = d >> 47 & 1, not d >> 44 & 1, d >> 45 & 3
            if not present:
                continue
            if i in (10, 11):
                assert d == int(segments.FULL_EXEC_SEGMENT if i == 10 else segments.FULL_SEGMENT)
            elif i == 16:
                assert system and (d >> 40) & 0xF == 0xB        # our busy TSS
            elif system:
                raise Violation(f"GDT entry {i} is a system descriptor {d:#x}")
            elif dpl == 0:
                raise Violation(f"GDT entry {i} is a ring-0 segment {d:#x}")
        idt = mem.ram[state + GUEST_IDT:state + GUEST_IDT + 2048].view("<u4")
        for v in range(256):
            lo, hi = int(idt[2 * v]), int(idt[2 * v + 1])
            if not hi & 0x8000:
                continue
            sel, offset, typ = lo >> 16, it.idt_address(lo, hi), it.idt_type(lo, hi)
            if sel == LGUEST_CS:
                if offset != sw.stubs[v] or typ != 0xE:
                    raise Violation(f"IDT {v:#x} into ring 0 at {offset:#x}")
            elif sel == m.KCS:
                # The spec, not the Host's own predicate: exceptions bar #NM,
                # #GP, #PF and the hypercall, and the allowed system calls.
                may_be_direct = (v < 0x20 and v not in (7, 13, 14, 0x1F)) or \
                    v in cpu.lg.syscall_vectors
                if typ != 0xF or not cpu.lg.direct_traps or not may_be_direct:
                    raise Violation(f"IDT {v:#x}: a direct gate that may not be")
            else:
                raise Violation(f"IDT {v:#x} with selector {sel:#x}")

    def check_shadows(self, cpu, mem):
        lg = cpu.lg
        lo_ok, hi_ok = self.g.base, self.g.base + self.g.size
        pool = (POOL_START, HOST_RESERVED)
        switcher_pgd = self.sw.pte_page | pt.SWITCHER_PGD_FLAGS
        for slot in lg.pgdirs:
            if not slot.pgdir:
                continue
            assert pool[0] <= slot.pgdir < pool[1]
            pgd = mem.ram[slot.pgdir:slot.pgdir + PAGE_SIZE].view("<u4")
            if int(pgd[SWITCHER_PGD_INDEX]) & ~0x60 != switcher_pgd:
                raise Violation(f"shadow PGD 1023 is {int(pgd[SWITCHER_PGD_INDEX]):#x}")
            for i in np.flatnonzero(pgd[:SWITCHER_PGD_INDEX] & 1).tolist():
                ptepage = int(pgd[i]) & 0xFFFFF000
                if not pool[0] <= ptepage < pool[1]:
                    raise Violation(f"shadow PGD {i} -> {ptepage:#x} outside the pool")
                ptes = mem.ram[ptepage:ptepage + PAGE_SIZE].view("<u4")
                for j in np.flatnonzero(ptes & 1).tolist():
                    frame = int(ptes[j]) & 0xFFFFF000
                    if not lo_ok <= frame < hi_ok:
                        raise Violation(f"shadow maps {i << 22 | j << 12:#x} to Host "
                                        f"frame {frame:#x}")

    # -- around each hypercall ------------------------------------------------------------
    def hcall(self, orig, cpu, args):
        lg = cpu.lg
        before = dict(idt=list(cpu.idt), gdt=list(cpu.gdt), dead=lg.dead)
        orig(cpu, args)
        self.calls.append((args.arg0, lg.dead is not None and before["dead"] is None))
        if lg.dead is not None:
            assert isinstance(lg.dead, str) and lg.dead
            return
        self.took_effect(cpu, args, before)

    def took_effect(self, cpu, args, before):
        """The hypercall was not fatal: then it did what it says."""
        n, a1, a2, a3 = args.arg0, args.arg1, args.arg2, args.arg3
        lg = cpu.lg
        if n not in KNOWN_HCALLS or n in (1, 2):
            raise Violation(f"hypercall {n} neither worked nor killed")
        if n == 6:
            if a1 in (2, 8, 15, 0x1F):
                assert cpu.idt == before["idt"]
            elif not a3 & 0x8000:
                assert cpu.idt[a1] == (0, 0)
            else:
                assert it.idt_type(a2, a3) in (0xE, 0xF)
                assert cpu.idt[a1] == ((m.KCS << 16) | (a2 & 0xFFFF), a3 & 0xFFFFEF00)
                assert cpu.changed & CHANGED_IDT
        elif n == 18:
            d = cpu.gdt[a1]
            if a1 in (10, 11, 16, 31):
                return
            raw = a2 | a3 << 32
            assert d & ~(1 << 40) & ~(3 << 45) == raw & ~(1 << 40) & ~(3 << 45)
            assert d >> 40 & 1 and (d >> 45 & 3) == ((raw >> 45 & 3) or 1)
            assert cpu.changed & CHANGED_GDT
        elif n == 7:
            assert (cpu.ss1, cpu.esp1, lg.stack_pages) == (a1, a2, a3)
            for i in range(a3):
                assert pt.page_writable(cpu, (a2 - 1 - i * PAGE_SIZE) & 0xFFFFFFFF)
        elif n == 8:
            assert cpu.ts == a1
        elif n == 9:
            now = lg.host.now_ns()
            assert cpu.hrt_expires == (None if a1 == 0 else now + a1)
        elif n == 10:
            assert cpu.halted
        elif n == 17:
            assert cpu.pending_notify == a1
        elif n == 4:
            assert lg.pgdirs[cpu.cpu_pgd].gpgdir == a1
        elif n in (13, 15):
            i = pt.find_pgdir(lg, a1)
            if i < len(lg.pgdirs) and a2 < SWITCHER_PGD_INDEX:
                spgd = _u32(lg.host.mem, lg.pgdirs[i].pgdir + 4 * a2)
                assert not spgd & 1
        elif n == 14:
            slots = [i for i, p in enumerate(lg.pgdirs) if p.pgdir]
            for i in slots:
                spgd = _u32(lg.host.mem, lg.pgdirs[i].pgdir + 4 * pt.pgd_index(a2))
                if spgd & 1 and (a1 == lg.pgdirs[i].gpgdir or
                                 lg.kernel_address and a2 >= lg.kernel_address):
                    spte = _u32(lg.host.mem, (spgd & 0xFFFFF000) + 4 * pt.pte_index(a2))
                    if spte & 1:
                        assert spte & 0xFFFFF000 == lg.mem_base + (a3 & 0xFFFFF000)


def run_fuzz(case) -> HostWatch:
    g = m.build(case["ops"], params=dict(case["params"],
                                         trap=m.label(SNIPPET.get(case["trap"], case["trap"]))),
                irq_enabled=case["irq_enabled"], blocked=case["blocked"],
                syscall_vec=case["syscall_vec"], direct_traps=case["direct"],
                syscall_vectors=SYSCALL_VECTORS, ring=case["ring"], margin=MARGIN,
                ldata={LguestData.kernel_address: case["kernel_address"]})
    watch = HostWatch(g)
    orig_once = x86.run_guest_once
    orig_hcall = hypercalls.do_hcall

    def once(cpu, state, stop_at):
        orig_once(cpu, state, stop_at)
        watch.after_run(cpu)

    def hcall(cpu, args):
        watch.hcall(orig_hcall, cpu, args)

    def ring0_entries(d):
        if d.new_cpl == 0:
            if d.new_cs != LGUEST_CS or not SWITCHER_ADDR <= d.new_eip < SWITCHER_ADDR + 0x1000:
                raise Violation(f"ring 0 entered at {d.new_cs:#x}:{d.new_eip:#x}")
        if d.kind == "iret" and d.old_cpl == 0 and d.new_cpl == 0:
            raise Violation("the Switcher's IRET stayed in ring 0")

    x86.run_guest_once = once
    hypercalls.do_hcall = hcall
    cpu_interrupts.TRACE_HOOKS.append(ring0_entries)
    from lguest_host.lguest_user import user_send_irq
    try:
        for irq in case["irqs"]:
            user_send_irq(g.cpu, irq)
        for _ in range(8):
            out = run_guest(g.cpu, 20_000)
            if out.kind != "notify":
                break
    finally:
        cpu_interrupts.TRACE_HOOKS.remove(ring0_entries)
        x86.run_guest_once = orig_once
        hypercalls.do_hcall = orig_hcall
    watch.after_run(g.cpu)
    watch.exit = out
    # The CPU model failing is a bug of ours, never an outcome a Guest may cause.
    assert not (out.kind == "dead" and out.value.startswith("the CPU failed")), out.value
    why = f" ({' '.join(out.value.split()[:3])})" if out.kind == "dead" else ""
    event(f"exit: {out.kind}{why}")
    event(f"{watch.runs // 10 * 10}+ entries")
    return watch


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(fuzz_cases())
def test_guest_cannot_hurt_the_host(case):
    run_fuzz(case)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_cases())
def test_guest_cannot_hurt_the_host_slow(case):
    run_fuzz(case)
