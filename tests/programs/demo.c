/* The bundled demo: a static i386 program that says what it is doing.
   Runs natively, on the bare x86core CPU, and as an lguest Guest process. */
#include "tinylibc.h"

static unsigned collatz_steps(unsigned n)
{
    unsigned steps = 0;
    while (n != 1) {
        n = (n & 1) ? 3 * n + 1 : n / 2;
        steps++;
    }
    return steps;
}

int main(int argc, char **argv, char **envp)
{
    unsigned best = 0, best_n = 0;
    (void)envp;
    print_str("Hello from a static i386 program.\n");
    print_str("It is computing the longest Collatz chain below 3000.\n");
    for (unsigned n = 1; n < 3000; n++) {
        unsigned s = collatz_steps(n);
        if (s > best) {
            best = s;
            best_n = n;
        }
    }
    print_str("longest chain: n = ");
    print_uint(best_n);
    print_str(", ");
    print_uint(best);
    print_str(" steps\n");
    print_str("argc = ");
    print_uint((unsigned)argc);
    print_str(", argv[0] = ");
    print_str(argv[0]);
    print_str("\n");
    return 0;
}
