"""The PyTorch-eager side of spotrun's fused-sweep benchmark: R MLPs trained as one horizontally fused model
(HFTA-style), the way a user would write it in PyTorch.

Usage: bench_fused_eager.py [--runs 16] [--train 1437] [--val 360] [--features 64] [--classes 10]
       [--hidden 256,256] [--batch 128] [--epochs 30] [--threads 2]
Random data of spotrun's synthetic shape. Weights `[R, in, out]`, each layer one `torch.bmm` plus bias, ReLU;
loss: the mean cross-entropy over all R·B items times R (each run's gradient is that of its own batch mean); each
run its own batch order and its own AdamW (lr 0.0003-0.01 x weight decay 0-0.1, the grid of the Rust bench) via
`torch._fused_adamw_` on its slices; one evaluation of every run per epoch. No checkpoints, metrics files or
per-run processes: the floor a hand-written fused script reaches. Prints one JSON line:
{"seconds": wall time of the training loop, "setup_seconds": data and model creation, "runs": R}.
"""
import argparse, json, time

p = argparse.ArgumentParser()
p.add_argument("--runs", type=int, default=16)
p.add_argument("--train", type=int, default=1437)
p.add_argument("--val", type=int, default=360)
p.add_argument("--features", type=int, default=64)
p.add_argument("--classes", type=int, default=10)
p.add_argument("--hidden", default="256,256")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

t0 = time.time()
import torch

torch.set_num_threads(a.threads)
torch.manual_seed(0)
R = a.runs
sizes = [a.features, *[int(h) for h in a.hidden.split(",")], a.classes]
x_train, y_train = torch.randn(a.train, a.features), torch.randint(0, a.classes, (a.train,))
x_val, y_val = torch.randn(a.val, a.features), torch.randint(0, a.classes, (a.val,))
Ws = [(torch.randn(R, i, o) / i**0.5).requires_grad_() for i, o in zip(sizes, sizes[1:])]
bs = [torch.zeros(R, o, requires_grad=True) for o in sizes[1:]]
params = Ws + bs
m = [torch.zeros_like(p) for p in params]
v = [torch.zeros_like(p) for p in params]
steps = torch.zeros(R)
lrs = [lr for lr in (0.0003, 0.001, 0.003, 0.01) for _ in range(4)][:R] + [0.001] * max(0, R - 16)
wds = [wd for _ in range(4) for wd in (0.0, 0.001, 0.01, 0.1)][:R] + [0.0] * max(0, R - 16)


def forward(h):
    for i, (W, b) in enumerate(zip(Ws, bs)):
        h = torch.bmm(h, W) + b.unsqueeze(1)
        if i < len(Ws) - 1:
            h = h.relu()
    return h


setup = time.time() - t0
t1 = time.time()
gens = [torch.Generator().manual_seed(r) for r in range(R)]
for epoch in range(a.epochs):
    orders = [torch.randperm(a.train, generator=g) for g in gens]
    for s in range(0, a.train, a.batch):
        idx = torch.cat([o[s : s + a.batch] for o in orders])
        n = idx.numel() // R
        x, y = x_train[idx].view(R, n, -1), y_train[idx].view(R, n)
        out = forward(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(R * n, -1), y.reshape(-1)) * R
        for q in params:
            q.grad = None
        loss.backward()
        with torch.no_grad():
            steps += 1
            for r in range(R):
                sl = lambda ts: [t[r] for t in ts]
                torch._fused_adamw_(sl(params), sl([q.grad for q in params]), sl(m), sl(v), [], [steps[r]] * len(params),
                                    lr=lrs[r], beta1=0.9, beta2=0.999, weight_decay=wds[r], eps=1e-8,
                                    amsgrad=False, maximize=False)
    with torch.no_grad():
        out = forward(x_val.expand(R, -1, -1))
        val = torch.nn.functional.cross_entropy(out.reshape(-1, a.classes), y_val.repeat(R), reduction="none")
        val.view(R, -1).mean(1).tolist()
print(json.dumps({"seconds": time.time() - t1, "setup_seconds": setup, "runs": R}))
