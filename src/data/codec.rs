//! `data.tokenizer`: text to token ids and back, for `data.source = "text"` and for `spotrun sample`.
//!
//! Three kinds: `gpt2` (GPT-2's byte-level BPE, as tiktoken's `gpt2` encoding; its ranks are built into the binary,
//! so nothing is downloaded), a Hugging Face `tokenizer.json` (the `tokenizers` crate, with the pure-Rust regex
//! engine), and `chars` (one id per distinct character, in sorted order, as nanoGPT's `shakespeare_char`). No
//! special tokens are added while encoding (`add_special_tokens = false`); the end-of-text token between documents is
//! the caller's to place ([`Codec::eot`]). Imports only the `tokenizers` and `tiktoken-rs` crates.
use std::collections::HashMap;

/// A tokenizer, ready to encode and decode.
pub enum Codec {
    /// GPT-2's BPE: encoded with each thread's own instance, decoded with tiktoken-rs's shared one (built on first
    /// use, so preparing data does not build it).
    Gpt2,
    Json(Box<tokenizers::Tokenizer>),
    Chars {
        itos: Vec<char>,
        stoi: HashMap<char, u32>,
    },
}

/// GPT-2's `<|endoftext|>`.
pub(crate) const GPT2_EOT: u32 = 50256;
/// GPT-2's vocabulary: 50,000 merges, 256 bytes and `<|endoftext|>`.
pub(crate) const GPT2_VOCAB: i64 = 50257;

/// The special tokens taken as a `tokenizer.json`'s end of text, in this order of preference.
const EOS_NAMES: [&str; 5] = ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>"];

impl Codec {
    /// GPT-2's BPE (built once per process).
    pub fn gpt2() -> Codec {
        Codec::Gpt2
    }

