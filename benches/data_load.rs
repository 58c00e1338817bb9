//! Load time and peak RSS of NumPy / Parquet data to "tensors in RAM", for `scripts/bench-data-tabular.sh`
//! (which runs the Python equivalents side by side). Not a criterion bench: one load per process, so the peak
//! RSS (VmHWM) is this load's.
//!
//! `cargo bench --bench data_load -- SOURCE PATH [VAL_PATH]` (SOURCE: npy or parquet); prints one JSON line:
//! seconds, the RSS baseline after libtorch is up, the peak RSS, and the bytes the tensors hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;
use std::time::Instant;

use spotrun::config::{DataConfig, DataSource, ModelConfig};
use spotrun::data::Dataset;

/// A field of /proc/self/status in bytes (`VmRSS`, `VmHWM`).
fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let source = match args.first().map(String::as_str) {
        Some("npy") => DataSource::Npy,
        Some("parquet") => DataSource::Parquet,
        _ => {
            eprintln!("usage: cargo bench --bench data_load -- npy|parquet PATH [VAL_PATH]");
            return;
        }
    };
    let cfg = DataConfig {
        source,
        path: args.get(1).map(PathBuf::from),
        val_path: args.get(2).map(PathBuf::from),
        ..Default::default()
    };
    tch::set_num_threads(1);
    let _warm = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)).sum(tch::Kind::Float);
    let base = status("VmRSS:");
    let t0 = Instant::now();
    let d = Dataset::load(&cfg, &ModelConfig::default()).expect("load");
    let seconds = t0.elapsed().as_secs_f64();
    println!(
        "{{\"tool\": \"spotrun {}\", \"seconds\": {seconds:.3}, \"base_rss\": {base}, \"peak_rss\": {}, \"tensor_bytes\": {}}}",
        args[0],
        status("VmHWM:"),
        d.nbytes()
    );
}
