"""`cnnlab serve`: real HTTP requests to a server on 127.0.0.1 (uvicorn in a thread, or the CLI in a
subprocess), including malformed and oversized uploads and concurrent clients, and the page in a real
headless browser (skipped, with the reason, when no Chromium is installed)."""
import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'cnnlab[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'cnnlab[serve]'")

import uvicorn  # noqa: E402

from cnnlab.inference import Predictor, load_predictor  # noqa: E402
from cnnlab.serve import create_app, listen  # noqa: E402


class Server:
    """``create_app(predictor, **limits)`` served by uvicorn on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, predictor, **limits):
        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(predictor, **limits), log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        kind = r.getheader("content-type", "")
        return r.status, dict(r.getheaders()), json.loads(data) if "json" in kind else data.decode()

    def upload(self, files, path="/predict"):
        """multipart/form-data with (name, bytes) files."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_dir():
    from deploy_run import trained_run  # shared with tests/test_export.py

    return trained_run()


@pytest.fixture(scope="module")
def test_images():
    from cnnlab.data import load_dataset

    return load_dataset("synthetic").test_images[:8]  # uint8 [8, 1, 16, 16]


@pytest.fixture(scope="module")
def server(run_dir):
    s = Server(load_predictor(run_dir, device="cpu"), max_upload_bytes=64 * 1024, max_pixels=1_000_000,
               max_images=4)
    yield s
    s.close()


def test_health_model_and_page(server, run_dir):
    assert server.request("GET", "/health")[:3:2] == (200, {"status": "ok"})
    status, _, info = server.request("GET", "/model")
    assert status == 200 and info["classes"] == ["class0", "class1", "class2", "class3"]
    assert info["input"] == {"dtype": "uint8", "shape": ["batch", 1, 16, 16]} and info["backend"] == "torch"
    assert info["run"] == str(run_dir.resolve()) and info["limits"]["max_upload_bytes"] == 64 * 1024
    status, headers, page = server.request("GET", "/")
    assert status == 200 and "text/html" in headers["content-type"] and "Drop an image here" in page


def test_upload_raw_and_json_give_the_predict_answer(server, run_dir, test_images, tmp_path):
    from cnnlab.inference import predict_files

    files = [(f"{i}.png", png(test_images[i, 0])) for i in range(3)]
    for name, data in files:
        (tmp_path / name).write_bytes(data)
    expected = predict_files(run_dir, [str(tmp_path)], top_k=3, device="cpu")
    status, _, answer = server.upload(files, "/predict?top_k=3")
    assert status == 200 and answer["backend"] == "torch" and answer["model"] == "fastnet"
    for got, want in zip(answer["predictions"], expected):
        assert got["file"] == os.path.basename(want["file"]) and got["top"] == want["top"]
    status, _, raw = server.request("POST", "/predict?top_k=3", files[0][1], {"Content-Type": "image/png"})
    assert status == 200 and raw["predictions"][0]["top"] == expected[0]["top"]
    body = json.dumps({"images": test_images[:2].tolist(), "top_k": 3})
    status, _, js = server.request("POST", "/predict", body, {"Content-Type": "application/json"})
    assert status == 200 and [p["top"] for p in js["predictions"]] == [e["top"] for e in expected[:2]]
    grey = json.dumps(test_images[0, 0].tolist())  # one bare [H, W] image for a grey model
    status, _, one = server.request("POST", "/predict", grey, {"Content-Type": "application/json"})
    assert status == 200 and one["predictions"][0]["top"][:3] == expected[0]["top"]


@pytest.mark.parametrize("body, headers, status, message", [
    (b"not an image at all", {"Content-Type": "image/png"}, 422, "not an image cnnlab can read"),
    (b"", {"Content-Type": "image/png"}, 422, "empty file"),
    (b"{bad json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
    (b"[[1, 2], [3, 4]]", {"Content-Type": "application/json"}, 422, "each image must have shape [1, 16, 16]"),
    (json.dumps([[300] * 16] * 16).encode(), {"Content-Type": "application/json"}, 422, "0..255"),
    (json.dumps([[0.5] * 16] * 16).encode(), {"Content-Type": "application/json"}, 422, "integers 0..255"),
    (json.dumps({"pictures": []}).encode(), {"Content-Type": "application/json"}, 422, "unknown JSON keys"),
    (json.dumps([[[[0] * 16] * 16]] * 5).encode(), {"Content-Type": "application/json"}, 413, "limit is 4"),
    (b"hello", {"Content-Type": "text/plain"}, 415, "unsupported Content-Type"),
    (b"abc", {"Content-Type": "multipart/form-data"}, 400, "malformed multipart body: Missing boundary"),
    (b"--x\r\nContent-Disposition: garbage\r\n\r\nabc\r\n--x--\r\n",
     {"Content-Type": "multipart/form-data; boundary=x"}, 400, "malformed multipart body"),
    (b"--x\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=x"}, 422, "multipart body holds no file"),
    (b"x" * (64 * 1024 + 1), {"Content-Type": "image/png"}, 413, "over the limit of 65,536 bytes"),
])
def test_bad_requests_get_a_clear_4xx(server, body, headers, status, message):
    got, _, answer = server.request("POST", "/predict", body, headers)
    assert got == status and message in answer["detail"], answer


