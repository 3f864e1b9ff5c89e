"""The i386 opcode maps, written as the Intel SDM Vol. 2 Appendix A prints them.

Each entry is "mnemonic operand,operand" in the manual's notation:
  addressing  E r/m (register or memory)   G reg field, general register
              M r/m, memory only           R r/m, register only (MOV CRn/DRn)
              S reg field, segment reg     C / D reg field, control / debug reg
              I immediate                  J relative offset
              O moffs (no ModRM)           A direct far pointer
              X DS:eSI string source       Y ES:eDI string destination
              Z register in the opcode's low three bits (40+r, B8+r, ...)
  sizes       b byte, w word, d dword, v word/dword by operand size, z as v
              for immediates, p far pointer (16:16 or 16:32), a BOUND pair,
              q quadword, s six-byte pseudo-descriptor, y word in memory but
              v-sized register (MOV Sreg, LAR, SLDT ...), bs byte sign-extended
              to the operand size.
Fixed registers are spelled AL, eAX, DX, ES ... and `1` is the constant of
D0/D1.  "a/b" names the 16-bit/32-bit forms of one opcode (CBW/CWDE).
"@grpN" points into GROUPS, whose eight entries are selected by ModRM.reg;
a group entry with no operands takes the operands written at the reference,
and one whose operands start with "+" appends to them ("+Ib/Iz": Ib after a
byte operand, Iz after a word/dword one, as Intel writes group 3's TEST).
A group entry may be a pair (memory form, register form) where mod=3
selects a different instruction.  Missing entries are undefined (#UD).
"""

CONDITIONS = ("o", "no", "b", "ae", "e", "ne", "be", "a",
              "s", "ns", "p", "np", "l", "ge", "le", "g")

