//! Where log lines go: a buffer in memory that a background thread writes to stdout in
//! batches, about every 10 ms.
//!
//! A call appends its line under a lock (one copy, no allocation), and wakes the thread only
//! when the buffer was empty or has passed 64 KB, so a loaded server makes about a hundred
//! `write`s and wake-ups a second rather than one per line or per handful of lines. Lines are
//! never dropped: past 4 MB waiting (a log collector that has stopped reading), callers wait
//! for the thread to write. The guard writes what is still buffered when it is dropped.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread lets lines gather after the first of a batch.
const GATHER: Duration = Duration::from_millis(10);
/// A batch this large is written without waiting for the rest of `GATHER`.
const WRITE_AT: usize = 64 * 1024;
/// Past this much waiting, callers wait for the thread.
const MOST_WAITING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Waiting {
    lines: Vec<u8>,
    /// Callers waiting for room.
    blocked: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// The writer thread waits here for lines.
    lines_ready: Condvar,
    /// Callers wait here for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Nothing that can panic runs under this lock; were it poisoned, the buffer is intact.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log lines' destination, for tracing-subscriber's `with_writer`.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// Writes the lines still buffered, and stops the thread, when dropped.
pub struct LinesWritten {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes lines to `out`.
pub fn to(out: impl Write + Send + 'static) -> std::io::Result<(Lines, LinesWritten)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || write_batches(&shared, out)
        })?;
    Ok((
        Lines(Arc::clone(&shared)),
        LinesWritten {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut waiting = shared.lock();
        while waiting.lines.is_empty() && !waiting.closed {
            waiting = shared
                .lines_ready
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !waiting.closed && waiting.lines.len() < WRITE_AT {
            waiting = shared
                .lines_ready
                .wait_timeout_while(waiting, GATHER, |w| w.lines.len() < WRITE_AT && !w.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut batch, &mut waiting.lines);
        let closed = waiting.closed;
        if waiting.blocked > 0 {
            shared.room.notify_all();
        }
        drop(waiting);
        // A batch stdout refuses has nowhere else to go: it is dropped, and the next is tried.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed && shared.lock().lines.is_empty() {
            return;
        }
    }
}

impl Drop for LinesWritten {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines_ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &self.0;
        let mut waiting = shared.lock();
        while waiting.lines.len() >= MOST_WAITING && !waiting.closed {
            waiting.blocked += 1;
            waiting = shared
                .room
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
            waiting.blocked -= 1;
        }
        let was_empty = waiting.lines.is_empty();
        waiting.lines.extend_from_slice(line);
        let wake = was_empty
            || (waiting.lines.len() >= WRITE_AT && waiting.lines.len() - line.len() < WRITE_AT);
        drop(waiting);
        if wake {
            shared.lines_ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> &'a Lines {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by the thread, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let written = Written::default();
        let (lines, guard) = to(written.clone()).expect("thread starts");
        // 4 threads x 20,000 lines of 60 bytes: 4.8 MB, past the most that may wait, so
        // callers also wait for room.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("{t} {i:>10} {}\n", "x".repeat(45));
                        (&lines).write_all(line.as_bytes()).expect("written");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        drop(guard);
        let bytes = written.0.lock().expect("no panic").clone();
        let text = String::from_utf8(bytes).expect("UTF-8");
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let t: usize = parts.next().and_then(|p| p.parse().ok()).expect("thread");
            let i: usize = parts.next().and_then(|p| p.parse().ok()).expect("line");
            assert_eq!(i, next[t], "thread {t}'s lines whole and in order");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4], "no line lost");
    }

    #[test]
    fn a_line_is_written_within_moments_without_more_lines_after_it() {
        let written = Written::default();
        let (lines, _guard) = to(written.clone()).expect("thread starts");
        (&lines).write_all(b"policy active\n").expect("written");
        // The thread writes a lone line after gathering for 10 ms; allow a slow machine 5 s.
        for _ in 0..500 {
            if written.0.lock().expect("no panic").as_slice() == b"policy active\n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the line was not written");
    }
}
