//! The batching queue, one per deployed model version (after text-embeddings-inference's
//! `core/src/queue.rs` and Triton's dynamic batcher).
//!
//! One task (`run`) owns a `VecDeque<Entry>`, takes entries from a bounded inbox, and hands
//! batches to the model thread over `mpsc::channel(1)`: one batch runs while the next is
//! prefetched. It reserves that slot *before* forming a batch, so requests keep piling up
//! while the engine is busy and the batch is formed as late, and so as large, as possible.
//! The timing rules live in [`next_batch`], a pure function of the clock, so tests fake it.
//! This module does not run models or decode images.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigil_engine::Outputs;
use vigil_engine::preprocess::Tensor;

use crate::metrics::DeploymentMetrics;
use crate::model::ModelHandle;
use crate::{BatchConfig, Error, Result};

/// Entries a queue's inbox holds before `enqueue` waits. Admission already bounds the
/// entries in the whole runtime; this only keeps the hand-over from the request tasks to
/// the queue task cheap (one wake-up moves many entries) while staying bounded.
pub const INBOX_CAPACITY: usize = 256;

/// One request waiting for the engine.
#[derive(Debug)]
pub struct Entry {
    /// The images to run: one, the tiles of a whole radiograph, or the rows of a tensor
    /// batch. Each counts toward `max_batch_size`.
    pub tiles: Vec<Tensor>,
    /// Where the answer goes; closed when the caller has gone away.
    pub respond: oneshot::Sender<Result<Output>>,
    /// When the entry was queued.
    pub enqueued_at: Instant,
    /// After this the answer is of no use: the entry is skipped, not run.
    pub deadline: Option<Instant>,
    /// The request's span, so the engine's logs belong to it.
    pub span: tracing::Span,
}

impl Entry {
    /// Images this entry adds to a batch (never 0, so an empty entry cannot loop forever).
    fn size(&self) -> usize {
        self.tiles.len().max(1)
    }
}

/// The engine's answer for one entry: its rows of every output, and timings.
#[derive(Debug, Clone)]
pub struct Output {
    /// Every model output, one row per tile of the entry, in order.
    pub outputs: Outputs,
    /// From queueing until its batch started running.
    pub queue: Duration,
    /// Engine time of the whole batch it ran in.
    pub inference: Duration,
    /// Images in that batch.
    pub batch_size: usize,
}

/// What the queue should do now.
#[derive(Debug)]
pub enum Decision {
    /// Run these entries as one batch.
    Run(Vec<Entry>),
    /// A batch is waiting to fill; decide again at this instant (or when an entry arrives).
    WaitUntil(Instant),
    /// Nothing to run.
    Idle,
}

/// Entries dropped by [`next_batch`] without running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// The caller went away (its receiver is closed).
    pub cancelled: usize,
    /// The deadline passed; the caller was told [`Error::DeadlineExceeded`].
    pub expired: usize,
}

/// Forms the next batch at time `now`: drops cancelled and expired entries (counting them in
/// `skipped`), then takes entries from the front while they fit in `max_batch_size` images.
/// A batch that is not full waits until the oldest entry has waited `max_queue_delay`; with a
/// delay of zero it runs at once. An entry larger than `max_batch_size` runs alone.
pub fn next_batch(
    queue: &mut VecDeque<Entry>,
    now: Instant,
    cfg: &BatchConfig,
    skipped: &mut Skipped,
) -> Decision {
    if queue
        .iter()
        .any(|e| e.respond.is_closed() || e.deadline.is_some_and(|d| d <= now))
    {
        let mut kept = VecDeque::with_capacity(queue.len());
        for e in queue.drain(..) {
            if e.respond.is_closed() {
                skipped.cancelled += 1;
            } else if e.deadline.is_some_and(|d| d <= now) {
                skipped.expired += 1;
                // The caller may be gone by now; nothing to do then.
                let _ = e
                    .respond
                    .send(Err(Error::DeadlineExceeded { stage: "queued" }));
            } else {
                kept.push_back(e);
            }
        }
        *queue = kept;
    }
    let Some(oldest) = queue.front() else {
        return Decision::Idle;
    };
    let max = cfg.max_batch_size.max(1);
    let (mut take, mut images) = (0, 0);
    for e in queue.iter() {
        if take > 0 && images + e.size() > max {
            break;
        }
        take += 1;
        images += e.size();
        if images >= max {
            break;
        }
    }
    // Full: no more room, or the next entry does not fit.
    let full = images >= max || take < queue.len();
    if !full && !cfg.max_queue_delay.is_zero() {
        let release = oldest.enqueued_at + cfg.max_queue_delay;
        if now < release {
            return Decision::WaitUntil(release);
        }
    }
    Decision::Run(queue.drain(..take).collect())
}

