"""lguest_host/x86/core.py: what the Host does with each trap the Guest
comes back with (lguest_arch_handle_trap, after Linux's x86/core.c), IN/OUT
emulation (emulate_insn), the x86 hypercalls and the first registers.

The handle_trap tests set the exit up by hand on a laid-out MiniGuest; the
emulate_insn tests also run the instructions for real, at ring 1 and 3.
"""
import pytest
from hypothesis import given, strategies as st

from lguest_host.abi import (GUEST_PL, LGUEST_TRAP_ENTRY, USER_CS, X86_EFLAGS_IF,
                             LguestData, __KERNEL_CS, __KERNEL_DS)
from lguest_host.hypercalls import HcallArgs
from lguest_host.x86 import core as x86
from lguest_host.x86.switcher_32 import HOST_TIMER_VECTOR
from x86core.asm import asm

from . import miniguest as m

HANDLER = 0x2345678                     # any address: handle_trap only points EIP there
KERNEL_STACK = m.KSTACK_TOP - 0x100


def guest(idt: dict | None = None, **kw) -> m.MiniGuest:
    """A Guest laid out and initialized (lguest_data known), stopped at an
    exit from ring 1 with recognisable registers; `idt` gives gates
    (vector -> (type, dpl)) to HANDLER."""
    g = m.build([m.end("halt_k")], syscall_vectors=frozenset({0x80, 0x40}), **kw)
    g.lg.lguest_data = m.LGUEST_DATA
    r = g.cpu.regs
    r.eax, r.ebx, r.ecx, r.edx, r.esi, r.edi, r.ebp = 0x11111111, 2, 3, 4, 5, 6, 7
    r.eip, r.cs, r.ss, r.esp, r.eflags = 0x3000, m.KCS, m.KDS, KERNEL_STACK, 0x202
    for vector, (typ, dpl) in (idt or {}).items():
        lo, hi = m.gate(HANDLER, typ, dpl)
        g.cpu.idt[vector] = ((m.KCS << 16) | (lo & 0xFFFF), hi)
    return g


def exit_with(g, trapnum: int, errcode: int = 0, cr2: int = 0) -> None:
    g.cpu.regs.trapnum, g.cpu.regs.errcode = trapnum, errcode
    g.cpu.last_pagefault = cr2
    x86.lguest_arch_handle_trap(g.cpu)


def snapshot(g) -> tuple:
    return tuple(getattr(g.cpu.regs, f) for f in ("eax", "ebx", "ecx", "edx", "esi", "edi",
                                                  "ebp", "eip", "cs", "ss", "esp", "eflags"))


def frame(g, words: int) -> list:
    return [g.u32(g.cpu.regs.esp + 4 * i) for i in range(words)]


# -- reflected and fatal traps ----------------------------------------------------------------
@pytest.mark.parametrize("vector", [0, 1, 3, 4, 5, 6, 11, 12, 16, 0x80, 0x40])
def test_other_traps_are_reflected_with_the_cpus_frame(vector):
    g = guest({vector: (0xF, 3)})
    has_err = vector in (8, 10, 11, 12, 13, 14, 17)
    exit_with(g, vector, errcode=0x1234)
    assert g.lg.dead is None
    regs = g.cpu.regs
    assert (regs.eip, regs.cs) == (HANDLER, m.KCS)
    pushed = frame(g, 4 if has_err else 3)
    expected = ([0x1234] if has_err else []) + [0x3000, m.KCS, 0x202]
    assert pushed == expected
    assert regs.esp == KERNEL_STACK - 4 * len(expected)
    assert g.lg.stats.reflected_traps[vector] == 1


@pytest.mark.parametrize("vector", [0, 6, 0x80, 0x20])
def test_unhandled_trap_kills_with_linuxs_message(vector):
    g = guest()
    exit_with(g, vector, errcode=0x77)
    if vector == 0x80:
        assert g.lg.dead == "unhandled trap 128 at 0x3000 (0x77)"
    elif vector >= 0x20:
        assert g.lg.dead is None            # a Host vector: not the Guest's business
    else:
        assert g.lg.dead == f"unhandled trap {vector} at 0x3000 (0x77)"


def test_unhandled_page_fault_reports_the_address():
    g = guest()
    exit_with(g, 14, errcode=6, cr2=0x987000)
    assert g.lg.dead == "unhandled trap 14 at 0x3000 (0x987000)"


@pytest.mark.parametrize("vector", [0x20, 0x21, 0x3F, 0x41, 0x81, 0xEE, HOST_TIMER_VECTOR, 0xFF])
def test_host_interrupt_vectors_are_ignored(vector):
    g = guest({vector: (0xF, 3)})
    before = snapshot(g)
    exit_with(g, vector)
    assert g.lg.dead is None
    assert snapshot(g) == before
    assert not g.lg.stats.reflected_traps


