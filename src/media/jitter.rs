//! An adaptive jitter buffer for one remote sender, on virtual time.
//!
//! Frames go in as they arrive ([`JitterBuffer::push`]) and come out one per
//! 20 ms playout tick ([`JitterBuffer::pop`]). The buffer reorders by
//! sequence number, drops duplicates and frames that come too late, and
//! holds a depth that follows the measured jitter (RFC 3550's interarrival
//! estimate), never less than one frame:
//!
//! - a gap with later frames waiting is a loss: the next frame's in-band FEC
//!   rebuilds it when it is there, otherwise the decoder conceals it;
//! - an empty buffer is an underrun: it conceals without consuming the
//!   sequence number, which adds one frame of delay (the depth grows);
//! - a buffer that stays deeper than its target drops one frame, which takes
//!   the delay back down (and absorbs a sender whose clock runs fast).

use std::collections::BTreeMap;

use super::FRAME_MS;

type Millis = u64;

/// Deepest target, in frames (200 ms): beyond it a call is no longer a
/// conversation, and late frames are better lost.
pub const MAX_DEPTH: usize = 10;

/// Consecutive underruns after which the stream counts as paused (the
/// sender muted or left): the buffer starts over and plays silence.
const PAUSE_AFTER: u32 = 5;

/// Playout ticks the buffer must sit above its target before it drops a frame.
/// 10 ticks (200 ms): long enough to tell a backlog from a burst that the
/// next ticks drain anyway, short enough that a stall's backlog (a machine
/// that paused, a device that started late) is not heard as delay for
/// seconds.
const SHRINK_AFTER: u32 = 10;

/// A frame or two of excess is shed in speech too, after this many ticks
/// (1 s) without a pause to shed it in.
const SHRINK_IN_SPEECH_AFTER: u32 = 50;

/// An Opus packet this small carries silence or near it: a frame that can
/// be skipped unheard.
pub const QUIET_BYTES: usize = 24;

/// What to play for one 20 ms tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// The frame that is due.
    Frame(Vec<u8>),
    /// The frame that is due is lost, the next one is here: decode this
    /// packet's in-band FEC for the missing frame.
    Fec(Vec<u8>),
    /// Nothing usable: let the decoder conceal.
    Conceal,
    /// The stream has not started, or paused: play silence.
    Silence,
}

/// Counters a user (or a test) can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Frames missing at their playout time (rebuilt by FEC or concealed).
    pub lost: u64,
    pub fec_recovered: u64,
    /// Ticks concealed because the buffer ran dry (the depth grew by one).
    pub underruns: u64,
    /// Frames dropped to bring the depth back to its target.
    pub dropped_to_shrink: u64,
    /// Frames that arrived only as a later frame's redundant copy (RED),
    /// in time to play as they were sent.
    pub red_recovered: u64,
}

pub struct JitterBuffer {
    /// Waiting frames by extended (unwrapped) sequence number.
    frames: BTreeMap<u64, Vec<u8>>,
    /// The extended sequence number due at the next tick, once playing.
    next: Option<u64>,
    /// Highest extended sequence number seen, to unwrap the 16-bit ones.
    highest: Option<u64>,
    /// Interarrival jitter estimate in ms (RFC 3550, section 6.4.1).
    jitter_ms: f64,
    /// Arrival time and media time (ms) of the previous frame.
    previous: Option<(Millis, f64)>,
    underrun_run: u32,
    above_target_run: u32,
    /// The least depth aimed for: more than one frame while the sender's
    /// frames carry copies of the ones before, so that a copy is there
    /// before its frame's turn.
    floor: usize,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    pub fn new() -> Self {
        JitterBuffer {
            frames: BTreeMap::new(),
            next: None,
            highest: None,
            jitter_ms: 0.0,
            previous: None,
            underrun_run: 0,
            above_target_run: 0,
            floor: 1,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// Frames waiting to be played.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The depth the buffer aims for: enough to ride out about three times
    /// the measured jitter, at least the floor (one frame, or one more than
    /// the copies the sender's frames carry).
    pub fn target_depth(&self) -> usize {
        let frames = (3.0 * self.jitter_ms / FRAME_MS as f64).ceil() as usize;
        frames.clamp(self.floor, MAX_DEPTH)
    }

    /// Frames carry `copies` of the ones before them (0 to 2): aim one
    /// frame deeper for each, so that a lost frame's copy arrives in time.
    pub fn set_copies(&mut self, copies: usize) {
        self.floor = (1 + copies).min(MAX_DEPTH);
    }

    /// A frame arrived at `now`; `timestamp` is its media time in 48 kHz samples.
    pub fn push(&mut self, now: Millis, seq: u16, timestamp: u32, payload: Vec<u8>) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return;
        }
        if self.frames.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.measure_jitter(now, f64::from(timestamp) / 48.0);
        self.frames.insert(ext, payload);
        // Never hold more than the deepest target: the oldest go first, and
        // playout moves on past them (else it would count each of its next
        // turns lost, and stay that deep, for as long as frames come).
        while self.frames.len() > MAX_DEPTH + 1 {
            if let Some((seq, _)) = self.frames.pop_first() {
                self.stats.dropped_to_shrink += 1;
                if self.next.is_some_and(|next| next <= seq) {
                    self.next = Some(seq + 1);
                }
            }
        }
    }

