"""The i386 Linux system calls a static program needs, for the Guest
kernel's one task: the table (arch/x86/kernel/syscall_table_32.S numbers),
the files it can open (the standard streams on the Launcher's console
device, and the files the Launcher put in the archive, read-only), its
memory calls (brk, mmap2, munmap, mprotect), TLS through LHCALL_LOAD_TLS,
time from lguest_data, sleeping with HALT and the timer, and signals only
as far as a fatal one ending the program with a message.
"""
import struct

import attrs

from lguest_host.abi import (GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX, PAGE_OFFSET, PAGE_SIZE,
                             ConsoleDevice, LHCALL_NOTIFY)
from x86core.segmentation import make_descriptor

from . import boot, mm as mmu
from .entry import LGUEST_DATA_VIRT, PtRegs, EAX, EBX, ECX, EDX, ESI, EDI, EBP
from .mm import PROT_READ, PROT_WRITE, PROT_EXEC, UserFault

EPERM, ENOENT, ESRCH, EINTR, EIO, EBADF, ENOMEM, EACCES, EFAULT = 1, 2, 3, 4, 5, 9, 12, 13, 14
EEXIST, ENOTDIR, EISDIR, EINVAL, EMFILE, ENOTTY, ESPIPE, EROFS, ERANGE = 17, 20, 21, 22, 24, 25, 29, 30, 34
ENOSYS, ENAMETOOLONG = 38, 36
TLS_VIRT = LGUEST_DATA_VIRT + 0x900
S_IFCHR, S_IFREG = 0o020000, 0o100000
O_ACCMODE, O_CREAT, O_DIRECTORY = 3, 0o100, 0o200000
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 1, 2, 0x10, 0x20


def parse_args(block: bytes) -> tuple[list, list]:
    """The Launcher's argument block: argv strings, "", envp strings, ""."""
    parts = block.split(b"\0")
    try:
        split = parts.index(b"")
    except ValueError:
        return [p.decode(errors="replace") for p in parts if p], []
    argv = parts[:split]
    rest = parts[split + 1:]
    envp = rest[:rest.index(b"")] if b"" in rest else rest
    return [a.decode(errors="surrogateescape") for a in argv], \
        [e.decode(errors="surrogateescape") for e in envp]


def parse_archive(blob: bytes) -> list:
    """The Launcher's file archive: [(name, data)], the program first."""
    files, pos = [], 0
    while pos + 8 <= len(blob):
        name_len, data_len = struct.unpack_from("<II", blob, pos)
        if name_len == 0:
            break
        pos += 8
        name = blob[pos:pos + name_len].decode(errors="surrogateescape")
        data = blob[pos + name_len:pos + name_len + data_len]
        files.append((name, bytes(data)))
        pos += name_len + data_len
        pos += -pos % 4
    return files


@attrs.define(eq=False)
class File:
    kind: str                   # "console" or "archive"
    fd_on_device: int = -1      # console: the Launcher's stream (0, 1, 2)
    name: str = ""
    data: bytes = b""
    pos: int = 0
    flags: int = 0


