"""A hand-assembled Guest kernel for the Host's integration tests and
properties: real i386 code at ring 1 (and ring 3) that drives the Host only
through what a Guest has, its instructions and `int $0x1f`.

The kernel is assembled once.  What it does is data the test writes into
Guest memory before the run:

* an op table at OPS, 24-byte records (kind, a, b, c, d, e):
    OP_HCALL  int $0x1f with eax..esi = a..e
    OP_STORE  dword [a] = b          (a guest-virtual address)
    OP_LOAD   read dword [a]
    OP_COPY   dword [b] = dword [a]
    OP_END    jmp a                  (a continuation: one of the labels below)
* a parameter block at PARAM (in a user page, so ring 3 reads it too) with
  the registers a scenario loads before its trapping instruction.

Continuations: `scen_k` loads the parameter registers at ring 1 and jumps to
the trap snippet PARAM.trap; `scen_u` IRETs to ring 3 where user code does
the same; `spin_k` and `spin_u` are `jmp $` loops; `halt_k` is a bare HLT
(which at ring 1 raises #GP, an exit the Host reflects or kills on).

Guest-physical memory is identity-mapped at guest-virtual 0 by the page
tables at PGDIR/PT0; every PTE starts accessed and dirty (as the Launcher's
do), so neither delivery path has a reason to touch them.  The trap
snippets and PARAM live in user pages; the rest is supervisor-only.
"""
import struct

import attrs
import numpy as np

from lguest_host import lguest_user
from lguest_host.abi import (GUEST_PL, LGUEST_TRAP_ENTRY, PAGE_SIZE,
                             USER_CS, USER_DS, LguestData, __KERNEL_CS, __KERNEL_DS)
from lguest_host.core import lguest_host_init
from lguest_host.lg import HOST_RESERVED
from x86core.asm import assemble
from x86core.segmentation import make_descriptor

# -- guest-physical (= guest-virtual) layout --------------------------------------------
PGDIR = 0x0000
PT0 = 0x1000
KCODE = 0x2000
OPS = 0x6000
OPS_END = 0xA000
LGUEST_DATA = 0xA000
KSTACK = 0xC000
KSTACK_TOP = 0xE000
USER_CODE = 0x20000
USER_STACK_TOP = 0x22000
PARAM = 0x22000
USER_SCRATCH = 0x23000                  # a user page for test code
USER_PAGES = range(0x20, 0x24)          # page numbers mapped with the U bit
SCRATCH = 0x30000
GUEST_MEM = 1 << 20

KDS = __KERNEL_DS | GUEST_PL
KCS = __KERNEL_CS | GUEST_PL
NP_GDT_ENTRY = 20                       # a not-present DPL 3 data segment
NP_SEL = NP_GDT_ENTRY * 8 | 3

OP_END, OP_HCALL, OP_STORE, OP_LOAD, OP_COPY = 0, 1, 2, 3, 4
_OP = struct.Struct("<6I")

PTE_P, PTE_W, PTE_U, PTE_A, PTE_D = 0x1, 0x2, 0x4, 0x20, 0x40


class P:
    """Offsets in the parameter block."""
    eax, ebx, ecx, edx, esi, edi, ebp, esp = range(0, 32, 4)
    eflags = 32
    fs = 36
    gs = 40
    trap = 44                           # address of the trap snippet
    zero = 48                           # a zero dword (div by it)
    bounds = 52                         # (1, 0): every BOUND fails
    np_sel = 60                         # the not-present selector
    SIZE = 64


GPRS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")


