"""A small HTTP server for an :class:`~serving.classifier.OnnxClassifier` (standard library only).

Endpoints:

* ``POST /predict[?top_k=K]``: one image, as the raw body (``Content-Type: image/*`` or
  ``application/octet-stream``) or as ``multipart/form-data`` (the field ``image``, else the first
  file). Answers ``{"top_k": [{"class": name, "index": i, "score": p}, ...]}``.
* ``GET /health``: ``{"status": "ok", ...}``.
* ``GET /metadata``: classes, preprocessing spec, format; the provenance (run id, model URI,
  annotation path, data fingerprint) only when the server was started with ``expose_provenance``.

Connections: the accept loop hands each connection to a fixed pool of ``workers`` threads
(listen backlog ``backlog``, at most ``max_pending`` accepted connections waiting for a worker;
beyond that a connection gets 503 and is closed). A connection must deliver a request's headers
within ``idle_timeout_s`` (counted from the accept, or from the previous response on a keep-alive
connection) and its body within ``read_timeout_s``; a watchdog in the accept loop shuts down
connections past their deadline, so idle or trickling clients cannot hold the workers. While
connections wait for a worker, responses carry ``Connection: close`` so keep-alive clients make
room.

Requests: the body (at most ``max_body_bytes``; multipart bodies at most ``max_parts`` parts,
counted before parsing) is read, the image's declared size is checked against ``max_pixels``
before decoding, and the image is decoded and preprocessed on one of ``max_decodes`` decode
threads (the memory-heavy step: about ``width * height * bands`` bytes each). The small network input then goes
through a bounded queue to one inference thread, which takes what is queued (up to ``max_batch``,
waiting at most ``batch_wait_ms`` for more) and runs one onnxruntime call for the whole batch.
Each request waits on its own event with a timeout (504 when it passes).

Every error is a JSON body ``{"error": message, "status": code}`` with a one-line message: 400
malformed request, 404 unknown path, 405 wrong method, 411 no Content-Length, 413 body, image or
part count too large, 415 wrong content type or not an image, 422 an image that cannot be decoded,
503 busy, 504 timeout.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from serving.classifier import top_k_from_logits
from serving.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    ImageFormatError,
    ImageTooLargeError,
    open_image,
)

if TYPE_CHECKING:
    from serving.classifier import OnnxClassifier

__all__ = ["BatchWorker", "DecodePool", "ServerConfig", "InferenceServer", "ServerStartError", "make_server",
           "HttpError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RAW_TYPES = ("application/octet-stream",)
LINGER_S = 2.0  # lingering close: how long to read what a client still sends after the last response


def _default_decodes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class HttpError(Exception):
    """An error answered to the client with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerStartError(OSError):
    """The server cannot listen on the requested address (port in use, bad address, no permission)."""


@dataclass(frozen=True)
class ServerConfig:
    """Limits, batching and connection handling of the server.

    Attributes:
        max_body_bytes: largest request body (413 above).
        max_pixels: largest image width x height (413 above), checked before decoding.
        max_decodes: images decoded and preprocessed at once (default: CPU cores, at most 4).
        max_parts: most parts in a ``multipart/form-data`` body (413 above), counted before parsing.
        max_batch: most requests in one onnxruntime call.
        batch_wait_ms: how long the inference thread waits for more requests after the first.
        timeout_s: how long a request waits for a decode slot and for its result (503 / 504 after).
        max_queue: requests waiting for the inference thread at most (503 when full).
        default_top_k: classes answered without ``?top_k=``.
        workers: connection-handling threads (a fixed pool; also bounds the bodies held in memory
            to ``workers * max_body_bytes``).
        backlog: listen backlog (the kernel caps it, on Linux at ``net.core.somaxconn``).
        max_pending: accepted connections waiting for a free worker (503 and close beyond).
        idle_timeout_s: a connection must send a request's headers within this long of its accept
            or of the previous response; it is closed otherwise.
        read_timeout_s: a request body must arrive within this long after its headers.
        expose_provenance: ``/metadata`` also shows run ids, model URIs, local paths and the data
            fingerprint stored in the model.
    """

    max_body_bytes: int = 10 * 1000 ** 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decodes: int = field(default_factory=_default_decodes)
    max_parts: int = 16
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    timeout_s: float = 30.0
    max_queue: int = 256
    default_top_k: int = 5
    workers: int = 64
    backlog: int = 1024
    max_pending: int = 1024
    idle_timeout_s: float = 15.0
    read_timeout_s: float = 60.0
    expose_provenance: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "batch_wait_ms":
                if v < 0:
                    raise ValueError(f"batch_wait_ms must be >= 0, got {v}")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and not v > 0:
                raise ValueError(f"{f.name} must be > 0, got {v}")


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
        """Stop the worker (if it was started); requests still queued get an error."""
        self._stop.set()
        if self._thread.ident is not None:
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
        if job.logits is None:  # pragma: no cover - the worker sets logits or error before done
            raise HttpError(500, "inference returned nothing")
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


