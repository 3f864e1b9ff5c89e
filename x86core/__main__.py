"""Command line of the x86core machine.

    python -m x86core disasm FILE [--base ADDR] [--16]   objdump-style listing of a flat file
    python -m x86core disasm --hex "cd 80"                the same for bytes given in hex
    python -m x86core asm "mov eax, 1; int 0x80"          assemble Intel syntax, print hex
    python -m x86core run PROG [ARGS...]                  a static i386 ELF on the bare CPU
    python -m x86core demo                                the bundled demo program, explained
    python -m x86core boot IMAGE --rom [--post]           a firmware image from the reset vector

Errors (a malformed ELF, an unreadable file, bad assembly) are one line on
stderr and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "samples" / "demo"


def _int(text: str) -> int:
    return int(text, 0)


def cmd_disasm(args) -> int:
    from .disasm import format_listing
    if args.hex is not None:
        try:
            code = bytes.fromhex(args.hex.replace(",", " "))
        except ValueError as e:
            return _fail(f"--hex: {e}")
    elif args.file:
        try:
            code = Path(args.file).read_bytes()
        except OSError as e:
            return _fail(f"{args.file}: {e.strerror}")
    else:
        return _fail("disasm needs FILE or --hex BYTES")
    listing = format_listing(code, base=args.base, bits=16 if args.sixteen else 32)
    sys.stdout.write(listing if listing.endswith("\n") or not listing else listing + "\n")
    return 0


def cmd_asm(args) -> int:
    from .asm import AsmError, asm
    try:
        code = asm(args.text.replace("\\n", "\n"), base=args.base, bits=16 if args.sixteen else 32)
    except AsmError as e:
        return _fail(f"asm: {e}")
    print(code.hex(" "))
    return 0


def _process(args, path: str, argv: list[str]):
    from .elf import ELFError
    from .linux import Process
    try:
        if args.base is not None:
            return _flat_process(path, argv, args.base, not args.no_cache)
        return Process(path, argv, _environment(args), cache=not args.no_cache)
    except OSError as e:
        raise SystemExit(_fail(f"{path}: {e.strerror or e}"))
    except ELFError as e:
        if args.base is not None:     # a flat binary: its load address, not its format
            raise SystemExit(_fail(f"{path}: cannot load at --base {args.base:#x}: {e}"))
        raise SystemExit(_fail(f"{path}: malformed ELF: {e}"))


def _environment(args) -> list[str]:
    return [e for e in args.env] if args.env else []


def _flat_process(path, argv, base, cache):
    """A flat binary loaded at --base and entered there, with the same stack
    and system calls as an ELF program."""
    from .elf import PF_R, PF_W, PF_X, PT_LOAD, ELFImage, Segment
    from .linux import Process
    data = Path(path).read_bytes()
    seg = Segment(PT_LOAD, 0, base, len(data), len(data) + 0x10000, PF_R | PF_W | PF_X, 4096)
    return Process(path, argv, [], cache=cache, image=ELFImage(base, 0, 32, 0, (seg,), data))


def cmd_run(args) -> int:
    proc = _process(args, args.prog, [args.argv0 or args.prog] + args.args)
    if args.trace:
        from .disasm import format_instruction
        def trace(cpu, insn):
            print(f"{cpu.eip:08x}: {format_instruction(insn, cpu.eip)}", file=sys.stderr)
        proc.cpu.trace = trace
    start = time.perf_counter()
    status = proc.run(args.max_instructions)
    elapsed = time.perf_counter() - start
    if proc.reason and not proc.reason.startswith("exit("):
        print(f"x86core: {proc.reason}", file=sys.stderr)
    if args.stats:
        cpu = proc.cpu
        print(f"x86core: {cpu.icount} instructions in {elapsed:.3f} s = "
              f"{cpu.icount / elapsed / 1e6:.2f} MIPS; {cpu.blocks.threaded_blocks} blocks as "
              f"threaded code, {cpu.blocks.compiled} compiled ({cpu.blocks.regions} of them hot "
              f"regions); {proc.syscalls} system calls",
              file=sys.stderr)
    return status


def cmd_demo(args) -> int:
    from .disasm import disassemble
    from .elf import parse_elf
    from .linux import Process
    print("x86core demo: a static i386 Linux program (tests/programs/demo.c, built with\n"
          "gcc -m32 -ffreestanding -nostdlib -static) runs on the pure-Python i386 CPU:\n"
          "flat protected mode, ring 3, int 0x80 system calls, the block cache on.\n")
    image = parse_elf(SAMPLE.read_bytes())
    seg = next(s for s in image.loads if s.vaddr <= image.entry < s.vaddr + s.memsz)
    code = image.segment_bytes(seg)[image.entry - seg.vaddr:][:24]
    print("Its first instructions, from the decoder and disassembler:")
    for addr, raw, text in list(disassemble(code, base=image.entry))[:6]:
        print(f"  {addr:8x}:  {raw.hex(' '):<20s} {text}")
    print("\nIts output:")
    sys.stdout.flush()
    proc = Process(str(SAMPLE), ["demo"], [])
    start = time.perf_counter()
    status = proc.run()
    elapsed = time.perf_counter() - start
    cpu = proc.cpu
    print(f"\nexit status {status}; {cpu.icount:,} instructions in {elapsed:.2f} s "
          f"({cpu.icount / elapsed / 1e6:.2f} MIPS), {cpu.blocks.threaded_blocks} blocks as "
          f"threaded code, {cpu.blocks.compiled} compiled, "
          f"{proc.syscalls} system calls.")
    return status


def cmd_boot(args) -> int:
    from .boot import EXIT_STATUS, BootError, Machine, event_printer, trace_hooks
    try:
        data = Path(args.image).read_bytes()
    except OSError as e:
        return _fail(f"{args.image}: {e.strerror or e}")
    if args.memory <= 0 or args.memory > 3072:
        return _fail(f"--memory: {args.memory} MiB is not between 1 and 3072")
    machine = Machine(args.memory << 20, post=args.post)
    try:
        if args.rom:
            machine.load_rom(data)
        else:
            machine.load_boot_sector(data)
    except BootError as e:
        return _fail(f"{args.image}: {e}")
    printer = None
    if args.trace_events:
        hooks = trace_hooks()
        if hooks is None:
            print("x86core: --trace-events: this build's interrupt layer has no trace hooks",
                  file=sys.stderr)
        else:
            printer = event_printer()
            hooks.append(printer)
    if args.trace:
        from .disasm import format_instruction
        def trace(cpu, insn):
            print(f"{cpu.seg_sel[1]:04x}:{cpu.eip:08x}: {format_instruction(insn, cpu.eip)}",
                  file=sys.stderr)
        machine.cpu.trace = trace
    try:
        result = machine.run(args.max_instructions)
    finally:
        if printer is not None:
            hooks.remove(printer)
    sys.stdout.flush()
    print(f"x86core: {machine.describe()}", file=sys.stderr)
    return EXIT_STATUS.get(result, 1)


def _fail(message: str) -> int:
    print(f"x86core: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x86core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("disasm", help="disassemble a flat binary or hex bytes")
    p.add_argument("file", nargs="?")
    p.add_argument("--hex")
    p.add_argument("--base", type=_int, default=0)
    p.add_argument("--16", dest="sixteen", action="store_true", help="16-bit code")
    p.set_defaults(fn=cmd_disasm)
    p = sub.add_parser("asm", help="assemble Intel-syntax text (';' separates lines)")
    p.add_argument("text")
    p.add_argument("--base", type=_int, default=0)
    p.add_argument("--16", dest="sixteen", action="store_true")
    p.set_defaults(fn=cmd_asm)
    p = sub.add_parser("run", help="run a static i386 ELF (or flat binary) on the bare CPU")
    p.add_argument("prog")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.add_argument("--base", type=_int, default=None, help="load a flat binary here and enter it")
    p.add_argument("--trace", action="store_true", help="print each instruction executed (stderr)")
    p.add_argument("--no-cache", action="store_true", help="turn the block cache off")
    p.add_argument("--stats", action="store_true", help="instructions, MIPS, blocks (stderr)")
    p.add_argument("--env", action="append", help="KEY=VALUE for the program's environment")
    p.add_argument("--argv0", help="the program's argv[0] (default: PROG as given)")
    p.add_argument("--max-instructions", type=int, default=None)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("boot", help="boot a bare-metal image from the reset vector",
                       description="Reset the CPU (real mode, F000:FFF0) and run IMAGE until HLT, "
                       "a triple fault or an unhandled exception.  Bytes written to port 0xE9 "
                       "go to stdout.  Exit status: 0 halt, 3 instruction limit, 1 otherwise.")
    p.add_argument("image")
    p.add_argument("--rom", action="store_true",
                   help="IMAGE is a 64/128 KiB firmware ROM, mapped below 1 MiB and below 4 GiB "
                   "(without it: a raw image loaded and entered at 0000:7C00)")
    p.add_argument("--post", action="store_true", help="print POST codes (ports 0x80, 0x190) on stderr")
    p.add_argument("--max-instructions", type=int, default=None)
    p.add_argument("--memory", type=int, default=16, help="RAM in MiB (default 16)")
    p.add_argument("--trace-events", action="store_true",
                   help="print every exception, gate and privilege change (stderr)")
    p.add_argument("--trace", action="store_true", help="print each instruction executed (stderr)")
    p.set_defaults(fn=cmd_boot)
    p = sub.add_parser("demo", help="run the bundled demo program")
    p.set_defaults(fn=cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:         # a bug of ours, not of the program being run
        if os.environ.get("X86CORE_DEBUG"):
            raise
        print(f"x86core: internal error: {type(e).__name__}: {e} "
              f"(set X86CORE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
