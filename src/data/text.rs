//! `data.source = "text"`: UTF-8 files tokenized once into the data cache as nanoGPT token files.
//!
//! `data.path` is a file, a directory (every file under it, hidden names skipped) or a glob; files are taken in
//! sorted path order, each encoded without special tokens, with the tokenizer's end-of-text token between files (as
//! nanoGPT's openwebtext `prepare.py` ends each document; nothing for `chars` or a `tokenizer.json` without one).
//! The last `data.val_fraction` of the token stream is validation (as nanoGPT's `shakespeare_char`). Encoding runs
//! on every core: files in parallel, and a long file in pieces cut where the ids cannot change
//! ([`Codec::cut_points`]). The entry holds `train.bin`, `val.bin` (uint16 when the vocabulary fits, else uint32),
//! a copy of the `tokenizer.json` if any, and `meta.json` (tokenizer, vocabulary size, `itos` for `chars`, the
//! end-of-text id, the dtype) written last; [`super::TokenData`] loads it as any token directory. Imports `config`
//! and its siblings `cache` and `codec`.
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cache::{self, Key, Scratch};
use super::codec::Codec;
use super::DataError;
use crate::config::{DataConfig, TokenDtype};

/// Bumped when the entry's format or the tokenization rules change.
const VERSION: u32 = 1;

/// A prepared text source: the cache entry, and whether this call made it.
#[derive(Debug, Clone)]
pub struct PreparedText {
    pub dir: PathBuf,
    pub made: bool,
    pub token_dtype: TokenDtype,
}

/// `meta.json` of a text entry (read by [`super::TokenData`] as `vocab_size` and `itos`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TextMeta {
    pub vocab_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itos: Option<Vec<String>>,
    /// `gpt2`, `chars` or `tokenizer.json` (a copy sits beside this file).
    pub tokenizer: String,
    pub eot: Option<u32>,
    pub token_dtype: TokenDtype,
    pub files: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
}

/// The files `data.path` names, sorted; an empty list is an error.
pub(crate) fn inputs(path: &Path, key: &str) -> Result<Vec<PathBuf>, DataError> {
    let bad = |message: String| DataError::Input { path: path.to_path_buf(), key: key.into(), message };
    let text = path.to_string_lossy();
    let mut files = if text.contains(['*', '?', '[']) {
        let paths = glob::glob(&text).map_err(|e| bad(format!("is not a valid glob: {e}")))?;
        paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect()
    } else {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => super::cache::files_under(path, &|p| p.is_file())
                .map_err(|e| bad(format!("cannot list the directory: {e}")))?,
            Ok(_) => vec![path.to_path_buf()],
            Err(e) => return Err(bad(format!("cannot be read: {e}"))),
        }
    };
    files.sort();
    if files.is_empty() {
        return Err(bad("names no files (empty directory, or a glob that matches nothing)".into()));
    }
    Ok(files)
}

/// A named tokenizer, with the bytes of its `tokenizer.json` when it is one.
type Named = (Codec, Option<Vec<u8>>);

/// The tokenizer `data.tokenizer` names, with its bytes when it is a file (they are part of the key and copied
/// into the entry). `chars` (`None`) is built from the text later.
fn tokenizer(cfg: &DataConfig) -> Result<Option<Named>, DataError> {
    match cfg.tokenizer() {
        "gpt2" => Ok(Some((Codec::gpt2(), None))),
        "chars" => Ok(None),
        file => {
            let path = PathBuf::from(file);
            let bad = |message: String| DataError::Input { path: path.clone(), key: "data.tokenizer".into(), message };
            let bytes = std::fs::read(&path).map_err(|e| {
                bad(format!("cannot be read ({e}); data.tokenizer is \"gpt2\", \"chars\" or a tokenizer.json"))
            })?;
            let codec = Codec::from_json(&bytes).map_err(bad)?;
            Ok(Some((codec, Some(bytes))))
        }
    }
}

