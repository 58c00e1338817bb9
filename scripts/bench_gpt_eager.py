"""The PyTorch-eager side of spotrun's GPT throughput benchmark: nanoGPT's model and training step, as written.

Usage: bench_gpt_eager.py DATA_DIR [--n-layer 6] [--n-head 6] [--n-embd 384] [--block 256] [--batch 64]
       [--steps 20] [--warmup 3] [--threads 2] [--dropout 0.0] [--device cpu|cuda] [--precision fp32|bf16]
       [--lr 1e-3] [--weight-decay 0.1] [--malloc-tuned]
DATA_DIR holds nanoGPT-format tokens (scripts/make_tokens.py): train.bin (raw little-endian uint16) and
meta.json ({"vocab_size": V, ...}). The model is SpotrunGPT (scripts/spotrun_models.py, nanoGPT's GPT); the
optimizer nanoGPT's AdamW (decay only on tensors with dim >= 2, betas (0.9, 0.99), eps 1e-8, fused on CUDA).
Each step: random windows of `block` tokens (targets shifted by one), logits = model(x), cross-entropy over all
positions, zero_grad(set_to_none=True), backward, clip_grad_norm_(1.0), step; bf16 runs forward and loss under
torch.autocast. `--warmup` steps are untimed, then `--steps` steps are timed one by one (CUDA synchronised).
Prints one JSON line: {"tokens_per_sec": F, "step_seconds": [per timed step], "params": N (tied weight once)}.
"""
import argparse, array, json, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("data_dir")
p.add_argument("--n-layer", type=int, default=6)
p.add_argument("--n-head", type=int, default=6)
p.add_argument("--n-embd", type=int, default=384)
p.add_argument("--block", type=int, default=256)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--dropout", type=float, default=0.0)
p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--weight-decay", type=float, default=0.1)
p.add_argument("--malloc-tuned", action="store_true", help="apply spotrun's glibc malloc settings first")
a = p.parse_args()
if a.steps < 1 or a.warmup < 0:
    sys.exit("error: --steps must be >= 1 and --warmup >= 0")
if a.malloc_tuned:  # spotrun::tune_allocator's settings, before torch allocates anything
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)          # M_MMAP_MAX = 0
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spotrun_models import SpotrunGPT


def load_tokens(path):
    """train.bin as an int64 tensor: numpy if it is installed, else the array module."""
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))
    ids = array.array("H")
    with open(path, "rb") as f:
        ids.frombytes(f.read())
    if ids.itemsize != 2:
        sys.exit("error: this platform's array('H') is not 16-bit")
    if sys.byteorder == "big":
        ids.byteswap()  # now native order, read below as native int16
    # Reinterpret as int16 without copying through Python ints, then undo the sign.
    return torch.frombuffer(ids, dtype=torch.int16).to(torch.int64) & 0xFFFF


with open(os.path.join(a.data_dir, "meta.json"), encoding="utf-8") as f:
    vocab = int(json.load(f)["vocab_size"])

torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(a.device)
data = load_tokens(os.path.join(a.data_dir, "train.bin")).to(dev)
if len(data) < a.block + 2:
    sys.exit(f"error: {a.data_dir}/train.bin has {len(data)} tokens, fewer than block + 2 = {a.block + 2}")

model = SpotrunGPT(vocab, a.block, a.n_layer, a.n_head, a.n_embd, a.dropout, bias=False).to(dev).train()
opt = model.configure_optimizers(a.weight_decay, a.lr, (0.9, 0.99), dev.type)
params = sum(p.numel() for p in model.parameters())  # the tied wte/lm_head weight counted once
offsets = torch.arange(a.block, device=dev)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step():
    starts = torch.randint(len(data) - a.block - 1, (a.batch,), device=dev)
    pos = starts[:, None] + offsets[None, :]
    x, y = data[pos], data[pos + 1]
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


for _ in range(a.warmup):
    step()
sync()
times = []
for _ in range(a.steps):
    t0 = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - t0)
print(json.dumps({"tokens_per_sec": a.steps * a.batch * a.block / sum(times), "step_seconds": times,
                  "params": params}))
