//! Media forwarding: a connection's binary frames go straight to the other
//! members of its room, without the core task and without decoding.
//!
//! The core decides who is in which room ([`MediaRouter::set_room`]); each
//! connection task forwards what it reads ([`MediaRouter::forward`]) into
//! the other members' queues and writes what its own queue holds. A full
//! queue drops its oldest frame and counts it: late voice is worth less
//! than current voice. Optional impairment (loss, random or in bursts,
//! delay, jitter, one participant's voice cut) applies per receiver, for
//! demonstrating and testing bad networks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::ids::UserId;
use crate::protocol::{MediaHeader, RoomId, media_source};
use crate::relay::core::ConnId;

/// Frames queued for one receiver: 2.5 s of one sender, 320 ms of eight.
pub const MEDIA_QUEUE_FRAMES: usize = 128;

/// Simulated network trouble on forwarded media; `[relay.impairment]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impairment {
    /// Frames lost, in percent (0 to 100): at random, or in bursts.
    pub loss_percent: f64,
    /// The mean length of a burst of lost frames (Gilbert-Elliott: a path
    /// is good or bad, and loses every frame while bad). 1 or less: each
    /// frame is lost on its own, at random.
    pub loss_burst: f64,
    /// Added to every frame's delivery.
    pub delay_ms: u64,
    /// Up to this much more, at random per frame (frames may reorder).
    pub jitter_ms: u64,
    /// Users whose voice never reaches anyone: one direction of a call cut.
    pub drop_from: Vec<UserId>,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.loss_percent <= 0.0
            && self.delay_ms == 0
            && self.jitter_ms == 0
            && self.drop_from.is_empty()
    }

    pub fn check(&self) -> Result<(), String> {
        self.check_named(&|key| format!("relay.impairment.{key}"))
    }

    /// The check, with each setting called as its file calls it (`key`
    /// gets `loss_percent`, `loss_burst`, `delay_ms` or `jitter_ms`): a
    /// flow's `[relay]` names them `media_loss`, `media_loss_burst`, ...
    pub fn check_named(&self, key: &dyn Fn(&str) -> String) -> Result<(), String> {
        let (loss, burst) = (key("loss_percent"), key("loss_burst"));
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(format!(
                "{loss} is {}; it is a percentage, 0 to 100",
                self.loss_percent
            ));
        }
        if self.delay_ms > 10_000 || self.jitter_ms > 10_000 {
            return Err(format!(
                "{} and {} are at most 10000",
                key("delay_ms"),
                key("jitter_ms")
            ));
        }
        if !(0.0..=1_000.0).contains(&self.loss_burst) {
            return Err(format!(
                "{burst} is {}; it is a mean burst length in frames, 1 to 1000",
                self.loss_burst
            ));
        }
        if self.bursty().is_some_and(|(enter, _)| enter > 1.0) {
            return Err(format!(
                "{}% loss cannot come in bursts of {} frames on average; \
                 lower {loss} or make {burst} longer",
                self.loss_percent, self.loss_burst
            ));
        }
        Ok(())
    }

    /// Whether the next frame on a path is lost. `bad` is the path's
    /// state in bursts, kept by the caller from frame to frame.
    pub fn loses(&self, bad: &mut bool, rng: &mut impl Rng) -> bool {
        match self.bursty() {
            Some((enter, leave)) => {
                *bad = if *bad {
                    !rng.random_bool(leave)
                } else {
                    rng.random_bool(enter)
                };
                *bad
            }
            None => {
                self.loss_percent > 0.0 && rng.random_bool((self.loss_percent / 100.0).min(1.0))
            }
        }
    }

    /// With bursts: the chance per frame that a good path turns bad, and
    /// that a bad one turns good. A path is bad `enter / (enter + leave)`
    /// of the time, `loss_percent`, for `1 / leave` frames at a stretch.
    fn bursty(&self) -> Option<(f64, f64)> {
        let loss = self.loss_percent / 100.0;
        if self.loss_burst <= 1.0 || loss <= 0.0 {
            return None;
        }
        let leave = 1.0 / self.loss_burst;
        if loss >= 1.0 {
            return Some((1.0, 0.0));
        }
        Some((loss * leave / (1.0 - loss), leave))
    }
}