impl PreparedText {
    /// `data: tokenized into DIR` or `data: cached in DIR`, for the console.
    pub fn describe(&self) -> String {
        let verb = if self.made { "tokenized into" } else { "cached in" };
        format!("data: {verb} {}", self.dir.display())
    }
}

/// The tokenizer of a text run, for `spotrun sample`: from the run directory's `vocab.json` (and `tokenizer.json`)
/// that training wrote, else from the cache entry of the run's `[data]`.
pub fn run_codec(run_dir: &Path, cfg: &DataConfig) -> Result<Codec, DataError> {
    let vocab = run_dir.join("vocab.json");
    if vocab.is_file() {
        return codec_of(&vocab, &run_dir.join("tokenizer.json"));
    }
    let dir = entry_dir(cfg)?;
    if !cache::complete(&dir) {
        return Err(DataError::Input {
            path: run_dir.to_path_buf(),
            key: "data.path".into(),
            message: format!(
                "has no vocab.json and the run's text is not prepared ({} is missing); run spotrun prepare on the                  run's config.toml",
                dir.display()
            ),
        });
    }
    codec_of(&dir.join(cache::DONE), &dir.join("tokenizer.json"))
}

/// The codec a text entry's `meta.json` names: built in, from `itos`, or the `tokenizer.json` copy.
fn codec_of(path: &Path, json: &Path) -> Result<Codec, DataError> {
    let path = path.to_path_buf();
    let bytes = std::fs::read(&path).map_err(|source| DataError::Read { path: path.clone(), source })?;
    let meta: TextMeta = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::Format { path: path.clone(), message: format!("not a text entry's meta.json: {e}") })?;
    match meta.tokenizer.as_str() {
        "gpt2" => Ok(Codec::gpt2()),
        "chars" => {
            let itos = meta.itos.unwrap_or_default();
            let chars: Option<Vec<char>> = itos.iter().map(|s| one_char(s)).collect();
            chars
                .map(Codec::from_itos)
                .ok_or_else(|| DataError::Format { path, message: "itos must hold one character per id".into() })
        }
        _ => {
            let bytes = std::fs::read(json).map_err(|source| DataError::Read { path: json.to_path_buf(), source })?;
            Codec::from_json(&bytes).map_err(|message| DataError::Format { path: json.to_path_buf(), message })
        }
    }
}

