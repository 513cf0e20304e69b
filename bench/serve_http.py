"""mnistcompare-serve over loopback HTTP: pairs/s and latency of N concurrent clients, beside in-process `serve`.

    python bench/serve_http.py [--preset report000-siamese] [--clients 8] [--batch 1] [--seconds 10]

Exports the preset's model (untrained: a forward pass costs the same whatever
the weights) to a temporary folder, starts `mnistcompare-serve` on a free
loopback port, and has --clients threads post :predict requests of --batch
pairs (serve_mnist, row format, as a TF Serving client sends them) for
--seconds. Prints pairs/s, p50 and p99 latency, and the in-process throughput
of `serve_mnist` on the same batch size: what HTTP and JSON cost. A
benchmark, never a test.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnistcompare.reports import PRESETS  # noqa: E402 (after the path)


def post(url, data):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="report000-siamese", choices=PRESETS)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="pairs per request (default 1: a person drawing)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    from mnistcompare.runtime import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    from mnistcompare.export import export_saved_model
    from mnistcompare.models import build_model
    from mnistcompare.reports import preset

    folder = os.path.join(tempfile.mkdtemp(), "saved_model")
    cfg = preset(args.preset)
    export_saved_model(build_model(cfg, 33.3, 78.6), cfg, folder)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (2, args.batch, 28, 28), dtype=np.uint8)

    model = tf.saved_model.load(folder)
    model.serve_mnist(raw[0], raw[1])
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        model.serve_mnist(raw[0], raw[1])["compare"].numpy()
        calls += 1
    in_process = calls * args.batch / (time.perf_counter() - start)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mnistcompare.serve", folder, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/models/mnistcompare:predict"
    body = json.dumps({"signature_name": "serve_mnist",
                       "instances": [{"image_a": a.tolist(), "image_b": b.tolist()} for a, b in zip(*raw)]}).encode()
    try:
        for _ in range(600):
            try:
                post(url, body)
                break
            except OSError:
                time.sleep(0.2)
        latencies, stop = [], time.perf_counter() + args.seconds

        def client():
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                post(url, body)
                latencies.append(time.perf_counter() - sent)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"{args.preset}: {len(latencies) * args.batch / elapsed:,.0f} pairs/s over HTTP ({args.clients} clients, "
          f"batch {args.batch}, {len(latencies)} requests), latency p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
          f"in-process serve_mnist {in_process:,.0f} pairs/s at batch {args.batch} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
