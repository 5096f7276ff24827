//! Kafka records as Tidemark sees them.
//!
//! **Which partition** an id's events go to: the partitioner every Kafka client uses by default
//! for a keyed record (murmur2 of the key's bytes, made positive, modulo the partition count), so
//! Tidemark's ingest and any other producer keyed by id put one id on one partition, and one
//! partition's order is that id's order.
//!
//! **A record's sequence number** is its offset and its partition together, `offset × 100,000 +
//! partition`, not the offset alone. A version is (event time, sequence number), and two
//! versions must differ whenever the records do: a Kinesis sequence number is unique in its
//! stream, but offsets repeat across partitions, and after partitions are added (or with a
//! producer that is not keyed by id) two events of one id with the same event time can sit at
//! the same offset of two partitions. With the offset alone the second would count as a
//! redelivery of the first and vanish (the property test of adding partitions found it). The
//! product keeps each partition's order (offsets grow, the partition is fixed) and is unique
//! in the topic.

use super::sequence::{SequenceNumber, SequenceNumberError};

/// Partitions a topic may have for its records to map onto distinct sequence numbers (Kafka's
/// recommended ceiling is some thousands per broker; MSK's per-broker quota is far below this).
pub const MAX_PARTITIONS: i64 = 100_000;

/// The sequence number of the record at `offset` of `partition`; `None` for a negative offset
/// or a partition outside `0..MAX_PARTITIONS`.
pub fn sequence_of(partition: i64, offset: i64) -> Option<SequenceNumber> {
    if offset < 0 || !(0..MAX_PARTITIONS).contains(&partition) {
        return None;
    }
    let number = i128::from(offset) * i128::from(MAX_PARTITIONS) + i128::from(partition);
    SequenceNumber::parse(&number.to_string()).ok()
}

/// The offset a sequence number of [`sequence_of`] names.
pub fn offset_of(sequence: &SequenceNumber) -> Result<i64, SequenceNumberError> {
    let number: i128 = sequence
        .as_str()
        .parse()
        .map_err(|_| SequenceNumberError::NotDecimal)?;
    i64::try_from(number / i128::from(MAX_PARTITIONS)).map_err(|_| SequenceNumberError::NotDecimal)
}

/// Kafka's murmur2 (seed `0x9747b28c`), over the key's bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(first) = rest.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (at least 1), as Kafka's default partitioner
/// chooses it.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values Kafka's own tests hold its murmur2 to.
    #[test]
    fn murmur2_agrees_with_kafka() {
        for (key, expected) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn sequence_numbers_keep_each_partitions_order_and_differ_across_partitions() {
        let at = |p, o| sequence_of(p, o).unwrap();
        assert_eq!(at(3, 41).as_str(), "4100003");
        assert_eq!(at(0, 0).as_str(), "0");
        assert!(at(3, 41) < at(3, 42));
        assert!(at(3, 9) < at(3, 10), "by magnitude, not text");
        assert_ne!(at(1, 7), at(2, 7));
        assert_eq!(offset_of(&at(99_999, i64::MAX)), Ok(i64::MAX));
        assert_eq!(offset_of(&at(3, 41)), Ok(41));
        assert_eq!(sequence_of(0, -1), None);
        assert_eq!(sequence_of(MAX_PARTITIONS, 0), None);
        assert_eq!(sequence_of(-1, 0), None);
    }

    #[test]
    fn a_key_always_lands_on_one_partition_within_range() {
        for n in 1..=16 {
            let p = partition_of(b"order-1", n);
            assert!(p < n);
            assert_eq!(p, partition_of(b"order-1", n));
        }
        assert_eq!(partition_of(b"abc", 0), 0, "no partitions is read as one");
    }
}
