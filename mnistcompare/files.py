"""Writing outputs safely: atomic files, and one run per output folder at a time."""
import contextlib
import fcntl
import json
import math
import os
import socket
import sys
import tempfile
import time

from mnistcompare.errors import RunError, UserError


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` that replaces it on success: readers never see half a file,
    and a crash or a full disk at any byte leaves the previous file whole."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(str(path))[1])
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def finite(data):
    """`data` with every non-finite float replaced by None: strict JSON has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def write_json(path, data):
    """Strict JSON (no NaN), written atomically."""
    write_text(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


class FolderLock:
    """An exclusive lock on an output folder for the whole of a run (`flock` on DIR/.lock).

    A second process on the same folder is refused with one line naming the
    holder. The kernel drops the lock when the holder ends, however it ends,
    so a killed run never leaves a stale lock.
    """

    NAME = ".lock"

    def __init__(self, folder):
        self.path = os.path.join(folder, self.NAME)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 1000).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise UserError(f"--out {os.path.dirname(self.path)} is in use by {holder}; wait for it to end or "
                            "choose another folder") from None
        os.ftruncate(self.fd, 0)
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:300]
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} "
                          f"({command})\n".encode())
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock
