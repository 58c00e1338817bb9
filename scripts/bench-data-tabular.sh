#!/usr/bin/env bash
# Load time and peak RSS to "tensors in RAM": spotrun's `data.source = "npy"` (.npz) vs numpy.load +
# torch.from_numpy, and `data.source = "parquet"` vs pyarrow.parquet.read_table -> torch, on the same data (ROWS x 64
# float32 features + int64 labels; default 1.2M rows, ~300 MB), each in a fresh process, side by side. RSS is
# reported above each process's baseline once libtorch (and numpy/pyarrow) are loaded. Not part of scripts/test.sh.
# Python: the torch venv plus pyarrow (pinned) installed once under ~/.cache/spotrun/bench-tabular-1.
# Usage: scripts/bench-data-tabular.sh [ROWS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
ROWS="${1:-1200000}"
PY="${SPOTRUN_PYTHON:-${HOME}/.cache/spotrun/torch-2.11.0/bin/python}"
SITE="${HOME}/.cache/spotrun/bench-tabular-1"
if [ ! -f "${SITE}/.done" ]; then
    "${PY}" -m pip install --quiet --target "${SITE}" "pyarrow==26.0.1" >&2
    touch "${SITE}/.done"
fi
export PYTHONPATH="${SITE}"
DIR="${TMPDIR:-/tmp}/spotrun-bench-tabular-${ROWS}"
mkdir -p "${DIR}"
if [ ! -f "${DIR}/.done" ]; then
    "${PY}" - "${DIR}" "${ROWS}" <<'PY'
import os, sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
d, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, 64), dtype=np.float32)
y = rng.integers(0, 10, n)
nv = n // 10
np.savez(os.path.join(d, "data.npz"), x_train=x[nv:], y_train=y[nv:], x_val=x[:nv], y_val=y[:nv])
def table(x, y):
    return pa.table({**{f"f{i}": x[:, i] for i in range(64)}, "label": y})
pq.write_table(table(x[nv:], y[nv:]), os.path.join(d, "train.parquet"))
pq.write_table(table(x[:nv], y[:nv]), os.path.join(d, "val.parquet"))
PY
    touch "${DIR}/.done"
fi
cargo bench --locked --bench data_load --no-run >/dev/null 2>&1
spot() { cargo bench --locked --bench data_load -- "$@" 2>/dev/null | grep '^{'; }
py() {
    "${PY}" - "${DIR}" "$1" <<'PY'
import json, os, sys, time
import warnings; warnings.filterwarnings("ignore")
import numpy as np, torch, pyarrow.parquet as pq
torch.set_num_threads(1)
torch.zeros(1).sum()
def status(f):
    return int(next(l for l in open("/proc/self/status") if l.startswith(f)).split()[1]) * 1024
d, what = sys.argv[1], sys.argv[2]
base = status("VmRSS:")
t0 = time.perf_counter()
if what == "npz":
    z = np.load(os.path.join(d, "data.npz"))
    ts = [torch.from_numpy(z[k]) for k in ("x_train", "y_train", "x_val", "y_val")]
    tool = "numpy.load + torch.from_numpy"
else:
    ts = []
    for f in ("train.parquet", "val.parquet"):
        t = pq.read_table(os.path.join(d, f))
        feats = [c for c in t.column_names if c != "label"]
        ts.append(torch.from_numpy(np.column_stack([t.column(c).to_numpy() for c in feats])))
        ts.append(torch.from_numpy(t.column("label").to_numpy()))
        del t
    tool = "pyarrow.parquet.read_table -> torch"
s = time.perf_counter() - t0
print(json.dumps({"tool": tool, "seconds": round(s, 3), "base_rss": base, "peak_rss": status("VmHWM:"),
                  "tensor_bytes": sum(t.numel() * t.element_size() for t in ts)}))
PY
}
report() {
    "${PY}" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    above = (r["peak_rss"] - r["base_rss"]) / 1e6
    mb = r["tensor_bytes"] / 1e6
    print("%-40s %7.3f s  peak RSS above baseline %7.1f MB  tensors %6.1f MB  ratio %.2f" % (r["tool"], r["seconds"], above, mb, above / mb))
'
}
echo "data: ${ROWS} rows x 64 float32 + int64 label ($(du -sh "${DIR}/data.npz" | cut -f1) .npz, $(du -ch "${DIR}"/*.parquet | tail -1 | cut -f1) parquet); $(nproc) cores"
{
    spot npy "${DIR}/data.npz"
    py npz
    spot parquet "${DIR}/train.parquet" "${DIR}/val.parquet"
    py parquet
} | report
