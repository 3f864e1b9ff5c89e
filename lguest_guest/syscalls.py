"""The i386 Linux system calls a static program needs, for the Guest
kernel's one task: the table (arch/x86/kernel/syscall_table_32.S numbers,
looked up by the int $0x80 handler, system_call in entry_32.S), and what
the calls do.

* Files (fs/): a read-only tree made of the files the Launcher put in the
  archive (at their paths, made absolute: the working directory starts at
  "/"), their parent directories, /dev (null, zero, and stdin/stdout/stderr
  as links to /proc/self/fd/N) and /proc/self (exe, fd/).  The standard
  streams are the Launcher's byte-stream console device: a request in the
  device page, LHCALL_NOTIFY, the result in the page (like virtio_console,
  through a bounce page).  It is no terminal: TCGETS and TIOCGWINSZ answer
  -ENOTTY, as on a pipe.  Writing, creating or removing files is -EROFS.
* Memory (mm/mmap.c, mm/mprotect.c, mm/mremap.c): brk, mmap2/mmap
  (anonymous and private file mappings), munmap, mprotect, mremap, madvise.
* TLS: set_thread_area/get_thread_area write the three GDT TLS entries and
  load them with LHCALL_LOAD_TLS (arch/x86/kernel/tls.c).
* Time (kernel/time/): the lguest clock (lguest_data.time, kept between
  the Host's updates by the TSC, whose rate lguest_data.tsc_khz gives) for
  clock_gettime, gettimeofday, time and times; nanosleep and
  clock_nanosleep arm the clock event (LHCALL_SET_CLOCKEVENT) and HALT
  until the timer interrupt: the Host's clock is virtual, so a sleep costs
  no wall time.
* The process: ids (pid 1, root), uname, rlimits, prctl names, getrandom,
  signal bookkeeping.  No signal handler ever runs: a fatal signal (a trap,
  kill of itself, abort) ends the program with a one-line message and the
  status a shell would show, 128 + the signal.

A call not in the table returns -ENOSYS, as Linux does (rseq among them);
a bad user pointer is -EFAULT, never a kernel error.
"""
import posixpath
import struct

import attrs

from lguest_host.abi import (GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX, PAGE_OFFSET, PAGE_SIZE,
                             ConsoleDevice, LHCALL_NOTIFY)
from x86core.segmentation import make_descriptor

from . import boot, mm as mmu
from .entry import LGUEST_DATA_VIRT, PtRegs, EAX, EBX, ECX, EDX, ESI, EDI, EBP
from .mm import PROT_READ, PROT_WRITE, NameTooLong, UserFault, page_align

EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG, EBADF = 1, 2, 3, 4, 5, 6, 7, 9
EAGAIN, ENOMEM, EACCES, EFAULT, EEXIST, ENODEV, ENOTDIR, EISDIR = 11, 12, 13, 14, 17, 19, 20, 21
EINVAL, EMFILE, ENOTTY, ESPIPE, EROFS, ERANGE = 22, 24, 25, 29, 30, 34
ENAMETOOLONG, ENOSYS, ENOTEMPTY, ELOOP, EOVERFLOW, ETIMEDOUT = 36, 38, 39, 40, 75, 110
TLS_VIRT = LGUEST_DATA_VIRT + 0x900
S_IFMT, S_IFIFO, S_IFCHR, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o010000, 0o020000, \
    0o040000, 0o100000, 0o120000
O_ACCMODE, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC = 3, 1, 2, 0o100, 0o200, \
    0o400, 0o1000
O_APPEND, O_NONBLOCK, O_LARGEFILE, O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_PATH = 0o2000, \
    0o4000, 0o100000, 0o200000, 0o400000, 0o2000000, 0o10000000
AT_FDCWD = -100 & 0xFFFFFFFF
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EACCESS, AT_EMPTY_PATH = 0x100, 0x200, 0x200, 0x1000
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE, MAP_TYPE = 1, 2, 3, 0xF
MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x10, 0x20, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MADV_DONTNEED = 4
NOFILE = 1024                               # RLIMIT_NOFILE
RLIM_INFINITY = 0xFFFFFFFF
USER_HZ = 100
CLOCK_REALTIME_IDS = {0, 5, 8, 11}          # REALTIME, _COARSE, _ALARM, TAI
CLOCK_MONOTONIC_IDS = {1, 4, 6, 7, 9}       # MONOTONIC, _RAW, _COARSE, BOOTTIME, _ALARM
CLOCK_CPUTIME_IDS = {2, 3}                  # PROCESS_CPUTIME_ID, THREAD_CPUTIME_ID
TIMER_ABSTIME = 1
MAX_DELTA_NS = 0xFFFFFFFF
SIG_DFL, SIG_IGN = 0, 1
SIGKILL, SIGSTOP, SIGPIPE = 9, 19, 13
# Signals whose default action is to be ignored (or to continue).
SIG_DEFAULT_IGNORE = {17, 18, 23, 28}       # SIGCHLD, SIGCONT, SIGURG, SIGWINCH


def parse_args(block: bytes) -> tuple[list, list]:
    """The Launcher's argument block: argc and envc, then that many
    NUL-terminated strings (lguest_host.abi describes it)."""
    if len(block) < 8:
        return [], []
    argc, envc = struct.unpack_from("<II", block)
    strings = block[8:].split(b"\0")
    if argc + envc > len(strings):
        return [], []
    decoded = [s.decode(errors="surrogateescape") for s in strings[:argc + envc]]
    return decoded[:argc], decoded[argc:]


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


def canonical(path: str, cwd: str = "/") -> str:
    """A path made absolute against `cwd` and normalized ("//x" is "/x")."""
    joined = posixpath.join(cwd, path)
    out = posixpath.normpath(joined)
    return "/" + out.lstrip("/")


# -- the file tree --------------------------------------------------------------------------------
@attrs.define(eq=False)
class Inode:
    path: str
    mode: int
    ino: int
    data: bytes = b""
    target: str = ""            # a symbolic link's contents
    rdev: int = 0
    device: str = ""            # "null", "zero" for the character devices
    magic_fd: int = -1          # /proc/self/fd/N followed: the file descriptor N has open

    @property
    def kind(self) -> int:
        return self.mode & S_IFMT

    @property
    def size(self) -> int:
        if self.kind == S_IFLNK:
            return len(self.target)
        return len(self.data) if self.kind == S_IFREG else 0


class Tree:
    """The read-only tree: path -> Inode, the directories implied by the files."""

    def __init__(self, files: list, exe: str):
        self.nodes: dict[str, Inode] = {}
        self._dir("/")
        for d in ("/dev", "/proc", "/proc/self", "/proc/self/fd", "/tmp"):
            self._dir(d)
        self._add(Inode("/dev/null", S_IFCHR | 0o666, 0, rdev=(1 << 8) | 3, device="null"))
        self._add(Inode("/dev/zero", S_IFCHR | 0o666, 0, rdev=(1 << 8) | 5, device="zero"))
        for fd, name in enumerate(("stdin", "stdout", "stderr")):
            self._add(Inode(f"/dev/{name}", S_IFLNK | 0o777, 0, target=f"/proc/self/fd/{fd}"))
        for name, data in files:
            path = canonical(name)
            if path in self.nodes:
                continue
            self._parents(path)
            mode = 0o755 if path == exe else 0o644
            self._add(Inode(path, S_IFREG | mode, 0, data=data))
        self._add(Inode("/proc/self/exe", S_IFLNK | 0o777, 0, target=exe))

    def _add(self, node: Inode) -> None:
        node.ino = len(self.nodes) + 2
        self.nodes[node.path] = node

    def _dir(self, path: str) -> None:
        if path not in self.nodes:
            self._add(Inode(path, S_IFDIR | 0o755, 0))

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent != path and parent not in self.nodes:
            self._parents(parent)
            self._dir(parent)

    def children(self, path: str) -> list:
        prefix = path.rstrip("/") + "/"
        return [n for p, n in self.nodes.items()
                if p.startswith(prefix) and "/" not in p[len(prefix):] and p != prefix]


