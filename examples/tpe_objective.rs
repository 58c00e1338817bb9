//! spotrun's TPE sampler on a synthetic objective, for the comparison with Optuna (scripts/bench_tpe.sh).
//!
//! `cargo run --release --example tpe_objective -- OBJECTIVE SEED [TRIALS]` runs TRIALS (default 50) sequential
//! trials of `spotrun::sweep::tpe::propose` with its defaults and prints one JSON line: the best true value so far
//! after each trial. Objectives (each with minimum 0; scripts/bench_tpe.py defines the same ones for Optuna):
//! - `bowl`: lr ∈ log_uniform[1e-5, 1e-1], wd ∈ log_uniform[1e-6, 1e-1], width ∈ [64, 128, 256, 512];
//!   `(log10 lr + 3)² + 0.5 (log10 wd + 4)² + {64: 1, 128: 0.3, 256: 0, 512: 0.2}[width]`;
//! - `noisy`: `bowl` observed with N(0, 0.3²) noise; the best is the true value of the best observed trial;
//! - `mixed`: lr ∈ log_uniform[1e-5, 1e-1], dropout ∈ uniform[0, 0.5], layers ∈ int[1, 8];
//!   `(log10 lr + 3)² + 25 (dropout − 0.1)² + 0.1 (layers − 5)²`.
use spotrun::sweep::tpe::{propose, Direction, Domain, PastTrial, TpeSettings, TrialState};
use toml::Value;

fn params(objective: &str) -> Vec<(String, Domain)> {
    let lr = ("optim.lr".to_string(), Domain::LogUniform(1e-5, 1e-1));
    match objective {
        "mixed" => {
            vec![lr, ("model.dropout".into(), Domain::Uniform(0.0, 0.5)), ("model.layers".into(), Domain::Int(1, 8))]
        }
        _ => vec![
            lr,
            ("optim.weight_decay".into(), Domain::LogUniform(1e-6, 1e-1)),
            ("model.width".into(), Domain::Values([64, 128, 256, 512].map(Value::Integer).to_vec())),
        ],
    }
}

fn num(v: &Value) -> f64 {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap_or(f64::NAN)
}

/// The noise-free value.
fn truth(objective: &str, v: &[Value]) -> f64 {
    let decades = |x: f64, at: f64| (x.log10() - at).powi(2);
    match objective {
        "mixed" => decades(num(&v[0]), -3.0) + 25.0 * (num(&v[1]) - 0.1).powi(2) + 0.1 * (num(&v[2]) - 5.0).powi(2),
        _ => {
            let width = match v[2].as_integer() {
                Some(64) => 1.0,
                Some(128) => 0.3,
                Some(256) => 0.0,
                _ => 0.2,
            };
            decades(num(&v[0]), -3.0) + 0.5 * decades(num(&v[1]), -4.0) + width
        }
    }
}

/// A standard normal draw keyed by (seed, trial): SplitMix64 finalizer + Box–Muller.
fn noise(seed: u64, trial: u64) -> f64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ trial);
    let b = mix(a);
    let u = |x: u64| ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-2.0 * u(a).ln()).sqrt() * (std::f64::consts::TAU * u(b)).cos()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [objective, seed, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: tpe_objective bowl|noisy|mixed SEED [TRIALS]");
    };
    let seed: u64 = seed.parse()?;
    let trials: u64 = rest.first().map_or(Ok(50), |t| t.parse())?;
    let params = params(objective);
    let (mut past, mut best, mut best_observed) = (Vec::new(), Vec::new(), f64::INFINITY);
    let mut best_true = f64::INFINITY;
    for t in 0..trials {
        let values = propose(&params, &past, Direction::Minimize, seed << 20 | t, &TpeSettings::default());
        let f = truth(objective, &values);
        let observed = if objective == "noisy" { f + 0.3 * noise(seed, t) } else { f };
        if observed < best_observed {
            (best_observed, best_true) = (observed, f);
        }
        best.push(best_true);
        past.push(PastTrial { values, state: TrialState::Complete(observed) });
    }
    println!("{}", serde_json::json!({ "objective": objective, "seed": seed, "best": best }));
    Ok(())
}
