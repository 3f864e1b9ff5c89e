"""Hypothesis strategies for protected-mode machine states.

Building blocks (each documented below) produce raw 8-byte descriptors and
gates, descriptor tables, TSS contents and page maps; `machine_states()`
puts them together into a `Scenario`: a `reference.MachineState` (what the
reference model reads, and what `x86core.testing.load_cpu` loads into a
CPU) plus the `reference.Event` the instruction at CS:EIP raises (or an
external interrupt).

The states are biased towards the interesting: a well-formed baseline
(flat code and data segments at every ring, a TSS with a stack per ring,
an IDT of present gates) which a few draws then break (a gate not present
or of the wrong type or DPL, a code segment of the wrong kind, a TSS too
short or with a bad SS, a stack at a page boundary or unmapped, a table
page missing from the page map...), so that every rule of SDM INT n gets
exercised by a few hundred examples.

Memory layout (linear = physical; `MEMORY` bytes of RAM):
  GDT around 0x1000, LDT around 0x3000, IDT around 0x4000, TSS around
  0x6000 (each sometimes placed to straddle a page), code at 0x8000,
  stacks in 0x10000-0x7FFFF, the page directory and table above 1 MiB
  (`PAGE_DIRECTORY`, `PAGE_TABLE`), never mapped themselves.
"""
from __future__ import annotations

import struct

import attrs
from hypothesis import strategies as st

from ..reference import Event, MachineState, Paging, Seg, Table

MEMORY = 0x110000
PAGE_DIRECTORY, PAGE_TABLE = 0x100000, 0x101000
CODE_PAGE = 0x8000
HANDLER_PAGE = 0x9000               # where the baseline gates point
STACK_LOW, STACK_HIGH = 0x10000, 0x80000

# Baseline GDT layout: index -> role.
KCODE, KDATA = 1, 2                 # ring 0 (ring n code/data at 1 + 2n, 2 + 2n)
CONFORMING0, CODE16, DATA16, DATA_DOWN = 9, 10, 11, 12
TSS_INDEX, LDT_INDEX = 13, 14
GDT_BASELINE = 15                   # entries 15.. are random
FLAGS_32, FLAGS_16 = 0xC, 0x8       # G D/B 0 AVL: 4 KiB granularity with/without D/B

EFLAGS_DEFINED = 0x3F7FD5           # CF PF AF ZF SF TF IF DF OF IOPL NT RF VM AC VIF VIP ID


def descriptor(base: int, limit: int, access: int, flags: int = FLAGS_32) -> int:
    """A raw 8-byte descriptor from base, byte limit (scaled when G is set),
    the access byte (P DPL S type) and the flags nibble (G D/B 0 AVL)."""
    if flags & 8:
        limit >>= 12
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) | (base & 0xFF000000)
    return lo | hi << 32


def gate(selector: int, offset: int, gate_type: int, dpl: int, present: bool = True) -> int:
    """A raw IDT gate: task (5), 16-bit interrupt/trap (6/7), 32-bit
    interrupt/trap (0xE/0xF)."""
    access = (0x80 if present else 0) | dpl << 5 | gate_type
    lo = (offset & 0xFFFF) | (selector & 0xFFFF) << 16
    hi = (offset & 0xFFFF0000) | access << 8
    return lo | hi << 32


def table_bytes(entries: dict[int, int], count: int) -> bytes:
    out = bytearray(8 * count)
    for index, raw in entries.items():
        if index < count:
            struct.pack_into("<Q", out, 8 * index, raw)
    return bytes(out)


# -- descriptors --------------------------------------------------------------------------------

dpls = st.integers(0, 3)


@st.composite
def code_descriptors(draw, dpl=dpls, present=st.booleans()):
    """Code segments: any DPL, conforming or not, readable or not,
    accessed or not, 16- or 32-bit, flat or with a small limit."""
    d, p = draw(dpl), draw(present)
    conforming, readable, accessed = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    access = (0x80 if p else 0) | d << 5 | 0x18 | conforming << 2 | readable << 1 | accessed
    base = draw(st.sampled_from([0, 0, 0x1000]))
    limit = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 0x8FFF]))
    flags = FLAGS_32 if draw(st.booleans()) else FLAGS_16
    if limit < 0x100000:
        flags &= ~8
    return descriptor(base, limit, access, flags)