@attrs.define(eq=False)
class File:
    """An open file (struct file): shared by the descriptors dup made."""
    kind: str                   # "console", "reg", "dir", "null", "zero"
    node: Inode | None = None
    dev: int = -1               # console: the Launcher's stream (0, 1, 2)
    pos: int = 0
    flags: int = 0

    @property
    def readable(self) -> bool:
        return self.flags & O_ACCMODE != O_WRONLY and not self.flags & O_PATH

    @property
    def writable(self) -> bool:
        return self.flags & O_ACCMODE in (O_WRONLY, O_RDWR) and not self.flags & O_PATH


# -- the process ----------------------------------------------------------------------------------
class Task:
    """The one process: its files, memory calls' state, TLS, signals and exit."""

    def __init__(self, k, argv, files):
        self.k = k
        self.argv = list(argv)
        self.exe = canonical(files[0][0])
        self.tree = Tree(files, self.exe)
        self.cwd = "/"
        self.umask = 0o022
        self.fds: dict[int, File] = {0: File("console", dev=0, flags=0),
                                     1: File("console", dev=1, flags=O_WRONLY),
                                     2: File("console", dev=2, flags=O_WRONLY)}
        self.cloexec: set[int] = set()
        self.tls = [0, 0, 0]
        self.pid = 1
        self.tid_address = 0
        self.comm = posixpath.basename(self.exe)[:15]
        self.sigactions: dict[int, bytes] = {}
        self.sigmask = 0
        self.altstack = struct.pack("<IiI", 0, 2, 0)          # SS_DISABLE
        self.exited = False
        self.syscalls = 0
        self.trace = getattr(k, "trace", None)

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
            except NameTooLong:
                result = -ENAMETOOLONG
            except mmu.OutOfMemory:
                result = -ENOMEM
        if self.trace is not None:
            self.trace(nr, args, result)
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
        """A fatal signal: no handler runs here, so the process dies with a message."""
        yield from self.fatal(f"lguest: {self.exe}: {what}: killed by signal {signal}\n",
                              128 + signal)

    # -- helpers -----------------------------------------------------------------------------------
    def read_user(self, addr, n):
        return (yield from mmu.copy_from_user(self.k, self.k.mm, addr, n))

    def write_user(self, addr, data):
        yield from mmu.copy_to_user(self.k, self.k.mm, addr, data)

    def string_user(self, addr, limit=4096):
        return (yield from mmu.strncpy_from_user(self.k, self.k.mm, addr, limit))

    def path_user(self, addr):
        raw = yield from self.string_user(addr)
        return raw.decode(errors="surrogateescape")

    def new_fd(self, f: File, lowest: int = 0, cloexec: bool = False) -> int:
        fd = next((i for i in range(lowest, NOFILE) if i not in self.fds), None)
        if fd is None:
            return -EMFILE
        self.fds[fd] = f
        self.cloexec.discard(fd)
        if cloexec:
            self.cloexec.add(fd)
        return fd

    def resolve(self, path: str, dirfd: int = AT_FDCWD, follow: bool = True):
        """(Inode, canonical path) or (None, -errno): path walk with links
        followed (the last one only when `follow`)."""
        if path == "":
            return None, -ENOENT
        base = self.cwd
        if not path.startswith("/") and dirfd != AT_FDCWD:
            f = self.fds.get(dirfd)
            if f is None:
                return None, -EBADF
            if f.kind != "dir":
                return None, -ENOTDIR
            base = f.node.path
        return self._walk(canonical(path, base), follow, path.endswith("/"), 0)

    def _walk(self, path: str, follow: bool, want_dir: bool, depth: int):
        if depth > 8:
            return None, -ELOOP
        nodes = self.tree.nodes
        parts = [p for p in path.split("/") if p]
        at = "/"
        for i, part in enumerate(parts):
            at = posixpath.join(at, part)
            node = nodes.get(at)
            last = i == len(parts) - 1
            if node is None and last and at.startswith("/proc/self/fd/"):
                node = self._proc_fd(part)
                if node is not None and (follow or want_dir):
                    # A "magic" link: it leads to the open file itself, not to a path.
                    f = self.fds[int(part)]
                    target = f.node if f.node is not None else _console_node(f)
                    return attrs.evolve(target, magic_fd=int(part)), at
            if node is None:
                return None, -ENOENT
            if node.kind == S_IFLNK and (not last or follow or want_dir):
                rest = "/".join(parts[i + 1:])
                return self._walk(canonical(posixpath.join(node.target, rest)), follow,
                                  want_dir, depth + 1)
            if not last and node.kind != S_IFDIR:
                return None, -ENOTDIR
        node = nodes[at] if at in nodes else self._proc_fd(parts[-1]) if parts else nodes["/"]
        if want_dir and node.kind not in (S_IFDIR,):
            return None, -ENOTDIR
        return node, at

    def _proc_fd(self, name: str) -> Inode | None:
        """/proc/self/fd/N: a link to what descriptor N has open."""
        if not name.isdigit() or int(name) not in self.fds:
            return None
        f = self.fds[int(name)]
        target = f.node.path if f.node is not None else {
            "console": ("pipe:[console%d]" % f.dev), "null": "/dev/null",
            "zero": "/dev/zero"}.get(f.kind, "anon_inode:[file]")
        return Inode(f"/proc/self/fd/{name}", S_IFLNK | 0o700, 1000 + int(name), target=target)


# -- files -----------------------------------------------------------------------------------------
def sys_read(t, fd, buf, count, *_):
    f = t.fds.get(fd)
    if f is None or not f.readable:
        return -EBADF
    if count >= 1 << 31:
        return -EINVAL
    count = min(count, 1 << 20)
    if f.kind == "dir":
        return -EISDIR
    if count == 0:
        return 0
    if f.kind == "console":
        n = yield from t.console(ConsoleDevice.CMD_READ, f.dev, b"", min(count, PAGE_SIZE))
        if n <= 0:
            return n
        data = yield from t.k.mem.read(t.k.bounce_virt, n)
    elif f.kind == "reg":
        data = f.node.data[f.pos:f.pos + count]
    elif f.kind == "zero":
        data = bytes(count)
    else:                                              # /dev/null
        data = b""
    yield from t.write_user(buf, data)
    if f.kind == "reg":
        f.pos += len(data)
    return len(data)


def sys_write(t, fd, buf, count, *_):
    f = t.fds.get(fd)
    if f is None or not f.writable:
        return -EBADF
    if count >= 1 << 31:
        return -EINVAL
    data = yield from t.read_user(buf, min(count, 1 << 20))
    if f.kind in ("null", "zero"):
        return len(data)
    if f.kind != "console":
        return -EBADF
    if not data:
        return 0
    return (yield from t.console_write(f.dev, data))


