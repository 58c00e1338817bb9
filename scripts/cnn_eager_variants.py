"""PyTorch-eager variants of the CNN training loop, to find which of spotrun's choices costs time on the CPU.

Usage: $SPOTRUN_PYTHON scripts/cnn_eager_variants.py   (malloc tuned like spotrun; prints samples/s per variant)
Variants: plain eager (single-tensor AdamW), fused AdamW, in-place ReLU, channels-last weights
(`model.to(memory_format=torch.channels_last)`), and all of spotrun's choices together.
"""
import ctypes, sys, time, os
libc = ctypes.CDLL("libc.so.6"); libc.mallopt(-4, 0); libc.mallopt(-1, 2**31 - 1)
import torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spotrun_models import SpotrunCNN
torch.set_num_threads(2)
n, B = 16384, 4096
x = torch.randn(n, 784); y = torch.randint(0, 10, (n,))
def run(fused, inplace, reseed, label, channels_last=False):
    torch.manual_seed(0)
    m = SpotrunCNN([1, 28, 28], [32, 64], [128], 10)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    if inplace:
        m.act = torch.nn.ReLU(inplace=True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=fused or None, foreach=False if not fused else None)
    rates = []
    for ep in range(3):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, B):
            if reseed: torch.manual_seed(i)
            idx = perm[i:i+B]
            loss = F.cross_entropy(m(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        float(loss.detach())
        if ep: rates.append(n / (time.perf_counter() - t0))
    print(f"{label:40s} {sorted(rates)[len(rates)//2]:.0f} samples/s", flush=True)
for _ in range(3):
    run(False, False, False, "eager (single-tensor AdamW)")
    run(True, False, False, "fused AdamW")
    run(False, True, False, "inplace relu")
    run(False, False, False, "channels-last weights", channels_last=True)
    run(True, True, True, "all of spotrun's choices", channels_last=True)
