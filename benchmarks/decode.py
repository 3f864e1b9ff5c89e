"""Decoder throughput: instructions decoded per second on real gcc -m32 code.

    python -m benchmarks.decode [--quick] [--binary ELF] [--repeat N] [--profile]

The corpus is the executable sections of an ELF32 file: the one given with
--binary, or else an object built here from a generated C file (deterministic:
a fixed seed, so the same compiler gives the same bytes) with
`gcc -m32 -march=i686 -O2 -c`.  Each pass sweep-decodes every executable
section from its start: an instruction advances by its length, an undefined
encoding (data, padding) by one byte, as a disassembler's linear sweep does.
The figure is instructions per second over the passes (median, with the
spread); the result also goes to benchmarks/results/decode.json.

`run(quick)` returns the same dict, for the `python -m benchmarks` runner
(`tiny=True`: the smallest run, for the test suite).  The environment variable
BENCHMARKS_RESULTS_DIR redirects the JSON, as for the other benchmarks.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from x86core.decoder import decode
from x86core.instruction import Instruction, Undefined

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "decode.json"
SEED = 1
FUNCTIONS = 1600            # generated C functions (about 230 KiB of .text)
QUICK_FUNCTIONS = 200
TINY_FUNCTIONS = 20
CFLAGS = ["-m32", "-march=i686", "-O2", "-fno-pic", "-fno-pie", "-fno-stack-protector",
          "-fno-asynchronous-unwind-tables", "-fcf-protection=none", "-w"]


# ---------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------

_PRELUDE = """\
typedef unsigned int u32; typedef unsigned long long u64; typedef unsigned char u8;
struct node { struct node *next; int key; short tag; u8 flags; char name[13]; };
struct big { int a[24]; u64 q; };
extern int ext_call(int, int);
extern void *ext_ptr(void *);
extern int (*handlers[16])(int);
extern volatile int sink;
"""

# Function bodies in the shapes gcc turns into the common instruction mix:
# loops over arrays, switch jump tables, pointer chasing, 64-bit arithmetic,
# division, bit twiddling, string loops, struct copies, calls through tables
# and a little floating point (x87 under -m32).
_TEMPLATES = [
    """int f{n}(const int *a, int n) {{ int s = {k}; for (int i = 0; i < n; i += {s}) s += a[i] * {m};
        return s; }}""",
    """int f{n}(int x) {{ switch (x & 15) {{ case 0: return x + {k}; case 1: return x * {m};
        case 2: return x - {s}; case 3: return x ^ {k}; case 4: return x << 3; case 5: return -x;
        case 6: return x / {m}; case 7: return x % {s}; case 9: return ext_call(x, {k});
        default: return {m}; }} }}""",
    """int f{n}(struct node *p, int key) {{ int depth = 0; while (p && p->key != key) {{
        if (p->flags & {s}) p->tag += {k}; p = p->next; depth++; }} return p ? depth : -{m}; }}""",
    """u64 f{n}(u64 a, u64 b, int sh) {{ u64 r = a * b + {k}ULL; r ^= r >> (sh & 31);
        r += (a << {s}) | (b >> {m}); return r / (b | 1); }}""",
    """unsigned f{n}(unsigned x, unsigned y) {{ unsigned q = x / (y | 1), r = x % (y | 3);
        int sx = (int)x / {m}; return q * {k} + r + (unsigned)sx + (x > y ? x : y); }}""",
    """int f{n}(unsigned v) {{ int c = 0; while (v) {{ c += v & 1; v >>= 1; }}
        return c + ((v << {s}) | (v >> (32 - {s}))) + (int)__builtin_bswap32(v + {k}); }}""",
    """int f{n}(const char *s, const char *t) {{ while (*s && *s == *t) {{ s++; t++; }}
        return (u8)*s - (u8)*t + {k}; }}""",
    """void f{n}(struct big *d, const struct big *s, int i) {{ *d = *s; d->a[i & 15] += {k};
        d->q = s->q * {m} + (u64)i; }}""",
    """int f{n}(int x, int y) {{ int t = handlers[x & 15](y + {k}); if (t < {m}) t = {m};
        if (y > t) t = y; return t + ext_call(t, x); }}""",
    """double f{n}(const double *v, int n, double k) {{ double s = {k}.5; for (int i = 0; i < n; i++)
        s = s * k + v[i] / {m}.0; return s > 1e9 ? 1e9 : s; }}""",
    """int f{n}(int n) {{ if (n < {s}) return n; return f{n}(n - 1) + f{n}(n - {s}) * {m}; }}""",
    """void f{n}(u8 *dst, const u8 *src, int n) {{ for (int i = 0; i < n; i++)
        dst[i] = (u8)(src[i] * {m} + {k}) ^ (u8)(i >> 2); sink = n; }}""",
    """long long f{n}(long long a, int b) {{ long long r = a; for (int i = 0; i < (b & 7); i++)
        r = r * {m} - (r >> {s}); return r % {k}; }}""",
    """int f{n}(int *a, int n) {{ for (int i = 1; i < n; i++) {{ int v = a[i], j = i - 1;
        while (j >= 0 && a[j] > v) {{ a[j + 1] = a[j]; j--; }} a[j + 1] = v; }} return a[n / {s}]; }}""",
    """void *f{n}(struct node **head, int key) {{ struct node *n = ext_ptr(0); n->key = key;
        n->tag = (short)(key * {m}); n->next = *head; *head = n; return ext_ptr(n); }}""",
    """int f{n}(short a, signed char b, unsigned short c) {{ int r = a * b + c;
        r = r > {k} ? r - {k} : r + {s}; return (r & 0xff00) | (u8)(r >> {m}); }}""",
]


def generate_c(functions: int, seed: int = SEED) -> str:
    rng = random.Random(seed)
    parts = [_PRELUDE]
    for n in range(functions):
        template = _TEMPLATES[n % len(_TEMPLATES)]
        parts.append(template.format(n=n, k=rng.randrange(1, 1000), m=rng.randrange(2, 97),
                                     s=rng.randrange(1, 9)))
    return "\n".join(parts) + "\n"


def executable_sections(elf: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every SHF_EXECINSTR section of an ELF32 file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1:
        raise ValueError("not an ELF32 file")
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = elf[strtab[4]:strtab[4] + strtab[5]]
    sections = []
    for name_off, sh_type, flags, _addr, offset, size, *_ in headers:
        if flags & 0x4 and sh_type == 1 and size:      # SHF_EXECINSTR, SHT_PROGBITS
            name = names[name_off:names.index(b"\0", name_off)].decode()
            sections.append((name, elf[offset:offset + size]))
    return sections


def build_corpus(functions: int) -> tuple[list[tuple[str, bytes]], dict]:
    """Compile the generated C file; return its code sections and a description."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found: give an ELF32 file with --binary")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.c"
        source.write_text(generate_c(functions))
        obj = Path(tmp) / "corpus.o"
        subprocess.run([gcc, *CFLAGS, "-c", str(source), "-o", str(obj)], check=True)
        elf = obj.read_bytes()
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    return executable_sections(elf), {
        "source": f"generated C, {functions} functions, seed {SEED}",
        "compiler": version.splitlines()[0] if version else "gcc",
        "cflags": " ".join(CFLAGS),
    }


