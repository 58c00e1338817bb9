#!/usr/bin/env bash
# data.source = "images" against the Python a user would write (not part of scripts/test.sh): N small images (default
# 20000, 64x48 and 48x64, half PNG, half JPEG, 10 classes, 90% train / 10% val, made here with Pillow) decoded to
# uint8 [N, 3, 32, 32] tensors (Resize(32) + CenterCrop(32)) by `spotrun prepare` (cold cache, then cached), by a
# PIL loop (open, exif_transpose, convert RGB, resize, crop, numpy stack, torch.from_numpy) and by torchvision's
# ImageFolder iterated once through a DataLoader with 2 workers (PILToTensor, torch.cat). Prints wall time and peak
# RSS (/usr/bin/time; CPU = user + sys of the process and its waited-for children) of each, one invocation each,
# on $(nproc) threads.
# Python: the torch venv plus torchvision 0.26.0 (the release for torch 2.11.0) and Pillow, installed once under
# ~/.cache/spotrun/bench-images-1. Usage: scripts/bench_images.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
N="${1:-20000}"
PY="${SPOTRUN_PYTHON:-${HOME}/.cache/spotrun/torch-2.11.0/bin/python}"
DATA_PY="${SPOTRUN_DATA_PYTHON:-${HOME}/.cache/spotrun/testdata-1/bin/python}"
SITE="${HOME}/.cache/spotrun/bench-images-1"
if [ ! -f "${SITE}/.done" ]; then
    "${PY}" -m pip install --quiet --no-deps --target "${SITE}" "torchvision==0.26.0" "pillow==12.0.0" >&2
    touch "${SITE}/.done"
fi
BIN="${SPOTRUN_ROOT}/target/release/spotrun"
cargo build --release --locked >/dev/null 2>&1
DIR="${TMPDIR:-/tmp}/spotrun-bench-images-${N}"
if [ ! -f "${DIR}/.done" ]; then
    "${DATA_PY}" - "${DIR}" "${N}" <<'PYEOF'
import os, sys, numpy as np
from PIL import Image
d, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    split = "val" if i % 10 == 0 else "train"
    c = (i // 10) % 10
    os.makedirs(f"{d}/{split}/c{c}", exist_ok=True)
    w, h = (64, 48) if i % 3 else (48, 64)
    a = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += np.array([25 * c, 200 - 20 * c, 100], dtype=np.uint8)
    img = Image.fromarray(a)
    if i % 2:
        img.save(f"{d}/{split}/c{c}/{i:06d}.jpg", quality=90)
    else:
        img.save(f"{d}/{split}/c{c}/{i:06d}.png")
PYEOF
    touch "${DIR}/.done"
fi
W="$(mktemp -d)"
trap 'rm -rf "${W}"' EXIT
printf '[data]\nsource = "images"\npath = "%s"\nshape = [3, 32, 32]\n[model]\nkind = "cnn"\n' "${DIR}" > "${W}/c.toml"
threads="$(nproc)"
echo "images bench: ${N} images ($(du -sm "${DIR}" | cut -f1) MB on disk) -> uint8 [N, 3, 32, 32] ($(( N * 3072 / 1000000 )) MB), ${threads} threads, $(date -I)"
measure() {  # label, command...
    local label="$1"; shift
    /usr/bin/time -f "%e %M %U %S" -o "${W}/t" "$@" >/dev/null
    read -r secs kb user sys < "${W}/t"
    printf '%-52s %7.2f s  (CPU %6.2f s)  peak RSS %6.0f MB\n' "${label}" "${secs}" "$(echo "${user} + ${sys}" | bc)" \
        "$((kb / 1024))"
}
measure "spotrun prepare (cold cache)" "${BIN}" prepare -q "${W}/c.toml" --set "data.cache_dir=\"${W}/cache\""
measure "spotrun prepare (cached)" "${BIN}" prepare -q "${W}/c.toml" --set "data.cache_dir=\"${W}/cache\""
cat > "${W}/pil.py" <<'PYEOF'
import glob, os, sys, numpy as np, torch
from PIL import Image, ImageOps
d = sys.argv[1]
for split in ("train", "val"):
    classes = sorted(os.listdir(f"{d}/{split}"))
    xs, ys = [], []
    for k, c in enumerate(classes):
        for f in sorted(glob.glob(f"{d}/{split}/{c}/*")):
            im = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
            w, h = im.size
            size = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
            im = im.resize(size, Image.BILINEAR, reducing_gap=None)
            t, l = int(round((size[1] - 32) / 2.0)), int(round((size[0] - 32) / 2.0))
            xs.append(np.asarray(im.crop((l, t, l + 32, t + 32))).transpose(2, 0, 1))
            ys.append(k)
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    print(split, tuple(x.shape))
PYEOF
PYTHONPATH="${SITE}" measure "PIL loop (1 process)" "${PY}" "${W}/pil.py" "${DIR}"
cat > "${W}/tv.py" <<'PYEOF'
import sys, torch
from torchvision import datasets, transforms
torch.set_num_threads(1)
tf = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.PILToTensor()])
for split in ("train", "val"):
    ds = datasets.ImageFolder(f"{sys.argv[1]}/{split}", transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=int(sys.argv[2]))
    xs, ys = zip(*dl)
    x, y = torch.cat(xs), torch.cat(ys)
    print(split, tuple(x.shape))
PYEOF
PYTHONPATH="${SITE}" measure "torchvision ImageFolder + DataLoader (${threads} workers)" "${PY}" "${W}/tv.py" "${DIR}" "${threads}"
"${PY}" -c 'import torch' && /usr/bin/time -f "%M" -o "${W}/t" "${PY}" -c 'import torch; torch.zeros(1)' \
    && echo "python + torch import alone: peak RSS $(( $(cat "${W}/t") / 1024 )) MB"
/usr/bin/time -f "%M" -o "${W}/t" "${BIN}" prepare -q "${W}/c.toml" --set 'data.source="npy"' --set "data.path=\"${W}/none.npz\"" \
    >/dev/null 2>&1 || true
echo "spotrun process baseline (config load, failing on a missing file): peak RSS $(( $(cat "${W}/t") / 1024 )) MB"
