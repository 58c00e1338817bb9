//! Token data in nanoGPT's format, and the built-in synthetic token stream.
//!
//! A token directory holds `train.bin` and `val.bin` (raw little-endian token ids, no header, `data.token_dtype`)
//! and `meta.json` with `vocab_size` and optionally `itos` (the decoding table: one string per id). nanoGPT's
//! `meta.pkl` is a Python pickle and is never loaded: spotrun says how to write `meta.json` instead. Ids are held
//! as int32 (half of int64's memory) and checked against the vocabulary once, at load time.
use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{DataError, SplitMix64};
use crate::config::{DataConfig, ModelConfig, SyntheticConfig, TokenDtype};

/// Both splits of a token dataset, in memory.
pub struct TokenData {
    /// int32 `[N]` token ids.
    pub train: Tensor,
    pub val: Tensor,
    pub vocab_size: i64,
    /// The decoding table (`itos[id]` is the text of token `id`), when the data has one.
    pub itos: Option<Vec<String>>,
    /// Entropy of the training split's token frequencies, in nats: the loss of a model that ignores context.
    pub unigram_entropy: f64,
    /// Where the data came from, for messages.
    pub origin: String,
    /// `crc32:<8 hex>` over both splits (see [`super::fingerprint`]).
    pub fingerprint: String,
    /// The data-cache entry the ids were read from, for `data.source = "text"`.
    pub prepared: Option<std::path::PathBuf>,
}

/// `meta.json`.
#[derive(Debug, Deserialize)]
pub(super) struct Meta {
    pub vocab_size: i64,
    #[serde(default)]
    pub itos: Option<Vec<String>>,
}

/// How to turn nanoGPT's `meta.pkl` into `meta.json` (the user runs it on their own file).
const CONVERT: &str = "python3 -c \"import pickle, json; m = pickle.load(open('meta.pkl', 'rb')); \
                       json.dump({'vocab_size': m['vocab_size'], 'itos': [m['itos'][i] for i in \
                       range(m['vocab_size'])]}, open('meta.json', 'w'))\"";

impl TokenData {
    /// Loads `data.path` (or generates the synthetic stream) and checks every id against the vocabulary, which
    /// comes from `meta.json` (or `model.vocab_size` when the directory has no `meta.json`).
    pub fn load(data: &DataConfig, model: &ModelConfig) -> Result<TokenData, DataError> {
        let Some(dir) = &data.path else {
            let t = synthetic(&data.synthetic);
            t.check_window(Path::new("<synthetic tokens>"), model.block_size)?;
            return Ok(t);
        };
        let meta = read_meta(dir, model)?;
        let (train, val) = (dir.join("train.bin"), dir.join("val.bin"));
        let train_ids = read_ids(&train, data.token_dtype, meta.vocab_size)?;
        let val_ids = read_ids(&val, data.token_dtype, meta.vocab_size)?;
        let t = TokenData::new(train_ids, val_ids, meta.vocab_size, meta.itos, dir.display().to_string());
        t.check_window(dir, model.block_size)?;
        Ok(t)
    }

    fn new(train: Vec<i32>, val: Vec<i32>, vocab_size: i64, itos: Option<Vec<String>>, origin: String) -> TokenData {
        let unigram_entropy = entropy(&train, vocab_size);
        let (train, val) = (Tensor::from_slice(&train), Tensor::from_slice(&val));
        let fingerprint = super::fingerprint(&[&train, &val]);
        TokenData { train, val, vocab_size, itos, unigram_entropy, origin, fingerprint, prepared: None }
    }

    /// Bytes the int32 ids of both splits take.
    pub fn nbytes(&self) -> u64 {
        (self.train.numel() + self.val.numel()) as u64 * Kind::Int.elt_size_in_bytes() as u64
    }

