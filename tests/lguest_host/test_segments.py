"""The Guest's GDT (lguest_host/segments.py) against Linux
drivers/lguest/segments.c, plus our stricter rule: no present system
descriptor ever reaches the Guest's GDT."""
import struct

import pytest
from hypothesis import given, strategies as st

from lguest_host import segments as seg
from lguest_host.abi import (GDT_ENTRIES, GUEST_PL, LGUEST_CS, LGUEST_DS,
                             __KERNEL_DS)
from lguest_host.lg import CHANGED_GDT, CHANGED_GDT_TLS, HOST_RESERVED, LgCpu, Lguest
from x86core.cpu import CPU
from x86core.exceptions import CPUException
from x86core.memory import PhysicalMemory
from x86core.segmentation import DS, SS_REG, Descriptor, load_segment

from .conftest import make_guest

MEM = 4 << 20
IGNORED = {10, 11, 16, 31}
TLS = (6, 7, 8)

# One machine for the module (building one assembles the Switcher); each
# test gets a fresh Guest on it.
_HOST = {}


def fresh():
    if "host" not in _HOST:
        _HOST["host"] = make_guest(MEM)[0]
    host = _HOST["host"]
    host.mem.ram[HOST_RESERVED:] = 0
    lg = Lguest(host=host, mem_base=HOST_RESERVED, pfn_limit=MEM // 4096)
    cpu = LgCpu(id=0, lg=lg)
    lg.cpus.append(cpu)
    return host, lg, cpu


@pytest.fixture
def g():
    return fresh()


def words(desc):
    return desc & 0xFFFFFFFF, desc >> 32


def desc_of(a, b):
    return a | b << 32


def put(host, lg, addr, data):
    host.mem.ram[lg.mem_base + addr:lg.mem_base + addr + len(data)] = list(data)


# Descriptors written the way the Guest (Linux's GDT_ENTRY_INIT) writes them.
CODE_DPL0 = desc_of(0x0000FFFF, 0x00CF9A00)         # not accessed, ring 0
DATA_DPL0 = desc_of(0x0000FFFF, 0x00CF9200)
DATA_DPL3 = desc_of(0x0000FFFF, 0x00CFF200)
CODE_DPL2 = desc_of(0x1234FFFF, 0x56CFDA78)


def test_ignored_gdt_is_exactly_the_hosts_entries():
    assert {i for i in range(GDT_ENTRIES) if seg.ignored_gdt(i)} == IGNORED


@pytest.mark.parametrize("desc,expect", [
    (CODE_DPL0, desc_of(0x0000FFFF, 0x00CFBB00)),      # DPL 0 -> 1, accessed
    (DATA_DPL0, desc_of(0x0000FFFF, 0x00CFB300)),
    (DATA_DPL3, desc_of(0x0000FFFF, 0x00CFF300)),      # DPL 3 kept
    (CODE_DPL2, desc_of(0x1234FFFF, 0x56CFDB78)),      # DPL 2 kept
    (desc_of(0x0000FFFF, 0x00CFBB00), desc_of(0x0000FFFF, 0x00CFBB00)),  # already fine
    # Not present: as Linux, the fix-ups apply whatever the type.
    (0, desc_of(0, 0x00002100)),
    (desc_of(0x0000FFFF, 0x00CF1A00), desc_of(0x0000FFFF, 0x00CF3B00)),
    (desc_of(0x00100067, 0x00000900), desc_of(0x00100067, 0x00002900)),  # absent TSS
])
def test_fixup_segments(g, desc, expect):
    host, lg, cpu = g
    cpu.gdt[5] = desc
    seg.fixup_gdt_table(cpu, 5, 6)
    assert cpu.gdt[5] == expect
    assert lg.dead is None


def test_fixup_only_touches_the_range_and_skips_ignored(g):
    host, lg, cpu = g
    for i in range(GDT_ENTRIES):
        cpu.gdt[i] = DATA_DPL0
    seg.fixup_gdt_table(cpu, 9, 17)
    fixed = desc_of(0x0000FFFF, 0x00CFB300)
    for i in range(GDT_ENTRIES):
        want = fixed if 9 <= i < 17 and i not in IGNORED else DATA_DPL0
        assert cpu.gdt[i] == want, i


@pytest.mark.parametrize("access", [
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x89, 0x8B, 0x8C, 0x8E, 0x8F,   # DPL 0
    0xA9, 0xCC, 0xEC, 0xEE, 0xE5, 0xE2,                                       # DPL 1-3
])
def test_fixup_refuses_present_system_descriptors(g, access):
    host, lg, cpu = g
    cpu.gdt[7] = desc_of(0x00500000 | 0x1000, access << 8)   # e.g. a call gate to LGUEST_CS
    cpu.gdt[12] = CODE_DPL0
    seg.fixup_gdt_table(cpu, 7, 8)
    assert cpu.gdt[7] == 0
    assert lg.dead == "bad GDT entry 7: system descriptor"
    assert cpu.gdt[12] == CODE_DPL0                          # outside the range


def test_call_gate_to_ring0_is_refused_through_the_hypercall(g):
    host, lg, cpu = g
    # A 32-bit call gate, DPL 3, to LGUEST_CS:0x1000.
    lo = LGUEST_CS << 16 | 0x1000
    hi = 0xEC00
    seg.load_guest_gdt_entry(cpu, 20, lo, hi)
    assert cpu.gdt[20] == 0
    assert lg.dead == "bad GDT entry 20: system descriptor"


def test_setup_default_gdt_entries_matches_linux_words():
    gdt = [0x1111] * GDT_ENTRIES
    tss = 0xFFC02010
    seg.setup_default_gdt_entries(gdt, tss)
    assert words(gdt[10]) == (0x0000FFFF, 0x00CF9B00)        # FULL_EXEC_SEGMENT
    assert words(gdt[11]) == (0x0000FFFF, 0x00CF9300)        # FULL_SEGMENT
    a, b = words(gdt[16])
    assert a == (0x67 | tss << 16) & 0xFFFFFFFF
    assert b == 0x8900 | (tss & 0xFF000000) | (tss >> 16) & 0xFF
    d = Descriptor.parse(gdt[16])
    assert (d.base, d.limit, d.type, d.s, d.dpl, d.present) == (tss, 0x67, 9, False, 0, True)
    for i in set(range(GDT_ENTRIES)) - {10, 11, 16}:
        assert gdt[i] == 0x1111


def test_setup_guest_gdt(g):
    host, lg, cpu = g
    seg.setup_guest_gdt(cpu)
    assert words(cpu.gdt[12]) == (0x0000FFFF, 0x00CFBB00)
    assert words(cpu.gdt[13]) == (0x0000FFFF, 0x00CFB300)
    for i in (12, 13):
        d = Descriptor.parse(cpu.gdt[i])
        assert (d.base, d.limit, d.dpl, d.present, d.db) == (0, 0xFFFFFFFF, GUEST_PL, True, True)
    assert Descriptor.parse(cpu.gdt[12]).is_code and Descriptor.parse(cpu.gdt[13]).writable
    assert cpu.changed & CHANGED_GDT
    assert all(cpu.gdt[i] == 0 for i in range(GDT_ENTRIES) if i not in (12, 13))


def test_copy_gdt_and_tls(g):
    host, lg, cpu = g
    cpu.gdt = [0x100 + i for i in range(GDT_ENTRIES)]
    target = [0xDEAD] * GDT_ENTRIES
    seg.copy_gdt_tls(cpu, target)
    assert [i for i in range(GDT_ENTRIES) if target[i] != 0xDEAD] == list(TLS)
    assert all(target[i] == 0x100 + i for i in TLS)
    target = [0xDEAD] * GDT_ENTRIES
    seg.copy_gdt(cpu, target)
    for i in range(GDT_ENTRIES):
        assert target[i] == (0xDEAD if i in IGNORED else 0x100 + i)


def test_load_guest_gdt_entry(g):
    host, lg, cpu = g
    seg.load_guest_gdt_entry(cpu, 14, 0x0000FFFF, 0x00CFFA00)   # user code, DPL 3
    assert words(cpu.gdt[14]) == (0x0000FFFF, 0x00CFFB00)
    assert cpu.changed == CHANGED_GDT
    assert lg.dead is None


@pytest.mark.parametrize("num", [32, 33, 0xFFFFFFFF])
def test_load_guest_gdt_entry_too_many(g, num):
    host, lg, cpu = g
    seg.load_guest_gdt_entry(cpu, num, 0xFFFF, 0x00CF9200)
    assert lg.dead == "too many gdt entries %i" % num
    assert cpu.gdt == [0] * GDT_ENTRIES
    assert cpu.changed == 0


@pytest.mark.parametrize("num", sorted(IGNORED))
def test_load_ignored_entry_never_reaches_the_cpu(g, num):
    host, lg, cpu = g
    # Even a ring-0 TSS is only stored in the Guest's copy, unfixed, and never copied.
    seg.load_guest_gdt_entry(cpu, num, 0x00000067, 0x00008900)
    assert lg.dead is None
    assert cpu.gdt[num] == desc_of(0x67, 0x8900)
    assert cpu.changed & CHANGED_GDT
    target = [0] * GDT_ENTRIES
    seg.setup_default_gdt_entries(target, 0xFFC02010)
    before = list(target)
    seg.copy_gdt(cpu, target)
    assert target[num] == before[num]


def test_guest_load_tls(g):
    host, lg, cpu = g
    tls = [DATA_DPL3, 0, desc_of(0x1000FFFF, 0xFF4FF200)]
    put(host, lg, 0x5000, struct.pack("<3Q", *tls))
    cpu.gdt[5] = cpu.gdt[9] = 0x77
    seg.guest_load_tls(cpu, 0x5000)
    assert lg.dead is None
    assert cpu.gdt[6] == desc_of(0x0000FFFF, 0x00CFF300)
    assert cpu.gdt[7] == desc_of(0, 0x2100)
    assert cpu.gdt[8] == desc_of(0x1000FFFF, 0xFF4FF300)
    assert cpu.gdt[5] == cpu.gdt[9] == 0x77
    assert cpu.changed == CHANGED_GDT_TLS


def test_guest_load_tls_refuses_a_tss(g):
    host, lg, cpu = g
    put(host, lg, 0x5000, struct.pack("<3Q", DATA_DPL3, desc_of(0x20000067, 0x0000E900), 0))
    seg.guest_load_tls(cpu, 0x5000)
    assert lg.dead == "bad GDT entry 7: system descriptor"
    assert cpu.gdt[7] == 0


@pytest.mark.parametrize("addr", [MEM - 16, MEM, 0xFFFFFFF0, 0xFFFFFFFF])
def test_guest_load_tls_bad_address(g, addr):
    host, lg, cpu = g
    cpu.gdt[6] = DATA_DPL3
    seg.guest_load_tls(cpu, addr)
    assert lg.dead is not None and lg.dead.startswith("bad read address")
    # As Linux's __lgread: the entries read as zero (then fixed up).
    assert all(cpu.gdt[i] == desc_of(0, 0x2100) for i in TLS)


def _cpu_on(gdt):
    """An x86core CPU in protected mode at ring 1 whose GDT is `gdt`."""
    mem = PhysicalMemory(1 << 16)
    hw = CPU(mem)
    base = 0x1000
    for i, d in enumerate(gdt):
        mem.write(base + 8 * i, 8, d)
    hw.gdtr = (base, GDT_ENTRIES * 8 - 1)
    hw.cr0 |= 1
    hw.cpl = 1
    hw.mode_changed()
    return hw, mem, base


def test_guest_segments_load_at_ring1_without_writing_the_gdt(g):
    """What the fix-ups are for: the Guest kernel's segments, once copied
    into the running GDT, load from ring 1, and the CPU never needs to set
    an accessed bit in the (read-only) table."""
    host, lg, cpu = g
    seg.setup_guest_gdt(cpu)
    seg.load_guest_gdt_entry(cpu, 14, 0x0000FFFF, 0x00CFFA00)
    seg.load_guest_gdt_entry(cpu, 15, 0x0000FFFF, 0x00CFF200)
    running = [0] * GDT_ENTRIES
    seg.setup_default_gdt_entries(running, 0x3000)
    seg.copy_gdt(cpu, running)
    hw, mem, base = _cpu_on(running)
    table = mem.ram[base:base + GDT_ENTRIES * 8].copy()
    load_segment(hw, DS, __KERNEL_DS | GUEST_PL)
    load_segment(hw, SS_REG, __KERNEL_DS | GUEST_PL)
    load_segment(hw, DS, 0x7B)
    assert (mem.ram[base:base + GDT_ENTRIES * 8] == table).all()
    # The Switcher's own data segment stays out of the Guest's reach.
    with pytest.raises(CPUException):
        load_segment(hw, DS, LGUEST_DS | GUEST_PL)
    assert hw.seg_sel[DS] == 0x7B


# -- properties ------------------------------------------------------------------------------
u32 = st.integers(0, 0xFFFFFFFF)
# High words that hit the interesting bits often: present, S, DPL, type.
hi_words = st.one_of(u32, st.builds(lambda attr, rest: (rest & 0xFFFF00FF) | attr << 8,
                                    st.integers(0, 0xFF), u32))
loads = st.lists(st.tuples(st.one_of(st.integers(0, 40), u32), u32, hi_words),
                 min_size=1, max_size=12)


def _safe(cpu):
    for i in range(GDT_ENTRIES):
        if i in IGNORED:
            continue
        d = cpu.gdt[i]
        assert 0 <= d < 1 << 64
        if d >> 47 & 1:
            assert d >> 44 & 1, f"entry {i}: present system descriptor {d:#x}"
            assert d >> 45 & 3, f"entry {i}: present DPL 0 {d:#x}"
        assert d >> 40 & 1 or d == 0, f"entry {i}: accessed bit clear {d:#x}"


def _fixed(d):
    if not d >> 45 & 3:
        d |= GUEST_PL << 45
    return d | 1 << 40


@given(loads)
def test_random_gdt_loads_never_give_ring0_or_system_descriptors(seq):
    host, lg, cpu = fresh()
    seg.setup_guest_gdt(cpu)
    for num, lo, hi in seq:
        before = list(cpu.gdt)
        cpu.changed = 0
        seg.load_guest_gdt_entry(cpu, num, lo, hi)
        _safe(cpu)
        d = desc_of(lo, hi)
        if num >= GDT_ENTRIES:
            assert lg.dead == "too many gdt entries %i" % num and cpu.gdt == before
            break
        if num in IGNORED:
            assert cpu.gdt[num] == d
        elif d >> 47 & 1 and not d >> 44 & 1:
            assert lg.dead == "bad GDT entry %i: system descriptor" % num
            assert cpu.gdt[num] == 0
            break
        else:
            assert cpu.gdt[num] == _fixed(d)
        assert lg.dead is None and cpu.changed == CHANGED_GDT
        assert [i for i in range(GDT_ENTRIES) if cpu.gdt[i] != before[i]] in ([], [num])


@given(st.lists(st.tuples(u32, hi_words), min_size=3, max_size=3),
       st.one_of(st.sampled_from([0x5000, MEM - 24, MEM - 23]), u32))
def test_random_tls_loads_are_safe(tls, addr):
    host, lg, cpu = fresh()
    put(host, lg, 0x5000, struct.pack("<6I", *(w for pair in tls for w in pair)))
    put(host, lg, MEM - 24, struct.pack("<6I", *(w for pair in tls for w in pair)))
    seg.guest_load_tls(cpu, addr)
    _safe(cpu)
    assert cpu.changed == CHANGED_GDT_TLS
    if addr + 24 > MEM:
        assert lg.dead.startswith("bad read address")
        return
    # What the Guest has at addr (the copies, zeroes, or a mixture).
    raw = struct.unpack("<6I", bytes(host.mem.ram[lg.mem_base + addr:lg.mem_base + addr + 24]))
    tls = list(zip(raw[0::2], raw[1::2]))
    bad = [6 + k for k, (lo, hi) in enumerate(tls) if hi >> 15 & 1 and not hi >> 12 & 1]
    if bad:
        assert lg.dead == "bad GDT entry %i: system descriptor" % bad[0]
    else:
        assert lg.dead is None
    for k, (lo, hi) in enumerate(tls):
        want = 0 if 6 + k in bad else _fixed(desc_of(lo, hi))
        assert cpu.gdt[6 + k] == want
    assert all(cpu.gdt[i] == 0 for i in range(GDT_ENTRIES) if i not in TLS)
