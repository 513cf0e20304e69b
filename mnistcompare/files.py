"""Writing outputs safely: atomic files; and the run-folder contract that train, evaluate and tune share:
one run per output folder at a time (a lock), a folder holding another run refused, an unfinished run
resumed, and --overwrite deleting only what the run wrote."""
import contextlib
import fcntl
import glob
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time

from mnistcompare.errors import RunError, UserError

TEMPORARY = ".tmp-"  # the names atomic_path and the SavedModel export write before renaming


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """A temporary path beside `path` (ending in `suffix`, else as `path` ends) that replaces it on success:
    readers never see half a file, and a crash or a full disk at any byte leaves the previous file whole."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY, suffix=suffix or os.path.splitext(str(path))[1])
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


def write_weights(model, path, margin=2.0):
    """`model.save_weights(path)` (an .h5 file) through `atomic_path`, once the disk is seen to hold `margin`
    times the weights: h5py, meeting a full disk inside a write, can leave a half file or end the process."""
    import numpy as np
    need = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights) + 64 * 1024
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror}") from None
    if free < margin * need:
        raise RunError(f"cannot write {path}: {os.strerror(28)} ({free // 1024:,} kB free, about "
                       f"{need // 1024:,} kB needed)")
    with atomic_path(path, suffix=".weights.h5") as tmp:  # (the ending Keras wants)
        try:
            model.save_weights(tmp)
        except (RuntimeError, ValueError) as e:
            raise RunError(f"cannot write {path}: {' '.join(str(e).split())[:200]}") from None


def finite(data, digits=None):
    """`data` with every non-finite float replaced by None (strict JSON has no NaN), and with `digits`,
    every float rounded to that many significant digits."""
    if isinstance(data, float):
        return (data if digits is None else float(f"{data:.{digits}g}")) if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v, digits) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v, digits) for v in data]
    return data


def write_json(path, data, compact=False):
    """Strict JSON (no NaN), written atomically; `compact`: on one line, for files of many numbers."""
    text = json.dumps(finite(data), separators=(",", ":"), allow_nan=False) if compact else \
        json.dumps(finite(data), indent=2, allow_nan=False)
    write_text(path, text + "\n")


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

    def check(self):
        """UserError if the lock file is there and cannot be opened to be locked (checked before a run starts)."""
        if os.path.exists(self.path):
            self._open()
            os.close(self.fd)

    def _open(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"--out {os.path.dirname(self.path)}: cannot open its lock file {self.path} "
                            f"({e.strerror})") from None

    def __enter__(self):
        self._open()
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


def check_writable(path, flag="--out"):
    """UserError unless files can be written at `path`: a folder to write in, or one that can be made (its
    nearest existing parent writable). Tried, not guessed from the modes (root ignores them, a read-only file
    system does not); leaves nothing behind."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{flag} {path}: {existing} exists and is not a folder")
    if existing == os.path.abspath(path) and flag == "--out":
        FolderLock(path).check()
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=TEMPORARY)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {existing} ({e.strerror})") from None


def make_out(out):
    """Create the output folder, checked to be writable (its lock file too, by check_writable)."""
    check_writable(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    check_writable(out)


@contextlib.contextmanager
def run_folder(out):
    """The output folder of a run: created, checked writable and locked for the whole run; the temporary
    files of a run that died while writing are deleted first (holding the lock, no one is writing them)."""
    make_out(out)
    with FolderLock(out):
        for root, folders, files in os.walk(out):
            for name in [n for n in folders if n.startswith(TEMPORARY)]:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                folders.remove(name)
            for name in (n for n in files if n.startswith(TEMPORARY)):
                os.unlink(os.path.join(root, name))
        yield out


def clear_run(out, patterns):
    """Delete what a run wrote in `out`: the files and folders matching `patterns` (relative glob patterns),
    then the folders they leave empty. Nothing else: a file of the user's among them stays, with its folder."""
    for pattern in patterns:
        for path in glob.glob(os.path.join(out, pattern)):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    for pattern in patterns:
        folder = os.path.dirname(os.path.join(out, pattern))
        while os.path.abspath(folder) != os.path.abspath(out):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
            folder = os.path.dirname(folder)
