"""scripts/gpu-check.sh's Python helpers, one subcommand each; Python >= 3.10 with torch (no tomllib needed).

    gpu_check.py versions                       driver, CUDA runtime, torch, cuDNN and Python versions, one line
    gpu_check.py data FILE N VAL FEATURES       synthetic classification data, written once as safetensors
    gpu_check.py rate RUN_DIR KEY               median KEY (samples_per_sec, tokens_per_sec) after the first epoch
    gpu_check.py last RUN_DIR                   "val_loss V, skipped steps S" of the last epoch
    gpu_check.py where CHECKPOINT_DIR           "epoch E batch B, REASON" of a checkpoint's manifest
    gpu_check.py mfu CONFIG TOKENS_PER_S GPU    model FLOP/s and MFU of a GPT run
    gpu_check.py script-gpt TOML OUT SCRIPTS DRY   SpotrunGPT at the TOML's shape, saved with torch.jit.script
"""
import json
import os
import re
import statistics
import subprocess
import sys


def model_table(path):
    """The [model] table of a spotrun TOML file: tomllib where there is one (3.11+), else the flat
    `key = value` lines spotrun writes (numbers, booleans, strings), which is all the GPT config holds."""
    try:
        import tomllib

        with open(path, "rb") as f:
            return tomllib.load(f)["model"]
    except ImportError:
        pass
    table, section = {}, None
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[(.+)\]", line):
            section = m.group(1).strip()
        elif section == "model" and (m := re.fullmatch(r"([A-Za-z_]+)\s*=\s*(.+)", line)):
            v = m.group(2).strip()
            table[m.group(1)] = v == "true" if v in ("true", "false") else json.loads(v)
    return table


def versions():
    import torch

    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        driver = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else "none"
    except (OSError, subprocess.SubprocessError):
        driver = "none (no nvidia-smi)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    py = ".".join(map(str, sys.version_info[:3]))
    print(f"NVIDIA driver {driver}; CUDA runtime {torch.version.cuda or 'none'} (torch's build); "
          f"torch {torch.__version__}; cuDNN {cudnn or 'none'}; Python {py}")


def data(path, n, val, features):
    """Like spotrun's built-in task (class blobs in a 16-d latent, tanh of a random projection plus noise), so
    the models learn something; one file that every throughput row then reads instead of regenerating it."""
    import torch

    n, val, features, classes = int(n), int(val), int(features), 10
    g = torch.Generator().manual_seed(1234)
    centers = torch.randn(classes, 6, 16, generator=g)
    proj = torch.randn(16, features, generator=g) / 4.0

    def split(count):
        c = torch.randint(classes, (count,), generator=g)
        z = centers[c, torch.randint(6, (count,), generator=g)] + 0.5 * torch.randn(count, 16, generator=g)
        x = torch.randn(count, features, generator=g).add_(torch.tanh(z @ proj))
        return x, c

    (x, y), (xv, yv) = split(n), split(val)
    tensors = {"x_train": x, "y_train": y, "x_val": xv, "y_val": yv}
    tmp = path + ".tmp"
    try:
        from safetensors.torch import save_file

        save_file(tensors, tmp)
    except ImportError:  # the format by hand: 8-byte header length, JSON header, raw little-endian data
        header, offset = {}, 0
        for k, t in tensors.items():
            size = t.numel() * t.element_size()
            header[k] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + size]}
            offset += size
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(tmp, "wb") as f:
            f.write(len(h).to_bytes(8, "little") + h)
            for t in tensors.values():
                f.write(t.contiguous().numpy().tobytes())
    os.replace(tmp, path)


def metrics(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def rate(run_dir, key):
    m = metrics(run_dir)
    r = [x[key] for x in m[1:]] or [m[-1][key]]
    print(f"{statistics.median(r):.0f}")


def last(run_dir):
    m = metrics(run_dir)[-1]
    print(f"val_loss {m['val_loss']:.4f}, skipped steps {m.get('skipped_steps')}")


def where(checkpoint):
    m = json.load(open(os.path.join(checkpoint, "manifest.json")))
    print(f"epoch {m['epoch'] + 1} batch {m['batch']}, {m['reason']}")


def mfu(config, tokens_per_s, gpu):
    m = model_table(config)
    L, C, T, V = m["n_layer"], m["n_embd"], m["block_size"], m.get("vocab_size", 27)
    n = L * (12 * C * C + 2 * C) + C + V * C  # parameters without the position embedding (nanoGPT's N)
    rate = float(tokens_per_s) * (6 * n + 12 * L * C * T)  # nanoGPT's FLOPs per token
    peaks = [("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12)]
    peak = next((p for k, p in peaks if k in gpu), None)
    print(f"MFU {100 * rate / peak:.1f}% ({rate / 1e12:.1f} TFLOP/s)" if peak
          else f"{rate / 1e12:.2f} TFLOP/s, MFU n/a (unknown peak)")


def script_gpt(toml, out, scripts, dry):
    import torch

    sys.path.insert(0, scripts)
    from spotrun_models import SpotrunGPT

    m = model_table(toml)
    if dry == "1":
        m.update(n_layer=1, n_embd=32, n_head=2, block_size=32)
    torch.manual_seed(0)
    gpt = SpotrunGPT(27, m["block_size"], m["n_layer"], m["n_head"], m["n_embd"], m["dropout"], m.get("bias", False))
    torch.jit.script(gpt).save(out)


if __name__ == "__main__":
    commands = {"versions": versions, "data": data, "rate": rate, "last": last, "where": where, "mfu": mfu,
                "script-gpt": script_gpt}
    commands[sys.argv[1]](*sys.argv[2:])
