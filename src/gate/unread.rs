//! A unary answer on its way to its caller: handed over in pieces, and dropped with its places
//! when the caller takes none of it for `--unread-answer-seconds`.

use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

use crate::admission::{Admission, FullAnswerPlace};

/// The largest piece of an answer handed to the connection at once. Whatever hyper is handed
/// stays with the stream until the caller's window takes it, so an answer is handed over in
/// copied pieces: a caller that stops reading keeps at most a piece there, and the rest is
/// dropped with the answer.
const PIECE_BYTES: usize = 16 * 1024;

/// A unary answer on its way to its caller, holding the call's admission and, if it is FULL, its
/// place among the FULL answers, so the answers waiting for callers are bounded by those. If
/// the caller takes none of it for `--unread-answer-seconds`, the answer is dropped and its
/// places given back; the caller then hears DEADLINE_EXCEEDED when it next reads. What the call
/// recorded stays recorded.
pub(super) struct Unread {
    sending: Arc<std::sync::Mutex<Sending>>,
    give_up: tokio::task::AbortHandle,
}

enum Sending {
    Answer {
        body: Body,
        /// What is left of a data frame being handed over in pieces.
        rest: tonic::codegen::Bytes,
        /// When the answer was ready, or the caller last took a piece.
        progress: tokio::time::Instant,
        /// The task waiting on the answer's body, woken if the answer is dropped.
        waker: Option<std::task::Waker>,
        _places: (Admission, Option<FullAnswerPlace>),
    },
    GaveUp(std::time::Duration),
    Ended,
}

impl Unread {
    /// Watches the answer: dropped once the caller has taken none of it for `patience`, and
    /// counted in `dropped`.
    pub(super) fn new(
        body: Body,
        places: (Admission, Option<FullAnswerPlace>),
        patience: std::time::Duration,
        dropped: prometheus::IntCounter,
    ) -> Self {
        let sending = Arc::new(std::sync::Mutex::new(Sending::Answer {
            body,
            rest: tonic::codegen::Bytes::new(),
            progress: tokio::time::Instant::now(),
            waker: None,
            _places: places,
        }));
        let watched = Arc::clone(&sending);
        let give_up = tokio::spawn(async move {
            loop {
                let due = match &*watched.lock().unwrap_or_else(PoisonError::into_inner) {
                    Sending::Answer { progress, .. } => *progress + patience,
                    Sending::GaveUp(_) | Sending::Ended => return,
                };
                tokio::time::sleep_until(due).await;
                let mut sending = watched.lock().unwrap_or_else(PoisonError::into_inner);
                if let Sending::Answer {
                    progress, waker, ..
                } = &mut *sending
                    && *progress + patience <= tokio::time::Instant::now()
                {
                    let waker = waker.take();
                    *sending = Sending::GaveUp(patience);
                    dropped.inc();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return;
                }
            }
        })
        .abort_handle();
        Unread { sending, give_up }
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.give_up.abort();
    }
}

impl http_body::Body for Unread {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *sending {
            Sending::Answer {
                body,
                rest,
                progress,
                waker,
                ..
            } => {
                // Asked for more: the caller has taken what it was handed.
                *progress = tokio::time::Instant::now();
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(next_piece(rest)))));
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let piece = next_piece(&mut data);
                            *rest = data;
                            Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
                        }
                        Err(trailers) => {
                            *sending = Sending::Ended;
                            Poll::Ready(Some(Ok(trailers)))
                        }
                    },
                    Poll::Ready(None) => {
                        *sending = Sending::Ended;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(status))) => {
                        *sending = Sending::Ended;
                        Poll::Ready(Some(Err(status)))
                    }
                    Poll::Pending => {
                        *waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
            Sending::GaveUp(waited) => {
                let status = crate::errors::error(
                    crate::errors::Reason::AnswerNotTaken,
                    format!(
                        "the caller took none of the answer for {} s, so it was dropped; anything the call recorded stays recorded, and a decision asked again with the same request_id gets the same answer",
                        waited.as_secs()
                    ),
                );
                *sending = Sending::Ended;
                let mut trailers = http::HeaderMap::new();
                match status.add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
                    Err(status) => Poll::Ready(Some(Err(status))),
                }
            }
            Sending::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &*self.sending.lock().unwrap_or_else(PoisonError::into_inner) {
            Sending::Answer { body, rest, .. } => rest.is_empty() && body.is_end_stream(),
            Sending::GaveUp(_) => false,
            Sending::Ended => true,
        }
    }
}

