//! The media of one call on one device, sans IO: what to send for each
//! captured frame, and what to play for each tick, from whatever arrived.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::level_dbfs;
use super::budget::{self, Allocation};
use super::codec::{CodecSettings, Decoder, Encoder};
use super::control::Digit;
use super::dtmf::{DtmfReceiver, DtmfSender, KeyTone};
use super::feedback::{self, Plan, Reception};
use super::jitter::{JitterBuffer, JitterStats, Pace, Playout};
use super::level::level;
use super::quality::{Measurement, Quality, grade};
use super::rate::{RateControl, Sent, Window};
use super::redundancy;
use super::stretch;
use super::{FRAME_SAMPLES, Frame};
use crate::error::{Error, ErrorCode};
use crate::ids::UserId;
use crate::protocol::{
    MAX_MEDIA_PAYLOAD_BYTES, MediaHeader, MediaKind, MediaPeer, MediaSource, RoomId,
};

type Millis = u64;

/// Below this a decoded frame is quiet (room noise at most).
const QUIET_DBFS: f64 = -45.0;

/// Quiet frames in a row that make a pause, where the jitter buffer's depth
/// may change unheard: 200 ms. A change of timing within a word, or in the
/// short quiet of a stop consonant, is heard (and costs PESQ-WB up to 0.9
/// on one 20 ms frame; docs/benchmarks.md).
const PAUSE_FRAMES: u32 = 10;

/// Copies each frame of a new stream carries, before any report has said
/// what the network loses: as many as the receiver's jitter buffer has
/// room for while it starts three frames deep, so they cost no delay.
/// Without them the frames lost in a call's first seconds were played
/// concealed (2 to 5 a call under 5% bursty loss; docs/benchmarks.md).
const START_COPIES: usize = 2;

/// Frames (2 s) a new stream carries its copies for, unless a report of a
/// loss hands over to the plan first: two clean reports, not one, since at
/// 5% loss in bursts one second in two loses nothing.
const START_FRAMES: u64 = 100;

/// Loss (0.1%) in a report of a new stream's first seconds that its
/// copies may have caused: a path capped under the voice and its copies
/// (150 kbit/s) loses half of them or more, where bursty loss of a few
/// percent seldom loses a quarter of a second's frames. The copies stop,
/// and the report is not answered: the next, of the voice alone, says
/// what the path does (a capped path answered with copies and a budget
/// lost up to 0.5 PESQ-WB; docs/benchmarks.md).
const START_HEAVY_LOSS_PERMILLE: u16 = 250;

/// The in-band FEC planned while frames carry two copies or more (percent):
/// a burst longer than the copies leaves its last lost frame to the FEC of
/// the first copy that comes. With one copy a loss must come three in a
/// row to get past it, rare at the loss that calls for one, and FEC's bits
/// would only cost the voice.
const FEC_WITH_COPIES: i32 = 10;

/// One remote participant's stream.
struct Peer {
    user: Option<UserId>,
    jitter: JitterBuffer,
    decoder: Decoder,
    /// Decoded voice not played yet: less than a frame, or more while the
    /// player plays faster than the clock.
    decoded: Vec<f32>,
    /// Quiet frames decoded in a row.
    quiet_run: u32,
    /// Loudest level played since the last report.
    level: u8,
    /// Its DTMF digits, each heard once.
    dtmf: DtmfReceiver,
    /// Counters at the start of the current quality window.
    window_start: JitterStats,
    /// Counters at the last receiver report about it.
    reported: JitterStats,
}

impl Peer {
    /// A stream starting afresh; `None` when no decoder can be made.
    fn new(user: Option<UserId>) -> Option<Peer> {
        Some(Peer {
            user,
            jitter: JitterBuffer::new(),
            decoder: Decoder::new().ok()?,
            decoded: Vec::with_capacity(3 * FRAME_SAMPLES),
            quiet_run: 0,
            level: 0,
            dtmf: DtmfReceiver::default(),
            window_start: JitterStats::default(),
            reported: JitterStats::default(),
        })
    }

    /// The next 20 ms of this participant's voice into `out`, or `false`
    /// when there is none (not started, or paused). The jitter buffer's
    /// depth changes where it is not heard: a quiet frame skipped or a
    /// quiet tick added well into a pause; after a second of speech above its
    /// target, voice time-compressed, a frame's worth of which brings the
    /// next frame out a tick early.
    fn play(&mut self, out: &mut Frame) -> bool {
        while self.decoded.len() < FRAME_SAMPLES {
            match self.jitter.pop() {
                Playout::Frame(packet) => self.decoder.decode(&packet, out),
                Playout::Fec(next) => self.decoder.decode_fec(&next, out),
                Playout::Conceal => self.decoder.conceal(out),
                Playout::Silence if self.decoded.is_empty() => return false,
                Playout::Silence => {
                    self.decoded.resize(FRAME_SAMPLES, 0.0);
                    break;
                }
            }
            self.quiet_run = if level_dbfs(out) < QUIET_DBFS {
                self.quiet_run.saturating_add(1)
            } else {
                0
            };
            let quiet = self.quiet_run >= PAUSE_FRAMES;
            match self.jitter.pace() {
                Pace::Shrink { .. } if quiet => {
                    self.jitter.skipped();
                    continue;
                }
                Pace::Grow if quiet => {
                    self.decoded.extend_from_slice(out);
                    // The decoder carries the quiet on for a tick more.
                    self.decoder.conceal(out);
                    self.jitter.held();
                }
                Pace::Shrink { faster: true } => {
                    self.decoded.extend_from_slice(out);
                    let left_out = stretch::accelerate(&mut self.decoded);
                    self.jitter.accelerated(left_out);
                    continue;
                }
                _ => {}
            }
            self.decoded.extend_from_slice(out);
        }
        out.copy_from_slice(&self.decoded[..FRAME_SAMPLES]);
        self.decoded.drain(..FRAME_SAMPLES);
        true
    }
}

