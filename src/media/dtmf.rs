//! DTMF as telephone events on the media path (RFC 4733), sans IO: the
//! packets a sender makes for each digit, the receiver's de-duplication,
//! and the key tone the sender hears.
//!
//! A digit is a 100 ms event: one packet every 20 ms, each carrying the
//! digit's start timestamp and the duration so far, then the end packet
//! three times (RFC 4733 2.5.1.4: the end is sent redundantly), which
//! also leaves 60 ms before the next digit starts. Every packet of a digit
//! has the same timestamp, so the receiver reports the digit with the
//! first packet that arrives and drops the rest: a digit is lost only if
//! all eight of its packets are (10^-8 at 10% loss), and it is never
//! reported twice.

use std::collections::VecDeque;

use super::control::Digit;
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{Error, ErrorCode};

type Millis = u64;

/// Frames (20 ms each) a digit's tone lasts: 100 ms, over RFC 4733's
/// 40 ms minimum.
pub const TONE_FRAMES: u32 = 5;

/// How many times the end of a digit is sent.
pub const END_REPEATS: u32 = 3;

/// Bytes of a telephone-event payload: event, E|R|volume, duration.
pub const EVENT_BYTES: usize = 4;

/// Digits waiting to go out, at most: 128 digits are 20 s of tones.
pub const MAX_QUEUED: usize = 128;

/// The tone's level in the event (RFC 4733: -dBm0, 0 to 63).
const VOLUME: u8 = 10;

/// How long a receiver remembers an event's timestamp: far longer than a
/// digit's packets take to arrive, short enough that a sender whose media
/// time starts again (a new call's media) is not mistaken for a repeat.
const REMEMBER_MS: Millis = 2_000;

/// Events a receiver remembers at most (a digit every 160 ms needs 13).
const REMEMBERED: usize = 32;

/// One telephone-event packet to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPacket {
    /// The digit's start, in the sender's media time (48 kHz samples).
    pub timestamp: u32,
    pub payload: [u8; EVENT_BYTES],
    /// The digit whose first packet this is (its key tone starts).
    pub starts: Option<Digit>,
}

/// The RFC 4733 payload: event, the end bit, volume, duration in samples.
fn payload(digit: Digit, end: bool, duration: u16) -> [u8; EVENT_BYTES] {
    let [hi, lo] = duration.to_be_bytes();
    [digit.event(), (u8::from(end) << 7) | VOLUME, hi, lo]
}

/// A sender's digits: queued by `sendDTMF`, one packet per 20 ms frame.
#[derive(Debug, Default)]
pub struct DtmfSender {
    queue: VecDeque<Digit>,
    /// The digit going out: its start timestamp and packets sent so far.
    current: Option<(Digit, u32, u32)>,
}

impl DtmfSender {
    /// Queues `digits` after those still going out; refused whole when
    /// the queue would hold more than [`MAX_QUEUED`].
    pub fn push(&mut self, digits: &[Digit]) -> Result<(), Error> {
        if self.queue.len() + digits.len() > MAX_QUEUED {
            return Err(Error::new(
                ErrorCode::RateLimited,
                format!(
                    "{} DTMF digits are still waiting to go out (at most {MAX_QUEUED}); \
                     send these once they have",
                    self.queue.len()
                ),
            ));
        }
        self.queue.extend(digits);
        Ok(())
    }

    /// Drops the digits still waiting (the one going out finishes), and
    /// gives them back.
    pub fn stop(&mut self) -> Vec<Digit> {
        self.queue.drain(..).collect()
    }

    /// The packet to send with the frame of media time `timestamp`, if a
    /// digit is going out.
    pub fn next(&mut self, timestamp: u32) -> Option<EventPacket> {
        if self.current.is_none() {
            self.current = Some((self.queue.pop_front()?, timestamp, 0));
        }
        let (digit, start, sent) = self.current.as_mut().expect("set above");
        let (digit, start, k) = (*digit, *start, *sent);
        *sent += 1;
        if *sent == TONE_FRAMES + END_REPEATS {
            self.current = None;
        }
        let end = k >= TONE_FRAMES;
        let duration = (k + 1).min(TONE_FRAMES) * FRAME_SAMPLES as u32;
        Some(EventPacket {
            timestamp: start,
            payload: payload(digit, end, duration as u16),
            starts: (k == 0).then_some(digit),
        })
    }
}

