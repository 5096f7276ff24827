//! A thread that owns one file's writes and takes them from a bounded queue: the shape of the
//! log's writer and the tables' writer.

use tokio::sync::mpsc;

pub(super) struct Worker<T> {
    queue: mpsc::Sender<T>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts `name` running `work` over a queue of `capacity` (senders wait for room past it:
    /// backpressure).
    pub(super) fn start(
        name: &str,
        capacity: usize,
        work: impl FnOnce(mpsc::Receiver<T>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(receiver))?;
        Ok(Self {
            queue,
            thread: Some(thread),
        })
    }

    /// Queues `item`; gives it back when the thread is gone.
    pub(super) async fn send(&self, item: T) -> Result<(), T> {
        self.queue.send(item).await.map_err(|e| e.0)
    }
}

impl<T> Drop for Worker<T> {
    /// Closes the queue and waits for the thread to finish what was queued, so the file it
    /// writes is closed and can be opened again at once (redb locks a file while it is open).
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
