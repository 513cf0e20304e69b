"""Starting and supervising worker processes: the local pool of `evaluate --jobs`, a Dask cluster's
workers (`evaluate --cluster`), and the chief and workers of `tune --workers`. Whatever ends the
parent (Ctrl-C, SIGTERM, even SIGKILL) ends its workers, and a worker that dies ends the run with one line.
"""
import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from mnistcompare.errors import RunError, UserError
from mnistcompare.runtime import own_process, start_tensorflow


# -- evaluate --jobs: a pool of local processes -----------------------------------------
def _start_worker(pids, workers):
    """A process that trains rounds for `evaluate --jobs`, one of `workers`: Ctrl-C left to the parent,
    which ends the workers; its pid reported so that the parent ends exactly its own workers."""
    own_process()
    pids.put(os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ends with the parent even when the parent is killed (SIGKILL): nothing else would end it.
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    start_tensorflow(rounds_at_once=workers)  # with its share of the cores


def local_pool(workers):
    """(executor, pids): `workers` spawned processes that train rounds, each with its share of the cores;
    `pids` tells `end_workers` which processes are ours."""
    context = multiprocessing.get_context("spawn")
    pids = context.SimpleQueue()
    return ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(pids, workers)), pids


def end_workers(pids):
    """End the pool's processes (and no other), after an interruption."""
    while not pids.empty():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids.get(), signal.SIGTERM)


# -- evaluate --cluster: a Dask cluster --------------------------------------------------
def connect(address):
    """A Dask distributed client of the scheduler at `address` (the extra `[cluster]`). Dask, as its client
    hands out a concurrent.futures executor, the local pool's interface, and its scheduler gives a dead
    worker's round to another. Workers need mnistcompare and MNIST at the same path, and --nthreads 1."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise UserError("--cluster needs Dask distributed: pip install 'mnistcompare[cluster]'") from None
    made = {}

    def make():
        try:
            made["client"] = Client(address, timeout=CONNECT_TIMEOUT)
        except Exception as e:  # noqa: BLE001 (handed to the caller's thread)
            made["error"] = e

    # Dask's timeout misses the handshake: a peer that never answers would keep Client() for ever; so a thread.
    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    thread.join(CONNECT_DEADLINE)
    if thread.is_alive():
        raise UserError(f"--cluster {address}: nothing there answered as a Dask scheduler within "
                        f"{CONNECT_DEADLINE:.0f} s")
    if isinstance(made.get("error"), (OSError, TimeoutError, ValueError)):
        raise UserError(f"--cluster {address}: cannot reach a Dask scheduler there ({made['error']})") from None
    if "error" in made:
        raise made["error"]
    return made["client"]


CONNECT_TIMEOUT = 5  # seconds to retry a refused connection to a Dask scheduler
CONNECT_DEADLINE = 20.0  # seconds for a Dask scheduler to answer


# -- tune --workers: keras-tuner's chief and workers on this machine -----------------------
# A chief or worker runs the installed package: -c puts the working directory on sys.path, which could shadow it.
WORKER_CODE = "import sys; del sys.path[0]; from mnistcompare.tuning.cli import tune_main; tune_main()"
LAUNCHED = "MNISTCOMPARE_TUNE_LAUNCHER"  # set in the children of the launcher, which holds the folder
WORKERS = "MNISTCOMPARE_TUNE_WORKERS"  # how many of them train at once: each gets its share of the cores


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_flag(argv, flag):
    """`argv` without `flag VALUE` / `flag=VALUE` (or a bare `flag` for switches)."""
    args, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == flag:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        elif not a.startswith(flag + "="):
            args.append(a)
    return args


def _die_with_parent():
    """In a child, before exec: the kernel sends it SIGTERM when the launcher ends, however it ends
    (even by SIGKILL), so chief and workers never search on as orphans (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the launcher as Ctrl-C does: children stopped, one line


def launch_workers(argv, workers, out, poll=0.2):
    """Start a chief and `workers` workers of this same command on 127.0.0.1, and watch them. The chief's
    output is shown, the workers' go to OUT/worker-N.log. If one dies, the others are ended within a second
    and the launcher fails with one line (finished trials kept; a rerun resumes). SIGTERM or SIGINT to the
    launcher ends them all; SIGKILL ends them through the kernel.
    """
    command = [sys.executable, "-c", WORKER_CODE, *argv]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port()),
           LAUNCHED: str(os.getpid()), WORKERS: str(workers)}
    logs = [open(os.path.join(out, f"worker-{n}.log"), "w") for n in range(workers)]
    procs = {"chief": subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": "chief"},
                                       preexec_fn=_die_with_parent)}
    for n, log in enumerate(logs):
        procs[f"worker {n}"] = subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": f"tuner{n}"}, stdout=log,
                                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            codes = {name: p.poll() for name, p in procs.items()}
            failed = [name for name, code in codes.items() if code not in (None, 0)]
            if failed:
                name, code = failed[0], codes[failed[0]]
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                where = "" if name == "chief" else f"; see {out}/worker-{name.split()[1]}.log"
                raise RunError(f"tune {name} ended ({how}){where}; the others were stopped, finished trials are "
                               "kept: rerun the same command to resume")
            if codes["chief"] == 0:
                return 0
            time.sleep(poll)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


