"""Record the reference (pre-robust) Co-Reg behaviour on a short CPU run (commit beb1ffe)."""
import hashlib, json, sys, tempfile
import torch
from coreg.data import load_dataset
from coreg.engine import TrainConfig, fit
from coreg.simulate import simulate_annotation

torch.set_num_threads(1)
b = load_dataset("digits")
keep = 240
b.train.images, b.train.labels, b.train.ids = b.train.images[:keep], b.train.labels[:keep], b.train.ids[:keep]
b.test.images, b.test.labels, b.test.ids = b.test.images[:100], b.test.labels[:100], b.test.ids[:100]
ann = simulate_annotation(b, kind="flip", q=0.2, eta=0.2, seed=0)
sets = ["model.name=tiny_cnn", "method.batch_size=32", "method.moco_queue=100", "method.start_cont=0",
        "amp=off", "channels_last=false", "epochs=4", "warmup=1", "val_fraction=0.1"]
cfg = TrainConfig.for_method("coreg").with_overrides(sets)
with tempfile.TemporaryDirectory() as d:
    r = fit(cfg, b, ann, out_dir=d, progress=False)
h = hashlib.sha256()
for net in r.student.nets:
    for k, v in net.state_dict().items():
        h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
keys = ["net1_loss", "net2_loss", "net1_num_labelled", "net2_num_labelled", "test_acc", "test_acc_net1",
        "test_acc_net2", "val_approx_acc", "lr"]
hist = [{k: e[k] for k in keys if k in e} for e in r.history]
json.dump({"overrides": sets, "threads": 1, "sha256": h.hexdigest(), "history": hist,
           "recorded_at": "beb1ffe"}, open(sys.argv[1], "w"), indent=1)
print(h.hexdigest()); print(hist[-1])
