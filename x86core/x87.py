"""The x87 escape opcodes D8-DF (Intel SDM Vol. 2 Appendix A.4).

The machine has no FPU (CPUID reports none, CR0.EM traps them), but the
decoder must still know each escape's length and name so that code that
merely contains x87 instructions decodes and disassembles correctly.

FORMS maps (opcode, reg) for memory forms (mod != 3) and (opcode, modrm) for
register forms; (opcode, 8 + reg) is a register form covering all eight
ST(i) of one ModRM.reg row.
"""

FORMS: dict[tuple[int, int], str] = {}
