"""The x87 escape opcodes D8-DF (Intel SDM Vol. 2 Appendix A.4).

The machine has no FPU (CPUID reports none, CR0.EM traps them), but the
decoder must still know each escape's length and name so that code that
merely contains x87 instructions decodes and disassembles correctly.

FORMS maps (opcode, reg) for memory forms (mod != 3) and (opcode, modrm) for
register forms; (opcode, 8 + reg) is a register form covering all eight
ST(i) of one ModRM.reg row.

Entries use the operand notation of `opcodes.py`; `ST` is ST(0) and `STi`
the ST(i) named by ModRM.rm.  Memory sizes are the SDM's: Mw m16int/m2byte,
Md m32fp/m32int, Mq m64fp/m64int, Mt m80fp/m80bcd.  The FPU environment and
state images (FLDENV/FNSTENV 14/28 bytes, FRSTOR/FNSAVE 94/108 bytes) have no
size code and are plain `M` (size 0); objdump prints them without a PTR
keyword, as it does LEA's operand.

Operands are written as the SDM's instruction pages write them and as
`objdump -M intel` prints them: `fadd ST,STi` (D8 C0+i) but `fadd STi,ST`
(DC C0+i), a single `STi` for FCOM/FUCOM/FXCH/FST/FSTP/FFREE/FLD, and one
memory operand for every memory form (ST(0) implied).

The encodings the SDM leaves blank are absent, so they decode as #UD; which
ones are blank was checked against iced-x86, which follows what processors
do.  That includes the undocumented register-form aliases real processors
execute (iced decodes them; objdump prints them as "(bad)"):
  D9 D8+i  FSTPNCE ST(i) (FSTP1, "no C1 effect" alias of DD D8+i)
  DC D0+i  FCOM ST(i)    (FCOM2)      DC D8+i  FCOMP ST(i)  (FCOMP3)
  DD C8+i  FXCH ST(i)    (FXCH4)      DE D0+i  FCOMP ST(i)  (FCOMP5)
  DF C8+i  FXCH ST(i)    (FXCH7)      DF D0+i  FSTP ST(i)   (FSTP8)
  DF D8+i  FSTP ST(i)    (FSTP9)
and the 8087/80287 leftovers the 387 and later execute as FNOP: DB E0 FNENI,
DB E1 FNDISI, DB E4 FNSETPM (DB E5, the 287XL's FRSTPM, is #UD on iced).
FISTTP (DB /1, DD /1, DF /1) is SSE3 but sits in the x87 map; iced and
objdump both decode it, so it is here too.  The P6 additions FCMOVcc,
FCOMI/FCOMIP/FUCOMI/FUCOMIP are included likewise; the emulator, having no
FPU, traps every escape anyway.
"""

# The eight arithmetic operations of D8/DA/DC/DE ModRM.reg 0-7.
_ARITH = ("fadd", "fmul", "fcom", "fcomp", "fsub", "fsubr", "fdiv", "fdivr")

FORMS: dict[tuple[int, int], str] = {}


def _rows(opcode: int, entries: dict[int, str]) -> None:
    for key, text in entries.items():
        FORMS[(opcode, key)] = text


# D8: m32fp arithmetic; ST(0) op ST(i).
_rows(0xD8, {reg: f"{name} Md" for reg, name in enumerate(_ARITH)})
_rows(0xD8, {8 + reg: (f"{name} STi" if name in ("fcom", "fcomp") else f"{name} ST,STi")
             for reg, name in enumerate(_ARITH)})

# D9: loads/stores of m32fp, environment and control word; constants and
# transcendental functions.
_rows(0xD9, {
    0: "fld Md",      # 1: blank
    2: "fst Md",      3: "fstp Md",
    4: "fldenv M",    5: "fldcw Mw",    6: "fnstenv M",   7: "fnstcw Mw",
    8 + 0: "fld STi", 8 + 1: "fxch STi",
    0xD0: "fnop",     # D1-D7 blank
    8 + 3: "fstpnce STi",                                 # undocumented FSTP1
    0xE0: "fchs",     0xE1: "fabs",                       # E2, E3 blank
    0xE4: "ftst",     0xE5: "fxam",                       # E6, E7 blank
    0xE8: "fld1",     0xE9: "fldl2t",   0xEA: "fldl2e",   0xEB: "fldpi",
    0xEC: "fldlg2",   0xED: "fldln2",   0xEE: "fldz",     # EF blank
    0xF0: "f2xm1",    0xF1: "fyl2x",    0xF2: "fptan",    0xF3: "fpatan",
    0xF4: "fxtract",  0xF5: "fprem1",   0xF6: "fdecstp",  0xF7: "fincstp",
    0xF8: "fprem",    0xF9: "fyl2xp1",  0xFA: "fsqrt",    0xFB: "fsincos",
    0xFC: "frndint",  0xFD: "fscale",   0xFE: "fsin",     0xFF: "fcos",
})

