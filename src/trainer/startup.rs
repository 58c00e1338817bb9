//! Start-up latency, for BENCHMARKS.md: seconds from process start (as the kernel records it, so dynamic
//! loading of libtorch counts) to now. Printed after the first step when `SPOTRUN_PRINT_STARTUP` is set.

/// Seconds since this process started, from /proc (Linux); `None` elsewhere.
pub(crate) fn seconds_since_process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, in clock ticks since boot); fields after the parenthesised command name.
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    let hz = 100.0; // USER_HZ is 100 on every Linux ABI spotrun targets
    Some(uptime - start_ticks / hz)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn process_age_is_small_and_positive() {
        let s = super::seconds_since_process_start().unwrap();
        assert!((0.0..600.0).contains(&s), "{s}");
    }
}
