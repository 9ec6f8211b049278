"""A small HTTP server for an :class:`~serving.runner.OnnxClassifier` (standard library only).

Endpoints:

* ``POST /predict[?top_k=K]``: one image, as the raw body (``Content-Type: image/*`` or
  ``application/octet-stream``) or as ``multipart/form-data`` (the field ``image``, else the first
  file). Answers ``{"top_k": [{"class": name, "index": i, "score": p}, ...]}``.
* ``GET /health``: ``{"status": "ok", ...}``.
* ``GET /metadata``: classes, preprocessing spec, provenance.

Request threads decode and preprocess their image, then hand it to one inference worker thread
through a bounded queue. The worker takes what is queued (up to ``max_batch``, waiting at most
``batch_wait_ms`` for more) and runs one onnxruntime call for the whole batch. Each request waits
on its own event with a timeout (504 when it passes). Every error is a JSON body
``{"error": message, "status": code}``: 400 malformed request, 404 unknown path, 405 wrong
method, 411 no Content-Length, 413 body or image too large, 415 wrong content type or not an
image, 422 an image that cannot be decoded, 503 queue full, 504 timeout.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from serving.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    ImageFormatError,
    ImageTooLargeError,
    open_image,
)
from serving.runner import top_k_from_logits

if TYPE_CHECKING:
    from serving.runner import OnnxClassifier

__all__ = ["BatchWorker", "ServerConfig", "InferenceServer", "make_server", "serve", "HttpError"]

logger = logging.getLogger(__name__)

RAW_TYPES = ("application/octet-stream",)


class HttpError(Exception):
    """An error answered to the client with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServerConfig:
    """Limits and batching of the server.

    Attributes:
        max_body_bytes: largest request body (413 above).
        max_pixels: largest image width x height (413 above), checked before decoding.
        max_batch: most requests in one onnxruntime call.
        batch_wait_ms: how long the worker waits for more requests after the first.
        timeout_s: how long a request waits for its result (504 after).
        max_queue: requests waiting for the worker at most (503 when full).
        default_top_k: classes answered without ``?top_k=``.
        socket_timeout_s: idle/slow-client timeout of a connection.
    """

    max_body_bytes: int = 10 * 1000 ** 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    timeout_s: float = 30.0
    max_queue: int = 256
    default_top_k: int = 5
    socket_timeout_s: float = 30.0


@dataclass
class _Job:
    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    logits: np.ndarray | None = None
    error: str | None = None
    cancelled: bool = False