# DA: m32int arithmetic; FCMOVcc; FUCOMPP.
_rows(0xDA, {reg: f"fi{name[1:]} Md" for reg, name in enumerate(_ARITH)})
_rows(0xDA, {
    8 + 0: "fcmovb ST,STi", 8 + 1: "fcmove ST,STi",
    8 + 2: "fcmovbe ST,STi", 8 + 3: "fcmovu ST,STi",
    0xE9: "fucompp",  # rest of DA E0-FF blank
})

# DB: m32int loads/stores, m80fp; FCMOVNcc; control; FUCOMI/FCOMI.
_rows(0xDB, {
    0: "fild Md",     1: "fisttp Md",   2: "fist Md",     3: "fistp Md",
    # 4: blank
    5: "fld Mt",      # 6: blank
    7: "fstp Mt",
    8 + 0: "fcmovnb ST,STi", 8 + 1: "fcmovne ST,STi",
    8 + 2: "fcmovnbe ST,STi", 8 + 3: "fcmovnu ST,STi",
    0xE0: "fneni",    0xE1: "fndisi",   0xE2: "fnclex",   0xE3: "fninit",
    0xE4: "fnsetpm",  # E5-E7 blank
    8 + 5: "fucomi ST,STi", 8 + 6: "fcomi ST,STi",        # F8-FF blank
})

# DC: m64fp arithmetic; ST(i) op ST(0) (note SUB/SUBR and DIV/DIVR swap).
_rows(0xDC, {reg: f"{name} Mq" for reg, name in enumerate(_ARITH)})
_rows(0xDC, {
    8 + 0: "fadd STi,ST",  8 + 1: "fmul STi,ST",
    8 + 2: "fcom STi",     8 + 3: "fcomp STi",            # undocumented FCOM2, FCOMP3
    8 + 4: "fsubr STi,ST", 8 + 5: "fsub STi,ST",
    8 + 6: "fdivr STi,ST", 8 + 7: "fdiv STi,ST",
})

# DD: m64fp and m64int loads/stores, state save/restore, status word;
# FFREE, FST/FSTP/FUCOM/FUCOMP ST(i).
_rows(0xDD, {
    0: "fld Mq",      1: "fisttp Mq",   2: "fst Mq",      3: "fstp Mq",
    4: "frstor M",    # 5: blank
    6: "fnsave M",    7: "fnstsw Mw",
    8 + 0: "ffree STi", 8 + 1: "fxch STi",                # undocumented FXCH4
    8 + 2: "fst STi",   8 + 3: "fstp STi",
    8 + 4: "fucom STi", 8 + 5: "fucomp STi",              # E0-FF rows 6, 7 blank
})

# DE: m16int arithmetic; arithmetic-and-pop ST(i) op ST(0); FCOMPP.
_rows(0xDE, {reg: f"fi{name[1:]} Mw" for reg, name in enumerate(_ARITH)})
_rows(0xDE, {
    8 + 0: "faddp STi,ST",  8 + 1: "fmulp STi,ST",
    8 + 2: "fcomp STi",                                   # undocumented FCOMP5
    0xD9: "fcompp",         # rest of DE D8-DF blank
    8 + 4: "fsubrp STi,ST", 8 + 5: "fsubp STi,ST",
    8 + 6: "fdivrp STi,ST", 8 + 7: "fdivp STi,ST",
})

# DF: m16int and m64int loads/stores, BCD; FNSTSW AX; FUCOMIP/FCOMIP.
_rows(0xDF, {
    0: "fild Mw",     1: "fisttp Mw",   2: "fist Mw",     3: "fistp Mw",
    4: "fbld Mt",     5: "fild Mq",     6: "fbstp Mt",    7: "fistp Mq",
    8 + 0: "ffreep STi",                                  # FFREEP (undocumented on 387)
    8 + 1: "fxch STi",                                    # undocumented FXCH7
    8 + 2: "fstp STi",  8 + 3: "fstp STi",                # undocumented FSTP8, FSTP9
    0xE0: "fnstsw AX",  # E1-E7 blank
    8 + 5: "fucomip ST,STi", 8 + 6: "fcomip ST,STi",      # F8-FF blank
})

del _rows

# Register-form rows objdump does not know (it prints "(bad)"), keyed by
# (opcode, ModRM.reg); the disassembler uses this to print what objdump prints.
OBJDUMP_UNKNOWN_ROWS = frozenset({
    (0xD9, 3), (0xDC, 2), (0xDC, 3), (0xDD, 1), (0xDE, 2),
    (0xDF, 1), (0xDF, 2), (0xDF, 3),
})
