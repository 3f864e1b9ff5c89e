"""The lguest interface facts both sides share: hypercall numbers, selectors,
vectors and the layout of `struct lguest_data` and `struct lguest_regs`.

These follow the i386, non-PAE Linux 2.6.31/32 lguest ABI
(include/linux/lguest.h, arch/x86/include/asm/lguest{,_hcall}.h) as gathered in
shared/spec/lguest-abi.md.  The Guest imports this module too: it is the
header file, not Host code.
"""
import struct

import attrs

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# -- privilege levels, selectors, addresses ---------------------------------
GUEST_PL = 1
GDT_ENTRIES = 32
IDT_ENTRIES = 256
GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX = 6, 8
GDT_ENTRY_TLS_ENTRIES = 3
GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS = 10, 11
GDT_ENTRY_KERNEL_CS, GDT_ENTRY_KERNEL_DS = 12, 13
GDT_ENTRY_TSS = 16
GDT_ENTRY_DOUBLEFAULT_TSS = 31
LGUEST_CS, LGUEST_DS = GDT_ENTRY_LGUEST_CS * 8, GDT_ENTRY_LGUEST_DS * 8
__KERNEL_CS, __KERNEL_DS = GDT_ENTRY_KERNEL_CS * 8, GDT_ENTRY_KERNEL_DS * 8
KERNEL_CS, KERNEL_DS = __KERNEL_CS, __KERNEL_DS
TSS_SELECTOR = GDT_ENTRY_TSS * 8
USER_CS, USER_DS = 0x73, 0x7B          # GDT entries 14 and 15, RPL 3 (Linux i386)

SWITCHER_ADDR = 0xFFC00000
SWITCHER_PGD_INDEX = SWITCHER_ADDR >> 22
PAGE_OFFSET = 0xC0000000

# -- traps and vectors --------------------------------------------------------
LGUEST_TRAP_ENTRY = 0x1F
FIRST_EXTERNAL_VECTOR = 0x20
LGUEST_IRQS = 32
SYSCALL_VECTOR = 0x80
TRAPS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})
X86_EFLAGS_IF = 0x200
X86_EFLAGS_BIT1 = 0x2

# -- hypercalls ---------------------------------------------------------------
LHCALL_FLUSH_ASYNC = 0
LHCALL_LGUEST_INIT = 1
LHCALL_SHUTDOWN = 2
LHCALL_NEW_PGTABLE = 4
LHCALL_FLUSH_TLB = 5
LHCALL_LOAD_IDT_ENTRY = 6
LHCALL_SET_STACK = 7
LHCALL_TS = 8
LHCALL_SET_CLOCKEVENT = 9
LHCALL_HALT = 10
LHCALL_SET_PMD = 13
LHCALL_SET_PTE = 14
LHCALL_SET_PGD = 15
LHCALL_LOAD_TLS = 16
LHCALL_NOTIFY = 17
LHCALL_LOAD_GDT_ENTRY = 18
LHCALL_SEND_INTERRUPTS = 19

HCALL_NAMES = {
    LHCALL_FLUSH_ASYNC: "FLUSH_ASYNC", LHCALL_LGUEST_INIT: "LGUEST_INIT",
    LHCALL_SHUTDOWN: "SHUTDOWN", LHCALL_NEW_PGTABLE: "NEW_PGTABLE",
    LHCALL_FLUSH_TLB: "FLUSH_TLB", LHCALL_LOAD_IDT_ENTRY: "LOAD_IDT_ENTRY",
    LHCALL_SET_STACK: "SET_STACK", LHCALL_TS: "TS",
    LHCALL_SET_CLOCKEVENT: "SET_CLOCKEVENT", LHCALL_HALT: "HALT",
    LHCALL_SET_PMD: "SET_PMD", LHCALL_SET_PTE: "SET_PTE", LHCALL_SET_PGD: "SET_PGD",
    LHCALL_LOAD_TLS: "LOAD_TLS", LHCALL_NOTIFY: "NOTIFY",
    LHCALL_LOAD_GDT_ENTRY: "LOAD_GDT_ENTRY", LHCALL_SEND_INTERRUPTS: "SEND_INTERRUPTS",
}

