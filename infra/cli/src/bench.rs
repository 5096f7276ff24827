//! `tidemark bench`: a load generator for a running `tidemark serve` (in memory or against
//! LocalStack). C clients post events over HTTP for a duration or an event count while a prober
//! measures freshness (time from a 202 to the event being visible in `GET /messages/{id}`). At the
//! end every id is checked against its newest accepted version, and the serve process's peak
//! memory is read from /proc when its pid is given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tidemark::domain::limits::MAX_BATCH_EVENTS;
use tidemark::domain::{Clock, EventTime, SequenceNumber, SystemClock};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub target: String,
    pub clients: usize,
    pub duration: Option<Duration>,
    pub events: Option<u64>,
    /// Events per request; 1 uses `POST /events`, more uses `POST /events/batch`.
    pub batch_size: usize,
    pub ids: usize,
    /// Pause between freshness probes.
    pub probe_interval: Duration,
    /// How long the final correctness check may wait for STATUS to catch up.
    pub settle_timeout: Duration,
    pub serve_pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0} did not answer: is `tidemark serve` running there? ({1})")]
    Unreachable(String, reqwest::Error),
    #[error("batch size must be 1 to {MAX_BATCH_EVENTS}")]
    BatchSize,
}

type Version = (EventTime, SequenceNumber);