@st.composite
def data_descriptors(draw, dpl=dpls, present=st.booleans()):
    """Data segments: any DPL, writable or not, expand-down or not, B set
    or clear, flat or with a small limit."""
    d, p = draw(dpl), draw(present)
    writable, down, accessed = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    access = (0x80 if p else 0) | d << 5 | 0x10 | down << 2 | writable << 1 | accessed
    base = draw(st.sampled_from([0, 0, 0x10000]))
    limit = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFF, 0xFFFF, 0x3FFFF, 0x20FFF]))
    flags = FLAGS_32 if draw(st.booleans()) else FLAGS_16
    if limit < 0x100000:
        flags &= ~8
    return descriptor(base, limit, access, flags)


@st.composite
def system_descriptors(draw):
    """System descriptors (S = 0) of any type: TSSs, LDTs, call/task/
    interrupt/trap gates and the reserved types."""
    access = (0x80 if draw(st.booleans()) else 0) | draw(dpls) << 5 | draw(st.integers(0, 15))
    return descriptor(draw(st.sampled_from([0, 0x6000])), 0x67, access, 0)


def segment_descriptors():
    """Any descriptor: code, data or system, plus raw noise."""
    return st.one_of(code_descriptors(), data_descriptors(), system_descriptors(),
                     st.integers(0, (1 << 64) - 1))


@st.composite
def selectors(draw, indices=st.integers(0, 20), ti=st.just(0), rpl=dpls):
    return draw(indices) << 3 | draw(ti) << 2 | draw(rpl)


@st.composite
def gates(draw, selector=None, offset=None):
    """IDT gates: interrupt, trap (16/32) and task gates, any DPL, present
    or not, naming the baseline code segments mostly."""
    gtype = draw(st.sampled_from([0xE, 0xE, 0xE, 0xF, 0xF, 0xF, 6, 7, 5]))
    if selector is None:
        index = draw(st.sampled_from([KCODE, KCODE, 3, 5, 7, CONFORMING0, CODE16, KDATA,
                                      TSS_INDEX, 0, 40, GDT_BASELINE]))
        ti = 1 if draw(st.integers(0, 15)) == 0 else 0
        sel = index << 3 | ti << 2 | draw(dpls)
    else:
        sel = draw(selector)
    if gtype == 5:
        sel = draw(st.sampled_from([TSS_INDEX << 3, TSS_INDEX << 3, KCODE << 3]))
    off = draw(offset) if offset is not None else draw(st.sampled_from(
        [0x9000, 0x9000, 0x8FF0, 0x12345, 0xFFFFF000]))
    dpl = draw(st.sampled_from([0, 3, 3, 1, 2]))
    present = draw(st.integers(0, 9)) > 0
    return gate(sel, off, gtype, dpl, present)


# -- tables ---------------------------------------------------------------------------------------

def baseline_gdt() -> dict[int, int]:
    gdt = {0: 0}
    for ring in range(4):
        gdt[1 + 2 * ring] = descriptor(0, 0xFFFFFFFF, 0x9B | ring << 5)
        gdt[2 + 2 * ring] = descriptor(0, 0xFFFFFFFF, 0x93 | ring << 5)
    gdt[CONFORMING0] = descriptor(0, 0xFFFFFFFF, 0x9F)
    gdt[CODE16] = descriptor(0, 0xFFFF, 0x9B, 0)
    gdt[DATA16] = descriptor(0x10000, 0xFFFF, 0x93, 0)
    gdt[DATA_DOWN] = descriptor(0, 0x1FFFF, 0x97, 0x4)       # expand-down, B set
    return gdt


@st.composite
def gdts(draw, tss_base=0x6000, tss_limit=0x67, tss_type=0xB, ldt_base=0x3000):
    """A GDT (dict index -> raw descriptor): the baseline, a TSS and an LDT
    descriptor, a few random entries, and a few baseline entries mutated."""
    gdt = baseline_gdt()
    gdt[TSS_INDEX] = descriptor(tss_base, tss_limit, 0x80 | tss_type, 0)
    gdt[LDT_INDEX] = descriptor(ldt_base, 0x3F, 0x82, 0)
    for index in range(GDT_BASELINE, GDT_BASELINE + draw(st.integers(0, 4))):
        gdt[index] = draw(segment_descriptors())
    for _ in range(draw(st.integers(0, 2))):
        index = draw(st.sampled_from([3, 4, 5, 6, 7, 8, CONFORMING0] * 3 + [KCODE, KDATA]))
        gdt[index] = draw(st.one_of(code_descriptors(), data_descriptors()))
    return gdt


