"""mnistcompare-serve: TF Serving's REST API against the SavedModel itself, malformed requests, and the
drawing page in a real headless browser."""
import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import fake_mnist, start, wait_for


def call(url, body=None, raw=None):
    """(status, JSON answer) of a GET, or of a POST of `body` as JSON (or of the bytes `raw`)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering(url):
    """Whether the server answers `url` with 200 (False while it starts, or refuses)."""
    try:
        return call(url)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """The trained model served from a base of two versions, as TF Serving's folders hold them: 1/ and 2/."""
    out, _, _ = trained_run
    base_folder = tmp_path_factory.mktemp("versions")
    for version in ("1", "2"):
        (base_folder / version).symlink_to(out / "saved_model" / "1")
    port = free_port()
    proc = start("serve", base_folder, "--port", port, "--name", "cmp")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answering(f"{base}/v1/models/cmp"), proc, timeout=120, what="the server")
        yield base, base_folder / "2"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_rest_api_answers_as_the_saved_model_does(server):
    import tensorflow as tf

    base, folder = server
    model = tf.saved_model.load(str(folder))
    assert call(f"{base}/v1/models/cmp")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    defs = call(f"{base}/v1/models/cmp/metadata")[1]["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "serve", "serve_mnist", "__saved_model_init_op"}
    assert defs["serve_mnist"]["inputs"]["image_a"]["dtype"] == "DT_UINT8"
    # named as TF Serving names them, from the SavedModel's own signatures
    assert defs["serving_default"]["inputs"]["image_a"]["name"] == "serving_default_image_a:0"

    raw_a, _ = fake_mnist(100, 5)
    raw_b, _ = fake_mnist(100, 6)
    pooled = [x.reshape(100, 14, 2, 14, 2).mean((2, 4))[..., None].astype(np.float32) for x in (raw_a, raw_b)]
    for signature, (a, b), expected in (
            ("serve_mnist", (raw_a, raw_b), model.serve_mnist(raw_a, raw_b)),
            ("serve", pooled, model.serve(*pooled)),
            ("serving_default", pooled, model.serve(*pooled))):
        expected = {k: np.asarray(v) for k, v in expected.items()}
        status, columns = call(f"{base}/v1/models/cmp:predict", {
            "signature_name": signature, "inputs": {"image_a": a.tolist(), "image_b": b.tolist()}})
        assert status == 200
        status, rows = call(f"{base}/v1/models/cmp/versions/2:predict", {
            "signature_name": signature, "instances": [{"image_a": x.tolist(), "image_b": y.tolist()}
                                                       for x, y in zip(a, b)]})
        assert status == 200 and len(rows["predictions"]) == 100
        for name, value in expected.items():
            np.testing.assert_allclose(columns["outputs"][name], value, atol=1e-6)
            np.testing.assert_allclose([r[name] for r in rows["predictions"]], value, atol=1e-6)

    # concurrent requests, each of other pairs, each answered with its own pairs' answer
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return call(f"{base}/v1/models/cmp:predict", {"signature_name": "serve_mnist", "inputs": {
            "image_a": raw_a[i:i + 5].tolist(), "image_b": raw_b[i:i + 5].tolist()}})
    expected = np.asarray(model.serve_mnist(raw_a, raw_b)["compare"])
    with ThreadPoolExecutor(8) as pool:
        for i, (status, answer) in zip(range(0, 100, 5), pool.map(one, range(0, 100, 5))):
            assert status == 200
            np.testing.assert_allclose(answer["outputs"]["compare"], expected[i:i + 5], atol=1e-6)


@pytest.mark.slow
def test_malformed_requests_get_a_json_error_and_the_server_goes_on(server):
    base, _ = server
    url = f"{base}/v1/models/cmp:predict"
    zeros = np.zeros((28, 28), int).tolist()
    one = {"image_a": [zeros], "image_b": [zeros]}

    def mnist(**change):
        return {"signature_name": "serve_mnist", "inputs": {**one, **change}}
    bad = [b"", b"{", b"nul", b"[1, 2", b"\xff\xfe", b"{\"a\": }", b"[" * 100_000 + b"]" * 100_000,
           b"NaN", b"\"text\"", b"1e999999"]
    bodies = [[], 3, "x", None, {}, {"instances": [], "inputs": {}}, {"signature_name": 3, "inputs": one},
              {"signature_name": "nope", "inputs": one}, {"signature_name": "serve_mnist"},
              {"signature_name": "serve_mnist", "instances": "x"},
              {"signature_name": "serve_mnist", "instances": [{"image_a": zeros}]},
              {"signature_name": "serve_mnist", "instances": [{"image_a": zeros, "image_b": zeros, "c": 1}]},
              {"signature_name": "serve_mnist", "instances": [3]},
              {"signature_name": "serve_mnist", "inputs": {"image_a": [zeros]}},
              mnist(image_a=zeros), mnist(image_a=[[[1, 2]]]), mnist(image_a=[zeros, zeros]),
              mnist(image_a="pixels"), mnist(image_a=[[["a"] * 28] * 28]), mnist(image_a=[[[None] * 28] * 28]),
              mnist(image_a=[[[-1] * 28] * 28]), mnist(image_a=[[[256] * 28] * 28]),
              mnist(image_a=[[[0.5] * 28] * 28]), mnist(image_a=[[[1e300] * 28] * 28]),
              mnist(image_a=[[[{}] * 28] * 28]), mnist(image_a=[[[[0]] * 28] * 28]),
              mnist(image_a=[zeros] * 1025, image_b=[zeros] * 1025), mnist(image_a=[]),
              {"inputs": {"image_a": [[[[float("nan")]] * 14] * 14], "image_b": [[[[0.0]] * 14] * 14]}},
              {"inputs": {"image_a": [[[[float("inf")]] * 14] * 14], "image_b": [[[[0.0]] * 14] * 14]}},
              {"inputs": {"image_a": [[[[-5.0]] * 14] * 14], "image_b": [[[[0.0]] * 14] * 14]}},
              {"inputs": {"image_a": [[[0.0] * 14] * 14], "image_b": [[[0.0] * 14] * 14]}},
              {"signature_name": "serve", "inputs": one}, {"instances": [one]}]
    answers = [call(url, raw=data) for data in bad] + [call(url, body) for body in bodies]
    answers.append(call(url, raw=b"[" + b"0," * 5_000_000 + b"0]"))  # more than the bytes a request may hold
    answers.append(call(f"{base}/v1/models/other:predict", mnist()))
    answers.append(call(f"{base}/v1/models/cmp/versions/1:predict", mnist()))
    answers.append(call(f"{base}/v1/models/other"))
    answers.append(call(f"{base}/draw", {"image_a": 3}))
    answers.append(call(f"{base}/draw", {"image_a": [[0] * 50] * 50, "image_b": [[0] * 50] * 50}))  # nothing drawn
    answers.append(call(f"{base}/draw", {"image_a": [[0] * 5000] * 2, "image_b": [[0] * 50] * 50}))
    assert len(answers) >= 50
    for i, (status, answer) in enumerate(answers):
        assert 400 <= status < 500 and isinstance(answer.get("error"), str) and answer["error"], (i, status, answer)
    assert sorted({status for status, _ in answers}) == [400, 404, 405, 413]  # (405: a GET of :predict)
    status, good = call(url, mnist())
    assert status == 200 and len(good["outputs"]["compare"]) == 1


@pytest.mark.slow
def test_versions_and_routes_answer_as_tf_serving_does(server):
    base, _ = server
    status, answer = call(f"{base}/v1/models/cmp")
    assert status == 200 and [v["version"] for v in answer["model_version_status"]] == ["2"]  # the newest, as itself
    assert call(f"{base}/v1/models/cmp/versions/2")[0] == 200
    assert call(f"{base}/v1/models/cmp/metadata")[1]["model_spec"]["version"] == "2"
    for url, method, code in ((f"{base}/v1/models/cmp/versions/1", "GET", 404),
                              (f"{base}/v1/models/cmp/versions/1/metadata", "GET", 404),
                              (f"{base}/v1/models/other", "GET", 404), (f"{base}/no/such/path", "GET", 404),
                              (f"{base}/v1/models/cmp:predict", "GET", 405), (f"{base}/v1/models/cmp", "POST", 405),
                              (f"{base}/v1/models/cmp:classify", "POST", 404)):
        request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError(f"{method} {url} answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == code and e.headers.get_content_type() == "application/json", (url, e.code)
            assert isinstance(json.loads(e.read())["error"], str)
    icon = urllib.request.urlopen(f"{base}/favicon.ico", timeout=30)
    assert icon.status == 200 and icon.headers.get_content_type() == "image/svg+xml"


@pytest.mark.slow
def test_a_busy_port_or_a_wrong_model_is_one_line(server, tmp_path, cli):
    from helpers import one_line

    base, folder = server
    port = base.rsplit(":", 1)[1]
    assert f"--port {port}: cannot listen on 127.0.0.1 (Address already in use)" in one_line(
        cli("serve", folder, "--port", port))
    assert "neither a run folder" in one_line(cli("serve", tmp_path, "--port", port))


@pytest.mark.slow
@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_the_page_draws_two_digits_and_shows_the_saved_models_answer(screen, server, tmp_path):
    import tensorflow as tf
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, folder = server
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1000"):
        options.add_argument(flag)
    if screen == "phone":  # a 360x740 phone's screen, as Chrome's device emulation gives it
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": 360, "height": 740,
                                                                              "pixelRatio": 2}})
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.get(base + "/")
        scale = browser.find_element(By.ID, "canvas-a").size["width"] / 280  # the boxes are smaller on a phone
        strokes = {"a": [(0, -90), (0, 180)],  # a 1: one stroke down
                   "b": [(-70, -80), (140, 0), (-90, 170)]}  # a 7: across, then down to the left
        for side, moves in strokes.items():
            canvas = browser.find_element(By.ID, f"canvas-{side}")
            browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", canvas)
            start = [round(v * scale) for v in moves[0]]
            actions = ActionChains(browser).move_to_element_with_offset(canvas, *start).click_and_hold()
            for dx, dy in moves[1:]:
                for _ in range(10):  # in small steps, as a hand moves
                    actions.move_by_offset(round(dx * scale / 10), round(dy * scale / 10))
            actions.release().perform()
        answer = browser.find_element(By.ID, "answer")
        WebDriverWait(browser, 60).until(lambda _: answer.get_attribute("data-mnist"))
        WebDriverWait(browser, 60).until(lambda _: not browser.execute_script("return pending || again"))
        p = float(answer.get_attribute("data-p"))
        mnist_a, mnist_b = (np.array(x, np.uint8)[None] for x in json.loads(answer.get_attribute("data-mnist")))
        assert mnist_a.max() > 200 and mnist_b.max() > 200  # both digits reached the server
        model = tf.saved_model.load(str(folder))  # (kept in a name: its functions need it alive)
        expected = float(model.serve_mnist(mnist_a, mnist_b)["compare"][0])
        assert abs(p - expected) <= 1e-6
        assert "P(a ≤ b)" in answer.text and len(browser.find_elements(By.CSS_SELECTOR, "#bars-a .bar")) == 10
        # Box b was drawn last, and is in view: the answer is on the screen with it, on one line.
        top, bottom, right, height, width = browser.execute_script(
            "const r = document.getElementById('answer').getBoundingClientRect();"
            "return [r.top, r.bottom, r.right, innerHeight, innerWidth];")
        box = browser.execute_script("const b = document.getElementById('canvas-b').getBoundingClientRect();"
                                     "return [b.top, b.bottom];")
        assert 0 <= box[0] and box[1] <= height, box  # (box b in view)
        assert 0 <= top and bottom <= height and right <= width, (top, bottom, right, height, width)
        font = float(answer.value_of_css_property("font-size").removesuffix("px"))
        assert answer.size["height"] < 2.3 * font, (answer.size, font)  # one line (and its padding), not two
        if screen == "phone":
            assert width == 360
        browser.save_screenshot(os.environ.get(f"MNISTCOMPARE_SCREENSHOT_{screen.upper()}",
                                               str(tmp_path / f"page-{screen}.png")))
    finally:
        browser.quit()


