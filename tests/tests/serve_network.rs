//! `tidemark serve` as a network service: clients that are idle, slow, broken or too many never
//! hold a connection, a socket or shutdown for longer than the configured bounds, and every answer
//! that reaches the application is a JSON error body.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::time::Duration;

use serde_json::Value;
use tidemark::adapters::Adapters;
use tidemark_cli::serve::{NetworkSettings, ServeSettings};
use tidemark_tests::{quick_settings, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds far longer than any of these steps takes on a busy machine: a test fails by its
/// outer timeout, never by racing a clock.
const GENEROUS: Duration = Duration::from_secs(20);

fn settings(network: NetworkSettings) -> ServeSettings {
    ServeSettings {
        network,
        ..quick_settings()
    }
}

async fn connect(running: &Running) -> TcpStream {
    TcpStream::connect(running.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; the bytes it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(GENEROUS, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn idle_and_half_sent_requests_are_cut_and_never_hold_shutdown() {
    let running = Running::start(
        Adapters::memory(1),
        settings(NetworkSettings {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            shutdown_grace: Duration::from_millis(300),
            ..NetworkSettings::default()
        }),
    )
    .await;

    // Connected, silent: closed once the header-read timeout passes.
    let mut idle = connect(&running).await;
    read_to_close(&mut idle).await;

    // Half a header: closed the same way.
    let mut half_header = connect(&running).await;
    half_header
        .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    read_to_close(&mut half_header).await;

    // Headers complete, body cut short: a JSON 408 naming the rule, then the connection ends.
    let mut half_body = connect(&running).await;
    half_body
        .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .await
        .unwrap();
    let (status, body) = parse_answer(&read_to_close(&mut half_body).await);
    assert_eq!(status, 408);
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");

    // A malformed chunked body is bad framing (400), not a body that is too large (413).
    let mut broken = connect(&running).await;
    broken
        .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    let (status, body) = parse_answer(&read_to_close(&mut broken).await);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_body", "{body}");

    // A client holding a half-sent request while shutdown is asked for does not hold it up.
    let mut holder = connect(&running).await;
    holder
        .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::timeout(GENEROUS, running.stop())
        .await
        .expect("shutdown finishes within the grace, whatever clients do");
}

/// Past the connection bound a new connection is answered `503` with `Retry-After` at once and
/// closed, rather than queued behind connections that may never free; once one frees, the next
/// is served.
#[tokio::test]
async fn connections_past_the_bound_are_shed_with_503() {
    let running = Running::start(
        Adapters::memory(1),
        settings(NetworkSettings {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(120),
            ..NetworkSettings::default()
        }),
    )
    .await;
    let first = connect(&running).await;
    let _second = connect(&running).await;
    // Both are admitted once the server has accepted them: a request on each proves it.
    let request = b"GET /shards HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let mut third = connect(&running).await;
    third.write_all(request).await.unwrap();
    let answer = read_to_close(&mut third).await;
    let (status, body) = parse_answer(&answer);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(body["error"]["code"], "unavailable");

    drop(first);
    // The freed slot is taken by the next connection (the server notices the close promptly;
    // each attempt is a fresh connection, so this waits by attempts, not by the clock).
    let mut served = None;
    for _ in 0..200 {
        let mut next = connect(&running).await;
        next.write_all(request).await.unwrap();
        let (status, _) = parse_answer(&read_to_close(&mut next).await);
        if status == 200 {
            served = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served,
        Some(200),
        "a freed slot was never given to a new connection"
    );
    running.stop().await;
}

/// One client cannot hold every connection: past its share its new connections are shed, while
/// another client is still served.
#[tokio::test]
async fn one_client_cannot_hold_every_connection() {
    let running = Running::start(
        Adapters::memory(1),
        settings(NetworkSettings {
            max_connections: 8,
            max_connections_per_client: 3,
            header_read_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(120),
            ..NetworkSettings::default()
        }),
    )
    .await;
    let address: std::net::SocketAddr = running.base.trim_start_matches("http://").parse().unwrap();
    // The abusive client, from another loopback address: it trickles bodies it never finishes.
    let from_abuser = || async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(address).await.unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = from_abuser().await;
        stream
            .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut fourth = from_abuser().await;
    fourth
        .write_all(b"GET /shards HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = parse_answer(&read_to_close(&mut fourth).await);
    assert_eq!(
        status, 503,
        "the client's fourth connection is past its share"
    );

    // Another client is served while the abuser still holds its three.
    let mut normal = connect(&running).await;
    normal
        .write_all(b"GET /shards HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = parse_answer(&read_to_close(&mut normal).await);
    assert_eq!(status, 200);
    drop(held);
    running.stop().await;
}
