//! The archive's objects: one per batch of one shard, gzip-compressed JSON lines, one line per
//! stream record with its raw bytes exactly as on the stream (base64), its shard, sequence number,
//! partition key and approximate arrival time: everything the processor reads from the stream, so
//! the archive alone reproduces the versions that decide STATUS.
//!
//! Keys are laid out by hour so that a time range is a key range:
//! `YYYY/MM/DD/HH/<shard id>/<first sequence number>.jsonl.gz`, the hour being the first record's
//! arrival (UTC). The key depends only on the batch's first record, so a redelivered batch
//! overwrites its object instead of adding one.

use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::limits::MAX_ARCHIVE_OBJECT_BYTES;
use super::sequence::SequenceNumber;
use super::time::EventTime;

/// A stream record as the archive keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedRecord {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub partition_key: String,
    pub approximate_arrival: Option<EventTime>,
    pub data: Bytes,
}

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    shard_id: &'a str,
    sequence_number: &'a str,
    partition_key: &'a str,
    /// RFC 3339; absent when the stream gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arrival: Option<String>,
    /// The record's bytes, base64 (standard alphabet, padded).
    data: String,
}

/// Why an archive object could not be read: a rebuild reports it with the object's key and goes
/// on with the next object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveFormatError {
    #[error("not gzip, or cut short: {0}")]
    Compression(String),
    #[error("inflates past {MAX_ARCHIVE_OBJECT_BYTES} bytes")]
    TooLarge,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// The object key of a batch whose first record is `first`.
pub fn object_key(shard_id: &str, first: &SequenceNumber, arrival: Option<EventTime>) -> String {
    format!(
        "{}/{shard_id}/{}.jsonl.gz",
        hour_prefix(arrival),
        first.as_str()
    )
}

/// `YYYY/MM/DD/HH` of an instant (UTC); records without an arrival time go under `0000/00/00/00`,
/// listed first.
pub fn hour_prefix(arrival: Option<EventTime>) -> String {
    let rfc3339 = arrival.map(EventTime::to_rfc3339).unwrap_or_default();
    // `2024-05-01T12:…`: the hour prefix is a slice of the fixed-width UTC form.
    match (
        rfc3339.get(0..4),
        rfc3339.get(5..7),
        rfc3339.get(8..10),
        rfc3339.get(11..13),
    ) {
        (Some(y), Some(m), Some(d), Some(h)) if rfc3339.len() >= 20 => format!("{y}/{m}/{d}/{h}"),
        _ => "0000/00/00/00".to_owned(),
    }
}

/// One object's bytes. Serialising strings cannot fail and writing to a `Vec` cannot either;
/// the `Result` is the encoder's signature only.
pub fn encode_object(records: &[ArchivedRecord]) -> std::io::Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    for record in records {
        let line = Line {
            shard_id: &record.shard_id,
            sequence_number: record.sequence_number.as_str(),
            partition_key: &record.partition_key,
            arrival: record.approximate_arrival.map(EventTime::to_rfc3339),
            data: STANDARD.encode(&record.data),
        };
        serde_json::to_writer(&mut gzip, &line)?;
        gzip.write_all(b"\n")?;
    }
    gzip.finish()
}

/// Reads an object back; every line must be a complete record.
pub fn decode_object(bytes: &[u8]) -> Result<Vec<ArchivedRecord>, ArchiveFormatError> {
    let mut text = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_ARCHIVE_OBJECT_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| ArchiveFormatError::Compression(e.to_string()))?;
    if text.len() as u64 > MAX_ARCHIVE_OBJECT_BYTES {
        return Err(ArchiveFormatError::TooLarge);
    }
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(index, line)| {
            let bad = |reason: String| ArchiveFormatError::Line {
                line: index + 1,
                reason,
            };
            let line: Line<'_> = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
            let sequence_number = SequenceNumber::parse(line.sequence_number)
                .map_err(|e| bad(format!("sequence_number: {e}")))?;
            let approximate_arrival = line
                .arrival
                .map(|text| {
                    EventTime::parse_rfc3339(&text)
                        .ok_or_else(|| bad(format!("arrival is not RFC 3339: {text:?}")))
                })
                .transpose()?;
            let data = STANDARD
                .decode(&line.data)
                .map_err(|e| bad(format!("data: {e}")))?;
            Ok(ArchivedRecord {
                shard_id: line.shard_id.to_owned(),
                sequence_number,
                partition_key: line.partition_key.to_owned(),
                approximate_arrival,
                data: data.into(),
            })
        })
        .collect()
}