def kernel_gates():
    """Present 32-bit interrupt or trap gates to the ring 0 code segment."""
    return st.builds(lambda t, dpl: gate(KCODE << 3, 0x9000, t, dpl),
                     st.sampled_from([0xE, 0xF]), st.sampled_from([0, 3]))


_GOOD_TARGETS = {"ring 0": (KCODE << 3, (0xE, 0xF)), "ring 1": (3 << 3 | 1, (0xE, 0xF)),
                 "ring 2": (5 << 3 | 2, (0xE, 0xF)), "conforming": (CONFORMING0 << 3, (0xE, 0xF)),
                 "16-bit": (CODE16 << 3, (6, 7))}


@st.composite
def good_gates(draw, dpl=st.sampled_from([0, 3, 3, 3])):
    """Present gates that work when the baseline GDT is intact: to ring 0
    (mostly), ring 1 (lguest's Guest kernel), ring 2, the conforming ring 0
    segment, or the 16-bit ring 0 segment through a 16-bit gate."""
    target = draw(st.sampled_from(["ring 0"] * 4 + ["ring 1", "ring 1", "ring 2", "conforming",
                                                    "16-bit"]))
    selector, types = _GOOD_TARGETS[target]
    return gate(selector, 0x9000, draw(st.sampled_from(types)), draw(dpl))


@st.composite
def idts(draw, vectors, handlers=(), event_gates=None):
    """An IDT (dict vector -> raw gate): at each of `vectors` a gate from
    `event_gates`, by default any gate (a good one a third of the time,
    else mostly well-formed but often broken in one way, or noise); at each
    of `handlers` (the double-fault and contributory vectors) mostly a good
    ring 0 gate."""
    if event_gates is None:
        event_gates = st.one_of(good_gates(), good_gates(), gates(), gates(), gates(), gates(),
                                st.integers(0, (1 << 64) - 1))
    idt = {}
    for v in handlers:
        idt[v] = draw(kernel_gates()) if draw(st.integers(0, 9)) else draw(gates())
    for v in vectors:
        idt[v] = draw(event_gates)
    return idt


@st.composite
def tss_contents(draw, stack_tops, bits=32):
    """The bytes of a TSS: SSn:ESPn for rings 0-2, each mostly the
    baseline data segment of that ring with RPL n, sometimes a wrong
    selector (null, another ring's, a code segment, beyond the GDT)."""
    size = 0x68 if bits == 32 else 0x2C
    out = bytearray(size)
    for ring in range(3):
        good = (2 + 2 * ring) << 3 | ring
        ss = draw(st.sampled_from([good] * 40 + [0, ring, KCODE << 3 | ring, 2 << 3, 0x1F8 | ring,
                                               DATA16 << 3 | ring, DATA_DOWN << 3 | ring]))
        if ss in (DATA16 << 3 | ring, DATA_DOWN << 3 | ring) and ring != 0:
            ss = good
        esp = draw(stack_tops)
        if bits == 32:
            struct.pack_into("<IH", out, 4 + 8 * ring, esp, ss)
        else:
            struct.pack_into("<HH", out, 2 + 4 * ring, esp & 0xFFFF, ss)
    return bytes(out)


def stack_tops():
    """Stack pointers: page-aligned, just above or below a page boundary,
    odd, and a few anywhere in the stack area."""
    return st.one_of(
        st.integers(STACK_LOW >> 12, (STACK_HIGH >> 12) - 1).map(lambda p: p << 12),
        st.tuples(st.integers(STACK_LOW >> 12, (STACK_HIGH >> 12) - 1),
                  st.integers(-24, 24)).map(lambda t: (t[0] << 12) + t[1]),
        st.integers(STACK_LOW + 64, STACK_HIGH - 64))


@st.composite
def page_maps(draw, must_map, user, maybe_map=(), mostly_map=()):
    """An identity page map: `must_map` pages present (user-accessible when
    `user`), the pages in `maybe_map` present with random P/RW/US bits or
    missing (those in `mostly_map` rarely missing).  Directory entry 0
    covers it all."""
    pde = 0x7 if draw(st.integers(0, 5)) else draw(st.sampled_from([0x3, 0x5, 0x1, 0x7]))
    if user:
        pde |= 0x5
    pte = {}
    for page in sorted(set(maybe_map) | set(mostly_map)):
        choice = draw(st.integers(0, 59 if page in mostly_map else 19))
        if choice >= 3:
            pte[page] = 0x7
        elif choice == 2:
            pte[page] = draw(st.sampled_from([0x1, 0x3, 0x5]))
    for page in must_map:
        pte[page] = 0x5 | (pte.get(page, 0x2) & 0x2) if user else 0x1 | (pte.get(page, 0x6) & 0x6)
    return Paging(pde, tuple(sorted(pte.items())), draw(st.booleans()))