#[derive(Default)]
struct Totals {
    accepted: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
}

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
    pub ids_checked: usize,
    pub ids_correct: usize,
    pub settle: Duration,
    pub peak_memory_kib: Option<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits: plenty for HTTP latencies and freshness.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn micros(d: Duration) -> u64 {
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

pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    if options.batch_size == 0 || options.batch_size > MAX_BATCH_EVENTS {
        return Err(BenchError::BatchSize);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients * 2)
        .build()
        .map_err(|e| BenchError::Unreachable(options.target.clone(), e))?;
    http.get(format!("{}/shards", options.target))
        .send()
        .await
        .map_err(|e| BenchError::Unreachable(options.target.clone(), e))?;

    let totals = Arc::new(Totals::default());
    let newest: Arc<Mutex<HashMap<usize, Version>>> = Arc::default();
    let latency = Arc::new(Mutex::new(histogram()));
    let running = Arc::new(AtomicBool::new(true));
    let progress = match options.events {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new(options.duration.map_or(0, |d| d.as_secs())),
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients)
        .map(|client| {
            let (http, totals, newest, latency, running, options) =
                (http.clone(), totals.clone(), newest.clone(), latency.clone(), running.clone(), options.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(client as u64);
                let mut local = histogram();
                while running.load(Ordering::Relaxed) {
                    if let Some(limit) = options.events {
                        let claimed = totals.accepted.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed);
                        if claimed >= limit {
                            break;
                        }
                    }
                    let now = SystemClock.now();
                    let ids: Vec<usize> = (0..options.batch_size).map(|_| rng.usize(0..options.ids)).collect();
                    let events: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"id": format!("bench-{id}"), "status": format!("s{}", rng.u32(..)), "timestamp": now.to_rfc3339()}))
                        .collect();
                    let (url, body) = if options.batch_size == 1 {
                        (format!("{}/events", options.target), events[0].clone())
                    } else {
                        (format!("{}/events/batch", options.target), json!({"events": events}))
                    };
                    let sent = Instant::now();
                    let answer = http.post(url).json(&body).send().await;
                    let _ = local.record(micros(sent.elapsed()));
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    let answer: Option<Value> = match answer {
                        Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 207 => r.json().await.ok(),
                        _ => None,
                    };
                    let Some(answer) = answer else {
                        totals.failed_requests.fetch_add(1, Ordering::Relaxed);
                        totals.rejected.fetch_add(ids.len() as u64, Ordering::Relaxed);
                        continue;
                    };
                    let results = if options.batch_size == 1 { vec![answer] } else { answer["results"].as_array().cloned().unwrap_or_default() };
                    let mut newest = newest.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, result) in ids.iter().zip(&results) {
                        match result["sequence_number"].as_str().and_then(|s| SequenceNumber::parse(s).ok()) {
                            Some(seq) => {
                                totals.accepted.fetch_add(1, Ordering::Relaxed);
                                let version = (now, seq);
                                let entry = newest.entry(*id).or_insert_with(|| version.clone());
                                if version > *entry {
                                    *entry = version;
                                }
                            }
                            None => {
                                totals.rejected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                let _ = latency.lock().unwrap_or_else(|p| p.into_inner()).add(&local);
            })
        })
        .collect();

    // The prober: a fresh id every interval, timed from its 202 to its first visible read. At
    // most PROBES_IN_FLIGHT at once (a probe is skipped while they are all busy) and polling
    // backs off from 2 to 25 ms, so probing never becomes a load of its own on a slow backend.
    const PROBES_IN_FLIGHT: usize = 8;
    let freshness = Arc::new(Mutex::new(histogram()));
    let prober = {
        let (http, running, freshness, options) = (
            http.clone(),
            running.clone(),
            freshness.clone(),
            options.clone(),
        );
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(PROBES_IN_FLIGHT));
            let mut probe = 0u64;
            let mut in_flight = Vec::new();
            while running.load(Ordering::Relaxed) {
                if let Ok(permit) = permits.clone().try_acquire_owned() {
                    probe += 1;
                    let (http, freshness, target) =
                        (http.clone(), freshness.clone(), options.target.clone());
                    in_flight.push(tokio::spawn(async move {
                        let _permit = permit;
                        let id = format!("probe-{}-{probe}", std::process::id());
                        let body = json!({"id": id, "status": "probe"});
                        let Ok(response) = http
                            .post(format!("{target}/events"))
                            .json(&body)
                            .send()
                            .await
                        else {
                            return;
                        };
                        if response.status().as_u16() != 202 {
                            return;
                        }
                        let accepted_at = Instant::now();
                        let deadline = accepted_at + Duration::from_secs(60);
                        let mut pause = Duration::from_millis(2);
                        while Instant::now() < deadline {
                            if let Ok(r) = http.get(format!("{target}/messages/{id}")).send().await
                            {
                                if r.status().as_u16() == 200 {
                                    let _ = freshness
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .record(micros(accepted_at.elapsed()));
                                    return;
                                }
                            }
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(25));
                        }
                    }));
                }
                tokio::time::sleep(options.probe_interval).await;
            }
            futures::future::join_all(in_flight).await;
        })
    };

    // Progress, and the stop condition for a timed run.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let accepted = totals.accepted.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        progress.set_message(format!(
            "{:.0} events/s accepted",
            accepted as f64 / elapsed.as_secs_f64()
        ));
        match (options.events, options.duration) {
            (Some(limit), _) => {
                progress.set_position(accepted + totals.rejected.load(Ordering::Relaxed));
                if accepted + totals.rejected.load(Ordering::Relaxed) >= limit {
                    break;
                }
            }
            (None, Some(duration)) => {
                progress.set_position(elapsed.as_secs());
                if elapsed >= duration {
                    break;
                }
            }
            (None, None) => break,
        }
    }
    running.store(false, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let elapsed = started.elapsed();
    let _ = prober.await;
    progress.finish_and_clear();

    // Correctness: every id at its newest accepted version, waiting (bounded) for the pipeline.
    let newest = std::mem::take(&mut *newest.lock().unwrap_or_else(|p| p.into_inner()));
    let settle_started = Instant::now();
    let mut pending: Vec<(usize, Version)> = newest.into_iter().collect();
    let ids_checked = pending.len();
    loop {
        let checks = futures::future::join_all(pending.iter().map(|(id, version)| {
            let http = http.clone();
            let url = format!("{}/messages/bench-{id}", options.target);
            async move {
                let row: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                let seen: Version = (
                    EventTime::parse_rfc3339(row["timestamp"].as_str()?)?,
                    SequenceNumber::parse(row["sequence_number"].as_str()?).ok()?,
                );
                (seen == *version).then_some(())
            }
        }))
        .await;
        pending = pending
            .into_iter()
            .zip(checks)
            .filter(|(_, ok)| ok.is_none())
            .map(|(p, _)| p)
            .collect();
        if pending.is_empty() || settle_started.elapsed() > options.settle_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let latency_us = std::mem::replace(
        &mut *latency.lock().unwrap_or_else(|p| p.into_inner()),
        histogram(),
    );
    let freshness_us = std::mem::replace(
        &mut *freshness.lock().unwrap_or_else(|p| p.into_inner()),
        histogram(),
    );
    Ok(BenchReport {
        elapsed,
        accepted: totals.accepted.load(Ordering::Relaxed),
        rejected: totals.rejected.load(Ordering::Relaxed),
        requests: totals.requests.load(Ordering::Relaxed),
        failed_requests: totals.failed_requests.load(Ordering::Relaxed),
        latency_us,
        freshness_us,
        ids_correct: ids_checked - pending.len(),
        ids_checked,
        settle: settle_started.elapsed(),
        peak_memory_kib: options.serve_pid.and_then(peak_memory_kib),
    })
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