def test_hypercall_trap_records_the_arguments():
    g = guest()
    before = snapshot(g)
    exit_with(g, LGUEST_TRAP_ENTRY)
    assert g.cpu.hcall == HcallArgs(0x11111111, 2, 3, 4, 5)
    assert snapshot(g) == before


@pytest.mark.parametrize("ts", [0, 1])
def test_device_not_available_only_reaches_a_guest_that_set_ts(ts):
    g = guest({7: (0xF, 0)})
    g.cpu.ts = ts
    before = snapshot(g)
    exit_with(g, 7)
    assert g.lg.dead is None
    if ts:
        assert g.cpu.regs.eip == HANDLER and g.lg.stats.reflected_traps[7] == 1
    else:
        assert snapshot(g) == before


def test_device_not_available_with_ts_and_no_handler_kills():
    g = guest()
    g.cpu.ts = 1
    exit_with(g, 7)
    assert g.lg.dead == "unhandled trap 7 at 0x3000 (0x0)"


# -- page faults --------------------------------------------------------------------------
def test_page_fault_the_guest_allows_is_fixed_in_the_shadow():
    g = guest({14: (0xE, 0)})
    before = snapshot(g)
    cr2_before = g.ldata(LguestData.cr2)
    exit_with(g, 14, errcode=2, cr2=m.SCRATCH + 0x10)      # write, not present
    assert g.lg.dead is None
    assert snapshot(g) == before                            # re-run the instruction
    assert g.lg.stats.demand_faults == 1 and g.lg.stats.reflected_faults == 0
    assert g.ldata(LguestData.cr2) == cr2_before
    from lguest_host.page_tables import page_writable
    assert page_writable(g.cpu, m.SCRATCH)


@pytest.mark.parametrize("errcode,addr,why", [
    (0, 0x200000, "beyond the Guest's page table"),
    (4, m.SCRATCH, "user access to a supervisor page"),
    (2, 0x00800000, "no page-directory entry"),
])
def test_page_fault_the_guest_forbids_is_reflected_with_cr2(errcode, addr, why):
    g = guest({14: (0xE, 0)})
    irq_enabled = m.LGUEST_DATA + LguestData.irq_enabled
    g.put32(irq_enabled, X86_EFLAGS_IF)
    if addr == 0x200000:
        g.put32(m.PT0 + 4 * (addr >> 12), 0)               # not present
    exit_with(g, 14, errcode=errcode, cr2=addr)
    assert g.lg.dead is None, why
    assert g.lg.stats.reflected_faults == 1 and g.lg.stats.demand_faults == 0
    assert g.ldata(LguestData.cr2) == addr
    assert g.cpu.regs.eip == HANDLER
    assert frame(g, 4) == [errcode, 0x3000, m.KCS, 0x202]
    # An interrupt gate: the Guest's interrupts are now off.
    assert g.u32(irq_enabled) == 0


def test_write_fault_on_a_read_only_guest_pte_is_reflected():
    g = guest({14: (0xF, 0)})
    g.put32(m.PT0 + 4 * (m.SCRATCH >> 12), m.SCRATCH | 0x1 | 0x20 | 0x40)
    exit_with(g, 14, errcode=3, cr2=m.SCRATCH)
    assert g.cpu.regs.eip == HANDLER and g.ldata(LguestData.cr2) == m.SCRATCH


# -- IN and OUT -------------------------------------------------------------------------------
IO_CASES = [
    ("in al, 0x60", 0xFF), ("in al, dx", 0xFF),
    ("in ax, 0x60", 0xFFFF), ("in ax, dx", 0xFFFF),
    ("in eax, 0x60", 0xFFFFFFFF), ("in eax, dx", 0xFFFFFFFF),
    ("out 0x80, al", 0), ("out dx, al", 0), ("out 0x80, ax", 0), ("out dx, ax", 0),
    ("out 0x80, eax", 0), ("out dx, eax", 0),
]


def run_code(code: bytes, ring: int, eax: int = 0x12345678):
    """Run `code` then HLT at ring 1 (from SCRATCH) or ring 3 (USER_SCRATCH)."""
    where = m.SCRATCH if ring == 1 else m.USER_SCRATCH
    ops = m.standard_setup() + [m.end("scen_k" if ring == 1 else "scen_u")]
    g = m.build(ops, params=dict(eax=eax, edx=0x3F8, ecx=1, esi=where + 0x100,
                                 edi=where + 0x100, trap=where,
                                 esp=KERNEL_STACK if ring == 1 else m.USER_STACK_TOP))
    g.write(where, code + b"\xf4")
    g.run()
    return g, where


@pytest.mark.parametrize("text,ones", IO_CASES)
def test_in_reads_all_ones_and_out_is_skipped_at_ring1(text, ones):
    code = asm(text)
    g, where = run_code(code, 1)
    # Emulated: the Guest goes on to the HLT after the instruction.
    assert g.exit.value == f"unhandled trap 13 at {where + len(code):#x} (0x0)"
    assert g.cpu.regs.eax == (0x12345678 | ones)
    assert g.lg.stats.exits[13] == 2


