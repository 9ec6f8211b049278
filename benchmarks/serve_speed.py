"""Serving speed: onnxruntime (fp32, int8) vs torch eager, int8 accuracy, and HTTP throughput.

Models (one network each, random weights unless noted):

* ``resnet18_w1``: PreAct ResNet-18, width 1.0, 32 px, 3 channels;
* ``resnet18_w0.25``: the same at width 0.25;
* ``digits_cnn``: ``tiny_cnn`` (width 4) trained with plain cross-entropy on ``digits`` (16 px grey)
  for 20 epochs inside this script, so the int8 accuracy change is measured on a real model.

For each model, batch 1 and 64, 1 and 2 CPU threads: images/s and per-call latency p50/p90/p99
of torch eager, onnxruntime fp32 and onnxruntime int8 (static QDQ). Then the HTTP server
(``serving.http``) on 127.0.0.1 with 8 concurrent clients and a bounded number of requests.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/serve_speed.py [--quick] [--out benchmarks/results/serve_speed.json]

Prints a markdown table; writes JSON. Runs in about 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import logging
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from coreg.data import ImageSpec, load_dataset
from coreg.export import export_student, normalize_images, onnx_accuracy, quantize_int8
from coreg.models import create_model
from coreg.student import Student
from serving.classifier import OnnxClassifier
from serving.http import make_server

RESULTS = Path(__file__).resolve().parent / "results" / "serve_speed.json"


def _load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _percentiles(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99))}


def _time_calls(fn: Any, *, batch: int, budget_s: float, min_calls: int = 5, max_calls: int = 2000,
                warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    lat: list[float] = []
    start = time.perf_counter()
    while len(lat) < max_calls and (len(lat) < min_calls or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    total = sum(lat)
    return {"images_per_s": batch * len(lat) / total, "calls": len(lat), **_percentiles(lat)}


def _ort(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _train_digits_cnn(bundle: Any, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("tiny_cnn", num_classes=10, in_channels=1, setting="32x32", width=4.0, proj_dim=16)
    x = torch.from_numpy(normalize_images(bundle.train.images, bundle.spec))
    y = torch.from_numpy(bundle.train.labels)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return net.eval()


def _models(bundle: Any, quick: bool) -> list[tuple[str, Student, np.ndarray, np.ndarray]]:
    """(name, student, calibration uint8 images, benchmark uint8 images)."""
    rng = np.random.default_rng(0)
    rgb_spec = ImageSpec(32, 3, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    rgb_imgs = rng.integers(0, 256, size=(128, 32, 32, 3), dtype=np.uint8)
    out = []
    for width in (1.0, 0.25):
        torch.manual_seed(0)
        net = create_model("preact_resnet18", num_classes=10, in_channels=3, setting="32x32", width=width,
                           proj_dim=128).eval()
        st = Student(nets=[net], classes=[str(i) for i in range(10)], spec=rgb_spec, data={}, source={})
        out.append((f"resnet18_w{width:g}", st, rgb_imgs, rgb_imgs))
    net = _train_digits_cnn(bundle, epochs=5 if quick else 20)
    st = Student(nets=[net], classes=list(bundle.classes), spec=bundle.spec, data=bundle.describe(),
                 source={"method": "ce"})
    out.append(("digits_cnn", st, bundle.train.images[:256], bundle.test.images[:128]))
    return out


def _http_bench(clf: OnnxClassifier, images: np.ndarray, *, requests: int, clients: int) -> dict[str, float]:
    payloads = []
    for im in images[:32]:
        buf = io.BytesIO()
        Image.fromarray(im[:, :, 0] if im.shape[-1] == 1 else im).save(buf, format="PNG")
        payloads.append(buf.getvalue())
    srv = make_server(clf, host="127.0.0.1", port=0, max_batch=32, batch_wait_ms=2)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]

    def client(n: int, seed: int) -> list[float]:
        lat = []
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for i in range(n):
            body = payloads[(seed + i) % len(payloads)]
            t0 = time.perf_counter()
            conn.request("POST", "/predict?top_k=1", body=body, headers={"Content-Type": "image/png"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            lat.append(time.perf_counter() - t0)
        conn.close()
        return lat

    try:
        client(10, 0)  # warm-up
        b0 = srv.worker.batches
        i0 = srv.worker.items
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as ex:
            lats = [x for part in ex.map(lambda s: client(requests // clients, s), range(clients)) for x in part]
        wall = time.perf_counter() - start
        mean_batch = (srv.worker.items - i0) / max(1, srv.worker.batches - b0)
    finally:
        srv.shutdown()
        srv.server_close()
    return {"requests": len(lats), "clients": clients, "requests_per_s": len(lats) / wall,
            "mean_batch": mean_batch, **_percentiles(lats)}


def main() -> None:
    """Run the benchmark, print markdown tables, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Shorter timing budgets (a smoke run).")
    ap.add_argument("--budget-s", type=float, default=None, help="Seconds of timing per configuration.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    budget = args.budget_s or (0.3 if args.quick else 1.0)
    t_start = time.perf_counter()
    load_start = _load_avg()
    bundle = load_dataset("digits")
    rows: list[dict[str, Any]] = []
    accuracy: dict[str, Any] = {}
    http_res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as td:
        for name, st, calib, imgs in _models(bundle, args.quick):
            fp32 = export_student(st, Path(td) / name / "model.onnx", parity_images=imgs[:16]).path
            int8 = quantize_int8(fp32, Path(td) / name / "model.int8.onnx", calibration_images=calib, spec=st.spec)
            module = st.eval_module()
            if name == "digits_cnn":
                with torch.no_grad():
                    xt = torch.from_numpy(normalize_images(bundle.test.images, st.spec))
                    torch_acc = float((module(xt).argmax(1).numpy() == bundle.test.labels).mean())
                a32 = onnx_accuracy(fp32, bundle.test.images, bundle.test.labels)
                a8 = onnx_accuracy(int8, bundle.test.images, bundle.test.labels)
                accuracy = {"model": name, "test_images": len(bundle.test), "torch_fp32": torch_acc,
                            "onnx_fp32": a32, "onnx_int8": a8, "int8_change_points": 100 * (a8 - a32)}
            for threads in (1, 2):
                torch.set_num_threads(threads)
                sessions = {"onnx_fp32": _ort(fp32, threads), "onnx_int8": _ort(int8, threads)}
                for batch in (1, 64):
                    x = normalize_images(np.resize(imgs, (batch, *imgs.shape[1:])), st.spec)
                    xt = torch.from_numpy(x)

                    def run_torch(xt: torch.Tensor = xt, module: torch.nn.Module = module) -> None:
                        with torch.inference_mode():
                            module(xt)

                    res = {"torch_eager": _time_calls(run_torch, batch=batch, budget_s=budget)}
                    for eng, sess in sessions.items():
                        res[eng] = _time_calls(lambda sess=sess, x=x: sess.run(None, {"input": x}), batch=batch,
                                               budget_s=budget)
                    for eng, r in res.items():
                        rows.append({"model": name, "threads": threads, "batch": batch, "engine": eng, **r,
                                     "speedup_vs_torch": r["images_per_s"] / res["torch_eager"]["images_per_s"]})
                    print(f"  {name} threads={threads} batch={batch}: " + ", ".join(
                        f"{e} {r['images_per_s']:.0f} img/s" for e, r in res.items()), flush=True)
            if name == "digits_cnn":
                for label, path in (("fp32", fp32), ("int8", int8)):
                    clf = OnnxClassifier(path, threads=1)
                    http_res[label] = _http_bench(clf, bundle.test.images, requests=160 if args.quick else 800,
                                                  clients=8)
    torch.set_num_threads(2)
    doc = {"host": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "onnxruntime": ort.__version__},
           "budget_s_per_config": budget, "rows": rows, "int8_accuracy": accuracy, "http": http_res,
           "total_s": time.perf_counter() - t_start,
           # 1/5/15-minute load averages: on a shared machine, read the numbers against these
           "load_avg": {"start": load_start, "end": _load_avg(), "cpus": os.cpu_count()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")

    print("\n| model | threads | batch | engine | img/s | p50 ms | p90 ms | p99 ms | x torch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['engine']} | {r['images_per_s']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['speedup_vs_torch']:.2f} |")
    if accuracy:
        print(f"\nint8 accuracy ({accuracy['model']}, {accuracy['test_images']} digits test images): torch "
              f"{accuracy['torch_fp32']:.4f}, onnx fp32 {accuracy['onnx_fp32']:.4f}, onnx int8 "
              f"{accuracy['onnx_int8']:.4f} ({accuracy['int8_change_points']:+.2f} points)")
    if http_res:
        print("\n| HTTP (digits_cnn, 8 clients, 1 ORT thread) | requests | req/s | mean batch | p50 ms | p99 ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, h in http_res.items():
            print(f"| {label} | {h['requests']} | {h['requests_per_s']:.0f} | {h['mean_batch']:.1f} | "
                  f"{h['p50_ms']:.2f} | {h['p99_ms']:.2f} |")
    print(f"\nwrote {args.out} ({doc['total_s']:.0f} s; load average {doc['load_avg']['start']} -> "
          f"{doc['load_avg']['end']} on {doc['load_avg']['cpus']} CPUs)")


if __name__ == "__main__":
    main()
