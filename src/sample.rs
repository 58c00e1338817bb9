//! `spotrun sample RUN_DIR`: text from a trained GPT run, like nanoGPT's `sample.py`.
//!
//! Reads the run's `config.toml`, the vocabulary (`meta.json` beside the token files, or the synthetic task's),
//! and its final weights (`model.safetensors`, else the newest checkpoint that verifies), then samples with
//! temperature and top-k from a seeded generator. Prompts are encoded with `itos` (longest match first) when the
//! data has one, else read as space-separated token ids; a `data.source = "text"` run encodes and decodes with its
//! own tokenizer (the run directory's `vocab.json` / `tokenizer.json`, else its data-cache entry). Runs on the run's device (`train.device`, or `--device`):
//! a device that is not available is an error, as is a CPU run of a model whose checkpoint says it trained on CUDA
//! unless `--device cpu` asks for it. Sits beside `trainer`: imports `config`, `data`, `device`, `model` and
//! `checkpoint`, never `trainer` or `sweep`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, Manifest, Store};
use crate::config::{self, ModelKind};
use crate::data::{Codec, TokenData};
use crate::device::{self, DeviceRequest};
use crate::error::{Error, Result};
use crate::model::{self, Model};

/// What `spotrun sample` was asked for.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub run_dir: PathBuf,
    pub prompt: Option<String>,
    pub tokens: usize,
    pub temperature: f64,
    pub top_k: Option<i64>,
    pub seed: u64,
    /// `--device`: `auto`, `cpu`, `cuda` or `cuda:N` (default: the run's `train.device`).
    pub device: Option<String>,
}

/// Generates `opts.tokens` tokens after the prompt; returns the prompt and the continuation, decoded.
pub fn sample(opts: &SampleOptions) -> Result<String> {
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return Err(Error::Input(format!("--temperature must be a positive number, got {}", opts.temperature)));
    }
    let path = opts.run_dir.join("config.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Input(format!("{}: not a run directory (no config.toml)", opts.run_dir.display())))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let cfg = config::parse_str(&text, &path)?;
    if cfg.model.kind != ModelKind::Gpt {
        return Err(Error::Input(format!(
            "{}: model.kind is not \"gpt\"; spotrun sample generates text from language models only",
            path.display()
        )));
    }
    let codec = match cfg.data.source {
        config::DataSource::Text => Some(crate::data::run_codec(&opts.run_dir, &cfg.data)?),
        _ => None,
    };
    let (vocab, itos) = match &codec {
        Some(c) => (c.vocab_size(), None),
        None => TokenData::vocabulary(&cfg.data, &cfg.model)?,
    };
    let ckpt_dir = cfg.checkpoint.dir.clone().unwrap_or_else(|| opts.run_dir.join("checkpoints"));
    let trained_on = trained_on(&ckpt_dir);
    let dev = choose_device(opts.device.as_deref(), &cfg.train.device, trained_on.as_deref(), device::select)
        .map_err(|e| Error::Device(format!("{}: {e}", opts.run_dir.display())))?;
    let vs = VarStore::new(dev);
    let shape = model::gpt_shape(&cfg.model, vocab);
    let net = model::Gpt::new(&vs.root(), &shape, cfg.model.dropout);
    let from = load_weights(&vs, &net, &opts.run_dir, &ckpt_dir)?;
    let prompt = match &codec {
        Some(c) => encode_with(c, opts.prompt.as_deref().unwrap_or(""))?,
        None => encode(opts.prompt.as_deref().unwrap_or(""), itos.as_deref(), vocab)?,
    };
    tch::manual_seed(opts.seed as i64);
    tell!("sampling {} tokens from {} on {}", opts.tokens, from.display(), device_name(dev));
    let ids = tch::no_grad(|| generate(&net, &prompt, opts, shape.block_size, dev));
    match &codec {
        Some(c) => {
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            c.decode(&ids).map_err(|e| Error::Input(format!("{}: {e}", opts.run_dir.display())))
        }
        None => Ok(decode(&ids, itos.as_deref())),
    }
}

/// Token ids of `prompt` with the run's tokenizer. An empty prompt starts from a newline when the tokenizer
/// encodes one, else from the end-of-text token, else id 0 (as nanoGPT's `sample.py` starts from "\n").
fn encode_with(codec: &Codec, prompt: &str) -> Result<Vec<i64>> {
    let text = if prompt.is_empty() { "\n" } else { prompt };
    let ids = match codec.encode(text) {
        Ok(ids) => ids,
        Err(_) if prompt.is_empty() => vec![],
        Err(e) => return Err(Error::Input(format!("--prompt: {e}"))),
    };
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    Ok(match (ids.is_empty(), codec.eot()) {
        (false, _) => ids,
        (true, Some(eot)) => vec![eot as i64],
        (true, None) => vec![0],
    })
}