def _kernel_source() -> str:
    prm = PARAM
    load_regs = [f"    mov fs, [{prm + P.fs:#x}]", f"    mov gs, [{prm + P.gs:#x}]"]
    gprs = [f"    mov {r}, [{prm + 4 * i:#x}]" for i, r in enumerate(GPRS)]
    lines = [
        "start:",
        f"    mov esp, {KSTACK_TOP:#x}",
        f"    mov ebp, {OPS:#x}",
        "op_loop:",
        "    mov eax, [ebp]",
        f"    cmp eax, {OP_HCALL}",
        "    je op_hcall",
        f"    cmp eax, {OP_STORE}",
        "    je op_store",
        f"    cmp eax, {OP_LOAD}",
        "    je op_load",
        f"    cmp eax, {OP_COPY}",
        "    je op_copy",
        "    jmp dword ptr [ebp + 4]",
        "op_hcall:",
        "    mov eax, [ebp + 4]",
        "    mov ebx, [ebp + 8]",
        "    mov ecx, [ebp + 12]",
        "    mov edx, [ebp + 16]",
        "    mov esi, [ebp + 20]",
        f"    int {LGUEST_TRAP_ENTRY:#x}",
        "    add ebp, 24",
        "    jmp op_loop",
        "op_store:",
        "    mov eax, [ebp + 4]",
        "    mov ebx, [ebp + 8]",
        "    mov [eax], ebx",
        "    add ebp, 24",
        "    jmp op_loop",
        "op_load:",
        "    mov eax, [ebp + 4]",
        "    mov ebx, [eax]",
        "    add ebp, 24",
        "    jmp op_loop",
        "op_copy:",
        "    mov eax, [ebp + 4]",
        "    mov ebx, [eax]",
        "    mov eax, [ebp + 8]",
        "    mov [eax], ebx",
        "    add ebp, 24",
        "    jmp op_loop",
        "scen_k:",
        *load_regs,
        f"    push dword ptr [{prm + P.eflags:#x}]",
        "    popfd",
        *gprs,
        f"    mov esp, [{prm + P.esp:#x}]",
        f"    jmp dword ptr [{prm + P.trap:#x}]",
        "scen_u:",
        f"    push {USER_DS:#x}",
        f"    push {USER_STACK_TOP:#x}",
        f"    push dword ptr [{prm + P.eflags:#x}]",
        f"    push {USER_CS:#x}",
        f"    push {USER_CODE:#x}",
        "    iret",
        "spin_k:",
        "    jmp spin_k",
        "halt_k:",
        "    hlt",
        "spin_u_k:",                    # IRET to ring 3 at spin_u
        f"    push {USER_DS:#x}",
        f"    push {USER_STACK_TOP:#x}",
        "    push 0x202",
        f"    push {USER_CS:#x}",
        "    push offset_spin_u",
        "    iret",
        "op_recover:",                  # a fault handler: skip the op that faulted
        f"    mov esp, {KSTACK_TOP:#x}",
        "    add ebp, 24",
        "    jmp op_loop",
        "handler:",                     # the trap gates' target: stop here
        "    hlt",
        "handler2:",
        "    hlt",
        "handler_ud:",                  # a stop that is not #GP: #UD (no native code here)
        "    ud2",
    ]
    return "\n".join(lines)


def _user_source() -> str:
    prm = PARAM
    gprs = [f"    mov {r}, [{prm + 4 * i:#x}]" for i, r in enumerate(GPRS)]
    np_sel = prm + P.np_sel
    lines = [
        "user_entry:",
        "    push ss",
        "    pop ds",
        "    push ss",
        "    pop es",
        f"    mov fs, [{prm + P.fs:#x}]",
        f"    mov gs, [{prm + P.gs:#x}]",
        *gprs,
        f"    mov esp, [{prm + P.esp:#x}]",
        f"    jmp dword ptr [{prm + P.trap:#x}]",
        "spin_u:",
        "    jmp spin_u",
        # The trap snippets: each is followed by a HLT, the stop if it does not trap.
        "t_int80:", "    int 0x80", "    hlt",
        "t_int40:", "    int 0x40", "    hlt",
        "t_int41:", "    int 0x41", "    hlt",
        "t_div:", f"    div dword ptr [{prm + P.zero:#x}]", "    hlt",
        "t_ud2:", "    ud2", "    hlt",
        "t_bound:", f"    bound eax, qword ptr [{prm + P.bounds:#x}]", "    hlt",
        "t_int3:", "    int3", "    hlt",
        "t_into:", "    into", "    hlt",
        "t_int1:", "    int1", "    hlt",
        "t_np:", f"    mov fs, [{np_sel:#x}]", "    hlt",
        # Reaching memory: eax = [ebx], [ebx] = ecx.
        "t_load:", "    mov eax, [ebx]", "    hlt",
        "t_store:", "    mov [ebx], ecx", "    hlt",
        # Asking for IOPL 3 with interrupts off, then CLI: ring 1 and 3 get neither.
        "t_iopl:", "    pushfd", "    or dword ptr [esp], 0x3000",
        "    and dword ptr [esp], 0xfffffdff", "    popfd", "    pushfd", "    pop edx",
        "    cli", "    hlt",
    ]
    return "\n".join(lines)


@attrs.frozen
class Image:
    kernel: bytes
    user: bytes
    labels: dict                        # kernel and user labels (linear addresses)


_IMAGE: list = []


