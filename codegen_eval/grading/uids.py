"""Sandbox uids, leased per slot and unique on the host while the slot lives.

A slot (one zygote) needs three uids: the candidate's, the check's and the AWS endpoint's. After each
job the zygote kills every process left with them, so two slots must never share one: not two zygotes
of one run, and not two runs at once. Slots are blocks of uids from a fixed list that every run on the
host computes alike (blocks inside the ranges of /etc/subuid or /etc/subgid, or of a uid that exists,
are skipped); a block is taken by an exclusive flock on its file in a directory only this user may
enter, and held by the zygote for as long as it lives (the kernel drops the lock when it dies).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
import tempfile

from codegen_eval.grading.zygote import Identity

UID_BASE = 200_000
STRIDE = 4  # candidate, check, endpoint, and one spare


def capacity() -> int:
    """Slots on the host: two zygotes per core for each run, four such runs at once."""
    return max(64, 8 * (os.cpu_count() or 1))


def reserved_ranges(files: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> list[tuple[int, int]]:
    """[start, end) ranges delegated to user namespaces: a sandbox uid there could be some container's root."""
    ranges = []
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                ranges.append((int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def slot_bases(count: int, reserved: list[tuple[int, int]]) -> list[int]:
    bases, base = [], UID_BASE
    while len(bases) < count and base < 2**31:
        block = range(base, base + STRIDE)
        if not any(start < block.stop and block.start < end for start, end in reserved) and not any(_exists(u) for u in block):
            bases.append(base)
        base += STRIDE
    return bases


def _exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def lock_dir() -> str:
    """/run/codegen-eval for root (mode 700); otherwise a mode-700 directory of this user in the temp dir."""
    path = "/run/codegen-eval" if os.geteuid() == 0 and os.access("/run", os.W_OK) else os.path.join(tempfile.gettempdir(), f"codegen-eval-uids-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{path} is not a private directory of uid {os.geteuid()}: cannot lease sandbox uids safely")
    return path


def lease() -> tuple[Identity, int]:
    """A free slot's identity and the descriptor that holds its lock (pass it to the zygote; close it
    here once the zygote has it)."""
    directory = lock_dir()
    for base in slot_bases(capacity(), reserved_ranges()):
        fd = os.open(os.path.join(directory, f"slot-{base}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Identity(candidate=base, check=base + 1, endpoint=base + 2, group=base), fd
    raise RuntimeError(f"all {capacity()} sandbox uid slots of this host are in use")