@pytest.mark.parametrize("text,ones", IO_CASES)
def test_in_and_out_from_ring3_are_the_guests_gp(text, ones):
    code = asm(text)
    g, where = run_code(code, 3)
    assert g.exit.value == f"unhandled trap 13 at {where:#x} (0x0)"
    assert g.cpu.regs.eax == 0x12345678


@pytest.mark.parametrize("text", ["cli", "sti", "hlt", "rep insb",
                                  "rep outsb", "lgdt [0x100]",
                                  "mov cr3, eax", "int 0x41", "lock in al, dx"])
def test_other_gp_faults_at_ring1_are_not_emulated(text):
    try:
        code = asm(text)
    except Exception:
        code = bytes.fromhex("f0ec")                        # lock in al, dx
    g, where = run_code(code, 1)
    assert g.exit.value.startswith(f"unhandled trap") and f"at {where:#x}" in g.exit.value
    assert g.cpu.regs.eax == 0x12345678


@given(st.sampled_from(IO_CASES), st.integers(0, 0xFFFFFFFF))
def test_emulate_insn_unit(case, eax):
    """emulate_insn alone: the instruction at EIP is read through the
    Guest's page tables; only the low 1, 2 or 4 bytes of EAX change."""
    text, ones = case
    g = guest()
    code = asm(text)
    g.write(m.SCRATCH, code + b"\x90" * 16)
    g.cpu.regs.eip, g.cpu.regs.eax = m.SCRATCH, eax
    assert x86.emulate_insn(g.cpu)
    assert g.cpu.regs.eip == m.SCRATCH + len(code)
    assert g.cpu.regs.eax == eax | ones


def test_emulate_insn_refuses_ring3_and_bad_eip():
    g = guest()
    g.write(m.SCRATCH, b"\xec")
    g.cpu.regs.eip, g.cpu.regs.cs = m.SCRATCH, USER_CS
    assert not x86.emulate_insn(g.cpu)
    assert g.cpu.regs.eip == m.SCRATCH
    g.cpu.regs.cs = m.KCS
    g.cpu.regs.eip = 0x00800000                             # unmapped in the Guest
    assert not x86.emulate_insn(g.cpu)


def test_gp_with_an_error_code_is_never_emulated():
    g = guest({13: (0xE, 0)})
    g.write(0x3000, b"\xec")
    exit_with(g, 13, errcode=0x20A)
    assert g.cpu.regs.eip == HANDLER and frame(g, 1) == [0x20A]


# -- the first registers and the x86 hypercalls --------------------------------------------
def test_setup_regs():
    g = guest()
    x86.lguest_arch_setup_regs(g.cpu, 0x1234)
    r = g.cpu.regs
    assert (r.cs, r.ds, r.es, r.ss) == (__KERNEL_CS | GUEST_PL, *(3 * [__KERNEL_DS | GUEST_PL]))
    assert r.eflags == X86_EFLAGS_IF | 2 and r.eip == 0x1234 and r.esi == 0


def test_arch_hypercalls_dispatch():
    g = guest()
    assert x86.lguest_arch_do_hcall(g.cpu, HcallArgs(6, 0x30, *m.gate(0x4000, 0xF, 3)))
    assert g.cpu.idt[0x30] == ((m.KCS << 16) | 0x4000, 0xEF00)
    assert x86.lguest_arch_do_hcall(g.cpu, HcallArgs(18, 20, *m.split(m.USER_DS_DESC)))
    assert g.cpu.gdt[20] == m.USER_DS_DESC
    assert not x86.lguest_arch_do_hcall(g.cpu, HcallArgs(3))
    assert g.lg.dead is None


def test_init_hypercall_checks_the_address_and_the_syscall_vector():
    g = m.build([m.end("halt_k")])
    g.cpu.hcall = HcallArgs(1, m.GUEST_MEM - 8)
    assert not x86.lguest_arch_init_hypercalls(g.cpu)
    g.cpu.hcall = HcallArgs(1, m.LGUEST_DATA)
    g.put32(m.LGUEST_DATA + LguestData.syscall_vec, 0x81)
    assert x86.lguest_arch_init_hypercalls(g.cpu)
    assert g.lg.dead == "bad syscall vector"
    assert g.ldata(LguestData.tsc_khz) == g.lg.tsc_khz


def test_a_failure_of_the_cpu_model_kills_the_guest_not_the_host(monkeypatch):
    g = m.build([m.end("spin_k")])

    def broken(budget=None):
        raise RuntimeError("model bug")
    monkeypatch.setattr(g.hw, "run", broken)
    out = g.run()
    assert out.kind == "dead"
    assert out.value.startswith("the CPU failed at ") and "RuntimeError: model bug" in out.value