def _iovecs(t, iov, iovcnt):
    if iovcnt > 1024:
        return None
    raw = yield from t.read_user(iov, 8 * iovcnt)
    vecs = [struct.unpack_from("<II", raw, 8 * i) for i in range(iovcnt)]
    if sum(length for _, length in vecs) >= 1 << 31 or any(n >= 1 << 31 for _, n in vecs):
        return None
    return vecs


def sys_writev(t, fd, iov, iovcnt, *_):
    f = t.fds.get(fd)
    if f is None or not f.writable:
        return -EBADF
    vecs = yield from _iovecs(t, iov, iovcnt)
    if vecs is None:
        return -EINVAL
    # One request to the device, as the console gets a writev in one piece.
    parts = []
    for base, length in vecs:
        parts.append((yield from t.read_user(base, length)))
    data = b"".join(parts)
    if f.kind in ("null", "zero"):
        return len(data)
    if f.kind != "console":
        return -EBADF
    return (yield from t.console_write(f.dev, data)) if data else 0


def sys_readv(t, fd, iov, iovcnt, *_):
    f = t.fds.get(fd)
    if f is None or not f.readable:
        return -EBADF
    vecs = yield from _iovecs(t, iov, iovcnt)
    if vecs is None:
        return -EINVAL
    total = 0
    for base, length in vecs:
        n = yield from sys_read(t, fd, base, length)
        if n < 0:
            return n if total == 0 else total
        total += n
        if n < length:
            break
    return total


def _pos64(lo, hi) -> int:
    pos = lo | hi << 32
    return pos - (1 << 64) if pos >= 1 << 63 else pos


def sys_pread64(t, fd, buf, count, lo, hi, *_):
    f = t.fds.get(fd)
    if f is None or not f.readable:
        return -EBADF
    if f.kind == "console":
        return -ESPIPE
    pos = _pos64(lo, hi)
    if pos < 0:
        return -EINVAL
    if f.kind == "dir":
        return -EISDIR
    saved = f.pos
    f.pos = pos
    try:
        return (yield from sys_read(t, fd, buf, count))
    finally:
        f.pos = saved


def sys_pwrite64(t, fd, buf, count, lo, hi, *_):
    f = t.fds.get(fd)
    if f is None or not f.writable:
        return -EBADF
    if f.kind == "console":
        return -ESPIPE
    return (yield from sys_write(t, fd, buf, count))


def _open(t, dirfd, path, flags, mode):
    if len(path) >= 4096:
        return -ENAMETOOLONG
    node, where = t.resolve(path, dirfd, follow=not flags & O_NOFOLLOW)
    if node is None:
        if where == -ENOENT and flags & O_CREAT:
            parent, err = t.resolve(posixpath.dirname(canonical(path, t.cwd)) or "/")
            return -EROFS if parent is not None else err
        return where
    if flags & O_CREAT and flags & O_EXCL:
        return -EEXIST
    access = flags & O_ACCMODE
    kept = flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)
    if node.magic_fd >= 0:
        # Opening /proc/self/fd/N (/dev/stdout...): a new open file on what N has.
        old = t.fds[node.magic_fd]
        if old.kind == "reg" and access != 0:
            return -EROFS
        f = File(old.kind, old.node, old.dev, 0, kept)
        return t.new_fd(f, cloexec=bool(flags & O_CLOEXEC))
    if node.kind == S_IFLNK:
        return -ELOOP                                  # O_NOFOLLOW on a link
    if flags & O_DIRECTORY and node.kind != S_IFDIR:
        return -ENOTDIR
    if node.kind == S_IFDIR and (access != 0 or flags & O_CREAT):
        return -EISDIR
    if node.kind == S_IFREG:
        if access != 0 or flags & O_TRUNC and access != 0:
            return -EROFS
        f = File("reg", node, flags=kept)
    elif node.kind == S_IFDIR:
        f = File("dir", node, flags=kept)
    else:
        f = File(node.device, node, flags=kept)
    return t.new_fd(f, cloexec=bool(flags & O_CLOEXEC))


def sys_open(t, path_ptr, flags, mode, *_):
    path = yield from t.path_user(path_ptr)
    return _open(t, AT_FDCWD, path, flags, mode)


def sys_openat(t, dirfd, path_ptr, flags, mode, *_):
    path = yield from t.path_user(path_ptr)
    return _open(t, dirfd, path, flags, mode)


def sys_creat(t, path_ptr, mode, *_):
    path = yield from t.path_user(path_ptr)
    return _open(t, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode)


def sys_close(t, fd, *_):
    if t.fds.pop(fd, None) is None:
        return -EBADF
    t.cloexec.discard(fd)
    return 0
    yield


def _seek(t, fd, offset, whence):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.kind == "console":
        return -ESPIPE
    if f.kind in ("null", "zero"):
        return 0
    size = f.node.size if f.kind == "reg" else len(t.tree.children(f.node.path)) + 2
    if whence == 0:
        new = offset
    elif whence == 1:
        new = f.pos + offset
    elif whence == 2:
        new = size + offset
    elif whence in (3, 4) and f.kind == "reg":         # SEEK_DATA, SEEK_HOLE
        if not 0 <= offset < size:
            return -ENXIO
        new = offset if whence == 3 else size
    else:
        return -EINVAL
    if new < 0:
        return -EINVAL
    f.pos = new
    return new


def sys_llseek(t, fd, high, low, result_ptr, whence, *_):
    new = _seek(t, fd, _pos64(low, high), whence)
    if new >= 0:
        yield from t.write_user(result_ptr, struct.pack("<q", new))
        return 0
    return new


def sys_lseek(t, fd, offset, whence, *_):
    new = _seek(t, fd, offset - (1 << 32) if offset >= 1 << 31 else offset, whence)
    if new >= 1 << 31:
        return -EOVERFLOW
    return new
    yield


