"""The kernel side of the sandbox: the file system a zygote and its jobs see, and each job's namespaces
and privileges. Used by zygote.py (kept free of pydantic and of the rest of the package).

A zygote, once at its start (as root), moves into a mount namespace whose root is a fresh tmpfs holding
only what Python and its libraries need, each bound read-only at its own place: /usr and the library
directories, a few files of /etc, a handful of device nodes, the interpreter's prefixes, the import
path's site directories and this package. No project directory (only its `codegen_eval` package), no
dataset, run output, cache, home directory, /run, /var or world-writable directory exists there, and
the root itself is read-only. Each job then gets its own PID, IPC, UTS, network and mount namespaces,
a /proc that shows only its own processes, a tmpfs working directory, `no_new_privs` and an empty
capability bounding set (see `enter_job` and `drop_privileges`).
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 0x40000, 0x2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYS_PIVOT_ROOT = 155  # x86_64
WORKDIR = "/tmp/job"  # each job mounts its own tmpfs here
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "passwd group nsswitch.conf hosts host.conf resolv.conf ld.so.cache ld.so.conf ld.so.conf.d localtime "
    "mime.types ssl ca-certificates protocols services gai.conf alternatives"
).split()
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def root_sources(package_dir: str) -> list[str]:
    """What a job's file system holds besides /dev, /proc and its working directory: the system's
    libraries, the interpreter's prefixes, the import path's site directories and this package (not
    the directory it sits in: in a checkout that is the project, with its datasets and run outputs)."""
    wanted = [*SYSTEM, *(os.path.join("/etc", name) for name in ETC), package_dir]
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    wanted += sorted(prefixes)
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        inside = any(real == p or real.startswith(p + os.sep) for p in prefixes)
        if real and os.path.isdir(real) and (inside or os.path.basename(real) in ("site-packages", "dist-packages")):
            wanted.append(real)
    wanted.append(os.path.dirname(os.path.realpath(sys.executable)))
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in wanted if os.path.lexists(p)}, key=lambda p: (p.count(os.sep), p)):
        if not any(path.startswith(k + os.sep) for k in kept if not os.path.islink(k)):
            kept.append(path)
    return kept


def build_root(sources: list[str]) -> None:
    """In the zygote (root), once: a private mount namespace whose root is a read-only tmpfs holding
    `sources` (bound read-only at their own places), a few device nodes, /proc and an empty /tmp."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Open everything first: the new root is then mounted over /tmp (in this namespace only), which may
    # hide some of the sources (a venv under /tmp).
    links = {p: os.readlink(p) for p in sources if os.path.islink(p)}
    handles = {p: os.open(p, os.O_PATH) for p in sources if p not in links}
    devices = {d: os.open(f"/dev/{d}", os.O_PATH) for d in DEVICES if os.path.exists(f"/dev/{d}")}
    new = "/tmp"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for path in sorted(sources, key=lambda p: (p.count(os.sep), p)):
        target = new + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if path in links:
            os.symlink(links[path], target)
            continue
        _bind(handles.pop(path), target)
    os.makedirs(new + "/dev/shm", mode=0o755)
    for name, handle in devices.items():
        _bind(handle, f"{new}/dev/{name}", read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    os.makedirs(new + "/proc", mode=0o555)
    _mount("/proc", new + "/proc", None, MS_BIND | MS_REC)  # the zygote's own view; each job mounts its own
    os.makedirs(new + WORKDIR, mode=0o755)
    os.chdir(new)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind(handle: int, target: str, read_only: bool = True) -> None:
    if stat.S_ISDIR(os.fstat(handle).st_mode):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    _mount(f"/proc/self/fd/{handle}", target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY | MS_NODEV if read_only else 0)
    _mount(None, target, None, flags)
    os.close(handle)


def enter_job(workdir: str, group: int) -> None:
    """In the job process, pid 1 of a fresh PID namespace (root): its own mount, network, IPC and UTS
    namespaces, a /proc of its PID namespace only, and a fresh tmpfs as the working directory."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0770")
    os.chown(workdir, 0, group)
    os.chmod(workdir, 0o2770)  # both sides write here; files keep the shared group
    _libc.sethostname(b"sandbox", 7)


def drop_privileges() -> None:
    """Before the uid change (needs CAP_SETPCAP): no capability can come back, by exec or otherwise."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop a capability")


SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = 7, -4, -5


def clear_keyrings() -> None:
    """After the uid change: empty the uid's kernel keyrings. They outlive processes (a red team read, in
    a later run that leased the same uid, a key a candidate had added): no channel between jobs or runs."""
    for keyring in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING) if SYS_KEYCTL else ():
        _libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, keyring)


def die_with_parent() -> None:
    """SIGKILL when the parent dies (cleared by a uid change: call again after one)."""
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


class PidNamespaces:
    """The zygote's children each start a PID namespace of their own: unshare before the fork, then
    back to the zygote's own namespace for the next one (a second unshare would be refused)."""

    def __init__(self) -> None:
        self.own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def next_child_in_new(self) -> bool:
        return _libc.unshare(CLONE_NEWPID) == 0

    def restore(self) -> None:
        _check(_libc.setns(self.own, CLONE_NEWPID), "setns back to the zygote's PID namespace")
