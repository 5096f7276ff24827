//! A shard read page by page to its end, throttles waited out.

use std::time::Duration;

use crate::ports::{RecordsPage, ShardReader, StartPosition, StreamError, StreamRecord};

/// Records asked for per GetRecords call unless told otherwise: the most Kinesis returns.
pub const DEFAULT_PAGE_RECORDS: usize = crate::domain::limits::MAX_GET_RECORDS;

/// Empty pages in a row after which the range is taken to be read to the shard's tip. Kinesis
/// may return an empty page before later records, so one empty page proves nothing.
pub(crate) const EMPTY_PAGES_AT_TIP: usize = 3;

/// Throttled reads are retried this many times, a second apart: replay and rebuild share each
/// shard's five reads per second with the live mappings, so a throttle is expected, not an error.
pub(crate) const THROTTLED_READ_ATTEMPTS: u32 = 30;
const THROTTLED_READ_PAUSE: Duration = Duration::from_secs(1);

/// One shard read page by page from a start position to its end: the last record of a closed
/// shard, or the tip of an open one (after [`EMPTY_PAGES_AT_TIP`] empty pages with nothing
/// behind). How replay, rebuild and the mapping's drain on a graceful stop read the stream.
pub struct ShardPages<'a> {
    stream: &'a dyn ShardReader,
    iterator: Option<String>,
    empty_pages: usize,
    page_records: usize,
}

impl<'a> ShardPages<'a> {
    pub async fn open(
        stream: &'a dyn ShardReader,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<Self, StreamError> {
        Ok(Self {
            stream,
            iterator: Some(stream.shard_iterator(shard_id, start).await?),
            empty_pages: 0,
            page_records: DEFAULT_PAGE_RECORDS,
        })
    }

    /// Pages of at most `records` records (at least 1): a consumer's batch size.
    pub fn with_page_records(mut self, records: usize) -> Self {
        self.page_records = records.clamp(1, DEFAULT_PAGE_RECORDS);
        self
    }

    /// The next page's records (never empty); `None` at the shard's end.
    pub async fn next(&mut self) -> Result<Option<Vec<StreamRecord>>, StreamError> {
        while let Some(iterator) = self.iterator.take() {
            let page = self.read(&iterator).await?;
            if page.records.is_empty() {
                self.empty_pages += 1;
            } else {
                self.empty_pages = 0;
            }
            let at_tip = self.empty_pages >= EMPTY_PAGES_AT_TIP
                && page.millis_behind_latest.unwrap_or(0) == 0;
            if !at_tip {
                self.iterator = page.next_iterator;
            }
            if !page.records.is_empty() {
                return Ok(Some(page.records));
            }
        }
        Ok(None)
    }

    async fn read(&self, iterator: &str) -> Result<RecordsPage, StreamError> {
        let mut attempt = 1;
        loop {
            match self.stream.get_records(iterator, self.page_records).await {
                Err(StreamError::Throttled(_)) if attempt < THROTTLED_READ_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(THROTTLED_READ_PAUSE).await;
                }
                result => return result,
            }
        }
    }
}
