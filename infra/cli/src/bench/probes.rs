//! The bench's probes beside the load: fresh ids timed until STATUS and the status view show
//! them, and clients reading their own writes back with a token.

use super::*;

/// Probes at most this many fresh ids at once (a probe is skipped while they are all busy), so
/// probing never becomes a load of its own on a slow backend.
const PROBES_IN_FLIGHT: usize = 8;

/// The prober: a fresh id every interval, timed from its 202 to its first visible read.
pub(super) async fn probe_loop(load: Arc<Load>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PROBES_IN_FLIGHT));
    let mut probe = 0u64;
    let mut in_flight = Vec::new();
    while load.running.load(Ordering::Relaxed) {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            probe += 1;
            let load = load.clone();
            in_flight.push(tokio::spawn(async move {
                let _permit = permit;
                if let Some((fresh_after, listed_after)) = probe_once(&load, probe).await {
                    let _ = lock(&load.freshness).record(micros(fresh_after));
                    if let Some(lag) = listed_after {
                        let _ = lock(&load.status_view_lag).record(micros(lag));
                    }
                }
            }));
        }
        tokio::time::sleep(load.options.probe_interval).await;
    }
    futures::future::join_all(in_flight).await;
}

/// Polls `read` (backing off from 2 to 25 ms) until it answers true: the time it took, or
/// `None` if not within a minute.
async fn poll_until<F, Fut>(mut read: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    while started.elapsed() < Duration::from_secs(60) {
        if read().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
    None
}

/// Posts one new id and polls it until it reads back: the time from its 202 to then, and from
/// then until the status view lists it under its status (`None` when the target runs no status
/// view, or not within a minute). `None` if it was not accepted or not seen within a minute.
async fn probe_once(load: &Load, probe: u64) -> Option<(Duration, Option<Duration>)> {
    let target = &load.options.target;
    let id = format!("probe-{}-{probe}", std::process::id());
    let response = load
        .http
        .post(format!("{target}/events"))
        .json(&json!({"id": id, "status": "probe"}))
        .send()
        .await
        .ok()?;
    if response.status().as_u16() != 202 {
        return None;
    }
    let accepted_at = Instant::now();
    poll_until(|| async {
        let read = load
            .http
            .get(format!("{target}/messages/{id}"))
            .send()
            .await;
        read.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await?;
    let fresh_after = accepted_at.elapsed();
    // Probes are the newest events of their status, so the first page lists the ones in flight.
    let listed_after = poll_until(|| async {
        let page: Option<Value> = async {
            load.http
                .get(format!("{target}/statuses/probe/messages?limit=50"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        page.and_then(|p| p["messages"].as_array().cloned())
            .is_some_and(|rows| rows.iter().any(|row| row["id"] == id.as_str()))
    })
    .await;
    Some((fresh_after, listed_after))
}

/// Clients that read their own writes back with the 202's token, each over one id of its own.
pub(super) const OWN_WRITE_READERS: usize = 4;

/// Longest wait a read asks the server for (the API's maximum).
const OWN_WRITE_WAIT_MS: u64 = 5_000;

/// One read-your-writes client: writes its id (timestamped now, so each write is newer than the
/// last), then reads it with `?after=TOKEN&wait_ms=…` straight away, retrying on 409. Records
/// the time from the 202 to the 200, and counts any `200` older than the write just made, and
/// apart from those, answers that were errors.
pub(super) async fn read_own_writes(load: Arc<Load>, slot: usize) {
    let target = load.options.target.clone();
    let id = format!("own-{}-{slot}", std::process::id());
    let mut serial = 0u64;
    while load.running.load(Ordering::Relaxed) {
        serial += 1;
        let status = format!("w{serial}");
        let event =
            json!({"id": id, "status": status, "timestamp": SystemClock.now().to_rfc3339()});
        let accepted = load
            .http
            .post(format!("{target}/events"))
            .json(&event)
            .send()
            .await;
        let token = match accepted {
            Ok(r) if r.status().as_u16() == 202 => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|a| a["token"].as_str().map(str::to_owned)),
            _ => None,
        };
        if let Some(token) = token {
            let accepted_at = Instant::now();
            let url = format!("{target}/messages/{id}?after={token}&wait_ms={OWN_WRITE_WAIT_MS}");
            while accepted_at.elapsed() < Duration::from_secs(60) {
                let Ok(read) = load.http.get(&url).send().await else {
                    break;
                };
                match read.status().as_u16() {
                    409 => continue,
                    200 => {
                        let row: Value = read.json().await.unwrap_or_default();
                        if row["status"] != status.as_str() {
                            load.older_than_own_write.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let _ =
                                lock(&load.read_your_writes).record(micros(accepted_at.elapsed()));
                        }
                        break;
                    }
                    _ => {
                        load.own_write_read_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(load.options.probe_interval).await;
    }
}