fn one_char(s: &str) -> Option<char> {
    let mut it = s.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// Where `cfg`'s entry is (or would be), without tokenizing: the key covers the files, the tokenizer and the split.
pub(crate) fn entry_dir(cfg: &DataConfig) -> Result<PathBuf, DataError> {
    let (files, tok) = (inputs(cfg.path.as_deref().unwrap_or(Path::new("")), "data.path")?, tokenizer(cfg)?);
    entry(cfg, &files, tok.as_ref().and_then(|t| t.1.as_deref()))
}

fn entry(cfg: &DataConfig, files: &[PathBuf], json: Option<&[u8]>) -> Result<PathBuf, DataError> {
    let mut key = Key::new("text", VERSION);
    key.part(cfg.tokenizer().as_bytes());
    key.part(json.unwrap_or_default());
    key.part(&cfg.val_fraction().to_le_bytes());
    for f in files {
        key.file(f, "data.path")?;
    }
    Ok(cache::root(cfg).join(key.finish("text")))
}

/// Tokenizes `cfg`'s text into its cache entry unless the entry is already there. `progress`: a bar on a
/// terminal.
pub(crate) fn prepare(cfg: &DataConfig, progress: bool) -> Result<PreparedText, DataError> {
    let files = inputs(cfg.path.as_deref().unwrap_or(Path::new("")), "data.path")?;
    let tok = tokenizer(cfg)?;
    let dir = entry(cfg, &files, tok.as_ref().and_then(|t| t.1.as_deref()))?;
    if cache::complete(&dir) {
        let meta = read_meta(&dir)?;
        return Ok(PreparedText { dir, made: false, token_dtype: meta.token_dtype });
    }
    let (codec, json) = match tok {
        Some((c, j)) => (c, j),
        None => (chars_codec(&files)?, None),
    };
    let token_dtype = if codec.vocab_size() <= 1 << 16 { TokenDtype::Uint16 } else { TokenDtype::Uint32 };
    let scratch = Scratch::new(
        &cache::root(cfg),
        &dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    )?;
    let all = scratch.dir.join("train.bin");
    let n = encode_to(&codec, &files, &all, token_dtype, progress)?;
    let n_train = (n as f64 * (1.0 - cfg.val_fraction())) as usize;
    if n_train == 0 || n_train == n {
        return Err(DataError::Input {
            path: cfg.path.clone().unwrap_or_default(),
            key: "data.val_fraction".into(),
            message: format!(
                "splits {n} tokens into {n_train} train and {} val tokens; both need some (more text, or another \
                 val_fraction)",
                n - n_train
            ),
        });
    }
    let meta = TextMeta {
        vocab_size: codec.vocab_size(),
        itos: match &codec {
            Codec::Chars { itos, .. } => Some(itos.iter().map(|c| c.to_string()).collect()),
            _ => None,
        },
        tokenizer: codec.kind().into(),
        eot: codec.eot(),
        token_dtype,
        files: files.len(),
        train_tokens: n_train,
        val_tokens: n - n_train,
    };
    split_tail(&scratch, &all, n_train, token_dtype)?;
    finish_entry(scratch, &dir, &meta, json.as_deref())?;
    Ok(PreparedText { dir, made: true, token_dtype })
}

/// The `chars` vocabulary: every character of every file (read one at a time).
fn chars_codec(files: &[PathBuf]) -> Result<Codec, DataError> {
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let t = read_texts(std::slice::from_ref(f))?;
        seen.extend(t.iter().flat_map(|t| t.chars()));
    }
    Ok(Codec::from_itos(seen.into_iter().collect()))
}

fn read_meta(dir: &Path) -> Result<TextMeta, DataError> {
    let path = dir.join(cache::DONE);
    let bytes = std::fs::read(&path).map_err(|source| DataError::Read { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| DataError::Format { path, message: format!("bad cache entry: {e}") })
}

/// Every file's text, read in parallel; a file that is not UTF-8 is an error naming it and the byte.
fn read_texts(files: &[PathBuf]) -> Result<Vec<String>, DataError> {
    files
        .par_iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|source| DataError::Read { path: f.clone(), source })?;
            String::from_utf8(bytes).map_err(|e| DataError::Input {
                path: f.clone(),
                key: "data.path".into(),
                message: format!(
                    "is not UTF-8 text (invalid byte at offset {}); data.source = \"text\" reads UTF-8 files",
                    e.utf8_error().valid_up_to()
                ),
            })
        })
        .collect()
}

/// How much text is read and encoded at a time: memory holds one window's text and ids (or one larger file),
/// never the whole corpus.
const WINDOW: u64 = 4 << 20;

/// Writes the token stream to `out` as `dtype` and returns its length: the files in order, each cut into pieces
/// encoded in parallel, a window of files at a time, the end-of-text id between files.
fn encode_to(
    codec: &Codec,
    files: &[PathBuf],
    out: &Path,
    dtype: TokenDtype,
    progress: bool,
) -> Result<usize, DataError> {
    let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).collect();
    let bar = bar(progress, sizes.iter().sum(), "tokenizing");
    let io = |e: std::io::Error| cache::cache_err(out, e);
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    let (mut n, mut start) = (0usize, 0usize);
    while start < files.len() {
        let mut end = start + 1;
        let mut bytes = sizes[start];
        while end < files.len() && bytes + sizes[end] <= WINDOW {
            bytes += sizes[end];
            end += 1;
        }
        let texts = read_texts(&files[start..end])?;
        let pieces = encode_window(codec, &files[start..end], &texts, &bar)?;
        test_report_pieces(pieces.len());
        for (k, first_piece, ids) in pieces {
            let eot = if first_piece && start + k > 0 { codec.eot() } else { None };
            for id in eot.into_iter().chain(ids) {
                match dtype {
                    TokenDtype::Uint16 => w.write_all(&(id as u16).to_le_bytes()),
                    TokenDtype::Uint32 => w.write_all(&id.to_le_bytes()),
                }
                .map_err(io)?;
                n += 1;
            }
        }
        start = end;
    }
    bar.finish_and_clear();
    w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(n)
}

