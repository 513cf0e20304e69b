"""How TensorFlow is started: quietly, with oneDNN's kernels, one thread per op, and tf.distribute strategies.
Every command, worker and benchmark starts it through `start_tensorflow`, so all compute the same numbers."""
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import warnings

from mnistcompare.errors import MnistcompareWarning, RunError, UserError


def available_cpus():
    """CPUs this process may use: its affinity mask and a cgroup CPU quota, not just the machine's count."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = f.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


DEFAULT_JOBS = available_cpus()  # rounds side by side (evaluate --jobs, tune's final rounds)


ENVIRONMENT = {
    # 3: not even harmless C++ errors (Grappler's "remapper failed", CUDA's cuInit); real failures raise in Python.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # On by itself only with AVX-512; on AVX2, Eigen's kernels train slower, to other numbers (docs/performance.md).
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # Each op on one thread (see choose_threads): oneDNN's sums then add in one order, so a round's numbers do
    # not depend on the cores (one round, seed 0: 0.588 with it, 0.585 with TensorFlow's default on 2 cores).
    "TF_NUM_INTRAOP_THREADS": "1",
}
NUMERICS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS")  # the settings that change the numbers


def tensorflow_environment():
    """The environment TensorFlow is imported with (ENVIRONMENT), where the user has not set it. TensorFlow
    reads it when it loads: if it loaded before without those that change the numbers, one warning says so."""
    unset = [name for name in NUMERICS if name not in os.environ]
    if "tensorflow" in sys.modules and unset:
        warnings.warn(f"TensorFlow was imported before mnistcompare, without {' and '.join(unset)}: its kernels "
                      "then differ from the commands', and the numbers can too; import mnistcompare before "
                      "TensorFlow", MnistcompareWarning, stacklevel=3)
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def keras_home():
    """Keras' folder (keras.json, datasets/): $KERAS_HOME, else ~/.keras; found without importing Keras."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def keras_backend():
    """The backend Keras will load, as Keras chooses it: $KERAS_BACKEND, else keras.json's, else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        with open(os.path.join(keras_home(), "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


_OWN_PROCESS = False


def own_process():
    """This process is all the package's (a command, a worker of evaluate): see quiet_tensorflow."""
    global _OWN_PROCESS
    _OWN_PROCESS = True


def quiet_tensorflow():
    """Import TensorFlow and Keras with their C++ start-up messages (absl, oneDNN, CUDA), printed whatever
    TF_CPP_MIN_LOG_LEVEL says, kept off stderr: its file descriptor points at /dev/null for the import."""
    if "tensorflow" in sys.modules:
        return
    if keras_backend() != "tensorflow":
        raise UserError(f"Keras' backend is {keras_backend()!r} (KERAS_BACKEND or keras.json); mnistcompare runs on "
                        "its TensorFlow backend: unset KERAS_BACKEND, or set it to tensorflow")
    tensorflow_environment()
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    # The import makes ~700,000 lasting objects, whose collection took 0.6 s of 3.7: in the package's own processes
    # they are frozen (not in a user's: gc.get_referrers, which some libraries use, misses frozen objects).
    freezing = _OWN_PROCESS and gc.isenabled()
    if freezing:
        gc.disable()
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
        if freezing:
            gc.freeze()
    finally:
        if freezing:
            gc.enable()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tensorflow.get_logger().addFilter(_NotRetracing())


class _NotRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: each configuration a search or study
    trains is a model of its own, traced once, which TensorFlow counts as retracing one function."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_THREADS_SET = False  # the first start in a process chooses its threads; later starts keep them


def choose_threads(rounds_at_once=1):
    """Run each TensorFlow op on one thread, with one more op thread than the cores a round has: these nets'
    ops are too small to split, so this trains faster than TensorFlow's default, leaves cores to rounds side
    by side, and a round's numbers do not depend on them; the spare thread keeps a core busy while an op
    waits (docs/performance.md). TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS, when set, win.
    """
    global _THREADS_SET
    import tensorflow as tf
    if _THREADS_SET:
        return
    _THREADS_SET = True
    try:
        intra = max(0, int(os.environ.get("TF_NUM_INTRAOP_THREADS", 1)))
    except ValueError:  # TensorFlow's own reading of it ignores such a value too
        intra = 1
    with contextlib.suppress(RuntimeError):  # TensorFlow already ran an op: it keeps its threads
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        if not os.environ.get("TF_NUM_INTEROP_THREADS"):
            tf.config.threading.set_inter_op_parallelism_threads(op_threads(rounds_at_once))


def op_threads(rounds_at_once=1, cpus=None):
    """Inter-op threads of each of `rounds_at_once` processes training at once: its share of the cores, plus one."""
    return max(1, (cpus or available_cpus()) // max(1, rounds_at_once)) + 1


STRATEGIES = ("none", "mirrored", "multiworker")


def cluster_role():
    """(task type, index, number of processes, whether this one writes outputs) from TF_CONFIG, checked;
    one process that writes, without it. The writer is the chief, or worker 0 of a cluster without one."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return "worker", 0, 1, True
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        if not isinstance(cluster[kind], list) or not 0 <= index < len(cluster[kind]):
            raise ValueError(f"task {kind}:{index} is not in the cluster")
        size = sum(len(cluster[k]) for k in ("chief", "worker") if k in cluster)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserError(f"TF_CONFIG is not a valid cluster description ({type(e).__name__}: {e}); expected "
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') \
            from None
    writes = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return kind, index, size, writes


def start_tensorflow(strategy="none", collective_timeout=60, start_timeout=120, rounds_at_once=1):
    """Start TensorFlow as every command trains with it (quiet, each op on one thread); returns the
    tf.distribute strategy `strategy` names (None for "none"). `rounds_at_once`: processes training on this
    machine at once, which sets each one's op threads (the first start in a process decides). The strategy
    is made before any op runs, as a multi-worker one must be; a worker that does not join within
    `start_timeout` s, or a peer a collective waits `collective_timeout` s for, ends the run with one line.
    """
    if strategy == "multiworker":
        cluster_role()  # a malformed TF_CONFIG is one line, before TensorFlow starts
    quiet_tensorflow()
    choose_threads(rounds_at_once)
    if strategy in (None, "none"):
        return None
    import tensorflow as tf
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    # Making it waits for every worker of TF_CONFIG: one that never joins would keep the others an hour.
    kind, index, size, _ = cluster_role()
    watchdog = threading.Timer(start_timeout, _give_up, args=(
        f"the {size} processes of TF_CONFIG did not all join within {start_timeout:.0f} s ({kind} {index} here); "
        "start every worker with the same TF_CONFIG cluster",))
    watchdog.daemon = True
    watchdog.start()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    made = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    watchdog.cancel()
    return made


def _give_up(message):
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def peer_failure(error):
    """A RunError for a tf.distribute collective that failed because a peer died or hung (one line, exit 1)."""
    return RunError(f"another process of the multi-worker run died or stopped answering ({type(error).__name__}); "
                    "nothing of the unfinished epoch is saved: restart every worker to resume")
