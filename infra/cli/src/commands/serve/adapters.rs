//! What `serve` runs on, from its options: the data directory, the tables (in memory, on disk
//! or on AWS) and the log (on disk, Kafka or the backend's stream).

use std::sync::Arc;

use super::*;

impl ServeArgs {
    /// Whether the pipeline runs in this process (not against AWS or an endpoint).
    pub(super) fn local(&self) -> bool {
        match self.backend {
            Some(backend) => backend == Backend::Memory,
            None => self.endpoint_url.is_none(),
        }
    }

    /// The data directory, when there is one: locally, --data-dir or the default unless
    /// --in-memory; against an endpoint only what was given (refused by `tables`). Over a Kafka
    /// topic only what was given: the default directory's checkpoints may be of another log (the
    /// disk log's numbers), and resuming a topic after them would skip its records.
    pub(super) fn data_dir(&self) -> Option<std::path::PathBuf> {
        if !self.local() || self.in_memory || self.log.is_some() {
            return self.data_dir.clone();
        }
        Some(
            self.data_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        )
    }

    /// The adapters to serve on, with the tables' and, with `--log`, the Kafka topic as the
    /// stream.
    pub(super) async fn adapters(&self) -> Result<Built, String> {
        let (adapters, description, new_tables) = self.tables().await?;
        let Some(topic) = &self.log else {
            // Locally with a data directory (`tables` refuses one elsewhere), the stream is the
            // log on disk.
            let Some(dir) = self.data_dir() else {
                return Ok(Built {
                    adapters,
                    description,
                    log: None,
                    new_tables,
                });
            };
            let log = Arc::new(DiskLog::open(&dir, self.shards as usize)?);
            return Ok(Built {
                adapters: adapters
                    .with_stream_writer(log.clone())
                    .with_shard_reader(log.clone()),
                description: format!("{description}, log in {}", dir.join("log.redb").display()),
                log: Some(log),
                new_tables,
            });
        };
        let log = Arc::new(
            KafkaLog::connect(topic, self.shards)
                .await
                .map_err(|e| format!("the Kafka log {}/{}: {e}", topic.bootstrap, topic.topic))?,
        );
        Ok(Built {
            adapters: adapters
                .with_stream_writer(log.clone())
                .with_shard_reader(log),
            description: format!(
                "{description}; the log is Kafka topic {} at {}",
                topic.topic, topic.bootstrap
            ),
            log: None,
            new_tables,
        })
    }

    /// In memory, with --data-dir the tables on disk: the adapters, what they are, and whether
    /// the tables' file is new (then the archive, if any, is read into it: see `run`).
    fn memory_tables(&self) -> Result<(Adapters, String, bool), String> {
        let shards = self.shards;
        let backend = MemoryBackend::new(shards as usize)
            .with_change_feed(self.change_feed_capacity as usize);
        let Some(dir) = self.data_dir() else {
            return Ok((
                Adapters::in_memory(backend),
                format!("in-memory, {shards} shards"),
                false,
            ));
        };
        let archive_dir = dir.join("archive");
        let archive = MemoryArchive::in_directory(&archive_dir).map_err(|e| e.to_string())?;
        let backend = backend.with_archive(archive);
        let cache_bytes = self.cache_mib as usize * (1 << 20);
        let (tables, new) = DiskTables::open(&dir, cache_bytes, backend.status.change_feed())?;
        let description = format!(
            "{shards} shards, tables in {}, archive in {}",
            tables.path().display(),
            archive_dir.display()
        );
        Ok((
            on_disk(Adapters::in_memory(backend), tables),
            description,
            new,
        ))
    }

    /// The tables (and the stream, unless `--log` replaces it), what they are, and whether they
    /// are new on disk.
    async fn tables(&self) -> Result<(Adapters, String, bool), String> {
        if self.local() {
            return self.memory_tables();
        }
        let shards = self.shards;
        if self.data_dir.is_some() {
            return Err(
                "--data-dir is for the in-memory backend; against an endpoint the archive is \
                 the S3 bucket (TIDEMARK_ARCHIVE_BUCKET)"
                    .into(),
            );
        }
        let names = ResourceNames::from_env_or_defaults();
        let endpoint = self.endpoint_url.as_deref();
        let adapters = aws_adapters(endpoint, &names, shards)
            .await
            .map_err(|e| e.to_string())?;
        let description = format!(
            "stream {}, tables {}, {}, {}, {}, {} and bucket {} at {}",
            names.stream,
            names.status_table,
            names.oplog_table,
            names.deadletter_table,
            names.idempotency_table,
            names.history_table.as_deref().unwrap_or("(no history)"),
            names.archive_bucket,
            endpoint.unwrap_or("the AWS environment's endpoints")
        );
        Ok((adapters, description, false))
    }
}

/// What `serve` runs on.
pub(super) struct Built {
    pub(super) adapters: Adapters,
    /// A line saying what the stream and tables are.
    pub(super) description: String,
    /// The log on disk (--data-dir).
    pub(super) log: Option<Arc<DiskLog>>,
    /// The tables' file was just made: an archive already in the directory is read into it.
    pub(super) new_tables: bool,
}
