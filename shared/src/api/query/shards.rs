//! `GET /shards`: every shard and each consumer's progress on it.

use super::*;

impl QueryApi {
    /// Every shard of the stream (open or closed, as ListShards names them) and every shard OPLOG
    /// knows, with its checkpoint (or none yet), the checkpoint's age, and whether it is behind
    /// or stuck ([`crate::domain::progress`]); the processor's at the top level (as before there
    /// was a second consumer), every other consumer's under its name (`archiver`, …).
    pub(crate) async fn get_shards(&self) -> Result<ApiResponse, ApiError> {
        let others = futures::future::try_join_all(self.consumer_checkpoints.iter().map(
            |(name, reader)| async move { Ok::<_, StoreError>((*name, reader.progress().await?)) },
        ));
        let (listed, progress, others) = futures::join!(
            self.shards.list_shards(),
            self.checkpoints.progress(),
            others
        );
        let (listed, progress, others) = (listed?, progress?, others?);
        let now = self.clock.now();
        let mut ids: Vec<&str> = listed.iter().map(|s| s.shard_id.as_str()).collect();
        ids.extend(progress.iter().map(|p| p.shard_id.as_str()));
        for (_, rows) in &others {
            ids.extend(rows.iter().map(|p| p.shard_id.as_str()));
        }
        ids.sort_unstable();
        ids.dedup();
        let shards: Vec<serde_json::Value> = ids
            .into_iter()
            .map(|id| {
                let open = listed.iter().find(|s| s.shard_id == id).map(|s| s.open);
                let mut shard = self.progress_json(progress.iter().find(|p| p.shard_id == id), now);
                shard["shard_id"] = json!(id);
                // `null`: OPLOG knows the shard but the stream no longer lists it (past retention).
                shard["open"] = json!(open);
                for (name, rows) in &others {
                    shard[name.as_str()] =
                        self.progress_json(rows.iter().find(|p| p.shard_id == id), now);
                }
                shard
            })
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"shards": shards, "stuck_after_ms": self.stuck_after.as_millis() as u64}),
        ))
    }

    /// One consumer's progress on one shard.
    fn progress_json(&self, row: Option<&ShardProgress>, now: EventTime) -> serde_json::Value {
        let checkpoint: Option<&Checkpoint> = row.and_then(|r| r.checkpoint.as_ref());
        let behind: Option<&Behind> = row.and_then(|r| r.behind.as_ref());
        let since = |text: &str| EventTime::parse_rfc3339(text);
        let health = assess(
            checkpoint.map(|c| &c.sequence_number),
            behind.and_then(|b| Some((&b.sequence_number, since(&b.since)?))),
            now,
            self.stuck_after,
        );
        let mut shard = json!({
            "sequence_number": checkpoint.map(|c| c.sequence_number.as_str()),
            "updated_at": checkpoint.map(|c| c.updated_at.as_str()),
            "records_applied": checkpoint.map_or(0, |c| c.records_applied),
            "lag_ms": checkpoint.map(|c| c.lag_ms),
            "checkpoint_age_ms": checkpoint
                .and_then(|c| since(&c.updated_at))
                .map(|at| now.millis_since(at)),
            "stuck": health.stuck,
        });
        if let (Some(behind), Some(behind_for)) = (behind, health.behind_for) {
            shard["behind"] = json!({
                "sequence_number": behind.sequence_number.as_str(),
                "since": behind.since,
                "last_attempt_at": behind.at,
                "for_ms": behind_for.as_millis() as u64,
            });
        }
        shard
    }
}