    /// A redundant copy of frame `seq` came with a later frame (RED): it
    /// fills that frame's place if the frame is still missing and not yet
    /// due, and otherwise goes. It says nothing of the network's timing.
    pub fn push_copy(&mut self, seq: u16, payload: Vec<u8>) {
        let Some(highest) = self.highest else {
            return;
        };
        let ext = self.extend(seq);
        if ext > highest
            || self.next.is_some_and(|next| ext < next)
            || self.frames.contains_key(&ext)
        {
            return;
        }
        self.stats.red_recovered += 1;
        self.frames.insert(ext, payload);
    }

    /// What to play for the tick at hand.
    pub fn pop(&mut self) -> Playout {
        let Some(next) = self.next else {
            return self.start();
        };
        if let Some(payload) = self.frames.remove(&next) {
            self.underrun_run = 0;
            self.next = Some(next + 1);
            self.shrink_if_deep();
            return Playout::Frame(payload);
        }
        if self.frames.is_empty() {
            self.underrun_run += 1;
            if self.underrun_run >= PAUSE_AFTER {
                self.next = None;
                self.underrun_run = 0;
                return Playout::Silence;
            }
            self.stats.underruns += 1;
            return Playout::Conceal;
        }
        // A gap with later frames waiting: `next` is lost.
        self.underrun_run = 0;
        self.stats.lost += 1;
        self.next = Some(next + 1);
        // Anything before the first waiting frame is gone too; skip to it
        // when the gap is longer than the buffer could ever fill.
        let first = *self.frames.keys().next().expect("not empty");
        if first > next + MAX_DEPTH as u64 {
            self.stats.lost += first - (next + 1);
            self.next = Some(first);
        }
        match self.frames.get(&(next + 1)) {
            Some(following) => {
                self.stats.fec_recovered += 1;
                Playout::Fec(following.clone())
            }
            None => Playout::Conceal,
        }
    }

    fn start(&mut self) -> Playout {
        if self.frames.len() < self.target_depth() {
            return Playout::Silence;
        }
        let (&first, _) = self.frames.first_key_value().expect("not empty");
        self.next = Some(first);
        self.pop()
    }

    fn shrink_if_deep(&mut self) {
        // Frames still waiting once this tick's is out, beyond the target
        // (`soft`), and beyond one more frame of slack (`hard`): what a lost
        // or late frame leaves behind, or a sender's clock a little fast.
        let waiting = self.frames.len();
        let soft = waiting.saturating_sub(self.target_depth());
        let hard = waiting.saturating_sub(self.target_depth() + 1);
        if soft == 0 {
            self.above_target_run = 0;
            return;
        }
        self.above_target_run += 1;
        if self.above_target_run < SHRINK_AFTER {
            return;
        }
        // A stall's backlog goes at once, half of it at a time. Otherwise a
        // frame goes in a pause, where skipping 20 ms is not heard (the next
        // frame to play is a quiet one: Opus codes silence in a few bytes),
        // and beyond the slack in speech too, after 1 s.
        let next_is_quiet =
            (self.frames.first_key_value()).is_some_and(|(_, p)| p.len() <= QUIET_BYTES);
        let drop = if hard > 2 {
            hard.div_ceil(2)
        } else if next_is_quiet || (hard > 0 && self.above_target_run >= SHRINK_IN_SPEECH_AFTER) {
            1
        } else {
            return;
        };
        self.above_target_run = 0;
        for _ in 0..drop {
            if let Some((seq, _)) = self.frames.pop_first() {
                self.next = Some(seq + 1);
                self.stats.dropped_to_shrink += 1;
            }
        }
    }