    /// The vocabulary size and decoding table of `data`, without reading the token files.
    pub fn vocabulary(data: &DataConfig, model: &ModelConfig) -> Result<(i64, Option<Vec<String>>), DataError> {
        match &data.path {
            None => Ok((data.synthetic.vocab as i64, Some(alphabet(data.synthetic.vocab)))),
            Some(dir) => read_meta(dir, model).map(|m| (m.vocab_size, m.itos)),
        }
    }

    /// Checks both splits hold at least one window of `block_size + 1` tokens.
    pub fn check_window(&self, origin: &Path, block_size: i64) -> Result<(), DataError> {
        for (file, t) in [("train.bin", &self.train), ("val.bin", &self.val)] {
            let n = t.size()[0];
            if n < block_size + 1 {
                return Err(DataError::Shape {
                    path: origin.join(file),
                    key: "model.block_size".into(),
                    message: format!(
                        "holds {n} tokens, shorter than one window of model.block_size + 1 = {} tokens; use a \
                         smaller block_size or more data",
                        block_size + 1
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Reads `meta.json`; refuses `meta.pkl` (never unpickled) and checks `vocab_size` against `model.vocab_size`.
fn read_meta(dir: &Path, model: &ModelConfig) -> Result<Meta, DataError> {
    let path = dir.join("meta.json");
    let format = |message: String| DataError::Format { path: path.clone(), message };
    let meta =
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Meta>(&bytes).map_err(|e| {
                format(format!("{e}; expected {{\"vocab_size\": N, \"itos\": [\"a\", \"b\", ...]}} (itos optional)"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkl = dir.join("meta.pkl");
                if std::fs::symlink_metadata(&pkl).is_ok() {
                    return Err(DataError::Format {
                        path: pkl,
                        message: format!(
                            "is a Python pickle, which spotrun never loads (unpickling runs code); write meta.json \
                         beside it instead, e.g. in that directory: {CONVERT}"
                        ),
                    });
                }
                match model.vocab_size {
                    Some(v) => return Ok(Meta { vocab_size: v, itos: None }),
                    None => return Err(format(
                        "not found: token data needs meta.json with vocab_size (written by scripts/make_tokens.py), \
                         or model.vocab_size in the config"
                            .into(),
                    )),
                }
            }
            Err(source) => return Err(DataError::Read { path, source }),
        };
    if !(2..=i32::MAX as i64).contains(&meta.vocab_size) {
        return Err(format(format!("vocab_size = {} must be between 2 and {}", meta.vocab_size, i32::MAX)));
    }
    if let Some(itos) = &meta.itos {
        if itos.len() as i64 != meta.vocab_size {
            return Err(format(format!("itos has {} entries but vocab_size is {}", itos.len(), meta.vocab_size)));
        }
    }
    match model.vocab_size {
        Some(v) if v != meta.vocab_size => Err(DataError::Shape {
            path,
            key: "model.vocab_size".into(),
            message: format!(
                "is {v} in the config but meta.json says {}; leave it out to use the data's",
                meta.vocab_size
            ),
        }),
        _ => Ok(meta),
    }
}

/// Reads one `.bin` file into int32 ids, checking its size and every id against `vocab`.
fn read_ids(path: &Path, dtype: TokenDtype, vocab: i64) -> Result<Vec<i32>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
    let shape =
        |message: String| DataError::Shape { path: path.to_path_buf(), key: "data.token_dtype".into(), message };
    if bytes.is_empty() {
        return Err(DataError::Format { path: path.to_path_buf(), message: "is empty: no tokens".into() });
    }
    let size = dtype.size();
    if !bytes.len().is_multiple_of(size) {
        return Err(shape(format!(
            "{} bytes is not a whole number of {size}-byte token ids; is data.token_dtype right?",
            bytes.len()
        )));
    }
    // Straight to int32 (vocab_size < 2^31 was checked), the raw bytes read once: RAM holds 2 + 4 bytes a token
    // while loading, 4 after.
    let id_at = |c: &[u8]| -> i64 {
        match dtype {
            TokenDtype::Uint16 => u16::from_le_bytes([c[0], c[1]]) as i64,
            TokenDtype::Uint32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
        }
    };
    let mut ids = Vec::with_capacity(bytes.len() / size);
    let mut bad = None;
    for (index, c) in bytes.chunks_exact(size).enumerate() {
        let id = id_at(c);
        if id >= vocab && bad.is_none() {
            bad = Some((index, id));
        }
        ids.push(id as i32);
    }
    if let Some((index, id)) = bad {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            key: "vocab_size".into(),
            message: format!(
                "token {index} is id {id}, not below meta.json's vocab_size = {vocab}; the files do not belong \
                 together (or data.token_dtype is wrong)"
            ),
        });
    }
    Ok(ids)
}

/// Entropy (nats) of the token frequencies in `ids`.
pub(super) fn entropy(ids: &[i32], vocab: i64) -> f64 {
    let mut counts = vec![0u64; vocab.max(0) as usize];
    for &id in ids {
        counts[id as usize] += 1;
    }
    let n = ids.len().max(1) as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum()
}

/// The built-in token task: text from a random second-order Markov chain over `vocab` symbols (`a`, `b`, ... and
/// a space last when `vocab` is 27). Each pair of symbols has three likely successors (probabilities 0.6, 0.3,
/// 0.1), so a model that uses two tokens of context reaches ~0.90 nats, well below the unigram entropy (~ln
/// vocab). Deterministic from `data.synthetic.seed`; train and val are consecutive stretches of one stream.
pub(super) fn synthetic(cfg: &SyntheticConfig) -> TokenData {
    let v = cfg.vocab.max(2) as u64;
    let mut rng = SplitMix64::keyed(&[cfg.seed, 0x746f_6b65_6e73]); // "tokens"
    let successors: Vec<[u64; 3]> = (0..v * v).map(|_| [rng.below(v), rng.below(v), rng.below(v)]).collect();
    let (mut a, mut b) = (0u64, 1u64);
    let mut next = |rng: &mut SplitMix64| {
        let u = rng.next_f64();
        let pick = if u < 0.6 {
            0
        } else if u < 0.9 {
            1
        } else {
            2
        };
        let c = successors[(a * v + b) as usize][pick];
        (a, b) = (b, c);
        c as i32
    };
    let train: Vec<i32> = (0..cfg.train).map(|_| next(&mut rng)).collect();
    let val: Vec<i32> = (0..cfg.val).map(|_| next(&mut rng)).collect();
    TokenData::new(train, val, v as i64, Some(alphabet(v as usize)), "<synthetic tokens>".into())
}

/// The synthetic task's decoding table: `a`, `b`, ... and a space as symbol 26.
fn alphabet(vocab: usize) -> Vec<String> {
    let letters = "abcdefghijklmnopqrstuvwxyz";
    (0..vocab.min(27)).map(|i| if i == 26 { " ".to_string() } else { letters[i..i + 1].to_string() }).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_tokens_are_deterministic_in_range_and_structured() {
        let cfg = SyntheticConfig { train: 20_000, val: 2_000, vocab: 27, seed: 5, ..Default::default() };
        let a = synthetic(&cfg);
        let b = synthetic(&cfg);
        assert_eq!(a.train, b.train);
        assert_eq!(a.val, b.val);
        assert!(a.train.max().int64_value(&[]) < 27 && a.train.min().int64_value(&[]) >= 0);
        assert_eq!(a.itos.as_ref().unwrap()[26], " ");
        // Roughly uniform symbols: the unigram entropy is near ln 27 = 3.30, far above the chain's 0.90 nats.
        assert!(a.unigram_entropy > 2.5, "{}", a.unigram_entropy);
        let other = synthetic(&SyntheticConfig { seed: 6, ..cfg });
        assert_ne!(a.train, other.train);
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert!((entropy(&[0, 1, 0, 1], 2) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(entropy(&[3, 3, 3], 4), 0.0);
    }
}
