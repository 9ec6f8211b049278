"""The HTTP server cannot be exhausted: decode bound, connection burst, idle and slow clients, part cap,
port errors, /metadata redaction (issue 13, item 2)."""

from __future__ import annotations

import http.client
import io
import json
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving import http as serving_http
from serving.http import ServerConfig, ServerStartError, make_server
from serving.runner import main

REPO = Path(__file__).resolve().parents[2]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _big_png(side: int) -> bytes:
    """A ``side`` x ``side`` grey PNG: a few KB on the wire, ``side**2`` bytes once decoded."""
    arr = np.zeros((side, side), dtype=np.uint8)
    arr[::7, :] = 255
    return _png(arr)


def _multipart(n_parts: int, image: bytes, boundary: str = "bNd") -> tuple[bytes, str]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
             for i in range(n_parts - 1)]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_decode_concurrency_never_exceeds_the_bound(serve, digits):
    s = serve(max_decodes=2, workers=16, max_pixels=20_000_000)
    big = _big_png(3000)  # 9 M pixels each
    assert len(big) < 200_000
    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(lambda _: s.request("POST", "/predict?top_k=1", big, {"Content-Type": "image/png"}),
                              range(16)))
    assert [st for st, _ in results] == [200] * 16
    gate = s.server.decodes
    assert 1 <= gate.peak <= 2, gate.peak
    assert gate.active == 0
    assert s.predict_ok(_png(digits.test.images[0, :, :, 0]))


def _vm_hwm_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
def test_decode_bound_bounds_peak_memory_of_the_server_process(tiny_onnx, digits):
    """16 parallel 4000x4000 PNGs (16 MB decoded each, 256 MB if all decoded at once) against
    ``coreg-serve http --max-decodes 2``: the server's peak RSS grows by at most about two decodes."""
    side, bound = 4000, 2
    proc = subprocess.Popen([sys.executable, "-m", "serving.runner", "http", "--model", str(tiny_onnx), "--port", "0",
                             "--threads", "1", "--max-decodes", str(bound), "--workers", "16"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"http://([\d.]+):(\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        def post(body: bytes) -> int:
            conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=60)
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "image/png"})
            status = conn.getresponse().status
            conn.close()
            return status

        warm = _png(digits.test.images[0, :, :, 0])
        assert [post(warm) for _ in range(3)] == [200] * 3
        base = _vm_hwm_mb(proc.pid)
        big = _big_png(side)
        with ThreadPoolExecutor(16) as ex:
            assert list(ex.map(lambda _: post(big), range(16))) == [200] * 16
        grown = _vm_hwm_mb(proc.pid) - base
        one = side * side / 2 ** 20  # MB per decoded grey image
        assert grown < (bound + 1) * one + 16, f"peak RSS grew by {grown:.0f} MB (one decode = {one:.0f} MB)"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not Path("/proc/sys/net/core/somaxconn").exists()
                    or int(Path("/proc/sys/net/core/somaxconn").read_text()) < 256,
                    reason="needs a kernel that allows a listen backlog of 256")
def test_burst_of_200_connections_is_queued_not_reset(serve):
    """200 connections complete their handshake before the server accepts any (the listen backlog
    holds them), then every one gets its answer: no reset, no refused connection."""
    s = serve(accept=False, workers=8, backlog=256)
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(200):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            assert c.connect_ex(s.address) in (0, 115)  # 115: EINPROGRESS
            socks.append(c)
            sel.register(c, selectors.EVENT_WRITE)
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 10
        while len(connected) < 200 and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                sel.unregister(key.fileobj)
                connected.add(key.fileobj)  # type: ignore[arg-type]
        # Without a backlog of 200, the kernel drops the extra SYNs and they retry after 1, 3, 7 s...
        assert len(connected) == 200
        assert all(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in socks)
        s.start_accepting()  # type: ignore[attr-defined]
        for c in socks:
            c.setblocking(True)
            c.settimeout(20)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = []
        for c in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                assert chunk, "connection closed before an answer"
                data += chunk
            statuses.append(int(data.split(b" ", 2)[1]))
        assert statuses == [200] * 200
    finally:
        sel.close()
        for c in socks:
            c.close()


