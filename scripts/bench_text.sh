#!/usr/bin/env bash
# data.source = "text" against the Python a user would write (not part of scripts/test.sh): ~50 MB of text (this
# repository's README and sources, repeated, in 200 files) through a byte-level BPE tokenizer.json (trained here with
# Python's tokenizers, vocabulary 8000) by `spotrun prepare` and by Python's `tokenizers` (`encode_batch`, one
# document per file, the same threads), and through GPT-2's built-in BPE by spotrun. Prints wall time and peak RSS
# of each (one invocation each, a cold cache for spotrun). Usage: scripts/bench_text.sh [MB]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "${SPOTRUN_ROOT}"
MB="${1:-50}"
PY="${SPOTRUN_DATA_PYTHON:-${HOME}/.cache/spotrun/testdata-1/bin/python}"
BIN="${SPOTRUN_ROOT}/target/release/spotrun"
cargo build --release --locked >/dev/null 2>&1
W="$(mktemp -d)"
trap 'rm -rf "${W}"' EXIT
mkdir -p "${W}/docs"
"${PY}" - "${W}" "${MB}" <<'PYEOF'
import glob, os, sys
w, mb = sys.argv[1], int(sys.argv[2])
seed = "".join(open(f, encoding="utf-8").read() for f in ["README.md"] + sorted(glob.glob("src/**/*.rs", recursive=True)))
per = mb * 1_000_000 // 200
for i in range(200):
    text = (seed * (per // len(seed) + 1))[i : i + per]
    open(f"{w}/docs/doc{i:03d}.txt", "w", encoding="utf-8").write(text)
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
t = Tokenizer(models.BPE())
t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
t.decoder = decoders.ByteLevel()
t.train([f"{w}/docs/doc000.txt"], trainers.BpeTrainer(vocab_size=8000, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
t.save(f"{w}/tok.json")
PYEOF
printf '[data]\nsource = "text"\npath = "%s/docs"\n[model]\nkind = "gpt"\n' "${W}" > "${W}/c.toml"
threads="$(nproc)"
echo "text bench: $(du -sm "${W}/docs" | cut -f1) MB in 200 files, ${threads} threads, $(date -I)"
measure() {  # label, command...
    local label="$1"; shift
    /usr/bin/time -f "%e %M" -o "${W}/t" "$@" >/dev/null
    read -r secs kb < "${W}/t"
    printf '%-44s %7.2f s  peak RSS %6.0f MB\n' "${label}" "${secs}" "$((kb / 1024))"
}
measure "spotrun prepare, tokenizer.json" "${BIN}" prepare -q "${W}/c.toml" --set "data.tokenizer=\"${W}/tok.json\"" \
    --set "data.cache_dir=\"${W}/cache1\""
measure "spotrun prepare, tokenizer.json (cached)" "${BIN}" prepare -q "${W}/c.toml" \
    --set "data.tokenizer=\"${W}/tok.json\"" --set "data.cache_dir=\"${W}/cache1\""
cat > "${W}/py.py" <<'PYEOF'
import glob, sys, numpy as np
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1] + "/tok.json")
texts = [open(f, encoding="utf-8").read() for f in sorted(glob.glob(sys.argv[1] + "/docs/*.txt"))]
eot = t.token_to_id("<|endoftext|>")
ids = []
for i, e in enumerate(t.encode_batch(texts, add_special_tokens=False)):
    if i:
        ids.append(eot)
    ids.extend(e.ids)
a = np.array(ids, dtype=np.uint16)
n = int(len(a) * 0.9)
a[:n].tofile(sys.argv[1] + "/train.bin"); a[n:].tofile(sys.argv[1] + "/val.bin")
PYEOF
RAYON_NUM_THREADS="${threads}" TOKENIZERS_PARALLELISM=true measure "python tokenizers encode_batch + numpy" \
    "${PY}" "${W}/py.py" "${W}"
cmp <(cat "${W}"/cache1/text-*/train.bin) "${W}/train.bin" && echo "same train.bin as Python"
measure "spotrun prepare, gpt2 (built in)" "${BIN}" prepare -q "${W}/c.toml" --set "data.cache_dir=\"${W}/cache2\""
