//! Helpers the benches share (each includes this file with `mod common;` and uses what it needs).
#![allow(dead_code)]
use std::path::PathBuf;

/// `$KEY`, or `default`.
pub(crate) fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The median (the upper one of an even count); NaN for no values.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The Python with torch 2.11.0: `$SPOTRUN_PYTHON`, else the set-up venv's.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("SPOTRUN_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/spotrun/torch-2.11.0/bin/python")
    })
}