def sys_getdents64(t, fd, dirp, count, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.kind != "dir":
        return -ENOTDIR
    me = f.node
    parent = t.tree.nodes.get(posixpath.dirname(me.path), me)
    entries = [(me, "."), (parent, "..")] + [(n, posixpath.basename(n.path))
                                            for n in t.tree.children(me.path)]
    out = bytearray()
    while f.pos < len(entries):
        node, name = entries[f.pos]
        raw = name.encode(errors="surrogateescape") + b"\0"
        reclen = (19 + len(raw) + 7) & ~7
        if len(out) + reclen > count:
            if not out:
                return -EINVAL
            break
        rec = struct.pack("<QqHB", node.ino, f.pos + 1, reclen, node.kind >> 12) + raw
        out += rec.ljust(reclen, b"\0")
        f.pos += 1
    yield from t.write_user(dirp, bytes(out))
    return len(out)


def _stat64(node: Inode) -> bytes:
    """struct stat64 (i386): 96 bytes."""
    st = bytearray(96)
    struct.pack_into("<Q", st, 0, 0x801 if node.kind != S_IFCHR else 5)     # st_dev
    struct.pack_into("<I", st, 12, node.ino & 0xFFFFFFFF)  # __st_ino
    struct.pack_into("<I", st, 16, node.mode)              # st_mode
    struct.pack_into("<I", st, 20, 2 if node.kind == S_IFDIR else 1)
    struct.pack_into("<Q", st, 32, node.rdev)              # st_rdev
    struct.pack_into("<q", st, 44, node.size)              # st_size
    struct.pack_into("<I", st, 52, 4096)                   # st_blksize
    struct.pack_into("<Q", st, 56, (node.size + 511) // 512)
    struct.pack_into("<Q", st, 88, node.ino)               # st_ino
    return bytes(st)


def _statx(node: Inode) -> bytes:
    """struct statx: 256 bytes, the basic fields (STATX_BASIC_STATS)."""
    st = bytearray(256)
    struct.pack_into("<IIQIIIH", st, 0, 0x7FF, 4096, 0, 2 if node.kind == S_IFDIR else 1,
                     0, 0, node.mode)
    struct.pack_into("<QQQ", st, 32, node.ino, node.size, (node.size + 511) // 512)
    struct.pack_into("<IIII", st, 128, node.rdev >> 8, node.rdev & 0xFF,
                     0 if node.kind == S_IFCHR else 8, 0 if node.kind == S_IFCHR else 1)
    return bytes(st)


def _console_node(f: File) -> Inode:
    """What fstat says about a standard stream: the console is a byte
    stream that is no terminal, which is what a pipe is."""
    return Inode(f"pipe:[console{f.dev}]", S_IFIFO | 0o600, 3 + f.dev)


def _fd_node(t, fd):
    f = t.fds.get(fd)
    if f is None:
        return None
    return f.node if f.node is not None else _console_node(f)


def sys_fstat64(t, fd, buf, *_):
    node = _fd_node(t, fd)
    if node is None:
        return -EBADF
    yield from t.write_user(buf, _stat64(node))
    return 0


def _stat_path(t, dirfd, path_ptr, flags):
    """The Inode a *stat call names, or -errno."""
    path = yield from t.path_user(path_ptr)
    if path == "" and flags & AT_EMPTY_PATH:
        if dirfd == AT_FDCWD:
            return t.tree.nodes[t.cwd]
        node = _fd_node(t, dirfd)
        return node if node is not None else -EBADF
    node, err = t.resolve(path, dirfd, follow=not flags & AT_SYMLINK_NOFOLLOW)
    return node if node is not None else err


def sys_stat64(t, path_ptr, buf, *_):
    node = yield from _stat_path(t, AT_FDCWD, path_ptr, 0)
    if isinstance(node, int):
        return node
    yield from t.write_user(buf, _stat64(node))
    return 0


def sys_lstat64(t, path_ptr, buf, *_):
    node = yield from _stat_path(t, AT_FDCWD, path_ptr, AT_SYMLINK_NOFOLLOW)
    if isinstance(node, int):
        return node
    yield from t.write_user(buf, _stat64(node))
    return 0


def sys_fstatat64(t, dirfd, path_ptr, buf, flags, *_):
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800):     # | AT_NO_AUTOMOUNT
        return -EINVAL
    node = yield from _stat_path(t, dirfd, path_ptr, flags)
    if isinstance(node, int):
        return node
    yield from t.write_user(buf, _stat64(node))
    return 0


def sys_statx(t, dirfd, path_ptr, flags, mask, buf, *_):
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800 | 0x6000):
        return -EINVAL
    node = yield from _stat_path(t, dirfd, path_ptr, flags)
    if isinstance(node, int):
        return node
    yield from t.write_user(buf, _statx(node))
    return 0


def _access(t, dirfd, path_ptr, mode, flags):
    if mode & ~7:
        return -EINVAL
    path = yield from t.path_user(path_ptr)
    node, err = t.resolve(path, dirfd, follow=not flags & AT_SYMLINK_NOFOLLOW)
    if node is None:
        return err
    if mode & 2 and node.kind in (S_IFREG, S_IFDIR, S_IFLNK):
        return -EROFS
    if mode & 1 and node.kind == S_IFREG and not node.mode & 0o111:
        return -EACCES                                 # root, but nothing may execute it
    return 0


def sys_access(t, path_ptr, mode, *_):
    return (yield from _access(t, AT_FDCWD, path_ptr, mode, 0))


def sys_faccessat(t, dirfd, path_ptr, mode, *_):
    return (yield from _access(t, dirfd, path_ptr, mode, 0))


def sys_faccessat2(t, dirfd, path_ptr, mode, flags, *_):
    if flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        return -EINVAL
    return (yield from _access(t, dirfd, path_ptr, mode, flags))


def _readlink(t, dirfd, path_ptr, buf, size):
    path = yield from t.path_user(path_ptr)
    if size >= 1 << 31 or size == 0:
        return -EINVAL
    node, err = t.resolve(path, dirfd, follow=False)
    if node is None:
        return err
    if node.kind != S_IFLNK:
        return -EINVAL
    data = node.target.encode(errors="surrogateescape")[:size]
    yield from t.write_user(buf, data)
    return len(data)


def sys_readlink(t, path_ptr, buf, size, *_):
    return (yield from _readlink(t, AT_FDCWD, path_ptr, buf, size))


def sys_readlinkat(t, dirfd, path_ptr, buf, size, *_):
    return (yield from _readlink(t, dirfd, path_ptr, buf, size))


def _read_only(t, dirfd, path_ptr, exists_is_error: bool):
    """A call that would change the tree: -EROFS, after the checks that
    come first (the name must exist, or must not for mkdir)."""
    path = yield from t.path_user(path_ptr)
    node, err = t.resolve(path, dirfd, follow=False)
    if exists_is_error:
        return -EEXIST if node is not None else -EROFS
    return err if node is None else -EROFS


def sys_unlink(t, path_ptr, *_):
    return (yield from _read_only(t, AT_FDCWD, path_ptr, False))


def sys_unlinkat(t, dirfd, path_ptr, flags, *_):
    return (yield from _read_only(t, dirfd, path_ptr, False))


def sys_mkdir(t, path_ptr, mode, *_):
    return (yield from _read_only(t, AT_FDCWD, path_ptr, True))


def sys_mkdirat(t, dirfd, path_ptr, mode, *_):
    return (yield from _read_only(t, dirfd, path_ptr, True))


def sys_rename(t, old_ptr, new_ptr, *_):
    return (yield from _read_only(t, AT_FDCWD, old_ptr, False))


def sys_renameat(t, olddirfd, old_ptr, *_):
    return (yield from _read_only(t, olddirfd, old_ptr, False))


def sys_chmod(t, path_ptr, mode, *_):
    return (yield from _read_only(t, AT_FDCWD, path_ptr, False))


def sys_fchmodat(t, dirfd, path_ptr, mode, *_):
    return (yield from _read_only(t, dirfd, path_ptr, False))


def sys_fchmod(t, fd, mode, *_):
    return -EBADF if fd not in t.fds else -EROFS
    yield


def sys_getcwd(t, buf, size, *_):
    data = t.cwd.encode(errors="surrogateescape") + b"\0"
    if size < len(data):
        return -ERANGE
    yield from t.write_user(buf, data)
    return len(data)


def sys_chdir(t, path_ptr, *_):
    path = yield from t.path_user(path_ptr)
    node, err = t.resolve(path)
    if node is None:
        return err
    if node.kind != S_IFDIR:
        return -ENOTDIR
    t.cwd = node.path
    return 0


def sys_fchdir(t, fd, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if f.kind != "dir":
        return -ENOTDIR
    t.cwd = f.node.path
    return 0
    yield


def sys_umask(t, mask, *_):
    old, t.umask = t.umask, mask & 0o777
    return old
    yield


TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGPGRP, TIOCSPGRP = 0x5401, 0x5402, 0x5403, 0x5404, \
    0x540F, 0x5410
TIOCGWINSZ, TIOCSWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX = 0x5413, 0x5414, 0x541B, \
    0x5421, 0x5450, 0x5451


def sys_ioctl(t, fd, request, arg, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if request == FIOCLEX:
        t.cloexec.add(fd)
        return 0
    if request == FIONCLEX:
        t.cloexec.discard(fd)
        return 0
    if request == FIONBIO:
        on = yield from t.read_user(arg, 4)
        f.flags = f.flags | O_NONBLOCK if any(on) else f.flags & ~O_NONBLOCK
        return 0
    if request == FIONREAD and f.kind == "reg":
        yield from t.write_user(arg, struct.pack("<i", max(0, f.node.size - f.pos)))
        return 0
    # TCGETS, TIOCGWINSZ and every other terminal request: the console is a
    # byte stream (like a pipe) and files are files, so none is a tty.
    return -ENOTTY


F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW, F_GETLK64, F_SETLK64, F_SETLKW64 = 5, 6, 7, 12, 13, 14
F_DUPFD_CLOEXEC = 1030
SETFL_MASK = O_APPEND | O_NONBLOCK | 0o20000 | 0o40000 | O_LARGEFILE | 0o1000000


def sys_fcntl64(t, fd, cmd, arg, *_):
    f = t.fds.get(fd)
    if f is None:
        return -EBADF
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        if arg >= NOFILE:
            return -EINVAL
        return t.new_fd(f, arg, cmd == F_DUPFD_CLOEXEC)
    if cmd == F_GETFD:
        return 1 if fd in t.cloexec else 0
    if cmd == F_SETFD:
        (t.cloexec.add if arg & 1 else t.cloexec.discard)(fd)
        return 0
    if cmd == F_GETFL:
        return f.flags
    if cmd == F_SETFL:
        f.flags = f.flags & ~SETFL_MASK | arg & SETFL_MASK
        return 0
    if cmd in (F_GETLK, F_GETLK64):
        # One process: no lock of another is ever in the way (l_type = F_UNLCK).
        yield from t.write_user(arg, struct.pack("<h", 2))
        return 0
    if cmd in (F_SETLK, F_SETLKW, F_SETLK64, F_SETLKW64):
        return 0
    return -EINVAL


def sys_dup(t, oldfd, *_):
    f = t.fds.get(oldfd)
    if f is None:
        return -EBADF
    return t.new_fd(f)
    yield


def sys_dup2(t, oldfd, newfd, *_):
    f = t.fds.get(oldfd)
    if f is None:
        return -EBADF
    if newfd >= NOFILE:
        return -EBADF
    if oldfd != newfd:
        t.fds[newfd] = f
        t.cloexec.discard(newfd)
    return newfd
    yield


def sys_dup3(t, oldfd, newfd, flags, *_):
    if oldfd == newfd or flags & ~O_CLOEXEC:
        return -EINVAL
    r = yield from sys_dup2(t, oldfd, newfd)
    if r >= 0 and flags & O_CLOEXEC:
        t.cloexec.add(newfd)
    return r


def _sendfile(t, out_fd, in_fd, offset_ptr, count, wide: bool):
    fin, fout = t.fds.get(in_fd), t.fds.get(out_fd)
    if fin is None or fout is None or not fin.readable or not fout.writable:
        return -EBADF
    if fin.kind != "reg":
        return -EINVAL
    fmt = "<q" if wide else "<i"
    if offset_ptr:
        pos = struct.unpack(fmt, (yield from t.read_user(offset_ptr, struct.calcsize(fmt))))[0]
        if pos < 0:
            return -EINVAL
    else:
        pos = fin.pos
    data = fin.node.data[pos:pos + min(count, 1 << 20)]
    if fout.kind == "console":
        n = (yield from t.console_write(fout.dev, data)) if data else 0
    elif fout.kind in ("null", "zero"):
        n = len(data)
    else:
        return -EINVAL
    if n < 0:
        return n
    if offset_ptr:
        yield from t.write_user(offset_ptr, struct.pack(fmt, pos + n))
    else:
        fin.pos = pos + n
    return n


def sys_sendfile(t, out_fd, in_fd, offset_ptr, count, *_):
    return (yield from _sendfile(t, out_fd, in_fd, offset_ptr, count, False))


def sys_sendfile64(t, out_fd, in_fd, offset_ptr, count, *_):
    return (yield from _sendfile(t, out_fd, in_fd, offset_ptr, count, True))


# -- process ---------------------------------------------------------------------------------------
def sys_exit(t, status, *_):
    yield from t.exit(status)


def sys_getpid(t, *_):
    return t.pid
    yield


def sys_getppid(t, *_):
    return 0
    yield


def sys_zero(t, *_):
    """getuid32 and friends: root, group 0; and the calls that just succeed."""
    return 0
    yield


def sys_getpgid(t, pid, *_):
    return t.pid if pid in (0, t.pid) else -ESRCH
    yield


def sys_setpgid(t, pid, pgid, *_):
    if pid not in (0, t.pid) or pgid not in (0, t.pid):
        return -ESRCH if pid not in (0, t.pid) else -EPERM
    return 0
    yield


def sys_setsid(t, *_):
    return -EPERM                                      # already a process group leader
    yield


def sys_setid(t, uid, *_):
    """setuid32 and friends: root may become root."""
    return 0 if uid in (0, 0xFFFFFFFF) else -EPERM
    yield


def sys_getresid(t, a, b, c, *_):
    for ptr in (a, b, c):
        yield from t.write_user(ptr, bytes(4))
    return 0


def sys_getgroups(t, size, lst, *_):
    return 0
    yield


def sys_set_tid_address(t, tidptr, *_):
    t.tid_address = tidptr
    return t.pid
    yield


def sys_set_robust_list(t, head, length, *_):
    return 0 if length == 12 else -EINVAL
    yield


def sys_rt_sigaction(t, sig, act, oldact, sigsetsize, *_):
    if sigsetsize != 8 or not 1 <= sig <= 64 or act and sig in (SIGKILL, SIGSTOP):
        return -EINVAL
    new = (yield from t.read_user(act, 20)) if act else None
    if oldact:
        yield from t.write_user(oldact, t.sigactions.get(sig, bytes(20)))
    if new is not None:
        t.sigactions[sig] = new
    return 0


def sys_rt_sigprocmask(t, how, nset, oset, sigsetsize, *_):
    if sigsetsize != 8:
        return -EINVAL
    old = t.sigmask
    if nset:
        if how not in (0, 1, 2):                       # SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK
            return -EINVAL
        mask = struct.unpack("<Q", (yield from t.read_user(nset, 8)))[0]
        mask &= ~(1 << (SIGKILL - 1) | 1 << (SIGSTOP - 1))
        t.sigmask = old | mask if how == 0 else old & ~mask if how == 1 else mask
    if oset:
        yield from t.write_user(oset, struct.pack("<Q", old))
    return 0


def sys_sigaltstack(t, ss, oss, *_):
    new = (yield from t.read_user(ss, 12)) if ss else None
    if oss:
        yield from t.write_user(oss, t.altstack)
    if new is not None:
        t.altstack = new
    return 0


def _signal_self(t, sig):
    if sig == 0:
        return 0
    if not 1 <= sig <= 64:
        return -EINVAL
    handler = struct.unpack_from("<I", t.sigactions.get(sig, bytes(20)))[0]
    if sig not in (SIGKILL, SIGSTOP):
        if handler == SIG_IGN or handler == SIG_DFL and sig in SIG_DEFAULT_IGNORE:
            return 0
        if t.sigmask & 1 << (sig - 1):
            return 0                                   # blocked: stays pending for ever
    what = "signal sent to itself" if handler == SIG_DFL else \
        "signal sent to itself (its handler cannot run here)"
    yield from t.force_sig(sig, what)


def sys_kill(t, pid, sig, *_):
    if pid not in (0, t.pid, 0xFFFFFFFF, (-t.pid) & 0xFFFFFFFF):
        return -ESRCH
    return (yield from _signal_self(t, sig))


def sys_tkill(t, tid, sig, *_):
    if tid != t.pid:
        return -ESRCH if tid < 1 << 31 else -EINVAL
    return (yield from _signal_self(t, sig))


def sys_tgkill(t, tgid, tid, sig, *_):
    if tgid != t.pid:
        return -ESRCH if tgid < 1 << 31 else -EINVAL
    return (yield from sys_tkill(t, tid, sig))


def sys_uname(t, buf, *_):
    fields = [b"Linux", b"lguest", b"2.6.32-lguest-py", b"#1 SMP pylguest", b"i686", b"(none)"]
    yield from t.write_user(buf, b"".join(f.ljust(65, b"\0") for f in fields))
    return 0


# RLIMIT_STACK, RLIMIT_NOFILE, RLIMIT_CORE; the others are unlimited.
RLIMITS = {3: (8 << 20, RLIM_INFINITY), 7: (NOFILE, 4096), 4: (0, RLIM_INFINITY)}


def sys_ugetrlimit(t, resource, rlim, *_):
    if resource >= 16:
        return -EINVAL
    cur, max_ = RLIMITS.get(resource, (RLIM_INFINITY, RLIM_INFINITY))
    yield from t.write_user(rlim, struct.pack("<II", cur, max_))
    return 0


def sys_getrlimit(t, resource, rlim, *_):
    """The old getrlimit: infinity shows as 0x7fffffff."""
    if resource >= 16:
        return -EINVAL
    cur, max_ = RLIMITS.get(resource, (RLIM_INFINITY, RLIM_INFINITY))
    yield from t.write_user(rlim, struct.pack("<II", min(cur, 0x7FFFFFFF), min(max_, 0x7FFFFFFF)))
    return 0


def sys_setrlimit(t, resource, rlim, *_):
    if resource >= 16:
        return -EINVAL
    yield from t.read_user(rlim, 8)
    return 0


def sys_prlimit64(t, pid, resource, new, old, *_):
    if pid not in (0, t.pid):
        return -ESRCH
    if resource >= 16:
        return -EINVAL
    if new:
        yield from t.read_user(new, 16)
    if old:
        cur, max_ = RLIMITS.get(resource, (RLIM_INFINITY, RLIM_INFINITY))
        wide = [(1 << 64) - 1 if v == RLIM_INFINITY else v for v in (cur, max_)]
        yield from t.write_user(old, struct.pack("<QQ", *wide))
    return 0


PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_SET_NAME, PR_GET_NAME = 15, 16


def sys_prctl(t, option, arg2, *_):
    if option == PR_SET_NAME:
        raw = yield from t.read_user(arg2, 16)
        t.comm = raw.split(b"\0", 1)[0][:15].decode(errors="surrogateescape")
        return 0
    if option == PR_GET_NAME:
        yield from t.write_user(arg2, t.comm.encode(errors="surrogateescape")[:15].ljust(16, b"\0"))
        return 0
    if option == PR_GET_DUMPABLE:
        return 1
    if option == PR_SET_DUMPABLE:
        return 0 if arg2 in (0, 1) else -EINVAL
    if option == PR_SET_PDEATHSIG:
        return 0 if arg2 <= 64 else -EINVAL
    if option == PR_GET_PDEATHSIG:
        yield from t.write_user(arg2, bytes(4))
        return 0
    return -EINVAL


def sys_getrandom(t, buf, count, flags, *_):
    if flags & ~7 or flags & 6 == 6:                   # NONBLOCK | RANDOM | INSECURE
        return -EINVAL
    count = min(count, 1 << 25)
    written = 0
    while written < count:
        chunk = t.k.random_bytes(min(count - written, PAGE_SIZE))
        yield from t.write_user(buf + written, chunk)
        written += len(chunk)
    return count


def sys_sched_getaffinity(t, pid, length, mask, *_):
    if pid not in (0, t.pid):
        return -ESRCH
    if length < 4 or length & 3:
        return -EINVAL
    yield from t.write_user(mask, struct.pack("<I", 1))
    return 4


def sys_sched_setaffinity(t, pid, length, mask, *_):
    if pid not in (0, t.pid):
        return -ESRCH
    raw = yield from t.read_user(mask, min(length, 128))
    return 0 if raw and raw[0] & 1 else -EINVAL


def sys_sysinfo(t, info, *_):
    k = t.k
    uptime = (yield from k.monotonic_ns()) // 10**9
    free = k.pages.pages_free * PAGE_SIZE
    raw = struct.pack("<l3L6LH2x2LI", uptime, 0, 0, 0, k.ram_size, free, 0, 0, 0, 0, 1,
                      0, 0, 1)
    yield from t.write_user(info, raw.ljust(64, b"\0"))
    return 0


def sys_futex(t, uaddr, op, val, timeout, *_):
    cmd = op & 0x7F
    if cmd in (1, 10):                                 # FUTEX_WAKE, FUTEX_WAKE_BITSET
        return 0
    if cmd in (0, 9):                                  # FUTEX_WAIT, FUTEX_WAIT_BITSET
        word = struct.unpack("<I", (yield from t.read_user(uaddr, 4)))[0]
        if word != val:
            return -EAGAIN
        if not timeout:
            # The only thread waits for itself: it sleeps for ever.
            yield from sleep_ns(t.k, None)
        sec, nsec = struct.unpack("<iI", (yield from t.read_user(timeout, 8)))
        if sec < 0 or nsec >= 10**9:
            return -EINVAL
        yield from sleep_ns(t.k, sec * 10**9 + nsec)
        return -ETIMEDOUT
    return -ENOSYS


def sys_pause(t, *_):
    yield from sleep_ns(t.k, None)


def sys_sched_yield(t, *_):
    return 0
    yield


# -- memory ----------------------------------------------------------------------------------------
def sys_brk(t, addr, *_):
    """mm/mmap.c's brk: grow or shrink the heap area; a failure returns the
    old break."""
    mm = t.k.mm
    if addr < mm.start_brk:
        return mm.brk
    old_end, new_end = page_align(mm.brk), page_align(addr)
    if new_end > mmu.MMAP_END:
        return mm.brk
    if new_end < old_end:
        yield from mmu.do_munmap(t.k, mm, new_end, old_end)
    elif new_end > old_end:
        if mm.overlaps(old_end, new_end):
            return mm.brk
        below = mm.find_vma(old_end - 1) if old_end > mm.start_brk else None
        if below is not None and below.name == "[heap]" and below.end == old_end \
                and below.prot == PROT_READ | PROT_WRITE:
            below.end = new_end
        else:
            mm.add_vma(old_end, new_end, PROT_READ | PROT_WRITE, "[heap]")
    mm.brk = addr
    return mm.brk


def _mmap(t, addr, length, prot, flags, fd, pgoff):
    mm = t.k.mm
    if length == 0 or prot & ~(7 | PROT_GROWSDOWN | PROT_GROWSUP):
        return -EINVAL
    if flags & MAP_TYPE not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        return -EINVAL
    length = page_align(length)
    if length == 0 or length > mmu.MMAP_END:
        return -ENOMEM
    source = None
    if not flags & MAP_ANONYMOUS:
        f = t.fds.get(fd)
        if f is None:
            return -EBADF
        if f.kind == "console":
            return -ENODEV
        if f.kind == "dir":
            return -ENODEV
        if not f.readable or flags & MAP_TYPE != MAP_PRIVATE and prot & PROT_WRITE:
            return -EACCES
        if pgoff + (length >> 12) > 1 << 20:
            return -EOVERFLOW
        if f.kind == "reg":
            source = memoryview(f.node.data)
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr & 0xFFF or addr < PAGE_SIZE or addr + length > mmu.USER_TOP:
            return -EINVAL
        if flags & MAP_FIXED_NOREPLACE and not flags & MAP_FIXED \
                and mm.overlaps(addr, addr + length):
            return -EEXIST
        yield from mmu.do_munmap(t.k, mm, addr, addr + length)
        start = addr
    else:
        start = mm.get_unmapped_area(length, addr & ~0xFFF if addr < mmu.USER_TOP else 0)
        if start is None:
            return -ENOMEM
    mm.add_vma(start, start + length, prot & 7, "", source, pgoff if source is not None else 0)
    return start


def sys_mmap2(t, addr, length, prot, flags, fd, pgoff):
    return (yield from _mmap(t, addr, length, prot, flags, fd, pgoff))


def sys_mmap(t, args_ptr, *_):
    """old_mmap: the six arguments in a block in user memory, offset in bytes."""
    raw = yield from t.read_user(args_ptr, 24)
    addr, length, prot, flags, fd, offset = struct.unpack("<6I", raw)
    if offset & 0xFFF:
        return -EINVAL
    return (yield from _mmap(t, addr, length, prot, flags, fd, offset >> 12))


def sys_munmap(t, addr, length, *_):
    if addr & 0xFFF or length == 0 or length >= mmu.USER_TOP or addr + length > mmu.USER_TOP:
        return -EINVAL
    yield from mmu.do_munmap(t.k, t.k.mm, addr, addr + page_align(length))
    return 0


def sys_mprotect(t, addr, length, prot, *_):
    if addr & 0xFFF or prot & ~(7 | PROT_GROWSDOWN | PROT_GROWSUP):
        return -EINVAL
    end = addr + page_align(length)
    if end > mmu.USER_TOP or end < addr:
        return -ENOMEM
    if end == addr:
        return 0
    done = yield from mmu.do_mprotect(t.k, t.k.mm, addr, end, prot & 7)
    return 0 if done else -ENOMEM


def sys_mremap(t, old, old_size, new_size, flags, new_addr, *_):
    """mm/mremap.c: shrink in place, grow in place, or move (MAYMOVE)."""
    mm = t.k.mm
    if old & 0xFFF or flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
        return -EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return -EINVAL
    old_size, new_size = page_align(old_size), page_align(new_size)
    if new_size == 0 or new_size > mmu.MMAP_END:
        return -EINVAL
    vma = mm.find_vma(old)
    if vma is None or old + old_size > vma.end:
        return -EFAULT
    if old_size == 0:
        return -EINVAL                                 # duplicating shared mappings: none here
    if flags & MREMAP_FIXED:
        if new_addr & 0xFFF or new_addr + new_size > mmu.USER_TOP or \
                new_addr < old + old_size and old < new_addr + new_size:
            return -EINVAL
        yield from mmu.do_munmap(t.k, mm, new_addr, new_addr + new_size)
        target = new_addr
    else:
        if new_size <= old_size:
            yield from mmu.do_munmap(t.k, mm, old + new_size, old + old_size)
            return old
        grow_end = old + new_size
        if old + old_size == vma.end and grow_end <= mmu.MMAP_END \
                and not mm.overlaps(vma.end, grow_end):
            vma.end = grow_end
            return old
        if not flags & MREMAP_MAYMOVE:
            return -ENOMEM
        target = mm.get_unmapped_area(new_size)
        if target is None:
            return -ENOMEM
    keep = min(old_size, new_size)
    pieces = mm.carve(old, old + keep)
    for piece in pieces:
        moved = piece.piece(piece.start, piece.end)
        moved.start, moved.end = piece.start - old + target, piece.end - old + target
        mm.insert(moved)
    if new_size > keep:
        last = pieces[-1]
        mm.insert(mmu.Vma(target + keep, target + new_size, last.prot, last.name, last.file,
                          last.pgoff + (last.end - last.start) // PAGE_SIZE))
    yield from mmu.move_pages(t.k, mm, old, target, keep)
    if old_size > keep:
        yield from mmu.do_munmap(t.k, mm, old + keep, old + old_size)
    return target


def sys_madvise(t, addr, length, advice, *_):
    if addr & 0xFFF:
        return -EINVAL
    end = addr + page_align(length)
    mm = t.k.mm
    if not mm.covered(addr, end):
        return -ENOMEM
    if advice == MADV_DONTNEED:
        # Private pages are dropped: the next touch finds zeroes (or the file).
        yield from mmu.unmap_range(t.k, mm, addr, end)
    return 0


# -- TLS -------------------------------------------------------------------------------------------
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
    if not_present and read_exec_only and not (base or limit or seg_32bit or contents
                                                or limit_in_pages or useable):
        desc = 0                                       # LDT_empty: clear the entry
    elif not base and not limit and not flags:
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


def sys_get_thread_area(t, uinfo, *_):
    entry = struct.unpack("<i", (yield from t.read_user(uinfo, 4)))[0]
    if not GDT_ENTRY_TLS_MIN <= entry <= GDT_ENTRY_TLS_MAX:
        return -EINVAL
    desc = t.tls[entry - GDT_ENTRY_TLS_MIN]
    base = (desc >> 16 & 0xFFFFFF) | (desc >> 56 & 0xFF) << 24
    limit = (desc & 0xFFFF) | (desc >> 48 & 0xF) << 16
    access, nibble = desc >> 40 & 0xFF, desc >> 52 & 0xF
    flags = (nibble >> 2 & 1) | (access >> 2 & 3) << 1 | (0 if access & 2 else 1) << 3 | \
        (nibble >> 3 & 1) << 4 | (0 if access & 0x80 else 1) << 5 | (nibble & 1) << 6
    yield from t.write_user(uinfo, struct.pack("<iIII", entry, base, limit, flags))
    return 0


# -- time ------------------------------------------------------------------------------------------
def _clock_ns(t, clock):
    """The time on one of the clocks, or None for a clock there is not."""
    k = t.k
    if clock in CLOCK_REALTIME_IDS:
        return (yield from k.clock_ns())
    if clock in CLOCK_MONOTONIC_IDS or clock in CLOCK_CPUTIME_IDS:
        return (yield from k.monotonic_ns())
    return None


def _timespec(ns: int, wide: bool) -> bytes:
    return struct.pack("<qq" if wide else "<iI", ns // 10**9, ns % 10**9)


def _clock_gettime(t, clock, tp, wide):
    ns = yield from _clock_ns(t, clock)
    if ns is None:
        return -EINVAL
    yield from t.write_user(tp, _timespec(ns, wide))
    return 0


def sys_clock_gettime(t, clock, tp, *_):
    return (yield from _clock_gettime(t, clock, tp, False))


def sys_clock_gettime64(t, clock, tp, *_):
    return (yield from _clock_gettime(t, clock, tp, True))


def _clock_getres(t, clock, res, wide):
    if clock not in CLOCK_REALTIME_IDS | CLOCK_MONOTONIC_IDS | CLOCK_CPUTIME_IDS:
        return -EINVAL
    if res:
        coarse = clock in (5, 6)
        yield from t.write_user(res, _timespec(10**9 // USER_HZ if coarse else 1, wide))
    return 0


def sys_clock_getres(t, clock, res, *_):
    return (yield from _clock_getres(t, clock, res, False))


def sys_clock_getres_time64(t, clock, res, *_):
    return (yield from _clock_getres(t, clock, res, True))


def sys_gettimeofday(t, tv, tz, *_):
    ns = yield from t.k.clock_ns()
    if tv:
        yield from t.write_user(tv, struct.pack("<iI", ns // 10**9, ns % 10**9 // 1000))
    if tz:
        yield from t.write_user(tz, bytes(8))
    return 0


def sys_time(t, tloc, *_):
    ns = yield from t.k.clock_ns()
    if tloc:
        yield from t.write_user(tloc, struct.pack("<I", ns // 10**9))
    return ns // 10**9


def sys_times(t, buf, *_):
    ticks = (yield from t.k.monotonic_ns()) * USER_HZ // 10**9
    if buf:
        yield from t.write_user(buf, struct.pack("<4I", ticks, 0, 0, 0))
    return ticks & 0xFFFFFFFF


def _read_timespec(t, ptr, wide):
    if wide:
        sec, nsec = struct.unpack("<qq", (yield from t.read_user(ptr, 16)))
        nsec &= 0xFFFFFFFF                              # a 32-bit task: the high half is padding
    else:
        sec, nsec = struct.unpack("<iI", (yield from t.read_user(ptr, 8)))
    if sec < 0 or nsec >= 10**9:
        return None
    return sec * 10**9 + nsec


def sys_nanosleep(t, req, rem, *_):
    ns = yield from _read_timespec(t, req, False)
    if ns is None:
        return -EINVAL
    yield from sleep_ns(t.k, ns)
    return 0


def _clock_nanosleep(t, clock, flags, req, rem, wide):
    if clock in CLOCK_CPUTIME_IDS and clock == 3:
        return -EINVAL
    start = yield from _clock_ns(t, clock)
    if start is None:
        return -EINVAL
    ns = yield from _read_timespec(t, req, wide)
    if ns is None:
        return -EINVAL
    if flags & TIMER_ABSTIME:
        ns = max(0, ns - start)
    yield from sleep_ns(t.k, ns)
    return 0


def sys_clock_nanosleep(t, clock, flags, req, rem, *_):
    return (yield from _clock_nanosleep(t, clock, flags, req, rem, False))


def sys_clock_nanosleep_time64(t, clock, flags, req, rem, *_):
    return (yield from _clock_nanosleep(t, clock, flags, req, rem, True))


def sleep_ns(k, delta):
    """Arm the clock event and halt until the timer interrupt says it fired;
    `delta` None sleeps for ever (the Host sees a Guest nothing can wake)."""
    if delta is None:
        yield from boot.lguest_clockevent_shutdown(k)
        while True:
            yield from boot.lguest_safe_halt(k)
    start = yield from k.clock_ns()
    deadline = start + delta
    while True:
        now = yield from k.clock_ns()
        if now >= deadline:
            return
        k.timer_expired = False
        # The clock event takes an unsigned long of ns (its max_delta_ns):
        # a longer sleep is several of them.
        yield from boot.lguest_clockevent_set_next_event(k, min(deadline - now, MAX_DELTA_NS))
        while not k.timer_expired:
            yield from boot.lguest_safe_halt(k)


SYSCALLS = {
    1: sys_exit, 3: sys_read, 4: sys_write, 5: sys_open, 6: sys_close, 8: sys_creat,
    10: sys_unlink, 12: sys_chdir, 13: sys_time, 15: sys_chmod, 19: sys_lseek, 20: sys_getpid,
    23: sys_setid, 24: sys_zero, 29: sys_pause, 33: sys_access, 36: sys_zero, 37: sys_kill,
    38: sys_rename, 39: sys_mkdir, 40: sys_unlink, 41: sys_dup, 43: sys_times, 45: sys_brk,
    46: sys_setid, 47: sys_zero, 49: sys_zero, 50: sys_zero, 54: sys_ioctl, 55: sys_fcntl64,
    57: sys_setpgid, 60: sys_umask, 63: sys_dup2, 64: sys_getppid, 65: sys_getpid,
    66: sys_setsid, 75: sys_setrlimit, 76: sys_getrlimit, 78: sys_gettimeofday,
    85: sys_readlink, 90: sys_mmap, 91: sys_munmap, 94: sys_fchmod, 116: sys_sysinfo,
    122: sys_uname, 125: sys_mprotect, 132: sys_getpgid, 133: sys_fchdir, 140: sys_llseek,
    145: sys_readv, 146: sys_writev, 147: sys_getpgid, 148: sys_zero, 158: sys_sched_yield,
    162: sys_nanosleep, 163: sys_mremap, 172: sys_prctl, 174: sys_rt_sigaction,
    175: sys_rt_sigprocmask, 180: sys_pread64, 181: sys_pwrite64, 183: sys_getcwd,
    186: sys_sigaltstack, 187: sys_sendfile, 191: sys_ugetrlimit, 192: sys_mmap2,
    195: sys_stat64, 196: sys_lstat64, 197: sys_fstat64, 199: sys_zero, 200: sys_zero,
    201: sys_zero, 202: sys_zero, 205: sys_getgroups, 209: sys_getresid, 211: sys_getresid,
    213: sys_setid, 214: sys_setid, 219: sys_madvise, 220: sys_getdents64, 221: sys_fcntl64,
    224: sys_getpid, 238: sys_tkill, 239: sys_sendfile64, 240: sys_futex,
    241: sys_sched_setaffinity, 242: sys_sched_getaffinity, 243: sys_set_thread_area,
    244: sys_get_thread_area, 252: sys_exit, 258: sys_set_tid_address,
    265: sys_clock_gettime, 266: sys_clock_getres, 267: sys_clock_nanosleep, 270: sys_tgkill,
    295: sys_openat, 296: sys_mkdirat, 300: sys_fstatat64, 301: sys_unlinkat,
    302: sys_renameat, 305: sys_readlinkat, 306: sys_fchmodat, 307: sys_faccessat,
    311: sys_set_robust_list, 330: sys_dup3, 340: sys_prlimit64, 355: sys_getrandom,
    383: sys_statx, 403: sys_clock_gettime64, 406: sys_clock_getres_time64,
    407: sys_clock_nanosleep_time64, 439: sys_faccessat2,
}
