//! `spotrun k8s`: a ConfigMap holding the sweep (its base config inlined) and an Indexed Job running one pod per
//! worker process (a fused group of runs, or one run): `completionMode: Indexed`, `JOB_COMPLETION_INDEX` →
//! `spotrun worker --group`, the volume from a PVC,
//! `backoffLimitPerIndex` for failures, and a `podFailurePolicy` under which preemption (exit 128 + SIGTERM etc.,
//! a `DisruptionTarget` condition) and "held by another worker" (75) are retried without counting.
use std::fmt::Write as _;

use super::RETRY_EXIT_CODES;
use crate::sweep::LoadedSweep;

#[derive(Debug, Clone)]
pub(crate) struct K8sOptions {
    pub image: String,
    pub pvc: String,
    /// Where the PVC is mounted in the pod; the sweep volume is `MOUNT/sweeps`.
    pub mount: String,
    pub parallelism: usize,
    /// GPUs per pod; `None`: 1 when the sweep trains on a GPU (`train.device` not `cpu`), else 0.
    pub gpus_per_pod: Option<usize>,
    pub cpus: usize,
    pub memory: String,
    /// Failed attempts per index before that index fails (`backoffLimitPerIndex`); `None`: the sweep's retries.
    pub backoff_per_index: Option<u32>,
    pub grace_seconds: u32,
    pub namespace: Option<String>,
}

/// Refuses options that would render a manifest Kubernetes rejects or that silently means something else.
pub(crate) fn check(o: &K8sOptions) -> Result<(), String> {
    if o.parallelism == 0 || o.cpus == 0 {
        return Err(format!("--{} must be at least 1", if o.parallelism == 0 { "parallelism" } else { "cpus" }));
    }
    if o.grace_seconds == 0 {
        return Err("--grace must be at least 1 second: the pod's time to checkpoint after SIGTERM".into());
    }
    if !is_quantity(&o.memory) {
        return Err(format!("--memory {:?} is not a Kubernetes quantity (e.g. 16Gi, 512Mi, 8G)", o.memory));
    }
    if !o.mount.starts_with('/') || o.mount.trim_end_matches('/').is_empty() {
        return Err(format!("--mount {:?} must be an absolute path other than / (e.g. /data)", o.mount));
    }
    if let Some(ns) = o.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(format!(
            "--namespace {ns:?} is not a valid namespace (lowercase letters, digits and '-', at most 63, starting \
             and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// `16Gi`, `512Mi`, `8G`, `1.5Gi`, `1000`: a number with an optional binary or decimal suffix.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let number = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit());
    number && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"].contains(&suffix)
}

/// A DNS-1123 label (what a namespace must be).
fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| ok(c) || c == '-')
        && s.chars().next().is_some_and(ok)
        && s.chars().last().is_some_and(ok)
}

