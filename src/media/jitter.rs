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
//! - a buffer that stays deeper than its target asks to [`Pace::Shrink`]:
//!   the player (which hears what it decodes) skips a quiet frame, or after
//!   a second of speech plays faster (time-compressed voice,
//!   `super::stretch`) until the excess is gone; so the delay comes back
//!   down unheard, and a sender whose clock runs fast is absorbed. A
//!   stall's backlog goes at once, by whole frames;
//! - a buffer below its target asks to [`Pace::Grow`]: the player plays a
//!   quiet tick more in a pause. Each change of depth is a change of timing, heard (and scored by
//!   PESQ) as a glitch in speech, so a new call starts three frames deep, as
//!   a lossy network needs (room for two redundant copies, or the next
//!   frame's FEC and a frame of jitter), and goes down to one frame only once
//!   the network has shown itself clean ([`JitterBuffer::window_ended`]).

use std::collections::BTreeMap;

use super::FRAME_MS;

type Millis = u64;

/// Deepest target, in frames (200 ms): beyond it a call is no longer a
/// conversation, and late frames are better lost.
pub const MAX_DEPTH: usize = 10;

/// Consecutive underruns after which the stream counts as paused (the
/// sender muted or left): the buffer starts over and plays silence.
const PAUSE_AFTER: u32 = 5;

/// The longest gap across a pause counted as frames lost (a second).
pub const PAUSE_GAP_LOST_UP_TO: u64 = 50;

/// Playout ticks the buffer must sit above its target before it sheds
/// (asks the player to, or drops a stall's backlog itself).
/// 10 ticks (200 ms): long enough to tell a backlog from a burst that the
/// next ticks drain anyway, short enough that a stall's backlog (a machine
/// that paused, a device that started late) is not heard as delay for
/// seconds.
const SHRINK_AFTER: u32 = 10;

/// A frame or two of excess is shed in speech too (time-compressed), after
/// this many ticks (3 s) without a pause to shed it in: sentences last a
/// second or two, and the pause after one sheds it unheard, where even a
/// few ms taken out of a sentence cost PESQ-WB 0.04 (docs/benchmarks.md).
const SHRINK_IN_SPEECH_AFTER: u32 = 150;

/// Two frames or more of excess (a sender's clock running fast) wait 1 s.
const SHRINK_MORE_IN_SPEECH_AFTER: u32 = 50;

/// Which way the buffer wants its depth to go, for the player to do where
/// it is not heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    Steady,
    /// Below the target: a tick more of quiet, in a pause.
    Grow,
    /// Above it for a while: a quiet frame less, in a pause; time-compressed
    /// voice too once `faster` (after a second without a pause).
    Shrink {
        faster: bool,
    },
}

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
    /// Quiet ticks played more in a pause (the decoder carrying the quiet
    /// on), to bring the depth up to its target.
    pub held_in_pauses: u64,
    /// Samples the player left out (time-compressed voice) to bring the
    /// depth back to its target.
    pub accelerated_samples: u64,
    /// Frames that arrived only as a later frame's redundant copy (RED),
    /// in time to play as they were sent.
    pub red_recovered: u64,
    /// Runs of frames lost on the way (missing at their turn, or come only
    /// as a copy): a burst of three counts once.
    pub loss_runs: u64,
}

impl std::ops::AddAssign for JitterStats {
    /// Several senders' counters as one.
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.lost += other.lost;
        self.fec_recovered += other.fec_recovered;
        self.underruns += other.underruns;
        self.dropped_to_shrink += other.dropped_to_shrink;
        self.held_in_pauses += other.held_in_pauses;
        self.accelerated_samples += other.accelerated_samples;
        self.red_recovered += other.red_recovered;
        self.loss_runs += other.loss_runs;
    }
}

/// Report windows (seconds) without a loss before a network counts as
/// clean again: the depth then follows the loss of minutes, not of each
/// second (at 5% loss one second in fourteen loses nothing).
const CLEAN_AFTER_WINDOWS: u32 = 10;

/// Report windows (a minute) that a buffer which ran dry keeps a frame more
/// than its target: a sender whose frames come in uneven steps (a sound
/// card's clock, a stalled machine) would otherwise run it dry again each
/// time the depth came back down, a concealed tick in speech each time.
const CUSHION_WINDOWS: u32 = 60;

/// Interarrival jitter (ms) under which frames count as coming on time: a
/// quarter of a frame.
const ON_TIME_JITTER_MS: f64 = 5.0;

