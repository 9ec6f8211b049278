"""Serving test fixtures: a tiny exported student and HTTP servers on ephemeral loopback ports."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Provenance that /metadata must not show unless asked: a run id, a model URI and a local path.
SECRET_SOURCE = {"method": "coreg", "run_id": "5f1e0c9a7b2d4e6f8a9b0c1d2e3f4a5b",
                 "model_uri": "models:/secret-student/7", "annotation": "/home/alice/private/ann.npz"}


@pytest.fixture(scope="session")
def secret_source() -> dict[str, str]:
    """The provenance stored in ``tiny_onnx``."""
    return dict(SECRET_SOURCE)


@pytest.fixture(scope="session")
def tiny_onnx(digits, tmp_path_factory) -> Path:
    """A tiny_cnn student on digits (16 px grey, classes "0".."9"), exported with ``SECRET_SOURCE``."""
    import torch

    from coreg.export import export_student
    from coreg.models import create_model
    from coreg.student import Student

    torch.manual_seed(0)
    net = create_model("tiny_cnn", num_classes=10, in_channels=1, setting="32x32", width=1.0, proj_dim=8).eval()
    st = Student(nets=[net], classes=list(digits.classes), spec=digits.spec, data=digits.describe(),
                 source=dict(SECRET_SOURCE))
    return export_student(st, tmp_path_factory.mktemp("tiny") / "s.onnx", parity_images=digits.test.images[:8]).path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_onnx):
    from serving.classifier import OnnxClassifier

    return OnnxClassifier(tiny_onnx, threads=1)


class Served:
    """A running server and ways to talk to it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.address: tuple[str, int] = server.server_address[:2]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, timeout: float = 20) -> tuple[int, dict]:
        """One request on a fresh connection; the JSON answer."""
        conn = http.client.HTTPConnection(*self.address, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.getheader("Content-Type") == "application/json"
            return resp.status, json.loads(data) if data else {}
        finally:
            conn.close()

    def raw(self, data: bytes, *, timeout: float = 20, shut_write: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Send ``data`` as is on a fresh connection; status, headers and body of the answer."""
        with socket.create_connection(self.address, timeout=timeout) as s:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def predict_ok(self, png: bytes) -> bool:
        status, body = self.request("POST", "/predict?top_k=1", png, {"Content-Type": "image/png"})
        return status == 200 and len(body["top_k"]) == 1


@pytest.fixture
def serve(tiny_classifier) -> Iterator[Any]:
    """``serve(**limits) -> Served``: a server with these ``ServerConfig`` fields, stopped after the test."""
    from serving.http import make_server

    running: list[tuple[Any, threading.Thread]] = []

    def start(*, accept: bool = True, classifier: Any = None, **limits: Any) -> Served:
        srv = make_server(classifier or tiny_classifier, host="127.0.0.1", port=0, **limits)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        if accept:
            t.start()
        running.append((srv, t))
        served = Served(srv)
        served.start_accepting = t.start  # type: ignore[attr-defined]
        return served

    yield start
    for srv, t in running:
        if t.is_alive():
            srv.shutdown()
            t.join(5)
        srv.server_close()
