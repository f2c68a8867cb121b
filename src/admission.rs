//! Admission: how many calls may be in progress at once, with the last places kept for
//! connections holding few calls that honour RetryInfo, so connections flooding the server with
//! calls cannot take every place from well-behaved callers; and how many FULL answers may be
//! built or on their way to their callers at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls a connection may hold and still be given a place from the reserve: a well-behaved
/// caller keeps a few calls in flight on a connection.
pub const LIGHT: usize = 8;

/// How often connections that hold no call and were refused none lately are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(1);

/// Places for calls in progress, and what each connection holds of them.
#[derive(Clone, Debug)]
pub struct Admissions {
    max: usize,
    /// Places kept for light connections: holding fewer than `LIGHT` calls, and not refused a
    /// call within the RetryInfo delay.
    reserve: usize,
    retry_after: Duration,
    places: Arc<Semaphore>,
    connections: Arc<Mutex<Connections>>,
}

/// Connections that hold calls or were refused one lately. A call whose connection is unknown
/// (a listener that gives no peer address) counts under `None`, as one connection.
#[derive(Debug)]
struct Connections {
    load: HashMap<Option<SocketAddr>, Load>,
    forgotten: Instant,
}

#[derive(Debug, Default)]
struct Load {
    held: usize,
    /// When the connection's latest run of refusals began, and how many calls it has been
    /// refused since: one refused `LIGHT` times within half its RetryInfo delay is sending
    /// again without waiting, and is pressing, not light.
    refused: Option<Instant>,
    refusals: usize,
}

/// Why a call was not admitted: the message for its RESOURCE_EXHAUSTED.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// A call's place among the calls in progress, counted against its connection; given back
/// when dropped.
#[derive(Debug)]
pub struct Admission {
    _place: OwnedSemaphorePermit,
    _held: Held,
}

#[derive(Debug)]
struct Held {
    connections: Arc<Mutex<Connections>>,
    connection: Option<SocketAddr>,
}

impl Admissions {
    /// `max` places, the last eighth of them the reserve.
    pub fn new(max: usize, retry_after: Duration) -> Self {
        Admissions {
            max,
            reserve: max / 8,
            retry_after,
            places: Arc::new(Semaphore::new(max)),
            connections: Arc::new(Mutex::new(Connections {
                load: HashMap::new(),
                forgotten: Instant::now(),
            })),
        }
    }

    /// The places themselves, for tests that fill them.
    pub fn places(&self) -> &Arc<Semaphore> {
        &self.places
    }

    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Admits a call from `connection`, or refuses it. Calls are admitted while places are
    /// free, except that the reserve, the last eighth, goes only to light connections: holding
    /// fewer than `LIGHT` calls and not refused `LIGHT` calls within half their RetryInfo delay. A caller
    /// with a few calls in flight that honours RetryInfo therefore finds a place however hard
    /// other connections press. (What one connection can hold at all is bounded by its HTTP/2
    /// stream limit.)
    pub fn admit(&self, connection: Option<SocketAddr>) -> Result<Admission, Refused> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        connections.forget_idle(now, self.retry_after);
        let load = connections.load.entry(connection).or_default();
        // Half the delay: a caller's timer may fire a little early. A caller's several workers
        // may each be refused once in that time, and still wait as asked.
        let recent = load
            .refused
            .is_some_and(|at| now.duration_since(at) < self.retry_after / 2);
        if !recent {
            load.refusals = 0;
        }
        let pressing = load.refusals >= LIGHT;
        let free = self.places.available_permits();
        let place = if free <= self.reserve && (load.held >= LIGHT || pressing) {
            Err(format!(
                "overloaded: {} of {} calls in progress, and the last {} are kept for connections with fewer than {LIGHT} that wait as RetryInfo asks; this connection has {}{}; retry later",
                self.max - free,
                self.max,
                self.reserve,
                load.held,
                if pressing {
                    " and sent again sooner"
                } else {
                    ""
                },
            ))
        } else {
            Arc::clone(&self.places)
                .try_acquire_owned()
                .map_err(|_| format!("overloaded: {} calls in progress; retry later", self.max))
        };
        match place {
            Ok(place) => {
                load.held += 1;
                Ok(Admission {
                    _place: place,
                    _held: Held {
                        connections: Arc::clone(&self.connections),
                        connection,
                    },
                })
            }
            Err(message) => {
                if !recent {
                    load.refused = Some(now);
                }
                load.refusals += 1;
                Err(Refused(message))
            }
        }
    }
}