class Task:
    """The one process: its files, TLS descriptors and exit."""

    def __init__(self, k, argv, files):
        self.k = k
        self.argv = list(argv)
        self.exe = files[0][0]
        self.archive = {name: data for name, data in files}
        self.fds: dict[int, File] = {0: File("console", 0, "<stdin>", flags=0),
                                     1: File("console", 1, "<stdout>", flags=1),
                                     2: File("console", 2, "<stderr>", flags=1)}
        self.tls = [0, 0, 0]
        self.pid = 1
        self.tid_address = 0
        self.exited = False
        self.syscalls = 0

    # -- entry --------------------------------------------------------------------------------
    def system_call(self, frame: int):
        k = self.k
        r = k.hw.regs
        nr, args = r[EAX], (r[EBX], r[ECX], r[EDX], r[ESI], r[EDI], r[EBP])
        self.syscalls += 1
        handler = SYSCALLS.get(nr)
        if handler is None:
            result = -ENOSYS
        else:
            try:
                result = yield from handler(self, *args)
            except UserFault:
                result = -EFAULT
            except mmu.OutOfMemory:
                result = -ENOMEM
        yield from k.mem.write_u32(frame + PtRegs.eax, result)

    # -- the console device -----------------------------------------------------------------------
    def console(self, cmd: int, fd: int, data: bytes = b"", length: int = 0):
        """One request to the Launcher's console: data goes through the bounce page."""
        k = self.k
        bounce_pa = k.bounce_virt - PAGE_OFFSET
        if data:
            yield from k.mem.write(k.bounce_virt, data)
            length = len(data)
        yield from k.mem.write(k.console_virt, struct.pack("<5I", cmd, fd, bounce_pa, length, 0))
        yield from boot.hcall(k, LHCALL_NOTIFY, k.console_virt - PAGE_OFFSET)
        raw = yield from k.mem.read(k.console_virt + ConsoleDevice.result, 4)
        return struct.unpack("<i", raw)[0]

    def console_write(self, fd: int, data: bytes):
        done = 0
        while done < len(data):
            chunk = data[done:done + PAGE_SIZE]
            n = yield from self.console(ConsoleDevice.CMD_WRITE, fd, chunk)
            if n < 0:
                return n if done == 0 else done
            done += n
        return done

    def exit(self, status: int):
        """Report the status and power off: nothing of ours runs after this."""
        self.exited = True
        yield from self.console(ConsoleDevice.CMD_EXIT, status & 0xFF)
        yield from boot.lguest_power_off(self.k, f"exit {status & 0xFF}".encode())

    def fatal(self, message: str, status: int):
        yield from self.console_write(2, message.encode(errors="replace"))
        yield from self.exit(status)

    def force_sig(self, signal: int, what: str):
        """A fatal signal: no handlers here, so the process dies with a message."""
        yield from self.fatal(f"lguest: {self.exe}: {what}: killed by signal {signal}\n",
                              128 + signal)

    # -- helpers ------------------------------------------------------------------------------------
    def read_user(self, addr, n):
        return (yield from mmu.copy_from_user(self.k, self.k.mm, addr, n))

    def write_user(self, addr, data):
        yield from mmu.copy_to_user(self.k, self.k.mm, addr, data)

    def string_user(self, addr, limit=4096):
        return (yield from mmu.strncpy_from_user(self.k, self.k.mm, addr, limit))

    def lookup(self, path: str) -> str | None:
        for candidate in (path, path.removeprefix("./")):
            if candidate in self.archive:
                return candidate
        return None


