//! `rebuild --follow`: keep applying the stream to the rebuilt table until it holds every row
//! the live STATUS table will ever hold, so readers can be moved to it without an id going back.
//!
//! The switch (docs/operations.md, "Switching to the rebuilt table") has the processor write
//! every row to the rebuilt table first and STATUS second, and mark its checkpoints with the
//! rebuilt table's name ([`crate::adapters::mirror`]). The follower reads each shard from where
//! the rebuild stopped to its tip, again and again, and is done with a shard when:
//! - the shard is **closed** and it has read it to its end: every record of the shard is in the
//!   rebuilt table; or
//! - the processor's checkpoint of the shard is **marked with the rebuilt table** and the
//!   follower has **read past it**. Why that suffices: the shard's batches are applied one at a
//!   time in order, so the marked checkpoint's batch and every later one went to the rebuilt
//!   table first. Every earlier batch ended at or before the marked checkpoint, which the
//!   follower has passed, so the follower applied those records. Every record of the shard, then,
//!   is in the rebuilt table before it is in STATUS.
//!
//! Once every shard is done, the rebuilt table holds at any moment every row STATUS holds, and
//! it holds each record before the processor's checkpoint passes it: readers can move to it
//! with no id going back and every read-your-writes token still honoured.
//!
//! An open shard no record has gone through since the processor started mirroring has no
//! marked checkpoint, so the follower waits for one (any event whose id maps to that shard).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{rebuild, RebuildError, RebuildProgress, RebuildReport, TimeWindow};
use crate::consumers::Consumer;
use crate::domain::SequenceNumber;
use crate::ports::{Checkpoint, CheckpointReader, ShardInfo, ShardReader, StoreError};

/// Where one shard of the switch stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardSwitch {
    /// Every record of the shard is, and will be, in the rebuilt table before STATUS.
    Done,
    /// The processor's checkpoint is not marked with the rebuilt table yet (not deployed, or no
    /// batch since the deploy).
    WaitingForMirror,
    /// The processor mirrors, but from a checkpoint the follower has not read up to yet.
    Behind { mirrored_from: SequenceNumber },
}

/// One shard: the follower's position, the processor's checkpoint, and what that makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFollow {
    pub shard_id: String,
    pub follower: Option<SequenceNumber>,
    pub live: Option<SequenceNumber>,
    pub state: ShardSwitch,
}

/// Each shard's state after a pass that read every shard to its tip, and every shard closed
/// (`open: false`) to its end (see the module's note for why the rule is sound).
pub fn switch_state(
    shards: &[ShardInfo],
    followed: &BTreeMap<String, SequenceNumber>,
    live: &BTreeMap<String, Checkpoint>,
    into: &str,
) -> Vec<ShardFollow> {
    shards
        .iter()
        .map(|shard| {
            let follower = followed.get(&shard.shard_id).cloned();
            let checkpoint = live.get(&shard.shard_id);
            let state = match checkpoint {
                _ if !shard.open => ShardSwitch::Done,
                Some(c) if c.mirrored_into.as_deref() == Some(into) => {
                    if follower.as_ref() >= Some(&c.sequence_number) {
                        ShardSwitch::Done
                    } else {
                        ShardSwitch::Behind {
                            mirrored_from: c.sequence_number.clone(),
                        }
                    }
                }
                _ => ShardSwitch::WaitingForMirror,
            };
            ShardFollow {
                shard_id: shard.shard_id.clone(),
                follower,
                live: checkpoint.map(|c| c.sequence_number.clone()),
                state,
            }
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("reading the processor's checkpoints: {0}")]
    Checkpoints(StoreError),
    #[error("listing the stream's shards: {0}")]
    Shards(crate::ports::StreamError),
}

/// What a follower reads, where it writes, and whose checkpoints it watches.
pub struct Follower<'a> {
    pub stream: &'a dyn ShardReader,
    /// The processor writing into the rebuilt table.
    pub consumer: &'a dyn Consumer,
    /// The live processor's checkpoints.
    pub live: &'a dyn CheckpointReader,
    /// The rebuilt table's name, as the live processor marks its checkpoints with it.
    pub into: &'a str,
}