# -- whole machines ---------------------------------------------------------------------------------

@attrs.frozen
class Scenario:
    """A machine state and the event its instruction raises.
    `code` is placed at CS:EIP; cr2_at_event is CR2 once that event is
    raised (the faulting address for a #PF instruction)."""
    state: MachineState
    event: Event
    cr2_at_event: int
    description: str = ""


EVENTS = ("int", "int", "int", "int3", "into", "ud2", "hlt", "div0", "pf", "irq", "irq", "int1")


def _event_code(kind: str, vector: int, bits: int) -> bytes:
    wide = b"" if bits == 32 else b"\x66"
    addr32 = b"" if bits == 32 else b"\x67"
    return {
        "int": bytes([0xCD, vector]), "int3": b"\xCC", "into": b"\xCE", "ud2": b"\x0F\x0B",
        "hlt": b"\xF4", "div0": wide + b"\xF7\xF1", "pf": addr32 + wide + b"\x89\x03",
        "irq": b"\x90", "int1": b"\xF1",
    }[kind]


def _segment_cache(raw: int, selector: int) -> Seg:
    lo, hi = raw & 0xFFFFFFFF, raw >> 32
    base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
    limit = (lo & 0xFFFF) | (hi & 0xF0000)
    if hi & 0x800000:
        limit = limit << 12 | 0xFFF
    return Seg(selector, base, limit, (hi >> 8 & 0xFF) | (hi >> 20 & 0xF) << 12 | 1)