# -- files -------------------------------------------------------------------------------------------
def sys_read(t, fd, buf, count, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.flags & O_ACCMODE == 1:
        return -EBADF
    count = min(count, 1 << 20)
    if f.kind == "console":
        n = yield from t.console(ConsoleDevice.CMD_READ, f.fd_on_device, b"", min(count, PAGE_SIZE))
        if n <= 0:
            return n
        data = yield from t.k.mem.read(t.k.bounce_virt, n)
    else:
        data = f.data[f.pos:f.pos + count]
        f.pos += len(data)
    yield from t.write_user(buf, data)
    return len(data)


def sys_write(t, fd, buf, count, *_):
    f = t.fds.get(fd)
    if f is None or f.flags & O_ACCMODE == 0 and f.kind != "console":
        return -EBADF
    if f.kind != "console":
        return -EBADF
    data = yield from t.read_user(buf, min(count, 1 << 20))
    return (yield from t.console_write(f.fd_on_device, data))


def _iovecs(t, iov, iovcnt):
    if iovcnt > 1024:
        raise UserFault(iov)
    raw = yield from t.read_user(iov, 8 * iovcnt)
    return [struct.unpack_from("<II", raw, 8 * i) for i in range(iovcnt)]


def sys_writev(t, fd, iov, iovcnt, *_):
    total = 0
    for base, length in (yield from _iovecs(t, iov, iovcnt)):
        n = yield from sys_write(t, fd, base, length)
        if n < 0:
            return n if total == 0 else total
        total += n
    return total


def sys_readv(t, fd, iov, iovcnt, *_):
    total = 0
    for base, length in (yield from _iovecs(t, iov, iovcnt)):
        n = yield from sys_read(t, fd, base, length)
        if n < 0:
            return n if total == 0 else total
        total += n
        if n < length:
            break
    return total


def sys_open(t, path_ptr, flags, mode, *_):
    path = (yield from t.string_user(path_ptr)).decode(errors="surrogateescape")
    name = t.lookup(path)
    if name is None:
        return -EROFS if flags & O_CREAT else -ENOENT
    if flags & O_ACCMODE != 0:
        return -EROFS
    if flags & O_DIRECTORY:
        return -ENOTDIR
    fd = next(i for i in range(len(t.fds) + 1) if i not in t.fds)
    if fd >= 256:
        return -EMFILE
    t.fds[fd] = File("archive", name=name, data=t.archive[name], flags=0)
    return fd


def sys_openat(t, dirfd, path_ptr, flags, mode, *_):
    return (yield from sys_open(t, path_ptr, flags, mode))


def sys_close(t, fd, *_):
    if t.fds.pop(fd, None) is None:
        return -EBADF
    return 0
    yield


def sys_llseek(t, fd, high, low, result_ptr, whence, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.kind == "console":
        return -ESPIPE
    offset = ((high << 32) | low)
    if offset >= 1 << 63:
        offset -= 1 << 64
    new = {0: offset, 1: f.pos + offset, 2: len(f.data) + offset}.get(whence)
    if new is None or new < 0:
        return -EINVAL
    f.pos = new
    yield from t.write_user(result_ptr, struct.pack("<Q", new))
    return 0


def sys_lseek(t, fd, offset, whence, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.kind == "console":
        return -ESPIPE
    if offset >= 1 << 31:
        offset -= 1 << 32
    new = {0: offset, 1: f.pos + offset, 2: len(f.data) + offset}.get(whence)
    if new is None or new < 0:
        return -EINVAL
    f.pos = new
    return new
    yield


def _stat64(mode: int, size: int, ino: int) -> bytes:
    """struct stat64 (i386): 96 bytes."""
    st = bytearray(96)
    struct.pack_into("<Q", st, 0, 0x801)            # st_dev
    struct.pack_into("<I", st, 12, ino)             # __st_ino
    struct.pack_into("<I", st, 16, mode)            # st_mode
    struct.pack_into("<I", st, 20, 1)               # st_nlink
    struct.pack_into("<Q", st, 32, 0x8801 if mode & S_IFCHR == S_IFCHR else 0)   # st_rdev
    struct.pack_into("<q", st, 44, size)            # st_size
    struct.pack_into("<I", st, 52, 4096)            # st_blksize
    struct.pack_into("<Q", st, 56, (size + 511) // 512)
    struct.pack_into("<Q", st, 88, ino)             # st_ino
    return bytes(st)


def _stat_of(t, f: File) -> bytes:
    if f.kind == "console":
        return _stat64(S_IFCHR | 0o620, 0, 3 + f.fd_on_device)
    return _stat64(S_IFREG | 0o444, len(f.data), 100 + list(t.archive).index(f.name))


def sys_fstat64(t, fd, buf, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    yield from t.write_user(buf, _stat_of(t, f))
    return 0


def sys_stat64(t, path_ptr, buf, *_):
    path = (yield from t.string_user(path_ptr)).decode(errors="surrogateescape")
    name = t.lookup(path)
    if name is None:
        return -ENOENT
    yield from t.write_user(buf, _stat_of(t, File("archive", name=name, data=t.archive[name])))
    return 0


def sys_fstatat64(t, dirfd, path_ptr, buf, flags, *_):
    path = (yield from t.string_user(path_ptr)).decode(errors="surrogateescape")
    if path == "" and flags & 0x1000:                 # AT_EMPTY_PATH
        return (yield from sys_fstat64(t, dirfd, buf))
    return (yield from sys_stat64(t, path_ptr, buf))


def sys_ioctl(t, fd, request, arg, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    # TCGETS, TIOCGWINSZ: the console is a byte stream, not a terminal.
    return -ENOTTY
    yield


def sys_fcntl64(t, fd, cmd, arg, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if cmd == 1:                                       # F_GETFD
        return 0
    if cmd == 2:                                       # F_SETFD
        return 0
    if cmd == 3:                                       # F_GETFL
        return f.flags
    if cmd == 4:                                       # F_SETFL
        return 0
    if cmd in (0, 1030):                               # F_DUPFD, F_DUPFD_CLOEXEC
        new = next(i for i in range(arg, 1024) if i not in t.fds)
        t.fds[new] = attrs.evolve(f)
        return new
    return -EINVAL
    yield


def sys_dup2(t, oldfd, newfd, *_):
    f = t.fds.get(oldfd)
    if f is None:
        return -EBADF
    t.fds[newfd] = f
    return newfd
    yield


def sys_dup(t, oldfd, *_):
    return (yield from sys_fcntl64(t, oldfd, 0, 0))


def sys_readlink(t, path_ptr, buf, size, *_):
    path = (yield from t.string_user(path_ptr)).decode(errors="surrogateescape")
    if path != "/proc/self/exe":
        return -ENOENT
    data = t.exe.encode(errors="surrogateescape")[:size]
    yield from t.write_user(buf, data)
    return len(data)


def sys_access(t, path_ptr, mode, *_):
    path = (yield from t.string_user(path_ptr)).decode(errors="surrogateescape")
    if t.lookup(path) is None:
        return -ENOENT
    return -EACCES if mode & 2 else 0


# -- process -------------------------------------------------------------------------------------------
def sys_exit(t, status, *_):
    yield from t.exit(status)


def sys_getpid(t, *_):
    return t.pid
    yield


def sys_getppid(t, *_):
    return 0
    yield


def sys_zero(t, *_):
    """getuid32 and friends: root, group 0."""
    return 0
    yield


def sys_set_tid_address(t, tidptr, *_):
    t.tid_address = tidptr
    return t.pid
    yield


def sys_set_robust_list(t, *_):
    return 0
    yield


def sys_rt_sigaction(t, sig, act, oldact, sigsetsize, *_):
    if not 1 <= sig <= 64 or sig in (9, 19):
        return -EINVAL
    if oldact:
        yield from t.write_user(oldact, bytes(20))
    return 0


def sys_rt_sigprocmask(t, how, nset, oset, sigsetsize, *_):
    if oset:
        yield from t.write_user(oset, bytes(8))
    return 0


def sys_kill(t, pid, sig, *_):
    if pid not in (0, t.pid, 0xFFFFFFFF):
        return -ESRCH
    if sig == 0:
        return 0
    yield from t.force_sig(sig, "signal sent to itself")


def sys_tgkill(t, tgid, tid, sig, *_):
    return (yield from sys_kill(t, tid, sig))


def sys_uname(t, buf, *_):
    fields = [b"Linux", b"lguest", b"2.6.32-lguest-py", b"#1 SMP pylguest", b"i686", b"(none)"]
    yield from t.write_user(buf, b"".join(f.ljust(65, b"\0") for f in fields))
    return 0


def sys_ugetrlimit(t, resource, rlim, *_):
    limits = {3: (8 << 20, 0xFFFFFFFF), 7: (1024, 1024)}      # STACK, NOFILE
    cur, max_ = limits.get(resource, (0xFFFFFFFF, 0xFFFFFFFF))
    yield from t.write_user(rlim, struct.pack("<II", cur, max_))
    return 0


def sys_prctl(t, option, *_):
    return -EINVAL
    yield


def sys_getrandom(t, buf, count, flags, *_):
    count = min(count, 1 << 16)
    seed = t.k.hw.rdtsc()
    out = bytearray()
    x = seed | 1
    while len(out) < count:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out += x.to_bytes(8, "little")
    yield from t.write_user(buf, bytes(out[:count]))
    return count


def sys_getcwd(t, buf, size, *_):
    if size < 2:
        return -ERANGE
    yield from t.write_user(buf, b"/\0")
    return 2


# -- memory ---------------------------------------------------------------------------------------------
def sys_brk(t, addr, *_):
    mm = t.k.mm
    heap = next(v for v in mm.vmas if v.name == "[heap]")
    if addr and mm.brk_start <= addr < mm.mmap_base:
        new_end = (addr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if new_end < heap.end:
            yield from mmu.unmap_range(t.k, mm, new_end, heap.end)
        elif mm.overlaps(heap.end, new_end):
            return mm.brk
        heap.end = new_end
        mm.brk = addr
    return mm.brk


def sys_mmap2(t, addr, length, prot, flags, fd, pgoff):
    mm = t.k.mm
    if length == 0 or length > 1 << 30:
        return -EINVAL
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if flags & MAP_FIXED:
        if addr & 0xFFF or addr + length > mmu.STACK_TOP - mmu.STACK_LIMIT:
            return -EINVAL
        yield from _unmap(t, addr, addr + length)
        start = addr
    else:
        start = mm.get_unmapped_area(length)
        if start is None:
            return -ENOMEM
    source = None
    if not flags & MAP_ANONYMOUS:
        f = t.fds.get(fd if fd < 1 << 31 else -1)
        if f is None or f.kind != "archive":
            return -EBADF if f is None else -EACCES
        source = f.data[pgoff * PAGE_SIZE:pgoff * PAGE_SIZE + length]
    mm.add_vma(start, start + length, prot & 7, "")
    if source:
        for off in range(0, len(source), PAGE_SIZE):
            page = source[off:off + PAGE_SIZE].ljust(PAGE_SIZE, b"\0")
            yield from mmu.populate(t.k, mm, start + off, page)
    return start


def sys_mmap(t, args_ptr, *_):
    raw = yield from t.read_user(args_ptr, 24)
    addr, length, prot, flags, fd, offset = struct.unpack("<6I", raw)
    if offset & 0xFFF:
        return -EINVAL
    return (yield from sys_mmap2(t, addr, length, prot, flags, fd, offset >> 12))


def _unmap(t, start, end):
    mm = t.k.mm
    yield from mmu.unmap_range(t.k, mm, start, end)
    kept = []
    for v in mm.vmas:
        if v.end <= start or v.start >= end or v.name in ("[heap]", "[stack]"):
            kept.append(v)
            continue
        if v.start < start:
            kept.append(mmu.Vma(v.start, start, v.prot, v.name))
        if v.end > end:
            kept.append(mmu.Vma(end, v.end, v.prot, v.name))
    mm.vmas = sorted(kept, key=lambda v: v.start)


def sys_munmap(t, addr, length, *_):
    if addr & 0xFFF or length == 0 or addr + length > mmu.USER_TOP:
        return -EINVAL
    yield from _unmap(t, addr, addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)))
    return 0


def sys_mprotect(t, addr, length, prot, *_):
    if addr & 0xFFF:
        return -EINVAL
    end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    mm = t.k.mm
    for v in list(mm.vmas):
        if v.start < end and addr < v.end and v.name not in ("[heap]", "[stack]"):
            if v.start < addr:
                mm.vmas.append(mmu.Vma(v.start, addr, v.prot, v.name))
                v.start = addr
            if v.end > end:
                mm.vmas.append(mmu.Vma(end, v.end, v.prot, v.name))
                v.end = end
            v.prot = prot & 7
    mm.vmas.sort(key=lambda v: v.start)
    yield from mmu.protect_range(t.k, mm, addr, end, prot)
    return 0


# -- TLS ----------------------------------------------------------------------------------------------
def sys_set_thread_area(t, uinfo, *_):
    raw = yield from t.read_user(uinfo, 16)
    entry, base, limit, flags = struct.unpack("<iIII", raw)
    if entry == -1:
        free = [i for i in range(3) if not t.tls[i]]
        if not free:
            return -ESRCH
        entry = GDT_ENTRY_TLS_MIN + free[0]
        yield from t.write_user(uinfo, struct.pack("<i", entry))
    if not GDT_ENTRY_TLS_MIN <= entry <= GDT_ENTRY_TLS_MAX:
        return -EINVAL
    seg_32bit, contents, read_exec_only = flags & 1, flags >> 1 & 3, flags >> 3 & 1
    limit_in_pages, not_present, useable = flags >> 4 & 1, flags >> 5 & 1, flags >> 6 & 1
    if not_present and not base and not limit:
        desc = 0
    else:
        access = (0 if not_present else 0x80) | 0x70 | contents << 2 | (0 if read_exec_only else 2)
        nibble = limit_in_pages << 3 | seg_32bit << 2 | useable
        desc = make_descriptor(base, (limit << 12 | 0xFFF) if limit_in_pages else limit,
                               access, nibble)
    t.tls[entry - GDT_ENTRY_TLS_MIN] = desc
    yield from t.k.mem.write(TLS_VIRT, struct.pack("<3Q", *t.tls))
    yield from boot.lguest_load_tls(t.k, TLS_VIRT - PAGE_OFFSET)
    return 0


# -- time ---------------------------------------------------------------------------------------------
def sys_clock_gettime(t, clock, tp, *_):
    ns = yield from boot.lguest_clock_read(t.k)
    yield from t.write_user(tp, struct.pack("<II", ns // 10**9, ns % 10**9))
    return 0


def sys_clock_gettime64(t, clock, tp, *_):
    ns = yield from boot.lguest_clock_read(t.k)
    yield from t.write_user(tp, struct.pack("<qq", ns // 10**9, ns % 10**9))
    return 0


def sys_gettimeofday(t, tv, tz, *_):
    ns = yield from boot.lguest_clock_read(t.k)
    if tv:
        yield from t.write_user(tv, struct.pack("<II", ns // 10**9, ns % 10**9 // 1000))
    if tz:
        yield from t.write_user(tz, bytes(8))
    return 0


def sys_time(t, tloc, *_):
    ns = yield from boot.lguest_clock_read(t.k)
    if tloc:
        yield from t.write_user(tloc, struct.pack("<I", ns // 10**9))
    return ns // 10**9


def sys_nanosleep(t, req, rem, *_):
    raw = yield from t.read_user(req, 8)
    sec, nsec = struct.unpack("<iI", raw)
    if sec < 0 or nsec >= 10**9:
        return -EINVAL
    yield from sleep_ns(t.k, sec * 10**9 + nsec)
    if rem:
        yield from t.write_user(rem, bytes(8))
    return 0


def sys_clock_nanosleep(t, clock, flags, req, rem, *_):
    return (yield from sys_nanosleep(t, req, rem))


def sleep_ns(k, delta):
    """Arm the clock event and halt until the timer interrupt says it fired."""
    start = yield from boot.lguest_clock_read(k)
    deadline = start + delta
    while True:
        now = yield from boot.lguest_clock_read(k)
        if now >= deadline:
            return
        k.timer_expired = False
        yield from boot.lguest_clockevent_set_next_event(k, deadline - now)
        while not k.timer_expired:
            yield from boot.lguest_safe_halt(k)


SYSCALLS = {
    1: sys_exit, 3: sys_read, 4: sys_write, 5: sys_open, 6: sys_close, 13: sys_time,
    19: sys_lseek, 20: sys_getpid, 24: sys_zero, 33: sys_access, 37: sys_kill, 41: sys_dup,
    45: sys_brk, 47: sys_zero, 49: sys_zero, 50: sys_zero, 54: sys_ioctl, 55: sys_fcntl64,
    63: sys_dup2, 64: sys_getppid, 78: sys_gettimeofday, 85: sys_readlink, 90: sys_mmap,
    91: sys_munmap, 122: sys_uname, 125: sys_mprotect, 140: sys_llseek, 145: sys_readv,
    146: sys_writev, 162: sys_nanosleep, 172: sys_prctl, 174: sys_rt_sigaction,
    175: sys_rt_sigprocmask, 183: sys_getcwd, 191: sys_ugetrlimit, 192: sys_mmap2,
    195: sys_stat64, 196: sys_stat64, 197: sys_fstat64, 199: sys_zero, 200: sys_zero,
    201: sys_zero, 202: sys_zero, 221: sys_fcntl64, 224: sys_getpid, 243: sys_set_thread_area,
    252: sys_exit, 258: sys_set_tid_address, 265: sys_clock_gettime, 267: sys_clock_nanosleep,
    270: sys_tgkill, 295: sys_openat, 300: sys_fstatat64, 311: sys_set_robust_list,
    355: sys_getrandom, 403: sys_clock_gettime64,
}
