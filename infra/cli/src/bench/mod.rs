//! `tidemark bench`: a load generator for a running `tidemark serve` (in memory or against
//! LocalStack). C clients post events over HTTP for a duration or an event count while a prober
//! measures freshness (time from a 202 to the event being visible in `GET /messages/{id}`). At the
//! end every id is checked against its newest accepted version, and the serve process's peak
//! memory is read from /proc when its pid is given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;

mod probes;
mod report;

use probes::{probe_loop, read_own_writes, OWN_WRITE_READERS};

use indicatif::{ProgressBar, ProgressStyle};
use report::{histogram, micros};
pub use report::{peak_memory_kib, BenchReport};
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

/// What the clients share while the load runs.
struct Load {
    http: reqwest::Client,
    options: BenchOptions,
    totals: Totals,
    /// Each id's newest accepted version, by id index.
    newest: Mutex<HashMap<usize, Version>>,
    latency: Mutex<Histogram<u64>>,
    freshness: Mutex<Histogram<u64>>,
    /// From a probe being visible in STATUS to its being listed by the status view.
    status_view_lag: Mutex<Histogram<u64>>,
    read_your_writes: Mutex<Histogram<u64>>,
    /// Reads with a token answered `200` with a state older than the reader's own write.
    older_than_own_write: AtomicU64,
    /// Reads with a token answered with neither `200` nor `409` (a `503` under load, say):
    /// failures, counted apart so that they are not taken for stale reads.
    own_write_read_errors: AtomicU64,
    running: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Far above any answer `serve` gives (a waiting read holds at most 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    if options.batch_size == 0 || options.batch_size > MAX_BATCH_EVENTS {
        return Err(BenchError::BatchSize);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients * 2)
        // No request may hold the run: one unanswered for this long counts as failed (a run
        // could otherwise wait for ever and never print its report).
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| BenchError::Unreachable(options.target.clone(), e))?;
    http.get(format!("{}/shards", options.target))
        .send()
        .await
        .map_err(|e| BenchError::Unreachable(options.target.clone(), e))?;
    let load = Arc::new(Load {
        http,
        options,
        totals: Totals::default(),
        newest: Mutex::default(),
        latency: Mutex::new(histogram()),
        freshness: Mutex::new(histogram()),
        status_view_lag: Mutex::new(histogram()),
        read_your_writes: Mutex::new(histogram()),
        older_than_own_write: AtomicU64::new(0),
        own_write_read_errors: AtomicU64::new(0),
        running: AtomicBool::new(true),
    });