/// Why an object stored as `stored_bytes` is not read: more than gzip's framing over
/// [`MAX_ARCHIVE_OBJECT_BYTES`], so not one the archiver wrote (gzip never shrinks data that
/// would inflate past the bound to under it). Checked before the bytes are read into memory.
pub fn oversize_object(key: &str, stored_bytes: u64) -> Option<String> {
    let limit = MAX_ARCHIVE_OBJECT_BYTES + 1024 * 1024;
    (stored_bytes > limit).then(|| {
        format!("{key} is {stored_bytes} bytes, more than an archive object can be ({limit})")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn record(sequence: &str, data: Vec<u8>, arrival: Option<i128>) -> ArchivedRecord {
        let data = Bytes::from(data);
        ArchivedRecord {
            shard_id: "shardId-000000000001".into(),
            sequence_number: SequenceNumber::parse(sequence).unwrap(),
            partition_key: "id-1".into(),
            approximate_arrival: arrival.map(EventTime::from_unix_nanos),
            data,
        }
    }

    #[test]
    fn keys_are_by_hour_then_shard_then_first_record() {
        let arrival = EventTime::parse_rfc3339("2024-05-01T07:59:59.5+02:00").unwrap();
        let first = SequenceNumber::parse("4960").unwrap();
        assert_eq!(
            object_key("shardId-000000000003", &first, Some(arrival)),
            "2024/05/01/05/shardId-000000000003/4960.jsonl.gz"
        );
        assert_eq!(
            object_key("s", &first, None),
            "0000/00/00/00/s/4960.jsonl.gz"
        );
    }

    proptest! {
        /// Bytes come back exactly, whatever they are.
        #[test]
        fn objects_round_trip(records in prop::collection::vec(
            ("[1-9][0-9]{0,55}", prop::collection::vec(any::<u8>(), 0..300),
             prop::option::of(0i128..4_000_000_000_000_000_000)),
            0..20,
        )) {
            let records: Vec<_> = records
                .into_iter()
                .map(|(s, data, arrival)| record(&s, data, arrival))
                .collect();
            let bytes = encode_object(&records).unwrap();
            prop_assert_eq!(decode_object(&bytes).unwrap(), records);
        }
    }

    #[test]
    fn corrupt_objects_say_what_is_wrong() {
        assert!(matches!(
            decode_object(b"not gzip"),
            Err(ArchiveFormatError::Compression(_))
        ));
        let good = encode_object(&[record("1", b"x".to_vec(), None)]).unwrap();
        assert!(matches!(
            decode_object(&good[..good.len() - 4]),
            Err(ArchiveFormatError::Compression(_))
        ));
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(b"{\"shard_id\":\"s\"}\n").unwrap();
        let bad_line = gzip.finish().unwrap();
        assert!(matches!(
            decode_object(&bad_line),
            Err(ArchiveFormatError::Line { line: 1, .. })
        ));
    }

    /// A gzip bomb is refused once it inflates past the bound, not read into memory.
    #[test]
    fn objects_that_inflate_too_far_are_refused() {
        let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
        let zeros = vec![b'0'; 1024 * 1024];
        for _ in 0..=(MAX_ARCHIVE_OBJECT_BYTES / zeros.len() as u64) {
            gzip.write_all(&zeros).unwrap();
        }
        let bomb = gzip.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024);
        assert_eq!(decode_object(&bomb), Err(ArchiveFormatError::TooLarge));
    }

    #[test]
    fn an_object_larger_than_the_bound_allows_is_not_read() {
        let limit = MAX_ARCHIVE_OBJECT_BYTES + 1024 * 1024;
        assert_eq!(oversize_object("k", limit), None);
        let reason = oversize_object("k", limit + 1).unwrap();
        assert!(reason.starts_with("k is "), "{reason}");
    }
}