/// Per-participant figures of one quality window.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerQuality {
    pub user: UserId,
    pub quality: Quality,
    pub measurement: Measurement,
}

pub struct CallMedia {
    me: UserId,
    room: RoomId,
    encoder: Encoder,
    seq: u16,
    timestamp: u32,
    muted: bool,
    /// Only listens (a group call's audience): sends nothing at all.
    listening: bool,
    /// Digits going out as telephone events, on their own sequence numbers.
    dtmf: DtmfSender,
    event_seq: u16,
    /// The key tone of the digit going out, under what this device plays.
    key_tone: Option<KeyTone>,
    /// Digits heard from the others, and from which source, not yet reported.
    digits: Vec<(MediaSource, Digit)>,
    /// Loudest captured level since the last report.
    my_level: u8,
    names: BTreeMap<MediaSource, UserId>,
    peers: BTreeMap<MediaSource, Peer>,
    /// Sources the relay said no longer send here (one held the call, or
    /// left it): their frames still on the way are dropped, and one that
    /// comes back starts a new stream, so that the gap is not loss.
    gone: BTreeSet<MediaSource>,
    /// The counters of those streams, for the call's figures.
    gone_stats: JitterStats,
    scratch: Frame,
    clip: opus::SoftClip,
    /// What the others report of this device's voice: its FEC plan.
    plan: Plan,
    /// The FEC plan in force, in percent (the configured one until a report).
    fec_percent: i32,
    report_seq: u16,
    /// Earlier frames each voice frame carries copies of, as the reports
    /// ask (0 to 4), and the last packets sent, newest first.
    red_depth: usize,
    sent: std::collections::VecDeque<Vec<u8>>,
    /// The configured Opus bitrate, and the one in force (within the budget).
    configured_bps: i32,
    bitrate_bps: i32,
    /// Each receiver's path: what it lets through (media::rate).
    rates: BTreeMap<MediaSource, RateControl>,
    /// The voice sent so far, for the rate of each report's window.
    sent_total: Sent,
    /// A report told of a loss: the plan decides the copies from then on,
    /// even in the stream's first seconds.
    heard_loss: bool,
    /// A new stream's copies did not fit the path: the next report, whose
    /// window still holds the last frames sent with them (the receiver's
    /// window trails by its jitter buffer), sets a budget but asks for no
    /// copies.
    start_overran: bool,
    /// Frames dropped because they were not for this call's room.
    pub foreign_frames: u64,
}

impl CallMedia {
    pub fn new(me: UserId, room: RoomId, codec: CodecSettings) -> Result<Self, opus::Error> {
        Ok(CallMedia {
            me,
            room,
            encoder: Encoder::new(codec)?,
            seq: 0,
            timestamp: 0,
            muted: false,
            listening: false,
            dtmf: DtmfSender::default(),
            event_seq: 0,
            key_tone: None,
            digits: Vec::new(),
            my_level: 0,
            names: BTreeMap::new(),
            peers: BTreeMap::new(),
            gone: BTreeSet::new(),
            gone_stats: JitterStats::default(),
            scratch: [0.0; FRAME_SAMPLES],
            clip: opus::SoftClip::new(opus::Channels::Mono),
            plan: Plan::default(),
            fec_percent: codec.expected_loss_percent,
            report_seq: 0,
            red_depth: 0,
            sent: std::collections::VecDeque::with_capacity(redundancy::MAX_COPIES + 1),
            configured_bps: codec.bitrate_bps,
            bitrate_bps: codec.bitrate_bps,
            rates: BTreeMap::new(),
            sent_total: Sent::default(),
            heard_loss: false,
            start_overran: false,
            foreign_frames: 0,
        })
    }