/// The next piece of `data`, at most `PIECE_BYTES`, copied so that it does not keep the whole
/// answer's buffer alive.
fn next_piece(data: &mut tonic::codegen::Bytes) -> tonic::codegen::Bytes {
    let piece = data.split_to(data.len().min(PIECE_BYTES));
    tonic::codegen::Bytes::copy_from_slice(&piece)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An answer that yields `frames`, then ends.
    struct Frames(std::collections::VecDeque<http_body::Frame<tonic::codegen::Bytes>>);

    impl http_body::Body for Frames {
        type Data = tonic::codegen::Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn answer(bytes: usize) -> (Body, Vec<u8>) {
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            http_body::Frame::data(tonic::codegen::Bytes::from(data.clone())),
            http_body::Frame::trailers(trailers),
        ];
        (Body::new(Frames(frames.into())), data)
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("dropped", "answers dropped").expect("counter")
    }

    /// A 40 KB answer is handed over as pieces of at most 16 KB that together are the answer,
    /// then its trailers; a caller that takes it all is not counted as not reading.
    #[tokio::test]
    async fn answers_are_handed_over_in_pieces() {
        use http_body_util::BodyExt;
        let (body, data) = answer(40 * 1024);
        let dropped = counter();
        let admissions = crate::admission::Admissions::new(8, Duration::from_millis(100));
        let admission = admissions.admit(None).expect("admitted");
        let mut unread = Unread::new(
            body,
            (admission, None),
            Duration::from_secs(60),
            dropped.clone(),
        );
        let mut sent = Vec::new();
        let mut pieces = Vec::new();
        let trailers = loop {
            let frame = unread.frame().await.expect("a frame").expect("no error");
            match frame.into_data() {
                Ok(piece) => {
                    pieces.push(piece.len());
                    sent.extend_from_slice(&piece);
                }
                Err(frame) => break frame.into_trailers().expect("trailers"),
            }
        };
        assert_eq!(pieces, [16 * 1024, 16 * 1024, 8 * 1024]);
        assert_eq!(sent, data);
        assert_eq!(trailers["grpc-status"], "0");
        assert!(unread.frame().await.is_none());
        assert_eq!(dropped.get(), 0);
        assert_eq!(
            admissions.places().available_permits(),
            8,
            "sent: admission back"
        );
    }

    /// An answer of which the caller takes nothing for its patience is dropped, with its
    /// admission and FULL place: the caller then hears DEADLINE_EXCEEDED, and the drop is
    /// counted.
    #[tokio::test]
    async fn an_answer_nobody_takes_is_dropped_with_its_place() {
        use http_body_util::BodyExt;
        let full = crate::admission::FullAnswers::new(1);
        let place = full
            .place(tokio::time::Instant::now() + Duration::from_secs(1))
            .await
            .expect("the place");
        let (body, _) = answer(40 * 1024);
        let dropped = counter();
        let admissions = crate::admission::Admissions::new(8, Duration::from_millis(100));
        let admission = admissions.admit(None).expect("admitted");
        let mut unread = Unread::new(
            body,
            (admission, Some(place)),
            Duration::from_millis(20),
            dropped.clone(),
        );
        let first = unread.frame().await.expect("a frame").expect("no error");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(16 * 1024));
        // Nothing more is asked for, as when the caller's window stays shut.
        full.place(tokio::time::Instant::now() + Duration::from_secs(10))
            .await
            .expect("the place is given back");
        assert_eq!(dropped.get(), 1);
        assert_eq!(admissions.places().available_permits(), 8, "admission back");
        let frame = unread.frame().await.expect("a frame").expect("no error");
        let trailers = frame
            .into_trailers()
            .expect("trailers, not the rest of the answer");
        assert_eq!(trailers["grpc-status"], "4");
        assert!(unread.frame().await.is_none());
    }
}
