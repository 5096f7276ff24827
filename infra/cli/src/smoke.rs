//! `tidemark smoke URL`: a short check a user runs against their own stack after a deploy (or
//! against `serve`): post an event, read it back with its token, post a newer one and read that,
//! watch the id (unchanged: 304), find both in the history, read the shards and the status counts; and, given the stack's name,
//! that its alarms exist. Each step prints what it saw; the first failure stops with the reason.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde_json::{json, Value};
use tidemark::domain::{Clock, SystemClock};

/// How a request proves who sends it, as the stack's `AuthMode` asks.
pub enum Auth {
    None,
    Bearer(String),
    /// SigV4 for `execute-api` with the credentials and region of the environment.
    Iam(Box<aws_config::SdkConfig>),
}

pub struct Smoke {
    pub base: String,
    pub auth: Auth,
    pub http: reqwest::Client,
    /// Reads that wait (`wait_ms`) before giving up on a step: history is written by the
    /// archiver, a batching window or two behind.
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error("{step}: cannot reach {url}: {reason}")]
    Unreachable {
        step: &'static str,
        url: String,
        reason: String,
    },
    #[error("{step}: expected {expected}, got {status}: {body}")]
    Unexpected {
        step: &'static str,
        expected: &'static str,
        status: u16,
        body: String,
    },
    #[error("{step}: {reason}")]
    Wrong { step: &'static str, reason: String },
    #[error("signing the request failed: {0}")]
    Signing(String),
}

type Answer = (u16, Value);

