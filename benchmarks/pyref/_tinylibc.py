"""The printing half of tests/programs/tinylibc.c, collecting text in a list."""
from __future__ import annotations

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


class Out:
    __slots__ = ("parts",)

    def __init__(self):
        self.parts: list[str] = []

    def text(self) -> str:
        return "".join(self.parts)

    # basic printers (values are taken modulo 2**32 / 2**64 like the C casts)
    def str(self, s: str) -> None:
        self.parts.append(s)

    def char(self, c: str) -> None:
        self.parts.append(c)

    def nl(self) -> None:
        self.parts.append("\n")

    def uint(self, v: int) -> None:
        self.parts.append(str(v & M32))

    def int(self, v: int) -> None:
        v &= M32
        self.parts.append(str(v - (1 << 32) if v & 0x80000000 else v))

    def hex(self, v: int) -> None:
        self.parts.append(format(v & M32, "x"))

    def hex32(self, v: int) -> None:
        self.parts.append(format(v & M32, "08x"))

    def hex8(self, v: int) -> None:
        self.parts.append(format(v & 0xFF, "02x"))

    def u64(self, v: int) -> None:
        self.parts.append(str(v & M64))

    def i64(self, v: int) -> None:
        v &= M64
        self.parts.append(str(v - (1 << 64) if v >> 63 else v))

    def hex64(self, v: int) -> None:
        self.parts.append(format(v & M64, "016x"))

    # "label value\n"
    def kv_uint(self, label: str, v: int) -> None:
        self.parts.append(f"{label} {v & M32}\n")

    def kv_int(self, label: str, v: int) -> None:
        self.str(label + " ")
        self.int(v)
        self.nl()

    def kv_hex(self, label: str, v: int) -> None:
        self.parts.append(f"{label} 0x{v & M32:08x}\n")

    def kv_str(self, label: str, s: str) -> None:
        self.parts.append(f"{label} {s}\n")
