//! Sweep expansion: a pure function from a validated [`Sweep`] to the list of runs, in a stable order.
//!
//! The order is part of the contract: `spotrun worker --index I` on any machine must mean the same run, so it
//! depends only on the sweep file (grid: parameters in key order, the last varying fastest, then seeds; random:
//! sample `i` drawn from a stream keyed by `(seed, i)`; list: file order). A run's id is the hash of its
//! resolved config, so two entries that resolve to the same config are one run.
use std::collections::HashSet;

use super::error::SweepError;
use super::spec::{Domain, Method, Sweep};
use crate::config::{self, Config};
use crate::data::rng::SplitMix64;

/// One run of a sweep. Its row in the plan (`sweep.json`), with its label, is [`super::layout::PlanRun`].
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub index: usize,
    /// The run id: the config hash (see `config::config_hash`).
    pub id: String,
    /// The sweep's settings for this run, as (dotted key, value).
    pub overrides: Vec<(String, toml::Value)>,
    pub config: Config,
}

/// The runs of a sweep, plus how many entries were dropped as duplicates of an earlier run.
#[derive(Debug, Clone)]
pub struct Expansion {
    pub runs: Vec<PlannedRun>,
    pub duplicates: usize,
}

/// Expands `s` into runs. Pure: reads no files (the base config is already in `s`).
pub fn expand(s: &Sweep) -> Result<Expansion, SweepError> {
    let points: Vec<Vec<(String, toml::Value)>> = match s.method {
        Method::Grid => grid(&s.params),
        Method::Random => (0..s.count).map(|i| sample(&s.params, s.seed, i as u64)).collect(),
        Method::List => s.runs.clone(),
        // Proposed one at a time by the study, from the metrics of the trials before.
        Method::Tpe => Vec::new(),
    };
    let mut with_seeds = Vec::new();
    for p in points {
        if s.seeds.is_empty() {
            with_seeds.push(p);
            continue;
        }
        for &seed in &s.seeds {
            let mut q = p.clone();
            q.push(("train.seed".into(), toml::Value::Integer(seed as i64)));
            with_seeds.push(q);
        }
    }
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for overrides in with_seeds {
        let run = resolve(s, runs.len(), overrides)?;
        if !seen.insert(run.id.clone()) {
            duplicates += 1;
            continue;
        }
        runs.push(run);
    }
    Ok(Expansion { runs, duplicates })
}

/// Run `index` of `s` with these overrides of the base: its config and id. Pure.
pub(crate) fn resolve(
    s: &Sweep,
    index: usize,
    overrides: Vec<(String, toml::Value)>,
) -> Result<PlannedRun, SweepError> {
    let mut t = s.base.clone();
    for (k, v) in &overrides {
        config::set_value(&mut t, k, v.clone(), &s.file)?;
    }
    // TensorBoard is on in sweeps unless the sweep says otherwise (a placement key: the run id is the same).
    let tb_set = t.get("train").and_then(|t| t.get("tensorboard")).is_some();
    let mut cfg = config::from_table(t, &s.file)?;
    if cfg.train.name.is_none() {
        cfg.train.name = Some(s.name.clone());
    }
    if !tb_set {
        cfg.train.tensorboard = true;
    }
    let id = config::config_hash(&cfg)?;
    Ok(PlannedRun { index, id, overrides, config: cfg })
}