ONE_BYTE = {
    # 0x00                                                        0x08
    0x00: "add Eb,Gb",  0x01: "add Ev,Gv",  0x02: "add Gb,Eb",  0x03: "add Gv,Ev",
    0x04: "add AL,Ib",  0x05: "add eAX,Iz", 0x06: "push ES",    0x07: "pop ES",
    0x08: "or Eb,Gb",   0x09: "or Ev,Gv",   0x0A: "or Gb,Eb",   0x0B: "or Gv,Ev",
    0x0C: "or AL,Ib",   0x0D: "or eAX,Iz",  0x0E: "push CS",    # 0x0F: two-byte escape
    # 0x10
    0x10: "adc Eb,Gb",  0x11: "adc Ev,Gv",  0x12: "adc Gb,Eb",  0x13: "adc Gv,Ev",
    0x14: "adc AL,Ib",  0x15: "adc eAX,Iz", 0x16: "push SS",    0x17: "pop SS",
    0x18: "sbb Eb,Gb",  0x19: "sbb Ev,Gv",  0x1A: "sbb Gb,Eb",  0x1B: "sbb Gv,Ev",
    0x1C: "sbb AL,Ib",  0x1D: "sbb eAX,Iz", 0x1E: "push DS",    0x1F: "pop DS",
    # 0x20                                  0x26: ES prefix
    0x20: "and Eb,Gb",  0x21: "and Ev,Gv",  0x22: "and Gb,Eb",  0x23: "and Gv,Ev",
    0x24: "and AL,Ib",  0x25: "and eAX,Iz",                     0x27: "daa",
    0x28: "sub Eb,Gb",  0x29: "sub Ev,Gv",  0x2A: "sub Gb,Eb",  0x2B: "sub Gv,Ev",
    0x2C: "sub AL,Ib",  0x2D: "sub eAX,Iz",                     0x2F: "das",
    # 0x30                                  0x36: SS prefix, 0x3E: DS prefix
    0x30: "xor Eb,Gb",  0x31: "xor Ev,Gv",  0x32: "xor Gb,Eb",  0x33: "xor Gv,Ev",
    0x34: "xor AL,Ib",  0x35: "xor eAX,Iz",                     0x37: "aaa",
    0x38: "cmp Eb,Gb",  0x39: "cmp Ev,Gv",  0x3A: "cmp Gb,Eb",  0x3B: "cmp Gv,Ev",
    0x3C: "cmp AL,Ib",  0x3D: "cmp eAX,Iz",                     0x3F: "aas",
    # 0x40-0x5F: INC/DEC/PUSH/POP general register, filled in below
    # 0x60                                  0x64/0x65: FS/GS prefixes, 0x66/0x67: sizes
    0x60: "pushaw/pusha", 0x61: "popaw/popa", 0x62: "bound Gv,Ma", 0x63: "arpl Ew,Gw",
    0x68: "push Iz",    0x69: "imul Gv,Ev,Iz", 0x6A: "push Ibs", 0x6B: "imul Gv,Ev,Ibs",
    0x6C: "ins Yb,DX",  0x6D: "ins Yz,DX",  0x6E: "outs DX,Xb", 0x6F: "outs DX,Xz",
    # 0x70-0x7F: Jcc Jb, filled in below
    # 0x80
    0x80: "@grp1 Eb,Ib", 0x81: "@grp1 Ev,Iz", 0x82: "@grp1 Eb,Ib", 0x83: "@grp1 Ev,Ibs",
    0x84: "test Eb,Gb", 0x85: "test Ev,Gv", 0x86: "xchg Eb,Gb", 0x87: "xchg Ev,Gv",
    0x88: "mov Eb,Gb",  0x89: "mov Ev,Gv",  0x8A: "mov Gb,Eb",  0x8B: "mov Gv,Ev",
    0x8C: "mov Ey,Sw",  0x8D: "lea Gv,M",   0x8E: "mov Sw,Ey",  0x8F: "@grp1a Ev",
    # 0x90: NOP / XCHG, filled in below
    0x98: "cbw/cwde",   0x99: "cwd/cdq",    0x9A: "call Ap",    0x9B: "fwait",
    0x9C: "pushfw/pushf", 0x9D: "popfw/popf", 0x9E: "sahf",     0x9F: "lahf",
    # 0xA0
    0xA0: "mov AL,Ob",  0xA1: "mov eAX,Ov", 0xA2: "mov Ob,AL",  0xA3: "mov Ov,eAX",
    0xA4: "movs Yb,Xb", 0xA5: "movs Yv,Xv", 0xA6: "cmps Xb,Yb", 0xA7: "cmps Xv,Yv",
    0xA8: "test AL,Ib", 0xA9: "test eAX,Iz", 0xAA: "stos Yb,AL", 0xAB: "stos Yv,eAX",
    0xAC: "lods AL,Xb", 0xAD: "lods eAX,Xv", 0xAE: "scas AL,Yb", 0xAF: "scas eAX,Yv",
    # 0xB0-0xBF: MOV register, immediate, filled in below
    # 0xC0
    0xC0: "@grp2 Eb,Ib", 0xC1: "@grp2 Ev,Ib", 0xC2: "ret Iw",   0xC3: "ret",
    0xC4: "les Gv,Mp",  0xC5: "lds Gv,Mp",  0xC6: "@grp11 Eb,Ib", 0xC7: "@grp11 Ev,Iz",
    0xC8: "enter Iw,Ib", 0xC9: "leave",     0xCA: "retf Iw",    0xCB: "retf",
    0xCC: "int3",       0xCD: "int Ib",     0xCE: "into",       0xCF: "iretw/iret",
    # 0xD0                                                      0xD8-0xDF: x87 escapes
    0xD0: "@grp2 Eb,1", 0xD1: "@grp2 Ev,1", 0xD2: "@grp2 Eb,CL", 0xD3: "@grp2 Ev,CL",
    0xD4: "aam Ib",     0xD5: "aad Ib",     0xD6: "salc",       0xD7: "xlat",
    # 0xE0
    0xE0: "loopne Jb",  0xE1: "loope Jb",   0xE2: "loop Jb",    0xE3: "jcxz/jecxz Jb",
    0xE4: "in AL,Ib",   0xE5: "in eAX,Ib",  0xE6: "out Ib,AL",  0xE7: "out Ib,eAX",
    0xE8: "call Jz",    0xE9: "jmp Jz",     0xEA: "jmp Ap",     0xEB: "jmp Jb",
    0xEC: "in AL,DX",   0xED: "in eAX,DX",  0xEE: "out DX,AL",  0xEF: "out DX,eAX",
    # 0xF0: LOCK, 0xF2: REPNE, 0xF3: REP/REPE prefixes
    0xF1: "int1",                           0xF4: "hlt",        0xF5: "cmc",
    0xF6: "@grp3 Eb",   0xF7: "@grp3 Ev",
    0xF8: "clc",        0xF9: "stc",        0xFA: "cli",        0xFB: "sti",
    0xFC: "cld",        0xFD: "std",        0xFE: "@grp4",      0xFF: "@grp5",
}
for _r in range(8):
    ONE_BYTE[0x40 + _r] = "inc Zv"
    ONE_BYTE[0x48 + _r] = "dec Zv"
    ONE_BYTE[0x50 + _r] = "push Zv"
    ONE_BYTE[0x58 + _r] = "pop Zv"
    ONE_BYTE[0xB0 + _r] = "mov Zb,Ib"
    ONE_BYTE[0xB8 + _r] = "mov Zv,Iv"
    if _r:
        ONE_BYTE[0x90 + _r] = "xchg Zv,eAX"
ONE_BYTE[0x90] = "nop"          # F3 90 is PAUSE; 66 90 prints as xchg ax,ax
for _cc, _name in enumerate(CONDITIONS):
    ONE_BYTE[0x70 + _cc] = f"j{_name} Jb"