def load_corpus(binary: str | None, functions: int) -> tuple[list[tuple[str, bytes]], dict]:
    if binary:
        sections = executable_sections(Path(binary).read_bytes())
        info = {"source": str(binary)}
    else:
        sections, info = build_corpus(functions)
    text = b"".join(code for _, code in sections)
    info.update(sections=[name for name, _ in sections], bytes=len(text),
                sha256=hashlib.sha256(text).hexdigest()[:16])
    return sections, info


# ---------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------

def sweep(code: bytes) -> tuple[int, int]:
    """Linear-sweep decode of `code`: (instructions, undefined bytes skipped)."""
    pos, end = 0, len(code)
    count = skipped = 0
    while pos < end:
        result = decode(code, pos, 32)
        if type(result) is Instruction:
            pos += result.length
            count += 1
        elif type(result) is Undefined:
            pos += 1
            skipped += 1
        else:                           # NeedMore: the section ends mid-instruction
            break
    return count, skipped


def measure(sections, repeat: int) -> dict:
    sweep(sections[0][1][:4096])                        # warm up
    rates, times = [], []
    count = skipped = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = skipped = 0
        for _, code in sections:
            c, s = sweep(code)
            count += c
            skipped += s
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        rates.append(count / elapsed)
    median = statistics.median(rates)
    return {
        "instructions": count, "undefined_bytes_skipped": skipped, "repeat": repeat,
        "seconds": [round(t, 4) for t in times],
        "instr_per_s": [round(r) for r in rates],
        "median_instr_per_s": round(median),
        "min_instr_per_s": round(min(rates)), "max_instr_per_s": round(max(rates)),
        "spread_pct": round(100 * (max(rates) - min(rates)) / median, 1),
        "us_per_instr": round(1e6 / median, 2),
    }


