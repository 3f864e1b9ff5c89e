/*
 * args.c - prints argc, every argv string and every envp string, one per
 * line, exercising the initial process stack built by the loader.
 * Exit status: argc.
 */
#include "tinylibc.h"

int main(int argc, char **argv, char **envp)
{
    int i;
    u32 total = 0;
    print_kv_int("argc", argc);
    for (i = 0; i < argc; i++) {
        print_str("argv[");
        print_int(i);
        print_str("] ");
        print_str(argv[i]);
        print_nl();
        total += (u32)strlen(argv[i]);
    }
    print_kv_uint("argv[argc] is NULL", argv[argc] == NULL);
    for (i = 0; envp[i]; i++) {
        print_str("envp[");
        print_int(i);
        print_str("] ");
        print_str(envp[i]);
        print_nl();
        total += (u32)strlen(envp[i]);
    }
    print_kv_int("envc", i);
    print_kv_uint("total string bytes", total);
    print_kv_uint("envp == argv + argc + 1", envp == argv + argc + 1);
    return argc;
}