TWO_BYTE = {
    0x00: "@grp6",      0x01: "@grp7",      0x02: "lar Gv,Ey",  0x03: "lsl Gv,Ey",
    0x06: "clts",       0x08: "invd",       0x09: "wbinvd",     0x0B: "ud2",
    0x1F: "nop Ev",     # the P6 multi-byte NOP; every reg value is a NOP
    0x20: "mov Rd,Cd",  0x21: "mov Rd,Dd",  0x22: "mov Cd,Rd",  0x23: "mov Dd,Rd",
    0x30: "wrmsr",      0x31: "rdtsc",      0x32: "rdmsr",
    0xA0: "push FS",    0xA1: "pop FS",     0xA2: "cpuid",      0xA3: "bt Ev,Gv",
    0xA4: "shld Ev,Gv,Ib", 0xA5: "shld Ev,Gv,CL",
    0xA8: "push GS",    0xA9: "pop GS",                         0xAB: "bts Ev,Gv",
    0xAC: "shrd Ev,Gv,Ib", 0xAD: "shrd Ev,Gv,CL",               0xAF: "imul Gv,Ev",
    0xB0: "cmpxchg Eb,Gb", 0xB1: "cmpxchg Ev,Gv", 0xB2: "lss Gv,Mp", 0xB3: "btr Ev,Gv",
    0xB4: "lfs Gv,Mp",  0xB5: "lgs Gv,Mp",  0xB6: "movzx Gv,Eb", 0xB7: "movzx Gv,Ew",
    0xBA: "@grp8 Ev,Ib", 0xBB: "btc Ev,Gv", 0xBC: "bsf Gv,Ev",  0xBD: "bsr Gv,Ev",
    0xBE: "movsx Gv,Eb", 0xBF: "movsx Gv,Ew",
    0xC0: "xadd Eb,Gb", 0xC1: "xadd Ev,Gv", 0xC7: "@grp9",
}
for _cc, _name in enumerate(CONDITIONS):
    TWO_BYTE[0x40 + _cc] = f"cmov{_name} Gv,Ev"
    TWO_BYTE[0x80 + _cc] = f"j{_name} Jz"
    TWO_BYTE[0x90 + _cc] = f"set{_name} Eb"
for _r in range(8):
    TWO_BYTE[0xC8 + _r] = "bswap Zv"

GROUPS = {
    "grp1": ("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"),
    "grp1a": ("pop", None, None, None, None, None, None, None),
    "grp2": ("rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"),
    "grp3": ("test +Ib/Iz", "test +Ib/Iz", "not", "neg",
             "mul", "imul", "div", "idiv"),
    "grp4": ("inc Eb", "dec Eb", None, None, None, None, None, None),
    "grp5": ("inc Ev", "dec Ev", "call Ev", "call Mp", "jmp Ev", "jmp Mp", "push Ev", None),
    "grp6": ("sldt Ey", "str Ey", "lldt Ew", "ltr Ew", "verr Ew", "verw Ew", None, None),
    # Group 7's register forms (mod=3) are later processors' instructions
    # (VMCALL, MONITOR, SWAPGS ...) except SMSW and LMSW.  The map writes
    # INVLPG Mb, but it accesses no data: plain M (size 0), as for LEA.
    "grp7": ("sgdt Ms", "sidt Ms", "lgdt Ms", "lidt Ms", "smsw Ey", None, "lmsw Ew",
             ("invlpg M", None)),
    "grp8": (None, None, None, None, "bt", "bts", "btr", "btc"),
    "grp9": (None, ("cmpxchg8b Mq", None), None, None, None, None, None, None),
    "grp11": ("mov", None, None, None, None, None, None, None),
}

# Instructions the LOCK prefix may precede; and then only with a memory destination.
LOCKABLE = frozenset({
    "add", "or", "adc", "sbb", "and", "sub", "xor", "inc", "dec", "not", "neg",
    "xchg", "bts", "btr", "btc", "xadd", "cmpxchg", "cmpxchg8b",
})

# What ends a basic block: every control transfer ...
BRANCHES = frozenset(
    ["jmp", "call", "ret", "retf", "iret", "iretw", "int", "int1", "int3", "into",
     "loop", "loope", "loopne", "jcxz", "jecxz", "bound", "ud2"]
    + [f"j{c}" for c in CONDITIONS])
# ... and instructions that change how later bytes are fetched or interpreted,
# or open an interrupt window (STI, POPF).  Loads of segment, control and
# debug registers stop a block too; the decoder marks those by operand.
STOPS = frozenset({
    "hlt", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invlpg", "invd", "wbinvd",
    "wrmsr", "popf", "popfw", "sti", "cli", "lss", "lds", "les", "lfs", "lgs",
    "rdtsc",    # reads the retired-instruction count, which blocks keep only at their ends
})
# CPL 0 only; MOV to/from CRn and DRn are marked by operand.
PRIVILEGED = frozenset({
    "hlt", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invlpg", "invd", "wbinvd",
    "wrmsr", "rdmsr",
})
STRING = frozenset({"movs", "cmps", "stos", "lods", "scas", "ins", "outs"})
