//! `data.source = "text"`: raw UTF-8 files tokenized by spotrun (gpt2, a tokenizer.json, chars) into the data
//! cache, `spotrun prepare`, and `spotrun sample` with the run's tokenizer. Reference ids come from Python's
//! `tokenizers` in the data venv.
use std::path::{Path, PathBuf};

use crate::common::{data_py, Run};

/// Some varied text: words, digits, punctuation, several scripts, blank lines and runs of spaces.
fn corpus(lines: usize, seed: usize) -> String {
    let words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "naïve",
        "café",
        "日本語",
        "Ünïcödé",
        "42",
        "3.14",
        "don't",
        "it's",
        "—",
        "(x)",
        "self.assert",
        "\t",
        "emoji🙂",
    ];
    let mut s = String::new();
    let mut r = seed as u64 * 0x9e37_79b9_7f4a_7c15 + 1;
    for i in 0..lines {
        for _ in 0..(3 + i % 9) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            s += words[(r % words.len() as u64) as usize];
            s += if r.is_multiple_of(11) { "  " } else { " " };
        }
        s += ["\n", "\n\n", ".\n", " \n", "!\n"][i % 5];
    }
    s
}

/// `spotrun prepare` on `data.path = path` with `extra` sets; returns the entry directory (stdout) and stderr.
fn prepare(path: &Path, cache: &Path, extra: &[&str]) -> (PathBuf, String) {
    let config = cache.parent().unwrap().join("text.toml");
    std::fs::write(&config, "[data]\nsource = \"text\"\n[model]\nkind = \"gpt\"\n").unwrap();
    let mut sets = vec![format!("data.path=\"{}\"", path.display()), format!("data.cache_dir=\"{}\"", cache.display())];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let run = Run::new(["prepare".into(), config.display().to_string()]).env("SPOTRUN_TEST_TEXT_PIECES", "1");
    let out = sets.iter().fold(run, |r, s| r.set(s)).ok();
    let dir = PathBuf::from(crate::common::text(&out.stdout).trim());
    (dir, crate::common::text(&out.stderr))
}

/// The whole token stream of an entry (train then val), as its meta.json's dtype says.
fn stream(dir: &Path) -> Vec<u32> {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let wide = meta["token_dtype"] == "uint32";
    let mut ids = Vec::new();
    for f in ["train.bin", "val.bin"] {
        let b = std::fs::read(dir.join(f)).unwrap();
        if wide {
            ids.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        } else {
            ids.extend(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32));
        }
    }
    ids
}