impl Smoke {
    async fn call(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SmokeError> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let mut request = self.http.request(method.clone(), &url);
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes.clone());
        }
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Iam(sdk) => {
                for (name, value) in
                    sigv4_headers(sdk, method.as_str(), &url, bytes.as_bytes()).await?
                {
                    request = request.header(name, value);
                }
            }
        }
        let unreachable = |e: reqwest::Error| SmokeError::Unreachable {
            step,
            url: url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn expect(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        expected: u16,
    ) -> Result<Value, SmokeError> {
        let (status, answer) = self.call(step, method, path, body).await?;
        if status != expected {
            return Err(SmokeError::Unexpected {
                step,
                expected: status_text(expected),
                status,
                body: answer.to_string(),
            });
        }
        Ok(answer)
    }

    /// Posts `status` for `id` and reads it back with the answer's token.
    async fn write_and_read(&self, id: &str, status: &str) -> Result<(), SmokeError> {
        let event =
            json!({"id": id, "status": status, "timestamp": SystemClock.now().to_rfc3339()});
        let accepted = self
            .expect(
                "POST /events",
                reqwest::Method::POST,
                "/events",
                Some(&event),
                202,
            )
            .await?;
        let token = accepted["token"].as_str().ok_or(SmokeError::Wrong {
            step: "POST /events",
            reason: format!("the 202 carries no token: {accepted}"),
        })?;
        println!(
            "ok   POST /events -> 202 ({status} at {} {})",
            accepted["shard_id"].as_str().unwrap_or("?"),
            accepted["sequence_number"].as_str().unwrap_or("?")
        );
        let path = format!("/messages/{id}?after={token}&wait_ms=5000");
        for _ in 0..self.attempts {
            let (code, row) = self
                .call(
                    "GET /messages/{id}?after",
                    reqwest::Method::GET,
                    &path,
                    None,
                )
                .await?;
            match code {
                200 if row["status"] == status => {
                    println!("ok   GET /messages/{id} with the token -> 200 {status}");
                    return Ok(());
                }
                200 => {
                    return Err(SmokeError::Wrong {
                        step: "GET /messages/{id}?after",
                        reason: format!("read {} after writing {status}: {row}", row["status"]),
                    })
                }
                409 => continue,
                _ => {
                    return Err(SmokeError::Unexpected {
                        step: "GET /messages/{id}?after",
                        expected: "200 (or 409 while waiting)",
                        status: code,
                        body: row.to_string(),
                    })
                }
            }
        }
        Err(SmokeError::Wrong {
            step: "GET /messages/{id}?after",
            reason: format!(
                "{status} was not visible after {} waiting reads",
                self.attempts
            ),
        })
    }

    /// Every step, in order; the first failure is the answer.
    pub async fn run(&self) -> Result<(), SmokeError> {
        let id = format!(
            "smoke-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        self.write_and_read(&id, "smoke-posted").await?;
        self.write_and_read(&id, "smoke-delivered").await?;

        // Watching: holding the current version, nothing newer comes, so the wait ends in 304.
        let row = self
            .expect(
                "GET /messages/{id}",
                reqwest::Method::GET,
                &format!("/messages/{id}"),
                None,
                200,
            )
            .await?;
        let version = row["version"].as_str().ok_or(SmokeError::Wrong {
            step: "GET /messages/{id}",
            reason: format!("the row carries no version: {row}"),
        })?;
        let (code, answer) = self
            .call(
                "GET /messages/{id}?newer_than",
                reqwest::Method::GET,
                &format!("/messages/{id}?newer_than={version}&wait_ms=200"),
                None,
            )
            .await?;
        if code != 304 {
            return Err(SmokeError::Unexpected {
                step: "GET /messages/{id}?newer_than",
                expected: "304",
                status: code,
                body: answer.to_string(),
            });
        }
        println!("ok   GET /messages/{id}?newer_than=<its version> -> 304 unchanged");

        let history_path = format!("/messages/{id}/history");
        for attempt in 0..self.attempts {
            let (code, page) = self
                .call(
                    "GET /messages/{id}/history",
                    reqwest::Method::GET,
                    &history_path,
                    None,
                )
                .await?;
            if code == 501 {
                println!("ok   GET /messages/{id}/history -> 501 (history is off in this stack)");
                break;
            }
            let seen: Vec<Value> = page["events"]
                .as_array()
                .map(|entries| entries.iter().map(|e| e["status"].clone()).collect())
                .unwrap_or_default();
            if seen == [json!("smoke-delivered"), json!("smoke-posted")] {
                println!("ok   GET /messages/{id}/history -> both events, newest first");
                break;
            }
            if attempt + 1 == self.attempts {
                return Err(SmokeError::Wrong {
                    step: "GET /messages/{id}/history",
                    reason: format!("expected both events newest first, saw {seen:?} ({code})"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        let shards = self
            .expect("GET /shards", reqwest::Method::GET, "/shards", None, 200)
            .await?;
        let listed = shards["shards"].as_array().map_or(0, Vec::len);
        if listed == 0 {
            return Err(SmokeError::Wrong {
                step: "GET /shards",
                reason: format!("no shard listed: {shards}"),
            });
        }
        println!("ok   GET /shards -> {listed} shard(s)");
        let statuses = self
            .expect(
                "GET /statuses",
                reqwest::Method::GET,
                "/statuses",
                None,
                200,
            )
            .await?;
        println!(
            "ok   GET /statuses -> {} status(es)",
            statuses["statuses"].as_array().map_or(0, Vec::len)
        );
        Ok(())
    }
}

/// That an alarm exists for each of the template's alarms: CloudFormation names them
/// `<stack>-<logical id>-<suffix>`.
pub async fn check_alarms(
    sdk: &aws_config::SdkConfig,
    stack: &str,
    expected: &[String],
) -> Result<(), SmokeError> {
    let client = aws_sdk_cloudwatch::Client::new(sdk);
    let mut names = Vec::new();
    let mut pages = client
        .describe_alarms()
        .alarm_name_prefix(format!("{stack}-"))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| SmokeError::Wrong {
            step: "alarms",
            reason: format!("DescribeAlarms failed: {e}"),
        })?;
        names.extend(
            page.metric_alarms()
                .iter()
                .filter_map(|a| a.alarm_name().map(str::to_owned)),
        );
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|logical| {
            !names
                .iter()
                .any(|n| n.starts_with(&format!("{stack}-{logical}-")))
        })
        .collect();
    if !missing.is_empty() {
        return Err(SmokeError::Wrong {
            step: "alarms",
            reason: format!("stack {stack} lacks the alarms {missing:?} (found {names:?})"),
        });
    }
    println!(
        "ok   alarms: all {} of the template's alarms exist",
        expected.len()
    );
    Ok(())
}

async fn sigv4_headers(
    sdk: &aws_config::SdkConfig,
    method: &str,
    url: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, SmokeError> {
    let error = |e: &dyn std::fmt::Display| SmokeError::Signing(e.to_string());
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| error(&"no AWS credentials in the environment"))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| error(&e))?;
    let region = sdk
        .region()
        .ok_or_else(|| error(&"no AWS region (set AWS_REGION)"))?
        .to_string();
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| error(&e))?
        .into();
    let signable = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))
        .map_err(|e| error(&e))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| error(&e))?.into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "200",
        202 => "202",
        _ => "another status",
    }
}