/// The least depth while the network may lose frames: a copy of a lost
/// frame two frames later, or the FEC of the next one a frame of jitter
/// late, still comes before the lost frame's turn.
const LOSSY_FLOOR: usize = 3;

/// A frame waiting for its turn.
struct Waiting {
    packet: Vec<u8>,
    /// It came only as a later frame's copy: the network lost it.
    copy: bool,
}

pub struct JitterBuffer {
    /// Waiting frames by extended (unwrapped) sequence number.
    frames: BTreeMap<u64, Waiting>,
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
    /// The frame played last was lost on the way.
    in_loss_run: bool,
    /// Earlier frames the sender's frames carry copies of.
    copies: usize,
    /// Report windows to go before the network counts as clean: a new
    /// stream waits for one, a loss for `CLEAN_AFTER_WINDOWS`.
    lossy_windows: u32,
    /// Report windows to go with a frame more than the target, after the
    /// buffer ran dry (`CUSHION_WINDOWS`).
    cushion_windows: u32,
    /// The frame that was due when the stream paused: those between it
    /// and the first to come after the pause were lost on the way.
    paused_at: Option<u64>,
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
            in_loss_run: false,
            copies: 0,
            lossy_windows: 1,
            cushion_windows: 0,
            paused_at: None,
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
    /// the measured jitter, and at least the floor: one frame more than the
    /// copies the sender's frames carry (so that a lost frame's copy comes
    /// in time), three while the network may lose frames, else one; and a
    /// frame more for a minute after the buffer last ran dry.
    pub fn target_depth(&self) -> usize {
        let frames = (3.0 * self.jitter_ms / FRAME_MS as f64).ceil() as usize;
        let lossy = self.lossy_windows > 0;
        let floor = (1 + self.copies).max(if lossy { LOSSY_FLOOR } else { 1 });
        let cushion = usize::from(self.cushion_windows > 0);
        frames.max(floor + cushion).min(MAX_DEPTH)
    }

    /// Frames carry `copies` of the ones before them.
    pub fn set_copies(&mut self, copies: usize) {
        self.copies = copies.min(MAX_DEPTH - 1);
    }

    /// A report window (a second) ended: whether the network lost any of
    /// this sender's frames in it. A new stream counts as lossy until its
    /// first clean window; a loss, for ten windows after it.
    pub fn window_ended(&mut self, lost: bool) {
        self.lossy_windows = match lost {
            true => CLEAN_AFTER_WINDOWS,
            false => self.lossy_windows.saturating_sub(1),
        };
        self.cushion_windows = self.cushion_windows.saturating_sub(1);
    }

    /// Which way the depth should go, as of the frame just popped.
    pub fn pace(&self) -> Pace {
        let waiting = self.frames.len();
        let target = self.target_depth();
        if self.next.is_none() {
            Pace::Steady
        } else if waiting + 1 < target {
            Pace::Grow
        } else if waiting >= target && self.above_target_run >= SHRINK_AFTER {
            Pace::Shrink {
                faster: (waiting > target && self.above_target_run >= SHRINK_IN_SPEECH_AFTER)
                    || (waiting > target + 1
                        && self.above_target_run >= SHRINK_MORE_IN_SPEECH_AFTER),
            }
        } else {
            Pace::Steady
        }
    }

    /// The player played a quiet tick more than the buffer gave it.
    pub fn held(&mut self) {
        self.stats.held_in_pauses += 1;
    }

    /// The player skipped the quiet frame just popped. It goes on skipping
    /// while the buffer is above its target: the whole excess goes in one
    /// pause, one change of timing rather than one per frame.
    pub fn skipped(&mut self) {
        self.stats.dropped_to_shrink += 1;
    }

    /// The player left `samples` out of what it decoded from this buffer.
    pub fn accelerated(&mut self, samples: usize) {
        self.stats.accelerated_samples += samples as u64;
    }

