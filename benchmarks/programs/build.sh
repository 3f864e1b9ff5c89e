#!/usr/bin/env bash
# Build the benchmarks' Guest user programs (static, freestanding i386).
#
#   bash benchmarks/programs/build.sh      (from anywhere)
#
# Each NAME.c here is compiled with tests/programs' start.S and tinylibc.c,
# with the same flags as tests/programs/build.sh, into bin/NAME (committed;
# the same toolchain gives the same bytes).  Then each is run natively once
# as a smoke test.  Environment overrides: CC (default gcc).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIBDIR="$(cd "$HERE/../../tests/programs" && pwd)"
cd "$HERE"
CC="${CC:-gcc}"

CFLAGS=(-m32 -march=i686 -O2 -std=gnu99 -Wall -Wextra -Werror
    -ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector
    -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
    -mgeneral-regs-only -fno-tree-loop-distribute-patterns
    -ffunction-sections -fdata-sections -fno-ident -I"$LIBDIR")
LDFLAGS=(-m32 -static -nostdlib -no-pie -Wl,--build-id=none
    -Wl,--gc-sections -Wl,-z,noseparate-code -Wl,-z,norelro)

command -v "$CC" >/dev/null 2>&1 || { echo "build.sh: '$CC' not found" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p bin
"$CC" "${CFLAGS[@]}" -c "$LIBDIR/start.S" -o "$TMP/start.o"
"$CC" "${CFLAGS[@]}" -c "$LIBDIR/tinylibc.c" -o "$TMP/tinylibc.o"
for src in *.c; do
    name="${src%.c}"
    "$CC" "${CFLAGS[@]}" -c "$src" -o "$TMP/$name.o"
    "$CC" "${LDFLAGS[@]}" -o "bin/$name" "$TMP/start.o" "$TMP/$name.o" "$TMP/tinylibc.o"
    echo "built bin/$name ($(stat -c %s "bin/$name") bytes)"
done
# Smoke test: natively, the benchmark system calls are -ENOSYS and harmless.
./bin/lgbench getpid 10 >/dev/null
./bin/lgbench touch 8 >/dev/null
echo "build.sh: native smoke test passed"