/// A receiver's view of one sender's events.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    /// Timestamps of the events heard lately, with when each was first heard.
    recent: VecDeque<(u32, Millis)>,
}

impl DtmfReceiver {
    /// A telephone-event packet arrived at `now`: its digit, if this is
    /// the first packet heard of its event (a repeat, an end packet of a
    /// digit already reported, or a malformed payload gives nothing).
    pub fn receive(&mut self, now: Millis, timestamp: u32, payload: &[u8]) -> Option<Digit> {
        let [event, _, _, _] = *<&[u8; EVENT_BYTES]>::try_from(payload).ok()?;
        let digit = Digit::from_event(event)?;
        self.recent
            .retain(|(_, at)| now.saturating_sub(*at) < REMEMBER_MS);
        if self.recent.iter().any(|(ts, _)| *ts == timestamp) {
            return None;
        }
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((timestamp, now));
        Some(digit)
    }
}

/// The two frequencies of a key (Hz): its row's and its column's.
fn frequencies(digit: Digit) -> (f32, f32) {
    const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (row, column) = match digit.key() {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        _ => (3, 3),
    };
    (ROWS[row], COLUMNS[column])
}

/// The tone a sender hears under its own digit, quietly, so the user
/// knows the key went out.
#[derive(Debug)]
pub struct KeyTone {
    frequencies: (f32, f32),
    /// Samples played so far, and how many it lasts.
    played: usize,
    length: usize,
}

impl KeyTone {
    /// Each of the two sines' amplitude: a quiet click-free beep.
    const LEVEL: f32 = 0.08;

    pub fn new(digit: Digit) -> KeyTone {
        KeyTone {
            frequencies: frequencies(digit),
            played: 0,
            length: TONE_FRAMES as usize * FRAME_SAMPLES,
        }
    }