class BatchWorker:
    """One thread that batches queued inputs and runs the classifier on them.

    Args:
        classifier: the model.
        max_batch: most inputs per onnxruntime call.
        batch_wait_ms: after the first input, how long to wait for more.
        max_queue: queue bound (``submit`` fails fast when full).
    """

    def __init__(self, classifier: OnnxClassifier, *, max_batch: int = 32, batch_wait_ms: float = 5.0,
                 max_queue: int = 256) -> None:
        self.classifier = classifier
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_s = max(0.0, float(batch_wait_ms)) / 1000.0
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max(1, int(max_queue)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coreg-serve-worker", daemon=True)
        self.batches = 0
        self.items = 0

    def start(self) -> BatchWorker:
        """Start the worker thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker; requests still queued get an error."""
        self._stop.set()
        self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            job.error = "server shutting down"
            job.done.set()

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread.is_alive()

    def qsize(self) -> int:
        """Requests waiting."""
        return self._queue.qsize()

    def infer(self, x: np.ndarray, *, timeout: float) -> np.ndarray:
        """Queue one preprocessed input ``[C, H, W]`` and wait for its logits ``[K]``.

        Raises:
            HttpError: 503 when the queue is full or the worker stopped, 504 on timeout, 500 when
                inference failed.
        """
        if self._stop.is_set() or not self.alive:
            raise HttpError(503, "inference worker is not running")
        job = _Job(x=x)
        try:
            self._queue.put(job, timeout=min(1.0, timeout))
        except queue.Full:
            raise HttpError(503, "server busy: inference queue is full") from None
        if not job.done.wait(timeout):
            job.cancelled = True  # the worker skips it if it has not started it yet
            raise HttpError(504, f"inference did not finish within {timeout:g} s")
        if job.error is not None:
            raise HttpError(500, f"inference failed: {job.error}")
        assert job.logits is not None
        return job.logits

    def _collect(self) -> list[_Job]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        jobs = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                jobs.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return [j for j in jobs if not j.cancelled]

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._collect()
            if not jobs:
                continue
            try:
                logits = self.classifier.predict_array(np.stack([j.x for j in jobs]))
                for j, row in zip(jobs, logits):
                    j.logits = row
            except Exception as e:  # noqa: BLE001 - the worker must survive any inference failure
                logger.exception("inference failed for a batch of %d", len(jobs))
                for j in jobs:
                    j.error = f"{type(e).__name__}: {e}"
            finally:
                for j in jobs:
                    j.done.set()
            self.batches += 1
            self.items += len(jobs)


def _parse_multipart(content_type: str, body: bytes) -> bytes:
    """The image bytes of a ``multipart/form-data`` body: field ``image``, else the first file part.

    Raises:
        HttpError: 400 for a malformed body or one without a file part.
    """
    if "boundary=" not in content_type.lower():
        raise HttpError(400, "malformed multipart/form-data: no boundary in Content-Type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise HttpError(400, "malformed multipart/form-data body")
    defects = [type(d).__name__ for d in msg.defects]
    parts = list(msg.iter_parts())
    if defects or not parts:
        raise HttpError(400, f"malformed multipart/form-data body ({', '.join(defects) or 'no parts'})")
    chosen = None
    for part in parts:
        if part.get_param("name", header="content-disposition") == "image":
            chosen = part
            break
    if chosen is None:
        chosen = next((p for p in parts if p.get_filename()), None)
    if chosen is None:
        raise HttpError(400, "multipart/form-data body has no 'image' field and no file part")
    payload = chosen.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise HttpError(400, "the multipart image part is empty")
    return payload


class _Handler(BaseHTTPRequestHandler):
    server: InferenceServer
    protocol_version = "HTTP/1.1"
    server_version = "coreg-serve/1"

    def setup(self) -> None:
        self.timeout = self.server.config.socket_timeout_s
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive response.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        logger.debug("%s - %s", self.address_string(), format % args)

    # -- responses

    def _send_json(self, status: int, obj: Any, *, close: bool = False, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error_json(self, status: int, message: str, *, close: bool = False,
                         headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": message, "status": status}, close=close, headers=headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised inside ``http.server`` itself (bad request line, ...) as JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_error_json(code, message or phrase, close=True)

    # -- routing

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes = {"/predict": ("POST",), "/health": ("GET", "HEAD"), "/metadata": ("GET", "HEAD")}
        try:
            if path not in routes:
                # Drain a small body so the connection stays usable; close it otherwise.
                self._discard_body()
                raise HttpError(404, f"no such endpoint: {path} (try POST /predict, GET /health, GET /metadata)")
            if method not in routes[path]:
                self._discard_body()
                self._send_error_json(405, f"method {method} not allowed on {path}",
                                      headers={"Allow": ", ".join(routes[path])}, close=self.close_connection)
                return
            if path == "/predict":
                self._predict()
            elif path == "/health":
                w = self.server.worker
                ok = w.alive
                self._send_json(200 if ok else 503, {"status": "ok" if ok else "worker stopped",
                                                     "model": self.server.classifier.path.name,
                                                     "queue": w.qsize(), "batches": w.batches,
                                                     "requests": w.items})
            else:
                self._send_json(200, self.server.classifier.describe())
        except HttpError as e:
            self._send_error_json(e.status, e.message, close=self.close_connection)
        except Exception as e:  # noqa: BLE001 - a request must never kill the server or hang the client
            logger.exception("unexpected error on %s %s", method, self.path)
            self._send_error_json(500, f"internal error: {type(e).__name__}", close=True)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._route("OPTIONS")

    # -- body handling

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            n = int(raw)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, f"bad Content-Length: {raw!r}") from None
        if n < 0:
            self.close_connection = True
            raise HttpError(400, f"bad Content-Length: {raw!r}")
        return n

    def _discard_body(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        try:
            n = self._content_length() or 0
        except HttpError:
            return
        if n > 65536:
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(411, "send the body with a Content-Length (chunked transfer is not supported)")
        n = self._content_length()
        if n is None:
            self.close_connection = True
            raise HttpError(411, "Content-Length required")
        limit = self.server.config.max_body_bytes
        if n > limit:
            # Not reading a huge body: answer and close the connection.
            self.close_connection = True
            raise HttpError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            raise HttpError(400, f"request body ended after {len(body)} of {n} bytes")
        return body

    def _top_k(self) -> int:
        q = parse_qs(urlsplit(self.path).query)
        if "top_k" not in q:
            return min(self.server.config.default_top_k, self.server.classifier.num_classes)
        try:
            k = int(q["top_k"][0])
        except ValueError:
            raise HttpError(400, f"top_k must be an integer, got {q['top_k'][0]!r}") from None
        if k < 1:
            raise HttpError(400, f"top_k must be >= 1, got {k}")
        return min(k, self.server.classifier.num_classes)

    def _predict(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        mtype = ctype.split(";", 1)[0].strip().lower()
        if not (mtype.startswith("image/") or mtype in RAW_TYPES or mtype == "multipart/form-data"):
            self._discard_body()
            raise HttpError(415, f"unsupported Content-Type {ctype or '(none)'!r}: send image/*, "
                                 "application/octet-stream or multipart/form-data")
        k = self._top_k()
        body = self._read_body()
        data = _parse_multipart(ctype, body) if mtype == "multipart/form-data" else body
        if not data:
            raise HttpError(400, "empty request body")
        cfg = self.server.config
        try:
            img = open_image(data, max_pixels=cfg.max_pixels, name="request image")
        except ImageTooLargeError as e:
            raise HttpError(413, str(e)) from None
        except ImageFormatError as e:
            raise HttpError(415, str(e)) from None
        except ImageDecodeError as e:
            raise HttpError(422, str(e)) from None
        clf = self.server.classifier
        x = clf.preprocess([img])[0]
        logits = self.server.worker.infer(x, timeout=cfg.timeout_s)
        self._send_json(200, {"top_k": top_k_from_logits(logits[None, :], clf.classes, k=k)[0]})


class InferenceServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` that owns the classifier and its batching worker.

    ``server_close()`` also stops the worker.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], classifier: OnnxClassifier, config: ServerConfig) -> None:
        self.classifier = classifier
        self.config = config
        self.worker = BatchWorker(classifier, max_batch=config.max_batch, batch_wait_ms=config.batch_wait_ms,
                                  max_queue=config.max_queue)
        super().__init__(address, _Handler)
        self.worker.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is the client's business: log it, keep serving."""
        logger.debug("error while handling a request from %s", client_address, exc_info=True)

    def server_close(self) -> None:
        """Close the socket and stop the worker."""
        super().server_close()
        self.worker.stop()


def make_server(classifier: OnnxClassifier, *, host: str = "127.0.0.1", port: int = 8000,
                config: ServerConfig | None = None, **limits: Any) -> InferenceServer:
    """Bind a server (not yet serving; call ``serve_forever()``, later ``shutdown()`` and ``server_close()``).

    Args:
        classifier: the model.
        host: address to bind (loopback by default).
        port: port; 0 picks a free one (read it back from ``server.server_address``).
        config: limits and batching; ``**limits`` override its fields.
    """
    cfg = config or ServerConfig()
    if limits:
        cfg = ServerConfig(**{**cfg.__dict__, **limits})
    return InferenceServer((host, port), classifier, cfg)


def serve(classifier: OnnxClassifier, *, host: str = "127.0.0.1", port: int = 8000, **limits: Any) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(classifier, host=host, port=port, **limits)
    h, p = server.server_address[:2]
    print(f"coreg-serve: {classifier.path.name} ({classifier.num_classes} classes) on http://{h}:{p} "
          "(POST /predict, GET /health, GET /metadata)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