/// The device type the newest committed checkpoint's manifest records (`cpu`, `cuda`); `None` without one, or for
/// checkpoints written before manifests recorded it.
fn trained_on(ckpt_dir: &Path) -> Option<String> {
    let listed = Store::new(ckpt_dir.to_path_buf(), 1).list().ok()?;
    listed.iter().rev().find_map(|(_, dir)| Manifest::read(dir).ok()).and_then(|m| m.device)
}

/// The device to sample on: `--device` (`asked`) when given, else the run's `train.device`, resolved by `select`
/// ([`device::select`]: an unavailable device is an error, never a silent CPU run). A run whose newest checkpoint
/// says it trained on CUDA is not sampled on the CPU for want of a GPU unless `--device cpu` asks for it. `Err` is
/// the message of an `error:` line.
fn choose_device(
    asked: Option<&str>,
    run_device: &str,
    trained_on: Option<&str>,
    select: impl Fn(DeviceRequest) -> std::result::Result<Device, String>,
) -> std::result::Result<Device, String> {
    let (text, from) = match asked {
        Some(a) => (a, "--device".to_string()),
        None => (run_device, format!("train.device = {run_device:?} (the run's config)")),
    };
    let request =
        device::parse_device(text).ok_or_else(|| format!("{from}: {text:?} is not one of auto, cpu, cuda, cuda:N"))?;
    let dev = select(request)
        .map_err(|e| format!("cannot sample on {text} ({from}): {e}; pass --device cpu to sample on the CPU"))?;
    if asked.is_none() && dev == Device::Cpu && request == DeviceRequest::Auto && trained_on == Some("cuda") {
        return Err("the run trained on cuda (its newest checkpoint says so) but libtorch sees no GPU here; pass \
                    --device cpu to sample on the CPU"
            .into());
    }
    Ok(dev)
}

/// `cpu` or `cuda:N`.
fn device_name(dev: Device) -> String {
    match dev {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Copies the run's final weights (or its newest good checkpoint's) into `vs`; every variable must be there.
fn load_weights(vs: &VarStore, net: &dyn Model, run_dir: &Path, ckpt_dir: &Path) -> Result<PathBuf> {
    let file = run_dir.join("model.safetensors");
    let (tensors, from) = match std::fs::symlink_metadata(&file) {
        Ok(_) => (checkpoint::load(&file, Device::Cpu)?, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = ckpt_dir.to_path_buf();
            let found =
                Store::new(dir.clone(), 1).latest_good(Device::Cpu, &mut |_| {}).map_err(|e| Error::io(&dir, e))?;
            let Some(l) = found else {
                return Err(Error::Input(format!(
                    "{}: no model.safetensors and no usable checkpoint in {}; train the run first",
                    run_dir.display(),
                    dir.display()
                )));
            };
            (l.model, l.dir)
        }
        Err(e) => return Err(Error::io(&file, e)),
    };
    copy_into(vs, net, &tensors).map_err(|why| Error::Input(format!("{}: {why}", from.display())))?;
    Ok(from)
}

/// Copies `tensors` into the variables of `vs` by name, checking shapes; tied aliases may be present.
fn copy_into(vs: &VarStore, net: &dyn Model, tensors: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, var) in &vars {
            let src = tensors.get(name).ok_or_else(|| format!("tensor `{name}` missing: weights of another model?"))?;
            if src.size() != var.size() {
                return Err(format!(
                    "tensor `{name}` has shape {:?}, the run's config makes {:?}",
                    src.size(),
                    var.size()
                ));
            }
            var.shallow_clone().copy_(src);
        }
        let known = |k: &String| vars.contains_key(k) || net.tied().iter().any(|(alias, _)| alias == k);
        match tensors.keys().find(|k| !known(k)) {
            Some(k) => Err(format!("unexpected tensor `{k}`: weights of another model?")),
            None => Ok(()),
        }
    })
}

/// Token ids of `prompt`: longest-match over `itos`, or space-separated ids without one. An empty prompt starts
/// from a newline (or space) token when the vocabulary has one, as nanoGPT's `sample.py` starts from "\n".
fn encode(prompt: &str, itos: Option<&[String]>, vocab: i64) -> Result<Vec<i64>> {
    let Some(itos) = itos else {
        let ids: std::result::Result<Vec<i64>, _> = prompt.split_whitespace().map(str::parse::<i64>).collect();
        let ids = ids.map_err(|_| {
            Error::Input("--prompt: this data has no itos in meta.json; give token ids separated by spaces".into())
        })?;
        if let Some(bad) = ids.iter().find(|&&i| !(0..vocab).contains(&i)) {
            return Err(Error::Input(format!("--prompt: token id {bad} is not below vocab_size {vocab}")));
        }
        return Ok(if ids.is_empty() { vec![0] } else { ids });
    };
    if prompt.is_empty() {
        let start = ["\n", " "].iter().find_map(|s| itos.iter().position(|t| t == s)).unwrap_or(0);
        return Ok(vec![start as i64]);
    }
    let mut ids = Vec::new();
    let mut rest = prompt;
    while !rest.is_empty() {
        let best = itos
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty() && rest.starts_with(t.as_str()))
            .max_by_key(|(_, t)| t.len());
        let Some((id, t)) = best else {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(Error::Input(format!("--prompt: {c:?} is not in this run's vocabulary (meta.json itos)")));
        };
        ids.push(id as i64);
        rest = &rest[t.len()..];
    }
    Ok(ids)
}