def profile(sections, top: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _, code in sections:
        sweep(code)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def machine() -> dict:
    return {
        "machine": platform.machine(), "processor": platform.processor() or None,
        "system": f"{platform.system()} {platform.release()}", "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
    }


def results_path() -> Path:
    directory = os.environ.get("BENCHMARKS_RESULTS_DIR")
    return Path(directory) / "decode.json" if directory else RESULTS


def run(quick: bool = False, tiny: bool = False, binary: str | None = None,
        repeat: int | None = None) -> dict:
    mode = "tiny" if tiny else "quick" if quick else "full"
    functions = {"tiny": TINY_FUNCTIONS, "quick": QUICK_FUNCTIONS, "full": FUNCTIONS}[mode]
    sections, corpus = load_corpus(binary, functions)
    figures = measure(sections, repeat or {"tiny": 1, "quick": 3, "full": 5}[mode])
    result = {"benchmark": "decode", "mode": mode,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": machine(), "corpus": corpus, **figures}
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict) -> str:
    corpus = result["corpus"]
    rows = [
        ("corpus", f"{corpus['source']} ({corpus['bytes']} bytes, sections "
                   f"{', '.join(corpus['sections'])})"),
        ("instructions", f"{result['instructions']} (+{result['undefined_bytes_skipped']} "
                         "undefined bytes skipped)"),
        ("passes", " ".join(f"{r:,}" for r in result["instr_per_s"]) + " instr/s"),
        ("median", f"{result['median_instr_per_s']:,} instr/s "
                   f"({result['us_per_instr']} us/instr)"),
        ("spread", f"{result['min_instr_per_s']:,} .. {result['max_instr_per_s']:,} "
                   f"({result['spread_pct']}%)"),
        ("python", f"{result['host']['implementation']} {result['host']['python']} "
                   f"on {result['host']['machine']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, 3 passes")
    parser.add_argument("--tiny", action="store_true", help="smallest corpus, 1 pass")
    parser.add_argument("--binary", help="ELF32 file whose executable sections to decode")
    parser.add_argument("--repeat", type=int, help="passes (default 5)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one pass")
    args = parser.parse_args(argv)
    result = run(args.quick, args.tiny, args.binary, args.repeat)
    print(table(result))
    print(f"written to {results_path()}")
    if args.profile:
        functions = TINY_FUNCTIONS if args.tiny else QUICK_FUNCTIONS if args.quick else FUNCTIONS
        print(profile(load_corpus(args.binary, functions)[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
