//! Every bound Tidemark enforces, each with the reason it has the value it has.

use std::time::Duration;

/// The id is the Kinesis partition key, which is 1–256 Unicode characters.
pub const MAX_ID_CHARS: usize = 256;

/// Status values are labels, not documents: bounded like the id so a STATUS row stays small and
/// its size predictable.
pub const MAX_STATUS_CHARS: usize = 256;

/// Default bound on an event's `data` (bytes of compact JSON): generous for status details while
/// keeping a 500-event batch request near Lambda's payload limit.
pub const DEFAULT_MAX_DATA_BYTES: usize = 64 * 1024;

/// Nesting of `data` (the object itself is level 1). DynamoDB documents nest at most 32 levels,
/// so a projection that stores `data` as a DynamoDB map can hold whatever Tidemark accepted; it
/// is also far below the 128 levels where serde_json (and so the read path) stops parsing.
pub const MAX_DATA_DEPTH: usize = 32;

/// Longest accepted `timestamp`: `2024-05-01T12:00:00.123456789+02:00` is 35 characters, the
/// longest an RFC 3339 date-time with nanoseconds can be. Without a bound a timestamp could
/// carry megabytes of fraction digits into the stream record and the STATUS row.
pub const MAX_TIMESTAMP_CHARS: usize = 35;

/// Fraction digits of a `timestamp`: event times are kept in nanoseconds, so a tenth digit
/// could never decide an order.
pub const MAX_TIMESTAMP_FRACTION_DIGITS: usize = 9;

/// Longest consistency token accepted in `?after=`: API Gateway and common proxies take request
/// lines of 8 KiB, and the token must leave room for the rest of the URL. A batch answer whose
/// token would be longer (a request spread over dozens of shards) leaves the top-level token
/// out; each item's own token is always short.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// Longest `wait_ms` a read may ask for: the query function's default timeout is 10 s
/// (`HttpTimeoutSeconds`), and half of it leaves room for the reads themselves and a cold start.
pub const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(5);

/// Raw bytes a DEADLETTER item keeps. A DynamoDB item is at most 400 KB, and a record put straight
/// on the stream can be 1 MiB: longer raw bytes are cut to this, with their full size and SHA-256
/// kept, so setting a record aside can never fail for its size. 256 KiB leaves room for the
/// reason and the keys.
pub const MAX_DEAD_LETTER_RAW_BYTES: usize = 256 * 1024;

/// Characters of a DEADLETTER reason: a reason can quote a JSON path, and paths are as long as
/// the keys in them; the start says what went wrong.
pub const MAX_DEAD_LETTER_REASON_CHARS: usize = 4096;

/// Longest DEADLETTER retention that can be configured: ten years is "keep", not a TTL.
pub const MAX_DEAD_LETTER_TTL_DAYS: u64 = 3650;

/// Longest `Idempotency-Key` (and batch item `idempotency_key`): a UUID is 36 characters and
/// Stripe-style keys allow 255; the key is stored in every idempotency record, so it is bounded.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// How long a request holds its idempotency key while it puts its event: a second request with
/// the key in this window is told to retry (409), after it the key can be taken over. Longer than
/// the longest the ingest function can run (`HttpTimeoutSeconds` is at most 29 s), so a holder
/// whose lease ran out has certainly stopped.
pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(30);

/// How long a completed key answers retries by default: a day, as Stripe and Powertools do,
/// covers every client retry schedule in practice.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest configurable key lifetime, in hours: the table holds one item per keyed event for
/// this long, so a month is a ceiling against a misconfiguration that grows it without bound.
pub const MAX_IDEMPOTENCY_TTL_HOURS: u64 = 30 * 24;

/// Keyed batch items whose keys are claimed at once: a 500-item batch is 500 conditional puts,
/// and 32 in flight hide DynamoDB's latency without bursting a fresh on-demand table (the same
/// reasoning as `DEFAULT_WRITE_CONCURRENCY`).
pub const IDEMPOTENCY_CONCURRENCY: usize = 32;

/// DynamoDB's item size limit (400 KB, counted as attribute names plus values in bytes). The
/// in-memory STATUS table refuses larger rows the way DynamoDB does.
pub const MAX_DYNAMODB_ITEM_BYTES: usize = 400 * 1024;

/// How long a shard may be behind (a batch it could not apply in full, nothing moving since)
/// before `GET /shards` calls it stuck: the same 5 minutes as the IteratorAge alarm's default,
/// long enough for the mapping's retries to ride out a throttle.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(5 * 60);

/// Longest configurable stuck threshold: past a day, the records are near the stream's
/// retention and "stuck" would come too late to act on.
pub const MAX_STUCK_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Ceiling for the configurable `data` bound. A STATUS item must stay under DynamoDB's 400 KB
/// (409,600 bytes); 16 KiB is left for everything else in the row (id and status at most 1 KiB
/// each in UTF-8, timestamps, the ~150-byte version key, attribute names).
pub const MAX_DATA_BYTES_CEILING: usize = 384 * 1024;

