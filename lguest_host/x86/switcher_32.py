"""The Switcher, after drivers/lguest/x86/switcher_32.S: the few pages of
ring-0 code and state, mapped at SWITCHER_ADDR in every address space, that
move the CPU between Host and Guest.

It is real machine code, assembled by x86core.asm and executed by the CPU:

* switch_to_guest: the Host jumps here at ring 0 with EAX pointing at this
  CPU's struct lguest_pages and ESP at its lguest_regs.  It loads the GDT and
  IDT the Guest runs with, pops the Guest's registers and IRETs into ring 1
  or 3.  The IRET does every check the hardware does on the Guest's CS, SS
  and EIP.  (Linux also reloads TR here, because its Host runs on its own
  TSS between switches; nothing else uses our CPU, so TR is loaded once and
  stays, and the state page can stay read-only.)

* one stub per vector: the IDT the CPU uses while the Guest runs points every
  vector the Guest does not take directly at one of these.  The TSS's ring-0
  stack is the end of lguest_regs, so the CPU's own pushes (ss, esp, eflags,
  cs, eip and, for some vectors, an error code) land in the structure; the
  stub adds the error code the CPU did not push and the trap number, and
  switch_to_host saves the rest and halts.  HLT with interrupts off is how the
  CPU gets back to the Host: its run loop returns "halt".

Our Host is Python, so there is no Host state to save or restore around the
switch (Linux's saves Host segments, stack and CR3 here).
"""
import functools

import attrs

from x86core.asm import assemble, vector_stubs

from ..abi import (GDT_ENTRIES, IDT_ENTRIES,
                   LGUEST_CS, LGUEST_DS, PAGE_SIZE, REGS_SIZE, SWITCHER_ADDR,
                   TRAPS_WITH_ERROR_CODE)
from ..lg import LGUEST_PAGES_PHYS, SWITCHER_PTE_PHYS, SWITCHER_TEXT_PHYS

# struct lguest_pages: the regs page (lguest_regs at its end: the ring-0
# stack top is the end of the page) then the read-only state page.
REGS_OFFSET = PAGE_SIZE - REGS_SIZE
STATE_OFFSET = PAGE_SIZE
# struct lguest_ro_state, relative to the state page
GUEST_IDT_DESC = 0x000          # limit (u16), base (u32)
GUEST_GDT_DESC = 0x008
GUEST_TSS = 0x010               # struct x86_hw_tss, 104 bytes
GUEST_IDT = 0x080               # IDT_ENTRIES descriptors
GUEST_GDT = GUEST_IDT + IDT_ENTRIES * 8
assert GUEST_GDT + GDT_ENTRIES * 8 <= PAGE_SIZE
TSS_SIZE = 104
TSS_ESP0, TSS_SS0, TSS_ESP1, TSS_SS1, TSS_IOMAP = 4, 8, 12, 16, 102

# The Host's own timer interrupt (Linux's LOCAL_TIMER_VECTOR): how the virtual
# clock takes the CPU back from a Guest that does not trap by itself.
HOST_TIMER_VECTOR = 0xEF


def switcher_source() -> str:
    lines = [
        "switch_to_guest:",
        f"    lgdt [eax + {STATE_OFFSET + GUEST_GDT_DESC:#x}]",
        f"    lidt [eax + {STATE_OFFSET + GUEST_IDT_DESC:#x}]",
        "    pop eax", "    pop ebx", "    pop ecx", "    pop edx",
        "    pop esi", "    pop edi", "    pop ebp",
        "    pop gs", "    pop fs", "    pop ds", "    pop es",
        "    add esp, 8",                # trapnum and errcode
        "    iret",
        "return_to_host:",
        "    push es", "    push ds", "    push fs", "    push gs",
        "    push ebp", "    push edi", "    push esi",
        "    push edx", "    push ecx", "    push ebx", "    push eax",
        "    hlt",
        "halted:",
        # Never executed: a guard between the exit HLT and the first stub.
        # x86core's run loop may enter its block chain right after the block
        # that halted; with vector 0's stub there (and already chained) it
        # ran that stub again, 8 bytes below lguest_regs.  A block holding a
        # HLT never enters the chain, so the chain stops here.
        "    hlt",
    ]
    lines.append("stubs:")
    return "\n".join(lines)


@attrs.define(eq=False)
class Switcher:
    """Where the Switcher's pieces are, in linear (Switcher-mapping) and
    host-physical addresses."""
    text_phys: int
    switch_to_guest: int                # linear
    return_to_host: int                 # linear: saves the registers and HLTs
    halt_eip: int                       # linear address after the HLT
    stubs: list                         # vector -> linear stub address
    pages_linear: int                   # CPU 0's struct lguest_pages
    pages_phys: int
    pte_page: int                       # host-physical PTE page mapping all of this

    @property
    def regs_linear(self) -> int:
        return self.pages_linear + REGS_OFFSET

    @property
    def regs_phys(self) -> int:
        return self.pages_phys + REGS_OFFSET

    @property
    def state_phys(self) -> int:
        return self.pages_phys + STATE_OFFSET

    @property
    def state_linear(self) -> int:
        return self.pages_linear + STATE_OFFSET


@functools.cache
def _assembled() -> tuple[bytes, dict, list]:
    """The Switcher's code and labels, and each vector's stub address."""
    program = assemble(switcher_source(), base=SWITCHER_ADDR)
    labels = program.labels
    stubs, addresses = vector_stubs(labels["stubs"], labels["return_to_host"],
                                    TRAPS_WITH_ERROR_CODE, IDT_ENTRIES)
    return program.code + stubs, dict(labels), addresses


def map_switcher(host) -> Switcher:
    """Assemble the Switcher into its page and build the PTE page that maps
    it (text read-only, the regs page writable, the state page read-only;
    all supervisor-only, so ring 3 never sees it)."""
    code, labels, stubs = _assembled()
    if len(code) > LGUEST_PAGES_PHYS - SWITCHER_TEXT_PHYS:
        raise AssertionError("the Switcher text outgrew its page")
    host.mem.load(SWITCHER_TEXT_PHYS, code)
    pages_linear = SWITCHER_ADDR + (LGUEST_PAGES_PHYS - SWITCHER_TEXT_PHYS)
    pte = host.mem
    pte.write(SWITCHER_PTE_PHYS + 0, 4, SWITCHER_TEXT_PHYS | 0x1)             # P, RO
    pte.write(SWITCHER_PTE_PHYS + 4, 4, LGUEST_PAGES_PHYS | 0x3)              # P, W
    pte.write(SWITCHER_PTE_PHYS + 8, 4, (LGUEST_PAGES_PHYS + PAGE_SIZE) | 0x1)  # P, RO
    switcher = Switcher(
        text_phys=SWITCHER_TEXT_PHYS,
        switch_to_guest=labels["switch_to_guest"],
        return_to_host=labels["return_to_host"],
        halt_eip=labels["halted"],
        stubs=stubs,
        pages_linear=pages_linear, pages_phys=LGUEST_PAGES_PHYS,
        pte_page=SWITCHER_PTE_PHYS)
    return switcher


__all__ = ["Switcher", "map_switcher", "switcher_source", "HOST_TIMER_VECTOR",
           "LGUEST_CS", "LGUEST_DS"]
