//! `spotrun slurm`: an sbatch script for a job array with one task per worker process: a fused group of runs, or
//! one run (every run alone with `fuse = "off"` or `--no-fuse`).
//!
//! Each task runs `spotrun worker SWEEP --group $SLURM_ARRAY_TASK_ID` in the background of the batch shell (for a
//! scheduled sweep, `--next`: every task is a generic worker of the study on the volume).
//! `#SBATCH --signal=B:USR1@GRACE` makes Slurm signal that shell GRACE seconds before the time limit (and
//! `scancel --batch --signal=USR1`, or partition preemption with `preempt_send_user_signal`, do the same); the
//! shell passes the signal to the worker, which checkpoints and exits 128 + signal, and the shell then requeues
//! **only its own task** (`scontrol requeue JOB_TASK`). The requeued task resumes from the checkpoint. A
//! finished task exits 0; a failed one is requeued until the worker records `failed.json` (after `retries`).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{shell_quote, RETRY_EXIT_CODES};
use crate::sweep::{LoadedSweep, SweepError};

/// A task requeued this many times (preemptions and failures together) stops requeueing itself.
pub(crate) const MAX_RESTARTS: u32 = 50;

#[derive(Debug, Clone)]
pub(crate) struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: usize,
    pub cpus_per_task: usize,
    /// `--time` as Slurm takes it, e.g. `4:00:00`.
    pub time: Option<String>,
    /// Tasks running at once (`--array=0-N%MAX`); all of them when `None`.
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit at which USR1 is sent.
    pub grace_seconds: u32,
    /// Extra `#SBATCH` lines, e.g. `--account=proj`.
    pub extra: Vec<String>,
}

/// Seconds in a Slurm time limit (`--time`): `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; `None` for no limit
/// (`0`, `UNLIMITED`, `INFINITE`). `Err` says what Slurm would reject.
pub(crate) fn time_seconds(t: &str) -> Result<Option<u64>, String> {
    let bad =
        || format!("\"{t}\" is not a Slurm time limit; use minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S (e.g. 4:00:00)");
    let t = t.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let parts = rest.split(':').map(num).collect::<Result<Vec<u64>, String>>()?;
    // (days, hours, minutes, seconds), in u128 so no input can overflow.
    let (d, h, m, s) = match (days, parts.as_slice()) {
        (None, [m]) => (0, 0, *m, 0),
        (None, [m, s]) => (0, 0, *m, *s),
        (None, [h, m, s]) => (0, *h, *m, *s),
        (Some(d), [h]) => (d, *h, 0, 0),
        (Some(d), [h, m]) => (d, *h, *m, 0),
        (Some(d), [h, m, s]) => (d, *h, *m, *s),
        _ => return Err(bad()),
    };
    let secs = u128::from(d) * 86400 + u128::from(h) * 3600 + u128::from(m) * 60 + u128::from(s);
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok((secs > 0).then_some(secs))
}

/// The options Slurm would reject or that defeat the requeue: a malformed `--time`, or a grace period that is not
/// shorter than the time limit (USR1 would come before the task could train at all).
pub(crate) fn check(o: &SlurmOptions) -> Result<(), String> {
    if o.max_parallel == Some(0) {
        return Err("--max-parallel must be at least 1 (leave it out to run every task at once)".into());
    }
    if o.grace_seconds == 0 {
        return Err("--grace must be at least 1 second: it is when the checkpoint signal (USR1) comes".into());
    }
    if o.cpus_per_task == 0 {
        return Err("--cpus-per-task must be at least 1".into());
    }
    if let Some(e) = o.extra.iter().find(|e| !e.starts_with('-') || e.trim() != e.as_str() || e.contains('\n')) {
        return Err(format!("--sbatch {e:?}: give an sbatch option with its dashes, e.g. --sbatch=--account=myproj"));
    }
    let Some(t) = &o.time else { return Ok(()) };
    match time_seconds(t).map_err(|e| format!("--time: {e}"))? {
        Some(limit) if u64::from(o.grace_seconds) >= limit => Err(format!(
            "--grace {} must be shorter than --time {t} ({limit} s): the checkpoint signal comes --grace seconds \
             before the limit",
            o.grace_seconds
        )),
        _ => Ok(()),
    }
}