/// Default tolerance for event timestamps ahead of the receive time. A timestamp far in the
/// future would win every comparison and freeze its id until that time, so it is rejected.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// A day: more tolerance than that is a misconfiguration, not clock skew.
pub const MAX_FUTURE_SKEW_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// Kinesis sequence numbers are decimal strings of up to 128 digits.
pub const MAX_SEQUENCE_DIGITS: usize = 128;

/// PutRecords accepts at most 500 entries per call, so one batch request is at most one call
/// when nothing is retried.
pub const MAX_BATCH_EVENTS: usize = 500;

/// PutRecords accepts at most 5 MiB per call (data plus partition keys); larger batches are
/// split into several calls.
pub const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;

/// A single Kinesis record (data plus partition key) is at most 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Request bodies: a synchronous Lambda invocation carries at most 6 MB including the API
/// Gateway envelope around the body, so 5 MiB of body is what reliably fits.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Lambda's event source mapping accepts batch sizes up to 10,000 records.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// GetRecords returns at most 10,000 records per call.
pub const MAX_GET_RECORDS: usize = 10_000;

/// Default number of conditional STATUS writes in flight per batch: enough to hide DynamoDB's
/// per-call latency (~5–10 ms) for thousands of ids per batch without a burst that throttles a
/// fresh on-demand table.
pub const DEFAULT_WRITE_CONCURRENCY: usize = 32;

/// Upper bound for the write concurrency: beyond this, a single Lambda mostly queues sockets.
pub const MAX_WRITE_CONCURRENCY: usize = 512;

/// The configurable limits applied to every event, at ingest and again in the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_data_bytes: usize,
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
        }
    }
}

/// Largest archive object read back, decompressed: one object is one batch, at most 10,000
/// records and 6 MB of payload (Lambda's invocation limit), which base64 and the per-line fields
/// bring to under 10 MB. A corrupt or hostile object that inflates past this is reported, not read.
pub const MAX_ARCHIVE_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

/// Longest history page a client may ask for (`limit`): 50 events of the default 64 KiB `data`
/// are 3.2 MB, well inside Lambda's 6 MB response limit.
pub const MAX_HISTORY_PAGE: usize = 50;

/// Largest history answer body: with `MaxDataBytes` raised (to 384 KiB at most), 50 events
/// would pass Lambda's 6 MB response limit, so a page stops early at 5 MiB (room for the
/// response envelope) and its `next_cursor` continues from there. One event always fits.
pub const MAX_HISTORY_ANSWER_BYTES: usize = 5 * 1024 * 1024;

/// History page size when `limit` is not given.
pub const DEFAULT_HISTORY_PAGE: usize = 25;

/// Most changes one `GET /changes` answers (`limit`): a change is under 3.6 KB of JSON (an id
/// and two statuses of at most 256 characters of up to 4 bytes each, a version of at most ~210
/// characters, times, a 128-digit sequence number), so a page stays under 4 MB, and usually
/// near 300 KB.
pub const MAX_CHANGES_PAGE: usize = 1000;

/// Changes per `GET /changes` answer when `limit` is not given.
pub const DEFAULT_CHANGES_PAGE: usize = 100;

/// The longest a batch's records can span in arrival time: the event source mapping hands a
/// record to a consumer at most `MaximumRecordAgeSeconds` after it arrived, and the template
/// allows at most 604,800 s (Lambda's own ceiling). An archive object is filed under its first
/// record's hour, so a rebuild `--from` a time lists objects from this much earlier.
pub const MAX_BATCH_SPAN: Duration = Duration::from_secs(604_800);

/// Statuses per `GET /statuses` page when `limit` is not given: most stacks have fewer distinct
/// statuses than this, so one page holds them all.
pub const DEFAULT_STATUS_PAGE: usize = 100;

/// Longest `GET /statuses` page: 1,000 statuses of 256 characters (up to 4 bytes each) and their
/// counts are about 1 MB, inside Lambda's 6 MB response limit.
pub const MAX_STATUS_PAGE: usize = 1_000;

/// Messages per `GET /statuses/{status}/messages` page when `limit` is not given.
pub const DEFAULT_STATUS_MESSAGES_PAGE: usize = 25;

/// Longest `GET /statuses/{status}/messages` page: each message is one STATUS read (the row is
/// returned whole), so the bound keeps a page's reads and its answer as small as a history
/// page's; the answer also stops at [`MAX_HISTORY_ANSWER_BYTES`].
pub const MAX_STATUS_MESSAGES_PAGE: usize = 50;