@st.composite
def machine_states(draw, modes=st.sampled_from(["protected"] * 8 + ["v86", "real"]),
                   events=st.sampled_from(EVENTS), event_gates=None):
    """A Scenario: protected mode at any CPL (or virtual-8086 or real mode),
    paging on or off (the code and handler pages always mapped), and one
    event: INT n (any vector), INT3, INTO, #UD, #GP(0) (HLT above ring 0),
    #DE, #PF (a write to an unmapped page), an external interrupt, INT1.
    `modes` draws "protected", "v86" or "real"; `events` one of EVENTS;
    `event_gates` (raw gates) overrides the IDT gate of the event's vector
    (see idts)."""
    mode = draw(modes)
    kind = draw(events)
    if mode == "real":
        return draw(_real_mode_scenario(kind))
    v86 = mode == "v86"
    cpl = 3 if v86 else draw(dpls)
    if kind == "hlt" and cpl == 0:
        kind = "ud2"
    paging = draw(st.booleans())
    if kind == "pf" and (not paging or v86):
        kind = "div0"
    vector = draw(st.one_of(st.integers(0, 255), st.sampled_from([3, 4, 8, 13, 14, 0x80, 0x20])))
    event_vector = {"int": vector, "int3": 3, "into": 4, "ud2": 6, "hlt": 13, "div0": 0,
                    "pf": 14, "irq": vector, "int1": 1}[kind]

    # Tables.
    gdt_base = draw(st.sampled_from([0x1000, 0x1000, 0x1F80]))
    ldt_base = 0x3000
    idt_base = draw(st.sampled_from([0x4000, 0x4000, 0x4C00]))
    tss_base = draw(st.sampled_from([0x6000, 0x6000, 0x6FD0]))
    tss32 = draw(st.integers(0, 7)) > 0
    tss_limit = draw(st.sampled_from([0x67] * 16 + [0x0B, 0x13, 0x1B, 0x0F]) if tss32
                     else st.sampled_from([0x2B, 0x2B, 0x05, 0x09]))
    gdt = draw(gdts(tss_base, tss_limit, 0xB if tss32 else 0x3, ldt_base))
    gdt_count = max(gdt) + 1
    gdt_limit = draw(st.sampled_from([8 * gdt_count - 1] * 12 + [8 * TSS_INDEX + 7, 0x3F]))
    ldt = {1: descriptor(0, 0xFFFFFFFF, 0x9B), 2: descriptor(0, 0xFFFFFFFF, 0x93),
           3: draw(segment_descriptors())}
    idt = draw(idts([event_vector], sorted({8, 10, 11, 12, 13, 14} - {event_vector}), event_gates))
    idt_limit = draw(st.sampled_from([0x7FF] * 12 + [event_vector * 8 + 6, 8 * 13 + 7, 8 * 8 + 7]))
    tss = draw(tss_contents(stack_tops(), 32 if tss32 else 16))

    # The current segments.
    bits = 16 if v86 else draw(st.sampled_from([32, 32, 32, 16]))
    if v86:
        cs = Seg(CODE_PAGE >> 4, CODE_PAGE, 0xFFFF, 0xFB)
        eip = draw(st.integers(0, 0x0FF0))
        ss_sel = draw(st.integers(STACK_LOW >> 4, (STACK_HIGH >> 4) - 0x1000))
        ss = Seg(ss_sel, ss_sel << 4, 0xFFFF, 0xF3)
        esp = draw(st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 2, 0x10, 0xFFFE])))
        data = [Seg(s, s << 4, 0xFFFF, 0xF3) for s in draw(st.lists(
            st.integers(0, 0xFFFF), min_size=4, max_size=4))]
    else:
        code_index = CODE16 if bits == 16 and cpl == 0 else 1 + 2 * cpl
        raw_cs = descriptor(0, 0xFFFFFFFF, 0x9B | cpl << 5) if bits == 32 else \
            descriptor(0, 0xFFFF, 0x9B | cpl << 5, 0)
        cs = _segment_cache(raw_cs, code_index << 3 | cpl)
        eip = CODE_PAGE + draw(st.integers(0, 0xFF0))
        ss_choice = draw(st.sampled_from(["flat"] * 5 + ["16", "down", "based"]))
        ss_index = 2 + 2 * cpl
        if ss_choice == "flat":
            ss = _segment_cache(descriptor(0, 0xFFFFFFFF, 0x93 | cpl << 5), ss_index << 3 | cpl)
            esp = draw(stack_tops())
        elif ss_choice == "16":
            ss = _segment_cache(descriptor(0x10000, 0xFFFF, 0x93 | cpl << 5, 0), ss_index << 3 | cpl)
            esp = draw(st.integers(0, 0xFFFF)) | draw(st.sampled_from([0, 0xABCD0000]))
        elif ss_choice == "down":
            ss = _segment_cache(descriptor(0, 0x1FFFF, 0x97 | cpl << 5, 0x4), ss_index << 3 | cpl)
            esp = draw(st.one_of(stack_tops(), st.integers(0x1FFF0, 0x20020)))
        else:
            ss = _segment_cache(descriptor(0x20000, 0x3FFFF, 0x93 | cpl << 5, 0x4), ss_index << 3 | cpl)
            esp = draw(st.integers(0, 0x40010))
        data = []
        for _ in range(4):
            sel = draw(st.sampled_from([0, 3, 2 << 3, 4 << 3 | 1, 6 << 3 | 2, 8 << 3 | 3,
                                        CONFORMING0 << 3, 2 << 3 | 4]))
            raw = gdt.get(sel >> 3, 0) if not sel & 4 else ldt.get(sel >> 3, 0)
            data.append(Seg(sel, 0, 0, 0) if sel & ~3 == 0 else _segment_cache(raw, sel))
    es, ds, fs, gs = data
    regs = [draw(st.integers(0, 0xFFFFFFFF)) for _ in range(8)]
    regs[4] = esp
    cr2_at_event = 0

    # The event.
    eflags = (draw(st.integers(0, 0xFFFFFFFF)) & EFLAGS_DEFINED & ~0x20000) | 2
    if v86:
        eflags |= 0x20000
    if kind == "irq":
        eflags |= 0x200
    if kind == "into":
        eflags |= 0x800
    code = _event_code(kind, vector, bits)
    length = len(code)
    if kind == "div0":
        regs[1] = 0
    if kind == "pf":
        ds = _segment_cache(descriptor(0, 0xFFFFFFFF, 0x93 | cpl << 5), (2 + 2 * cpl) << 3 | cpl)
        regs[3] = 0x90000 + draw(st.integers(0, 0xFFFF))
        cr2_at_event = regs[3]
    if kind in ("int", "int3", "into"):
        event = Event("software", event_vector, None, eip + length, eip, kind != "int")
    elif kind == "int1":
        event = Event("trap", 1, None, eip + length, eip + length)
    elif kind == "irq":
        event = Event("interrupt", event_vector, None, eip, eip)
    else:
        error = {"hlt": 0, "pf": 2 | (4 if cpl == 3 else 0)}.get(kind)
        event = Event("fault", event_vector, error, eip, eip)

    # Paging: the code page always, the tables and stacks perhaps.
    page_map = None
    if paging:
        tables, interesting = set(), set()
        for base, size in ((gdt_base, 8 * gdt_count), (idt_base, 0x800), (tss_base, 0x68),
                           (ldt_base, 0x40)):
            tables.update(range(base >> 12, (base + size - 1 >> 12) + 1))
        stack_ptrs = [ss.base + esp] + [struct.unpack_from("<I", tss, 4 + 8 * r)[0]
                                        for r in range(3) if tss32]
        for sp in stack_ptrs:
            interesting.update({(sp - 1) >> 12 & 0xFFFFF, (sp - 40) >> 12 & 0xFFFFF})
        interesting = {p for p in interesting if p < 0x100}
        page_map = draw(page_maps({CODE_PAGE >> 12, HANDLER_PAGE >> 12}, cpl == 3,
                                  sorted(interesting - tables),
                                  sorted(tables)))

    state = MachineState(
        pe=True, cpl=cpl, eflags=eflags, eip=eip, regs=tuple(regs),
        segs=(es, cs, ss, ds, fs, gs),
        gdt=Table(gdt_base, gdt_limit, table_bytes(gdt, gdt_count)),
        idt=Table(idt_base, idt_limit, table_bytes(idt, 256)),
        ldtr=Seg(LDT_INDEX << 3, ldt_base, 0x3F, 0x82), ldt=table_bytes(ldt, 8),
        tr=Seg(TSS_INDEX << 3, tss_base, tss_limit, 0x8B if tss32 else 0x83), tss=tss,
        paging=page_map,
        memory=((cs.base + eip, code),), memory_size=MEMORY)
    return Scenario(state, event, cr2_at_event, f"{mode} cpl{cpl} {kind} {event_vector:#x}")


