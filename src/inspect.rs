//! `spotrun inspect PATH [--verify]`: what a checkpoint (or every checkpoint under a run or checkpoint
//! directory) holds, read from its manifest; `--verify` also checks every file's size and CRC-32.
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Manifest, ManifestError, MANIFEST};

/// Checkpoint directories under `path`: itself if it has a manifest or is named `ckpt-*`, else its `ckpt-*`
/// children, else those of `path/checkpoints`. `Err` says why `path` cannot be looked at (no such path, an I/O
/// error), so a missing or unreadable path is never reported as "no checkpoints".
pub fn find(path: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{}: no such path", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    let named_ckpt = |p: &Path| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ckpt-"));
    if path.join(MANIFEST).exists() || named_ckpt(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    for dir in [path.to_path_buf(), path.join("checkpoints")] {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => continue,
            Err(e) => return Err(format!("{}: cannot list: {e}", dir.display())),
        };
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| named_ckpt(p)).collect();
        if !v.is_empty() {
            v.sort();
            return Ok(v);
        }
    }
    Ok(Vec::new())
}

/// A human-readable report for one checkpoint directory, and whether it is good: a committed checkpoint whose
/// files verify (when `verify`). A directory without a manifest is an interrupted write, which resume ignores;
/// it is reported but not counted as bad.
pub fn report(dir: &Path, verify: bool) -> (String, bool) {
    let m = match Manifest::read(dir) {
        Ok(m) => m,
        Err(e @ ManifestError::Absent { .. }) => {
            return (
                format!("{}\n  not committed (an interrupted write; resume ignores it): {e}\n", dir.display()),
                true,
            )
        }
        Err(e) => return (format!("{}\n  BAD manifest: {e}\n", dir.display()), false),
    };
    let mut out = format!("{}\n", dir.display());
    let total = m.config.get("train").and_then(|t| t.get("epochs")).and_then(|e| e.as_u64()).unwrap_or(0);
    let cursor = if m.batch == 0 {
        format!("{} of {total} epochs done", m.epoch)
    } else {
        format!("in epoch {} of {total}, {} batches done", m.epoch + 1, m.batch)
    };
    out += &format!(
        "  run id {}  format v{}  reason {}  saved in {:.2}s\n  cursor: {cursor}, step {}{}\n",
        crate::config::short_id_n(&m.run_id, 16),
        m.format_version,
        m.reason,
        m.save_seconds,
        m.step,
        if m.finished { " (finished)" } else { "" },
    );
    if let Some(fp) = &m.data_fingerprint {
        out += &format!("  data: {fp}\n");
    }
    if m.device.is_some() || m.precision.is_some() {
        let (d, p) = (m.device.as_deref().unwrap_or("?"), m.precision.as_deref().unwrap_or("?"));
        out += &format!("  trained on: device {d}, precision {p}\n");
    }
    if let Some(last) = m.metrics.last() {
        out += &format!("  last epoch metrics: {last}\n");
    }
    out += &extras(&m, dir);
    let mut good = true;
    for f in &m.files {
        let path = dir.join(&f.name);
        let tensors = std::fs::read(&path)
            .ok()
            .and_then(|b| safetensors::SafeTensors::read_metadata(&b).ok().map(|(_, meta)| meta.tensors().len()));
        let status = if verify {
            match std::fs::read(&path) {
                Ok(b) if b.len() as u64 == f.bytes && checkpoint::crc32_hex(crc32fast::hash(&b)) == f.crc32 => {
                    "ok".to_string()
                }
                Ok(b) if b.len() as u64 != f.bytes => format!("BAD: {} bytes on disk", b.len()),
                Ok(_) => "BAD: checksum mismatch".to_string(),
                Err(e) => format!("BAD: {e}"),
            }
        } else {
            "not verified".to_string()
        };
        good &= !status.starts_with("BAD");
        out += &format!(
            "  {:<18} {:>6} tensors {:>10.2} MB  crc32 {}  {status}\n",
            f.name,
            tensors.map_or("?".into(), |n| n.to_string()),
            f.bytes as f64 / 1e6,
            f.crc32,
        );
    }
    (out, good)
}

/// The EMA (`train.ema`: its settings and how many averages the state file holds) and the best checkpoint
/// (`checkpoint.keep_best`: which epoch, its value, and whether its checkpoint is still on disk).
fn extras(m: &Manifest, dir: &Path) -> String {
    let mut out = String::new();
    if let Some(ema) = m.config.get("train").and_then(|t| t.get("ema")).filter(|e| !e.is_null()) {
        let state = std::fs::read(dir.join(checkpoint::STATE_FILE)).ok();
        let n = state
            .as_deref()
            .and_then(|b| safetensors::SafeTensors::read_metadata(b).ok())
            .map(|(_, meta)| meta.tensors().keys().filter(|k| k.starts_with("ema.")).count());
        let eval = m.config.get("train").and_then(|t| t.get("ema_eval")).and_then(|v| v.as_bool()) == Some(true);
        out += &format!(
            "  ema: {ema} ({} averaged tensors in {}){}\n",
            n.map_or("?".into(), |n| n.to_string()),
            checkpoint::STATE_FILE,
            if eval { ", used for evaluation" } else { "" }
        );
    }
    let metric = m.config.get("checkpoint").and_then(|c| c.get("keep_best")).and_then(|v| v.as_str());
    if let (Some(metric), Some(step)) = (metric, m.best_step) {
        let epoch = m.metrics.iter().find(|e| e.get("step").and_then(|s| s.as_u64()) == Some(step));
        let value = epoch.and_then(|e| e.get(metric)).map_or("?".into(), |v| v.to_string());
        let n = epoch.and_then(|e| e.get("epoch")).map_or("?".into(), |v| v.to_string());
        let ckpt = dir.parent().map(|p| p.join(format!("ckpt-{step:010}")));
        let kept = if ckpt.as_ref().is_some_and(|c| c.join(MANIFEST).exists()) { "kept" } else { "not on disk" };
        out += &format!("  best: epoch {n} by {metric} = {value} (ckpt-{step:010}, {kept})\n");
    }
    out
}