    pub fn room(&self) -> RoomId {
        self.room
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    pub fn set_listening(&mut self, listening: bool) {
        self.listening = listening;
    }

    /// Whether captured frames go out: not while this device only listens.
    pub fn sends(&self) -> bool {
        !self.listening
    }

    /// The relay's list of who sends in this room. A stream whose source
    /// is no longer listed ends here: its figures are kept, and frames of
    /// it still on the way are dropped. A source listed again starts a new
    /// stream, so that the gap is not loss. An empty list is this device
    /// out of the room (a hold): the others are still in the call, so their
    /// streams start afresh at once, named, and are heard at level 0 until
    /// the room is back.
    pub fn set_peers(&mut self, peers: &[MediaPeer]) {
        let paused = peers.is_empty();
        let listed: BTreeMap<MediaSource, UserId> =
            peers.iter().map(|p| (p.source, p.user.clone())).collect();
        self.gone.retain(|source| !listed.contains_key(source));
        let ended: Vec<MediaSource> = (self.peers.keys())
            .filter(|source| !listed.contains_key(source))
            .copied()
            .collect();
        for source in ended {
            let Some(peer) = self.peers.remove(&source) else {
                continue;
            };
            self.gone_stats += peer.jitter.stats();
            self.gone.insert(source);
            if paused && let Some(fresh) = Peer::new(peer.user) {
                self.peers.insert(source, fresh);
            }
        }
        if !paused {
            self.names = listed;
            for (source, peer) in &mut self.peers {
                peer.user = self.names.get(source).cloned();
            }
        }
    }

    /// Queues digits to go out as telephone events (RFC 4733).
    pub fn send_dtmf(&mut self, digits: &[Digit]) -> Result<(), Error> {
        self.dtmf.push(digits)
    }

    /// This device holds the call: drops the digits still waiting to go
    /// out (nobody would hear them), and says which, if any.
    pub fn stop_dtmf(&mut self) -> Result<(), Error> {
        let left = self.dtmf.stop();
        if left.is_empty() {
            return Ok(());
        }
        let keys: String = left.iter().map(|d| d.key()).collect();
        Err(Error::new(
            ErrorCode::CallNotConnected,
            format!(
                "the hold stopped sendDTMF before {keys} went out (nobody hears a held call); \
                 send them again after unhold"
            ),
        ))
    }

    /// The telephone-event frame to send with the next captured frame, while
    /// a digit is going out; the digit's key tone starts with its first.
    pub fn telephone_event(&mut self) -> Option<Vec<u8>> {
        let packet = self.dtmf.next(self.timestamp)?;
        if let Some(digit) = packet.starts {
            self.key_tone = Some(KeyTone::new(digit));
        }
        let header = MediaHeader {
            kind: MediaKind::TelephoneEvent,
            room: self.room,
            source: 0,
            seq: self.event_seq,
            timestamp: packet.timestamp,
        };
        self.event_seq = self.event_seq.wrapping_add(1);
        Some(header.encode(&packet.payload))
    }

    /// A receiver report for the others: how each one's voice reached this
    /// device since the last report. `None` while nothing was expected.
    pub fn receiver_report(&mut self) -> Option<Vec<u8>> {
        let mut entries = Vec::new();
        for peer in self.peers.values_mut() {
            let now = peer.jitter.stats();
            let then = std::mem::replace(&mut peer.reported, now);
            // The network's loss, before redundancy filled some of it:
            // else a working RED would report its own loss away and stop.
            let lost = (now.lost - then.lost) + (now.red_recovered - then.red_recovered);
            let runs = now.loss_runs - then.loss_runs;
            let received = now.received - then.received;
            if received + lost > 0 {
                peer.jitter.window_ended(lost > 0);
            }
            let (Some(user), expected) = (&peer.user, received + lost) else {
                continue;
            };
            if expected == 0 {
                continue;
            }
            entries.push(Reception {
                user: user.clone(),
                loss_permille: (lost * 1000 / expected) as u16,
                jitter_ms: peer.jitter.jitter_ms().round().min(f64::from(u16::MAX)) as u16,
                burst_tenths: (lost * 10).checked_div(runs).unwrap_or(0).min(255) as u8,
            });
        }
        if entries.is_empty() || self.listening {
            return None;
        }
        let header = MediaHeader {
            kind: MediaKind::ReceiverReport,
            room: self.room,
            source: 0,
            seq: self.report_seq,
            timestamp: self.timestamp,
        };
        self.report_seq = self.report_seq.wrapping_add(1);
        Some(header.encode(&feedback::encode(&entries)))
    }

    /// The FEC plan in force (percent), and the worst loss the others
    /// reported lately about this device's voice.
    pub fn feedback(&self, now: Millis) -> (i32, Option<f64>) {
        (self.fec_percent, self.plan.worst_loss(now))
    }

    /// The longest mean burst of lost frames the others reported lately
    /// about this device's voice; `None` before any report.
    pub fn reported_burst(&self, now: Millis) -> Option<f64> {
        (self.plan.worst_loss(now)).map(|_| self.plan.worst_burst(now))
    }

    /// Earlier frames the next voice frame carries copies of (0 to 4): the
    /// plan's, or a new stream's until its first seconds are over.
    pub fn redundancy(&self) -> usize {
        match self.starting() {
            true => self.red_depth.max(START_COPIES),
            false => self.red_depth,
        }
    }

    /// A new stream's first seconds: its copies go before any report asks.
    fn starting(&self) -> bool {
        self.sent_total.frames < START_FRAMES && !self.heard_loss
    }

    /// What the voice is sent within: the smallest budget of the paths to
    /// the others (bit/s on the wire), `None` while none binds; the Opus
    /// bitrate in force; and the rate sent over the last report's window.
    pub fn rate(&self) -> (Option<f64>, i32, Option<f64>) {
        let budget = (self.rates.values()).filter_map(RateControl::budget);
        let sent = (self.rates.values()).filter_map(RateControl::sent_bps);
        (
            budget.reduce(f64::min),
            self.bitrate_bps,
            sent.reduce(f64::max),
        )
    }

    /// The digits heard since the last call, in order, with who sent each.
    pub fn take_digits(&mut self) -> Vec<(UserId, Digit)> {
        let names = &self.names;
        std::mem::take(&mut self.digits)
            .into_iter()
            .filter_map(|(source, digit)| Some((names.get(&source)?.clone(), digit)))
            .collect()
    }

    /// One captured 20 ms frame in; the binary media frame to send out.
    /// A muted microphone sends encoded silence, so that the stream (and
    /// the far end's measure of the network) goes on.
    pub fn capture(&mut self, pcm: &Frame) -> Result<Vec<u8>, opus::Error> {
        let depth = self.redundancy();
        let packet = if self.muted {
            self.encoder.encode(&[0.0; FRAME_SAMPLES])?
        } else {
            self.my_level = self.my_level.max(level(pcm));
            self.encoder.encode(pcm)?
        };
        let kind = match depth {
            0 => MediaKind::Voice,
            _ => MediaKind::VoiceRed,
        };
        let header = MediaHeader {
            kind,
            room: self.room,
            source: 0,
            seq: self.seq,
            timestamp: self.timestamp,
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        let frame = match kind {
            MediaKind::VoiceRed => {
                // As many copies as fit a media frame's payload.
                let mut room = MAX_MEDIA_PAYLOAD_BYTES.saturating_sub(3 + packet.len());
                let mut copies = Vec::with_capacity(depth);
                for copy in self.sent.iter().take(depth) {
                    let Some(left) = room.checked_sub(2 + copy.len()) else {
                        break;
                    };
                    room = left;
                    copies.push(copy.as_slice());
                }
                header.encode(&redundancy::encode(packet, &copies))
            }
            _ => header.encode(packet),
        };
        self.sent_total.bytes += frame.len() as u64;
        self.sent_total.frames += 1;
        // Kept for the next frames' copies.
        self.sent.push_front(packet.to_vec());
        self.sent.truncate(redundancy::MAX_COPIES);
        Ok(frame)
    }

    /// A binary frame from the relay arrived at `now`.
    pub fn receive(&mut self, now: Millis, frame: &[u8]) -> Result<(), Error> {
        let (header, payload) = MediaHeader::decode(frame)?;
        if header.room != self.room {
            self.foreign_frames += 1;
            return Ok(());
        }
        if self.gone.contains(&header.source) {
            return Ok(());
        }
        let peer = match self.peers.entry(header.source) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let Some(peer) = Peer::new(self.names.get(&header.source).cloned()) else {
                    return Ok(());
                };
                e.insert(peer)
            }
        };
        match header.kind {
            MediaKind::Voice => {
                peer.jitter.set_copies(0);
                (peer.jitter).push(now, header.seq, header.timestamp, payload.to_vec())
            }
            MediaKind::TelephoneEvent => {
                if let Some(digit) = peer.dtmf.receive(now, header.timestamp, payload) {
                    self.digits.push((header.source, digit));
                }
            }
            MediaKind::VoiceRed => {
                let Some((primary, copies)) = redundancy::decode(payload) else {
                    return Ok(());
                };
                peer.jitter.set_copies(copies.len());
                (peer.jitter).push(now, header.seq, header.timestamp, primary.to_vec());
                for (back, copy) in (1u16..).zip(copies) {
                    (peer.jitter).push_copy(header.seq.wrapping_sub(back), copy.to_vec());
                }
            }
            MediaKind::ReceiverReport => {
                let about_me =
                    (feedback::decode(payload).into_iter().flatten()).find(|r| r.user == self.me);
                if let Some(reception) = about_me {
                    self.follow(now, header.source, reception);
                }
            }
        }
        Ok(())
    }