/// Trains a byte-level BPE (with `<|endoftext|>`), a WordLevel tokenizer (whitespace split, no end-of-text
/// token) and a sentencepiece-like BPE (Metaspace: `▁` for spaces, prepended to the text) with Python's
/// `tokenizers` on `files`, saves them, and prints the ids of each file under each, each file encoded whole.
const TRAIN_TOKENIZERS: &str = r#"
import json, sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
out, files = sys.argv[1], sys.argv[2:]
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train(files, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
bpe.save(out + "/bpe.json")
wl = Tokenizer(models.WordLevel(unk_token="[UNK]"))
wl.pre_tokenizer = pre_tokenizers.Whitespace()
wl.train(files, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
wl.save(out + "/wordlevel.json")
sp = Tokenizer(models.BPE())
sp.pre_tokenizer = pre_tokenizers.Metaspace()
sp.decoder = decoders.Metaspace()
sp.train(files, trainers.BpeTrainer(vocab_size=600, special_tokens=["</s>"]))
sp.save(out + "/metaspace.json")
texts = [open(f, encoding="utf-8").read() for f in files]
res = {}
for name, t in [("bpe", bpe), ("wordlevel", wl), ("metaspace", sp)]:
    res[name] = {"ids": [t.encode(x, add_special_tokens=False).ids for x in texts],
                 "eot": next((t.token_to_id(n) for n in ["<|endoftext|>", "</s>"] if t.token_to_id(n) is not None), None),
                 "vocab": t.get_vocab_size(True)}
print(json.dumps(res))
"#;

/// Each file as Python encodes it whole. Two files are long enough (~240 KB) to be encoded in 32 KiB pieces (the
/// memory the `tokenizers` library takes grows with what it encodes at once): spotrun cuts a tokenizer.json's text
/// only where the ids around the cut do not change, which must hold for a byte-level BPE, a whitespace-split
/// WordLevel and a Metaspace BPE (which prepends `▁` to a piece, so a cut after a newline would change its ids).
#[test]
fn a_tokenizer_json_gives_exactly_the_ids_python_tokenizers_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let files: Vec<PathBuf> = (0..3).map(|i| docs.join(format!("doc{i}.txt"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, corpus([400, 6000, 6500][i], i)).unwrap();
    }
    let mut args: Vec<&std::ffi::OsStr> = vec![tmp.path().as_os_str()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let py: serde_json::Value = serde_json::from_str(&data_py(TRAIN_TOKENIZERS, &args)).unwrap();
    let cache = tmp.path().join("cache");
    for name in ["bpe", "wordlevel", "metaspace"] {
        let json = tmp.path().join(format!("{name}.json"));
        let (dir, err) = prepare(&docs, &cache, &[&format!("data.tokenizer=\"{}\"", json.display())]);
        let pieces: usize = err.lines().filter_map(|l| l.strip_prefix("text pieces: ")?.parse::<usize>().ok()).sum();
        assert!(pieces >= 10, "{name}: the long files were not cut ({pieces} pieces for 3 files): {err}");
        let per_file: Vec<Vec<u32>> = serde_json::from_value(py[name]["ids"].clone()).unwrap();
        let eot: Option<u32> = serde_json::from_value(py[name]["eot"].clone()).unwrap();
        assert_eq!(eot.is_some(), name != "wordlevel");
        // Python's ids per file (sorted paths), the end-of-text token between files when the tokenizer has one.
        let mut want = Vec::new();
        for (i, ids) in per_file.iter().enumerate() {
            if i > 0 {
                want.extend(eot);
            }
            want.extend(ids);
        }
        let got = stream(&dir);
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(
            got == want,
            "{name}: spotrun's ids differ from Python tokenizers' at {:?}",
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["vocab_size"], py[name]["vocab"], "{name}");
        assert_eq!(meta["tokenizer"], "tokenizer.json");
        // val is the last 10% of the stream.
        let train = std::fs::metadata(dir.join("train.bin")).unwrap().len() as usize / 2;
        assert_eq!(train, (want.len() as f64 * 0.9) as usize);
    }
}

#[test]
fn gpt2_round_trips_a_large_text_cut_into_parallel_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.txt");
    let text = corpus(60_000, 7); // ~3 MB: several 1 MiB pieces encoded in parallel
    assert!(text.len() > 2_500_000, "{}", text.len());
    std::fs::write(&file, &text).unwrap();
    let (dir, err) = prepare(&file, &tmp.path().join("cache"), &[]);
    assert!(err.contains("data: tokenized into"), "{err}");
    let ids = stream(&dir);
    let gpt2 = spotrun::data::Codec::gpt2();
    assert_eq!(gpt2.decode(&ids).unwrap(), text, "decode(encode(text)) == text");
    assert_eq!(ids, gpt2.encode(&text).unwrap(), "the pieces encode as the whole does");
    assert!(!ids.contains(&50256), "one file: no end-of-text token");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!((meta["vocab_size"].as_i64(), meta["token_dtype"].as_str()), (Some(50257), Some("uint16")));
}

/// A character-level GPT on a text file, as `--set`s (`data.path` and the cache under `dir`).
fn chars_run(dir: &Path) -> Vec<String> {
    let file = dir.join("input.txt");
    if !file.exists() {
        std::fs::write(&file, corpus(3000, 3)).unwrap();
    }
    let mut s: Vec<String> = crate::workloads::TINY_GPT[1..].iter().map(|s| s.to_string()).collect();
    s.retain(|k| !k.starts_with("data.synthetic"));
    s.extend([
        "data.source=text".into(),
        "data.tokenizer=chars".into(),
        format!("data.path=\"{}\"", file.display()),
        format!("data.cache_dir=\"{}\"", dir.join("cache").display()),
        "train.steps_per_epoch=40".into(),
    ]);
    s
}

#[test]
fn chars_trains_and_samples_with_its_own_vocabulary_and_the_second_run_uses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = chars_run(tmp.path());
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let run = tmp.path().join("run");
    let out = Run::new(["train", "--run-dir", run.to_str().unwrap()]).sets(&sets).ok();
    let err = crate::common::text(&out.stderr);
    assert!(err.contains("data: tokenized into"), "{err}");
    let vocab: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("vocab.json")).unwrap()).unwrap();
    let itos: Vec<String> = serde_json::from_value(vocab["itos"].clone()).unwrap();
    let mut sorted = itos.clone();
    sorted.sort();
    assert_eq!(itos, sorted, "sorted unique characters");
    // A second run of the same data reads the cache (and makes no second entry).
    let again = tmp.path().join("again");
    let out = Run::new(["train", "--run-dir", again.to_str().unwrap()]).sets(&sets).set("train.seed=1").ok();
    assert!(crate::common::text(&out.stderr).contains("data: cached in"), "{}", crate::common::text(&out.stderr));
    assert_eq!(std::fs::read_dir(tmp.path().join("cache")).unwrap().count(), 1);
    // Sampling decodes with the run's characters, even with the cache gone.
    std::fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    let out = Run::new(["sample", run.to_str().unwrap(), "--prompt", "the quick", "--tokens", "60"]).ok();
    let s = crate::common::text(&out.stdout);
    assert!(s.starts_with("the quick"), "{s}");
    assert!(s.trim_end().chars().count() >= 60, "{s}");
    assert!(s.chars().all(|c| itos.iter().any(|t| t.starts_with(c))), "{s}");
    let err = Run::new(["sample", run.to_str().unwrap(), "--prompt", "ab%"]).bad();
    assert!(err.contains("--prompt") && err.contains("'%'"), "{err}");
}