impl Follower<'_> {
    /// One pass: every shard from the follower's position to its end or tip, then where the
    /// switch stands. Progress is saved through `save`, as for any rebuild.
    pub async fn pass(
        &self,
        progress: &mut RebuildProgress,
        save: impl FnMut(&RebuildProgress) -> Result<(), String>,
    ) -> Result<(RebuildReport, Vec<ShardFollow>), FollowError> {
        // Only a shard closed before the pass began was surely read to its end by it.
        let closed_before: Vec<String> = self
            .stream
            .list_shards()
            .await
            .map_err(FollowError::Shards)?
            .into_iter()
            .filter(|s| !s.open)
            .map(|s| s.shard_id)
            .collect();
        let report = rebuild(
            self.stream,
            self.consumer,
            TimeWindow::default(),
            progress,
            save,
            |_, _| {},
        )
        .await?;
        // Checkpoints after the pass: a marked one read now is at most where the processor is,
        // and the follower's positions only grow, so "read past it" stays true.
        let live: BTreeMap<String, Checkpoint> = self
            .live
            .list()
            .await
            .map_err(FollowError::Checkpoints)?
            .into_iter()
            .map(|c| (c.shard_id.clone(), c))
            .collect();
        let shards: Vec<ShardInfo> = self
            .stream
            .list_shards()
            .await
            .map_err(FollowError::Shards)?
            .into_iter()
            .map(|s| ShardInfo {
                open: !closed_before.contains(&s.shard_id),
                ..s
            })
            .collect();
        let followed = progress
            .shards
            .iter()
            .filter_map(|(shard, text)| Some((shard.clone(), SequenceNumber::parse(text).ok()?)))
            .collect();
        Ok((report, switch_state(&shards, &followed, &live, self.into)))
    }

    /// Passes every `pause` until every shard is [`ShardSwitch::Done`]; `on_pass` sees each.
    pub async fn follow(
        &self,
        progress: &mut RebuildProgress,
        pause: Duration,
        mut save: impl FnMut(&RebuildProgress) -> Result<(), String>,
        mut on_pass: impl FnMut(&RebuildReport, &[ShardFollow]),
    ) -> Result<(), FollowError> {
        loop {
            let (report, shards) = self.pass(progress, &mut save).await?;
            on_pass(&report, &shards);
            if shards.iter().all(|s| s.state == ShardSwitch::Done) {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shard(id: &str, open: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            open,
        }
    }

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn checkpoint(shard: &str, n: u32, mirror: Option<&str>) -> (String, Checkpoint) {
        (
            shard.into(),
            Checkpoint {
                shard_id: shard.into(),
                sequence_number: seq(n),
                updated_at: "t".into(),
                records_applied: 1,
                lag_ms: 0,
                mirrored_into: mirror.map(str::to_owned),
            },
        )
    }

    #[test]
    fn a_shard_is_done_only_past_a_checkpoint_marked_with_this_table() {
        let shards = [shard("a", true)];
        let followed = BTreeMap::from([("a".to_owned(), seq(10))]);
        let state = |live: Vec<(String, Checkpoint)>| {
            switch_state(&shards, &followed, &live.into_iter().collect(), "new")[0]
                .state
                .clone()
        };
        assert_eq!(state(vec![]), ShardSwitch::WaitingForMirror);
        // Caught up, but the processor does not mirror (or mirrors into another table).
        assert_eq!(
            state(vec![checkpoint("a", 9, None)]),
            ShardSwitch::WaitingForMirror
        );
        assert_eq!(
            state(vec![checkpoint("a", 9, Some("other"))]),
            ShardSwitch::WaitingForMirror
        );
        // Mirroring from a checkpoint the follower has not reached: records before it may have
        // gone to STATUS alone.
        assert_eq!(
            state(vec![checkpoint("a", 11, Some("new"))]),
            ShardSwitch::Behind {
                mirrored_from: seq(11)
            }
        );
        assert_eq!(
            state(vec![checkpoint("a", 10, Some("new"))]),
            ShardSwitch::Done
        );
    }

    #[test]
    fn a_closed_shard_read_to_its_end_is_done_and_a_shard_never_read_is_not() {
        let shards = [shard("parent", false), shard("child", true)];
        let states = switch_state(&shards, &BTreeMap::new(), &BTreeMap::new(), "new");
        assert_eq!(states[0].state, ShardSwitch::Done);
        assert_eq!(states[1].state, ShardSwitch::WaitingForMirror);
        assert_eq!(states[1].follower, None);
    }
}