    /// A receiver's report about this device's voice: the copies and FEC
    /// its loss calls for, within what the paths let through.
    fn follow(&mut self, now: Millis, from: MediaSource, reception: Reception) {
        let window = Window {
            loss: f64::from(reception.loss_permille) / 1000.0,
            burst: f64::from(reception.burst_tenths) / 10.0,
        };
        if self.starting() && reception.loss_permille >= START_HEAVY_LOSS_PERMILLE {
            (self.heard_loss, self.start_overran) = (true, true);
            (self.rates.entry(from).or_default()).skip(now, self.sent_total);
            return;
        }
        self.heard_loss |= reception.loss_permille > 0;
        if !std::mem::take(&mut self.start_overran) {
            self.plan.heard(now, from, reception);
        }
        let burst = self.plan.worst_burst(now);
        let wanted = Allocation {
            bitrate_bps: self.configured_bps,
            copies: (self.plan.worst_loss(now))
                .map_or(0, |loss| redundancy::depth_for(loss, burst)),
        };
        self.rates.retain(|_, rate| rate.fresh(now));
        let rate = self.rates.entry(from).or_default();
        rate.report(now, self.sent_total, window, wanted.wire_bps());
        let budget = self.rate().0;
        let allocation = budget::fit(wanted, budget);
        self.red_depth = allocation.copies;
        if allocation.bitrate_bps != self.bitrate_bps {
            self.bitrate_bps = allocation.bitrate_bps;
            self.encoder.set_bitrate(allocation.bitrate_bps);
        }
        // Copies cover a loss better than in-band FEC, which takes its
        // bits from the voice: with them, only FEC for the frame that a
        // burst longer than the copies leaves. Under a budget, the loss
        // left is the network's own share: what got lost past the cap was
        // the budget's to stop, and FEC for it would take the few bits
        // there are from the voice.
        let random = (self.rates.values())
            .map(RateControl::random_loss)
            .reduce(f64::max);
        let plan = match (self.red_depth, budget, random) {
            (0, Some(_), Some(random)) => Some(feedback::fec_for(100.0 * random)),
            (0, ..) => self.plan.fec_percent(now),
            (1, ..) => Some(0),
            _ => Some(FEC_WITH_COPIES),
        };
        if let Some(percent) = plan
            && percent != self.fec_percent
        {
            self.fec_percent = percent;
            self.encoder.set_expected_loss(percent);
        }
    }

    /// The mix of every participant for the tick at hand, and this
    /// device's key tone; returns the level of the others in it (dBFS):
    /// what was heard of them, the key tone left out.
    pub fn playout(&mut self, out: &mut Frame) -> f64 {
        out.fill(0.0);
        for peer in self.peers.values_mut() {
            let frame = &mut self.scratch;
            if !peer.play(frame) {
                continue;
            }
            peer.level = peer.level.max(level(frame));
            for (o, s) in out.iter_mut().zip(frame.iter()) {
                *o += s;
            }
        }
        let heard = level_dbfs(out);
        if let Some(tone) = &mut self.key_tone
            && !tone.mix_into(out)
        {
            self.key_tone = None;
        }
        if self.peers.len() > 1 {
            self.clip.apply(out);
        }
        heard
    }

    /// Each participant's loudest level since the last call, this device's
    /// user first; then the levels start over.
    pub fn take_volumes(&mut self) -> Vec<(UserId, u8)> {
        let mut volumes = vec![(self.me.clone(), std::mem::take(&mut self.my_level))];
        for peer in self.peers.values_mut() {
            if let Some(user) = &peer.user {
                volumes.push((user.clone(), std::mem::take(&mut peer.level)));
            }
        }
        volumes
    }