    /// A `tokenizer.json` from its bytes; `Err` says why it does not load. A panic inside the library (malformed
    /// input it does not check) is caught and becomes that error.
    pub fn from_json(bytes: &[u8]) -> Result<Codec, String> {
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes));
        match parsed {
            Ok(Ok(t)) => Ok(Codec::Json(Box::new(t))),
            Ok(Err(e)) => Err(format!("not a tokenizer.json the tokenizers library can load: {e}")),
            Err(_) => Err("the tokenizers library panicked while loading it (malformed tokenizer.json)".into()),
        }
    }

    /// The `chars` vocabulary of a text: its distinct characters, sorted.
    pub fn chars_of<'a>(texts: impl Iterator<Item = &'a str>) -> Codec {
        let mut set = std::collections::BTreeSet::new();
        for t in texts {
            set.extend(t.chars());
        }
        Codec::from_itos(set.into_iter().collect())
    }

    /// A `chars` codec from its decoding table.
    pub fn from_itos(itos: Vec<char>) -> Codec {
        let stoi = itos.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        Codec::Chars { itos, stoi }
    }

    /// The number of ids (the model's vocabulary), special tokens included.
    pub fn vocab_size(&self) -> i64 {
        match self {
            Codec::Gpt2 => GPT2_VOCAB,
            // The largest id + 1: added tokens may sit above a gap in the model's ids.
            Codec::Json(t) => t.get_vocab(true).values().max().map_or(0, |&m| m as i64 + 1),
            Codec::Chars { itos, .. } => itos.len() as i64,
        }
    }

    /// The id placed between documents: GPT-2's `<|endoftext|>`; for a `tokenizer.json`, its first special token
    /// among `<|endoftext|>`, `</s>`, `<|end_of_text|>`, `<eos>`, `<|eot_id|>` (none when it has none); never
    /// for `chars`.
    pub fn eot(&self) -> Option<u32> {
        match self {
            Codec::Gpt2 => Some(GPT2_EOT),
            Codec::Json(t) => {
                let specials: Vec<_> = t.get_added_tokens_decoder().into_values().filter(|a| a.special).collect();
                EOS_NAMES
                    .iter()
                    .find_map(|n| specials.iter().find(|a| a.content == *n))
                    .and_then(|a| t.token_to_id(&a.content))
            }
            Codec::Chars { .. } => None,
        }
    }

    /// Token ids of `text`, without special tokens. `Err` for a character `chars` does not know, or a failure
    /// inside `tokenizers`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            Codec::Gpt2 => Ok(with_thread_gpt2(|b| b.encode_ordinary(text))),
            Codec::Json(t) => {
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.encode_fast(text, false)));
                match out {
                    Ok(Ok(enc)) => Ok(enc.get_ids().to_vec()),
                    Ok(Err(e)) => Err(format!("tokenizer.json failed to encode: {e}")),
                    Err(_) => Err("the tokenizers library panicked while encoding".into()),
                }
            }
            Codec::Chars { stoi, .. } => text
                .chars()
                .map(|c| stoi.get(&c).copied().ok_or_else(|| format!("{c:?} is not in this run's characters")))
                .collect(),
        }
    }

    /// The text of `ids`. Bytes that do not form UTF-8 (a sampled GPT-2 token can end mid-character) become U+FFFD;
    /// ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        match self {
            Codec::Gpt2 => tiktoken_rs::r50k_base_singleton()
                .decode_bytes(ids)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("token id {} is not in GPT-2's vocabulary", e.token)),
            Codec::Json(t) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.decode(ids, false))) {
                Ok(out) => out.map_err(|e| format!("tokenizer.json failed to decode: {e}")),
                Err(_) => Err("the tokenizers library panicked while decoding".into()),
            },
            Codec::Chars { itos, .. } => ids
                .iter()
                .map(|&i| {
                    itos.get(i as usize).copied().ok_or_else(|| format!("token id {i} is not below {}", itos.len()))
                })
                .collect(),
        }
    }

    /// How many bytes of text to encode at a time: 1 MiB, but 32 KiB for a `tokenizer.json` (the `tokenizers`
    /// library holds ~150 bytes per byte of the text it encodes, measured: a 20 MB file took 2.9 GB).
    pub fn piece_bytes(&self) -> usize {
        match self {
            Codec::Json(_) => 32 << 10,
            _ => 1 << 20,
        }
    }

    /// Where `text` may be cut into pieces that encode to the same ids as the whole: after a `\n` that has a
    /// non-space character on both sides. For GPT-2's pattern the `\n` is then a piece of its own whether or not
    /// the text ends there, and no piece spans the cut; `chars` may be cut anywhere. A `tokenizer.json`'s normalizer
    /// and pre-tokenizer may look across such a point (a Metaspace one prepends `▁` to a piece), so its cuts are
    /// verified: a candidate (that point, or before a space that starts a word) is taken only where the 1 KiB
    /// around it encodes to the same ids whole and in two parts; after 32 refused candidates the rest stays whole.
    pub fn cut_points(&self, text: &str, every: usize) -> Vec<usize> {
        if text.len() <= every {
            return vec![];
        }
        if matches!(self, Codec::Json(_)) {
            return self.verified_cuts(text, every);
        }
        let b = text.as_bytes();
        let mut cuts = Vec::new();
        let mut from = every;
        while from < b.len() {
            let found = (from.max(2)..b.len())
                .find(|&p| b[p - 1] == b'\n' && !is_space(b[p - 2]) && !is_space(b[p]) && text.is_char_boundary(p));
            let Some(p) = found else { break };
            cuts.push(p);
            from = p + every;
        }
        cuts
    }

    /// `gpt2`, `chars` or `tokenizer.json`, for `meta.json` and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Codec::Gpt2 => "gpt2",
            Codec::Json(_) => "tokenizer.json",
            Codec::Chars { .. } => "chars",
        }
    }
}

impl Codec {
    /// [`Codec::cut_points`] for a `tokenizer.json`: candidates every `every` bytes, each verified.
    fn verified_cuts(&self, text: &str, every: usize) -> Vec<usize> {
        let b = text.as_bytes();
        let candidate = |p: usize| {
            let after_line = b[p - 1] == b'\n' && !is_space(b[p - 2]) && !is_space(b[p]);
            let before_word = b[p] == b' ' && !is_space(b[p - 1]) && b[p + 1].is_ascii_alphanumeric();
            (after_line || before_word) && text.is_char_boundary(p)
        };
        let mut cuts = Vec::new();
        let mut from = every.max(2);
        'cuts: while from + 1 < b.len() {
            let mut p = from;
            for _ in 0..32 {
                let Some(c) = (p..b.len() - 1).find(|&q| candidate(q)) else { break 'cuts };
                if self.cut_keeps_ids(text, c) {
                    cuts.push(c);
                    from = c + every;
                    continue 'cuts;
                }
                p = c + 1;
            }
            break;
        }
        cuts
    }