class DecodePool:
    """``limit`` threads that decode and preprocess images, counting the current and the peak number.

    Decoding is the memory-heavy step. Running it on a few dedicated threads (rather than in every
    connection thread under a semaphore) bounds both the decodes in flight and the memory the C
    allocator keeps per thread: freed full-size image buffers stay with the thread's malloc arena,
    so ``workers`` decoding threads would each keep one.

    Args:
        limit: decode threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._ex = ThreadPoolExecutor(self.limit, thread_name_prefix="coreg-serve-decode")
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """``fn(*args)`` on a decode thread; its result, or its exception re-raised.

        Raises:
            HttpError: 503 when it did not finish within ``timeout`` seconds (all threads busy).
        """
        fut = self._ex.submit(self._counted, fn, *args)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise HttpError(503, f"server busy: image decoding did not finish within {timeout:g} s") from None

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.active -= 1

    def close(self) -> None:
        """Stop the threads (running decodes finish, queued ones are dropped)."""
        self._ex.shutdown(wait=False, cancel_futures=True)


def _multipart_boundary(content_type: str) -> str:
    msg = email.message.Message()
    msg["Content-Type"] = content_type
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise HttpError(400, "malformed multipart/form-data: no boundary in Content-Type")
    return boundary


def _parse_multipart(content_type: str, body: bytes, *, max_parts: int) -> bytes:
    """The image bytes of a ``multipart/form-data`` body: field ``image``, else the first file part.

    The parts are counted (one ``--boundary`` delimiter each) before the body is parsed, so a body
    of many tiny parts costs one ``bytes.count``, not a parse.

    Raises:
        HttpError: 400 for a malformed body or one without a file part, 413 for too many parts.
    """
    boundary = _multipart_boundary(content_type)
    n_parts = body.count(b"--" + boundary.encode("latin-1", "replace")) - 1
    if n_parts > max_parts:
        raise HttpError(413, f"multipart/form-data body has {n_parts} parts, over the limit of {max_parts}")
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

    def __init__(self, request: socket.socket, client_address: Any, server: InferenceServer,
                 accepted_at: float | None = None) -> None:
        self._deadline = (accepted_at or time.monotonic()) + server.config.idle_timeout_s
        self._linger = False
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        # A per-operation backstop; the watchdog enforces the per-request deadlines.
        self.timeout = max(self.server.config.idle_timeout_s, self.server.config.read_timeout_s)
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive response.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def handle(self) -> None:
        """Requests on this connection until it closes, idles past its deadline, or others wait."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self._next_request_arrived():
            self.handle_one_request()

    def _next_request_arrived(self) -> bool:
        """Between keep-alive requests: wait for the next one (True), or give up (False) when it is
        not there by the idle deadline or, while it is not there, other connections wait for a worker."""
        if self._buffered():
            return True
        with selectors.DefaultSelector() as sel:
            sel.register(self.connection, selectors.EVENT_READ)
            while True:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    return False
                if sel.select(min(left, 0.05)):
                    return True
                if self.server.has_pending() or self.server.closing:
                    logger.debug("closing an idle keep-alive connection: others wait for a worker")
                    return False

    def _buffered(self) -> bool:
        """Whether the next request is already in the read buffer (a pipelining client), without blocking."""
        self.connection.setblocking(False)
        try:
            return bool(self.rfile.peek(1))
        except OSError:
            return False
        finally:
            self.connection.settimeout(self.timeout)

    def handle_one_request(self) -> None:
        """One request, with the headers due by ``self._deadline`` (then the next one's clock starts)."""
        wd = self.server.watchdog
        wd.arm(self.connection, self._deadline)
        try:
            super().handle_one_request()
        finally:
            wd.disarm(self.connection)
            self._deadline = time.monotonic() + self.server.config.idle_timeout_s

    def finish(self) -> None:
        """Flush; after an error response that closes the connection, a lingering close."""
        try:
            super().finish()
        finally:
            if self._linger:
                self.server.linger(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        logger.debug("%s - %s", self.address_string(), format % args)

    # -- responses

    def _send_json(self, status: int, obj: Any, *, close: bool = False, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(obj) + "\n").encode()
        # Connections are waiting for a worker: end this keep-alive connection (politely, so the
        # client reconnects) rather than hold the worker while the client thinks.
        close = close or self.close_connection or self.server.has_pending()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
            self._linger = self._linger or status >= 400
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
        if self.request_version == "HTTP/0.9":
            # An unparsable request line leaves the version at 0.9, whose responses have no status
            # line or headers; answer such clients in HTTP/1.1, like the parsable ones.
            self.request_version = "HTTP/1.1"
        self._send_error_json(code, message or phrase, close=True)

    # -- routing

    def _route(self, method: str) -> None:
        self.server.watchdog.arm(self.connection, time.monotonic() + self.server.config.read_timeout_s)
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes = {"/predict": ("POST",), "/health": ("GET", "HEAD"), "/metadata": ("GET", "HEAD")}
        try:
            if path == "/predict" and method == "POST":
                self._predict()
                return
            self._discard_body()
            if path not in routes:
                raise HttpError(404, f"no such endpoint: {path} (try POST /predict, GET /health, GET /metadata)")
            if method not in routes[path]:
                self._send_error_json(405, f"method {method} not allowed on {path}",
                                      headers={"Allow": ", ".join(routes[path])})
            elif path == "/health":
                srv = self.server
                ok = srv.worker.alive
                self._send_json(200 if ok else 503, {"status": "ok" if ok else "worker stopped",
                                                     "model": srv.classifier.path.name,
                                                     "queue": srv.worker.qsize(), "batches": srv.worker.batches,
                                                     "requests": srv.worker.items, "decoding": srv.decodes.active,
                                                     "connections": srv.connections})
            else:
                self._send_json(200, self.server.classifier.describe(provenance=self.server.config.expose_provenance))
        except HttpError as e:
            self._send_error_json(e.status, e.message)
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
        """Read and drop a small body so the connection stays usable; close it otherwise."""
        try:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                return
            n = self._content_length() or 0
            if n > 65536:
                self.close_connection = True
            elif n and len(self.rfile.read(n)) != n:
                self.close_connection = True
        except HttpError:
            return
        finally:
            self.server.watchdog.disarm(self.connection)

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
        self.server.watchdog.disarm(self.connection)
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
            raise HttpError(400, f"top_k must be an integer, got {q['top_k'][0][:40]!r}") from None
        if k < 1:
            raise HttpError(400, f"top_k must be >= 1, got {k}")
        return min(k, self.server.classifier.num_classes)

    def _decode(self, data: bytes) -> np.ndarray:
        """Image bytes -> the network input ``[C, H, W]`` (runs on a decode thread)."""
        img = open_image(data, max_pixels=self.server.config.max_pixels, name="request image")
        return self.server.classifier.preprocess([img])[0]

    def _predict(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        mtype = ctype.split(";", 1)[0].strip().lower()
        if not (mtype.startswith("image/") or mtype in RAW_TYPES or mtype == "multipart/form-data"):
            self._discard_body()
            raise HttpError(415, f"unsupported Content-Type {ctype[:80] or '(none)'!r}: send image/*, "
                                 "application/octet-stream or multipart/form-data")
        try:
            k = self._top_k()
        except HttpError:
            self._discard_body()
            raise
        body = self._read_body()
        cfg = self.server.config
        data = _parse_multipart(ctype, body, max_parts=cfg.max_parts) if mtype == "multipart/form-data" else body
        del body
        if not data:
            raise HttpError(400, "empty request body")
        clf = self.server.classifier
        try:
            x = self.server.decodes.run(self._decode, data, timeout=cfg.timeout_s)
        except ImageTooLargeError as e:
            raise HttpError(413, str(e)) from None
        except ImageFormatError as e:
            raise HttpError(415, str(e)) from None
        except ImageDecodeError as e:
            raise HttpError(422, str(e)) from None
        logits = self.server.worker.infer(x, timeout=cfg.timeout_s)
        self._send_json(200, {"top_k": top_k_from_logits(logits[None, :], clf.classes, k=k)[0]})


class _Watchdog:
    """Per-connection deadlines; :meth:`expire` shuts down the sockets past theirs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}

    def arm(self, sock: socket.socket, deadline: float) -> None:
        with self._lock:
            self._deadlines[sock] = deadline

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def expire(self, now: float | None = None) -> int:
        """Shut down every armed socket whose deadline passed (``now=inf``: all); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [s for s, d in self._deadlines.items() if d <= now]
            for s in late:
                del self._deadlines[s]
        for s in late:
            try:
                s.shutdown(socket.SHUT_RDWR)  # the worker's blocked recv() returns at once
            except OSError:
                pass
        if late:
            logger.debug("closed %d idle or slow connection(s)", len(late))
        return len(late)


def _readable(sock: socket.socket) -> bool:
    with selectors.DefaultSelector() as sel:  # epoll/kqueue: no FD_SETSIZE limit as with select()
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(0))


class InferenceServer(TCPServer):
    """A TCP server with a fixed pool of connection workers that owns the classifier and its batcher.

    Bound and listening when constructed (the workers run already); call ``serve_forever()`` to
    accept connections, later ``shutdown()`` and ``server_close()``. ``server_close()`` also stops
    the workers and the inference thread.

    Raises:
        ServerStartError: the address cannot be bound.
    """

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], classifier: OnnxClassifier, config: ServerConfig) -> None:
        self.classifier = classifier
        self.config = config
        self.request_queue_size = config.backlog
        self.worker = BatchWorker(classifier, max_batch=config.max_batch, batch_wait_ms=config.batch_wait_ms,
                                  max_queue=config.max_queue)
        self.decodes = DecodePool(config.max_decodes)
        self.watchdog = _Watchdog()
        self._pending: queue.Queue[tuple[socket.socket, Any, float] | None] = queue.Queue(config.max_pending)
        self._pool: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closing = False
        self.connections = 0  # connections a worker is serving now
        self.rejected = 0  # connections answered 503 because all workers and the pending queue were full
        try:
            super().__init__(address, _Handler)
        except (OSError, OverflowError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ServerStartError(f"cannot listen on {address[0]}:{address[1]}: {reason}") from None
        self.worker.start()
        for i in range(config.workers):
            t = threading.Thread(target=self._work, name=f"coreg-serve-conn-{i}", daemon=True)
            t.start()
            self._pool.append(t)

    def has_pending(self) -> bool:
        """Whether accepted connections wait for a worker."""
        return not self._pending.empty()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Queue an accepted connection for the pool; answer 503 and close it when the queue is full."""
        try:
            self._pending.put_nowait((request, client_address, time.monotonic()))
        except queue.Full:
            self.rejected += 1
            body = b'{"error": "server busy: too many connections", "status": 503}\n'
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self._close_now(request)

    def _work(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            request, addr, accepted_at = item
            if time.monotonic() > accepted_at + self.config.idle_timeout_s and not _readable(request):
                self._close_now(request)  # waited its whole idle time in the queue without sending anything
                continue
            with self._lock:
                self.connections += 1
            try:
                _Handler(request, addr, self, accepted_at)  # serves the connection until it closes
            except Exception:  # noqa: BLE001 - one broken connection must not end the worker
                self.handle_error(request, addr)
            finally:
                self.shutdown_request(request)
                with self._lock:
                    self.connections -= 1

    def service_actions(self) -> None:
        """Called by ``serve_forever`` at least every ``poll_interval``: enforce connection deadlines."""
        self.watchdog.expire()

    def linger(self, request: socket.socket) -> None:
        """Shut the write side, then read and drop what the client still sends (a short while).

        Closing a socket with unread data (a refused body, a pipelined request) makes the kernel
        answer with a reset, which can destroy the error response still in flight to the client.
        Used after error responses that close the connection; a client that reads the response
        and closes ends it at once.
        """
        try:
            request.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + LINGER_S, 0
            while drained <= self.config.max_body_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def _close_now(self, request: Any) -> None:
        try:
            request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is the client's business: log it, keep serving."""
        logger.debug("error while handling a request from %s", client_address, exc_info=True)

    def server_close(self) -> None:
        """Close the socket, end the connections, stop the workers and the inference thread."""
        super().server_close()
        self.closing = True
        self.watchdog.expire(float("inf"))  # unblock workers reading from their connections
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._close_now(item[0])
        for _ in self._pool:
            try:
                self._pending.put(None, timeout=0.5)
            except queue.Full:
                break
        deadline = time.monotonic() + 2.0
        for t in self._pool:
            t.join(max(0.0, deadline - time.monotonic()))
        self.decodes.close()
        self.worker.stop()


def make_server(classifier: OnnxClassifier, *, host: str = "127.0.0.1", port: int = 8000,
                config: ServerConfig | None = None, **limits: Any) -> InferenceServer:
    """Bind a server (not yet serving; call ``serve_forever()``, later ``shutdown()`` and ``server_close()``).

    Args:
        classifier: the model.
        host: address to bind (loopback by default).
        port: port, 0-65535; 0 picks a free one (read it back from ``server.server_address``).
        config: limits and batching; ``**limits`` override its fields.

    Raises:
        ValueError: a port outside 0-65535 or a bad limit.
        ServerStartError: the address cannot be bound (port in use, unknown host, ...).
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be in 0-65535, got {port}")
    cfg = config or ServerConfig()
    if limits:
        cfg = replace(cfg, **limits)
    return InferenceServer((host, int(port)), classifier, cfg)