def image() -> Image:
    if not _IMAGE:
        user = assemble(_user_source(), base=USER_CODE)
        ksrc = _kernel_source().replace("offset_spin_u", f"{user.labels['spin_u']:#x}")
        kernel = assemble(ksrc, base=KCODE)
        assert KCODE + len(kernel.code) <= OPS
        labels = dict(kernel.labels)
        labels.update(user.labels)
        _IMAGE.append(Image(kernel.code, user.code, labels))
    return _IMAGE[0]


def label(name: str) -> int:
    return image().labels[name]


# -- descriptors and gates ---------------------------------------------------------------
def gate(handler: int, gate_type: int = 0xF, dpl: int = 3, present: bool = True,
         selector: int = KCS) -> tuple[int, int]:
    """The two words of an IDT gate, as the Guest passes them to LOAD_IDT_ENTRY."""
    lo = (selector << 16) | (handler & 0xFFFF)
    hi = (handler & 0xFFFF0000) | (0x8000 if present else 0) | (dpl << 13) | (gate_type << 8)
    return lo, hi


def split(desc: int) -> tuple[int, int]:
    return desc & 0xFFFFFFFF, desc >> 32


USER_CS_DESC = make_descriptor(0, 0xFFFFFFFF, 0xFB, 0xC)
USER_DS_DESC = make_descriptor(0, 0xFFFFFFFF, 0xF3, 0xC)
NP_DESC = make_descriptor(0, 0xFFFFFFFF, 0x73, 0xC)     # DPL 3 data, not present


def hcall(nr: int, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0) -> tuple:
    return (OP_HCALL, nr, a1, a2, a3, a4)


def store(addr: int, value: int) -> tuple:
    return (OP_STORE, addr, value, 0, 0, 0)


def load(addr: int) -> tuple:
    return (OP_LOAD, addr, 0, 0, 0, 0)


def copy(src: int, dst: int) -> tuple:
    return (OP_COPY, src, dst, 0, 0, 0)


def end(cont: str | int) -> tuple:
    return (OP_END, label(cont) if isinstance(cont, str) else cont, 0, 0, 0, 0)


def standard_setup(stack_pages: int = 2) -> list:
    """LGUEST_INIT, the user segments, a not-present segment, the ring-1 stack."""
    return [
        hcall(1, LGUEST_DATA),
        hcall(18, USER_CS >> 3, *split(USER_CS_DESC)),
        hcall(18, USER_DS >> 3, *split(USER_DS_DESC)),
        hcall(18, NP_GDT_ENTRY, *split(NP_DESC)),
        hcall(7, KDS, KSTACK_TOP, stack_pages),
    ]