/// The sbatch script. `spotrun`, `sweep` and `volume` should be absolute paths the compute nodes can see.
/// Where `spotrun slurm` writes the script: `--output`, else `VOLUME/<name>/slurm/<name>.sbatch`.
pub(crate) fn script_path(ctx: &LoadedSweep, out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| ctx.layout.root.join("slurm").join(format!("{}.sbatch", ctx.sweep.name)))
}

/// The sbatch script (to be written to `script`). `spotrun`, `sweep` and `volume` should be absolute paths the
/// compute nodes can see.
pub(crate) fn render(
    ctx: &LoadedSweep,
    o: &SlurmOptions,
    spotrun: &Path,
    sweep: &Path,
    volume: &Path,
    script: &Path,
) -> String {
    let mut s = header(ctx, o, sweep, script);
    script_body(&mut s, ctx, spotrun, sweep, volume);
    s
}

/// The comment block and the `#SBATCH` lines.
fn header(ctx: &LoadedSweep, o: &SlurmOptions, sweep: &Path, script: &Path) -> String {
    let (n, runs) = (ctx.engine_tasks(), ctx.runs.len());
    let name = &ctx.sweep.name;
    let logs = ctx.layout.root.join("slurm");
    let mut s = format!(
        "#!/bin/bash\n\
         # spotrun sweep '{name}': {runs} runs in {n} array tasks (fused groups or single runs). Written by\n\
         # `spotrun slurm`; submit with\n\
         #   sbatch {script}\n\
         # Task I trains group I of `spotrun sweep {sweep_q} --dry-run`. On USR1 (time limit - {grace} s, or\n\
         # `scancel --batch --signal=USR1 JOB_I`) the worker checkpoints and this task requeues itself only.\n\
         #SBATCH --job-name=spotrun-{name}\n\
         #SBATCH --array=0-{last}{max}\n\
         #SBATCH --requeue\n\
         #SBATCH --signal=B:USR1@{grace}\n\
         #SBATCH --open-mode=append\n\
         #SBATCH --output={logs}/%A_%a.out\n\
         #SBATCH --cpus-per-task={cpus}\n",
        script = shell_quote(&script.display().to_string()),
        sweep_q = shell_quote(&sweep.display().to_string()),
        last = n.saturating_sub(1),
        max = o.max_parallel.map_or(String::new(), |m| format!("%{m}")),
        grace = o.grace_seconds,
        logs = logs.display(),
        cpus = o.cpus_per_task,
    );
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if o.gpus_per_task > 0 {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={}", o.gpus_per_task);
    }
    if let Some(t) = &o.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    for e in &o.extra {
        let _ = writeln!(s, "#SBATCH {e}");
    }
    s
}