# -- the server against hostile clients (deadlines, bounds, signals), on a server of its own with --timeout 2 ----
@pytest.fixture(scope="module")
def strict_server(trained_run, tmp_path_factory):
    import subprocess
    import sys

    from helpers import command

    out, _, _ = trained_run
    port = free_port()
    log = tmp_path_factory.mktemp("strict") / "serve.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(command("serve", out, "--port", port, "--timeout", 2), stdout=stderr, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answering(f"{base}/v1/models/mnistcompare"), proc, timeout=120, what="the server")
        yield base, port, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        assert sys.exc_info()[0] is not None or "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _closed_within(sock, seconds):
    """Seconds until the server closed `sock` (reading what it sends), or None if still open after `seconds`."""
    import time

    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:  # closed, abruptly
        pass
    except TimeoutError:
        return None
    return time.monotonic() - start


@pytest.mark.slow
def test_slow_or_vanishing_clients_are_cut_off_and_the_server_goes_on(strict_server):
    import socket

    base, port, proc, log = strict_server
    headers = socket.create_connection(("127.0.0.1", port))
    headers.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    assert 1.5 < _closed_within(headers, 10) < 5
    body = socket.create_connection(("127.0.0.1", port))
    body.sendall(b"POST /v1/models/mnistcompare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    body.settimeout(10)
    assert b" 408 " in body.recv(1000).split(b"\r\n")[0]  # the body did not arrive in time: TF Serving's JSON, 408
    gone = socket.create_connection(("127.0.0.1", port))
    gone.sendall(b"POST /v1/models/mnistcompare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"in")
    gone.close()  # mid-body
    zeros = np.zeros((28, 28), int).tolist()
    status, answer = call(f"{base}/v1/models/mnistcompare:predict",
                          {"signature_name": "serve_mnist", "instances": [{"image_a": zeros, "image_b": zeros}]})
    assert status == 200 and len(answer["predictions"]) == 1
    assert proc.poll() is None and "Traceback" not in log.read_text()


@pytest.mark.slow
def test_connections_past_the_bound_are_closed_at_once_and_the_others_after_the_deadline(strict_server):
    import socket

    from mnistcompare.serve import MAX_CONNECTIONS

    base, port, proc, log = strict_server
    held = []
    for _ in range(MAX_CONNECTIONS + 40):
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(b"G")
        except ConnectionResetError:  # closed by the server already
            pass
        held.append(sock)
    files = len(os.listdir(f"/proc/{proc.pid}/fd"))
    cut = [_closed_within(sock, 0.5) is not None for sock in held[-20:]]
    assert all(cut), cut  # those past the bound: closed at once
    assert files < MAX_CONNECTIONS + 150, files
    assert all(_closed_within(sock, 6) is not None for sock in held[:20])  # the others: at the deadline
    for sock in held:
        sock.close()
    wait_for(lambda: answering(f"{base}/v1/models/mnistcompare"), proc, timeout=10, what="the server to answer")
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_out_of_range_pixels_get_the_reason_in_a_400(strict_server):
    base, _, _, _ = strict_server
    url = f"{base}/v1/models/mnistcompare:predict"
    for value in (300.0, -1.0, 1e300):
        status, answer = call(url, {"signature_name": "serve", "inputs": {"image_a": [[[[value]] * 14] * 14],
                                                                         "image_b": [[[[0.0]] * 14] * 14]}})
        assert status == 400 and "pixels must be numbers in 0..255" in answer["error"], answer


def test_the_saved_models_own_check_is_what_a_400_says(trained_run):
    import tensorflow as tf

    from mnistcompare.serve import model_message

    out, _, _ = trained_run
    model = tf.saved_model.load(str(out / "saved_model" / "1"))
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        model.serve(tf.zeros([2, 14, 14, 1]), tf.zeros([3, 14, 14, 1]))
    assert model_message(raised.value) == "image_a and image_b must hold the same number of images"


@pytest.mark.slow
def test_sigterm_ends_the_server_within_seconds_whatever_a_client_does(trained_run, tmp_path):
    import signal
    import socket
    import subprocess
    import time

    from helpers import command

    out, _, _ = trained_run
    port = free_port()
    proc = subprocess.Popen(command("serve", out, "--port", port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: _listening(port), proc, timeout=120, what="the server")
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.sendall(b"POST /v1/models/mnistcompare:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n{")
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < 10:
        trickle.sendall(b" ")  # a byte at a time, as it goes on
        time.sleep(0.2)
    assert proc.poll() == 143 and time.monotonic() - start < 5
    err = proc.stderr.read()
    assert "Traceback" not in err and err.strip().endswith("mnistcompare-serve: terminated"), err


def _listening(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_host_name_that_does_not_resolve_is_one_line_with_the_reason(trained_run, cli):
    from helpers import one_line

    out, _, _ = trained_run
    line = one_line(cli("serve", out, "--host", "bad host name", "--port", 8599))
    assert "cannot listen on bad host name (" in line and "Unknown error" not in line, line
