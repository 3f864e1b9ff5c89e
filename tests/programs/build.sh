#!/usr/bin/env bash
# Build the freestanding i386 test programs and record their native results.
#
#   bash tests/programs/build.sh        (from anywhere; paths are resolved
#                                        relative to this script)
#
# For every program listed in programs.txt this
#   1. compiles NAME.c + tinylibc.c + start.S into bin/NAME (static ELF32,
#      no libc, no libgcc: tinylibc provides the libgcc helpers);
#   2. checks the binary is < 32 KiB and that its code contains no
#      sysenter/syscall, no x87/MMX/SSE and no post-i686 instructions;
#   3. runs it natively twice exactly as described in programs.txt, checks
#      that both runs agree, and writes expected/NAME.out (stdout) and
#      expected/NAME.status (exit status).
# Environment overrides: CC (default gcc), OBJDUMP (default objdump),
# PYTHON (default python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

CC="${CC:-gcc}"
OBJDUMP="${OBJDUMP:-objdump}"
PYTHON="${PYTHON:-python3}"
MAX_SIZE=32768

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

CFLAGS=(-m32 -march=i686 -O2 -std=gnu99 -Wall -Wextra -Werror
    -ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector
    -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
    -mgeneral-regs-only -fno-tree-loop-distribute-patterns
    -ffunction-sections -fdata-sections -fno-ident)
LDFLAGS=(-m32 -static -nostdlib -no-pie -Wl,--build-id=none
    -Wl,--gc-sections -Wl,-z,noseparate-code -Wl,-z,norelro)

command -v "$CC" >/dev/null 2>&1 || die "compiler '$CC' not found"
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (needed to run the programs)"
command -v "$OBJDUMP" >/dev/null 2>&1 || die "'$OBJDUMP' not found (needed for the instruction check)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- make sure "$CC -m32" can build and run a freestanding static binary ---
cat >"$TMP/probe.c" <<'PROBE'
void _start(void)
{
    __asm__ volatile("int $0x80" : : "a"(1), "b"(42));
    for (;;)
        ;
}
PROBE
if ! "$CC" "${CFLAGS[@]}" -c "$TMP/probe.c" -o "$TMP/probe.o" 2>"$TMP/probe.err" ||
   ! "$CC" "${LDFLAGS[@]}" "$TMP/probe.o" -o "$TMP/probe" 2>>"$TMP/probe.err"; then
    cat "$TMP/probe.err" >&2
    die "'$CC -m32' cannot build static freestanding i386 binaries (is 32-bit gcc/binutils support installed?)"
fi
set +e
"$TMP/probe"
rc=$?
set -e
[ "$rc" -eq 42 ] || die "cannot run i386 binaries natively (probe exited with $rc, expected 42; is IA32 emulation enabled in the kernel?)"

# --- program list from programs.txt ---
PROGS=()
while IFS=$'\t' read -r name _rest; do
    case "$name" in '' | '#'*) continue ;; esac
    PROGS+=("$name")
done <programs.txt
[ "${#PROGS[@]}" -gt 0 ] || die "no programs listed in programs.txt"

mkdir -p bin expected

# --- compile ---
"$CC" "${CFLAGS[@]}" -c start.S -o "$TMP/start.o"
"$CC" "${CFLAGS[@]}" -c tinylibc.c -o "$TMP/tinylibc.o"
for p in "${PROGS[@]}"; do
    [ -f "$p.c" ] || die "$p.c not found"
    "$CC" "${CFLAGS[@]}" -c "$p.c" -o "$TMP/$p.o"
    "$CC" "${LDFLAGS[@]}" -o "bin/$p" "$TMP/start.o" "$TMP/$p.o" "$TMP/tinylibc.o"
done

# --- static checks: size and forbidden instructions ---
# x87 mnemonics all start with "f"; SSE/MMX show up as register names.
FORBIDDEN='^(sysenter|sysexit|syscall|sysret|rdtscp?|rdrand|rdseed|cpuid|emms|ldmxcsr|stmxcsr|popcnt|lzcnt|tzcnt|movbe|andn|bextr|blsi|blsr|blsmsk|bzhi|pdep|pext|sarx|shlx|shrx|rorx|mulx|adcx|adox|f[a-z0-9]*)$'
for p in "${PROGS[@]}"; do
    size=$(stat -c %s "bin/$p")
    [ "$size" -lt "$MAX_SIZE" ] || die "bin/$p is $size bytes (limit $MAX_SIZE)"
    "$OBJDUMP" -d --no-show-raw-insn -M att "bin/$p" >"$TMP/$p.dis"
    # instruction lines look like "  8049000:\tmnemonic operands"
    bad=$(awk -F'\t' -v re="$FORBIDDEN" '
        /^ *[0-9a-f]+:\t/ {
            n = split($2, w, " ")
            m = w[1]
            if (m ~ /^(rep|repz|repnz|repe|repne|lock|data16|addr16|cs|ds|es|fs|gs|ss)$/ && n > 1) m = w[2]
            if (m ~ re || $2 ~ /%(xmm|ymm|zmm|mm[0-7]|st)/ || $2 ~ /\(bad\)/) print
        }' "$TMP/$p.dis")
    if [ -n "$bad" ]; then
        echo "$bad" >&2
        die "bin/$p contains forbidden instructions (see above)"
    fi
done

# --- run natively (twice), record expected results ---
"$PYTHON" - "${PROGS[@]}" <<'PYEOF'
import os, subprocess, sys

def parse(path):
    table = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                sys.exit("programs.txt: malformed line: %r" % line)
            name, env, argv = fields[0], fields[1], fields[2:]
            envd = {}
            if env != "-":
                for kv in env.split(" "):
                    k, sep, v = kv.partition("=")
                    if not sep:
                        sys.exit("programs.txt: bad env entry %r" % kv)
                    envd[k] = v
            table[name] = (envd, argv)
    return table

table = parse("programs.txt")
fmt = "%-10s %7s %7s %6s"
print(fmt % ("program", "size", "outlen", "status"))
for name in sys.argv[1:]:
    env, argv = table[name]
    exe = os.path.abspath(os.path.join("bin", name))
    runs = []
    for _ in range(2):
        r = subprocess.run(argv, executable=exe, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, timeout=20)
        if r.returncode < 0:
            sys.exit("build.sh: error: %s killed by signal %d" % (name, -r.returncode))
        runs.append((r.stdout, r.returncode))
    if runs[0] != runs[1]:
        sys.exit("build.sh: error: %s is not deterministic" % name)
    out, status = runs[0]
    with open(os.path.join("expected", name + ".out"), "wb") as f:
        f.write(out)
    with open(os.path.join("expected", name + ".status"), "w") as f:
        f.write("%d\n" % status)
    print(fmt % (name, os.path.getsize(exe), len(out), status))
PYEOF
echo "build.sh: built ${#PROGS[@]} programs into $HERE/bin, expected results in $HERE/expected"