/// nanoGPT's `generate`: the last `block` tokens as context, logits of the last position over the temperature,
/// top-k filtered, one multinomial draw per token.
fn generate(net: &dyn Model, prompt: &[i64], opts: &SampleOptions, block: i64, dev: Device) -> Vec<i64> {
    let mut ids = prompt.to_vec();
    for _ in 0..opts.tokens {
        let start = ids.len().saturating_sub(block as usize);
        let ctx = Tensor::from_slice(&ids[start..]).unsqueeze(0).to_device(dev);
        let logits = net.forward_t(&ctx, false).select(1, -1).squeeze_dim(0) / opts.temperature;
        let logits = match opts.top_k {
            Some(k) if k > 0 && k < logits.size()[0] => {
                let (top, _) = logits.topk(k, -1, true, true);
                let floor = top.get(k - 1);
                logits.where_self(&logits.ge_tensor(&floor), &Tensor::from(f64::NEG_INFINITY))
            }
            _ => logits,
        };
        let next = logits.softmax(-1, Kind::Float).multinomial(1, false).int64_value(&[0]);
        ids.push(next);
    }
    ids
}

fn decode(ids: &[i64], itos: Option<&[String]>) -> String {
    match itos {
        Some(itos) => ids.iter().filter_map(|&i| itos.get(i as usize)).map(String::as_str).collect(),
        None => ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn prompts_encode_by_longest_match_and_decode_back() {
        let itos: Vec<String> = ["a", "b", "ab", " ", "\n"].map(String::from).to_vec();
        assert_eq!(encode("abab a", Some(&itos), 5).unwrap(), [2, 2, 3, 0]);
        assert_eq!(decode(&[2, 2, 3, 0], Some(&itos)), "abab a");
        assert_eq!(encode("", Some(&itos), 5).unwrap(), [4], "an empty prompt starts at the newline");
        assert!(matches!(encode("abc", Some(&itos), 5), Err(Error::Input(m)) if m.contains("'c'")));
        assert_eq!(encode("3 1", None, 5).unwrap(), [3, 1]);
        assert!(encode("9", None, 5).is_err());
        assert_eq!(decode(&[3, 1], None), "3 1");
    }

    /// A host whose libtorch sees `gpus` GPUs and no driver beyond it.
    fn host(gpus: usize) -> impl Fn(DeviceRequest) -> std::result::Result<Device, String> {
        move |r| device::decide(r, &device::CudaFacts { torch_gpus: gpus, ..Default::default() })
    }

    #[test]
    fn sampling_runs_on_the_runs_device_or_the_one_asked_for_and_never_falls_back_silently() {
        assert_eq!(choose_device(None, "auto", Some("cuda"), host(1)), Ok(Device::Cuda(0)));
        assert_eq!(choose_device(None, "cuda:1", None, host(2)), Ok(Device::Cuda(1)));
        assert_eq!(choose_device(None, "auto", Some("cpu"), host(0)), Ok(Device::Cpu));
        assert_eq!(choose_device(None, "auto", None, host(0)), Ok(Device::Cpu), "an old checkpoint says nothing");
        assert_eq!(choose_device(Some("cpu"), "cuda", Some("cuda"), host(0)), Ok(Device::Cpu));
        assert_eq!(choose_device(Some("cpu"), "auto", Some("cuda"), host(1)), Ok(Device::Cpu));
        let e = choose_device(None, "auto", Some("cuda"), host(0)).unwrap_err();
        assert!(e.contains("trained on cuda") && e.contains("--device cpu"), "{e}");
        let e = choose_device(None, "cuda", None, host(0)).unwrap_err();
        assert!(e.starts_with("cannot sample on cuda (train.device = \"cuda\" (the run's config))"), "{e}");
        assert!(e.ends_with("pass --device cpu to sample on the CPU"), "{e}");
        let e = choose_device(Some("cuda:2"), "auto", None, host(1)).unwrap_err();
        assert!(e.starts_with("cannot sample on cuda:2 (--device)"), "{e}");
        let e = choose_device(Some("gpu"), "auto", None, host(1)).unwrap_err();
        assert_eq!(e, "--device: \"gpu\" is not one of auto, cpu, cuda, cuda:N");
    }
}