/// Forwarding counters, for the log and the benchmark.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub forwarded: AtomicU64,
    /// Dropped because a receiver's queue was full.
    pub dropped_full: AtomicU64,
    /// Dropped on purpose by the impairment settings.
    pub dropped_impaired: AtomicU64,
    /// Frames from a connection in no room, or for another room.
    pub unrouted: AtomicU64,
    pub malformed: AtomicU64,
    /// Dropped because the sender went past relay.rate_limits.media_frames.
    pub rate_limited: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    pub forwarded: u64,
    pub dropped_full: u64,
    pub dropped_impaired: u64,
    pub unrouted: u64,
    pub malformed: u64,
    pub rate_limited: u64,
}

impl MediaStats {
    pub fn snapshot(&self) -> MediaCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MediaCounts {
            forwarded: get(&self.forwarded),
            dropped_full: get(&self.dropped_full),
            dropped_impaired: get(&self.dropped_impaired),
            unrouted: get(&self.unrouted),
            malformed: get(&self.malformed),
            rate_limited: get(&self.rate_limited),
        }
    }
}

/// One receiver's outgoing media, ordered by when each frame is due.
pub struct MediaQueue {
    frames: Mutex<VecDeque<(Instant, Bytes)>>,
    ready: Notify,
}

impl MediaQueue {
    fn new() -> Self {
        MediaQueue {
            frames: Mutex::new(VecDeque::with_capacity(16)),
            ready: Notify::new(),
        }
    }

    /// Queues `frame` for `due`; false when the oldest frame made room.
    fn push(&self, due: Instant, frame: Bytes) -> bool {
        let mut frames = self.frames.lock().expect("media queue lock");
        let dropped = frames.len() >= MEDIA_QUEUE_FRAMES;
        if dropped {
            frames.pop_front();
        }
        let at = frames
            .iter()
            .rposition(|(d, _)| *d <= due)
            .map_or(0, |i| i + 1);
        frames.insert(at, (due, frame));
        drop(frames);
        self.ready.notify_one();
        !dropped
    }

    /// The next frame, once it is due.
    pub async fn next(&self) -> Bytes {
        loop {
            let wait = {
                let mut frames = self.frames.lock().expect("media queue lock");
                match frames.front() {
                    Some((due, _)) if *due <= Instant::now() => {
                        return frames.pop_front().expect("front exists").1;
                    }
                    Some((due, _)) => Some(*due),
                    None => None,
                }
            };
            match wait {
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.ready.notified() => {}
                    }
                }
                None => self.ready.notified().await,
            }
        }
    }
}

#[derive(Default)]
struct Routes {
    room_of: HashMap<ConnId, RoomId>,
    user_of: HashMap<ConnId, UserId>,
    rooms: HashMap<RoomId, Vec<ConnId>>,
    /// Members that only listen (a call's audience): what they send is
    /// forwarded to nobody.
    listen_only: HashSet<ConnId>,
    queues: HashMap<ConnId, Arc<MediaQueue>>,
}

pub struct MediaRouter {
    routes: RwLock<Routes>,
    impairment: Impairment,
    /// Which sender-to-receiver paths are in a burst of loss now.
    bad_paths: Mutex<HashMap<(ConnId, ConnId), bool>>,
    pub stats: MediaStats,
}

impl MediaRouter {
    pub fn new(impairment: Impairment) -> Self {
        MediaRouter {
            routes: RwLock::default(),
            impairment,
            bad_paths: Mutex::default(),
            stats: MediaStats::default(),
        }
    }

    /// A new connection's queue, for its task to write from.
    pub fn register(&self, conn: ConnId) -> Arc<MediaQueue> {
        let queue = Arc::new(MediaQueue::new());
        self.write().queues.insert(conn, queue.clone());
        queue
    }

    pub fn unregister(&self, conn: ConnId) {
        let mut routes = self.write();
        routes.queues.remove(&conn);
        routes.user_of.remove(&conn);
        drop(routes);
        (self.bad_paths.lock().expect("paths lock"))
            .retain(|(from, to), _| *from != conn && *to != conn);
    }