/// The cartesian product of the value lists, the last parameter varying fastest.
fn grid(params: &[(String, Domain)]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (k, d) in params {
        let Domain::Values(values) = d else { continue };
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((k.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

/// Sample `i` of a random sweep. Floats are rounded to 6 significant digits so they read well in tables.
fn sample(params: &[(String, Domain)], seed: u64, i: u64) -> Vec<(String, toml::Value)> {
    let mut rng = SplitMix64::keyed(&[seed, i]);
    params.iter().map(|(k, d)| (k.clone(), draw(d, &mut rng))).collect()
}

/// One value from `d`, drawn from `rng` (what random search and PBT's resampling take).
pub(crate) fn draw(d: &Domain, rng: &mut SplitMix64) -> toml::Value {
    match d {
        Domain::Values(vs) => vs[rng.below(vs.len() as u64) as usize].clone(),
        Domain::Uniform(a, b) => toml::Value::Float(round6(a + rng.next_f64() * (b - a))),
        Domain::LogUniform(a, b) => {
            let (la, lb) = (a.ln(), b.ln());
            toml::Value::Float(round6((la + rng.next_f64() * (lb - la)).exp().clamp(*a, *b)))
        }
        Domain::Int(a, b) => {
            // in i128: a range as wide as i64 must not overflow
            let span = (*b as i128 - *a as i128 + 1).min(u64::MAX as i128) as u64;
            toml::Value::Integer((*a as i128 + rng.below(span) as i128) as i64)
        }
    }
}

pub(crate) fn round6(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sweep::spec::parse;

    fn sweep(text: &str) -> Sweep {
        parse(text, Path::new("s.toml")).unwrap()
    }

    fn err(text: &str) -> String {
        parse(text, Path::new("s.toml")).unwrap_err().to_string()
    }

    #[test]
    fn grid_is_a_stable_cartesian_product_times_seeds() {
        let s = sweep(
            "name = \"g\"\nseeds = [1, 2]\n[parameters]\n\"optim.lr\" = [0.001, 0.01]\n\"model.hidden\" = [[8], [16]]\n",
        );
        let e = expand(&s).unwrap();
        assert_eq!(e.runs.len(), 8);
        // keys are sorted (model.hidden before optim.lr); the last one varies fastest, then the seed
        let points: Vec<Vec<String>> =
            e.runs.iter().map(|r| r.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect()).collect();
        assert_eq!(points[0], ["model.hidden=[8]", "optim.lr=0.001", "train.seed=1"]);
        assert_eq!(points[1], ["model.hidden=[8]", "optim.lr=0.001", "train.seed=2"]);
        assert_eq!(points[2], ["model.hidden=[8]", "optim.lr=0.01", "train.seed=1"]);
        assert_eq!(points[7], ["model.hidden=[16]", "optim.lr=0.01", "train.seed=2"]);
        assert_eq!(e.runs[3].config.optim.lr, 0.01);
        assert_eq!(e.runs[4].config.model.hidden, vec![16]);
        assert_eq!(e.runs[1].config.train.seed, 2);
        let ids: HashSet<&str> = e.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 8);
        assert!(e.runs.iter().enumerate().all(|(i, r)| r.index == i));
        // the same file expands to the same ids, and the id is the config hash
        let again = expand(&s).unwrap();
        assert!(e.runs.iter().zip(&again.runs).all(|(a, b)| a.id == b.id));
        assert_eq!(e.runs[0].id, config::config_hash(&e.runs[0].config).unwrap());
    }

    #[test]
    fn nested_parameter_tables_equal_dotted_keys() {
        let a = sweep("name = \"a\"\n[parameters]\n\"optim.lr\" = [0.1, 0.2]\n");
        let b = sweep("name = \"a\"\n[parameters.optim]\nlr = [0.1, 0.2]\n");
        let ids = |s: &Sweep| expand(s).unwrap().runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn random_is_seeded_in_range_and_rounded() {
        let text = "name = \"r\"\nmethod = \"random\"\ncount = 20\nseed = 7\n[parameters]\n\
                    \"optim.lr\" = { log_uniform = [1e-4, 1e-1] }\n\"model.dropout\" = { uniform = [0.0, 0.5] }\n\
                    \"train.batch_size\" = { int = [16, 64] }\n\"model.activation\" = [\"relu\", \"gelu\"]\n";
        let e = expand(&sweep(text)).unwrap();
        assert_eq!(e.runs.len() + e.duplicates, 20);
        for r in &e.runs {
            let c = &r.config;
            assert!((1e-4..=1e-1).contains(&c.optim.lr), "{}", c.optim.lr);
            assert!((0.0..=0.5).contains(&c.model.dropout));
            assert!((16..=64).contains(&c.train.batch_size));
            assert_eq!(format!("{:.5e}", c.optim.lr).parse::<f64>().unwrap(), c.optim.lr);
        }
        // log-uniform: roughly a third of the draws per decade, not most of them in the top decade
        let low = e.runs.iter().filter(|r| r.config.optim.lr < 1e-2).count();
        assert!(low >= 8, "{low} of 20 below 1e-2");
        let same: Vec<String> = expand(&sweep(text)).unwrap().runs.into_iter().map(|r| r.id).collect();
        assert_eq!(same, e.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
        let other = expand(&sweep(&text.replace("seed = 7", "seed = 8"))).unwrap();
        assert_ne!(other.runs[0].id, e.runs[0].id);
    }

    #[test]
    fn list_runs_in_file_order_and_duplicates_collapse() {
        let s = sweep(
            "name = \"l\"\nmethod = \"list\"\n[[runs]]\n\"optim.lr\" = 0.1\n[[runs]]\noptim = { lr = 0.2, kind = \"sgd\" }\n\
             [[runs]]\n\"optim.lr\" = 0.1\n",
        );
        let e = expand(&s).unwrap();
        assert_eq!(e.runs.len(), 2);
        assert_eq!(e.duplicates, 1);
        assert_eq!(e.runs[1].config.optim.kind, config::OptimKind::Sgd);
        // a placement-only difference (train.device) is the same run
        let s = sweep("name = \"p\"\n[parameters]\n\"train.device\" = [\"cpu\", \"auto\"]\n");
        assert_eq!(expand(&s).unwrap().runs.len(), 1);
    }

    #[test]
    fn bad_sweep_files_name_the_key() {
        let e = err("name = \"x\"\n[parameters]\n\"optim.lrr\" = [0.1]\n");
        assert!(e.contains("s.toml") && e.contains("parameters.\"optim.lrr\"") && e.contains("lrr"), "{e}");
        let e = err("name = \"x\"\n[parameters]\n\"optim.lr\" = []\n");
        assert!(e.contains("parameters.\"optim.lr\"") && e.contains("empty"), "{e}");
        let e = err(
            "name = \"x\"\nmethod = \"random\"\ncount = 2\n[parameters]\n\"optim.lr\" = { uniform = [0.1, 0.01] }\n",
        );
        assert!(e.contains("inverted"), "{e}");
        let e = err("name = \"x\"\n[parameters]\n\"optim.lr\" = [\"fast\"]\n");
        assert!(e.contains("parameters.\"optim.lr\""), "{e}");
        let e = err("name = \"x\"\n[parameters]\n\"optim.lr\" = [-1.0]\n");
        assert!(e.contains("optim.lr") && e.contains("positive"), "{e}");
        assert!(err("name = \"x\"\n").contains("grid is empty"));
        assert!(err("name = \"x\"\nmethod = \"random\"\n[parameters]\n\"optim.lr\" = [0.1]\n").contains("count"));
        assert!(err("name = \"x\"\n[parameters]\n\"optim.lr\" = { log_uniform = [0.1, 1.0] }\n").contains("ranges are"));
        assert!(err(
            "name = \"x\"\nmethod = \"random\"\ncount = 1\n[parameters]\n\"optim.lr\" = { log_uniform = [0.0, 1.0] }\n"
        )
        .contains("min > 0"));
        assert!(err("name = \"x\"\nmehtod = \"grid\"\n").contains("mehtod"));
        assert!(
            err("name = \"x\"\nseeds = [1]\n[base]\ncheckpoint = { dir = \"/tmp/x\" }\n").contains("checkpoint.dir")
        );
        let e = err("name = \"x\"\nseeds = [1]\n[base]\ntrain = { epochs = 0 }\n");
        assert!(e.contains("base: train.epochs"), "{e}");
    }

    #[test]
    fn names_cannot_escape_the_volume() {
        for bad in ["../up", "/abs", "a/b", "..", ".hidden", "", "sp ace"] {
            let e = err(&format!("name = \"{bad}\"\nseeds = [1]\n"));
            assert!(e.contains("name:") && e.contains("directory name"), "{bad}: {e}");
        }
        assert!(parse("name = \"ok-1.2_x\"\nseeds = [1]\n", Path::new("s.toml")).is_ok());
    }
}
