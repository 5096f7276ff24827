//! `POST /events/batch`: each item validated, keyed items claimed, the rest put in as few
//! PutRecords calls as the stream allows, one answer per item.

use super::*;

/// One batch item on its way to an answer.
enum Item<'a> {
    Invalid(ApiError),
    /// Valid, with a key not yet claimed.
    Keyed {
        event: Event,
        record: OutgoingRecord,
        key: String,
        raw: &'a RawValue,
    },
    /// A retried item whose key already holds its answer.
    Replayed(serde_json::Value),
    Send {
        event: Event,
        record: OutgoingRecord,
        claim: Option<Claim>,
    },
}

impl IngestApi {
    /// An item of a batch, ready to send unless it has a key to claim first.
    fn prepare_item<'a>(&self, index: usize, item: Result<BatchItem<'a>, FieldError>) -> Item<'a> {
        let item = match item {
            Ok(item) => item,
            Err(invalid) => return Item::Invalid(invalid.into()),
        };
        let record = match outgoing(&item.event, Some(index)) {
            Ok(record) => record,
            Err(invalid) => return Item::Invalid(invalid),
        };
        match item.idempotency_key {
            Some(key) => Item::Keyed {
                event: item.event,
                record,
                key,
                raw: item.raw,
            },
            None => Item::Send {
                event: item.event,
                record,
                claim: None,
            },
        }
    }

    /// A keyed item claims its key (or is replayed, or refused); other items pass through.
    async fn admit_item<'a>(
        &self,
        index: usize,
        item: Item<'a>,
        received_at: EventTime,
    ) -> Item<'a> {
        let Item::Keyed {
            event,
            record,
            key,
            raw,
        } = item
        else {
            return item;
        };
        let key_field = format!("events[{index}].{IDEMPOTENCY_KEY_FIELD}");
        let claim = match self
            .keys
            .admit(
                KeyScope::BatchItem,
                &key,
                sha256_hex(raw.get().as_bytes()),
                received_at,
                batch_default_time(received_at, index),
                &key_field,
            )
            .await
        {
            Admission::Proceed(claim) => claim,
            Admission::Replay(answer) => {
                return match serde_json::from_str::<serde_json::Value>(&answer) {
                    Ok(mut answer) => {
                        answer["replayed"] = json!(true);
                        Item::Replayed(answer)
                    }
                    Err(e) => Item::Invalid(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::Internal,
                        format!("the stored answer of {key_field} is not JSON: {e}"),
                    )),
                }
            }
            Admission::Refused(error) => return Item::Invalid(error),
        };
        if claim.received_at == received_at {
            return Item::Send {
                event,
                record,
                claim: Some(claim),
            };
        }
        let restamped = parse_batch_item(
            raw,
            index,
            claim.received_at,
            claim.default_time,
            &self.limits,
        )
        .map_err(ApiError::from)
        .and_then(|item| outgoing(&item.event, Some(index)).map(|record| (item.event, record)));
        match restamped {
            Ok((event, record)) => Item::Send {
                event,
                record,
                claim: Some(claim),
            },
            Err(invalid) => {
                self.keys.release(&claim).await;
                Item::Invalid(invalid)
            }
        }
    }

    /// 202 when every event was accepted; 207 when some were rejected (each result says which
    /// and why); when none was accepted, the first item's error status (400 for invalid input)
    /// or 503 when the stream failed. Each accepted item carries its own token, and the answer
    /// one covering them all. Items with an `idempotency_key` already answered are answered
    /// again (`"replayed": true`) and not put.
    pub(crate) async fn post_batch(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        // A batch's items carry their own keys; a header key would be silently ignored, and a
        // client retrying the whole batch on it would put every event again.
        if request.idempotency_key.is_some() {
            return Err(FieldError::new(
                IDEMPOTENCY_KEY_HEADER,
                Rule::UnknownField,
                format!(
                    "{IDEMPOTENCY_KEY_HEADER} is for POST /events; in a batch give each event its \
                     own idempotency_key"
                ),
            )
            .into());
        }
        let body = json_body(request)?;
        let received_at = self.clock.now();
        let parsed = parse_batch(body, received_at, &self.limits)?;

        let mut items: Vec<Item<'_>> = parsed
            .into_iter()
            .enumerate()
            .map(|(i, item)| self.prepare_item(i, item))
            .collect();
        if items.iter().any(|item| matches!(item, Item::Keyed { .. })) {
            // The futures are built first: a stream mapping through a closure over the borrowed
            // items would not be provably `Send` for the Lambda runtime.
            let admissions: Vec<_> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.admit_item(i, item, received_at))
                .collect();
            items = stream::iter(admissions)
                .buffered(IDEMPOTENCY_CONCURRENCY)
                .collect()
                .await;
        }
        let records: Vec<OutgoingRecord> = items
            .iter()
            .filter_map(|item| match item {
                Item::Send { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        let mut put_results = self.publisher.publish_all(&records).await.into_iter();

        let mut accepted_count = 0;
        let mut acks = Vec::new();
        let mut accepted_events = Vec::new();
        let mut first_invalid = None;
        let mut first_unavailable = None;
        // Each claimed key with the answer to store, or `None` to release it.
        let mut claims: Vec<(Claim, Option<String>)> = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let error = match item {
                Item::Send { event, claim, .. } => match put_results.next() {
                    Some(Ok(ack)) => {
                        accepted_count += 1;
                        let body = accepted(&event, &ack);
                        if let Some(claim) = claim {
                            claims.push((claim, Some(body.to_string())));
                        }
                        acks.push(ack);
                        accepted_events.push(event);
                        results.push(body);
                        continue;
                    }
                    put => {
                        claims.extend(claim.map(|claim| (claim, None)));
                        let error = put
                            .and_then(Result::err)
                            .unwrap_or_else(|| PublishError::Unavailable("not sent".into()));
                        let mut error = ApiError::from(error);
                        error.field = Some(format!("events[{i}]"));
                        error
                    }
                },
                Item::Replayed(answer) => {
                    accepted_count += 1;
                    acks.extend(replayed_ack(&answer));
                    results.push(answer);
                    continue;
                }
                Item::Invalid(error) => error,
                // Every keyed item was admitted above; one that was not is never sent.
                Item::Keyed { .. } => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!("events[{i}] was not admitted"),
                ),
            };
            results.push(json!({"error": error.body()}));
            if error.status == StatusCode::SERVICE_UNAVAILABLE {
                first_unavailable.get_or_insert(error);
            } else {
                first_invalid.get_or_insert(error);
            }
        }
        let settling: Vec<_> = claims
            .iter()
            .map(|(claim, answer)| self.keys.settle(claim, answer.as_deref()))
            .collect();
        stream::iter(settling)
            .buffer_unordered(IDEMPOTENCY_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;

        report_ahead(&accepted_events, self.emit_metrics);
        let status = match (accepted_count, first_unavailable, first_invalid) {
            (n, _, _) if n == results.len() => StatusCode::ACCEPTED,
            (0, Some(unavailable), _) => return Err(unavailable),
            (0, None, Some(invalid)) => {
                let mut body = json!({"error": invalid.body(), "results": results});
                body["error"]["message"] = json!(format!(
                    "no event in the batch was accepted; first: {}",
                    invalid.message
                ));
                let response = ApiResponse::json(invalid.status, &body);
                return Ok(if invalid.code == ErrorCode::IdempotencyInProgress.code() {
                    response.with_header(
                        http::header::RETRY_AFTER,
                        HeaderValue::from(crate::api::RETRY_AFTER_SECONDS),
                    )
                } else {
                    response
                });
            }
            _ => StatusCode::MULTI_STATUS,
        };
        let mut body = json!({
            "accepted": accepted_count,
            "rejected": results.len() - accepted_count,
            "received_at": received_at.to_rfc3339(),
            "results": results,
        });
        // Covers every accepted item; left out only when too long for a URL (see the limit).
        let token = ConsistencyToken::batch(
            acks.iter()
                .map(|ack| (ack.shard_id.as_str(), &ack.sequence_number)),
        )
        .map(|token| token.encode())
        .filter(|token| token.len() <= MAX_TOKEN_CHARS);
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        Ok(ApiResponse::json(status, &body))
    }
}
