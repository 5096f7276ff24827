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

#[tokio::test]
async fn connections_past_the_bound_wait_until_one_is_free() {
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
    let request = b"GET /shards HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let mut third = connect(&running).await; // accepted by the kernel, not yet served
    third.write_all(request).await.unwrap();
    let mut byte = [0u8; 1];
    // Waiting to see that nothing happens: a slow machine only makes this pass more surely.
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two were held"
    );

    drop(first);
    let (status, _) = parse_answer(&read_to_close(&mut third).await);
    assert_eq!(status, 200);
    running.stop().await;
}