/// Test-only (`test-hooks`): with `SPOTRUN_TEST_TEXT_PIECES` set, one `text pieces: N` line on stderr per window,
/// so a test can see that a long file was cut.
fn test_report_pieces(n: usize) {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("SPOTRUN_TEST_TEXT_PIECES").is_some() {
        eprintln!("text pieces: {n}");
    }
    let _ = n;
}

/// One window's pieces, encoded in parallel, in order: (file in the window, whether the piece is the file's
/// first, its ids).
type Pieces = Vec<(usize, bool, Vec<u32>)>;

fn encode_window(codec: &Codec, files: &[PathBuf], texts: &[String], bar: &ProgressBar) -> Result<Pieces, DataError> {
    let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let mut start = 0;
        for cut in codec.cut_points(t, codec.piece_bytes()).into_iter().chain([t.len()]) {
            pieces.push((i, start, cut));
            start = cut;
        }
    }
    pieces
        .par_iter()
        .map(|&(i, a, b)| {
            let ids = codec.encode(&texts[i][a..b]).map_err(|message| DataError::Input {
                path: files[i].clone(),
                key: "data.tokenizer".into(),
                message,
            });
            bar.inc((b - a) as u64);
            ids.map(|ids| (i, a == 0, ids))
        })
        .collect()
}

/// A progress bar over `total` units on a terminal (hidden otherwise, and when `progress` is false).
pub(crate) fn bar(progress: bool, total: u64, what: &str) -> ProgressBar {
    if !progress || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total);
    let template = format!("{what} {{bar:30.cyan/blue}} {{percent}}% ({{eta}} left)");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// Moves the stream's tail (from token `n_train`) out of `all` into `val.bin` and cuts `all` (the entry's
/// `train.bin`) there: nanoGPT's split, the last `val_fraction` of the stream.
fn split_tail(scratch: &Scratch, all: &Path, n_train: usize, dtype: TokenDtype) -> Result<(), DataError> {
    use std::io::{Seek, SeekFrom};
    let width = match dtype {
        TokenDtype::Uint16 => 2,
        TokenDtype::Uint32 => 4,
    };
    let io = |e: std::io::Error| cache::cache_err(all, e);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(all).map_err(io)?;
    f.seek(SeekFrom::Start((n_train * width) as u64)).map_err(io)?;
    let val = scratch.dir.join("val.bin");
    let mut out = std::fs::File::create(&val).map_err(|e| cache::cache_err(&val, e))?;
    std::io::copy(&mut f, &mut out).map_err(io)?;
    out.sync_all().map_err(|e| cache::cache_err(&val, e))?;
    f.set_len((n_train * width) as u64).map_err(io)?;
    f.sync_all().map_err(io)
}

/// The tokenizer.json copy and meta.json (last) into the entry; then renames it into place.
fn finish_entry(scratch: Scratch, dir: &Path, meta: &TextMeta, json: Option<&[u8]>) -> Result<(), DataError> {
    if let Some(json) = json {
        scratch.write("tokenizer.json", json)?;
    }
    let text = serde_json::to_vec_pretty(meta).map_err(|e| cache::cache_err(dir, std::io::Error::other(e)))?;
    scratch.write(cache::DONE, &text)?;
    scratch.publish(dir)
}