/// A YAML node: scalars are emitted as given (already quoted where needed).
enum Y {
    S(String),
    M(Vec<(&'static str, Y)>),
    L(Vec<Y>),
}

fn s(v: impl std::fmt::Display) -> Y {
    Y::S(v.to_string())
}

/// A double-quoted YAML string (JSON string syntax is valid YAML).
fn q(v: &str) -> Y {
    let json = serde_json::Value::String(v.to_string()).to_string();
    // JSON leaves DEL and C1 controls raw; YAML double-quoted strings may not contain them.
    Y::S(
        json.chars()
            .map(|c| if ('\u{7f}'..='\u{9f}').contains(&c) { format!("\\x{:02x}", c as u32) } else { c.to_string() })
            .collect(),
    )
}

fn emit(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::S(v) => {
            let _ = writeln!(out, " {v}");
        }
        Y::M(entries) => {
            for (k, v) in entries {
                match v {
                    Y::S(x) => {
                        let _ = writeln!(out, "{pad}{k}: {x}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}:");
                        emit(v, indent + 2, out);
                    }
                }
            }
        }
        Y::L(items) => {
            for it in items {
                match it {
                    Y::S(x) => {
                        let _ = writeln!(out, "{pad}- {x}");
                    }
                    _ => {
                        let mut inner = String::new();
                        emit(it, indent + 2, &mut inner);
                        // "- " replaces the first line's indentation
                        let _ = write!(out, "{pad}- {}", inner.trim_start());
                    }
                }
            }
        }
    }
}

/// A label value: at most 63 characters of letters, digits, '-', '_', '.', starting and ending alphanumeric.
pub(crate) fn label_value(s: &str) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// A DNS-1123 label for the Job: lowercase letters, digits and '-', at most 52 characters, so that the pods'
/// hostnames (`<job>-<index>`) stay within 63. A name that had to be changed to fit (other characters, upper
/// case, too long) gets 6 hex digits of a hash of the original, so two sweeps never share a Job name
/// (`LR_width` and `lr-width` would otherwise both be `lr-width`).
pub(crate) fn dns_name(s: &str) -> String {
    use sha2::{Digest, Sha256};
    const MAX: usize = 52;
    let clean: String =
        s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let trimmed = clean.trim_matches('-');
    if trimmed == s && s.len() <= MAX {
        return s.to_string();
    }
    let tag: String = Sha256::digest(s.as_bytes()).iter().take(3).map(|b| format!("{b:02x}")).collect();
    let head: String = trimmed.chars().take(MAX - 7).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        format!("s-{tag}")
    } else {
        format!("{head}-{tag}")
    }
}

/// The manifests: a ConfigMap with the self-contained sweep, then the Indexed Job.
pub(crate) fn render(ctx: &LoadedSweep, sweep_text: &str, o: &K8sOptions) -> String {
    let n = ctx.engine_tasks();
    let name = dns_name(&format!("spotrun-{}", ctx.sweep.name));
    let meta = |suffix: &str| {
        let mut m = vec![("name", s(format!("{name}{suffix}")))];
        if let Some(ns) = &o.namespace {
            m.push(("namespace", q(ns)));
        }
        m.push((
            "labels",
            Y::M(vec![("app.kubernetes.io/name", s("spotrun")), ("spotrun/sweep", q(&label_value(&ctx.sweep.name)))]),
        ));
        Y::M(m)
    };
    let volume = format!("{}/sweeps", o.mount.trim_end_matches('/'));
    let command = format!(
        "exec spotrun worker /etc/spotrun/sweep.toml {} --volume {} --threads {}",
        super::worker_selector(ctx, "JOB_COMPLETION_INDEX"),
        super::shell_quote(&volume),
        o.cpus
    );
    let mut limits = vec![("cpu", q(&o.cpus.to_string())), ("memory", q(&o.memory))];
    let gpus = o.gpus_per_pod.unwrap_or(usize::from(ctx.runs.iter().any(|r| r.config.train.device != "cpu")));
    if gpus > 0 {
        limits.push(("nvidia.com/gpu", s(gpus)));
    }
    let config_map = Y::M(vec![
        ("apiVersion", s("v1")),
        ("kind", s("ConfigMap")),
        ("metadata", meta("-sweep")),
        ("data", Y::M(vec![("sweep.toml", q(sweep_text))])),
    ]);
    let job = Y::M(vec![
        ("apiVersion", s("batch/v1")),
        ("kind", s("Job")),
        ("metadata", meta("")),
        (
            "spec",
            Y::M(vec![
                ("completionMode", s("Indexed")),
                ("completions", s(n)),
                ("parallelism", s(o.parallelism.min(n.max(1)))),
                ("backoffLimitPerIndex", s(o.backoff_per_index.unwrap_or(ctx.sweep.retries))),
                ("maxFailedIndexes", s(n)),
                ("podFailurePolicy", failure_policy()),
                ("template", pod_template(o, &name, &command, limits)),
            ]),
        ),
    ]);
    let mut out = format!(
        "# spotrun sweep '{}': {n} runs as a Kubernetes Indexed Job. Written by `spotrun k8s`; apply with\n\
         #   kubectl apply -f THIS_FILE\n\
         # The PVC '{}' must exist (ReadWriteMany if pods may land on different nodes); results appear in\n\
         # {volume}/{}/ (`spotrun status` there). The image needs spotrun and libtorch (see README).\n",
        ctx.sweep.name,
        o.pvc.replace(['\n', '\r'], " "),
        ctx.sweep.name
    );
    emit(&config_map, 0, &mut out);
    out.push_str("---\n");
    emit(&job, 0, &mut out);
    out
}

