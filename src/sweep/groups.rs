//! Fused groups: which runs of a sweep train together as one fused model (`fuse = "auto"`), as a pure function
//! of the expanded runs, so the launcher, every worker and every engine computes the same groups from the same
//! sweep file. Runs fuse when `trainer::fusion_key` gives them the same key; a group holds at most as
//! many runs as fit a fixed memory budget (and [`MAX_GROUP`]). Imports `trainer` (the key) and `model` (sizes).
use super::expand::PlannedRun;
use super::spec::Fuse;
use crate::config::{Config, DataSource};

/// The most runs in one fused group.
pub const MAX_GROUP: usize = 64;
/// What one group's fused model may take (weights, gradients, optimizer state and activations), in bytes.
pub const GROUP_BYTES: u64 = 2 << 30;

/// Runs trained by one worker process: fused when there are several, alone otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Indices into the sweep's runs, ascending.
    pub runs: Vec<usize>,
    /// Why a lone run is not fused (`None` when it is fused, or when `fuse = "off"`).
    pub alone: Option<String>,
}

impl Group {
    pub fn fused(&self) -> bool {
        self.runs.len() > 1
    }
}

/// The groups of `runs`, ordered by their first run. With `Fuse::Off` every run is its own group.
pub fn plan(runs: &[PlannedRun], fuse: Fuse) -> Vec<Group> {
    let mut groups: Vec<(Option<String>, Group)> = Vec::new();
    for r in runs {
        let key = match fuse {
            Fuse::Off => Err(None),
            Fuse::Auto => crate::trainer::fusion_key(&r.config).map_err(Some),
        };
        match key {
            Ok(k) => {
                let cap = capacity(&r.config);
                let open = groups.iter_mut().rev().find(|(gk, g)| gk.as_ref() == Some(&k) && g.runs.len() < cap);
                match open {
                    Some((_, g)) => g.runs.push(r.index),
                    None => groups.push((Some(k), Group { runs: vec![r.index], alone: None })),
                }
            }
            Err(why) => groups.push((None, Group { runs: vec![r.index], alone: why })),
        }
    }
    let mut out: Vec<Group> = groups.into_iter().map(|(_, g)| g).collect();
    for g in out.iter_mut().filter(|g| g.runs.len() == 1 && g.alone.is_none() && fuse == Fuse::Auto) {
        g.alone = Some("no other run of the sweep shares its fusion key".into());
    }
    out
}

/// Part `k` of `n` (0-based) of a group's `runs`: contiguous, sizes differing by at most one, none empty while
/// `n <= runs.len()`. The launcher splits a fused group this way when it has more slots than groups, and the
/// worker it hands `part G K N` to finds the same runs.
pub fn part(runs: &[usize], k: usize, n: usize) -> &[usize] {
    let n = n.clamp(1, runs.len().max(1));
    let (base, extra) = (runs.len() / n, runs.len() % n);
    let start = (k * base + k.min(extra)).min(runs.len());
    let len = base + usize::from(k < extra);
    &runs[start..(start + len).min(runs.len())]
}

/// The jobs for `devices` devices: each run alone, each fused group whole, or, when there are fewer groups than
/// devices, each fused group in as many parts as it takes to fill them (each part still fused; a CPU slot's
/// threads are better spent on its own part than shared by one big group). The `--per-gpu K` slots of one GPU
/// never split a group: its runs stay one model, with one copy of the data on the card. As (what the worker is
/// told, its runs).
pub fn jobs(groups: &[Group], devices: usize) -> Vec<(String, Vec<usize>)> {
    let split = if groups.len() < devices { devices.div_ceil(groups.len().max(1)) } else { 1 };
    let mut out = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        match group.runs.as_slice() {
            [i] => out.push((format!("index {i}"), vec![*i])),
            runs if split > 1 => {
                let n = split.min(runs.len());
                for k in 0..n {
                    out.push((format!("part {g} {k} {n}"), part(runs, k, n).to_vec()));
                }
            }
            runs => out.push((format!("group {g}"), runs.to_vec())),
        }
    }
    out
}

