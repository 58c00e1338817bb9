"""Writes a small example dataset in the layout spotrun reads: x_train, y_train, x_val, y_val.

Usage: make_example_data.py OUT.safetensors [--n 4000] [--features 64] [--classes 5] [--dtype float32|float16|uint8]
       [--label-dtype int64|int32] [--bad-label N]   (--bad-label puts label N into y_train, for tests)
"""
import argparse, os
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--n", type=int, default=4000)
p.add_argument("--features", type=int, default=64)
p.add_argument("--classes", type=int, default=5)
p.add_argument("--dtype", default="float32")
p.add_argument("--label-dtype", default="int64")
p.add_argument("--bad-label", type=int)
a = p.parse_args()

g = torch.Generator().manual_seed(0)
centers = torch.randn(a.classes, a.features, generator=g) * 2

def split(n):
    y = torch.randint(0, a.classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, a.features, generator=g)
    if a.dtype == "uint8":
        x = ((x.clamp(-4, 4) + 4) / 8 * 255).to(torch.uint8)
    else:
        x = x.to(getattr(torch, a.dtype))
    return x, y.to(getattr(torch, a.label_dtype))

x_train, y_train = split(a.n)
x_val, y_val = split(a.n // 4)
if a.bad_label is not None:
    y_train[0] = a.bad_label
os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
save_file({"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}, a.out)
print(a.out)
