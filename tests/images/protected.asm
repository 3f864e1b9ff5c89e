# protected.asm: a bare-metal 64 KiB firmware image for x86core's `boot --rom`.
#
# From the reset vector (F000:FFF0, real mode) to ring 3 and back, printing
# each stage on the debug port 0xE9 and writing a POST code to port 0x80:
#
#   01  real mode          "real mode"       far jmp from the reset vector to F000:start16
#   02  protected mode     "protected mode"  LGDT, CR0.PE, far jmp to 32-bit code
#   03  paging             "paging"          page directory + one page table, CR0.PG
#   04  ring 3             (nothing)         IDT, TSS (ss0:esp0), LTR, IRET to CPL 3
#   05  system call        "syscall from ring 3"  int 0x80 through a DPL-3 trap gate
#   06  page fault         "page fault at 00300abc"  ring 3 writes to an unmapped page;
#                                            the #PF handler prints CR2 and halts (IF=0)
#
# The image is assembled at 0xF0000 (its low alias) by tests/images/build.py.
# Physical memory used (identity-mapped once paging is on):
#   0x00800 GDT (copied from the ROM, so LTR can mark the TSS busy)
#   0x01000 IDT, 256 gates           0x02000 TSS
#   0x08000-0x09000 kernel stack     0x10000 page directory, 0x11000 page table 0
#   0x70000 ring-3 stack page        0x300000 the unmapped page

ROM       = 0xF0000
GDT_RAM   = 0x800
IDT       = 0x1000
TSS       = 0x2000
KSTACK    = 0x9000
PD        = 0x10000
PT0       = 0x11000
USTACK    = 0x70000
HOLE      = 0x300000
KCODE     = 0x08
KDATA     = 0x10
UCODE     = 0x1B        # 0x18 | RPL 3
UDATA     = 0x23        # 0x20 | RPL 3
TSS_SEL   = 0x28
POST      = 0x80
DEBUG     = 0xE9

# ----------------------------------------------------------------------------
# Real mode: CS = F000 after the reset vector's far jump.
bits 16
start16:
    cli
    cld
    mov al, 0x01
    out POST, al
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    mov ax, cs
    mov ds, ax
    mov si, OFFSET msg_real - ROM
    call print16

    # Copy the GDT to RAM (0000:0800), load GDTR, set CR0.PE.
    xor ax, ax
    mov es, ax
    mov si, OFFSET gdt - ROM
    mov di, GDT_RAM
    mov cx, 48
    rep movsb
    lgdt [gdt_ptr - ROM]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    data32 jmp KCODE:pm32

# si: a NUL-terminated string in DS.
print16:
    lodsb
    test al, al
    jz 1f
    out DEBUG, al
    jmp print16
1:  ret

# ----------------------------------------------------------------------------
# Protected mode, CPL 0, flat segments.
bits 32
pm32:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, KSTACK
    mov al, 0x02
    out POST, al
    mov esi, OFFSET msg_pm
    call print32

    # Page tables: PDE 0 -> PT0 (present, writable, user: the PTEs decide),
    # PT0 identity-maps 0-4 MiB supervisor read/write ...
    mov edi, PD
    xor eax, eax
    mov ecx, 2048
    rep stosd
    mov dword ptr [PD], PT0 + 7
    mov edi, PT0
    mov eax, 3
    mov ecx, 1024
1:  stosd
    add eax, 0x1000
    loop 1b
    # ... except the ring-3 code page (user, read-only), the ring-3 stack
    # page (user, writable) and the hole (not present).
    mov eax, OFFSET user_code
    mov ebx, eax
    shr eax, 12
    or ebx, 5
    mov [PT0 + eax*4], ebx
    mov dword ptr [PT0 + USTACK / 1024], USTACK + 7
    mov dword ptr [PT0 + HOLE / 1024], 0
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov al, 0x03
    out POST, al
    mov esi, OFFSET msg_paging
    call print32

    # IDT: every vector to `unexpected` (interrupt gates, DPL 0), then #PF
    # (an interrupt gate, DPL 0) and int 0x80 (a trap gate, DPL 3).
    xor ebx, ebx