/// Places for FULL answers, each some hundreds of KB while it is built and about 100 KB until
/// its caller has read it: at most `max` answers hold one, from before they are decided until
/// they are sent, and at most `WAITING_PER_PLACE` times as many callers wait for one. A caller
/// beyond those is refused at once, so a flood of FULL calls cannot fill the calls in progress
/// with waiters.
#[derive(Clone, Debug)]
pub struct FullAnswers {
    max: usize,
    places: Arc<Semaphore>,
    /// Holders and waiters together: `(1 + WAITING_PER_PLACE) * max`.
    callers: Arc<Semaphore>,
}

/// FULL calls that may wait for each place: enough that a burst of FULL calls queues rather
/// than being shed, few enough (128 at the default 32 places) to leave most of the calls in
/// progress to others.
pub const WAITING_PER_PLACE: usize = 4;

/// Why a FULL call got no place.
#[derive(Debug, PartialEq, Eq)]
pub enum NoFullPlace {
    /// Every place is held and as many callers wait as may.
    QueueFull,
    /// The time allowed passed first.
    TimedOut,
    /// The places are closed (shutdown).
    Closed,
}

/// One of the places for FULL answers; given back when dropped.
#[derive(Debug)]
pub struct FullAnswerPlace {
    _place: OwnedSemaphorePermit,
    _caller: OwnedSemaphorePermit,
}

/// A FULL answer's place passed from its handler to the answer's body (in the response's
/// extensions), which holds it until the answer is sent.
#[derive(Clone, Debug)]
pub struct HeldUntilSent(Arc<Mutex<Option<FullAnswerPlace>>>);

impl HeldUntilSent {
    pub fn new(place: FullAnswerPlace) -> Self {
        HeldUntilSent(Arc::new(Mutex::new(Some(place))))
    }