@st.composite
def _real_mode_scenario(draw, kind):
    if kind in ("hlt", "pf"):
        kind = "ud2"
    vector = draw(st.integers(0, 255))
    event_vector = {"int": vector, "int3": 3, "into": 4, "ud2": 6, "div0": 0, "irq": vector,
                    "int1": 1}[kind]
    ivt_base = draw(st.sampled_from([0, 0, 0x4000]))
    ivt_limit = draw(st.sampled_from([0x3FF] * 12 + [event_vector * 4 + 2, 13 * 4 + 3]))
    ivt = draw(st.binary(min_size=0x400, max_size=0x400))
    cs = Seg(CODE_PAGE >> 4, CODE_PAGE, 0xFFFF, 0x93)
    eip = draw(st.integers(0, 0xFF0))
    ss_sel = draw(st.integers(STACK_LOW >> 4, (STACK_HIGH >> 4) - 0x1000))
    ss = Seg(ss_sel, ss_sel << 4, 0xFFFF, 0x93)
    regs = [draw(st.integers(0, 0xFFFFFFFF)) for _ in range(8)]
    regs[4] = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                             st.sampled_from([0, 1, 2, 4, 5, 6, 0xFFFF])))
    data = [Seg(s, s << 4, 0xFFFF, 0x93) for s in draw(st.lists(st.integers(0, 0xFFFF),
                                                                 min_size=4, max_size=4))]
    eflags = (draw(st.integers(0, 0xFFFFFFFF)) & EFLAGS_DEFINED & ~0x20000) | 2
    if kind == "irq":
        eflags |= 0x200
    if kind == "into":
        eflags |= 0x800
    code = _event_code(kind, vector, 16)
    if kind == "div0":
        regs[1] = 0
    if kind in ("int", "int3", "into"):
        event = Event("software", event_vector, None, eip + len(code), eip, kind != "int")
    elif kind == "int1":
        event = Event("trap", 1, None, eip + 1, eip + 1)
    elif kind == "irq":
        event = Event("interrupt", event_vector, None, eip, eip)
    else:
        event = Event("fault", event_vector, None, eip, eip)
    es, ds, fs, gs = data
    state = MachineState(
        pe=False, cpl=0, eflags=eflags, eip=eip, regs=tuple(regs), segs=(es, cs, ss, ds, fs, gs),
        gdt=Table(0x1000, 0xFFFF, b""), idt=Table(ivt_base, ivt_limit, ivt),
        memory=((cs.base + eip, code),), memory_size=MEMORY)
    return Scenario(state, event, 0, f"real {kind} {event_vector:#x}")
