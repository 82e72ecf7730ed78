//! Media forwarding: a connection's binary frames go straight to the other
//! members of its room, without the core task and without decoding.
//!
//! The core decides who is in which room ([`MediaRouter::set_room`]); each
//! connection task forwards what it reads ([`MediaRouter::forward`]) into
//! the other members' queues and writes what its own queue holds, both
//! through its [`MediaPort`], which it owns: the route its frames take
//! reaches it through its queue, so that forwarding a frame reads the
//! task's own memory and the receivers' queues, nothing else. A full
//! queue drops its oldest frame and counts it: late voice is worth less
//! than current voice. Optional impairment (loss, random or in bursts,
//! delay, jitter, one participant's voice cut) applies per receiver, for
//! demonstrating and testing bad networks.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use rand::Rng;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};

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
    /// The most media each sender-to-receiver path carries, in kbit/s of
    /// frames (headers included), with 100 ms of burst; frames beyond are
    /// lost, as a saturated link loses them. 0: no cap.
    pub bandwidth_kbps: u64,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.loss_percent <= 0.0
            && self.delay_ms == 0
            && self.jitter_ms == 0
            && self.drop_from.is_empty()
            && self.bandwidth_kbps == 0
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
        if self.bandwidth_kbps > 1_000_000 {
            return Err(format!(
                "{} is {}; it is at most 1000000 (1 Gbit/s), or 0 for no cap",
                key("bandwidth_kbps"),
                self.bandwidth_kbps
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

/// A path's bandwidth cap (`Impairment::bandwidth_kbps`), sans IO: a token
/// bucket refilled at the cap and holding 100 ms of it (never less than the
/// frame at hand, so that any frame can pass). The relay runs one per
/// sender-to-receiver path on its clock; a simulation (examples/
/// voice_over_loss.rs, the media tests) on virtual time.
#[derive(Clone, Debug)]
pub struct BandwidthCap {
    bytes_per_second: f64,
    /// Bytes that may pass now, as of `at` (`None` until the first frame:
    /// a path starts with a full bucket).
    bytes: f64,
    at: Option<Duration>,
}

impl BandwidthCap {
    pub fn new(kbps: u64) -> Self {
        BandwidthCap {
            bytes_per_second: kbps as f64 * 1000.0 / 8.0,
            bytes: 0.0,
            at: None,
        }
    }

    /// Whether a frame of `len` bytes passes at `now` (any fixed origin,
    /// never going back); one that does takes its bytes from the bucket.
    pub fn fits(&mut self, now: Duration, len: usize) -> bool {
        let depth = (self.bytes_per_second / 10.0).max(len as f64);
        self.bytes = match self.at {
            None => depth,
            Some(at) => {
                let refill = now.saturating_sub(at).as_secs_f64() * self.bytes_per_second;
                (self.bytes + refill).min(depth)
            }
        };
        self.at = Some(now);
        let fits = self.bytes >= len as f64;
        if fits {
            self.bytes -= len as f64;
        }
        fits
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
struct MediaQueue {
    state: Mutex<Queued>,
    /// The receiving connection's task, woken when a frame is queued or the
    /// queue closes. Unlike a `Notify`, whose waiters its task would join and
    /// leave again on every wake-up, this is one atomic slot.
    waker: AtomicWaker,
}

#[derive(Default)]
struct Queued {
    /// Each frame with when it is due: `None` at once (only impairment
    /// delays a frame, and then every frame has its time).
    frames: VecDeque<(Option<Instant>, Bytes)>,
    /// The core's latest word on where the connection's own frames go, not
    /// yet taken by its port (`Some(None)`: out of every room).
    route: Option<Option<Route>>,
    /// [`PortWaker::wake`] was called since the task last looked.
    woken: bool,
    /// The connection is gone, or the relay is shutting down.
    closed: bool,
}

/// What became of a frame given to a queue.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Queued, and the oldest frame dropped to make room.
    DroppedOldest,
    /// Not queued: its receiver is gone.
    Closed,
}

impl MediaQueue {
    fn new() -> Self {
        MediaQueue {
            state: Mutex::new(Queued {
                frames: VecDeque::with_capacity(16),
                ..Queued::default()
            }),
            waker: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().expect("media queue lock")
    }

    fn push(&self, due: Option<Instant>, frame: Bytes) -> Pushed {
        let mut queued = self.lock();
        if queued.closed {
            return Pushed::Closed;
        }
        let frames = &mut queued.frames;
        let dropped = frames.len() >= MEDIA_QUEUE_FRAMES;
        if dropped {
            frames.pop_front();
        }
        let at = frames
            .iter()
            .rposition(|(d, _)| *d <= due)
            .map_or(0, |i| i + 1);
        frames.insert(at, (due, frame));
        drop(queued);
        self.waker.wake();
        match dropped {
            true => Pushed::DroppedOldest,
            false => Pushed::Queued,
        }
    }

    /// A new route for the connection's own frames, for its port to take
    /// on its next look.
    fn set_route(&self, route: Option<Route>) {
        let mut queued = self.lock();
        if queued.closed {
            return;
        }
        queued.route = Some(route);
        drop(queued);
        self.waker.wake();
    }

    /// No more frames: what is queued is dropped, and the receiver's
    /// [`MediaPort`] stream ends.
    fn close(&self) {
        let mut queued = self.lock();
        queued.closed = true;
        queued.frames.clear();
        drop(queued);
        self.waker.wake();
    }
}

/// Where a connection's frames go while it is in a room.
struct Route {
    room: RoomId,
    /// A member that only listens (a call's audience): what it sends is
    /// forwarded to nobody.
    listen_only: bool,
    /// Its user's voice is cut by the impairment settings (`drop_from`).
    cut: bool,
    /// The other members, with their queues.
    peers: Peers,
}

/// A route's other members: the one of a call of two, which most calls
/// are, held in the route itself, so that forwarding a frame reads no list.
enum Peers {
    One([(ConnId, Arc<MediaQueue>); 1]),
    Many(Vec<(ConnId, Arc<MediaQueue>)>),
}

impl Peers {
    fn new(peers: Vec<(ConnId, Arc<MediaQueue>)>) -> Self {
        match <[_; 1]>::try_from(peers) {
            Ok(one) => Peers::One(one),
            Err(many) => Peers::Many(many),
        }
    }

    fn as_slice(&self) -> &[(ConnId, Arc<MediaQueue>)] {
        match self {
            Peers::One(one) => one,
            Peers::Many(many) => many,
        }
    }
}

/// One connection's end of the router, owned by its task: the frames
/// queued for it, and where its own frames go. As a stream it yields the
/// frames to write, each once it is due, and the task's wake-ups; it ends
/// when the router closes it (the relay is shutting down).
pub struct MediaPort {
    conn: ConnId,
    queue: Arc<MediaQueue>,
    /// As the core last said ([`MediaRouter::set_room`]), taken from the
    /// queue whenever the task polls the port; `None` outside any room.
    route: Option<Route>,
    /// Wakes the task when the next frame is due, if it is not yet (only
    /// with impairment's delay or jitter, hence made on first need).
    timer: Option<Pin<Box<Sleep>>>,
}

impl MediaPort {
    /// What wakes the connection's task for what else it has to write.
    pub fn waker(&self) -> PortWaker {
        PortWaker(self.queue.clone())
    }

    /// Takes the route the core last gave, if the port has not yet: for a
    /// task about to forward a frame it read without polling the port.
    pub fn take_route(&mut self) {
        if let Some(route) = self.queue.lock().route.take() {
            self.route = route;
        }
    }
}

/// Wakes a connection's task for what else it has to write (the core's
/// messages): its [`MediaPort`] yields [`Outgoing::Woken`]. The task then
/// waits on its socket and its port alone, instead of polling a second
/// queue on every wake-up that a frame causes.
pub struct PortWaker(Arc<MediaQueue>);

impl PortWaker {
    pub fn wake(&self) {
        self.0.lock().woken = true;
        self.0.waker.wake();
    }
}

/// What a connection's task is woken for by its port.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A frame to write.
    Frame(Bytes),
    /// See [`PortWaker::wake`].
    Woken,
}

impl Stream for MediaPort {
    type Item = Outgoing;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let this = &mut *self;
        // Before looking: a frame queued after the look wakes the task.
        this.queue.waker.register(cx.waker());
        loop {
            let due = {
                let mut queued = this.queue.lock();
                if queued.closed {
                    return Poll::Ready(None);
                }
                if let Some(route) = queued.route.take() {
                    this.route = route;
                }
                if queued.woken {
                    queued.woken = false;
                    return Poll::Ready(Some(Outgoing::Woken));
                }
                match queued.frames.front() {
                    None => return Poll::Pending,
                    Some((Some(due), _)) if *due > Instant::now() => *due,
                    Some(_) => {
                        let frame = queued.frames.pop_front().map(|(_, f)| f);
                        return Poll::Ready(frame.map(Outgoing::Frame));
                    }
                }
            };
            let timer = (this.timer).get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A registered connection, as the router knows it.
struct Registered {
    queue: Arc<MediaQueue>,
    /// The room its route names, if any.
    room: Option<RoomId>,
}

#[derive(Default)]
struct Routes {
    ports: HashMap<ConnId, Registered>,
    rooms: HashMap<RoomId, Vec<ConnId>>,
    /// The relay is shutting down: every port is closed, and so is one
    /// registered from now on.
    closed: bool,
}

pub struct MediaRouter {
    /// Changed when the core's word on rooms changes and when connections
    /// come and go; forwarding a frame does not read it.
    routes: Mutex<Routes>,
    impairment: Impairment,
    /// `!impairment.is_none()`, read for every frame.
    impaired: bool,
    /// Which sender-to-receiver paths are in a burst of loss now.
    bad_paths: Mutex<HashMap<(ConnId, ConnId), bool>>,
    /// Each path's bandwidth cap, on the clock since `epoch`.
    buckets: Mutex<HashMap<(ConnId, ConnId), BandwidthCap>>,
    epoch: Instant,
    pub stats: MediaStats,
}

impl MediaRouter {
    pub fn new(impairment: Impairment) -> Self {
        MediaRouter {
            routes: Mutex::default(),
            impaired: !impairment.is_none(),
            impairment,
            bad_paths: Mutex::default(),
            buckets: Mutex::default(),
            epoch: Instant::now(),
            stats: MediaStats::default(),
        }
    }

    /// A new connection's port, for its task to forward and write through.
    pub fn register(&self, conn: ConnId) -> MediaPort {
        let queue = Arc::new(MediaQueue::new());
        let mut routes = self.routes();
        if routes.closed {
            queue.close();
        }
        let registered = Registered {
            queue: queue.clone(),
            room: None,
        };
        routes.ports.insert(conn, registered);
        MediaPort {
            conn,
            queue,
            route: None,
            timer: None,
        }
    }

    /// The connection is gone. The others' routes may still name its
    /// queue until the core's next word on their room: closed, it takes
    /// nothing.
    pub fn unregister(&self, conn: ConnId) {
        let port = self.routes().ports.remove(&conn);
        if let Some(port) = port {
            port.queue.close();
        }
        (self.bad_paths.lock().expect("paths lock"))
            .retain(|(from, to), _| *from != conn && *to != conn);
        (self.buckets.lock().expect("buckets lock"))
            .retain(|(from, to), _| *from != conn && *to != conn);
    }

    /// The relay is shutting down: every connection's port ends, which is
    /// how its task learns that it must close. It waits on its port anyway;
    /// a shutdown signal of its own would be one more thing to poll on
    /// every wake-up of every connection.
    pub fn shut_down(&self) {
        let mut routes = self.routes();
        routes.closed = true;
        for port in routes.ports.values() {
            port.queue.close();
        }
    }

    /// The core's word on who is in `room` now (empty: nobody), and which
    /// of them only listen. Each member's port takes its new route on its
    /// task's next look.
    pub fn set_room(&self, room: RoomId, members: &[(ConnId, UserId)], audience: &[ConnId]) {
        let mut routes = self.routes();
        for conn in routes.rooms.remove(&room).unwrap_or_default() {
            if members.iter().any(|(member, _)| *member == conn) {
                continue;
            }
            if let Some(port) = (routes.ports.get_mut(&conn)).filter(|p| p.room == Some(room)) {
                port.room = None;
                port.queue.set_route(None);
            }
        }
        if members.is_empty() {
            return;
        }
        let queues: Vec<(ConnId, Arc<MediaQueue>)> = members
            .iter()
            .filter_map(|(conn, _)| Some((*conn, routes.ports.get(conn)?.queue.clone())))
            .collect();
        for (conn, user) in members {
            let Some(port) = routes.ports.get_mut(conn) else {
                continue;
            };
            port.room = Some(room);
            port.queue.set_route(Some(Route {
                room,
                listen_only: audience.contains(conn),
                cut: self.impairment.drop_from.contains(user),
                peers: Peers::new(queues.iter().filter(|(c, _)| c != conn).cloned().collect()),
            }));
        }
        routes
            .rooms
            .insert(room, members.iter().map(|(c, _)| *c).collect());
    }

    /// A binary frame read from `port`'s connection: stamped with its
    /// source and queued for everyone else in its room. An error is for the
    /// sender to hear about (once; the frame is dropped either way).
    pub fn forward(&self, port: &MediaPort, frame: Bytes) -> Result<(), Error> {
        let header = match MediaHeader::decode(&frame) {
            Ok((header, _)) => header,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let Some(route) = (port.route.as_ref()).filter(|r| r.room == header.room && !r.listen_only)
        else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        // The one copy: the frame as read shares the WebSocket's read
        // buffer with the frames after it, so it cannot be stamped in place.
        let mut stamped = BytesMut::from(&frame[..]);
        drop(frame);
        MediaHeader::stamp_source(&mut stamped, media_source(port.conn));
        let mut stamped = stamped.freeze();
        let now = self.impaired.then(Instant::now);
        let peers = route.peers.as_slice();
        let last = peers.len().saturating_sub(1);
        for (i, (other, queue)) in peers.iter().enumerate() {
            let due = match now {
                None => None,
                Some(now) => {
                    match self.impair(route.cut, now, (port.conn, *other), stamped.len()) {
                        Some(due) => Some(due),
                        None => {
                            self.stats.dropped_impaired.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
            };
            // The last receiver takes the frame itself: a frame that is
            // not shared needs no reference count.
            let frame = match i < last {
                true => stamped.clone(),
                false => std::mem::take(&mut stamped),
            };
            match queue.push(due, frame) {
                Pushed::Queued => &self.stats.forwarded,
                Pushed::DroppedOldest => &self.stats.dropped_full,
                Pushed::Closed => continue,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// When a frame forwarded at `now` on `path` is due, or `None` to lose
    /// it (all of them when its sender's voice is `cut`).
    fn impair(
        &self,
        cut: bool,
        now: Instant,
        path: (ConnId, ConnId),
        len: usize,
    ) -> Option<Instant> {
        if cut {
            return None;
        }
        let i = &self.impairment;
        let mut rng = rand::rng();
        let lost = match i.bursty() {
            Some(_) => {
                let mut paths = self.bad_paths.lock().expect("paths lock");
                i.loses(paths.entry(path).or_insert(false), &mut rng)
            }
            None => i.loses(&mut false, &mut rng),
        };
        if lost || !self.fits(now, path, len) {
            return None;
        }
        let jitter = if i.jitter_ms > 0 {
            rng.random_range(0..=i.jitter_ms)
        } else {
            0
        };
        Some(now + Duration::from_millis(i.delay_ms + jitter))
    }

    /// Whether a frame of `len` bytes fits `path`'s bandwidth at `now`.
    fn fits(&self, now: Instant, path: (ConnId, ConnId), len: usize) -> bool {
        let kbps = self.impairment.bandwidth_kbps;
        if kbps == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let cap = buckets
            .entry(path)
            .or_insert_with(|| BandwidthCap::new(kbps));
        cap.fits(now.duration_since(self.epoch), len)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().expect("media routes lock")
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

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

    /// What is queued for `port`, due or not.
    fn queued(port: &MediaPort) -> Vec<Bytes> {
        let queued = port.queue.lock();
        queued.frames.iter().map(|(_, f)| f.clone()).collect()
    }

    fn clear(port: &MediaPort) {
        port.queue.lock().frames.clear();
    }

    /// Each port takes the route the core last gave it, as its task does
    /// whenever it polls its port.
    fn look(ports: &mut [&mut MediaPort]) {
        for port in ports {
            assert_eq!(port.next().now_or_never(), None, "nothing to write yet");
        }
    }

    async fn next(port: &mut MediaPort) -> Bytes {
        match port.next().await {
            Some(Outgoing::Frame(frame)) => frame,
            other => panic!("a frame, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_reach_the_others_in_the_room_stamped_with_their_source() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b, mut c) = (router.register(1), router.register(2), router.register(3));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b, &mut c]);
        router.forward(&a, frame(9, 5)).unwrap();
        let got = next(&mut b).await;
        let (header, payload) = MediaHeader::decode(&got).unwrap();
        assert_eq!((header.source, header.seq, payload), (1, 5, &b"voice"[..]));
        // Not back to the sender, not to a connection outside the room.
        for port in [&a, &c] {
            assert!(queued(port).is_empty());
        }
        // A frame for a room its sender is not in goes nowhere.
        router.forward(&c, frame(9, 6)).unwrap();
        router.forward(&a, frame(8, 7)).unwrap();
        assert_eq!(router.stats.unrouted.load(Ordering::Relaxed), 2);
        assert!(router.forward(&a, Bytes::from_static(b"xx")).is_err());
        // The room closes: nothing is forwarded any more.
        router.set_room(9, &[], &[]);
        look(&mut [&mut a, &mut b]);
        router.forward(&a, frame(9, 8)).unwrap();
        assert!(queued(&b).is_empty());
    }

    #[tokio::test]
    async fn the_audience_hears_the_room_and_its_own_frames_go_nowhere() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[2]);
        look(&mut [&mut a, &mut b]);
        router.forward(&a, frame(9, 1)).unwrap();
        assert_eq!(
            MediaHeader::decode(&next(&mut b).await).unwrap().0.source,
            1
        );
        router.forward(&b, frame(9, 2)).unwrap();
        assert!(queued(&a).is_empty());
        assert_eq!(router.stats.unrouted.load(Ordering::Relaxed), 1);
        // bob becomes an anchor: he is heard.
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        router.forward(&b, frame(9, 3)).unwrap();
        assert_eq!(MediaHeader::decode(&next(&mut a).await).unwrap().0.seq, 3);
    }

    #[test]
    fn leaving_a_room_leaves_a_route_to_another_alone() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b, mut c) = (router.register(1), router.register(2), router.register(3));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        // alice moves to room 8 before her port has looked; room 9 then
        // loses her.
        router.set_room(8, &[(1, user("alice")), (3, user("carol"))], &[]);
        router.set_room(9, &[(2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b, &mut c]);
        router.forward(&a, frame(8, 1)).unwrap();
        router.forward(&a, frame(9, 2)).unwrap();
        assert_eq!(queued(&c).len(), 1);
        assert!(queued(&b).is_empty());
        assert_eq!(router.stats.unrouted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_frame_and_counts_it() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        for seq in 0..MEDIA_QUEUE_FRAMES as u16 + 3 {
            router.forward(&a, frame(9, seq)).unwrap();
        }
        assert_eq!(router.stats.dropped_full.load(Ordering::Relaxed), 3);
        let frames = queued(&b);
        let first = MediaHeader::decode(&frames[0]).unwrap().0.seq;
        assert_eq!(first, 3, "the oldest went first");
    }

    /// 30 kbit/s carry half of a 60 kbit/s voice (150-byte frames every 20
    /// ms): the cap loses what does not fit, after 100 ms of burst. On
    /// tokio's paused clock, which the router reads: exact, and instant.
    #[tokio::test(start_paused = true)]
    async fn a_bandwidth_cap_loses_what_does_not_fit() {
        let router = MediaRouter::new(Impairment {
            bandwidth_kbps: 30,
            ..Impairment::default()
        });
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        let big = |seq: u16| {
            let mut frame = BytesMut::from(&frame(9, seq)[..]);
            frame.resize(150, 0);
            frame.freeze()
        };
        let start = Instant::now();
        let (mut sent, mut kept) = (0, 0);
        for seq in 0..100u16 {
            let due = start + Duration::from_millis(20 * u64::from(seq));
            tokio::time::sleep_until(due).await;
            router.forward(&a, big(seq)).unwrap();
            sent += 1;
            kept += queued(&b).len();
            clear(&b);
        }
        assert_eq!(sent, 100);
        // 2 s at 3,750 bytes a second, plus the 375 bytes of burst: 52 frames.
        assert_eq!(kept, 52, "{kept} of {sent} frames");
        let dropped = router.stats.dropped_impaired.load(Ordering::Relaxed);
        assert_eq!(dropped as usize, sent - kept);
    }

    #[tokio::test]
    async fn a_shutdown_ends_every_port_and_a_gone_receiver_takes_nothing() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b, c) = (router.register(1), router.register(2), router.register(3));
        router.set_room(
            9,
            &[(1, user("alice")), (2, user("bob")), (3, user("carol"))],
            &[],
        );
        look(&mut [&mut a, &mut b]);
        router.unregister(3);
        router.forward(&a, frame(9, 1)).unwrap();
        assert_eq!(queued(&b).len(), 1);
        assert!(queued(&c).is_empty());
        let counts = router.stats.snapshot();
        assert_eq!((counts.forwarded, counts.dropped_full), (1, 0));
        router.shut_down();
        assert_eq!(a.next().await, None);
        assert_eq!(b.next().await, None, "queued frames go too");
        // One that registers while the relay shuts down is closed at once.
        assert_eq!(router.register(4).next().await, None);
    }

    #[tokio::test]
    async fn a_wake_up_comes_once_and_before_queued_frames() {
        let router = MediaRouter::new(Impairment::default());
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        router.forward(&a, frame(9, 1)).unwrap();
        b.waker().wake();
        b.waker().wake();
        assert_eq!(b.next().await, Some(Outgoing::Woken));
        assert!(matches!(b.next().await, Some(Outgoing::Frame(_))));
        let more = futures_util::future::poll_immediate(b.next()).await;
        assert!(more.is_none(), "one wake-up, however many calls");
    }

    #[test]
    fn impairment_loses_about_the_share_it_is_told_to() {
        let router = MediaRouter::new(Impairment {
            loss_percent: 10.0,
            ..Impairment::default()
        });
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        for seq in 0..1000 {
            router.forward(&a, frame(9, seq)).unwrap();
            clear(&b);
        }
        let lost = router.stats.dropped_impaired.load(Ordering::Relaxed);
        assert!((50..=160).contains(&lost), "{lost} of 1000");
    }

    /// Which of `n` frames from alice reach bob.
    fn delivered(router: &MediaRouter, n: u16) -> Vec<bool> {
        let (mut b, mut a) = (router.register(2), router.register(1));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        (0..n)
            .map(|seq| {
                router.forward(&a, frame(9, seq)).unwrap();
                let arrived = !queued(&b).is_empty();
                clear(&b);
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
        let (mut a, mut b, mut c) = (router.register(3), router.register(4), router.register(5));
        router.set_room(
            9,
            &[(3, user("alice")), (4, user("bob")), (5, user("carol"))],
            &[],
        );
        look(&mut [&mut a, &mut b, &mut c]);
        router.forward(&a, frame(9, 1)).unwrap();
        router.forward(&b, frame(9, 2)).unwrap();
        let heard: Vec<u16> = queued(&c)
            .iter()
            .map(|f| MediaHeader::decode(f).unwrap().0.seq)
            .collect();
        assert_eq!(heard, [2], "bob's voice still flows, alice's does not");
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
        let (mut a, mut b) = (router.register(1), router.register(2));
        router.set_room(9, &[(1, user("alice")), (2, user("bob"))], &[]);
        look(&mut [&mut a, &mut b]);
        let sent = tokio::time::Instant::now();
        router.forward(&a, frame(9, 1)).unwrap();
        next(&mut b).await;
        assert!(sent.elapsed() >= Duration::from_millis(50));
    }
}
