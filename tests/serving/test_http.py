"""The ``coreg-serve http`` server on an ephemeral loopback port: good requests and batching.

Bad requests: test_http_bad_inputs.py; limits and exhaustion: test_http_limits.py.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from serving.http import BatchWorker, HttpError


@pytest.fixture
def server(serve):
    return serve(max_body_bytes=200_000, max_pixels=1_000_000, max_batch=8, batch_wait_ms=20, timeout_s=10).server


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _request(server, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.getheader("Content-Type") == "application/json"
        return resp.status, json.loads(data) if data else {}
    finally:
        conn.close()


def _multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "xYzBoundary123") -> tuple[bytes, str]:
    out = b""
    for name, filename, data in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
                f"Content-Type: {'image/png' if filename else 'text/plain'}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_raw_png_prediction_matches_classifier(server, tiny_classifier, digits):
    img = digits.test.images[0, :, :, 0]
    status, body = _request(server, "POST", "/predict?top_k=3", _png(img), {"Content-Type": "image/png"})
    assert status == 200
    assert len(body["top_k"]) == 3
    expected = tiny_classifier.top_k([Image.fromarray(img)], k=3)[0]
    assert [t["index"] for t in body["top_k"]] == [t["index"] for t in expected]
    assert body["top_k"][0]["score"] == pytest.approx(expected[0]["score"], abs=1e-6)
    status, body = _request(server, "POST", "/predict", _png(img), {"Content-Type": "application/octet-stream"})
    assert status == 200 and len(body["top_k"]) == 5  # default top_k


def test_multipart_image_field_and_first_file(server, digits):
    img = _png(digits.test.images[1, :, :, 0])
    data, ctype = _multipart([("note", None, b"hello"), ("image", "a.png", img)])
    status, body = _request(server, "POST", "/predict?top_k=1", data, {"Content-Type": ctype})
    assert status == 200 and len(body["top_k"]) == 1
    data2, ctype2 = _multipart([("note", None, b"hello"), ("upload", "b.png", img)])
    status2, body2 = _request(server, "POST", "/predict?top_k=1", data2, {"Content-Type": ctype2})
    assert status2 == 200 and body2 == body


def test_health_and_metadata(server):
    status, body = _request(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, body = _request(server, "GET", "/metadata")
    assert status == 200 and body["classes"] == [str(i) for i in range(10)] and body["spec"]["size"] == 16
    assert body["format"] == "coreg-onnx-v1"


def test_concurrent_requests_are_all_answered_and_batched(server, digits):
    payloads = [_png(digits.test.images[i, :, :, 0]) for i in range(24)]
    before = server.worker.batches

    def one(p: bytes) -> tuple[int, dict]:
        return _request(server, "POST", "/predict?top_k=1", p, {"Content-Type": "image/png"})

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, payloads))
    assert all(s == 200 and len(b["top_k"]) == 1 for s, b in results)
    assert server.worker.batches - before < 24  # some requests shared an onnxruntime call


class _SlowOrBroken:
    """Stands in for a classifier: sleeps, or raises, on demand."""

    num_classes = 3

    def __init__(self) -> None:
        self.delay = 0.0
        self.fail = False

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return np.zeros((len(x), 3), dtype=np.float32)


def test_worker_timeout_and_failure_do_not_kill_it():
    clf = _SlowOrBroken()
    w = BatchWorker(clf, max_batch=4, batch_wait_ms=1).start()  # type: ignore[arg-type]
    try:
        x = np.zeros((1, 4, 4), dtype=np.float32)
        clf.delay = 0.5
        with pytest.raises(HttpError) as e:
            w.infer(x, timeout=0.05)
        assert e.value.status == 504
        clf.delay, clf.fail = 0.0, True
        time.sleep(0.6)
        with pytest.raises(HttpError) as e:
            w.infer(x, timeout=2)
        assert e.value.status == 500
        clf.fail = False
        assert w.infer(x, timeout=2).shape == (3,)
        assert w.alive
    finally:
        w.stop()
    with pytest.raises(HttpError) as e:
        w.infer(np.zeros((1, 4, 4), dtype=np.float32), timeout=0.1)
    assert e.value.status == 503
