//! Receiver reports: each device tells the others, every second, how their
//! voice reaches it (RTCP's receiver-report idea, on the media path), and
//! each sender plans its encoder's in-band FEC for the worst loss reported
//! about it, instead of a fixed 20% that costs a clean network its quality
//! (docs/protocol.md, *Receiver reports*).
//!
//! A report names senders by user: a device does not know the source
//! number the relay stamps on its own frames, but it knows who it is.

use crate::ids::UserId;
use crate::protocol::MediaSource;

type Millis = u64;

/// How a receiver heard one sender over the last report's window.
#[derive(Clone, Debug, PartialEq)]
pub struct Reception {
    pub user: UserId,
    /// Frames missing at their playout time, of those expected, in 0.1%.
    pub loss_permille: u16,
    pub jitter_ms: u16,
    /// The mean length of the runs of lost frames, in tenths of a frame
    /// (10: each loss alone); 0 when nothing was lost, or unknown.
    pub burst_tenths: u8,
}

/// The count's high bit: each entry ends with its burst byte. Reports of
/// devices that predate it carry none, and still parse.
const WITH_BURST: u8 = 0x80;

/// A report's payload: `count u8` (its high bit set), then per sender
/// `len u8 | user | loss u16 (0.1%) | jitter u16 (ms) | burst u8 (0.1
/// frame)`.
pub fn encode(entries: &[Reception]) -> Vec<u8> {
    let entries = &entries[..entries.len().min((WITH_BURST - 1) as usize)];
    let mut out = vec![entries.len() as u8 | WITH_BURST];
    for e in entries {
        let user = e.user.as_str().as_bytes();
        out.push(user.len() as u8);
        out.extend_from_slice(user);
        out.extend_from_slice(&e.loss_permille.to_be_bytes());
        out.extend_from_slice(&e.jitter_ms.to_be_bytes());
        out.push(e.burst_tenths);
    }
    out
}

/// The entries of a report, or `None` for a payload that is not one.
pub fn decode(payload: &[u8]) -> Option<Vec<Reception>> {
    let (&count, mut rest) = payload.split_first()?;
    let with_burst = count & WITH_BURST != 0;
    let count = count & !WITH_BURST;
    let fixed = 4 + usize::from(with_burst);
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (&len, tail) = rest.split_first()?;
        if tail.len() < len as usize + fixed {
            return None;
        }
        let (user, tail) = tail.split_at(len as usize);
        let user = UserId::parse(std::str::from_utf8(user).ok()?).ok()?;
        let loss_permille = u16::from_be_bytes([tail[0], tail[1]]).min(1000);
        let jitter_ms = u16::from_be_bytes([tail[2], tail[3]]);
        let burst_tenths = if with_burst { tail[4] } else { 0 };
        rest = &tail[fixed..];
        entries.push(Reception {
            user,
            loss_permille,
            jitter_ms,
            burst_tenths,
        });
    }
    rest.is_empty().then_some(entries)
}

/// A report older than this is forgotten (its sender left, or went quiet).
const FRESH_MS: Millis = 5_000;
/// The least FEC planned once reports come: none, on a clean network. Any
/// plan at all (even 1%) costs about 0.2 PESQ-WB on synthesized speech at
/// 32 kbps (`scripts/voice_quality.py`), and redundancy starts with the
/// first report of a loss.
const MIN_PLAN: i32 = 0;
/// The most: past it, FEC takes more bits from the voice than it saves.
const MAX_PLAN: i32 = 25;
/// The plan is this many times the loss reported: at 10% loss a plan of
/// 15% scored 2.9 twice (PESQ-WB) where 20% had scored 3.0 to 3.5 in six
/// calls, so 10% keeps the 20% it always had (docs/benchmarks.md).
const HEADROOM: f64 = 2.0;

/// What a sender has heard about its own voice, and the FEC plan from it.
#[derive(Debug, Default)]
pub struct Plan {
    /// The fresh reports, from which receiver (its source), and when.
    heard: Vec<(MediaSource, Reception, Millis)>,
}

