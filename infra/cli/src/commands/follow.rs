//! `rebuild --follow`'s output: where each shard of the switch stands, printed when it changes.

use std::collections::BTreeMap;
use std::time::Duration;

use tidemark::run::rebuild::follow::{FollowError, Follower, ShardFollow, ShardSwitch};
use tidemark::run::rebuild::RebuildProgress;

/// Follows until every shard is done, printing each shard's state when it changes.
pub async fn run(
    follower: &Follower<'_>,
    progress: &mut RebuildProgress,
    pause: Duration,
    save: impl FnMut(&RebuildProgress) -> Result<(), String>,
) -> Result<(), FollowError> {
    let into = follower.into;
    println!("following the stream into {into} until the processor mirrors into it");
    let mut shown: BTreeMap<String, ShardSwitch> = BTreeMap::new();
    let mut applied = 0;
    follower
        .follow(progress, pause, save, |report, shards| {
            applied += report.applied;
            for shard in shards {
                if shown.get(&shard.shard_id) != Some(&shard.state) {
                    println!("  {}", describe(shard, into));
                    shown.insert(shard.shard_id.clone(), shard.state.clone());
                }
            }
        })
        .await?;
    println!(
        "every shard now reaches {into} before STATUS ({applied} rows written while following): \
         deploy with StatusTableSwitch=serve to move readers to it, then with \
         StatusTableSwitch=done"
    );
    Ok(())
}

fn describe(shard: &ShardFollow, into: &str) -> String {
    let id = &shard.shard_id;
    match &shard.state {
        ShardSwitch::Done => format!("{id}: done"),
        ShardSwitch::WaitingForMirror => format!(
            "{id}: waiting for a checkpoint of the processor mirroring into {into} (deploy with \
             StatusTableSwitch=mirror; an idle shard needs one event)"
        ),
        ShardSwitch::Behind { mirrored_from } => format!(
            "{id}: the processor mirrors from {}; reading up to it",
            mirrored_from.as_str()
        ),
    }
}
