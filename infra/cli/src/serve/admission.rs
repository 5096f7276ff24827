//! Which connections `serve` takes on. A connection holds one of `max_connections` slots for as
//! long as it is open, and one client (an IP address) at most `max_connections_per_client` of
//! them, so a client trickling bodies or looping on waiting reads cannot hold every slot. A
//! connection past either bound is answered `503` with `Retry-After: 1` at once and closed:
//! shedding, not a queue, so nobody waits an unbounded time in the kernel's accept queue for a
//! slot that may never free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shed answers being written at once; past it a shed connection is just closed, so a flood of
/// connections cannot make shedding itself unbounded.
const MAX_SHEDDING: usize = 64;
/// Time a shed answer may take to write, and then to drain what the client was still sending:
/// closing with unread bytes would reset the connection before the client read the answer.
const SHED_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes drained from a shed connection at most.
const SHED_DRAIN_BYTES: usize = 64 * 1024;

pub(super) struct Admission {
    connections: Arc<Semaphore>,
    per_client_limit: usize,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    shedding: Arc<Semaphore>,
}

/// A connection's hold on its slots; dropping it frees them.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl Admission {
    pub(super) fn new(max_connections: usize, max_per_client: usize) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
            per_client_limit: max_per_client.max(1),
            per_client: Arc::default(),
            shedding: Arc::new(Semaphore::new(MAX_SHEDDING)),
        }
    }

    /// A slot for a connection from `client`, or `None` past either bound.
    pub(super) fn admit(&self, client: IpAddr) -> Option<Slot> {
        let mut counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        // Counted only once admitted: a shed client leaves no entry behind.
        if counts
            .get(&client)
            .is_some_and(|open| *open >= self.per_client_limit)
        {
            return None;
        }
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        *counts.entry(client).or_insert(0) += 1;
        Some(Slot {
            _permit: permit,
            client,
            per_client: self.per_client.clone(),
        })
    }

    /// Answers `503` on `stream` and closes it, in the background.
    pub(super) fn shed(&self, mut stream: TcpStream) {
        let Ok(permit) = self.shedding.clone().try_acquire_owned() else {
            return; // dropping the stream closes it
        };
        let body = r#"{"error":{"code":"unavailable","message":"serve is at its connection bound (in all, or for this client): retry later"}}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let written = async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                let mut drained = 0;
                let mut buffer = [0u8; 4096];
                while drained < SHED_DRAIN_BYTES {
                    match stream.read(&mut buffer).await? {
                        0 => break,
                        n => drained += n,
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let _ = tokio::time::timeout(SHED_WRITE_TIMEOUT, written).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_client_and_freed_on_drop() {
        let admission = Admission::new(3, 2);
        let (a, b) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let first = admission.admit(a);
        let second = admission.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(admission.admit(a).is_none(), "past a's share");
        let third = admission.admit(b);
        assert!(third.is_some());
        assert!(admission.admit(b).is_none(), "past the bound in all");
        drop(first);
        assert!(
            admission.admit(b).is_some(),
            "a freed slot goes to whoever comes next"
        );
        drop((second, third));
        let counts = admission
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        assert!(
            !counts.contains_key(&a),
            "a client with nothing open leaves no entry"
        );
    }
}