    /// Each remote participant's network over the window since the last
    /// call; `rtt_ms` is this device's round trip to the relay.
    pub fn take_quality(&mut self, rtt_ms: Option<u64>) -> Vec<PeerQuality> {
        let mut out = Vec::new();
        for peer in self.peers.values_mut() {
            let now = peer.jitter.stats();
            let then = std::mem::replace(&mut peer.window_start, now);
            let received = now.received - then.received;
            // A frame that arrives after its turn was already counted lost
            // at its turn; `late` only says how many of those showed up.
            let missing = (now.lost - then.lost) + (now.red_recovered - then.red_recovered);
            let expected = received + missing;
            let loss_percent = if expected == 0 {
                0.0
            } else {
                100.0 * missing as f64 / expected as f64
            };
            let measurement = Measurement {
                loss_percent,
                jitter_ms: peer.jitter.jitter_ms(),
                rtt_ms,
                received,
            };
            let quality = if received == 0 {
                Quality::Down
            } else {
                grade(&measurement)
            };
            if let Some(user) = &peer.user {
                out.push(PeerQuality {
                    user: user.clone(),
                    quality,
                    measurement,
                });
            }
        }
        out
    }

    /// The deepest remote stream's jitter buffer: frames waiting, the
    /// target depth and the measured jitter (ms).
    pub fn jitter_depth(&self) -> (usize, usize, u64) {
        (self.peers.values())
            .map(|p| {
                let j = &p.jitter;
                (j.depth(), j.target_depth(), j.jitter_ms().round() as u64)
            })
            .max()
            .unwrap_or((0, 0, 0))
    }

