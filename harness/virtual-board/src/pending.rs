//! Replies from the board thread: a [`Pending`] is both blocking (`wait`) and a `Future`, never
//! ties the caller to a runtime, and always resolves: with the board's answer, with
//! [`BoardError::Timeout`] at its deadline (a shared timer thread enforces it for futures, so a
//! wedged board thread cannot hang an async caller), or with [`BoardError::Gone`] when the board
//! thread dropped the request.

use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::BoardError;

struct State<T> {
    value: Option<Result<T, BoardError>>,
    waker: Option<Waker>,
    timer_armed: bool,
}

pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    board: String,
    what: String,
    deadline: Instant,
    budget: Duration,
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A poisoned lock only means another thread panicked while holding it; the state is a
        // plain Option and stays consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, v: Result<T, BoardError>) {
        let mut s = self.lock();
        if s.value.is_none() {
            s.value = Some(v);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
            self.cv.notify_all();
        }
    }

    fn timeout_error(&self) -> BoardError {
        BoardError::Timeout { board: self.board.clone(), what: self.what.clone(), deadline: self.budget }
    }
}

trait Expire: Send + Sync {
    fn expire(&self);
}

impl<T: Send> Expire for Slot<T> {
    fn expire(&self) {
        if Instant::now() >= self.deadline {
            self.complete(Err(self.timeout_error()));
        }
    }
}

struct TimerEntry(Instant, Weak<dyn Expire>);

impl PartialEq for TimerEntry {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.cmp(&self.0) // min-heap on the deadline
    }
}

fn timer() -> Option<&'static Mutex<Sender<TimerEntry>>> {
    static TIMER: OnceLock<Option<Mutex<Sender<TimerEntry>>>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let (tx, rx) = channel::<TimerEntry>();
            std::thread::Builder::new().name("board-deadlines".into()).spawn(move || timer_loop(rx)).ok()?;
            Some(Mutex::new(tx))
        })
        .as_ref()
}

fn timer_loop(rx: Receiver<TimerEntry>) {
    let mut heap = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|e: &TimerEntry| e.0);
        let got = match next {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(e) => heap.push(e),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|e| e.0 <= now) {
            if let Some(TimerEntry(_, w)) = heap.pop()
                && let Some(s) = w.upgrade()
            {
                s.expire();
            }
        }
    }
}

/// The board thread's side of a request.
pub(crate) struct Reply<T>(Arc<Slot<T>>);

impl<T> Reply<T> {
    pub(crate) fn send(self, v: Result<T, BoardError>) {
        self.0.complete(v);
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let board = self.0.board.clone();
        self.0.complete(Err(BoardError::Gone(board)));
    }
}

/// A request to the board thread. `wait()` blocks (at most until the deadline); `.await` works
/// on any executor.
#[must_use = "a Pending does nothing unless waited for or awaited"]
pub struct Pending<T> {
    slot: Arc<Slot<T>>,
}

pub(crate) fn pending<T>(board: &str, what: &str, budget: Duration) -> (Pending<T>, Reply<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State { value: None, waker: None, timer_armed: false }),
        cv: Condvar::new(),
        board: board.to_string(),
        what: what.to_string(),
        deadline: Instant::now() + budget,
        budget,
    });
    (Pending { slot: slot.clone() }, Reply(slot))
}

/// An already answered request (e.g. a failure detected before reaching the board thread).
pub(crate) fn ready<T>(board: &str, what: &str, v: Result<T, BoardError>) -> Pending<T> {
    let (p, r) = pending(board, what, Duration::ZERO);
    r.send(v);
    p
}

impl<T: Send + 'static> Pending<T> {
    /// Block until the answer or the deadline.
    pub fn wait(self) -> Result<T, BoardError> {
        let slot = &self.slot;
        let mut s = slot.lock();
        loop {
            if let Some(v) = s.value.take() {
                return v;
            }
            let now = Instant::now();
            if now >= slot.deadline {
                return Err(slot.timeout_error());
            }
            s = slot.cv.wait_timeout(s, slot.deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// When this request times out.
    pub fn deadline(&self) -> Instant {
        self.slot.deadline
    }
}

impl<T: Send + 'static> Future for Pending<T> {
    type Output = Result<T, BoardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.slot.clone();
        let mut s = slot.lock();
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        if Instant::now() >= slot.deadline {
            return Poll::Ready(Err(slot.timeout_error()));
        }
        s.waker = Some(cx.waker().clone());
        if !s.timer_armed {
            s.timer_armed = true;
            let weak: Weak<dyn Expire> = Arc::downgrade(&slot) as Weak<dyn Expire>;
            let armed = timer()
                .and_then(|t| t.lock().ok().map(|tx| tx.send(TimerEntry(slot.deadline, weak)).is_ok()))
                .unwrap_or(false);
            if !armed {
                // No timer thread: fall back to failing at once rather than risk a hang.
                return Poll::Ready(Err(slot.timeout_error()));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Mutex<bool>, Condvar);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        let flag = Arc::new(Flag(Mutex::new(false), Condvar::new()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            let mut woken = flag.0.lock().unwrap();
            while !*woken {
                woken = flag.1.wait(woken).unwrap();
            }
            *woken = false;
        }
    }

    #[test]
    fn answered_dropped_and_expired_requests_all_resolve() {
        let (p, r) = pending::<u32>("b", "answer", Duration::from_secs(5));
        r.send(Ok(7));
        assert_eq!(p.wait().unwrap(), 7);
        let (p, r) = pending::<u32>("b", "dropped", Duration::from_secs(5));
        drop(r);
        assert!(matches!(p.wait(), Err(BoardError::Gone(_))));
        let (p, _r) = pending::<u32>("b", "slow thing", Duration::from_millis(30));
        let t = Instant::now();
        let e = p.wait().unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(e.to_string().contains("slow thing"), "{e}");
        // As a future: the timer thread resolves it even though the reply never comes.
        let (p, _r) = pending::<u32>("b", "async thing", Duration::from_millis(30));
        assert!(matches!(block_on(p), Err(BoardError::Timeout { .. })));
        let (p, r) = pending::<u32>("b", "async answer", Duration::from_secs(5));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            r.send(Ok(9));
        });
        assert_eq!(block_on(p).unwrap(), 9);
    }
}
