"""scripts/bench_eager.py must read the bench data without the `safetensors` package (the GPU image may lack it).

Run by scripts/test.sh: hides `safetensors`, runs the script's fallback reader, and compares it with the package's.
"""
import json, os, sys, tempfile

import torch
from safetensors.torch import load_file as reference, save_file

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
save_file({"x_train": torch.randn(5, 7), "y_train": torch.arange(5), "half": torch.randn(3).half(),
           "u8": torch.randint(0, 255, (2, 3), dtype=torch.uint8), "empty": torch.empty(0, 4)}, path)
sys.modules["safetensors"] = None  # any `import safetensors...` now raises ImportError
sys.modules["safetensors.torch"] = None
src = open(os.path.join(root, "scripts", "bench_eager.py")).read()
ns = {"torch": torch, "json": json}
exec(src[src.index("try:\n    from safetensors.torch"):src.index("sys.path.insert")], ns)
got, want = ns["load_file"](path), reference(path)
assert ns["load_file"] is not reference and got.keys() == want.keys(), (got.keys(), want.keys())
for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k
print("bench_eager.py reads safetensors without the package:", sorted(got))