def test_other_limits(server, test_images):
    status, _, answer = server.upload([("a.txt", b"plain text")])
    assert status == 422 and "a.txt: not an image" in answer["detail"]
    status, _, answer = server.upload([])
    assert status in (400, 422)
    status, _, answer = server.upload([("big.png", png(np.zeros((1200, 1000))))])  # 1.2 MP, a 5 KB file
    assert status == 413 and "1000x1200 pixels is over the limit of 1,000,000" in answer["detail"]
    status, _, answer = server.upload([(f"{i}.png", png(test_images[0, 0])) for i in range(5)])
    assert status == 413 and "limit is 4" in answer["detail"]
    status, _, answer = server.upload([("0.png", png(test_images[0, 0]))], "/predict?top_k=0")
    assert status == 422 and "top_k" in answer["detail"]
    assert server.request("GET", "/predict")[0] == 405

    def chunks():  # no Content-Length: the limit applies while the body streams in
        for _ in range(20):
            yield b"y" * 8192

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/predict", body=chunks(), headers={"Content-Type": "image/png"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "over the limit" in json.loads(r.read())["detail"]
    conn.close()


def test_concurrent_clients_get_the_same_answers(server, test_images):
    data = png(test_images[1, 0])
    expected = server.upload([("x.png", data)])[2]["predictions"]

    def client(i):
        return [server.upload([("x.png", data)]) for _ in range(3)]

    with ThreadPoolExecutor(12) as pool:
        results = [r for batch in pool.map(client, range(12)) for r in batch]
    assert len(results) == 36 and all(s == 200 and a["predictions"] == expected for s, _, a in results)


class Slow(Predictor):
    """A predictor that takes ``delay`` seconds, to hold the server's only slot."""

    def __init__(self, delay):
        self.delay, self.classes, self.in_channels, self.image_size = delay, ["a", "b"], 1, 4
        self.source, self.backend, self.info = "slow", "test", {"model": "slow"}

    def probabilities(self, images, tta="none"):
        time.sleep(self.delay)
        return torch.full((len(images), 2), 0.5)


def test_concurrency_is_bounded_and_health_stays_responsive():
    s = Server(Slow(1.0), max_concurrency=1, max_queue=1)
    try:
        body = json.dumps([[0] * 4] * 4)
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(s.request, "POST", "/predict", body, {"Content-Type": "application/json"})
                       for _ in range(5)]
            time.sleep(0.3)
            t = time.perf_counter()
            assert s.request("GET", "/health")[0] == 200
            assert time.perf_counter() - t < 0.5  # inference runs in threads, not on the event loop
            results = [f.result() for f in futures]
        codes = sorted(r[0] for r in results)
        assert codes == [200, 200, 503, 503, 503]  # one computing, one waiting, the rest refused at once
        refused = next(r for r in results if r[0] == 503)
        assert refused[1]["retry-after"] == "1" and "busy" in refused[2]["detail"]
    finally:
        s.close()


def test_serve_an_exported_onnx_file(run_dir, test_images):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("onnxscript", reason="the export extra is not installed")
    from deploy_run import exported_onnx

    path, _ = exported_onnx()
    s = Server(load_predictor(path))
    try:
        info = s.request("GET", "/model")[2]
        assert info["backend"] == "onnxruntime" and info["file"] == str(path.resolve()) and info["int8"] is False
        onnx_answer = s.upload([("x.png", png(test_images[2, 0]))])[2]["predictions"][0]["top"]
    finally:
        s.close()
    torch_answer = load_predictor(run_dir, device="cpu").probabilities(test_images[2:3])[0]
    assert np.allclose([t["probability"] for t in onnx_answer], sorted(torch_answer.tolist(), reverse=True)[:4],
                       atol=1e-4)


def test_the_cli_serves_and_reports_bad_flags(run_dir, capsys):
    cmd = [sys.executable, "-m", "cnnlab", "serve", str(run_dir), "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "serving RUN (...) on http://127.0.0.1:PORT/ (Ctrl-C stops)"
        assert "serving" in line and "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() else line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        # the port is taken now: a second server says so on one line (before loading the model)
        from cnnlab import cli

        assert cli.main(["serve", str(run_dir), "--port", str(port)]) == 2
        assert f"--port {port}: cannot listen" in capsys.readouterr().err
        for flags, message in ((["--port", "70000"], "--port must be 0..65535"),
                               (["--max-queue", "-1"], "--max-queue must be >= 0"),
                               (["--max-upload-bytes", "0"], "--max-upload-bytes must be >= 1")):
            assert cli.main(["serve", str(run_dir), "--port", "0", *flags]) == 2
            assert message in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(30)


# --------------------------------------------------------------------------- the page, in a browser

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_page_shows_the_top_classes_in_a_headless_browser(server, test_images, tmp_path):
    """The page fetches /model, posts the image given by ?src= (a data: URL) to /predict and draws the bars."""
    from urllib.parse import quote

    data_url = "data:image/png;base64," + base64.b64encode(png(test_images[3, 0])).decode()
    expected = server.upload([("x.png", png(test_images[3, 0]))])[2]["predictions"][0]["top"]
    url = f"http://127.0.0.1:{server.port}/?src={quote(data_url, safe='')}"
    r = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert 'data-state="done"' in dom, (r.returncode, r.stderr[-2000:], dom[-2000:])
    for row in expected:
        assert f'data-class="{row["class"]}"' in dom
    first = dom.index('data-class="')
    assert dom[first:].startswith(f'data-class="{expected[0]["class"]}"')  # most probable first
    assert f'{100 * expected[0]["probability"]:.1f}%' in dom and "fastnet" in dom and "4 classes" in dom