#[test]
fn a_text_run_killed_after_a_commit_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = chars_run(tmp.path());
    let mut base: Vec<&str> = sets.iter().map(String::as_str).collect();
    base.extend(["model.dropout=0.1", "train.log_every=0", "train.steps_per_epoch=0", "train.epochs=2"]);
    crate::resume::kill_and_term_resume_exactly(&base);
}

#[test]
fn bad_text_inputs_exit_2_naming_the_file_and_the_key_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let config = tmp.path().join("t.toml");
    std::fs::write(&config, "[data]\nsource = \"text\"\n[model]\nkind = \"gpt\"\n").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let latin1 = tmp.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait\n").unwrap();
    let good = tmp.path().join("good.txt");
    std::fs::write(&good, corpus(50, 1)).unwrap();
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"model\": {\"type\": \"BPE\", \"vocab\": 3}}").unwrap();
    let missing = tmp.path().join("missing.json");
    let p = |f: &Path| format!("data.path=\"{}\"", f.display());
    let t = |f: &Path| format!("data.tokenizer=\"{}\"", f.display());
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (vec![p(&empty)], empty.display().to_string(), "data.path"),
        (vec![p(&tmp.path().join("nothing*.txt"))], "nothing*.txt".into(), "data.path"),
        (vec![p(&latin1)], latin1.display().to_string(), "data.path"),
        (vec![p(&good), t(&missing)], missing.display().to_string(), "data.tokenizer"),
        (vec![p(&good), t(&broken)], broken.display().to_string(), "data.tokenizer"),
        (vec![p(&good), "data.val_fraction=1.5".into()], config.display().to_string(), "data.val_fraction"),
        (vec![p(&good), "data.tokenizer=\"\"".into()], config.display().to_string(), "data.tokenizer"),
    ];
    crate::common::refused_by_prepare_and_train(&config, &cache, tmp.path(), &cases);
}
