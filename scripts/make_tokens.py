"""Character-level tokenizer writing nanoGPT's token format (as data/shakespeare_char/prepare.py does).

Usage: make_tokens.py TEXT_FILE OUT_DIR [--val-fraction 0.1]

Reads TEXT_FILE as UTF-8 (bytes decoded as they are: no newline translation), takes the sorted set of its
characters as the vocabulary (token id = index in that order) and writes to OUT_DIR (created if missing):
  train.bin  the first (1 - val_fraction) of the text, raw little-endian uint16 token ids, no header
  val.bin    the rest, same format
  meta.json  {"vocab_size": V, "itos": [one-character strings, index = token id]}
Each file is written atomically (temp file in OUT_DIR, fsync, rename). Standard library only.
Prints one summary line; on bad input prints one line starting `error:` and exits 2.
"""
import argparse
import array
import json
import math
import os
import sys
import tempfile
from collections import Counter

MAX_VOCAB = 65535
UMASK = os.umask(0)
os.umask(UMASK)


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def atomic_write(out_dir, name, data):
    """Writes bytes to out_dir/name via a temp file in the same directory, fsync and rename."""
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(out_dir, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_dir(path):
    """Makes the renames durable (best effort: some filesystems refuse fsync on a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_uint16_le(ids):
    """Token ids as raw little-endian uint16 bytes."""
    a = array.array("H", ids)
    if a.itemsize != 2:  # "H" is at least 2 bytes; fall back where it is wider
        import struct
        return struct.pack(f"<{len(ids)}H", *ids)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def main():
    p = argparse.ArgumentParser(description="Character-level tokenizer writing nanoGPT's train.bin/val.bin/meta.json.")
    p.add_argument("text_file")
    p.add_argument("out_dir")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text (its end) used as val")
    a = p.parse_args()
    path = a.text_file

    if not 0.0 < a.val_fraction < 1.0:
        fail(f"--val-fraction must be in (0, 1), got {a.val_fraction}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror or e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"{path}: not valid UTF-8 (byte {e.start}: {e.reason})")
    if not text:
        fail(f"{path}: the file is empty")

    chars = sorted(set(text))
    if len(chars) > MAX_VOCAB:
        fail(f"{path}: {len(chars)} distinct characters, more than uint16 token ids allow ({MAX_VOCAB})")
    n = len(text)
    split = int(n * (1.0 - a.val_fraction))  # nanoGPT: train = data[:int(n*0.9)], val = the rest
    if split >= n:
        fail(f"{path}: {n} characters is too short: the val split (fraction {a.val_fraction}) would be empty")
    if split <= 0:
        fail(f"{path}: {n} characters is too short: the train split would be empty")

    stoi = {c: i for i, c in enumerate(chars)}
    ids = [stoi[c] for c in text]
    counts = Counter(text)
    entropy = -sum(c / n * math.log(c / n) for c in counts.values())

    os.makedirs(a.out_dir, exist_ok=True)
    atomic_write(a.out_dir, "train.bin", to_uint16_le(ids[:split]))
    atomic_write(a.out_dir, "val.bin", to_uint16_le(ids[split:]))
    meta = json.dumps({"vocab_size": len(chars), "itos": chars})
    atomic_write(a.out_dir, "meta.json", (meta + "\n").encode("utf-8"))
    fsync_dir(a.out_dir)

    print(
        f"{path}: {n} chars, vocab {len(chars)}, train {split} tokens, val {n - split} tokens, "
        f"unigram entropy (whole text) {entropy:.4f} nats/char -> {a.out_dir}"
    )


if __name__ == "__main__":
    main()