/// Which pod failures count against an index: disruptions and preemptions never do, bad input fails it at once.
fn failure_policy() -> Y {
    let exit_rule = |action: &str, codes: Vec<Y>| {
        Y::M(vec![
            ("action", s(action)),
            ("onExitCodes", Y::M(vec![("containerName", s("worker")), ("operator", s("In")), ("values", Y::L(codes))])),
        ])
    };
    Y::M(vec![(
        "rules",
        Y::L(vec![
            // Node drain, spot reclaim, preemption by a higher-priority pod: not the run's fault.
            Y::M(vec![
                ("action", s("Ignore")),
                ("onPodConditions", Y::L(vec![Y::M(vec![("type", s("DisruptionTarget"))])])),
            ]),
            // Preempted (checkpointed, 128 + signal) or held by another worker (75): retry freely.
            exit_rule("Ignore", RETRY_EXIT_CODES.iter().map(s).collect()),
            // Bad input: retrying cannot help.
            exit_rule("FailIndex", vec![s(2)]),
        ]),
    )])
}

/// The pod each index runs: one `spotrun worker` container with the volume and the sweep mounted.
fn pod_template(o: &K8sOptions, name: &str, command: &str, limits: Vec<(&'static str, Y)>) -> Y {
    Y::M(vec![
        ("metadata", Y::M(vec![("labels", Y::M(vec![("app.kubernetes.io/name", s("spotrun"))]))])),
        (
            "spec",
            Y::M(vec![
                ("restartPolicy", s("Never")),
                ("terminationGracePeriodSeconds", s(o.grace_seconds)),
                (
                    "containers",
                    Y::L(vec![Y::M(vec![
                        ("name", s("worker")),
                        ("image", q(&o.image)),
                        ("command", Y::L(vec![q("/bin/sh"), q("-c"), q(command)])),
                        ("resources", Y::M(vec![("limits", Y::M(limits))])),
                        (
                            "volumeMounts",
                            Y::L(vec![
                                Y::M(vec![("name", s("volume")), ("mountPath", q(&o.mount))]),
                                Y::M(vec![
                                    ("name", s("sweep")),
                                    ("mountPath", q("/etc/spotrun")),
                                    ("readOnly", s(true)),
                                ]),
                            ]),
                        ),
                    ])]),
                ),
                (
                    "volumes",
                    Y::L(vec![
                        Y::M(vec![
                            ("name", s("volume")),
                            ("persistentVolumeClaim", Y::M(vec![("claimName", q(&o.pvc))])),
                        ]),
                        Y::M(vec![
                            ("name", s("sweep")),
                            ("configMap", Y::M(vec![("name", s(format!("{name}-sweep")))])),
                        ]),
                    ]),
                ),
            ]),
        ),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn dns_names() {
        assert_eq!(super::dns_name("spotrun-lr-width-v2"), "spotrun-lr-width-v2");
        let a = super::dns_name("spotrun-LR_width.v2");
        let b = super::dns_name("spotrun-lr-width-v2");
        assert!(a.starts_with("spotrun-lr-width-v2-") && a.len() == "spotrun-lr-width-v2".len() + 7, "{a}");
        assert_ne!(a, b, "names that only sanitising made equal stay apart");
        let (long1, long2) = (format!("{}1", "x".repeat(80)), format!("{}2", "x".repeat(80)));
        assert!(super::dns_name(&long1).len() <= 52);
        assert_ne!(super::dns_name(&long1), super::dns_name(&long2));
        assert_eq!(super::dns_name("__"), format!("s-{}", &super::dns_name("__")[2..]));
        for n in [a, super::dns_name(&long1), super::dns_name("__")] {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
        assert_eq!(super::label_value("_a.b-"), "a.b");
        assert_eq!(super::label_value(&"y".repeat(100)).len(), 63);
    }
}
