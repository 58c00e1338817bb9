"""The PyTorch-eager side of spotrun's throughput benchmark: the same loop, model, data, batch and threads.

Usage: bench_eager.py DATA.safetensors --model mlp|cnn --batch B --threads T --epochs E [--hidden 1024,1024]
       [--channels 32,64] [--shape 1,28,28] [--precision fp32|bf16] [--device cpu|cuda] [--malloc-tuned]
       [--channels-last]
Prints one JSON line: {"samples_per_sec": [per timed epoch...]} (the first, warm-up epoch is not timed).
The loop is what a PyTorch user writes: randperm order, x[idx], F.cross_entropy, AdamW (default, i.e.
single-tensor on CPU, foreach on CUDA), zero_grad(set_to_none=True), backward, step. `--malloc-tuned` and
`--channels-last` (`model.to(memory_format=torch.channels_last)`) give eager two of spotrun's own settings.
"""
import argparse, ctypes, json, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--model", default="mlp")
p.add_argument("--batch", type=int, default=8192)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--hidden", default="1024,1024")
p.add_argument("--channels", default="32,64")
p.add_argument("--shape", default="1,28,28")
p.add_argument("--precision", default="fp32")
p.add_argument("--device", default="cpu")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--malloc-tuned", action="store_true", help="apply spotrun's glibc malloc settings first")
p.add_argument("--channels-last", action="store_true", help="store conv weights channels-last, as spotrun does")
a = p.parse_args()

if a.malloc_tuned:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)          # M_MMAP_MAX = 0
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD

import torch, torch.nn.functional as F
try:
    from safetensors.torch import load_file
except ImportError:  # e.g. a GPU image with torch but not safetensors: the format is simple enough to read here
    def load_file(path):
        import struct
        kinds = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                 "BOOL": torch.bool}
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
            body = bytearray(f.read())
        out = {}
        for name, h in header.items():
            if name == "__metadata__":
                continue
            kind, (a, b) = kinds[h["dtype"]], h["data_offsets"]
            n = (b - a) // torch.empty((), dtype=kind).element_size()
            t = torch.frombuffer(body, dtype=kind, count=n, offset=a) if n else torch.empty(0, dtype=kind)
            out[name] = t.reshape(h["shape"])
        return out
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spotrun_models import SpotrunCNN, SpotrunMLP

torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(a.device)
d = load_file(a.data)
x, y = d["x_train"].to(dev), d["y_train"].to(dev)
n, feats = x.shape[0], x[0].numel()
classes = int(y.max()) + 1
hidden = [int(h) for h in a.hidden.split(",") if h]
if a.model == "cnn":
    model = SpotrunCNN([int(s) for s in a.shape.split(",")], [int(c) for c in a.channels.split(",")], hidden, classes)
else:
    model = SpotrunMLP(feats, hidden, classes)
model = model.to(dev).train()
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr)

def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()

rates = []
for epoch in range(a.epochs + 1):
    sync()
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=dev)
    for i in range(0, n, a.batch):
        idx = perm[i:i + a.batch]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    float(loss)
    sync()
    if epoch > 0:
        rates.append(n / (time.perf_counter() - t0))
print(json.dumps({"samples_per_sec": rates}))