    fn measure_jitter(&mut self, arrival: Millis, media_ms: f64) {
        if let Some((prev_arrival, prev_media)) = self.previous {
            let transit_change = (arrival as f64 - prev_arrival as f64) - (media_ms - prev_media);
            self.jitter_ms += (transit_change.abs() - self.jitter_ms) / 16.0;
        }
        self.previous = Some((arrival, media_ms));
    }

    /// The 64-bit sequence number closest to the highest seen so far.
    fn extend(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Leave room below the first frame for reordered earlier ones.
            return (1 << 16) + u64::from(seq);
        };
        let base = highest & !0xFFFF;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        candidates
            .into_iter()
            .map(|b| b.wrapping_add(u64::from(seq)))
            .min_by_key(|c| c.abs_diff(highest))
            .expect("three candidates")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `i` of a steady sender: sent at 20·i ms, seq and timestamp to match.
    fn push(jb: &mut JitterBuffer, now: Millis, i: u16) {
        jb.push(now, i, u32::from(i) * 960, vec![i as u8]);
    }

    fn played(p: Playout) -> Option<u8> {
        match p {
            Playout::Frame(v) => Some(v[0]),
            _ => None,
        }
    }

    #[test]
    fn copies_in_the_frames_make_the_buffer_a_frame_deeper_each() {
        let mut j = JitterBuffer::new();
        assert_eq!(j.target_depth(), 1);
        j.set_copies(2);
        assert_eq!(j.target_depth(), 3);
        // Frame 1 is lost; frame 2 brings its copy before frame 1's turn.
        j.push(0, 0, 0, vec![0]);
        j.push(40, 2, 1920, vec![2]);
        j.push_copy(1, vec![1]);
        j.push(60, 3, 2880, vec![3]);
        let played: Vec<Playout> = (0..3).map(|_| j.pop()).collect();
        assert_eq!(
            played,
            [
                Playout::Frame(vec![0]),
                Playout::Frame(vec![1]),
                Playout::Frame(vec![2])
            ]
        );
        assert_eq!((j.stats().lost, j.stats().red_recovered), (0, 1));
        j.set_copies(0);
        assert_eq!(j.target_depth(), 1);
    }

    #[test]
    fn a_steady_stream_plays_in_order_one_frame_deep() {
        let mut jb = JitterBuffer::new();
        let mut out = Vec::new();
        for i in 0..20u16 {
            push(&mut jb, 20 * u64::from(i), i);
            out.push(played(jb.pop()));
        }
        assert_eq!(out, (0..20).map(|i| Some(i as u8)).collect::<Vec<_>>());
        assert_eq!(jb.target_depth(), 1);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn reordered_frames_play_in_sequence() {
        let mut jb = JitterBuffer::new();
        for (t, i) in [(0, 0), (20, 2), (21, 1), (40, 3)] {
            push(&mut jb, t, i);
        }
        let out: Vec<_> = (0..4).map(|_| played(jb.pop())).collect();
        assert_eq!(out, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn duplicates_and_late_frames_are_counted_and_dropped() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        push(&mut jb, 1, 0);
        assert_eq!(played(jb.pop()), Some(0));
        push(&mut jb, 20, 1);
        assert_eq!(played(jb.pop()), Some(1));
        // Frame 0 again, after it was played: late, not a duplicate in the buffer.
        push(&mut jb, 30, 0);
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.depth(), 0);
    }

    #[test]
    fn a_single_loss_is_rebuilt_from_the_next_frames_fec() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        assert_eq!(played(jb.pop()), Some(0));
        push(&mut jb, 40, 2);
        assert_eq!(jb.pop(), Playout::Fec(vec![2]));
        assert_eq!(played(jb.pop()), Some(2));
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(jb.stats().fec_recovered, 1);
    }

