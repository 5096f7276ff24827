//! What a bench run measured, and how it is printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// What one run measured.
#[derive(Debug)]
pub struct BenchReport {
    pub elapsed: Duration,
    pub accepted: u64,
    pub rejected: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub latency_us: Histogram<u64>,
    pub freshness_us: Histogram<u64>,
    /// From STATUS showing a probe to the status view listing it.
    pub status_view_lag_us: Histogram<u64>,
    /// From a 202 to the first read with its token that answered 200.
    pub read_your_writes_us: Histogram<u64>,
    pub older_than_own_write: u64,
    pub own_write_read_errors: u64,
    pub ids_checked: usize,
    pub ids_correct: usize,
    pub settle: Duration,
    pub peak_memory_kib: Option<u64>,
}

pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits: plenty for HTTP latencies and freshness.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        writeln!(f, "duration            {seconds:.1} s")?;
        writeln!(
            f,
            "events accepted     {} ({:.0} events/s), rejected {}",
            self.accepted,
            self.accepted as f64 / seconds,
            self.rejected
        )?;
        writeln!(
            f,
            "requests            {} ({:.0} requests/s), failed {}",
            self.requests,
            self.requests as f64 / seconds,
            self.failed_requests
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "HTTP latency        p50 {}  p99 {}  max {}",
            ms(l.value_at_quantile(0.5)),
            ms(l.value_at_quantile(0.99)),
            ms(l.max())
        )?;
        let fr = &self.freshness_us;
        if fr.is_empty() {
            writeln!(f, "freshness           no probe became visible")?;
        } else {
            writeln!(
                f,
                "freshness (202→GET) p50 {}  p99 {}  max {}  ({} probes)",
                ms(fr.value_at_quantile(0.5)),
                ms(fr.value_at_quantile(0.99)),
                ms(fr.max()),
                fr.len()
            )?;
        }
        let lag = &self.status_view_lag_us;
        if !lag.is_empty() {
            writeln!(
                f,
                "status view behind STATUS  p50 {}  p99 {}  max {}  ({} probes)",
                ms(lag.value_at_quantile(0.5)),
                ms(lag.value_at_quantile(0.99)),
                ms(lag.max()),
                lag.len()
            )?;
        }
        let ryw = &self.read_your_writes_us;
        if ryw.is_empty() {
            writeln!(f, "read-your-writes    no read with a token answered 200")?;
        } else {
            writeln!(
                f,
                "read-your-writes    p50 {}  p99 {}  max {}  ({} reads)",
                ms(ryw.value_at_quantile(0.5)),
                ms(ryw.value_at_quantile(0.99)),
                ms(ryw.max()),
                ryw.len()
            )?;
        }
        writeln!(
            f,
            "older than own write {} (reads with a token answered 200 with an older state; must be 0)",
            self.older_than_own_write
        )?;
        writeln!(
            f,
            "own-write read errors {} (reads with a token answered neither 200 nor 409, e.g. 503)",
            self.own_write_read_errors
        )?;
        writeln!(f, "STATUS correctness  {}/{} ids at their newest accepted version (checked within {:.1} s)", self.ids_correct, self.ids_checked, self.settle.as_secs_f64())?;
        match self.peak_memory_kib {
            Some(kib) => write!(
                f,
                "serve peak memory   {:.1} MiB (VmHWM)",
                kib as f64 / 1024.0
            ),
            None => write!(f, "serve peak memory   not measured (pass --serve-pid)"),
        }
    }
}
