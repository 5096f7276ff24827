//! The consumers of the stream, registered in one place.
//!
//! A consumer (a view, or any other reader of the stream) is one type implementing
//! [`Consumer`] and one [`Registration`] here: its name gives its OPLOG rows
//! (`<name>:<shard>`) and its entry in `GET /shards`; [`Registration::mapping`] is its poller in
//! `serve`; [`Registration::checkpointed`] is what its Lambda handler runs
//! (`functions/processor`'s `run`). Nothing else in the tree names a consumer.

use std::sync::Arc;

use crate::adapters::Adapters;
use crate::api::query::QueryApi;
use crate::consumers::archiver::Archiver;
use crate::consumers::processor::ProcessorSettings;
use crate::consumers::views::status::StatusView;
use crate::consumers::{CheckpointedConsumer, Consumer};
use crate::domain::progress::ConsumerName;
use crate::domain::Clock;
use crate::run::esm::{EsmSettings, EventSourceMapping};

/// What every consumer is built with.
#[derive(Clone)]
pub struct ConsumerSettings {
    /// The processor's settings; the others read its `limits` (the same decode rules).
    pub processor: ProcessorSettings,
    pub clock: Arc<dyn Clock>,
}

/// Which metrics a consumer's Lambda prints per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metrics {
    /// The stack-wide pipeline metrics the dashboard and alarms read (the processor's only).
    Pipeline,
    /// Only metrics under the function's own name, so no consumer's counts add to another's.
    FunctionOnly,
}

type Build = dyn Fn(&Adapters, &ConsumerSettings) -> Arc<dyn Consumer> + Send + Sync;

/// One consumer of the stream: its name and how to build it from the adapters.
#[derive(Clone)]
pub struct Registration {
    pub name: ConsumerName,
    pub metrics: Metrics,
    build: Arc<Build>,
}

impl Registration {
    pub fn new(
        name: ConsumerName,
        metrics: Metrics,
        build: impl Fn(&Adapters, &ConsumerSettings) -> Arc<dyn Consumer> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            metrics,
            build: Arc::new(build),
        }
    }

    pub fn consumer(&self, adapters: &Adapters, settings: &ConsumerSettings) -> Arc<dyn Consumer> {
        (self.build)(adapters, settings)
    }

    /// The consumer and its own OPLOG rows: one batch as its Lambda handler runs it.
    pub fn checkpointed(
        &self,
        adapters: &Adapters,
        settings: &ConsumerSettings,
    ) -> CheckpointedConsumer {
        CheckpointedConsumer::new(
            self.consumer(adapters, settings),
            adapters.checkpoints_of(self.name).writer,
        )
    }

    /// Its event source mapping in `serve`: the stream's shards, its checkpoints.
    pub fn mapping(
        &self,
        adapters: &Adapters,
        settings: &ConsumerSettings,
        esm: EsmSettings,
    ) -> EventSourceMapping {
        EventSourceMapping::new(
            self.name,
            self.consumer(adapters, settings),
            adapters.checkpoints_of(self.name),
            adapters.shard_reader(),
            esm,
        )
    }
}

impl Registration {
    /// STATUS and DEADLETTER.
    pub fn processor() -> Self {
        Self::new(ConsumerName::PROCESSOR, Metrics::Pipeline, |adapters, s| {
            Arc::new(adapters.processor(s.processor, s.clock.clone()))
        })
    }

    /// The archive, and HISTORY when the stack keeps it.
    pub fn archiver() -> Self {
        Self::new(
            ConsumerName::ARCHIVER,
            Metrics::FunctionOnly,
            |adapters, s| {
                Arc::new(Archiver::new(
                    adapters.archive_writer(),
                    adapters
                        .history_enabled()
                        .then(|| adapters.history_writer()),
                    s.processor.limits,
                    s.clock.clone(),
                ))
            },
        )
    }

    /// Ids and counts by status.
    pub fn status_view() -> Self {
        Self::new(
            ConsumerName::STATUS_VIEW,
            Metrics::FunctionOnly,
            |adapters, s| {
                Arc::new(StatusView::new(
                    adapters.status_view_writer(),
                    s.processor.limits,
                    s.clock.clone(),
                ))
            },
        )
    }
}

/// Two registrations under one name would share OPLOG rows: each would skip what the other did.
#[derive(Debug, thiserror::Error)]
#[error("a consumer named {0:?} is already registered")]
pub struct DuplicateConsumer(pub &'static str);

/// The consumers a stack runs, in the order `serve` starts them.
#[derive(Clone)]
pub struct Registry {
    registrations: Vec<Registration>,
}

impl Registry {
    /// Tidemark's own consumers: the processor (STATUS), the archiver (archive and HISTORY) and
    /// the status view (ids and counts by status). **A new view is one more entry here.**
    pub fn standard() -> Self {
        Self {
            registrations: vec![
                Registration::processor(),
                Registration::archiver(),
                Registration::status_view(),
            ],
        }
    }

    /// This registry and one more consumer.
    pub fn with(mut self, registration: Registration) -> Result<Self, DuplicateConsumer> {
        if self.get(registration.name.as_str()).is_some() {
            return Err(DuplicateConsumer(registration.name.as_str()));
        }
        self.registrations.push(registration);
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.name.as_str() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.registrations.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = ConsumerName> + '_ {
        self.registrations.iter().map(|r| r.name)
    }

    /// The query routes of `adapters` with every registered consumer's checkpoints in
    /// `GET /shards` and the status view's routes ([`query_api`]).
    pub fn query_api(&self, adapters: &Adapters) -> QueryApi {
        query_api(adapters, self.names())
    }
}

/// The names of [`Registry::standard`]'s consumers, for the query Lambda: building the registry
/// would link every consumer's code (S3, the archiver) into a function that only reads. A test
/// keeps the two lists equal.
pub const STANDARD_CONSUMERS: [ConsumerName; 3] = [
    ConsumerName::PROCESSOR,
    ConsumerName::ARCHIVER,
    ConsumerName::STATUS_VIEW,
];

/// The query routes of `adapters` ([`Adapters::query_api`]) with the checkpoints of
/// `consumers` in `GET /shards`, and the status view's routes when it is one of them.
pub fn query_api(
    adapters: &Adapters,
    consumers: impl IntoIterator<Item = ConsumerName>,
) -> QueryApi {
    let mut query = adapters.query_api();
    for name in consumers {
        if name == ConsumerName::STATUS_VIEW {
            query = query.with_status_view(
                adapters.status_view_reader(),
                adapters.checkpoints_of(name).reader,
            );
        }
        if name != ConsumerName::PROCESSOR {
            query = query.with_consumer_checkpoints(name, adapters.checkpoints_of(name).reader);
        }
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_lambda_knows_every_standard_consumer() {
        let names: Vec<ConsumerName> = Registry::standard().names().collect();
        assert_eq!(names, STANDARD_CONSUMERS);
    }
}