    /// Adds the next frame of the tone to `out`; false once it is over.
    pub fn mix_into(&mut self, out: &mut Frame) -> bool {
        let (low, high) = self.frequencies;
        let rate = SAMPLE_RATE as f32;
        for sample in out.iter_mut() {
            if self.played == self.length {
                return false;
            }
            let t = self.played as f32 / rate;
            let tau = 2.0 * std::f32::consts::PI;
            *sample += Self::LEVEL * ((tau * low * t).sin() + (tau * high * t).sin());
            self.played += 1;
        }
        self.played < self.length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(keys: &str) -> Vec<Digit> {
        Digit::parse_all(keys).unwrap()
    }

    /// Every packet a sender makes for `keys`, frame by frame from media
    /// time 0.
    fn packets(keys: &str) -> Vec<EventPacket> {
        let mut sender = DtmfSender::default();
        sender.push(&digits(keys)).unwrap();
        let mut out = Vec::new();
        for frame in 0.. {
            match sender.next(frame * FRAME_SAMPLES as u32) {
                Some(p) => out.push(p),
                None => return out,
            }
        }
        unreachable!()
    }

    #[test]
    fn a_digit_is_five_growing_packets_then_three_ends_on_one_timestamp() {
        let sent = packets("5");
        assert_eq!(sent.len(), 8);
        assert!(sent.iter().all(|p| p.timestamp == 0 && p.payload[0] == 5));
        let durations: Vec<u16> = (sent.iter())
            .map(|p| u16::from_be_bytes([p.payload[2], p.payload[3]]))
            .collect();
        assert_eq!(durations, [960, 1920, 2880, 3840, 4800, 4800, 4800, 4800]);
        let ends: Vec<bool> = sent.iter().map(|p| p.payload[1] & 0x80 != 0).collect();
        assert_eq!(ends, [false, false, false, false, false, true, true, true]);
        assert_eq!(sent[0].starts, Digit::new('5'));
        assert!(sent[1..].iter().all(|p| p.starts.is_none()));
    }

    #[test]
    fn digits_follow_each_other_on_their_own_timestamps() {
        let sent = packets("12");
        assert_eq!(sent.len(), 16);
        assert_eq!(sent[8].timestamp, 8 * FRAME_SAMPLES as u32);
        assert_eq!(sent[8].payload[0], 2);
    }

    #[test]
    fn the_queue_has_a_bound() {
        let mut sender = DtmfSender::default();
        for _ in 0..MAX_QUEUED / 32 {
            sender.push(&digits(&"1".repeat(32))).unwrap();
        }
        let e = sender.push(&digits("1")).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
    }

    /// The receiver's reading of `keys` when each packet is lost with
    /// probability `loss` (a fixed sequence of coin flips).
    fn heard(keys: &str, loss: f64, seed: u64) -> String {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut receiver = DtmfReceiver::default();
        let mut out = String::new();
        for (i, p) in packets(keys).into_iter().enumerate() {
            if rng.random_bool(loss) {
                continue;
            }
            if let Some(d) = receiver.receive(20 * i as Millis, p.timestamp, &p.payload) {
                out.push(d.key());
            }
        }
        out
    }

    #[test]
    fn each_digit_arrives_once_and_in_order_with_no_loss_and_at_ten_percent() {
        assert_eq!(heard("1234567890*#ABCD", 0.0, 1), "1234567890*#ABCD");
        for seed in 0..200 {
            assert_eq!(
                heard("1234567890*#", 0.10, seed),
                "1234567890*#",
                "seed {seed}"
            );
        }
    }

    #[test]
    fn only_a_digit_whose_every_packet_is_lost_goes_missing() {
        // Half the packets lost: a digit still needs all eight gone.
        let runs: u64 = 200;
        let whole = (0..runs)
            .filter(|&seed| heard("1234567890*#", 0.5, seed) == "1234567890*#")
            .count();
        assert!(whole as u64 > runs / 2, "{whole} of {runs}");
        for seed in 0..runs {
            let got = heard("1234567890*#", 0.5, seed);
            let mut expected = "1234567890*#".chars();
            assert!(
                got.chars().all(|c| expected.any(|e| e == c)),
                "{got} in order, once"
            );
        }
    }

    #[test]
    fn a_repeat_long_after_is_a_new_digit_and_garbage_is_nothing() {
        let mut receiver = DtmfReceiver::default();
        let p = payload(Digit::new('7').unwrap(), false, 960);
        assert!(receiver.receive(0, 960, &p).is_some());
        assert!(receiver.receive(1_000, 960, &p).is_none());
        // The sender's media started again: the same timestamp, later.
        assert!(receiver.receive(5_000, 960, &p).is_some());
        assert!(receiver.receive(5_000, 7, &[16, 0, 0, 0]).is_none());
        assert!(receiver.receive(5_000, 8, &[1, 0, 0]).is_none());
    }

    #[test]
    fn the_key_tone_lasts_as_long_as_the_digit_and_is_quiet() {
        let mut tone = KeyTone::new(Digit::new('0').unwrap());
        let mut frames = 0;
        loop {
            let mut out = [0.0; FRAME_SAMPLES];
            let more = tone.mix_into(&mut out);
            frames += 1;
            assert!(out.iter().all(|s| s.abs() <= 2.0 * KeyTone::LEVEL));
            assert!(out.iter().any(|s| s.abs() > 0.01));
            if !more {
                break;
            }
        }
        assert_eq!(frames, TONE_FRAMES);
        assert_eq!(frequencies(Digit::new('0').unwrap()), (941.0, 1336.0));
        assert_eq!(frequencies(Digit::new('D').unwrap()), (941.0, 1633.0));
    }
}