/// The sending side of a queue. Dropping every handle lets the queue drain and stop.
#[derive(Debug)]
pub(crate) struct QueueHandle {
    tx: mpsc::Sender<Entry>,
    metrics: DeploymentMetrics,
}

impl QueueHandle {
    /// Queues `entry`. Waits while the inbox is full.
    ///
    /// # Cancel safety
    /// Cancelling before the entry is sent drops it; after, the queue skips it.
    pub(crate) async fn enqueue(&self, entry: Entry) -> Result<()> {
        self.metrics.enqueued();
        self.tx.send(entry).await.map_err(|_| {
            self.metrics.dequeued(1);
            Error::ShuttingDown
        })
    }
}

/// Starts the queue task for one deployed version, on `tracker` so shutdown can wait for it.
/// The task stops when every [`QueueHandle`] is dropped or `shutdown` fires, after running
/// what is already queued; it then joins the model thread (off the async threads).
pub(crate) fn start(
    tracker: &tokio_util::task::TaskTracker,
    model: ModelHandle,
    cfg: BatchConfig,
    metrics: DeploymentMetrics,
    shutdown: CancellationToken,
) -> QueueHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    tracker.spawn(run(rx, model, cfg, metrics.clone(), shutdown));
    QueueHandle { tx, metrics }
}

async fn run(
    mut rx: mpsc::Receiver<Entry>,
    model: ModelHandle,
    cfg: BatchConfig,
    metrics: DeploymentMetrics,
    shutdown: CancellationToken,
) {
    let mut queue = VecDeque::new();
    let mut open = true;
    loop {
        // Take whatever is already waiting, without waiting.
        while let Ok(e) = rx.try_recv() {
            queue.push_back(e);
        }
        if queue.is_empty() {
            if !open {
                break;
            }
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => queue.push_back(e),
                    None => open = false,
                },
                () = shutdown.cancelled() => {
                    // Refuse new entries, but run those already sent.
                    rx.close();
                }
            }
            continue;
        }
        // Wait for the engine to have room, taking new entries meanwhile.
        let permit = tokio::select! {
            biased;
            permit = model.reserve() => permit,
            e = rx.recv(), if open => {
                match e {
                    Some(e) => queue.push_back(e),
                    None => open = false,
                }
                continue;
            }
        };
        let Some(permit) = permit else {
            // The model thread is gone: answer everything queued rather than hang.
            fail_all(&mut queue, &metrics, "the model thread stopped");
            break;
        };
        let mut skipped = Skipped::default();
        let decision = next_batch(&mut queue, Instant::now(), &cfg, &mut skipped);
        if skipped != Skipped::default() {
            metrics.skipped(skipped.cancelled, skipped.expired);
            metrics.dequeued(skipped.cancelled + skipped.expired);
        }
        match decision {
            Decision::Run(batch) => {
                metrics.dequeued(batch.len());
                permit.send(batch);
            }
            Decision::WaitUntil(at) => {
                drop(permit);
                tokio::select! {
                    e = rx.recv(), if open => match e {
                        Some(e) => queue.push_back(e),
                        None => open = false,
                    },
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
            Decision::Idle => {}
        }
    }
    // Joining waits for the batch being run; keep that wait off the async threads.
    if tokio::task::spawn_blocking(move || drop(model))
        .await
        .is_err()
    {
        tracing::error!("Joining a model thread panicked.");
    }
}

