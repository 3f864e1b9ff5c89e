"""The Guest's Global Descriptor Table, after drivers/lguest/segments.c
(Linux 2.6.32): the entries the Host keeps for itself (ignored_gdt), the
fix-ups every Guest entry gets (fixup_gdt_table), the Switcher's constant
entries (setup_default_gdt_entries), the Guest's boot GDT, copying the
Guest's entries into the GDT the CPU uses, and the LHCALL_LOAD_GDT_ENTRY /
LHCALL_LOAD_TLS hypercalls.

A descriptor is one u64 here (Linux splits it into the 32-bit words a and b:
a is the low word, b the high one).  Bits of the high word we look at:
    8       accessed (type bit 0 for a code/data segment)
    12      S: 1 = code/data segment, 0 = system descriptor (TSS, LDT, gates)
    13-14   DPL
    15      present
"""
from x86core.segmentation import make_descriptor

from .abi import (GDT_ENTRIES, GDT_ENTRY_DOUBLEFAULT_TSS, GDT_ENTRY_KERNEL_CS,
                  GDT_ENTRY_KERNEL_DS, GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS,
                  GDT_ENTRY_TLS_ENTRIES, GDT_ENTRY_TLS_MAX, GDT_ENTRY_TLS_MIN, GDT_ENTRY_TSS,
                  GUEST_PL)
from .core import lgread_bytes
from .lg import CHANGED_GDT, CHANGED_GDT_TLS, LgCpu, kill_guest

_U64 = (1 << 64) - 1

# Bits of the whole 64-bit descriptor (the high word's bits + 32).
DESC_ACCESSED = 1 << 40
DESC_S = 1 << 44
DESC_DPL_SHIFT = 45
DESC_DPL = 3 << DESC_DPL_SHIFT
DESC_PRESENT = 1 << 47

# Linux's FULL_EXEC_SEGMENT and FULL_SEGMENT: flat 0-4 GiB, 32-bit, page
# granular, ring 0, accessed (code: execute/read, data: read/write).
FULL_EXEC_SEGMENT = make_descriptor(0, 0xFFFFFFFF, 0x9B, 0xC)
FULL_SEGMENT = make_descriptor(0, 0xFFFFFFFF, 0x93, 0xC)
TSS_LIMIT = 0x67                     # sizeof(struct x86_hw_tss) - 1
TSS_ACCESS = 0x89                    # present, DPL 0, type 9: available 32-bit TSS


def ignored_gdt(num: int) -> bool:
    """Entries the Host owns: the Guest may write its copy of them, but that
    copy never reaches the GDT the CPU uses (copy_gdt skips them)."""
    return num in (GDT_ENTRY_TSS, GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS,
                   GDT_ENTRY_DOUBLEFAULT_TSS)


def fixup_gdt_table(cpu: LgCpu, start: int, end: int) -> None:
    """Make the Guest's entries [start, end) safe to hand to the CPU.

    As Linux: a DPL of 0 becomes GUEST_PL (Guests write kernel segments as if
    they ran in ring 0), and the accessed bit is set, because the CPU would
    otherwise set it on the first segment load, writing to a GDT that sits
    in the Switcher's read-only page.

    Stricter than Linux: a present system descriptor is refused.  Linux lets
    one through with its DPL raised to 1, but that is not enough: a call gate
    or task gate naming LGUEST_CS, or a TSS of the Guest's own whose SS0/ESP0
    and CS it chose, is a door into ring 0 that ring 1 (or 3, with DPL 3)
    could walk through.  Segments themselves are harmless once their DPL is
    at least 1.  A non-present one (the zero entry the Guest uses to clear a
    TLS slot is one) faults before the CPU ever looks at its type, so it is
    kept; only the present bit makes a system descriptor dangerous, and the
    Guest cannot set that bit afterwards without coming through here again.
    """
    gdt = cpu.gdt
    for i in range(start, end):
        if ignored_gdt(i):
            continue
        desc = gdt[i] & _U64
        if desc & DESC_PRESENT and not desc & DESC_S:
            gdt[i] = 0
            kill_guest(cpu, "bad GDT entry %i: system descriptor", i)
            continue
        if not desc & DESC_DPL:
            desc |= GUEST_PL << DESC_DPL_SHIFT
        gdt[i] = desc | DESC_ACCESSED


def setup_default_gdt_entries(gdt: list, tss_linear: int) -> None:
    """The Host's own entries in the GDT the CPU uses while a Guest runs:
    the Switcher's ring-0 code and data, and the TSS (which points at this
    CPU's struct lguest_regs for the ring-0 stack)."""
    gdt[GDT_ENTRY_LGUEST_CS] = FULL_EXEC_SEGMENT
    gdt[GDT_ENTRY_LGUEST_DS] = FULL_SEGMENT
    gdt[GDT_ENTRY_TSS] = make_descriptor(tss_linear & 0xFFFFFFFF, TSS_LIMIT, TSS_ACCESS, 0)


def setup_guest_gdt(cpu: LgCpu) -> None:
    """The GDT a Guest boots with: flat 4 GiB kernel code and data, which
    it may use from ring GUEST_PL."""
    cpu.gdt[GDT_ENTRY_KERNEL_CS] = FULL_EXEC_SEGMENT
    cpu.gdt[GDT_ENTRY_KERNEL_DS] = FULL_SEGMENT
    fixup_gdt_table(cpu, GDT_ENTRY_KERNEL_CS, GDT_ENTRY_KERNEL_DS + 1)
    cpu.changed |= CHANGED_GDT


def copy_gdt_tls(cpu: LgCpu, gdt: list) -> None:
    """Only the three TLS entries (they change at every context switch)."""
    for i in range(GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX + 1):
        gdt[i] = cpu.gdt[i]


def copy_gdt(cpu: LgCpu, gdt: list) -> None:
    """Every Guest entry, bar the Host's own (ignored_gdt)."""
    for i in range(GDT_ENTRIES):
        if not ignored_gdt(i):
            gdt[i] = cpu.gdt[i]


def load_guest_gdt_entry(cpu: LgCpu, num: int, lo: int, hi: int) -> None:
    """LHCALL_LOAD_GDT_ENTRY: the Guest changes one GDT entry."""
    if not 0 <= num < len(cpu.gdt):
        kill_guest(cpu, "too many gdt entries %i", num)
        return
    cpu.gdt[num] = (lo & 0xFFFFFFFF) | (hi & 0xFFFFFFFF) << 32
    fixup_gdt_table(cpu, num, num + 1)
    # Even on the same CPU the Switcher's copy is now stale.
    cpu.changed |= CHANGED_GDT


def guest_load_tls(cpu: LgCpu, gtls: int) -> None:
    """LHCALL_LOAD_TLS: the three TLS descriptors, from guest-physical gtls.
    An unreadable address kills the Guest (in lgread_bytes) and, as Linux's
    __lgread, leaves the entries zero."""
    raw = lgread_bytes(cpu, gtls, 8 * GDT_ENTRY_TLS_ENTRIES)
    for k in range(GDT_ENTRY_TLS_ENTRIES):
        cpu.gdt[GDT_ENTRY_TLS_MIN + k] = int.from_bytes(raw[8 * k:8 * k + 8], "little")
    fixup_gdt_table(cpu, GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX + 1)
    cpu.changed |= CHANGED_GDT_TLS
