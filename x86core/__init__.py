"""x86core: an i386 machine in Python (decoder, executor, protection, paging)."""
from .decoder import decode
from .instruction import Instruction, NeedMore, Operand, Undefined

__all__ = ["decode", "Instruction", "NeedMore", "Operand", "Undefined"]