2:  mov eax, OFFSET unexpected
    mov ecx, 0x8E00
    call set_gate
    inc ebx
    cmp ebx, 256
    jb 2b
    mov ebx, 14
    mov eax, OFFSET pf_handler
    mov ecx, 0x8E00
    call set_gate
    mov ebx, 0x80
    mov eax, OFFSET syscall
    mov ecx, 0xEF00
    call set_gate
    lidt [idt_ptr]

    # TSS: ss0:esp0 for the way back from ring 3; no I/O bitmap.
    mov edi, TSS
    xor eax, eax
    mov ecx, 26
    rep stosd
    mov dword ptr [TSS + 4], KSTACK
    mov dword ptr [TSS + 8], KDATA
    mov word ptr [TSS + 0x66], 0x68
    mov ax, TSS_SEL
    ltr ax
    mov al, 0x04
    out POST, al

    # IRET to ring 3: SS:ESP, EFLAGS (IF = 0, IOPL = 0), CS:EIP.
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    push UDATA
    push USTACK + 0x1000
    push 0x2
    push UCODE
    push OFFSET user_code
    iretd

# ebx: vector, eax: handler, ecx: P | DPL | type << 8.
set_gate:
    mov edx, eax
    and eax, 0xFFFF
    or eax, KCODE << 16
    and edx, 0xFFFF0000
    or edx, ecx
    mov [IDT + ebx*8], eax
    mov [IDT + ebx*8 + 4], edx
    ret

# esi: a NUL-terminated string.
print32:
    push eax
3:  lodsb
    test al, al
    jz 4f
    out DEBUG, al
    jmp 3b
4:  pop eax
    ret

# eax: printed as 8 lowercase hex digits.
printhex32:
    push ecx
    push edx
    mov ecx, 8
5:  rol eax, 4
    mov edx, eax
    and edx, 0xF
    push eax
    mov al, [hexdigits + edx]
    out DEBUG, al
    pop eax
    loop 5b
    pop edx
    pop ecx
    ret

# int 0x80 from ring 3: eax = 1 writes the string at esi.
syscall:
    pushad
    push ds
    mov ax, KDATA
    mov ds, ax
    mov al, 0x05
    out POST, al
    cmp dword ptr [esp + 4 + 28], 1     # the saved eax
    jne 6f
    call print32
6:  pop ds
    popad
    iretd

# #PF: print CR2 and stop with interrupts off.
pf_handler:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov al, 0x06
    out POST, al
    mov esi, OFFSET msg_pf
    call print32
    mov eax, cr2
    call printhex32
    mov al, 10
    out DEBUG, al
7:  cli
    hlt
    jmp 7b

unexpected:
    mov ax, KDATA
    mov ds, ax
    mov al, 0xEE
    out POST, al
    mov esi, OFFSET msg_unexpected
    call print32
    jmp 7b

# ----------------------------------------------------------------------------
# Data (in the ROM: read-only).
msg_real:       db "real mode", 10, 0
msg_pm:         db "protected mode", 10, 0
msg_paging:     db "paging", 10, 0
msg_pf:         db "page fault at ", 0
msg_unexpected: db "unexpected interrupt", 10, 0
hexdigits:      db "0123456789abcdef"

align 8
gdt:
    dq 0                                # null
    dq 0x00CF9B000000FFFF               # 0x08 code, DPL 0, 4 GiB, 32-bit
    dq 0x00CF93000000FFFF               # 0x10 data, DPL 0
    dq 0x00CFFB000000FFFF               # 0x18 code, DPL 3
    dq 0x00CFF3000000FFFF               # 0x20 data, DPL 3
    dq 0x0000890020000067               # 0x28 32-bit TSS at 0x2000, limit 0x67
gdt_ptr:
    dw 47
    dd GDT_RAM
idt_ptr:
    dw 256 * 8 - 1
    dd IDT

# ----------------------------------------------------------------------------
# Ring 3: a page of its own, mapped user/read-only.
align 4096
user_code:
    mov eax, 1
    mov esi, OFFSET msg_sys
    int 0x80
    mov dword ptr [HOLE + 0xABC], eax   # not present: #PF, error code 6
8:  jmp 8b

msg_sys:        db "syscall from ring 3", 10, 0

# ----------------------------------------------------------------------------
# The reset vector: F000:FFF0 (linear FFFFFFF0, the ROM's top alias).
.org 0xFFF0
bits 16
reset:
    jmp 0xF000:start16 - ROM
.org 0x10000
