"""The HTTP part of the bad-input catalogue (issue 12, item 5): one table of malformed requests.

Every case must get its 4xx with a one-line JSON error that names the problem, no traceback in the
answer or in the server's log, and the server must answer a good request right afterwards.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

LIMITS = {"max_body_bytes": 200_000, "max_pixels": 1_000_000, "max_parts": 4, "workers": 4}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A complete, valid grey PNG of zeros: ``width * height`` pixels in a file of a few KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the row
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _corrupt_idat(png: bytes) -> bytes:
    """``png`` with part of its compressed pixel data zeroed: a valid header, an undecodable body."""
    b = bytearray(png)
    i = b.index(b"IDAT") + 4
    b[i + 10: i + 40] = bytes(30)
    return bytes(b)


def _noise_png() -> bytes:
    return _png(np.random.default_rng(0).integers(0, 256, size=(32, 32), dtype=np.uint8))


def _multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "Bnd7") -> tuple[bytes, str]:
    out = b""
    for name, filename, data in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _req(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, *,
         content_length: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if content_length and body and "Content-Length" not in (headers or {}):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


def _predict(body: bytes, ctype: str = "image/png", path: str = "/predict", **kw: bool) -> bytes:
    return _req("POST", path, body, {"Content-Type": ctype}, **kw)


def _cases() -> list[tuple[str, bytes, int, str, bool]]:
    """(id, raw request, status, text the error must contain, shut the write side after sending)."""
    noise = _noise_png()
    many, many_ct = _multipart([(f"f{i}", None, b"x") for i in range(40)] + [("image", "a.png", noise)])
    nofile, nofile_ct = _multipart([("note", None, b"hello")])
    empty_part, empty_part_ct = _multipart([("image", "a.png", b"")])
    return [
        ("corrupt_image_bytes", _predict(bytes(range(256)) * 4), 415, "not a recognised image format", False),
        ("truncated_png", _predict(noise[: len(noise) // 2]), 422, "cannot decode", False),
        ("png_with_corrupt_pixel_data", _predict(_corrupt_idat(noise)), 422, "broken data stream", False),
        ("png_signature_then_garbage", _predict(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), 415,
         "not a recognised image format", False),
        ("oversized_body", _req("POST", "/predict", b"x" * 100, {"Content-Type": "image/png",
                                                                 "Content-Length": "50000000"}),
         413, "exceeds the limit of 200000 bytes", False),
        ("decompression_bomb_png", _predict(_bomb_png(5000, 5000)), 413, "5000x5000", False),
        ("bomb_beyond_pillow_limit", _predict(_bomb_png(20000, 10000)), 413, "pixels", False),
        ("wrong_content_type", _predict(b"hello", "text/plain"), 415, "unsupported Content-Type 'text/plain'", False),
        ("bad_json", _predict(b'{"image": ', "application/json"), 415, "'application/json'", False),
        ("no_content_type", _req("POST", "/predict", noise), 415, "(none)", False),
        ("empty_body", _predict(b"", content_length=False).replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"),
         400, "empty request body", False),
        ("too_many_multipart_parts", _predict(many, many_ct), 413, "41 parts, over the limit of 4", False),
        ("multipart_without_boundary", _predict(b"--x\r\n\r\nabc", "multipart/form-data"), 400, "no boundary", False),
        ("multipart_without_file", _predict(nofile, nofile_ct), 400, "no 'image' field", False),
        ("multipart_empty_image", _predict(empty_part, empty_part_ct), 400, "image part is empty", False),
        ("unknown_route", _req("GET", "/v1/models"), 404, "no such endpoint: /v1/models", False),
        ("wrong_method", _req("GET", "/predict"), 405, "method GET not allowed on /predict", False),
        ("top_k_negative", _predict(noise, path="/predict?top_k=-1"), 400, "top_k must be >= 1, got -1", False),
        ("top_k_text", _predict(noise, path="/predict?top_k=all"), 400, "top_k must be an integer, got 'all'", False),
        ("chunked_body", _req("POST", "/predict", b"5\r\nhello\r\n0\r\n\r\n",
                              {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}, content_length=False),
         411, "chunked transfer is not supported", False),
        ("no_content_length", _predict(noise, content_length=False), 411, "Content-Length required", True),
        ("bad_content_length", _req("POST", "/predict", b"", {"Content-Type": "image/png",
                                                              "Content-Length": "12abc"}),
         400, "bad Content-Length: '12abc'", False),
        ("negative_content_length", _req("POST", "/predict", b"", {"Content-Type": "image/png",
                                                                   "Content-Length": "-5"}),
         400, "bad Content-Length: '-5'", False),
        ("body_shorter_than_declared", _req("POST", "/predict", b"0123456789", {"Content-Type": "image/png",
                                                                               "Content-Length": "1000"}),
         400, "ended after 10 of 1000 bytes", True),
        ("garbage_request_line", b"HELLO\r\n\r\n", 400, "Bad request syntax", False),
        ("request_line_too_long", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long", False),
        ("too_many_headers", _req("GET", "/health", b"", {f"X-H{i}": "1" for i in range(120)}), 431,
         "Too many headers", False),
    ]


CASES = _cases()


def test_catalogue_has_at_least_ten_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 10


@pytest.mark.parametrize("name,raw,status,needle,shut_write", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_one_line_4xx_and_server_keeps_serving(serve, digits, caplog, name, raw, status, needle,
                                                                 shut_write):
    caplog.set_level(logging.DEBUG)
    s = serve(**LIMITS)
    got, headers, body = s.raw(raw, shut_write=shut_write)
    assert got == status, body
    assert 400 <= got < 500
    assert headers["content-type"] == "application/json"
    text = body.decode()
    assert "Traceback" not in text and 'File "' not in text
    doc = json.loads(text)
    assert doc["status"] == status and "\n" not in doc["error"] and doc["error"].strip() == doc["error"]
    assert needle.lower() in doc["error"].lower(), doc["error"]
    # the server is fine: a good image gets its answer, on a fresh connection
    assert s.predict_ok(_png(digits.test.images[0, :, :, 0]))
    assert s.request("GET", "/health")[0] == 200
    assert s.server.worker.alive
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