/// The groups as `--dry-run` prints them: one line per worker process, saying why a lone run is not fused.
pub fn describe(groups: &[Group], fuse: Fuse) -> String {
    let fused = groups.iter().filter(|g| g.fused()).count();
    let mut out = match fuse {
        Fuse::Off => format!("fuse = \"off\": {} jobs, one run each\n", groups.len()),
        Fuse::Auto => format!(
            "fuse = \"auto\": {} jobs ({fused} fused groups, {} runs alone); `--no-fuse` trains every run alone\n",
            groups.len(),
            groups.len() - fused
        ),
    };
    if fuse == Fuse::Off {
        return out;
    }
    for (g, group) in groups.iter().enumerate() {
        let runs: Vec<String> = group.runs.iter().map(usize::to_string).collect();
        let what = match &group.alone {
            Some(why) => format!("alone: {why}"),
            None => format!("fused, {} runs", group.runs.len()),
        };
        out.push_str(&format!("group {g:>3}: runs {}  ({what})\n", runs.join(",")));
    }
    out
}

/// How many runs like `cfg` one group holds: [`GROUP_BYTES`] over one run's estimated footprint (when the config
/// says the data's shape), at most [`MAX_GROUP`].
fn capacity(cfg: &Config) -> usize {
    let inputs =
        cfg.model.inputs.or((cfg.data.source == DataSource::Synthetic).then_some(cfg.data.synthetic.features as i64));
    let classes =
        cfg.model.classes.or((cfg.data.source == DataSource::Synthetic).then_some(cfg.data.synthetic.classes as i64));
    let (Some(inputs), Some(classes)) = (inputs, classes) else { return MAX_GROUP };
    let params = crate::model::param_count(&cfg.model, &[inputs], classes) as u64;
    let widths: u64 = cfg.model.hidden.iter().map(|&h| h.max(0) as u64).sum::<u64>() + (inputs + classes) as u64;
    let bytes = 4 * (4 * params + 3 * cfg.train.batch_size as u64 * widths);
    (GROUP_BYTES / bytes.max(1)).clamp(1, MAX_GROUP as u64) as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(index: usize, f: impl FnOnce(&mut Config)) -> PlannedRun {
        let mut config = Config::default();
        config.data.synthetic.features = 16;
        config.model.hidden = vec![8];
        f(&mut config);
        PlannedRun { index, id: format!("{index:08}"), overrides: Vec::new(), config }
    }

    #[test]
    fn runs_differing_in_per_run_keys_fuse_and_the_rest_stay_apart() {
        let runs = vec![
            run(0, |c| c.optim.lr = 0.1),
            run(1, |c| c.model.hidden = vec![9]),
            run(2, |c| {
                c.optim.lr = 0.01;
                c.train.seed = 7;
                c.optim.weight_decay = 0.5
            }),
            run(3, |c| c.model.dropout = 0.1),
            run(4, |c| c.train.epochs = 9),
        ];
        let g = plan(&runs, Fuse::Auto);
        let members: Vec<Vec<usize>> = g.iter().map(|g| g.runs.clone()).collect();
        assert_eq!(members, [vec![0, 2, 4], vec![1], vec![3]]);
        assert!(g[1].alone.as_deref().unwrap().contains("no other run"));
        assert!(g[2].alone.as_deref().unwrap().contains("dropout"));
        let off = plan(&runs, Fuse::Off);
        assert_eq!(off.len(), 5);
        assert!(off.iter().all(|g| g.alone.is_none() && !g.fused()));
    }

    #[test]
    fn parts_of_a_group_cover_it_once_in_order() {
        let runs: Vec<usize> = (10..17).collect();
        for n in 1..=7 {
            let parts: Vec<&[usize]> = (0..n).map(|k| part(&runs, k, n)).collect();
            assert_eq!(parts.concat(), runs, "{n} parts");
            assert!(parts.iter().all(|p| !p.is_empty() && p.len().abs_diff(runs.len() / n) <= 1), "{parts:?}");
        }
        assert_eq!(part(&runs, 9, 3), &[] as &[usize], "past the last part: nothing");
    }

    #[test]
    fn groups_are_capped_by_their_memory_budget() {
        let big = |c: &mut Config| {
            c.data.synthetic.features = 4096;
            c.model.hidden = vec![1024, 1024];
        };
        let cap = capacity(&run(0, big).config);
        assert!((2..MAX_GROUP).contains(&cap), "{cap}");
        let runs: Vec<PlannedRun> = (0..cap + 1)
            .map(|i| {
                run(i, |c| {
                    big(c);
                    c.train.seed = i as u64
                })
            })
            .collect();
        let g = plan(&runs, Fuse::Auto);
        assert_eq!(g.iter().map(|g| g.runs.len()).collect::<Vec<_>>(), [cap, 1]);
        assert_eq!(capacity(&run(0, |_| {}).config), MAX_GROUP);
    }
}