def _wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _closed_within(c: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``c`` (EOF or reset) within ``seconds``."""
    c.settimeout(seconds)
    try:
        while True:
            if not c.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_closed_after_the_timeout_by_a_fixed_pool(serve, digits):
    s = serve(workers=2, idle_timeout_s=0.3)
    threads = threading.active_count()
    idle = [socket.create_connection(s.address, timeout=5) for _ in range(20)]
    try:
        assert _wait_until(lambda: s.server.connections == 2)
        assert threading.active_count() <= threads  # 20 idle connections, no thread for any of them
        assert all(_closed_within(c, 5) for c in idle)
    finally:
        for c in idle:
            c.close()
    # A keep-alive connection serves several requests, then is closed once it idles past the timeout.
    conn = http.client.HTTPConnection(*s.address, timeout=5)
    socks = []
    for _ in range(2):
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()
        socks.append(conn.sock)
    assert socks[0] is socks[1] and socks[0] is not None  # the same connection
    assert _closed_within(socks[0], 5)
    conn.close()
    assert s.predict_ok(_png(digits.test.images[0, :, :, 0]))


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickling_client_is_cut_at_its_deadline(serve, part):
    """One byte every 20 ms keeps every recv() well within any per-operation timeout: only the
    per-request deadline (headers: idle_timeout_s, body: read_timeout_s) ends it."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    if part == "headers":
        s = serve(workers=2, idle_timeout_s=0.5, read_timeout_s=60)
        prefix, trickle = b"", head + b"X-Pad: " + b"a" * 300
    else:
        s = serve(workers=2, idle_timeout_s=60, read_timeout_s=0.5)
        prefix, trickle = head + b"Content-Length: 300\r\n\r\n", b"a" * 300
    c = socket.create_connection(s.address, timeout=5)
    try:
        c.sendall(prefix)
        cut = False
        for b in trickle:
            try:
                c.send(bytes([b]))
            except OSError:
                cut = True
                break
            time.sleep(0.02)
            if _closed_within(c, 0.001):
                cut = True
                break
        assert cut, f"the server waited for 300 trickled {part} bytes (about 6 s)"
    finally:
        c.close()


def test_connections_beyond_workers_and_pending_get_503(serve, digits):
    s = serve(workers=1, max_pending=1, idle_timeout_s=5)
    busy = socket.create_connection(s.address, timeout=5)  # the only worker waits for its first request
    assert _wait_until(lambda: s.server.connections == 1)
    waiting = socket.create_connection(s.address, timeout=5)  # fills the pending queue
    try:
        assert _wait_until(s.server.has_pending)
        status, headers, body = s.raw(b"", timeout=5)
        assert status == 503 and headers["connection"] == "close"
        assert "too many connections" in json.loads(body)["error"] and s.server.rejected == 1
    finally:
        busy.close()
        waiting.close()
    assert _wait_until(lambda: not s.server.has_pending())
    assert s.predict_ok(_png(digits.test.images[0, :, :, 0]))


def test_multipart_part_cap_refuses_before_parsing(serve, digits, monkeypatch):
    img = _png(digits.test.images[0, :, :, 0])
    s = serve(max_parts=4, max_body_bytes=4_000_000)
    parsed = []
    real = serving_http.email.parser.BytesParser.parsebytes

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        parsed.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(serving_http.email.parser.BytesParser, "parsebytes", counting)
    body, ctype = _multipart(4, img)
    status, out = s.request("POST", "/predict?top_k=1", body, {"Content-Type": ctype})
    assert status == 200 and len(out["top_k"]) == 1 and parsed == [1]
    body, ctype = _multipart(60_000, img)  # the 60,000 tiny parts (~19 s of parsing before)
    assert len(body) < 4_000_000
    status, out = s.request("POST", "/predict", body, {"Content-Type": ctype})
    assert status == 413 and "60000 parts" in out["error"] and "limit of 4" in out["error"]
    assert parsed == [1]  # the big body was never handed to the MIME parser


def test_port_out_of_range_is_one_line_error(tiny_onnx, capsys):
    assert main(["http", "--model", str(tiny_onnx), "--port", "99999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "--port" in err[0] and "99999" in err[0]
    with pytest.raises(ValueError, match="0-65535"):
        make_server(object(), port=99999)  # type: ignore[arg-type]


def test_busy_port_is_one_line_error_and_leaves_no_threads(tiny_onnx, tiny_classifier, capsys):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        threads = threading.active_count()
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port}"):
            make_server(tiny_classifier, port=port)
        assert threading.active_count() == threads
        assert main(["http", "--model", str(tiny_onnx), "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: cannot listen on") and str(port) in err[0]
        assert "in use" in err[0].lower()
    finally:
        blocker.close()


def test_metadata_hides_run_ids_and_paths_unless_asked(serve, secret_source):
    secrets = [v for k, v in secret_source.items() if k != "method"]
    status, body = serve().request("GET", "/metadata")
    text = json.dumps(body)
    assert status == 200 and body["classes"] == [str(i) for i in range(10)] and body["spec"]["size"] == 16
    assert body["source"] == {"method": "coreg", "members": 1}
    assert "data_fingerprint" not in body
    assert not [v for v in secrets if v in text], text
    assert "/" not in body["model"]  # the file name, not its folder
    status, body = serve(expose_provenance=True).request("GET", "/metadata")
    text = json.dumps(body)
    assert status == 200 and all(v in text for v in secrets) and body["data_fingerprint"]


@pytest.mark.parametrize("field,value", [("workers", 0), ("max_decodes", 0), ("max_parts", -1), ("backlog", 0),
                                         ("idle_timeout_s", 0.0), ("max_body_bytes", -5), ("batch_wait_ms", -1.0)])
def test_server_config_refuses_non_positive_limits(field, value):
    with pytest.raises(ValueError, match=field):
        ServerConfig(**{field: value})
    assert ServerConfig(batch_wait_ms=0.0).batch_wait_ms == 0.0  # no waiting is allowed