# -- building and running ------------------------------------------------------------------
@attrs.define(eq=False)
class MiniGuest:
    host: object
    lg: object
    cpu: object
    base: int
    size: int
    exit: object = None                 # the last run's Exit

    @property
    def hw(self):
        return self.host.hw

    def ram(self) -> np.ndarray:
        return self.host.mem.ram[self.base:self.base + self.size]

    def write(self, gpa: int, data: bytes) -> None:
        self.host.mem.load(self.base + gpa, data)

    def read(self, gpa: int, n: int) -> bytes:
        return self.host.mem.ram[self.base + gpa:self.base + gpa + n].tobytes()

    def u32(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 4), "little")

    def put32(self, gpa: int, value: int) -> None:
        self.write(gpa, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def ldata(self, field: int) -> int:
        return self.u32(LGUEST_DATA + field)

    def run(self, budget: int | None = 200_000):
        from lguest_host.core import run_guest
        self.exit = run_guest(self.cpu, budget)
        return self.exit


def page_tables(size: int = GUEST_MEM) -> tuple[bytes, bytes]:
    """(page directory, PT0): identity map of the first 4 MiB of Guest memory."""
    pgdir = bytearray(PAGE_SIZE)
    struct.pack_into("<I", pgdir, 0, PT0 | PTE_P | PTE_W | PTE_U | PTE_A)
    pt = bytearray(PAGE_SIZE)
    for pfn in range(min(size // PAGE_SIZE, 1024)):
        flags = PTE_P | PTE_W | PTE_A | PTE_D | (PTE_U if pfn in USER_PAGES else 0)
        struct.pack_into("<I", pt, pfn * 4, pfn << 12 | flags)
    return bytes(pgdir), bytes(pt)


def build(ops=(), *, params: dict | None = None, irq_enabled: int = 0x200,
          blocked: int = 0xFFFFFFFF, syscall_vec: int = 0x80, direct_traps: bool = True,
          syscall_vectors=frozenset({0x80}), size: int = GUEST_MEM, host=None,
          ldata: dict | None = None, ring: list | None = None, margin: int = 0) -> MiniGuest:
    """A Host with one MiniGuest, ready to run: memory laid out, ops and
    parameters written, lguest_data pre-filled (the async ring empty, or
    `ring`: (slot, (arg0..arg4)) entries marked ready).  With `margin`,
    the machine has that much memory below and above the Guest's that is
    nobody's (the properties fill it with a canary)."""
    img = image()
    if host is None:
        host = lguest_host_init(size + 2 * margin)
        host.boot_wall_ns = 0
    else:
        host.mem.ram[HOST_RESERVED:] = 0
    base = HOST_RESERVED + margin
    mg = MiniGuest(host, None, None, base, size)
    pgdir, pt0 = page_tables(size)
    mg.write(PGDIR, pgdir)
    mg.write(PT0, pt0)
    mg.write(KCODE, img.kernel)
    mg.write(USER_CODE, img.user)
    table = ops_table(ops)
    if OPS + len(table) > OPS_END:
        raise ValueError("too many ops")
    mg.write(OPS, table)
    values = {"eflags": 0x202, "esp": KSTACK_TOP, "fs": 0, "gs": 0,
              "trap": label("t_int80")}
    values.update(params or {})
    block = bytearray(P.SIZE)
    for name, value in values.items():
        struct.pack_into("<I", block, getattr(P, name), value & 0xFFFFFFFF)
    struct.pack_into("<II", block, P.bounds, 1, 0)
    struct.pack_into("<I", block, P.np_sel, NP_SEL)
    mg.write(PARAM, bytes(block))
    fields = {LguestData.irq_enabled: irq_enabled, LguestData.blocked_interrupts: blocked,
              LguestData.syscall_vec: syscall_vec}
    fields.update(ldata or {})
    for off, value in fields.items():
        mg.put32(LGUEST_DATA + off, value)
    status = bytearray(b"\xff" * 64)
    for slot, args in ring or ():
        status[slot] = 0
        mg.write(LGUEST_DATA + LguestData.hcalls + 20 * slot,
                 struct.pack("<5I", *(a & 0xFFFFFFFF for a in args)))
    mg.write(LGUEST_DATA + LguestData.hcall_status, bytes(status))
    cpu = lguest_user.initialize(host, base, size // PAGE_SIZE, PGDIR, label("start"),
                                 direct_traps=direct_traps,
                                 syscall_vectors=frozenset(syscall_vectors))
    mg.lg, mg.cpu = cpu.lg, cpu
    return mg


def ops_table(ops) -> bytes:
    return b"".join(_OP.pack(*(v & 0xFFFFFFFF for v in op)) for op in ops)


class LauncherKernel:
    """The same kernel as a Launcher boots it: `image` and `attach` (no
    native code).  The image runs from KCODE to KSTACK_TOP and carries the
    op table, lguest_data (ring empty) and `data` (gpa -> bytes) inside it;
    the Launcher's boot page at 0 and its page tables (after the image) map
    it at 0, supervisor only, so these Guests stay in ring 1."""

    def __init__(self, ops, data: dict | None = None):
        img = image()
        buf = bytearray(KSTACK_TOP - KCODE)
        buf[:len(img.kernel)] = img.kernel
        table = ops_table(ops)
        buf[OPS - KCODE:OPS - KCODE + len(table)] = table
        status = LGUEST_DATA - KCODE + LguestData.hcall_status
        buf[status:status + 64] = b"\xff" * 64
        vec = LGUEST_DATA - KCODE + LguestData.syscall_vec
        buf[vec:vec + 4] = (0x80).to_bytes(4, "little")
        for gpa, raw in (data or {}).items():
            assert KCODE <= gpa and gpa + len(raw) <= KSTACK
            buf[gpa - KCODE:gpa - KCODE + len(raw)] = raw
        self.image = _LauncherImage(bytes(buf), KCODE, len(buf), label("start"))
        self.attached = None

    def attach(self, hw) -> None:
        self.attached = hw


@attrs.frozen
class _LauncherImage:
    code: bytes
    load_phys: int
    size: int
    start: int


__all__ = ["build", "MiniGuest", "gate", "hcall", "store", "load", "copy", "end",
           "standard_setup", "label", "image", "P", "KCS", "KDS", "LauncherKernel"]
