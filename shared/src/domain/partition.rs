//! Which Kafka partition an id's events go to: the partitioner every Kafka client uses by
//! default for a keyed record (murmur2 of the key's bytes, made positive, modulo the partition
//! count), so Tidemark's ingest and any other producer keyed by id put one id on one partition,
//! and one partition's order is that id's order.

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
    fn a_key_always_lands_on_one_partition_within_range() {
        for n in 1..=16 {
            let p = partition_of(b"order-1", n);
            assert!(p < n);
            assert_eq!(p, partition_of(b"order-1", n));
        }
        assert_eq!(partition_of(b"abc", 0), 0, "no partitions is read as one");
    }
}
