//! Per-batch decisions: coalescing to the newest event per id, and what a partly failed batch
//! reports to Lambda and lets the checkpoint claim.

use std::collections::HashMap;

use super::event::Event;
use super::sequence::SequenceNumber;
use super::version::Version;

/// A decoded record: the event and the version it carries on this stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedEvent {
    pub event: Event,
    pub version: Version,
}

/// The newest event of one id within a batch, and the lowest sequence number among that id's
/// records (where Lambda must resume if the write fails, so none of them is skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalesced {
    pub newest: VersionedEvent,
    pub lowest_sequence: SequenceNumber,
    pub records: usize,
}

/// Keeps only the newest version per id: one write per distinct id, the fewest possible.
/// The result is ordered by each id's lowest sequence number, i.e. roughly stream order.
pub fn coalesce(records: Vec<VersionedEvent>) -> Vec<Coalesced> {
    let mut by_id: HashMap<String, Coalesced> = HashMap::with_capacity(records.len());
    for record in records {
        match by_id.get_mut(&record.event.id) {
            Some(entry) => {
                entry.records += 1;
                if record.version.sequence < entry.lowest_sequence {
                    entry.lowest_sequence = record.version.sequence.clone();
                }
                if record.version > entry.newest.version {
                    entry.newest = record;
                }
            }
            None => {
                by_id.insert(
                    record.event.id.clone(),
                    Coalesced {
                        lowest_sequence: record.version.sequence.clone(),
                        newest: record,
                        records: 1,
                    },
                );
            }
        }
    }
    let mut groups: Vec<Coalesced> = by_id.into_values().collect();
    groups.sort_unstable_by(|a, b| a.lowest_sequence.cmp(&b.lowest_sequence));
    groups
}

/// What a batch tells Lambda and the checkpoint once its writes are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The batch item failure to report: Lambda resumes from here. `None`: the batch succeeded.
    pub report_failure: Option<SequenceNumber>,
    /// How far the checkpoint may move: every record of the batch up to and including it is
    /// reflected in STATUS. `None`: nothing in this batch may be claimed.
    pub checkpoint: Option<SequenceNumber>,
    /// How many of the batch's records the checkpoint covers.
    pub records_covered: usize,
}

/// Decides the settlement from the batch's sequence numbers and those whose handling failed.
/// With failures, Lambda resumes at the lowest failed record and the checkpoint stops just
/// below it; re-applying the records after it is a no-op because writes are idempotent.
pub fn settle<'a>(
    batch: impl IntoIterator<Item = &'a SequenceNumber>,
    failed: impl IntoIterator<Item = &'a SequenceNumber>,
) -> Settlement {
    let lowest_failed = failed.into_iter().min().cloned();
    let mut checkpoint: Option<&SequenceNumber> = None;
    let mut records_covered = 0;
    for sequence in batch {
        if lowest_failed
            .as_ref()
            .is_none_or(|lowest| sequence < lowest)
        {
            records_covered += 1;
            if checkpoint.is_none_or(|highest| sequence > highest) {
                checkpoint = Some(sequence);
            }
        }
    }
    Settlement {
        checkpoint: checkpoint.cloned(),
        records_covered,
        report_failure: lowest_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::EventTime;
    use proptest::prelude::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn event(id: &str, nanos: u64, sequence: u64) -> VersionedEvent {
        let t = EventTime::parse_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .saturating_add(std::time::Duration::from_nanos(nanos));
        VersionedEvent {
            event: Event {
                id: id.into(),
                status: format!("s{nanos}-{sequence}"),
                timestamp: t.to_rfc3339(),
                event_time: t,
                data: None,
                received_at: t,
            },
            version: Version::new(t, seq(sequence)),
        }
    }

    #[test]
    fn keeps_newest_per_id_and_lowest_sequence() {
        let groups = coalesce(vec![
            event("a", 5, 10),
            event("b", 1, 11),
            event("a", 9, 12),
            event("a", 2, 13),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].newest.event.id, "a");
        assert_eq!(groups[0].newest.version.sequence, seq(12));
        assert_eq!(groups[0].lowest_sequence, seq(10));
        assert_eq!(groups[0].records, 3);
        assert_eq!(groups[1].newest.event.id, "b");
    }

    #[test]
    fn equal_times_are_decided_by_sequence_as_numbers() {
        let groups = coalesce(vec![event("a", 0, 100), event("a", 0, 99)]);
        assert_eq!(groups[0].newest.version.sequence, seq(100));
    }

    #[test]
    fn success_checkpoints_the_last_record() {
        let batch = [seq(1), seq(5), seq(9)];
        let s = settle(&batch, []);
        assert_eq!(s.report_failure, None);
        assert_eq!(s.checkpoint, Some(seq(9)));
        assert_eq!(s.records_covered, 3);
    }

    #[test]
    fn failure_reports_lowest_and_checkpoints_below_it() {
        let batch = [seq(1), seq(5), seq(9), seq(12)];
        let s = settle(&batch, [&seq(12), &seq(5)]);
        assert_eq!(s.report_failure, Some(seq(5)));
        assert_eq!(s.checkpoint, Some(seq(1)));
        assert_eq!(s.records_covered, 1);
    }

    #[test]
    fn failure_of_first_record_claims_nothing() {
        let batch = [seq(3), seq(4)];
        let s = settle(&batch, [&seq(3)]);
        assert_eq!(s.report_failure, Some(seq(3)));
        assert_eq!(s.checkpoint, None);
        assert_eq!(s.records_covered, 0);
    }

    proptest! {
        #[test]
        fn coalesced_newest_is_the_maximum(events in prop::collection::vec((0u8..5, 0u64..4, 0u64..1000), 1..200)) {
            let mut seen = std::collections::HashSet::new();
            let records: Vec<VersionedEvent> = events.iter()
                .filter(|(_, _, s)| seen.insert(*s))
                .map(|(id, t, s)| event(&id.to_string(), *t, *s)).collect();
            let groups = coalesce(records.clone());
            let ids: std::collections::HashSet<_> = records.iter().map(|r| &r.event.id).collect();
            prop_assert_eq!(groups.len(), ids.len());
            for g in &groups {
                let mine: Vec<_> = records.iter().filter(|r| r.event.id == g.newest.event.id).collect();
                prop_assert_eq!(&g.newest.version, &mine.iter().map(|r| r.version.clone()).max().unwrap());
                prop_assert_eq!(&g.lowest_sequence, &mine.iter().map(|r| r.version.sequence.clone()).min().unwrap());
                prop_assert_eq!(g.records, mine.len());
            }
        }

        #[test]
        fn checkpoint_never_covers_a_failure(batch in prop::collection::btree_set(0u64..10_000, 1..100),
                                             picks in prop::collection::vec(any::<prop::sample::Index>(), 0..5)) {
            let batch: Vec<SequenceNumber> = batch.into_iter().map(seq).collect();
            let failed: Vec<SequenceNumber> = picks.iter().map(|i| batch[i.index(batch.len())].clone()).collect();
            let s = settle(&batch, &failed);
            if let Some(cp) = &s.checkpoint {
                prop_assert!(failed.iter().all(|f| f > cp));
            }
            prop_assert_eq!(s.report_failure.clone(), failed.iter().min().cloned());
            prop_assert_eq!(s.records_covered, batch.iter().filter(|b| s.checkpoint.as_ref().is_some_and(|c| *b <= c)).count());
        }
    }
}