    #[test]
    fn a_burst_is_concealed_then_playback_resumes() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        jb.pop();
        // 1, 2 and 3 are lost; 4 arrives.
        push(&mut jb, 80, 4);
        assert_eq!(jb.pop(), Playout::Conceal); // 1
        assert_eq!(jb.pop(), Playout::Conceal); // 2
        assert_eq!(jb.pop(), Playout::Fec(vec![4])); // 3
        assert_eq!(played(jb.pop()), Some(4));
        assert_eq!(jb.stats().lost, 3);
    }

    #[test]
    fn an_underrun_waits_for_the_late_frame_instead_of_losing_it() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        assert_eq!(played(jb.pop()), Some(0));
        // Frame 1 is 25 ms late: the tick conceals, and frame 1 still plays.
        assert_eq!(jb.pop(), Playout::Conceal);
        push(&mut jb, 45, 1);
        assert_eq!(played(jb.pop()), Some(1));
        assert_eq!(jb.stats().underruns, 1);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_silent_sender_pauses_the_stream_and_it_restarts() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        jb.pop();
        let pauses: Vec<_> = (0..6).map(|_| jb.pop()).collect();
        assert_eq!(pauses[..4], [const { Playout::Conceal }; 4]);
        assert_eq!(pauses[4..], [Playout::Silence, Playout::Silence]);
        // The sender unmutes 1 s later, far ahead in sequence.
        push(&mut jb, 1000, 50);
        assert_eq!(played(jb.pop()), Some(50));
    }

    #[test]
    fn the_target_depth_follows_the_jitter() {
        let mut jb = JitterBuffer::new();
        let mut rng = 7u64;
        for i in 0..200u16 {
            // Up to 40 ms of arrival jitter.
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            let wobble = (rng >> 33) % 40;
            push(&mut jb, 20 * u64::from(i) + wobble, i);
            jb.pop();
        }
        assert!(jb.jitter_ms() > 8.0, "{}", jb.jitter_ms());
        assert!(jb.target_depth() >= 2, "{}", jb.target_depth());
        assert!(jb.target_depth() <= MAX_DEPTH);
    }

    #[test]
    fn a_fast_sender_clock_is_absorbed_by_dropping_frames() {
        // The sender's clock runs 2% fast: 51 frames for every 50 ticks.
        let mut jb = JitterBuffer::new();
        let mut sent = 0u16;
        for tick in 0..3000u64 {
            let now = tick * 20;
            while u64::from(sent) * 1000 < now * 51 {
                push(&mut jb, now, sent);
                sent = sent.wrapping_add(1);
            }
            jb.pop();
        }
        assert!(jb.depth() <= jb.target_depth() + 2, "depth {}", jb.depth());
        assert!(jb.stats().dropped_to_shrink > 0);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_slow_sender_clock_conceals_instead_of_losing() {
        // The sender's clock runs 2% slow: 49 frames for every 50 ticks.
        let mut jb = JitterBuffer::new();
        let mut sent = 0u16;
        let mut frames = 0;
        for tick in 0..3000u64 {
            let now = tick * 20;
            while u64::from(sent) * 1000 < now * 49 {
                push(&mut jb, now, sent);
                sent = sent.wrapping_add(1);
            }
            if played(jb.pop()).is_some() {
                frames += 1;
            }
        }
        assert_eq!(jb.stats().lost, 0);
        assert!(frames >= i32::from(sent) - 2, "{frames} of {sent}");
    }

    #[test]
    fn a_jump_far_ahead_skips_to_it_and_counts_the_gap() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        jb.pop();
        push(&mut jb, 20, 30);
        // Frame 1 is lost and concealed; 2 to 29 are skipped as lost too.
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(played(jb.pop()), Some(30));
        assert_eq!(jb.stats().lost, 29);
    }

    #[test]
    fn after_a_stall_that_overfills_it_playout_catches_up_without_losses() {
        let mut jb = JitterBuffer::new();
        push(&mut jb, 0, 0);
        assert_eq!(played(jb.pop()), Some(0));
        // The player stalls for 30 frames' time while frames keep coming.
        for i in 1..=30u16 {
            push(&mut jb, 20 * u64::from(i), i);
        }
        // Then it plays one per frame again: what it plays is in order (the
        // backlog is skipped, not lost), and the depth comes back down.
        let mut last = None;
        for i in 31..200u16 {
            push(&mut jb, 20 * u64::from(i), i);
            if let Some(k) = played(jb.pop()) {
                assert!(last.is_none_or(|l: u8| k > l), "{last:?} then {k}");
                last = Some(k);
            }
        }
        assert_eq!(jb.stats().lost, 0, "{:?}", jb.stats());
        assert!(jb.depth() <= jb.target_depth() + 2, "depth {}", jb.depth());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new();
        for (k, i) in (65_530..=65_535u16).chain(0..5).enumerate() {
            jb.push(20 * k as u64, i, 0, vec![k as u8]);
            assert_eq!(played(jb.pop()), Some(k as u8));
        }
        assert_eq!(jb.stats().lost, 0);
    }
}
