"""Modules a user would bring, exported the way the README says, and spotrun's loop replayed in PyTorch eager.

    torchscript_models.py export mlp|cnn|lm|frozen OUT.pt [--trace] [--seed S]
    torchscript_models.py eager MODEL.pt DATA.safetensors OUT.safetensors --steps N --batch B --lr LR [--seed S]

`export` builds the module with torch.manual_seed(S) and saves torch.jit.script(module) (or torch.jit.trace in train
mode with --trace). `eager` loads the same file with torch.jit.load and trains it for N steps the way spotrun does
(classification on a safetensors file): the epoch order is spotrun's Fisher-Yates permutation keyed by
(seed, epoch), the global RNG is reseeded from (seed, epoch, batch) before every step, loss = mean cross-entropy,
torch.optim.AdamW(fused=True) with weight decay on every parameter; then saves the state_dict. The integration
tests compare that with spotrun's own run of the same file.
"""
import argparse, sys

import torch
import torch.nn as nn
import torch.nn.functional as F

M64 = (1 << 64) - 1


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix64:
    """spotrun's data::rng::SplitMix64, keyed like SplitMix64::keyed."""

    def __init__(self, parts):
        s = 0x853C49E6748FEA9B
        for p in parts:
            s = mix(s ^ ((p * 0x9E3779B97F4A7C15) & M64))
        self.s = s

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        return mix(self.s)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def epoch_permutation(seed, epoch, n):
    order = list(range(n))
    rng = SplitMix64([seed, epoch, 0x0E0C])
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def step_seed(seed, epoch, batch):
    return SplitMix64([seed, epoch, batch]).next_u64() >> 1


class Mlp(nn.Module):
    def __init__(self, inputs=32, hidden=64, classes=4):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class Cnn(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = x.reshape(-1, 1, 8, 8)
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.head(x.flatten(1))


class TinyLm(nn.Module):
    """A one-block causal transformer LM with the embedding tied to the output layer."""

    def __init__(self, vocab=27, block=16, width=32, heads=2):
        super().__init__()
        self.heads = heads
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(block, width)
        self.ln = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        nn.init.normal_(self.wte.weight, std=0.02)

    def forward(self, idx):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        q, k, v = self.qkv(self.ln(x)).split(x.shape[-1], dim=2)
        shape = (b, t, self.heads, x.shape[-1] // self.heads)
        q, k, v = (m.reshape(shape).transpose(1, 2) for m in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, -1))
        return self.lm_head(self.ln_f(x))


def export(kind, out, trace, seed):
    torch.manual_seed(seed)
    m = {"mlp": Mlp, "cnn": Cnn, "lm": TinyLm, "frozen": Mlp}[kind]()
    if kind == "frozen":
        m.requires_grad_(False)
    if trace:
        example = torch.randint(0, 27, (2, 16)) if kind == "lm" else torch.randn(2, 64 if kind == "cnn" else 32)
        torch.jit.trace(m.train(), example).save(out)
    else:
        torch.jit.script(m).save(out)


def eager(model_path, data_path, out, steps, batch, lr, seed):
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(1)
    m = torch.jit.load(model_path)
    m.train()
    d = load_file(data_path)
    x, y = d["x_train"], d["y_train"].long()
    n = x.shape[0]
    opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True)
    done, epoch = 0, 0
    while done < steps:
        order = torch.tensor(epoch_permutation(seed, epoch, n))
        for b, start in enumerate(range(0, n, batch)):
            if done == steps:
                break
            torch.manual_seed(step_seed(seed, epoch, b))
            idx = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
            done += 1
        epoch += 1
    save_file({k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}, out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("kind", choices=["mlp", "cnn", "lm", "frozen"])
    e.add_argument("out")
    e.add_argument("--trace", action="store_true")
    e.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("eager")
    t.add_argument("model")
    t.add_argument("data")
    t.add_argument("out")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "export":
        export(a.kind, a.out, a.trace, a.seed)
    else:
        eager(a.model, a.data, a.out, a.steps, a.batch, a.lr, a.seed)