fn fail_all(queue: &mut VecDeque<Entry>, metrics: &DeploymentMetrics, why: &str) {
    metrics.dequeued(queue.len());
    for e in queue.drain(..) {
        let _ = e.respond.send(Err(Error::Internal(why.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        queue: VecDeque<Entry>,
        receivers: Vec<oneshot::Receiver<Result<Output>>>,
        t0: Instant,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                queue: VecDeque::new(),
                receivers: Vec::new(),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Queues an entry of `tiles` images at `ms`, optionally with a deadline; returns its
        /// index among the receivers.
        fn push(&mut self, tiles: usize, ms: u64, deadline_ms: Option<u64>) -> usize {
            let (tx, rx) = oneshot::channel();
            self.queue.push_back(Entry {
                tiles: vec![
                    Tensor {
                        shape: [1, 1, 1, 1],
                        data: vec![0.0],
                    };
                    tiles
                ],
                respond: tx,
                enqueued_at: self.at(ms),
                deadline: deadline_ms.map(|d| self.at(d)),
                span: tracing::Span::none(),
            });
            self.receivers.push(rx);
            self.receivers.len() - 1
        }

        fn next(&mut self, ms: u64, cfg: &BatchConfig, skipped: &mut Skipped) -> Decision {
            let now = self.at(ms);
            next_batch(&mut self.queue, now, cfg, skipped)
        }
    }

    fn cfg(max: usize, delay_ms: u64) -> BatchConfig {
        BatchConfig {
            max_batch_size: max,
            max_queue_delay: Duration::from_millis(delay_ms),
        }
    }

    fn sizes(d: &Decision) -> Vec<usize> {
        match d {
            Decision::Run(b) => b.iter().map(Entry::size).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_full_batch_runs_at_once_and_leaves_the_rest() {
        let mut f = Fake::new();
        for _ in 0..5 {
            f.push(1, 0, None);
        }
        let mut s = Skipped::default();
        let d = f.next(0, &cfg(4, 100), &mut s);
        assert_eq!(sizes(&d), vec![1, 1, 1, 1]);
        assert_eq!(f.queue.len(), 1);
        assert_eq!(s, Skipped::default());
    }

    #[test]
    fn a_partial_batch_waits_for_the_delay_then_runs() {
        let mut f = Fake::new();
        f.push(1, 0, None);
        f.push(1, 3, None);
        let c = cfg(4, 10);
        let mut s = Skipped::default();
        match f.next(5, &c, &mut s) {
            Decision::WaitUntil(t) => assert_eq!(t, f.at(10)),
            other => panic!("expected to wait, got {other:?}"),
        }
        assert_eq!(f.queue.len(), 2);
        // Counted from the oldest entry, not the newest.
        assert_eq!(sizes(&f.next(10, &c, &mut s)), vec![1, 1]);
        assert!(matches!(f.next(10, &c, &mut s), Decision::Idle));
    }

    #[test]
    fn a_delay_of_zero_runs_what_is_there_at_once() {
        let mut f = Fake::new();
        f.push(1, 0, None);
        let mut s = Skipped::default();
        assert_eq!(sizes(&f.next(0, &cfg(8, 0), &mut s)), vec![1]);
        assert!(matches!(f.next(0, &cfg(8, 0), &mut s), Decision::Idle));
    }

    #[test]
    fn cancelled_and_expired_entries_are_skipped_and_counted() {
        let mut f = Fake::new();
        let gone = f.push(1, 0, None);
        let late = f.push(1, 0, Some(5));
        let ok = f.push(1, 1, Some(50));
        f.push(1, 2, None);
        // The caller of `gone` goes away.
        drop(std::mem::replace(
            &mut f.receivers[gone],
            oneshot::channel().1,
        ));
        let mut s = Skipped::default();
        let d = f.next(5, &cfg(8, 0), &mut s);
        assert_eq!(sizes(&d), vec![1, 1]);
        assert_eq!(
            s,
            Skipped {
                cancelled: 1,
                expired: 1
            }
        );
        // The expired entry's caller is told why.
        match f.receivers[late].try_recv() {
            Ok(Err(Error::DeadlineExceeded { stage })) => assert_eq!(stage, "queued"),
            other => panic!("expected a deadline error, got {other:?}"),
        }
        let _ = ok;
    }

    #[test]
    fn skipping_everything_leaves_nothing_to_do() {
        let mut f = Fake::new();
        f.push(1, 0, Some(1));
        let mut s = Skipped::default();
        assert!(matches!(f.next(2, &cfg(8, 10), &mut s), Decision::Idle));
        assert_eq!(s.expired, 1);
    }

    #[test]
    fn tiles_count_toward_the_batch_size() {
        let mut f = Fake::new();
        let c = cfg(8, 100);
        let mut s = Skipped::default();
        f.push(3, 0, None);
        f.push(3, 0, None);
        f.push(1, 0, None);
        // 7 images of 8: not full, so it waits for the delay.
        assert!(matches!(f.next(0, &c, &mut s), Decision::WaitUntil(_)));
        f.push(1, 0, None);
        // 8 of 8: full, so it runs at once.
        assert_eq!(sizes(&f.next(0, &c, &mut s)), vec![3, 3, 1, 1]);

        f.push(3, 0, None);
        f.push(3, 0, None);
        f.push(3, 0, None);
        // 3 + 3 = 6; another 3 would make 9 > 8: the batch is as full as it gets, so it runs
        // without waiting for the delay.
        assert_eq!(sizes(&f.next(0, &c, &mut s)), vec![3, 3]);
        assert_eq!(f.queue.len(), 1);
    }

    #[test]
    fn an_entry_larger_than_a_batch_runs_alone() {
        let mut f = Fake::new();
        f.push(20, 0, None);
        f.push(1, 0, None);
        let mut s = Skipped::default();
        assert_eq!(sizes(&f.next(0, &cfg(8, 100), &mut s)), vec![20]);
        assert_eq!(sizes(&f.next(0, &cfg(8, 0), &mut s)), vec![1]);
    }
}