    let started = Instant::now();
    let clients: Vec<_> = (0..load.options.clients)
        .map(|client| tokio::spawn(client_loop(load.clone(), client as u64)))
        .collect();
    let prober = tokio::spawn(probe_loop(load.clone()));
    let own_readers: Vec<_> = (0..OWN_WRITE_READERS)
        .map(|slot| tokio::spawn(read_own_writes(load.clone(), slot)))
        .collect();
    wait_for_the_end(&load, started).await;
    load.running.store(false, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let elapsed = started.elapsed();
    let _ = prober.await;
    for reader in own_readers {
        let _ = reader.await;
    }

    let settle_started = Instant::now();
    let (ids_checked, ids_correct) = check_newest(&load).await;
    let latency_us = std::mem::replace(&mut *lock(&load.latency), histogram());
    let freshness_us = std::mem::replace(&mut *lock(&load.freshness), histogram());
    let status_view_lag_us = std::mem::replace(&mut *lock(&load.status_view_lag), histogram());
    let read_your_writes_us = std::mem::replace(&mut *lock(&load.read_your_writes), histogram());
    let totals = &load.totals;
    Ok(BenchReport {
        elapsed,
        accepted: totals.accepted.load(Ordering::Relaxed),
        rejected: totals.rejected.load(Ordering::Relaxed),
        requests: totals.requests.load(Ordering::Relaxed),
        failed_requests: totals.failed_requests.load(Ordering::Relaxed),
        latency_us,
        freshness_us,
        status_view_lag_us,
        read_your_writes_us,
        older_than_own_write: load.older_than_own_write.load(Ordering::Relaxed),
        own_write_read_errors: load.own_write_read_errors.load(Ordering::Relaxed),
        ids_correct,
        ids_checked,
        settle: settle_started.elapsed(),
        peak_memory_kib: load.options.serve_pid.and_then(peak_memory_kib),
    })
}

/// One client: posts requests of `batch_size` random events until the run ends, remembering the
/// newest accepted version of each id.
async fn client_loop(load: Arc<Load>, seed: u64) {
    let options = &load.options;
    let totals = &load.totals;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latency = histogram();
    while load.running.load(Ordering::Relaxed) {
        if let Some(limit) = options.events {
            let claimed =
                totals.accepted.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed);
            if claimed >= limit {
                break;
            }
        }
        let now = SystemClock.now();
        let ids: Vec<usize> = (0..options.batch_size)
            .map(|_| rng.usize(0..options.ids))
            .collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": format!("bench-{id}"), "status": format!("s{}", rng.u32(..)), "timestamp": now.to_rfc3339()}))
            .collect();
        let (url, body) = if options.batch_size == 1 {
            (format!("{}/events", options.target), events[0].clone())
        } else {
            let url = format!("{}/events/batch", options.target);
            (url, json!({"events": events}))
        };
        let sent = Instant::now();
        let answer = load.http.post(url).json(&body).send().await;
        let _ = latency.record(micros(sent.elapsed()));
        totals.requests.fetch_add(1, Ordering::Relaxed);
        let answer: Option<Value> = match answer {
            Ok(r) if matches!(r.status().as_u16(), 202 | 207) => r.json().await.ok(),
            _ => None,
        };
        match answer {
            Some(answer) => record_accepted(&load, &ids, now, answer),
            None => {
                totals.failed_requests.fetch_add(1, Ordering::Relaxed);
                totals
                    .rejected
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = lock(&load.latency).add(&latency);
}

/// Counts a 202/207 answer's results and keeps each accepted id's newest version.
fn record_accepted(load: &Load, ids: &[usize], event_time: EventTime, answer: Value) {
    let results = if load.options.batch_size == 1 {
        vec![answer]
    } else {
        answer["results"].as_array().cloned().unwrap_or_default()
    };
    let mut newest = lock(&load.newest);
    for (id, result) in ids.iter().zip(&results) {
        let sequence = result["sequence_number"]
            .as_str()
            .and_then(|s| SequenceNumber::parse(s).ok());
        let Some(sequence) = sequence else {
            load.totals.rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        load.totals.accepted.fetch_add(1, Ordering::Relaxed);
        let version = (event_time, sequence);
        let entry = newest.entry(*id).or_insert_with(|| version.clone());
        if version > *entry {
            *entry = version;
        }
    }
}

/// Shows progress until the event count or the duration is reached.
async fn wait_for_the_end(load: &Load, started: Instant) {
    let options = &load.options;
    let progress = ProgressBar::new(
        options
            .events
            .unwrap_or_else(|| options.duration.map_or(0, |d| d.as_secs())),
    );
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let accepted = load.totals.accepted.load(Ordering::Relaxed);
        let done = accepted + load.totals.rejected.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        progress.set_message(format!(
            "{:.0} events/s accepted",
            accepted as f64 / elapsed.as_secs_f64()
        ));
        let finished = match (options.events, options.duration) {
            (Some(limit), _) => {
                progress.set_position(done);
                done >= limit
            }
            (None, Some(duration)) => {
                progress.set_position(elapsed.as_secs());
                elapsed >= duration
            }
            (None, None) => true,
        };
        if finished {
            break;
        }
    }
    progress.finish_and_clear();
}

/// Correctness: every id at its newest accepted version, waiting (bounded) for the pipeline.
/// Returns (ids checked, ids correct).
async fn check_newest(load: &Load) -> (usize, usize) {
    let started = Instant::now();
    let mut pending: Vec<(usize, Version)> = std::mem::take(&mut *lock(&load.newest))
        .into_iter()
        .collect();
    let checked = pending.len();
    // Reads in flight at once: all of them at once (a million with distinct ids) opened more
    // connections than serve takes from one client, and the shed reads were read again.
    const CHECKS_IN_FLIGHT: usize = 64;
    loop {
        let checks: Vec<bool> = futures::stream::iter(
            pending
                .iter()
                .map(|(id, version)| reads_at(load, *id, version)),
        )
        .buffered(CHECKS_IN_FLIGHT)
        .collect()
        .await;
        pending = pending
            .into_iter()
            .zip(checks)
            .filter(|(_, at_version)| !at_version)
            .map(|(p, _)| p)
            .collect();
        if pending.is_empty() || started.elapsed() > load.options.settle_timeout {
            return (checked, checked - pending.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `GET /messages/bench-{id}` answers exactly `version`.
async fn reads_at(load: &Load, id: usize, version: &Version) -> bool {
    let url = format!("{}/messages/bench-{id}", load.options.target);
    let seen = async {
        let row: Value = load.http.get(url).send().await.ok()?.json().await.ok()?;
        Some((
            EventTime::parse_rfc3339(row["timestamp"].as_str()?)?,
            SequenceNumber::parse(row["sequence_number"].as_str()?).ok()?,
        ))
    };
    seen.await.as_ref() == Some(version)
}
