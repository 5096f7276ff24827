//! How the tables' rows are stored in redb: JSON arrays of their fields, in field order. JSON
//! because it needs no schema machinery on the domain types and a stored row can be read with
//! any tool; arrays rather than objects because the field names would double a small row.
//! A row that cannot be read back is a corrupt file: `StoreError::Rejected`, naming the table.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::status_view::ViewEntry;
use crate::domain::{SequenceNumber, VersionKey};
use crate::ports::{Behind, Checkpoint, DeadLetter, ShardProgress, StatusRow, StoreError};

fn encode(value: &impl Serialize) -> Vec<u8> {
    // Strings, numbers and options only: serializing them to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Rejected(format!("a row of {table} on disk cannot be read: {e}")))
}

fn sequence(table: &str, text: &str) -> Result<SequenceNumber, StoreError> {
    SequenceNumber::parse(text)
        .map_err(|e| StoreError::Rejected(format!("a row of {table} on disk: {e}")))
}

type RowFields = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
);

pub(super) fn encode_row(row: &StatusRow) -> Vec<u8> {
    encode(&(
        &row.id,
        &row.status,
        &row.timestamp,
        &row.data,
        &row.received_at,
        &row.shard_id,
        row.sequence_number.as_str(),
        &row.version.0,
        &row.updated_at,
    ))
}

pub(super) fn decode_row(table: &str, bytes: &[u8]) -> Result<StatusRow, StoreError> {
    let (id, status, timestamp, data, received_at, shard_id, sequence_number, version, updated_at): RowFields =
        decode(table, bytes)?;
    Ok(StatusRow {
        id,
        status,
        timestamp,
        data,
        received_at,
        shard_id,
        sequence_number: sequence(table, &sequence_number)?,
        version: VersionKey(version),
        updated_at,
    })
}

/// Only the version of a stored row, for the conditional write (no other field is decoded).
pub(super) fn decode_version(table: &str, bytes: &[u8]) -> Result<VersionKey, StoreError> {
    #[derive(serde::Deserialize)]
    struct VersionOnly<'a>(
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        serde::de::IgnoredAny,
        #[serde(borrow)] std::borrow::Cow<'a, str>,
        serde::de::IgnoredAny,
    );
    let VersionOnly(.., version, _) = serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Rejected(format!("a row of {table} on disk cannot be read: {e}"))
    })?;
    Ok(VersionKey(version.into_owned()))
}

type CheckpointFields = (String, String, u64, u64, Option<String>);
type BehindFields = (String, String, String);

pub(super) fn encode_progress(progress: &ShardProgress) -> Vec<u8> {
    let checkpoint = progress.checkpoint.as_ref().map(|c| {
        (
            c.sequence_number.as_str(),
            &c.updated_at,
            c.records_applied,
            c.lag_ms,
            &c.mirrored_into,
        )
    });
    let behind = progress
        .behind
        .as_ref()
        .map(|b| (b.sequence_number.as_str(), &b.since, &b.at));
    encode(&(checkpoint, behind))
}

pub(super) fn decode_progress(
    table: &str,
    shard_id: &str,
    bytes: &[u8],
) -> Result<ShardProgress, StoreError> {
    let (checkpoint, behind): (Option<CheckpointFields>, Option<BehindFields>) =
        decode(table, bytes)?;
    let checkpoint = match checkpoint {
        Some((sequence_number, updated_at, records_applied, lag_ms, mirrored_into)) => {
            Some(Checkpoint {
                shard_id: shard_id.to_owned(),
                sequence_number: sequence(table, &sequence_number)?,
                updated_at,
                records_applied,
                lag_ms,
                mirrored_into,
            })
        }
        None => None,
    };
    let behind = match behind {
        Some((sequence_number, since, at)) => Some(Behind {
            shard_id: shard_id.to_owned(),
            sequence_number: sequence(table, &sequence_number)?,
            since,
            at,
        }),
        None => None,
    };
    Ok(ShardProgress {
        shard_id: shard_id.to_owned(),
        checkpoint,
        behind,
    })
}

type LetterFields = (
    String,
    String,
    String,
    Vec<u8>,
    usize,
    Option<String>,
    String,
    String,
    Option<i64>,
);

pub(super) fn encode_letter(letter: &DeadLetter) -> Vec<u8> {
    encode(&(
        &letter.shard_id,
        letter.sequence_number.as_str(),
        &letter.partition_key,
        letter.raw.as_ref(),
        letter.raw_size,
        &letter.raw_sha256,
        &letter.reason,
        &letter.dead_lettered_at,
        letter.expires_at,
    ))
}

pub(super) fn decode_letter(table: &str, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    let (
        shard_id,
        sequence_number,
        partition_key,
        raw,
        raw_size,
        raw_sha256,
        reason,
        dead_lettered_at,
        expires_at,
    ): LetterFields = decode(table, bytes)?;
    Ok(DeadLetter {
        shard_id,
        sequence_number: sequence(table, &sequence_number)?,
        partition_key,
        raw: Bytes::from(raw),
        raw_size,
        raw_sha256,
        reason,
        dead_lettered_at,
        expires_at,
    })
}

pub(super) fn encode_entry(entry: &ViewEntry) -> Vec<u8> {
    encode(&(&entry.status, &entry.version.0, &entry.shard_id))
}

pub(super) fn decode_entry(table: &str, id: &str, bytes: &[u8]) -> Result<ViewEntry, StoreError> {
    let (status, version, shard_id): (String, String, String) = decode(table, bytes)?;
    Ok(ViewEntry {
        id: id.to_owned(),
        status,
        version: VersionKey(version),
        shard_id,
    })
}