/// The shell that runs one array task: the worker, signal forwarding, and the requeue decision.
fn script_body(s: &mut String, ctx: &LoadedSweep, spotrun: &Path, sweep: &Path, volume: &Path) {
    let groups: Vec<String> = match ctx.sweep.schedule {
        // Generic study workers: no runs of their own (a failed one is requeued until its restarts run out).
        Some(_) => vec!["\"study\"".to_string(); ctx.engine_tasks()],
        None => ctx
            .groups
            .iter()
            .map(|g| format!("\"{}\"", g.runs.iter().map(|&i| ctx.runs[i].id.as_str()).collect::<Vec<_>>().join(" ")))
            .collect(),
    };
    let select = super::worker_selector(ctx, "SLURM_ARRAY_TASK_ID");
    let _ = write!(
        *s,
        r#"
set -uo pipefail
spotrun={spotrun}
sweep={sweep}
volume={volume}
runs={runs}
groups=({groups})
task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
read -r -a members <<< "${{groups[$SLURM_ARRAY_TASK_ID]}}"
echo "spotrun: task $task, ${{#members[@]}} run(s) from ${{members[0]:0:8}}, restart ${{SLURM_RESTART_COUNT:-0}}, on $(hostname)"

# Slurm signals this shell (B:); pass the signal on and keep waiting for the worker's own exit code.
worker=
trapped=0
trap 'trapped=1; [ -z "$worker" ] || kill -USR1 "$worker" 2>/dev/null' USR1
trap 'trapped=1; [ -z "$worker" ] || kill -TERM "$worker" 2>/dev/null' TERM
"$spotrun" worker "$sweep" {select} --volume "$volume" --threads "${{SLURM_CPUS_PER_TASK:-1}}" &
worker=$!
[ "$trapped" = 0 ] || kill -USR1 "$worker" 2>/dev/null  # a signal that came before the worker existed
rc=0; wait "$worker" || rc=$?
while [ "$trapped" = 1 ]; do
  trapped=0
  again=0; wait "$worker" 2>/dev/null || again=$?
  [ "$again" = 127 ] || rc=$again
done

requeue() {{
  if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {max_restarts} ]; then
    echo "spotrun: task $task was requeued {max_restarts} times; giving up (exit $rc)"
    exit "$rc"
  fi
  echo "spotrun: $1; requeueing task $task"
  scontrol requeue "$task" || {{ echo "spotrun: scontrol requeue $task failed" >&2; exit "$rc"; }}
  exit 0
}}
case "$rc" in
  0) exit 0 ;;
  {retry}) requeue "worker exited $rc (preempted or held elsewhere)" ;;
  2|126|127) echo "spotrun: worker exited $rc: bad input or no spotrun binary; not retrying"; exit "$rc" ;;
  *)
    left=0
    for id in "${{members[@]}}"; do
      [ -f "$runs/$id/failed.json" ] || [ -f "$runs/$id/done.json" ] || left=1
    done
    if [ "$left" = 0 ]; then
      echo "spotrun: every run of this task is done or failed for good (see failed.json in $runs/<run id>)"
      exit "$rc"
    fi
    requeue "worker failed ($rc); retrying" ;;
esac
"#,
        spotrun = shell_quote(&spotrun.display().to_string()),
        sweep = shell_quote(&sweep.display().to_string()),
        volume = shell_quote(&volume.display().to_string()),
        runs = shell_quote(&ctx.layout.root.join("runs").display().to_string()),
        groups = groups.join(" "),
        retry = RETRY_EXIT_CODES.map(|c| c.to_string()).join("|"),
        max_restarts = MAX_RESTARTS,
    );
}

/// Writes the script under `VOLUME/<name>/slurm/` (or `out`) and returns its path.
pub(crate) fn write(ctx: &LoadedSweep, text: &str, path: PathBuf) -> Result<PathBuf, SweepError> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(ctx.layout.root.join("slurm")).map_err(|e| SweepError::io(&dir, e))?;
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    crate::checkpoint::write_atomic(&path, text.as_bytes()).map_err(|e| SweepError::io(&path, e))?;
    Ok(path)
}

/// `sbatch --parsable SCRIPT`; returns the job id.
pub(crate) fn submit(script: &Path) -> Result<String, SweepError> {
    let out = std::process::Command::new("sbatch").arg("--parsable").arg(script).output().map_err(|e| {
        SweepError::Usage(format!(
            "cannot run sbatch ({e}): is this a Slurm login node? The script is {}",
            script.display()
        ))
    })?;
    if !out.status.success() {
        return Err(SweepError::RunFailed(format!(
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim().split(';').next().unwrap_or("").to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn slurm_time_limits_parse_like_sbatch() {
        use super::time_seconds;
        assert_eq!(time_seconds("30"), Ok(Some(1800)));
        assert_eq!(time_seconds("30:15"), Ok(Some(1815)));
        assert_eq!(time_seconds("4:00:00"), Ok(Some(14400)));
        assert_eq!(time_seconds("1-2"), Ok(Some(93600)));
        assert_eq!(time_seconds("1-2:30"), Ok(Some(95400)));
        assert_eq!(time_seconds("1-0:0:5"), Ok(Some(86405)));
        assert_eq!(time_seconds("UNLIMITED"), Ok(None));
        assert_eq!(time_seconds("0"), Ok(None));
        assert!(time_seconds("18446744073709551615-0").is_err(), "overflow is an error, not a wrap");
        for bad in ["abc", "", "1:2:3:4", "-1", "1-", "4h", "1-2-3", "1:-2"] {
            assert!(time_seconds(bad).is_err(), "{bad:?} accepted");
        }
    }
}
