"""mnistcompare-serve under mixed hostile load: its memory over time, its log, and how fast SIGTERM ends it.

    python bench/serve_load.py [--model runs/demo] [--minutes 2] [--clients 4]

Starts the server on a loopback port and, for --minutes, runs at once: --clients clients posting batches of
1,000 raw MNIST pairs in TF Serving's row format, clients that open a connection and never finish its headers,
clients that send half a body and disconnect, clients that trickle a body a byte at a time, and bursts of
connections that send one byte. Prints the server's resident memory at the end of each minute, the requests
answered, whether its log holds a traceback, and the seconds SIGTERM took to end it (its exit code too).
Without --model, trains report 000's siamese net for one epoch first (the weights do not change the cost).
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a run folder or SavedModel (default: train one epoch in a temporary folder)")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4, help="clients posting batches of 1,000 pairs")
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    model = args.model
    if not model:
        model = os.path.join(work, "run")
        subprocess.run(["mnistcompare-train", "--arch", "siamese", "--epochs", "1", "--quiet", "--out", model],
                       check=True, stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(work, "serve.log"), "w+")
    server = subprocess.Popen(["mnistcompare-serve", model, "--port", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1/models/mnistcompare:predict"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/mnistcompare", timeout=5)
            break
        except OSError:
            assert time.time() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.5)
    rng = random.Random(0)
    pairs = [{"image_a": [[rng.randrange(256) for _ in range(28)] for _ in range(28)],
              "image_b": [[rng.randrange(256) for _ in range(28)] for _ in range(28)]} for _ in range(50)]
    batch = json.dumps({"signature_name": "serve_mnist", "instances": pairs * 20}).encode()  # 1,000 pairs
    stop = time.time() + 60 * args.minutes
    counts = {"answered": 0, "failed": 0}

    def batches():
        while time.time() < stop:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=batch), timeout=120) as r:
                    r.read()
                counts["answered"] += 1
            except OSError:
                counts["failed"] += 1

    def raw(first, then=b"", pause=0.5, close=True):
        while time.time() < stop:
            time.sleep(0.1)  # (a hundred clients a second, not a flood of a thousand: the cap's test is `bursts`)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(first)
                    for byte in then:
                        s.sendall(bytes([byte]))
                        time.sleep(pause)
                        if time.time() > stop:
                            break
                    if not close:
                        s.recv(100)  # until the server closes it
            except OSError:
                pass

    def bursts():
        while time.time() < stop:
            held = []
            for _ in range(100):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.sendall(b"G")
                    held.append(s)
                except OSError:
                    break
            time.sleep(2)
            for s in held:
                s.close()

    head = f"POST /v1/models/mnistcompare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(batch)}\r\n\r\n"
    threads = [threading.Thread(target=batches) for _ in range(args.clients)] + [
        threading.Thread(target=raw, args=(b"GET / HTTP/1.1\r\nHost: x\r\n",), kwargs=dict(close=False)),
        threading.Thread(target=raw, args=(head.encode() + batch[:len(batch) // 2],)),  # half a body, then gone
        threading.Thread(target=raw, args=(head.encode(), b"{" * 200, 0.2)),  # a body a byte at a time
        threading.Thread(target=bursts)]
    for t in threads:
        t.daemon = True
        t.start()
    minute = 1
    while time.time() < stop:
        time.sleep(min(1.0, max(0.0, stop - time.time())))
        elapsed = time.time() - (stop - 60 * args.minutes)
        if elapsed >= 60 * minute or time.time() >= stop:
            print(f"minute {minute}: server RSS {rss_mb(server.pid):.0f} MB, {counts['answered']} batches of "
                  f"1,000 pairs answered ({counts['failed']} failed)", flush=True)
            minute += 1
    start = time.time()
    server.terminate()
    code = server.wait(timeout=60)
    ended = time.time() - start
    log.seek(0)
    text = log.read()
    print(f"SIGTERM: ended in {ended:.1f} s, exit {code}; traceback in the log: {'Traceback' in text}; "
          f"log {len(text.splitlines())} lines")
    if "Traceback" in text:
        print(text[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