    /// A frame arrived at `now`; `timestamp` is its media time in 48 kHz samples.
    pub fn push(&mut self, now: Millis, seq: u16, timestamp: u32, payload: Vec<u8>) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return;
        }
        // A copy that came first (with a later frame, the network
        // reordering them) gives way to the frame itself: it was not lost.
        if self.frames.get(&ext).is_some_and(|waiting| !waiting.copy) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.measure_jitter(now, f64::from(timestamp) / 48.0);
        self.frames.insert(
            ext,
            Waiting {
                packet: payload,
                copy: false,
            },
        );
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
    /// due, and otherwise goes. It says nothing of the network's timing,
    /// and counts as recovered only if it is played: the frame itself may
    /// still come in time.
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
        let copy = Waiting {
            packet: payload,
            copy: true,
        };
        self.frames.insert(ext, copy);
    }

    /// What to play for the tick at hand.
    pub fn pop(&mut self) -> Playout {
        let Some(next) = self.next else {
            return self.start();
        };
        if let Some(frame) = self.frames.remove(&next) {
            self.underrun_run = 0;
            self.next = Some(next + 1);
            if frame.copy {
                self.stats.red_recovered += 1;
            }
            self.count_run(frame.copy);
            self.track_depth();
            return Playout::Frame(frame.packet);
        }
        if self.frames.is_empty() {
            self.underrun_run += 1;
            if self.underrun_run >= PAUSE_AFTER {
                // The dry ticks were a pause, not frames coming unevenly.
                self.paused_at = Some(next);
                self.next = None;
                self.underrun_run = 0;
                self.cushion_windows = 0;
                return Playout::Silence;
            }
            // On a network that loses frames but delivers the rest on time,
            // an empty buffer is a burst of losses longer than the copies
            // cover, not a late frame: conceal the frame in its own place,
            // instead of waiting a tick for it (a change of timing, heard,
            // and another when the depth comes back down).
            if self.losing_on_time() {
                self.stats.lost += 1;
                self.count_run(true);
                self.next = Some(next + 1);
                return Playout::Conceal;
            }
            self.stats.underruns += 1;
            self.cushion_windows = CUSHION_WINDOWS;
            return Playout::Conceal;
        }
        // A gap with later frames waiting: `next` is lost.
        self.underrun_run = 0;
        self.stats.lost += 1;
        self.count_run(true);
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
                Playout::Fec(following.packet.clone())
            }
            None => Playout::Conceal,
        }
    }

    fn start(&mut self) -> Playout {
        if self.frames.len() < self.target_depth() {
            return Playout::Silence;
        }
        let (&first, _) = self.frames.first_key_value().expect("not empty");
        // A sender's sequence numbers go on only for frames it sends (a
        // muted one sends silence): the ones skipped were lost on the way,
        // a burst too long to wait for, and the receiver report must say
        // so, or the sender would not send the copies it calls for. A gap
        // of more than a second is an outage or a sender that started
        // over, which no copies would cover.
        if let Some(paused_at) = self.paused_at.take()
            && (paused_at + 1..=paused_at + PAUSE_GAP_LOST_UP_TO).contains(&first)
        {
            self.stats.lost += first - paused_at;
            self.count_run(true);
        }
        self.next = Some(first);
        self.pop()
    }

    /// Frames were lost lately, and those that came, came on time.
    fn losing_on_time(&self) -> bool {
        let lost_lately = self.lossy_windows > 0 && self.stats.lost + self.stats.red_recovered > 0;
        lost_lately && self.jitter_ms < ON_TIME_JITTER_MS
    }

    /// A frame's turn came: `lost` if the network lost it (missing, or
    /// come only as a copy). Runs of such turns make the loss's bursts.
    fn count_run(&mut self, lost: bool) {
        if lost && !self.in_loss_run {
            self.stats.loss_runs += 1;
        }
        self.in_loss_run = lost;
    }

    fn track_depth(&mut self) {
        // Frames still waiting once this tick's is out, beyond the target
        // (`soft`; a buffer at its target has one frame fewer waiting, as
        // when it started), and beyond one more frame (`hard`): what a lost
        // or late frame leaves behind, a sender's clock a little fast, or a
        // network that turned clean.
        let waiting = self.frames.len();
        let soft = (waiting + 1).saturating_sub(self.target_depth());
        let hard = waiting.saturating_sub(self.target_depth());
        if soft == 0 {
            self.above_target_run = 0;
            return;
        }
        self.above_target_run += 1;
        // A stall's backlog goes at once, half of it at a time; less is
        // the player's to shed where it is not heard (`pace`).
        if self.above_target_run < SHRINK_AFTER || hard <= 2 {
            return;
        }
        let drop = hard.div_ceil(2);
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

    /// A buffer whose network has shown itself clean: one frame deep.
    fn clean() -> JitterBuffer {
        let mut jb = JitterBuffer::new();
        jb.window_ended(false);
        jb
    }

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

    /// The next turns play the frames whose payloads are `frames`, each in
    /// its own turn.
    fn plays_in_order(j: &mut JitterBuffer, frames: &[u8]) {
        let played: Vec<Playout> = frames.iter().map(|_| j.pop()).collect();
        let expected: Vec<Playout> = frames.iter().map(|&f| Playout::Frame(vec![f])).collect();
        assert_eq!(played, expected);
    }

    #[test]
    fn copies_in_the_frames_make_the_buffer_a_frame_deeper_each() {
        let mut j = clean();
        assert_eq!(j.target_depth(), 1);
        j.set_copies(2);
        assert_eq!(j.target_depth(), 3);
        // Frame 1 is lost; frame 2 brings its copy before frame 1's turn.
        j.push(0, 0, 0, vec![0]);
        j.push(40, 2, 1920, vec![2]);
        j.push_copy(1, vec![1]);
        j.push(60, 3, 2880, vec![3]);
        plays_in_order(&mut j, &[0, 1, 2]);
        assert_eq!((j.stats().lost, j.stats().red_recovered), (0, 1));
        j.set_copies(0);
        assert_eq!(j.target_depth(), 1);
    }

    /// The network reorders: frame 2 (with a copy of frame 1) comes before
    /// frame 1, which still comes before its turn. Nothing was lost: frame
    /// 1 itself is played and counted received, its copy neither.
    #[test]
    fn a_frame_that_comes_after_its_copy_but_in_time_is_not_lost() {
        let mut j = clean();
        j.set_copies(1);
        j.push(0, 0, 0, vec![0]);
        j.push(20, 2, 1920, vec![2]);
        j.push_copy(1, vec![101]);
        j.push(25, 1, 960, vec![1]);
        plays_in_order(&mut j, &[0, 1, 2]);
        let s = j.stats();
        assert_eq!(
            (s.received, s.lost, s.red_recovered, s.duplicates),
            (3, 0, 0, 0)
        );
    }

    #[test]
    fn a_steady_stream_plays_in_order_one_frame_deep() {
        let mut jb = clean();
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
        let mut jb = clean();
        for (t, i) in [(0, 0), (20, 2), (21, 1), (40, 3)] {
            push(&mut jb, t, i);
        }
        let out: Vec<_> = (0..4).map(|_| played(jb.pop())).collect();
        assert_eq!(out, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn duplicates_and_late_frames_are_counted_and_dropped() {
        let mut jb = clean();
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
        let mut jb = clean();
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
        let mut jb = clean();
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
        let mut jb = clean();
        push(&mut jb, 0, 0);
        assert_eq!(played(jb.pop()), Some(0));
        // Frame 1 is 25 ms late: the tick conceals, and frame 1 still plays.
        assert_eq!(jb.pop(), Playout::Conceal);
        push(&mut jb, 45, 1);
        assert_eq!(played(jb.pop()), Some(1));
        assert_eq!(jb.stats().underruns, 1);
        assert_eq!(jb.stats().lost, 0);
    }

    /// Frames that come unevenly ran the buffer dry once: it keeps a
    /// frame more for a minute, instead of running dry each time it comes
    /// back down.
    #[test]
    fn a_buffer_that_ran_dry_keeps_a_frame_more_for_a_minute() {
        let mut jb = clean();
        push(&mut jb, 0, 0);
        assert_eq!(played(jb.pop()), Some(0));
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(jb.target_depth(), 2);
        for _ in 0..CUSHION_WINDOWS - 1 {
            jb.window_ended(false);
        }
        assert_eq!(jb.target_depth(), 2);
        jb.window_ended(false);
        assert_eq!(jb.target_depth(), 1);
    }

    #[test]
    fn a_silent_sender_pauses_the_stream_and_it_restarts() {
        let mut jb = clean();
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
        let mut jb = clean();
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

    /// The session's player on a quiet stream: it skips the frame just
    /// popped when the buffer asks to shrink.
    fn pop_quiet(jb: &mut JitterBuffer) -> Playout {
        let playout = jb.pop();
        if matches!(jb.pace(), Pace::Shrink { .. }) && matches!(playout, Playout::Frame(_)) {
            jb.skipped();
            return jb.pop();
        }
        playout
    }

    /// A new stream starts three frames deep, as a lossy network needs;
    /// a clean second lets it go to one, and a loss brings the three back
    /// for ten seconds.
    #[test]
    fn a_new_stream_starts_deep_until_the_network_shows_itself_clean() {
        let mut jb = JitterBuffer::new();
        assert_eq!(jb.target_depth(), LOSSY_FLOOR);
        jb.window_ended(false);
        assert_eq!(jb.target_depth(), 1);
        jb.window_ended(true);
        for _ in 1..CLEAN_AFTER_WINDOWS {
            jb.window_ended(false);
            assert_eq!(jb.target_depth(), LOSSY_FLOOR);
        }
        jb.window_ended(false);
        assert_eq!(jb.target_depth(), 1);
        push(&mut jb, 0, 0);
        push(&mut jb, 20, 1);
        assert_eq!(played(jb.pop()), Some(0));
        assert_eq!(jb.pace(), Pace::Steady);
        // A loss: below its target, it asks to grow (the player does, in a pause).
        jb.window_ended(true);
        assert_eq!(jb.pace(), Pace::Grow);
    }

    /// On a lossy network whose frames come on time, a burst longer than
    /// the buffer is lost in place: the frames after it play on their
    /// ticks, with no underrun and nothing to shed later.
    #[test]
    fn a_long_burst_on_time_is_concealed_in_place_not_waited_for() {
        let mut jb = clean();
        jb.window_ended(true);
        let mut ticks = Vec::new();
        for i in 0..40u16 {
            // Frame 7 lost alone, then 20 to 24: five in a row.
            if i != 7 && !(20..25).contains(&i) {
                push(&mut jb, u64::from(i) * 20, i);
            }
            ticks.push(played(jb.pop()));
        }
        let stats = jb.stats();
        assert_eq!((stats.lost, stats.underruns), (6, 0), "{stats:?}");
        // Frame 30 plays on the same tick as it would have without the losses.
        let at = |k| ticks.iter().position(|&t| t == Some(k)).unwrap();
        assert_eq!(at(30) - at(10), 20, "{ticks:?}");
    }

    /// A burst of seven lost frames on a network that had lost nothing:
    /// the buffer runs dry, counts a pause and starts over; the frames it
    /// skipped count as lost, a burst of seven, for the receiver report to
    /// ask for copies.
    #[test]
    fn frames_skipped_across_a_pause_count_as_one_lost_burst() {
        let mut jb = clean();
        for i in 0..30u16 {
            if !(10..17).contains(&i) {
                push(&mut jb, u64::from(i) * 20, i);
            }
            jb.pop();
        }
        let stats = jb.stats();
        assert_eq!((stats.lost, stats.loss_runs), (7, 1), "{stats:?}");
        // A sender back after a minute's outage (or one that started over)
        // is not a burst copies could cover.
        for _ in 0..10 {
            jb.pop();
        }
        push(&mut jb, 3_000, 3_000);
        jb.pop();
        assert_eq!(jb.stats().lost, 7);
    }

    #[test]
    fn a_fast_sender_clock_is_absorbed_by_skipping_quiet_frames() {
        // The sender's clock runs 2% fast: 51 frames for every 50 ticks.
        let mut jb = clean();
        let mut sent = 0u16;
        for tick in 0..3000u64 {
            let now = tick * 20;
            while u64::from(sent) * 1000 < now * 51 {
                push(&mut jb, now, sent);
                sent = sent.wrapping_add(1);
            }
            pop_quiet(&mut jb);
        }
        assert!(jb.depth() <= jb.target_depth() + 2, "depth {}", jb.depth());
        assert!(jb.stats().dropped_to_shrink > 0);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_slow_sender_clock_conceals_instead_of_losing() {
        // The sender's clock runs 2% slow: 49 frames for every 50 ticks.
        let mut jb = clean();
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
        let mut jb = clean();
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
        let mut jb = clean();
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
            if let Some(k) = played(pop_quiet(&mut jb)) {
                assert!(last.is_none_or(|l: u8| k > l), "{last:?} then {k}");
                last = Some(k);
            }
        }
        assert_eq!(jb.stats().lost, 0, "{:?}", jb.stats());
        assert!(jb.depth() <= jb.target_depth() + 2, "depth {}", jb.depth());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = clean();
        for (k, i) in (65_530..=65_535u16).chain(0..5).enumerate() {
            jb.push(20 * k as u64, i, 0, vec![k as u8]);
            assert_eq!(played(jb.pop()), Some(k as u8));
        }
        assert_eq!(jb.stats().lost, 0);
    }
}
