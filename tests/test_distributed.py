"""Beyond one process: tf.distribute across two workers on loopback, and rounds on a Dask cluster."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import DENSE, TINY, run, start, wait_for

pytestmark = pytest.mark.slow


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_two_workers_train_as_one_process_and_a_dead_worker_ends_the_other(idx_dir, tmp_path):
    args = ["--idx-dir", idx_dir, *DENSE, "--batch-size", "30", "--epochs", "3", "--dropout", "0", "--quiet"]
    ports = free_ports(2)
    workers = [start("train", *args, "--strategy", "multiworker", "--out", tmp_path / f"out{i}",
                     env={"TF_CONFIG": tf_config(ports, i)}, stdout=subprocess.PIPE) for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert (tmp_path / "out0" / "metrics.json").exists() and not (tmp_path / "out1").exists()  # the chief alone
    from mnistcompare.config import Config
    from mnistcompare.data import find_source, load_pairs
    from mnistcompare.training import train_round

    cfg = Config.load(tmp_path / "out0" / "config.json")
    _, one, _ = train_round(cfg, *load_pairs(cfg, find_source(idx_dir=str(idx_dir))), verbose=0)  # one process
    two = json.loads((tmp_path / "out0" / "metrics.json").read_text())
    # The same batches in the same order, BatchNorm over each whole batch: one process's numbers, to rounding.
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.02, (two, one)
    assert abs(two["train_accuracy"] - one["train_accuracy"]) <= 0.02, (two, one)

    ports = free_ports(2)
    long = ["--idx-dir", idx_dir, *DENSE, "--batch-size", "30", "--epochs", "5000", "--quiet"]
    survivor, victim = (start("train", *long, "--strategy", "multiworker", "--out", tmp_path / f"k{i}",
                              env={"TF_CONFIG": tf_config(ports, i)}) for i in range(2))
    wait_for(lambda: len((tmp_path / "k0" / "history.csv").read_text().splitlines()) > 2
             if (tmp_path / "k0" / "history.csv").exists() else False, survivor, what="two epochs")
    victim.kill()
    started = time.time()
    _, stderr = survivor.communicate(timeout=120)
    assert time.time() - started < 60 and survivor.returncode == 1
    assert len(stderr.strip().splitlines()) == 1 and "multi-worker run died" in stderr, stderr[-2000:]


def _dask(*args):
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dask"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_rounds_on_a_dask_cluster_survive_a_killed_worker_with_the_numbers_of_one_process(idx_dir, tmp_path):
    port = free_ports(1)[0]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
    workers = [_dask("worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard")
               for _ in range(2)]
    try:
        args = ["--idx-dir", idx_dir, *DENSE, "--epochs", "30", "--rounds", "4"]
        evaluation = start("evaluate", *args, "--cluster", address, "--out", tmp_path / "cluster")
        results = tmp_path / "cluster" / "results.json"

        def finished_rounds():
            try:
                return len(json.loads(results.read_text())["entries"][0]["per_round"])
            except (OSError, ValueError):
                return 0
        wait_for(lambda: finished_rounds() >= 1, evaluation, what="a finished round")
        workers[0].send_signal(signal.SIGKILL)  # mid-round: its round goes to the other worker
        _, stderr = evaluation.communicate(timeout=600)
        assert evaluation.returncode == 0, stderr[-3000:]
    finally:
        for process in (*workers, scheduler):
            process.kill()
            process.wait()
    # A process of its own, as the cluster's workers are: in a process that has run other tests' ops,
    # TensorFlow may keep other op threads, and rounds by other kernels differ in the last bits.
    alone = run("evaluate", *args, "--jobs", "1", "--out", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    cluster, local = ([(r["round"], r["test_accuracy"], r["history"]["loss"]) for r in
                       json.loads((tmp_path / name / "results.json").read_text())["entries"][0]["per_round"]]
                      for name in ("cluster", "alone"))
    assert cluster == local  # every round once, in order, with the numbers of one process


def test_an_unreachable_cluster_is_one_line(idx_dir, tmp_path, main, monkeypatch):
    from helpers import one_line
    from mnistcompare import workers

    monkeypatch.setattr(workers, "CONNECT_TIMEOUT", 1)  # Dask retries a refused connection until then
    port = free_ports(1)[0]
    result = main("evaluate", "--idx-dir", idx_dir, *TINY, "--rounds", "1", "--cluster", f"tcp://127.0.0.1:{port}",
                 "--out", tmp_path / "out")
    assert "cannot reach a Dask scheduler" in one_line(result)
    assert not (tmp_path / "out").exists()  # a refused command writes nothing


def test_a_peer_that_accepts_and_never_answers_is_given_up_after_a_deadline(monkeypatch):  # D12
    import socket
    import time

    import pytest

    from mnistcompare import workers
    from mnistcompare.errors import UserError

    monkeypatch.setattr(workers, "CONNECT_DEADLINE", 3.0)
    with socket.socket() as listener:  # accepts (the kernel does), reads nothing, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        start = time.monotonic()
        with pytest.raises(UserError, match="nothing there answered as a Dask scheduler within 3 s"):
            workers.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
        assert time.monotonic() - start < 10
