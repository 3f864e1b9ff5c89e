#!/usr/bin/env bash
# Build the Guest kernel's system-call probes (see sysprobe.c) the way
# ../build.sh builds the test programs: static, freestanding i386, with
# ../tinylibc.c and ../start.S.  Then record sysprobe's native output for
# `sysprobe all data.txt` in expected/ (run from "/", as the tests do).
#
#   bash tests/programs/guest/build.sh
#
# The binaries are checked in; the tests use them as they are and compare
# with a native run where the machine can run i386 code.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
CC="${CC:-gcc}"
CFLAGS=(-m32 -march=i686 -O2 -std=gnu99 -Wall -Wextra -Werror
    -ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector
    -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
    -mgeneral-regs-only -fno-tree-loop-distribute-patterns
    -ffunction-sections -fdata-sections -fno-ident -I..)
LDFLAGS=(-m32 -static -nostdlib -no-pie -Wl,--build-id=none
    -Wl,--gc-sections -Wl,-z,noseparate-code -Wl,-z,norelro)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p bin expected
"$CC" "${CFLAGS[@]}" -c ../start.S -o "$TMP/start.o"
"$CC" "${CFLAGS[@]}" -c ../tinylibc.c -o "$TMP/tinylibc.o"
for p in sysprobe; do
    "$CC" "${CFLAGS[@]}" -c "$p.c" -o "$TMP/$p.o"
    "$CC" "${LDFLAGS[@]}" -o "bin/$p" "$TMP/start.o" "$TMP/$p.o" "$TMP/tinylibc.o"
done

# stdout is a pipe, as in the tests (lseek on it is -ESPIPE).
set +e
(cd / && "$HERE/bin/sysprobe" all "$HERE/data.txt" </dev/null | cat >"$TMP/all.out"; exit "${PIPESTATUS[0]}")
status=$?
set -e
[ "$status" -eq 0 ] || { cat "$TMP/all.out" >&2; echo "build.sh: sysprobe all failed natively ($status)" >&2; exit 1; }
cp "$TMP/all.out" expected/sysprobe-all.out
echo "build.sh: built bin/sysprobe; expected/sysprobe-all.out recorded"