    /// Whether the 1 KiB of `text` around `p` encodes to the same ids whole as cut at `p`.
    fn cut_keeps_ids(&self, text: &str, p: usize) -> bool {
        const AROUND: usize = 512;
        let a = text.floor_char_boundary(p.saturating_sub(AROUND));
        let z = text.ceil_char_boundary(p + AROUND);
        match (self.encode(&text[a..z]), self.encode(&text[a..p]), self.encode(&text[p..z])) {
            (Ok(whole), Ok(mut left), Ok(right)) => {
                left.extend(right);
                whole == left
            }
            _ => false,
        }
    }
}

/// `f` of this thread's own GPT-2 BPE (built on the thread's first use; ~10 MB), or of tiktoken-rs's shared one if
/// it cannot be built. tiktoken-rs keeps "thread-local" clones of its regex, but the clones share one pool of match
/// state, and every thread but the pool's first takes its slow, locked path for each match: ~20% of the encoding
/// time with 2 threads (perf), and a second thread added 1.3x instead of 1.7x. A `CoreBPE` per thread owns its
/// pool. Same ranks, same pattern: the same ids.
fn with_thread_gpt2<R>(f: impl FnOnce(&tiktoken_rs::CoreBPE) -> R) -> R {
    thread_local! {
        static OWN: Option<tiktoken_rs::CoreBPE> = tiktoken_rs::r50k_base().ok();
    }
    OWN.with(|own| match own {
        Some(own) => f(own),
        None => f(tiktoken_rs::r50k_base_singleton()),
    })
}

/// A byte that may be (part of) a character GPT-2's pattern counts as space: ASCII space characters and every
/// non-ASCII byte (Unicode spaces are multi-byte; treating all of them as spaces only skips some cut points).
fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0x0b || !b.is_ascii()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_round_trips_and_knows_its_ids() {
        let g = Codec::gpt2();
        assert_eq!(g.encode("Hello world").unwrap(), [15496, 995], "tiktoken.get_encoding('gpt2')");
        let text = "Ünïcödé — 日本語\n\n  tabs\there  \r\n end ";
        assert_eq!(g.decode(&g.encode(text).unwrap()).unwrap(), text);
        assert_eq!(g.vocab_size(), 50257);
        assert_eq!(g.decode(&[GPT2_EOT]).unwrap(), "<|endoftext|>");
    }

    /// Each thread encodes with its own BPE: the ids are those of tiktoken-rs's shared one, on every thread.
    #[test]
    fn every_thread_encodes_as_the_shared_bpe() {
        let text: String = (0..300).map(|i| format!("line {i}: it's 3.14 — naïve 日本語  \t{}\n", i * 7)).collect();
        let shared = tiktoken_rs::r50k_base_singleton().encode_ordinary(&text);
        let per_thread: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3).map(|_| s.spawn(|| Codec::gpt2().encode(&text).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ids in per_thread {
            assert_eq!(ids, shared);
        }
    }

    #[test]
    fn cutting_at_cut_points_gives_the_same_ids_as_the_whole() {
        let g = Codec::gpt2();
        let mut text = String::new();
        for i in 0..400 {
            text += &format!("line {i} of text, with words\n{}", ["", "\n", "  \n", " x\n\n", "é\nz"][i % 5]);
        }
        let cuts = g.cut_points(&text, 50);
        assert!(cuts.len() > 10, "{}", cuts.len());
        let mut pieces = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain([text.len()].iter()) {
            pieces.extend(g.encode(&text[start..c]).unwrap());
            start = c;
        }
        assert_eq!(pieces, g.encode(&text).unwrap());
    }

    #[test]
    fn chars_are_sorted_and_unknown_ones_refused() {
        let c = Codec::chars_of(["hello", "world"].into_iter());
        assert_eq!(c.vocab_size(), 7);
        assert_eq!(c.encode("dehl").unwrap(), [0, 1, 2, 3]);
        assert_eq!(c.decode(&[3, 1]).unwrap(), "le");
        assert!(c.encode("x").unwrap_err().contains("'x'"));
        assert_eq!(c.eot(), None);
    }
}
