"""The Switcher (lguest_host/x86/switcher_32.py), run by the CPU: its pages
and their protection, the entry path (GDT, IDT, the registers popped, the
IRET into ring 1 or 3), the 256 exit stubs and the struct lguest_regs they
fill, the TSS's ring-0 stack, and refusing Guest registers that would leave
the CPU in ring 0.

Guest code is the hand-assembled kernel of miniguest.py.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from lguest_host import segments
from lguest_host.abi import (LGUEST_CS, LGUEST_DS, PAGE_SIZE, REGS_FIELDS,
                             REGS_SIZE, SWITCHER_ADDR, TRAPS_WITH_ERROR_CODE, USER_CS,
                             USER_DS, LguestRegs, __KERNEL_CS)
from lguest_host.core import run_guest
from lguest_host.lg import LGUEST_PAGES_PHYS, SWITCHER_PTE_PHYS, SWITCHER_TEXT_PHYS
from lguest_host.page_tables import current_pgdir
from lguest_host.x86 import core as x86
from lguest_host.x86.switcher_32 import (GUEST_GDT, GUEST_IDT, GUEST_TSS, HOST_TIMER_VECTOR,
                                         TSS_ESP0, TSS_IOMAP, TSS_SIZE, TSS_SS0,
                                         switcher_source)
from x86core import interrupts as cpu_interrupts
from x86core.blocks import LOOP_BUDGET
from x86core.cpu import CR0_PG, CR0_WP

from . import miniguest as m

U32 = st.integers(0, 0xFFFFFFFF)
ARITH = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800 | 0x400


def fresh(ops=(), **kw) -> m.MiniGuest:
    return m.build(list(ops) + [m.end("halt_k")], **kw)


def trip(g) -> None:
    """One entry into the Guest and back (x86/core.py's lguest_arch_run_guest)."""
    x86.lguest_arch_run_guest(g.cpu)


def trip_until(g, trapnum: int, limit: int = 20) -> None:
    """Trips until the Guest exits with `trapnum`, letting the Host fill
    the shadow page tables on the way (page faults it fixes itself)."""
    for _ in range(limit):
        trip(g)
        assert g.lg.dead is None, g.lg.dead
        if g.cpu.regs.trapnum == trapnum:
            return
        assert g.cpu.regs.trapnum == 14, g.cpu.regs
        x86.lguest_arch_handle_trap(g.cpu)
    raise AssertionError("no exit with trap %d" % trapnum)


def user_segments(cpu) -> None:
    """GDT entries 14 and 15 as the Guest would load them (LOAD_GDT_ENTRY)."""
    segments.load_guest_gdt_entry(cpu, USER_CS >> 3, *m.split(m.USER_CS_DESC))
    segments.load_guest_gdt_entry(cpu, USER_DS >> 3, *m.split(m.USER_DS_DESC))


# -- the Switcher's pages ------------------------------------------------------------------
def test_switcher_pages_and_their_protection():
    g = fresh()
    sw = g.host.switcher
    mem = g.host.mem
    assert sw.switch_to_guest == SWITCHER_ADDR
    assert sw.pages_linear == SWITCHER_ADDR + PAGE_SIZE
    assert sw.regs_linear == SWITCHER_ADDR + 2 * PAGE_SIZE - REGS_SIZE
    # The PTE page: text read-only, regs page writable, state page read-only;
    # none of them user-accessible; nothing else mapped in the top 4 MiB.
    ptes = mem.ram[SWITCHER_PTE_PHYS:SWITCHER_PTE_PHYS + PAGE_SIZE].view("<u4")
    assert int(ptes[0]) == SWITCHER_TEXT_PHYS | 0x1
    assert int(ptes[1]) == LGUEST_PAGES_PHYS | 0x3
    assert int(ptes[2]) == (LGUEST_PAGES_PHYS + PAGE_SIZE) | 0x1
    assert not ptes[3:].any()
    # The exit HLT, and every stub inside the text page.
    assert mem.ram[sw.halt_eip - 1 - SWITCHER_ADDR] == 0xF4
    assert len(sw.stubs) == 256 and len(set(sw.stubs)) == 256
    assert all(sw.halt_eip < s < SWITCHER_ADDR + PAGE_SIZE for s in sw.stubs)


def test_switcher_source_pops_lguest_regs_in_order():
    """The entry path pops exactly the Switcher-saved part of lguest_regs,
    in struct order, and the exit path pushes it in reverse."""
    src = switcher_source().splitlines()
    pops = [line.split()[1] for line in src if line.strip().startswith("pop ")]
    pushes = [line.split()[1] for line in src if line.strip().startswith("push ")]
    assert pops == list(REGS_FIELDS[:11])
    assert pushes == list(reversed(REGS_FIELDS[:11]))


def test_tss_ring0_stack_is_the_end_of_lguest_regs():
    g = fresh()
    trip_until(g, 13)
    sw = g.host.switcher
    mem = g.host.mem
    tss = sw.state_phys + GUEST_TSS
    assert mem.read(tss + TSS_ESP0, 4) == sw.regs_linear + REGS_SIZE
    assert mem.read(tss + TSS_SS0, 2) == LGUEST_DS
    # The I/O bitmap starts past the TSS: every IN and OUT outside ring 0 faults.
    assert mem.read(tss + TSS_IOMAP, 2) == TSS_SIZE
    assert g.hw.tr[1] == sw.state_linear + GUEST_TSS


def test_entry_loads_the_guest_gdt_and_idt():
    g = fresh()
    trip_until(g, 13)
    sw = g.host.switcher
    assert g.hw.gdtr == (sw.state_linear + GUEST_GDT, 32 * 8 - 1)
    assert g.hw.idtr == (sw.state_linear + GUEST_IDT, 256 * 8 - 1)
    # Paging with write protection: ring 1 cannot write read-only pages.
    assert g.hw.cr0 & CR0_PG and g.hw.cr0 & CR0_WP


# -- the registers' round trip ----------------------------------------------------------------
@st.composite
def guest_states(draw):
    ring = draw(st.sampled_from([1, 3]))
    regs = LguestRegs(**{r: draw(U32) for r in m.GPRS})
    regs.eflags = 0x202 | (draw(U32) & ARITH)
    if ring == 1:
        regs.cs, regs.ss = m.KCS, m.KDS
        regs.eip = m.label("halt_k")
        regs.esp = draw(st.integers(m.KSTACK, m.KSTACK_TOP))
        segs = [0, m.KDS, USER_DS]
    else:
        regs.cs, regs.ss = USER_CS, USER_DS
        regs.eip = m.label("t_int80") + 2          # the HLT after the snippet
        regs.esp = draw(U32)
        segs = [0, USER_DS]
    for name in ("ds", "es", "fs", "gs"):
        setattr(regs, name, draw(st.sampled_from(segs)))
    return regs


@given(guest_states())
def test_registers_survive_the_round_trip(regs):
    """Whatever the Host puts in lguest_regs is what the Guest runs with:
    it executes a HLT at ring 1 or 3 (a #GP) and the Switcher saves every
    register back unchanged, with the trap number and error code."""
    g = fresh()
    user_segments(g.cpu)
    for name in REGS_FIELDS:
        setattr(g.cpu.regs, name, getattr(regs, name))
    trip_until(g, 13)
    got = g.cpu.regs
    for name in REGS_FIELDS:
        if name == "trapnum":
            assert got.trapnum == 13
        elif name == "errcode":
            assert got.errcode == 0
        elif name == "eflags":
            # RF: the CPU sets it in the image of a fault.
            assert got.eflags & ~0x10000 == regs.eflags
        else:
            assert getattr(got, name) == getattr(regs, name), name
    assert g.hw.regs[4] == g.host.switcher.regs_linear


def test_exit_writes_nothing_below_lguest_regs():
    g = fresh()
    user_segments(g.cpu)
    sw = g.host.switcher
    mem = g.host.mem
    canary = np.arange(256, dtype=np.uint8)
    mem.ram[sw.regs_phys - 256:sw.regs_phys] = canary
    g.cpu.regs.cs, g.cpu.regs.ss = USER_CS, USER_DS
    g.cpu.regs.eip = m.label("t_int80") + 2
    trip_until(g, 13)
    assert np.array_equal(mem.ram[sw.regs_phys - 256:sw.regs_phys], canary)


# -- the exit stubs, run by themselves ---------------------------------------------------------
def run_stub(g, vector: int, regs: LguestRegs, segs: dict) -> LguestRegs:
    """Put the CPU where a trap from ring 1 or 3 through `vector`'s gate
    leaves it (ring 0, ESP under the frame the CPU pushed at the end of
    lguest_regs, the Guest's other registers untouched) and run the stub."""
    sw = g.host.switcher
    hw = g.hw
    mem = g.host.mem
    frame = [regs.eip, regs.cs, regs.eflags, regs.esp, regs.ss]
    if vector in TRAPS_WITH_ERROR_CODE:
        frame.insert(0, regs.errcode)
    top = sw.regs_phys + REGS_SIZE
    for i, word in enumerate(frame):
        mem.write(top - 4 * len(frame) + 4 * i, 4, word)
    x86._enter_switcher(hw, g.host.state, current_pgdir(g.cpu), False)
    for i, name in enumerate(("eax", "ecx", "edx", "ebx", None, "ebp", "esi", "edi")):
        if name:
            hw.regs[i] = getattr(regs, name)
    for seg, value in segs.items():
        hw.seg_sel[seg] = value
    hw.regs[4] = sw.regs_linear + REGS_SIZE - 4 * len(frame)
    hw.eip = sw.stubs[vector]
    assert hw.run(100) == "halt"
    assert hw.eip == sw.halt_eip and hw.regs[4] == sw.regs_linear
    saved = LguestRegs()
    saved.unpack_from(mem.view, sw.regs_phys)
    return saved


@given(st.integers(0, 255), st.builds(LguestRegs, **{f: U32 for f in REGS_FIELDS}),
       st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
def test_every_stub_saves_exactly_lguest_regs(vector, regs, segs):
    g = fresh()
    trip_until(g, 13)                    # the Host state and a shadow to run on
    es, ds, fs, gs = 0, 3, 4, 5
    saved = run_stub(g, vector, regs, dict(zip((es, ds, fs, gs), segs)))
    expected = LguestRegs(**{f: getattr(regs, f) for f in REGS_FIELDS})
    expected.es, expected.ds, expected.fs, expected.gs = segs
    expected.trapnum = vector
    if vector not in TRAPS_WITH_ERROR_CODE:
        expected.errcode = 0
    assert saved == expected


def test_all_256_stubs():
    g = fresh()
    trip_until(g, 13)
    for vector in range(256):
        regs = LguestRegs(*[(vector * 0x01010101 + 17 * i) & 0xFFFFFFFF for i in range(18)])
        saved = run_stub(g, vector, regs, {0: 0x11, 3: 0x22, 4: 0x33, 5: 0x44})
        assert saved.trapnum == vector
        assert saved.errcode == (regs.errcode if vector in TRAPS_WITH_ERROR_CODE else 0)
        assert (saved.eip, saved.cs, saved.eflags, saved.esp, saved.ss) == \
            (regs.eip, regs.cs, regs.eflags, regs.esp, regs.ss)
        assert (saved.eax, saved.ebx, saved.ecx, saved.edx, saved.esi, saved.edi,
                saved.ebp) == (regs.eax, regs.ebx, regs.ecx, regs.edx, regs.esi, regs.edi,
                               regs.ebp)
        assert (saved.es, saved.ds, saved.fs, saved.gs) == (0x11, 0x22, 0x33, 0x44)


def test_real_exits_through_error_code_stubs():
    """Exceptions that push an error code (#GP from `int 0x41`, #NP from a
    not-present segment, #PF) land with it in errcode, the rest in place."""
    cases = [("t_int41", 13, 0x41 * 8 + 2, 0), ("t_np", 11, m.NP_SEL & ~3, 0),
             ("t_int80", 0x80, 0, 2)]                 # INT n: EIP after the instruction
    for trap, vector, errcode, after in cases:
        ops = m.standard_setup() + [m.hcall(6, 0x80, *m.gate(m.label("handler"))),
                                    m.end("scen_k")]
        g = m.build(ops, params=dict(eax=1, ebx=2, ecx=3, edx=4, esi=5, edi=6, ebp=7,
                                     esp=m.KSTACK_TOP - 16, trap=m.label(trap)),
                    direct_traps=False)
        seen = []
        orig = x86.lguest_arch_handle_trap
        try:
            x86.lguest_arch_handle_trap = lambda cpu: (seen.append(
                LguestRegs(**{f: getattr(cpu.regs, f) for f in REGS_FIELDS})), orig(cpu))
            g.run()
        finally:
            x86.lguest_arch_handle_trap = orig
        hit = [r for r in seen if r.trapnum == vector]
        assert hit, (trap, seen[-1])
        r = hit[0]
        assert (r.errcode, r.eip, r.cs, r.ss) == (errcode, m.label(trap) + after, m.KCS, m.KDS)
        assert (r.eax, r.ebx, r.ecx, r.edx, r.esi, r.edi, r.ebp) == (1, 2, 3, 4, 5, 6, 7)
        assert r.esp == m.KSTACK_TOP - 16


# -- what the Guest can and cannot reach of the Switcher ------------------------------------
SWITCHER_PAGES = {"text": SWITCHER_ADDR, "regs": SWITCHER_ADDR + 0x1000,
                  "state": SWITCHER_ADDR + 0x2000}


def access(cont: str, trap: str, addr: int, value: int = 0x5A5A5A5A, handler14=False):
    ops = m.standard_setup()
    if handler14:
        ops.append(m.hcall(6, 14, *m.gate(m.label("handler2"), 0xE, 0)))
    ops.append(m.end(cont))
    esp = m.KSTACK_TOP - 64 if cont == "scen_k" else m.USER_STACK_TOP
    g = m.build(ops, params=dict(ebx=addr, ecx=value, esp=esp, trap=m.label(trap)))
    g.run()
    return g


@pytest.mark.parametrize("page", ["text", "state"])
def test_ring1_cannot_write_the_switcher(page):
    addr = SWITCHER_PAGES[page] + 0x10
    g = access("scen_k", "t_store", addr)
    before = fresh().host.mem.ram[:0x1000]
    assert g.exit.kind == "dead"
    # A protection fault on a write (error code 3), which the Host does not
    # fix: the Guest has no #PF handler, so it dies with Linux's message.
    assert g.exit.value == f"unhandled trap 14 at {m.label('t_store'):#x} ({addr:#x})"
    assert g.cpu.regs.errcode == 0x3
    assert np.array_equal(g.host.mem.ram[:0x1000], before)


def test_ring1_page_fault_on_the_switcher_is_the_guests():
    addr = SWITCHER_ADDR + 0x20
    g = access("scen_k", "t_store", addr, handler14=True)
    # Reflected to the Guest's handler, with cr2 in lguest_data.
    assert g.exit.value == f"unhandled trap 13 at {m.label('handler2'):#x} (0x0)"
    assert g.ldata(m.LguestData.cr2) == addr
    assert g.u32(g.cpu.regs.esp) == 0x3                     # the error code pushed


@pytest.mark.parametrize("page", ["text", "regs", "state"])
def test_ring1_may_read_the_switcher(page):
    g = access("scen_k", "t_load", SWITCHER_PAGES[page])
    # The load works; the Guest stops at the HLT after it.
    assert g.exit.value == f"unhandled trap 13 at {m.label('t_load') + 2:#x} (0x0)"
    phys = SWITCHER_PAGES[page] - SWITCHER_ADDR
    assert g.cpu.regs.eax == g.host.mem.read(phys, 4)


@pytest.mark.parametrize("page", ["text", "regs", "state", "beyond"])
@pytest.mark.parametrize("trap", ["t_load", "t_store"])
def test_ring3_cannot_reach_the_switcher(page, trap):
    addr = SWITCHER_PAGES.get(page, SWITCHER_ADDR + 0x3000) + 8
    g = access("scen_u", trap, addr)
    assert g.exit.value == f"unhandled trap 14 at {m.label(trap):#x} ({addr:#x})"
    write = 2 if trap == "t_store" else 0
    present = 0 if page == "beyond" else 1
    assert g.cpu.regs.errcode == 4 | write | present
    assert g.cpu.regs.cs == USER_CS


@pytest.mark.parametrize("cont,esp", [("scen_k", m.KSTACK_TOP - 64),
                                      ("scen_u", m.USER_STACK_TOP - 64)])
def test_guest_cannot_get_iopl_or_turn_interrupts_off(cont, esp):
    ops = m.standard_setup() + [m.end(cont)]
    g = m.build(ops, params=dict(esp=esp, trap=m.label("t_iopl")))
    g.run()
    cli = m.label("t_iopl") + 1 + 7 + 7 + 1 + 1 + 1
    assert g.exit.value == f"unhandled trap 13 at {cli:#x} (0x0)"
    # POPFD changed neither IOPL nor IF (PUSHFD after it says so), and CLI faulted.
    assert g.cpu.regs.edx & 0x3200 == 0x200
    assert g.cpu.regs.eflags & 0x3200 == 0x200


# -- registers that would keep the CPU in ring 0 ---------------------------------------------
BAD_SEGMENTS = [
    dict(cs=LGUEST_CS, ss=LGUEST_DS),            # the Switcher's own: IRET would stay in ring 0
    dict(cs=__KERNEL_CS, ss=m.KDS),              # RPL 0
    dict(cs=m.KCS, ss=m.KDS & ~3),
    dict(cs=0, ss=m.KDS),
    dict(cs=LGUEST_CS | 1, ss=m.KDS),            # DPL 0 code at RPL 1
    dict(cs=m.KCS, ss=LGUEST_DS | 1),
    dict(cs=0x1001, ss=m.KDS),                   # beyond the GDT
    dict(cs=m.KCS | 4, ss=m.KDS),                # the LDT (there is none)
    dict(cs=USER_CS, ss=m.KDS),                  # RPL mismatch
    dict(cs=m.KCS, ss=USER_DS),
    dict(cs=16 * 8 | 1, ss=m.KDS),               # the TSS
    dict(cs=m.KDS, ss=m.KDS),                    # data as code
    dict(cs=m.KCS, ss=m.KDS, ds=0x1000),         # data segments popped at ring 0
    dict(cs=m.KCS, ss=m.KDS, es=16 * 8),
    dict(cs=m.KCS, ss=m.KDS, fs=m.KCS & ~3 | 0x8000),
    dict(cs=m.KCS, ss=m.KDS, gs=0xFFFF),
]


def run_with_segments(segs: dict, budget: int):
    """A fresh Guest whose saved registers hold `segs`, run for `budget`:
    (its exit, every IRET the Switcher made at ring 0 as (cpl, cs, eip))."""
    g = fresh()
    user_segments(g.cpu)
    for name, value in segs.items():
        setattr(g.cpu.regs, name, value)
    irets = []

    def hook(d):
        if d.kind == "iret" and d.old_cpl == 0:
            irets.append((d.new_cpl, d.new_cs, d.new_eip))
    cpu_interrupts.TRACE_HOOKS.append(hook)
    try:
        out = run_guest(g.cpu, budget)
    finally:
        cpu_interrupts.TRACE_HOOKS.remove(hook)
    return g, out, irets


@pytest.mark.parametrize("segs", BAD_SEGMENTS, ids=lambda s: ",".join(
    f"{k}={v:#x}" for k, v in s.items()))
def test_bad_segment_in_regs_kills_instead_of_running_in_ring0(segs):
    _, out, irets = run_with_segments(segs, 10_000)
    assert out.kind == "dead"
    assert out.value.startswith(("bad segment in the Guest's registers",
                                 "fault in the Switcher"))
    # No IRET from the Switcher landed anywhere at ring 0.
    assert all(cpl > 0 for cpl, _, _ in irets)


@given(st.fixed_dictionaries({n: st.one_of(st.integers(0, 0xFFFF), st.sampled_from(
    [0, m.KCS, m.KDS, USER_CS, USER_DS, LGUEST_CS, LGUEST_DS, __KERNEL_CS, 0x80, 0x81]))
    for n in ("cs", "ss", "ds", "es", "fs", "gs")}))
def test_any_segment_values_never_run_guest_code_in_ring0(segs):
    g, out, irets = run_with_segments(segs, 5_000)
    assert all(cpl > 0 for cpl, _, _ in irets)
    if out.kind != "dead":
        assert g.cpu.regs.cs & 3 in (1, 3)


# -- the Host's timer ------------------------------------------------------------------------
@pytest.mark.parametrize("cont,ring", [("spin_k", 1), ("spin_u_k", 3)])
def test_host_timer_takes_the_cpu_back_from_a_spinning_guest(cont, ring):
    ops = m.standard_setup() + [m.end(cont)]
    g = m.build(ops)
    spin = m.label("spin_k" if ring == 1 else "spin_u")
    for budget in (5_000, 20_000):
        start = g.hw.icount
        out = g.run(budget)
        assert out.kind == "budget"
        # The timer fired at the budget: the CPU looks at its interrupt line
        # between blocks, and runs a self-looping block (`jmp $`) up to
        # LOOP_BUDGET times per call; the Switcher's exit is a few more.
        assert budget <= g.hw.icount - start <= budget + LOOP_BUDGET + 64
        assert g.cpu.regs.eip == spin and g.cpu.regs.cs & 3 == ring
        assert g.cpu.regs.trapnum == HOST_TIMER_VECTOR
        assert g.lg.dead is None
    assert g.lg.stats.exits[HOST_TIMER_VECTOR] >= 2


def test_fault_in_the_switcher_names_the_trap():
    """A selector beyond the GDT: the Switcher's IRET faults (#GP with the
    selector) at ring 0; the Guest is killed with what happened."""
    g = fresh()
    g.cpu.regs.cs = 0x1001
    out = run_guest(g.cpu, 10_000)
    iret = g.host.switcher.return_to_host - 1
    assert out.value == (f"fault in the Switcher: trap 13 (0x1000) at {iret:#x}: "
                         f"the Guest's state would not load")


def test_guest_breaking_its_own_data_segment_is_killed_on_reentry():
    """The Guest may rewrite the GDT entry of a segment it has loaded; the
    Switcher's reload of it then faults (#NP, the entry is not present)."""
    not_present = m.NP_DESC & ~(3 << 45) | (1 << 45)         # DPL 1, like __KERNEL_DS
    ops = m.standard_setup() + [m.hcall(18, 13, *m.split(not_present)), m.end("spin_k")]
    g = m.build(ops)
    out = g.run()
    assert out.kind == "dead"
    assert out.value.startswith("fault in the Switcher: trap 11 (0x68) at 0xffc0")


@pytest.mark.parametrize("direct", [True, False])
def test_exit_through_the_stub_next_to_the_hlt(direct):
    """Vector 0's stub sits right after the Switcher's exit code.  The CPU's
    block chain once ran it again after the HLT (8 bytes below
    lguest_regs), and a divide error killed the Guest as a "fault in the
    Switcher"; the guard HLT stops that."""
    ops = m.standard_setup() + [m.end("scen_k")]
    g = m.build(ops, params=dict(esp=m.KSTACK_TOP - 64, trap=m.label("t_div")),
                direct_traps=direct)
    out = g.run()
    assert out.value == f"unhandled trap 0 at {m.label('t_div'):#x} (0x0)"
    assert g.hw.regs[4] == g.host.switcher.regs_linear