    /// The core's word on who is in `room` now (empty: nobody), and which
    /// of them only listen.
    pub fn set_room(&self, room: RoomId, members: &[(ConnId, UserId)], audience: &[ConnId]) {
        let mut routes = self.write();
        if let Some(old) = routes.rooms.remove(&room) {
            for conn in old {
                if routes.room_of.get(&conn) == Some(&room) {
                    routes.room_of.remove(&conn);
                    routes.listen_only.remove(&conn);
                }
            }
        }
        if members.is_empty() {
            return;
        }
        for (conn, user) in members {
            routes.room_of.insert(*conn, room);
            routes.user_of.insert(*conn, user.clone());
            routes.listen_only.remove(conn);
        }
        routes.listen_only.extend(audience);
        routes
            .rooms
            .insert(room, members.iter().map(|(c, _)| *c).collect());
    }

    /// A binary frame read from `conn`: stamped with its source and queued
    /// for everyone else in its room. An error is for the sender to hear
    /// about (once; the frame is dropped either way).
    pub fn forward(&self, conn: ConnId, frame: Bytes) -> Result<(), Error> {
        let header = match MediaHeader::decode(&frame) {
            Ok((header, _)) => header,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let routes = self.routes.read().expect("media routes lock");
        let room = routes.room_of.get(&conn).filter(|r| **r == header.room);
        let Some(&room) = room.filter(|_| !routes.listen_only.contains(&conn)) else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let mut stamped = BytesMut::from(&frame[..]);
        MediaHeader::stamp_source(&mut stamped, media_source(conn));
        let stamped = stamped.freeze();
        let now = Instant::now();
        let cut =
            (routes.user_of.get(&conn)).is_some_and(|u| self.impairment.drop_from.contains(u));
        for other in routes.rooms[&room].iter().filter(|c| **c != conn) {
            let Some(queue) = routes.queues.get(other) else {
                continue;
            };
            let due = if cut {
                None
            } else {
                self.impair(now, (conn, *other))
            };
            let Some(due) = due else {
                self.stats.dropped_impaired.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if queue.push(due, stamped.clone()) {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// When a frame forwarded at `now` on `path` is due, or `None` to lose it.
    fn impair(&self, now: Instant, path: (ConnId, ConnId)) -> Option<Instant> {
        let i = &self.impairment;
        if i.is_none() {
            return Some(now);
        }
        let mut rng = rand::rng();
        let lost = match i.bursty() {
            Some(_) => {
                let mut paths = self.bad_paths.lock().expect("paths lock");
                i.loses(paths.entry(path).or_insert(false), &mut rng)
            }
            None => i.loses(&mut false, &mut rng),
        };
        if lost {
            return None;
        }
        let jitter = if i.jitter_ms > 0 {
            rng.random_range(0..=i.jitter_ms)
        } else {
            0
        };
        Some(now + Duration::from_millis(i.delay_ms + jitter))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().expect("media routes lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MediaKind;

    fn frame(room: RoomId, seq: u16) -> Bytes {
        MediaHeader {
            kind: MediaKind::Voice,
            room,
            source: 0,
            seq,
            timestamp: 0,
        }
        .encode(b"voice")
        .into()
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn frames_reach_the_others_in_the_room_stamped_with_their_source() {
        let router = MediaRouter::new(Impairment::default());
        let (a, b, c) = (router.register(1), router.register(2), router.register(3));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        router.forward(1, frame(9, 5)).unwrap();
        let got = b.next().await;
        let (header, payload) = MediaHeader::decode(&got).unwrap();
        assert_eq!((header.source, header.seq, payload), (1, 5, &b"voice"[..]));
        // Not back to the sender, not to a connection outside the room.
        for q in [&a, &c] {
            assert!(q.frames.lock().unwrap().is_empty());
        }
        // A frame for a room its sender is not in goes nowhere.
        router.forward(3, frame(9, 6)).unwrap();
        router.forward(1, frame(8, 7)).unwrap();
        assert_eq!(router.stats.unrouted.load(Ordering::Relaxed), 2);
        assert!(router.forward(1, Bytes::from_static(b"xx")).is_err());
        // The room closes: nothing is forwarded any more.
        router.set_room(9, &[], &[]);
        router.forward(1, frame(9, 8)).unwrap();
        assert!(b.frames.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_audience_hears_the_room_and_its_own_frames_go_nowhere() {
        let router = MediaRouter::new(Impairment::default());
        let (a, b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[2]);
        router.forward(1, frame(9, 1)).unwrap();
        assert_eq!(MediaHeader::decode(&b.next().await).unwrap().0.source, 1);
        router.forward(2, frame(9, 2)).unwrap();
        assert!(a.frames.lock().unwrap().is_empty());
        assert_eq!(router.stats.unrouted.load(Ordering::Relaxed), 1);
        // bob becomes an anchor: he is heard.
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        router.forward(2, frame(9, 3)).unwrap();
        assert_eq!(MediaHeader::decode(&a.next().await).unwrap().0.seq, 3);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_frame_and_counts_it() {
        let router = MediaRouter::new(Impairment::default());
        router.register(1);
        let b = router.register(2);
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        for seq in 0..MEDIA_QUEUE_FRAMES as u16 + 3 {
            router.forward(1, frame(9, seq)).unwrap();
        }
        assert_eq!(router.stats.dropped_full.load(Ordering::Relaxed), 3);
        let frames = b.frames.lock().unwrap();
        let first = MediaHeader::decode(&frames[0].1).unwrap().0.seq;
        assert_eq!(first, 3, "the oldest went first");
    }

    #[test]
    fn impairment_loses_about_the_share_it_is_told_to() {
        let router = MediaRouter::new(Impairment {
            loss_percent: 10.0,
            ..Impairment::default()
        });
        router.register(1);
        let b = router.register(2);
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        for seq in 0..1000 {
            router.forward(1, frame(9, seq)).unwrap();
            b.frames.lock().unwrap().clear();
        }
        let lost = router.stats.dropped_impaired.load(Ordering::Relaxed);
        assert!((50..=160).contains(&lost), "{lost} of 1000");
    }

    /// Which of `n` frames from alice reach bob.
    fn delivered(router: &MediaRouter, n: u16) -> Vec<bool> {
        let b = router.register(2);
        router.register(1);
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        (0..n)
            .map(|seq| {
                router.forward(1, frame(9, seq)).unwrap();
                let arrived = !b.frames.lock().unwrap().is_empty();
                b.frames.lock().unwrap().clear();
                arrived
            })
            .collect()
    }

    #[test]
    fn bursty_loss_keeps_its_rate_and_loses_frames_in_runs() {
        let router = MediaRouter::new(Impairment {
            loss_percent: 10.0,
            loss_burst: 3.0,
            ..Impairment::default()
        });
        let got = delivered(&router, 20_000);
        let lost = got.iter().filter(|d| !**d).count();
        assert!((1_500..=2_500).contains(&lost), "{lost} of 20000");
        let bursts = got.windows(2).filter(|w| w[0] && !w[1]).count().max(1);
        let mean = lost as f64 / bursts as f64;
        assert!((2.4..=3.6).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn a_cut_sender_reaches_nobody_and_the_others_still_get_through() {
        let router = MediaRouter::new(Impairment {
            drop_from: vec![user("alice")],
            ..Impairment::default()
        });
        assert!(delivered(&router, 50).iter().all(|d| !d));
        let a = router.register(3);
        router.set_room(
            9,
            &[(1, user("alice")), (2, user("bob")), (3, user("carol"))],
            &[],
        );
        router.forward(2, frame(9, 1)).unwrap();
        assert_eq!(a.frames.lock().unwrap().len(), 1, "bob's voice still flows");
    }

    #[test]
    fn a_burst_that_cannot_hold_its_loss_rate_is_refused() {
        let i = Impairment {
            loss_percent: 90.0,
            loss_burst: 2.0,
            ..Impairment::default()
        };
        assert!(i.check().unwrap_err().contains("bursts of 2 frames"));
        // A flow names the settings its own way.
        let flow = i.check_named(&|key| format!("media_{key}")).unwrap_err();
        assert!(
            flow.ends_with("lower media_loss_percent or make media_loss_burst longer"),
            "{flow}"
        );
        let i = Impairment {
            loss_percent: 5.0,
            loss_burst: 3.0,
            ..Impairment::default()
        };
        assert!(i.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_frames_until_they_are_due() {
        let router = MediaRouter::new(Impairment {
            delay_ms: 50,
            ..Impairment::default()
        });
        router.register(1);
        let b = router.register(2);
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        let sent = tokio::time::Instant::now();
        router.forward(1, frame(9, 1)).unwrap();
        b.next().await;
        assert!(sent.elapsed() >= Duration::from_millis(50));
    }
}
