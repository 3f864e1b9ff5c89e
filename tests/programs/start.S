/*
 * start.S - minimal process entry point for the freestanding i386 test
 * programs.
 *
 * Initial stack laid out by the kernel (System V i386 ABI):
 *     (%esp)        argc
 *     4(%esp)       argv[0] ... argv[argc-1], NULL
 *     ...           envp[0] ... NULL
 *     ...           auxv (unused here)
 *
 * Calls  int main(int argc, char **argv, char **envp)  with a 16-byte
 * aligned stack, then tl_exit(status), which flushes buffered stdout and
 * performs exit (eax=1) via int $0x80.  No sysenter, no vDSO.
 */
        .text
        .globl  _start
        .type   _start, @function
_start:
        xorl    %ebp, %ebp              /* mark outermost frame */
        movl    (%esp), %eax            /* argc */
        leal    4(%esp), %ecx           /* argv */
        leal    8(%esp,%eax,4), %edx    /* envp = argv + argc + 1 */
        andl    $-16, %esp
        subl    $4, %esp                /* 4 + 3*4 = 16: aligned at call */
        pushl   %edx
        pushl   %ecx
        pushl   %eax
        call    main
        movl    %eax, (%esp)
        call    tl_exit                 /* does not return */
        /* paranoia: raw exit(127) if tl_exit ever returns */
        movl    $127, %ebx
        movl    $1, %eax
        int     $0x80
        hlt
        .size   _start, .-_start

        .section .note.GNU-stack,"",@progbits