    pub fn take(&self) -> Option<FullAnswerPlace> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl FullAnswers {
    /// `max` places (at least one) and `WAITING_PER_PLACE` waiters per place.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        FullAnswers {
            max,
            places: Arc::new(Semaphore::new(max)),
            callers: Arc::new(Semaphore::new((1 + WAITING_PER_PLACE) * max)),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// The places themselves, for tests that fill them.
    pub fn places(&self) -> &Arc<Semaphore> {
        &self.places
    }

    /// FULL calls holding a place or waiting for one.
    pub fn callers(&self) -> usize {
        (1 + WAITING_PER_PLACE) * self.max - self.callers.available_permits()
    }

    /// A place, waiting for one until `until` if every place is held; refused at once when
    /// as many callers wait as may.
    pub async fn place(&self, until: tokio::time::Instant) -> Result<FullAnswerPlace, NoFullPlace> {
        let caller = Arc::clone(&self.callers)
            .try_acquire_owned()
            .map_err(|_| NoFullPlace::QueueFull)?;
        let place = Arc::clone(&self.places).acquire_owned();
        match tokio::time::timeout_at(until, place).await {
            Ok(Ok(place)) => Ok(FullAnswerPlace {
                _place: place,
                _caller: caller,
            }),
            Ok(Err(_)) => Err(NoFullPlace::Closed),
            Err(_) => Err(NoFullPlace::TimedOut),
        }
    }
}

impl Connections {
    /// Forgets connections that hold no call and were refused none within `retry_after`, at
    /// most once every `FORGET_EVERY`: the map stays as small as the connections in play.
    fn forget_idle(&mut self, now: Instant, retry_after: Duration) {
        if now.duration_since(self.forgotten) < FORGET_EVERY {
            return;
        }
        self.forgotten = now;
        self.load.retain(|_, l| {
            l.held > 0
                || l.refused
                    .is_some_and(|at| now.duration_since(at) < retry_after)
        });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = connections.load.get_mut(&self.connection) {
            load.held = load.held.saturating_sub(1);
            if load.held == 0 && load.refused.is_none() {
                connections.load.remove(&self.connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_answers_let_as_many_wait_as_hold_places() {
        let full = FullAnswers::new(2);
        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        let held = [
            full.place(later).await.expect("first"),
            full.place(later).await.expect("second"),
        ];
        let waiting: Vec<_> = (0..2 * WAITING_PER_PLACE)
            .map(|_| {
                let full = full.clone();
                tokio::spawn(async move { full.place(later).await.map(drop) })
            })
            .collect();
        while full.callers() < 2 + 2 * WAITING_PER_PLACE {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            full.place(later).await.map(drop),
            Err(NoFullPlace::QueueFull)
        );
        let soon = tokio::time::Instant::now() + Duration::from_millis(1);
        drop(held);
        for waiter in waiting {
            assert_eq!(waiter.await.expect("task"), Ok(()));
        }
        assert_eq!(full.callers(), 0, "every place given back");
        let _all = full
            .places()
            .clone()
            .acquire_many_owned(2)
            .await
            .expect("all");
        assert_eq!(full.place(soon).await.map(drop), Err(NoFullPlace::TimedOut));
        assert_eq!(full.callers(), 0);
    }

    fn address(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn take(admissions: &Admissions, port: u16, calls: usize) -> Vec<Admission> {
        (0..calls)
            .map_while(|_| admissions.admit(address(port)).ok())
            .collect()
    }

    #[test]
    fn a_flood_stops_short_of_the_reserve() {
        let admissions = Admissions::new(64, Duration::from_millis(100));
        let greedy = take(&admissions, 1, 100);
        assert_eq!(greedy.len(), 64 - 8, "the last eighth is kept");
        let refused = admissions
            .admit(address(1))
            .expect_err("the reserve is kept");
        assert!(
            refused.0.contains("56 of 64 calls in progress, and the last 8 are kept for connections with fewer than 8 that wait as RetryInfo asks; this connection has 56; retry later"),
            "{}",
            refused.0
        );
    }

    #[test]
    fn light_connections_are_admitted_from_the_reserve() {
        let admissions = Admissions::new(64, Duration::from_millis(100));
        let _greedy = take(&admissions, 1, 100);
        let quiet = take(&admissions, 2, 4);
        assert_eq!(quiet.len(), 4);
        let newcomer = take(&admissions, 3, 100);
        assert_eq!(
            newcomer.len(),
            4,
            "the rest of the reserve, up to the last place"
        );
        let refused = admissions.admit(address(4)).expect_err("no place is left");
        assert!(refused.0.contains("64 calls in progress"), "{}", refused.0);
    }

    #[test]
    fn a_connection_that_sends_again_at_once_is_kept_out_of_the_reserve() {
        let retry_after = Duration::from_millis(100);
        let admissions = Admissions::new(64, retry_after);
        let _greedy = take(&admissions, 1, 56);
        let pressing = take(&admissions, 2, 8);
        assert_eq!(pressing.len(), 8);
        for _ in 0..LIGHT {
            admissions.admit(address(2)).expect_err("no place is left");
        }
        drop(pressing);
        // Refused eight times in a moment and back at once: not light, though it holds nothing.
        let refused = admissions.admit(address(2)).expect_err("pressing");
        assert!(
            refused
                .0
                .contains("this connection has 0 and sent again sooner"),
            "{}",
            refused.0
        );
        // A connection that waited as RetryInfo asked is light again.
        let mut connections = admissions.connections.lock().expect("lock");
        let load = connections.load.get_mut(&address(2)).expect("remembered");
        load.refused = load.refused.and_then(|at| at.checked_sub(retry_after));
        drop(connections);
        assert_eq!(take(&admissions, 2, 8).len(), 8);
    }

    #[test]
    fn a_caller_whose_workers_are_each_refused_once_stays_light() {
        let admissions = Admissions::new(64, Duration::from_millis(100));
        let _greedy = take(&admissions, 1, 56);
        let first = take(&admissions, 2, 8);
        for _ in 0..LIGHT - 1 {
            admissions.admit(address(2)).expect_err("no place is left");
        }
        drop(first);
        assert_eq!(take(&admissions, 2, 4).len(), 4, "still light");
    }

    #[test]
    fn a_connection_grown_past_light_in_the_reserve_takes_no_more_of_it() {
        let admissions = Admissions::new(640, Duration::from_millis(100));
        let _greedy = take(&admissions, 1, 560);
        let second = take(&admissions, 2, 100);
        assert_eq!(second.len(), LIGHT, "light until it holds eight");
    }

    #[test]
    fn places_given_back_are_free_again_and_the_connection_is_forgotten() {
        let admissions = Admissions::new(8, Duration::from_millis(100));
        drop(take(&admissions, 1, 8));
        assert_eq!(admissions.places().available_permits(), 8);
        assert!(admissions.connections.lock().expect("lock").load.is_empty());
    }
}