impl Plan {
    pub fn heard(&mut self, now: Millis, from: MediaSource, reception: Reception) {
        self.heard.push((from, reception, now));
        self.heard
            .retain(|(_, _, at)| now.saturating_sub(*at) <= FRESH_MS);
    }

    /// The worst loss any receiver reported in the last five seconds, in
    /// percent; `None` before any report (the configured plan stands until
    /// then). Not only the latest second's: a second of a lossy network
    /// can be clean, and the plan would come and go with it.
    pub fn worst_loss(&self, now: Millis) -> Option<f64> {
        (self.heard.iter())
            .filter(|(_, _, at)| now.saturating_sub(*at) <= FRESH_MS)
            .map(|(_, r, _)| f64::from(r.loss_permille) / 10.0)
            .reduce(f64::max)
    }

    /// The longest mean burst of lost frames any receiver reported in the
    /// last five seconds, in frames (0 without a loss).
    pub fn worst_burst(&self, now: Millis) -> f64 {
        (self.heard.iter())
            .filter(|(_, _, at)| now.saturating_sub(*at) <= FRESH_MS)
            .map(|(_, r, _)| f64::from(r.burst_tenths) / 10.0)
            .fold(0.0, f64::max)
    }

    /// The loss to plan FEC for: twice the worst reported, at most 25%.
    pub fn fec_percent(&self, now: Millis) -> Option<i32> {
        self.worst_loss(now).map(fec_for)
    }
}

/// The FEC plan for `loss_percent`: twice it, at most 25%.
pub fn fec_for(loss_percent: f64) -> i32 {
    ((loss_percent * HEADROOM).ceil() as i32).clamp(MIN_PLAN, MAX_PLAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: &str, loss_permille: u16) -> Reception {
        Reception {
            user: UserId::parse(user).unwrap(),
            loss_permille,
            jitter_ms: 7,
            burst_tenths: if loss_permille > 0 { 15 } else { 0 },
        }
    }

    #[test]
    fn a_report_round_trips_and_garbage_is_refused() {
        let entries = vec![r("alice", 123), r("bob-17", 0)];
        assert_eq!(decode(&encode(&entries)), Some(entries));
        assert_eq!(decode(&encode(&[])), Some(vec![]));
        for bad in [&[][..], &[1], &[1, 5, b'a'], &[1, 1, b' ', 0, 0, 0, 0]] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        let mut trailing = encode(&[r("a", 1)]);
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
        // A report of a device from before bursts were reported: no burst byte.
        let old = [1, 5, b'a', b'l', b'i', b'c', b'e', 0, 123, 0, 7];
        let expected = Reception {
            burst_tenths: 0,
            ..r("alice", 123)
        };
        assert_eq!(decode(&old), Some(vec![expected]));
    }

    #[test]
    fn fec_follows_the_worst_fresh_report() {
        let mut plan = Plan::default();
        assert_eq!(
            plan.fec_percent(0),
            None,
            "the configured plan until a report"
        );
        plan.heard(0, 1, r("alice", 0));
        assert_eq!(plan.fec_percent(0), Some(MIN_PLAN));
        plan.heard(500, 2, r("alice", 100));
        assert_eq!(plan.fec_percent(500), Some(20), "10% lost: plan 20%");
        plan.heard(600, 2, r("alice", 800));
        assert_eq!(plan.fec_percent(600), Some(MAX_PLAN));
        // A clean second after a lossy one does not take the plan away...
        plan.heard(1_600, 2, r("alice", 0));
        assert_eq!(plan.fec_percent(1_600), Some(MAX_PLAN));
        assert_eq!(plan.worst_burst(1_600), 1.5);
        // ...but five clean seconds do, whoever reported the loss.
        plan.heard(5_000, 1, r("alice", 0));
        assert_eq!(plan.fec_percent(5_700), Some(MIN_PLAN));
        assert_eq!(plan.worst_burst(5_700), 0.0);
    }
}