    /// Jitter-buffer counters of every remote stream, summed.
    pub fn stats(&self) -> JitterStats {
        let mut sum = self.gone_stats;
        for peer in self.peers.values() {
            sum += peer.jitter.stats();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn tone(k: usize) -> Frame {
        std::array::from_fn(|i| {
            let t = (k * FRAME_SAMPLES + i) as f32 / 48_000.0;
            0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
        })
    }

    /// alice and bob in room 5, bob knowing alice's frames by source 1.
    fn alice_to_bob() -> (CallMedia, CallMedia) {
        let alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        let mut bob = CallMedia::new(user("bob"), 5, CodecSettings::default()).unwrap();
        bob.set_peers(&[MediaPeer {
            source: 1,
            user: user("alice"),
        }]);
        (alice, bob)
    }

    /// What the relay does to a frame: stamp the sender's source.
    fn relayed(mut frame: Vec<u8>, source: MediaSource) -> Vec<u8> {
        MediaHeader::stamp_source(&mut frame, source);
        frame
    }

    /// A receiver report from `source` in room 5: `loss_permille` of `about`'s voice lost.
    fn report_about(about: &str, loss_permille: u16, source: MediaSource) -> Vec<u8> {
        MediaHeader {
            kind: MediaKind::ReceiverReport,
            room: 5,
            source,
            seq: 0,
            timestamp: 0,
        }
        .encode(&feedback::encode(&[Reception {
            user: user(about),
            loss_permille,
            jitter_ms: 0,
            burst_tenths: 10,
        }]))
    }

    /// A report of 10% loss about alice: her frames carry the two before
    /// them, and bob plays bursts of two lost frames as they were sent.
    #[test]
    fn redundancy_fills_losses_and_bursts_of_two() {
        let mut alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        let mut bob = CallMedia::new(user("bob"), 5, CodecSettings::default()).unwrap();
        let report = report_about("alice", 100, 2);
        bob.set_peers(&[MediaPeer {
            source: 1,
            user: user("alice"),
        }]);
        assert_eq!(alice.redundancy(), START_COPIES, "a new stream's copies");
        alice.receive(0, &report).unwrap();
        assert_eq!(alice.redundancy(), 2);
        let mut out = [0.0; FRAME_SAMPLES];
        for k in 0..100u64 {
            let frame = alice.capture(&tone(k as usize)).unwrap();
            // Two in a row lost out of every ten, the first two never.
            if k < 2 || k % 10 < 8 {
                bob.receive(20 * k, &relayed(frame, 1)).unwrap();
            }
            bob.playout(&mut out);
        }
        let stats = bob.stats();
        assert_eq!(stats.lost, 0, "{stats:?}");
        assert_eq!(stats.fec_recovered, 0, "{stats:?}");
        assert!(stats.red_recovered >= 18, "{stats:?}");
        // Its report tells the network's loss, not what is left after RED.
        let report = bob.receiver_report().unwrap();
        let (_, payload) = MediaHeader::decode(&report).unwrap();
        let loss = feedback::decode(payload).unwrap()[0].loss_permille;
        assert!((150..=250).contains(&loss), "{loss}");
    }

    /// A call on virtual time: alice talks, bob's device loses what
    /// `lose(k)` says of her frame `k` and reports every second. Returns
    /// alice's (FEC plan, copies) after each second.
    fn adapt(seconds: usize, lose: impl Fn(usize) -> bool) -> Vec<(i32, usize)> {
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut after = Vec::new();
        for second in 0..seconds {
            for k in 50 * second..50 * (second + 1) {
                let frame = alice.capture(&tone(k)).unwrap();
                if !lose(k) {
                    bob.receive(20 * k as u64, &relayed(frame, 1)).unwrap();
                }
                bob.playout(&mut out);
            }
            let now = 1_000 * (second as u64 + 1);
            let report = bob.receiver_report().expect("alice's voice was expected");
            alice.receive(now, &relayed(report, 2)).unwrap();
            after.push((alice.feedback(now).0, alice.redundancy()));
        }
        after
    }

    /// Loss appears at 3 s and goes at 8 s: the sender's FEC plan and
    /// redundancy follow within a report, and fall back five seconds after.
    #[test]
    fn fec_and_redundancy_follow_the_reported_loss_and_fall_back() {
        // Every fifth frame (20%), one at a time: two copies, and the FEC
        // for a burst longer than them.
        let random = adapt(14, |k| (150..400).contains(&k) && k % 5 == 2);
        assert_eq!(random[0], (0, START_COPIES), "a clean first second: no FEC");
        assert_eq!(random[1], (0, 0), "two clean seconds: no copies either");
        assert_eq!(random[2], (0, 0));
        assert_eq!(random[3], (FEC_WITH_COPIES, 2), "{random:?}");
        assert_eq!(random[7], (FEC_WITH_COPIES, 2));
        assert_eq!(
            random[11],
            (FEC_WITH_COPIES, 2),
            "three clean seconds are not enough"
        );
        assert_eq!(random[13], (0, 0), "{random:?}");
        // Bursts of three, 6% in all: four copies.
        let bursts = adapt(6, |k| k >= 150 && k % 50 < 3);
        assert_eq!(bursts[3], (FEC_WITH_COPIES, 4), "{bursts:?}");
    }

    /// One second of a call through a path with a bandwidth cap.
    #[derive(Debug)]
    struct Second {
        /// What alice sent, and what bob lost of it (percent).
        sent_kbps: f64,
        loss_percent: f64,
        copies: usize,
        bitrate_kbps: i32,
        budget_kbps: Option<f64>,
    }

    /// A voice that keeps Opus near its bitrate: a tone and a hiss.
    fn busy(k: usize) -> Frame {
        let mut seed = (k as u32).wrapping_mul(2_654_435_761);
        let tone = tone(k);
        std::array::from_fn(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            tone[i] * 0.6 + (seed >> 8) as f32 / (1 << 24) as f32 * 0.2 - 0.1
        })
    }

    /// alice talks to bob through the relay's bandwidth cap (`cap_kbps(second)`,
    /// 0 for none) on virtual time, and loses what `lose(k)` says of her
    /// frame `k` besides; bob reports every second.
    fn through_cap(
        seconds: usize,
        cap_kbps: impl Fn(usize) -> u64,
        lose: impl Fn(usize) -> bool,
    ) -> Vec<Second> {
        use crate::relay::media::BandwidthCap;
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut path: Option<(u64, BandwidthCap)> = None;
        let mut trace = Vec::new();
        for second in 0..seconds {
            let kbps = cap_kbps(second);
            if path.as_ref().map_or(0, |(k, _)| *k) != kbps {
                path = (kbps > 0).then(|| (kbps, BandwidthCap::new(kbps)));
            }
            let (mut bytes, mut lost) = (0, 0);
            for k in 50 * second..50 * (second + 1) {
                let frame = alice.capture(&busy(k)).unwrap();
                bytes += frame.len();
                let now = 20 * k as u64;
                let passes = path.as_mut().is_none_or(|(_, cap)| {
                    cap.fits(std::time::Duration::from_millis(now), frame.len())
                });
                if passes && !lose(k) {
                    bob.receive(now, &relayed(frame, 1)).unwrap();
                } else {
                    lost += 1;
                }
                bob.playout(&mut out);
            }
            let now = 1_000 * (second as u64 + 1);
            let report = bob.receiver_report().expect("alice's voice was expected");
            alice.receive(now, &relayed(report, 2)).unwrap();
            let (budget, bitrate, _) = alice.rate();
            trace.push(Second {
                sent_kbps: bytes as f64 * 8.0 / 1000.0,
                loss_percent: f64::from(lost) * 2.0,
                copies: alice.redundancy(),
                bitrate_kbps: bitrate / 1000,
                budget_kbps: budget.map(|b| (b / 100.0).round() / 10.0),
            });
        }
        trace
    }

    /// A clean path capped at 32 kbit/s, under the 54 that alice's voice
    /// takes: the loss the cap causes would call for copies, which would
    /// lose more. Her sender finds the cap instead and settles under it,
    /// losing next to nothing.
    #[test]
    fn a_capped_path_is_found_and_its_loss_goes() {
        let trace = through_cap(40, |_| 32, |_| false);
        let settled = &trace[5..];
        let sent = settled.iter().map(|s| s.sent_kbps).sum::<f64>() / settled.len() as f64;
        let loss = settled.iter().map(|s| s.loss_percent).sum::<f64>() / settled.len() as f64;
        assert!((20.0..=32.0).contains(&sent), "{sent} kbit/s: {trace:?}");
        assert!(loss < 1.0, "{loss}% lost: {trace:?}");
        assert!(settled.iter().all(|s| s.copies == 0 && s.bitrate_kbps < 32));
    }

    /// 5% random loss and a cap of 64 kbit/s for 30 s: one copy at a lower
    /// bitrate fits, and the loss is the network's; then the cap is lifted
    /// and the voice comes back to one copy of 48 kbit/s.
    #[test]
    fn under_a_lifted_cap_the_rate_and_copies_come_back() {
        let trace = through_cap(70, |s| if s < 30 { 64 } else { 0 }, |k| k % 20 == 7);
        let capped = &trace[8..30];
        let loss = capped.iter().map(|s| s.loss_percent).sum::<f64>() / capped.len() as f64;
        assert!(loss < 7.0, "{loss}% lost: {trace:?}");
        let sent = capped.iter().map(|s| s.sent_kbps).sum::<f64>() / capped.len() as f64;
        assert!(sent < 64.0, "{sent} kbit/s: {trace:?}");
        let end = trace.last().unwrap();
        let now = (end.copies, end.bitrate_kbps, end.budget_kbps);
        assert_eq!(now, (1, 48, None), "{trace:?}");
        assert!(end.sent_kbps > 90.0, "{trace:?}");
    }

    /// 10% random loss and no cap: two copies of 48 kbit/s throughout, as
    /// before bitrate adaptation. The first report's loss came at the new
    /// stream's copies, with no window before to tell a cap by: a budget
    /// tests it for a second, and goes.
    #[test]
    fn random_loss_without_a_cap_keeps_its_rate_and_copies() {
        let trace = through_cap(30, |_| 0, |k| k % 10 == 3);
        assert!(trace.iter().all(|s| s.copies == 2), "{trace:?}");
        assert!(
            trace[1..]
                .iter()
                .all(|s| s.bitrate_kbps == 48 && s.budget_kbps.is_none()),
            "{trace:?}"
        );
    }

    /// A new stream's frames carry copies from the first, before any report:
    /// a burst of two in its first second plays as sent. Two clean reports
    /// end them, and the voice goes alone, as a clean network needs.
    #[test]
    fn a_new_stream_carries_copies_until_two_clean_reports() {
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut kinds = Vec::new();
        for k in 0..150usize {
            let frame = alice.capture(&tone(k)).unwrap();
            kinds.push(MediaHeader::decode(&frame).unwrap().0.kind);
            if !(20..22).contains(&k) {
                bob.receive(20 * k as u64, &relayed(frame, 1)).unwrap();
            }
            bob.playout(&mut out);
            if k % 50 == 49 {
                let report = bob.receiver_report().unwrap();
                let (_, payload) = MediaHeader::decode(&report).unwrap();
                let loss = feedback::decode(payload).unwrap()[0].loss_permille;
                // What is tested is how the copies end: alice is told of
                // clean seconds.
                alice
                    .receive(20 * k as u64, &relayed(report_about("alice", 0, 2), 2))
                    .unwrap();
                assert_eq!(loss, if k == 49 { 40 } else { 0 }, "the burst is reported");
            }
        }
        let stats = bob.stats();
        assert_eq!((stats.lost, stats.red_recovered), (0, 2), "{stats:?}");
        assert!(kinds[..100].iter().all(|k| *k == MediaKind::VoiceRed));
        assert!(
            kinds[101..].iter().all(|k| *k == MediaKind::Voice),
            "{kinds:?}"
        );
        assert_eq!(alice.redundancy(), 0);
    }

    /// A path capped at 64 kbit/s carries the voice (54) but not a new
    /// stream's copies (150): the first report's heavy loss stops them and
    /// asks for nothing, and the voice goes on alone at its bitrate, under
    /// no budget, losing nothing more.
    #[test]
    fn a_new_streams_copies_that_overrun_a_capped_path_stop_unanswered() {
        let trace = through_cap(10, |_| 64, |_| false);
        assert!(trace[0].loss_percent > 25.0, "{trace:?}");
        for s in &trace[2..] {
            let now = (s.copies, s.bitrate_kbps, s.budget_kbps, s.loss_percent);
            assert_eq!(now, (0, 48, None, 0.0), "{trace:?}");
        }
    }

    /// A clean call of words and pauses: bob's buffer starts three frames
    /// deep and, after the first clean report, comes back to exactly one
    /// (nothing waiting after each tick's frame), as a loopback needs.
    #[test]
    fn a_clean_stream_comes_back_to_one_frame_in_a_pause() {
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        for k in 0..250usize {
            // 400 ms of tone, then 400 ms of silence.
            let frame = match (k / 20) % 2 {
                0 => tone(k),
                _ => [0.0; FRAME_SAMPLES],
            };
            let frame = alice.capture(&frame).unwrap();
            bob.receive(20 * k as u64, &relayed(frame, 1)).unwrap();
            bob.playout(&mut out);
            if k == 10 {
                assert_eq!(
                    bob.jitter_depth().0,
                    2,
                    "a new stream holds two frames back"
                );
            }
            if k % 50 == 49 {
                bob.receiver_report();
            }
        }
        let stats = bob.stats();
        assert_eq!(bob.jitter_depth().0, 0, "{stats:?}");
        assert_eq!(
            (stats.dropped_to_shrink, stats.accelerated_samples),
            (2, 0),
            "{stats:?}"
        );
    }

    /// alice's clock runs 2% fast and she never pauses: bob's buffer sheds
    /// the excess by time-compressing her voice, and drops no frame.
    #[test]
    fn a_fast_sender_in_speech_is_played_faster_not_cut() {
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut sent = 0;
        for tick in 0..3_000u64 {
            while sent * 50 < tick * 51 {
                let frame = alice.capture(&tone(sent as usize)).unwrap();
                bob.receive(20 * tick, &relayed(frame, 1)).unwrap();
                sent += 1;
            }
            bob.playout(&mut out);
            if tick % 50 == 49 {
                bob.receiver_report();
            }
        }
        let stats = bob.stats();
        let (depth, target, _) = bob.jitter_depth();
        assert!(depth <= target + 2, "depth {depth}, target {target}");
        assert_eq!((stats.lost, stats.dropped_to_shrink), (0, 0), "{stats:?}");
        // About 60 frames more than ticks, 20 ms each, less what is waiting.
        let accelerated_ms = stats.accelerated_samples / 48;
        assert!((1_000..=1_300).contains(&accelerated_ms), "{stats:?}");
    }

    #[test]
    fn alice_hears_bob_and_both_levels_are_reported() {
        let mut alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        let mut bob = CallMedia::new(user("bob"), 5, CodecSettings::default()).unwrap();
        alice.set_peers(&[MediaPeer {
            source: 2,
            user: user("bob"),
        }]);
        let mut out = [0.0; FRAME_SAMPLES];
        let mut loud = 0;
        for k in 0..20 {
            let frame = bob.capture(&tone(k)).unwrap();
            alice.receive(20 * k as u64, &relayed(frame, 2)).unwrap();
            alice.playout(&mut out);
            if out.iter().any(|s| s.abs() > 0.2) {
                loud += 1;
            }
        }
        assert!(loud >= 18, "{loud} of 20 ticks carry the tone");
        let volumes = alice.take_volumes();
        assert_eq!(volumes[0], (user("alice"), 0));
        assert_eq!(volumes[1].0, user("bob"));
        assert!(volumes[1].1 > 70, "{volumes:?}");
        assert!(bob.take_volumes()[0].1 > 70);
        let q = alice.take_quality(Some(3));
        assert_eq!(q[0].quality, Quality::Excellent, "{q:?}");
    }

    #[test]
    fn a_muted_sender_keeps_its_stream_but_sends_silence() {
        let mut bob = CallMedia::new(user("bob"), 5, CodecSettings::default()).unwrap();
        let mut alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        bob.set_muted(true);
        let mut out = [0.0; FRAME_SAMPLES];
        for k in 0..10 {
            let frame = bob.capture(&tone(k)).unwrap();
            alice.receive(20 * k as u64, &relayed(frame, 2)).unwrap();
            alice.playout(&mut out);
        }
        assert!(out.iter().all(|s| s.abs() < 0.01));
        assert_eq!(bob.take_volumes()[0].1, 0);
        assert_eq!(alice.stats().received, 10);
    }

    #[test]
    fn frames_of_another_room_and_garbage_are_not_played() {
        let mut alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        let mut carol = CallMedia::new(user("carol"), 6, CodecSettings::default()).unwrap();
        alice
            .receive(0, &relayed(carol.capture(&tone(0)).unwrap(), 3))
            .unwrap();
        assert_eq!(alice.foreign_frames, 1);
        assert!(alice.receive(0, b"junk").is_err());
        assert_eq!(alice.stats().received, 0);
    }

    #[test]
    fn digits_cross_as_telephone_events_and_the_sender_hears_its_key_tone() {
        let (mut alice, mut bob) = alice_to_bob();
        alice.send_dtmf(&Digit::parse_all("9#").unwrap()).unwrap();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut events = 0;
        for k in 0..20 {
            if let Some(event) = alice.telephone_event() {
                events += 1;
                bob.receive(20 * k as u64, &relayed(event, 1)).unwrap();
            }
            let voice = alice.capture(&[0.0; FRAME_SAMPLES]).unwrap();
            bob.receive(20 * k as u64, &relayed(voice, 1)).unwrap();
            if k == 1 {
                let heard = alice.playout(&mut out);
                assert!(out.iter().any(|s| s.abs() > 0.05), "the key tone");
                assert!(heard < -90.0, "not a voice heard: {heard}");
            }
        }
        assert_eq!(events, 16);
        let heard: Vec<(UserId, char)> = (bob.take_digits().into_iter())
            .map(|(u, d)| (u, d.key()))
            .collect();
        assert_eq!(heard, [(user("alice"), '9'), (user("alice"), '#')]);
        // The events took no voice sequence numbers: nothing counts as lost.
        assert_eq!(bob.stats().received, 20);
        bob.playout(&mut out);
        assert_eq!(bob.stats().lost, 0);
    }

    #[test]
    fn a_participant_who_left_is_forgotten() {
        let mut alice = CallMedia::new(user("alice"), 5, CodecSettings::default()).unwrap();
        let mut bob = CallMedia::new(user("bob"), 5, CodecSettings::default()).unwrap();
        let bob_peer = MediaPeer {
            source: 2,
            user: user("bob"),
        };
        let carol_peer = MediaPeer {
            source: 3,
            user: user("carol"),
        };
        alice.set_peers(&[bob_peer, carol_peer.clone()]);
        alice
            .receive(0, &relayed(bob.capture(&tone(0)).unwrap(), 2))
            .unwrap();
        assert_eq!(alice.take_volumes().len(), 2);
        // bob leaves the group call; carol (who has sent nothing yet) stays.
        alice.set_peers(&[carol_peer]);
        assert_eq!(alice.take_volumes().len(), 1);
    }

    /// A hold: the relay says alice no longer sends to bob, and she sends
    /// on (her frames reach nobody). What bob heard of her before stays in
    /// his figures, a frame of hers still on the way is not played, and
    /// when she is back her stream starts afresh: the hold is no loss.
    #[test]
    fn a_stream_the_relay_ends_keeps_its_figures_and_its_gap_is_no_loss() {
        let (mut alice, mut bob) = alice_to_bob();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut t = 0;
        let mut talk = |alice: &mut CallMedia, bob: &mut CallMedia, frames: usize, heard: bool| {
            for k in 0..frames {
                let frame = alice.capture(&tone(k)).unwrap();
                if heard {
                    bob.receive(t, &relayed(frame, 1)).unwrap();
                }
                bob.playout(&mut out);
                t += 20;
            }
        };
        talk(&mut alice, &mut bob, 50, true);
        let before = bob.stats();
        assert!(before.received >= 45, "{before:?}");
        bob.set_peers(&[]);
        let late = relayed(alice.capture(&tone(0)).unwrap(), 1);
        bob.receive(1_000, &late).unwrap();
        assert_eq!(bob.stats(), before, "the late frame is not taken");
        // alice is still in the call: heard at level 0.
        assert_eq!(bob.take_volumes()[1], (user("alice"), 0));
        talk(&mut alice, &mut bob, 25, false);
        bob.set_peers(&[MediaPeer {
            source: 1,
            user: user("alice"),
        }]);
        talk(&mut alice, &mut bob, 50, true);
        let after = bob.stats();
        assert_eq!(after.lost, 0, "{after:?}");
        assert!(after.received >= before.received + 45, "{after:?}");
    }
}
