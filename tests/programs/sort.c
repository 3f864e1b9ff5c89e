/*
 * sort.c - sort 3000 pseudo-random signed ints (LCG) with quicksort,
 * bottom-up merge sort and heapsort; verify each result is sorted and all
 * three agree, and print order statistics and checksums.
 * Exit status: 0 if all checks passed, 1 otherwise.
 */
#include "tinylibc.h"

#define N 3000

static int orig[N], qa[N], ma[N], ha[N], tmp[N];
static u32 lcg_state = 20240601u;

static u32 lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

static void insertion_sort(int *a, int lo, int hi)
{
    int i, j, v;
    for (i = lo + 1; i <= hi; i++) {
        v = a[i];
        for (j = i - 1; j >= lo && a[j] > v; j--)
            a[j + 1] = a[j];
        a[j + 1] = v;
    }
}

static void swap(int *a, int i, int j)
{
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* recursive quicksort, median of three, insertion sort for small ranges */
static void quicksort(int *a, int lo, int hi)
{
    while (hi - lo > 12) {
        int mid = lo + (hi - lo) / 2, pivot, i, j;
        if (a[mid] < a[lo])
            swap(a, mid, lo);
        if (a[hi] < a[lo])
            swap(a, hi, lo);
        if (a[hi] < a[mid])
            swap(a, hi, mid);
        pivot = a[mid];
        i = lo;
        j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                swap(a, i, j);
                i++;
                j--;
            }
        }
        /* recurse on smaller half, loop on larger */
        if (j - lo < hi - i) {
            quicksort(a, lo, j);
            lo = i;
        } else {
            quicksort(a, i, hi);
            hi = j;
        }
    }
    insertion_sort(a, lo, hi);
}

static void merge_sort(int *a, int n)
{
    int width, lo, i, j, k, mid, hi;
    int *src = a, *dst = tmp, *t;
    for (width = 1; width < n; width *= 2) {
        for (lo = 0; lo < n; lo += 2 * width) {
            mid = lo + width < n ? lo + width : n;
            hi = lo + 2 * width < n ? lo + 2 * width : n;
            i = lo;
            j = mid;
            k = lo;
            while (i < mid && j < hi)
                dst[k++] = src[i] <= src[j] ? src[i++] : src[j++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, (size_t)n * sizeof(int));
}

static void sift_down(int *a, int root, int n)
{
    int child, v = a[root];
    while ((child = 2 * root + 1) < n) {
        if (child + 1 < n && a[child + 1] > a[child])
            child++;
        if (a[child] <= v)
            break;
        a[root] = a[child];
        root = child;
    }
    a[root] = v;
}

static void heapsort(int *a, int n)
{
    int i;
    for (i = n / 2 - 1; i >= 0; i--)
        sift_down(a, i, n);
    for (i = n - 1; i > 0; i--) {
        swap(a, 0, i);
        sift_down(a, 0, i);
    }
}

static int is_sorted(const int *a, int n)
{
    int i;
    for (i = 1; i < n; i++)
        if (a[i - 1] > a[i])
            return 0;
    return 1;
}

static u32 checksum(const int *a, int n)
{
    u32 h = 2166136261u;
    int i;
    for (i = 0; i < n; i++) {
        h ^= (u32)a[i];
        h *= 16777619u;
    }
    return h;
}

int main(void)
{
    int i, fail = 0, negs = 0;
    s64 sum = 0;

    for (i = 0; i < N; i++) {
        /* mix of large-magnitude signed values and small duplicates */
        u32 r = lcg();
        orig[i] = (i % 5 == 0) ? (int)(r >> 28) - 8 : (int)r;
        negs += orig[i] < 0;
        sum += orig[i];
    }
    print_kv_uint("n", N);
    print_kv_uint("negatives", (u32)negs);
    print_str("sum ");
    print_i64(sum);
    print_nl();
    print_kv_hex("unsorted checksum", checksum(orig, N));

    memcpy(qa, orig, sizeof(orig));
    memcpy(ma, orig, sizeof(orig));
    memcpy(ha, orig, sizeof(orig));

    quicksort(qa, 0, N - 1);
    merge_sort(ma, N);
    heapsort(ha, N);

    print_kv_uint("quicksort sorted", (u32)is_sorted(qa, N));
    print_kv_uint("mergesort sorted", (u32)is_sorted(ma, N));
    print_kv_uint("heapsort sorted", (u32)is_sorted(ha, N));
    fail |= !is_sorted(qa, N) || !is_sorted(ma, N) || !is_sorted(ha, N);
    i = memcmp(qa, ma, sizeof(qa)) == 0 && memcmp(qa, ha, sizeof(qa)) == 0;
    print_kv_uint("all equal", (u32)i);
    fail |= !i;

    print_kv_int("min", qa[0]);
    print_kv_int("max", qa[N - 1]);
    print_kv_int("median", qa[N / 2]);
    print_kv_int("q1", qa[N / 4]);
    print_kv_int("q3", qa[3 * N / 4]);
    print_kv_hex("sorted checksum", checksum(qa, N));
    print_str("first:");
    for (i = 0; i < 5; i++) {
        print_char(' ');
        print_int(qa[i]);
    }
    print_nl();
    print_str("around zero:");
    for (i = 0; i < N && qa[i] < -8; i++)
        ;
    for (; i < N && qa[i] <= 7; i += 50) {
        print_char(' ');
        print_int(qa[i]);
    }
    print_nl();
    print_kv_uint("result", (u32)fail);
    return fail;
}
