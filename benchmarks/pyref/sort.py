"""Port of tests/programs/sort.c: 3000 LCG ints sorted with quicksort
(median of three + insertion sort), bottom-up merge sort and heapsort."""
from __future__ import annotations

from ._tinylibc import Out

N = 3000
M32 = 0xFFFFFFFF


def insertion_sort(a, lo, hi):
    for i in range(lo + 1, hi + 1):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


def swap(a, i, j):
    a[i], a[j] = a[j], a[i]


def quicksort(a, lo, hi):
    while hi - lo > 12:
        mid = lo + (hi - lo) // 2
        if a[mid] < a[lo]:
            swap(a, mid, lo)
        if a[hi] < a[lo]:
            swap(a, hi, lo)
        if a[hi] < a[mid]:
            swap(a, hi, mid)
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                swap(a, i, j)
                i += 1
                j -= 1
        # recurse on the smaller half, loop on the larger
        if j - lo < hi - i:
            quicksort(a, lo, j)
            lo = i
        else:
            quicksort(a, i, hi)
            hi = j
    insertion_sort(a, lo, hi)


def merge_sort(a, n):
    src, dst = a, [0] * n
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if src[i] <= src[j]:
                    dst[k] = src[i]
                    i += 1
                else:
                    dst[k] = src[j]
                    j += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        src, dst = dst, src
        width *= 2
    if src is not a:
        a[:n] = src[:n]


def sift_down(a, root, n):
    v = a[root]
    while True:
        child = 2 * root + 1
        if child >= n:
            break
        if child + 1 < n and a[child + 1] > a[child]:
            child += 1
        if a[child] <= v:
            break
        a[root] = a[child]
        root = child
    a[root] = v


def heapsort(a, n):
    for i in range(n // 2 - 1, -1, -1):
        sift_down(a, i, n)
    for i in range(n - 1, 0, -1):
        swap(a, 0, i)
        sift_down(a, 0, i)


def is_sorted(a, n):
    for i in range(1, n):
        if a[i - 1] > a[i]:
            return 0
    return 1


def checksum(a, n):
    h = 2166136261
    for i in range(n):
        h ^= a[i] & M32
        h = (h * 16777619) & M32
    return h


def main(argv=None) -> tuple[str, int]:
    out = Out()
    state = 20240601
    orig = [0] * N
    fail = negs = total = 0
    for i in range(N):
        state = (state * 1664525 + 1013904223) & M32
        r = state
        if i % 5 == 0:
            v = (r >> 28) - 8
        else:
            v = r - (1 << 32) if r & 0x80000000 else r
        orig[i] = v
        negs += v < 0
        total += v
    out.kv_uint("n", N)
    out.kv_uint("negatives", negs)
    out.str("sum ")
    out.i64(total)
    out.nl()
    out.kv_hex("unsorted checksum", checksum(orig, N))

    qa, ma, ha = orig[:], orig[:], orig[:]
    quicksort(qa, 0, N - 1)
    merge_sort(ma, N)
    heapsort(ha, N)

    out.kv_uint("quicksort sorted", is_sorted(qa, N))
    out.kv_uint("mergesort sorted", is_sorted(ma, N))
    out.kv_uint("heapsort sorted", is_sorted(ha, N))
    fail |= not is_sorted(qa, N) or not is_sorted(ma, N) or not is_sorted(ha, N)
    same = int(qa == ma and qa == ha)
    out.kv_uint("all equal", same)
    fail |= not same

    out.kv_int("min", qa[0])
    out.kv_int("max", qa[N - 1])
    out.kv_int("median", qa[N // 2])
    out.kv_int("q1", qa[N // 4])
    out.kv_int("q3", qa[3 * N // 4])
    out.kv_hex("sorted checksum", checksum(qa, N))
    out.str("first:")
    for i in range(5):
        out.char(" ")
        out.int(qa[i])
    out.nl()
    out.str("around zero:")
    i = 0
    while i < N and qa[i] < -8:
        i += 1
    while i < N and qa[i] <= 7:
        out.char(" ")
        out.int(qa[i])
        i += 50
    out.nl()
    out.kv_uint("result", int(fail))
    return out.text(), int(fail)