LGUEST_SHUTDOWN_POWEROFF = 1
LGUEST_SHUTDOWN_RESTART = 2

# -- struct lguest_data (guest memory; 4-byte unsigned long) --------------------
LHCALL_RING_SIZE = 64
HCALL_ARGS_SIZE = 20                    # struct hcall_args { u32 arg0..arg4; }


class LguestData:
    """Byte offsets of the fields of struct lguest_data."""
    irq_enabled = 0
    blocked_interrupts = 4
    cr2 = 8
    time = 12                           # struct timespec { tv_sec; tv_nsec; }
    time_sec = 12
    time_nsec = 16
    irq_pending = 20
    hcall_status = 24                   # u8[LHCALL_RING_SIZE]
    hcalls = hcall_status + LHCALL_RING_SIZE
    reserve_mem = hcalls + LHCALL_RING_SIZE * HCALL_ARGS_SIZE
    tsc_khz = reserve_mem + 4
    pgdir = tsc_khz + 4
    noirq_start = pgdir + 4
    noirq_end = noirq_start + 4
    kernel_address = noirq_end + 4
    syscall_vec = kernel_address + 4
    SIZE = syscall_vec + 4


# -- struct lguest_regs (the Switcher's save area) -------------------------------
REGS_FIELDS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp",
               "gs", "fs", "ds", "es", "trapnum", "errcode",
               "eip", "cs", "eflags", "esp", "ss")
_REGS = struct.Struct("<18I")
REGS_SIZE = _REGS.size                  # 72 bytes


@attrs.define
class LguestRegs:
    """struct lguest_regs: the Guest's registers while it is not running.
    The first part is saved by the Switcher's code, the last five (eip to ss)
    by the CPU itself when a trap from ring 1 or 3 switches to the ring-0
    stack, which the TSS points at the end of this structure."""
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0
    esi: int = 0
    edi: int = 0
    ebp: int = 0
    gs: int = 0
    fs: int = 0
    ds: int = 0
    es: int = 0
    trapnum: int = 0
    errcode: int = 0
    eip: int = 0
    cs: int = 0
    eflags: int = 0
    esp: int = 0
    ss: int = 0

    def pack(self) -> bytes:
        return _REGS.pack(*(getattr(self, f) & 0xFFFFFFFF for f in REGS_FIELDS))

    def unpack_from(self, buffer, offset: int = 0) -> None:
        for name, value in zip(REGS_FIELDS, _REGS.unpack_from(buffer, offset)):
            setattr(self, name, value)



# -- the boot protocol between the Launcher and the Guest kernel ---------------------------
# Linux hands the Guest a struct boot_params at guest-physical 0 (ESI = 0 at
# entry).  Ours is smaller: it says how much RAM there is, where the
# Launcher put the program archive ("initrd") and the argument block, and
# where the console device's page is.
class BootParams:
    """Byte offsets in the boot page (guest-physical 0); all fields u32."""
    magic = 0                           # BOOT_MAGIC
    ram_size = 4                        # bytes of RAM (the device page lies above it)
    args = 8                            # guest-physical address of the argument block
    args_len = 12
    initrd = 16                         # guest-physical address of the file archive
    initrd_size = 20
    console = 24                        # guest-physical address of the console device page
    first_free = 28                     # guest-physical: nothing the Launcher loaded lies above
    SIZE = 32


BOOT_MAGIC = 0x5950474C                 # "LGPY"
KERNEL_PHYS = 0x100000                  # where the Launcher loads the Guest kernel image

# The argument block: u32 argc, u32 envc, then the argv and envp strings,
# each NUL-terminated.
# The file archive: records of (u32 name length, u32 data length, name, data),
# each padded to 4 bytes; a zero name length ends it.  The first record is
# the program to run.


class ConsoleDevice:
    """The byte-stream console: the Guest fills a request in the device page
    and does LHCALL_NOTIFY with the page's address; the Launcher carries it
    out before the Guest runs again.  All fields u32 (result signed)."""
    cmd = 0
    fd = 4
    buf = 8                             # guest-physical address of the bytes
    len = 12
    result = 16                         # bytes done, or -errno
    CMD_WRITE, CMD_READ, CMD_EXIT = 1, 2, 3
