//! What a sender's voice is made of within a send budget (media::rate):
//! the Opus bitrate and the copies of earlier frames each frame carries
//! (media::redundancy), chosen so that the two together fit
//! (docs/protocol.md, *Bitrate adaptation*).

use crate::protocol::MEDIA_HEADER_BYTES;

/// Frames a second (20 ms each).
const FRAMES_PER_SECOND: f64 = 50.0;
/// The least Opus bitrate sent, whatever the budget: below it Opus narrows
/// its band, and a voice that fits no budget at all is still a voice.
pub const MIN_BITRATE_BPS: i32 = 16_000;
/// The least Opus bitrate worth copying: below it, a better voice with
/// in-band FEC (which the plan turns on without copies) is worth more than
/// a coarse voice sent two or three times. Under a 64 kbit/s cap with 5%
/// loss, one copy of about 26 kbit/s scored 3.60 to 3.94 (PESQ-WB, three
/// voices, two seeds) where 48 kbit/s with FEC (copies only from 32
/// kbit/s) scored 3.23 to 3.96: copies kept on keep the receiver's jitter
/// buffer as deep, where copies that come and go with each probe of the
/// cap change its depth (docs/benchmarks.md).
pub const MIN_COPIED_BITRATE_BPS: i32 = 24_000;

/// The voice a sender sends: its Opus bitrate and the copies of earlier
/// frames each frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub bitrate_bps: i32,
    pub copies: usize,
}

impl Allocation {
    /// What it takes on the wire, in bit/s: each packet at the Opus
    /// bitrate (what a variable bitrate averages in speech; pauses take
    /// less), the frame's header, and the lengths of a frame with copies.
    pub fn wire_bps(self) -> f64 {
        let packets = (1 + self.copies) as f64 * f64::from(self.bitrate_bps);
        packets + framing_bps(self.copies)
    }
}

/// Bits a second that are not voice: the header, and with copies the
/// primary's length and the count (3 bytes) and each copy's length (2).
fn framing_bps(copies: usize) -> f64 {
    let red = match copies {
        0 => 0,
        n => 3 + 2 * n,
    };
    8.0 * FRAMES_PER_SECOND * (MEDIA_HEADER_BYTES + red) as f64
}

/// The allocation within `budget_bps` (none: no limit) closest to
/// `wanted`: the Opus bitrate comes down first, keeping the copies, as far
/// as [`MIN_COPIED_BITRATE_BPS`]; then a copy goes, giving its bits back
/// to the voice, and so on; without copies the bitrate comes down as far
/// as [`MIN_BITRATE_BPS`].
pub fn fit(wanted: Allocation, budget_bps: Option<f64>) -> Allocation {
    let Some(budget) = budget_bps.filter(|b| *b < wanted.wire_bps()) else {
        return wanted;
    };
    // In whole kbit/s, as MEDIA_STATS shows it.
    let bitrate_within = |copies: usize| {
        let bps = (budget - framing_bps(copies)) / (1 + copies) as f64;
        (bps / 1000.0) as i32 * 1000
    };
    for copies in (1..=wanted.copies).rev() {
        let bitrate_bps = bitrate_within(copies).min(wanted.bitrate_bps);
        if bitrate_bps >= MIN_COPIED_BITRATE_BPS {
            return Allocation {
                bitrate_bps,
                copies,
            };
        }
    }
    Allocation {
        bitrate_bps: bitrate_within(0).clamp(MIN_BITRATE_BPS, wanted.bitrate_bps),
        copies: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(kbps: i32, copies: usize) -> Allocation {
        Allocation {
            bitrate_bps: kbps * 1000,
            copies,
        }
    }

    #[test]
    fn the_wire_rate_counts_headers_and_copies() {
        assert_eq!(a(48, 0).wire_bps(), 54_000.0);
        assert_eq!(a(48, 2).wire_bps(), 3.0 * 48_000.0 + 6_000.0 + 2_800.0);
    }

    #[test]
    fn what_is_wanted_stands_while_it_fits() {
        for budget in [None, Some(1e9), Some(a(48, 2).wire_bps())] {
            assert_eq!(fit(a(48, 2), budget), a(48, 2));
        }
    }

    /// Two copies of 48 kbps want 153 kbps: a smaller budget first lowers
    /// the bitrate, then takes copies, then lowers the bitrate to its floor.
    #[test]
    fn a_smaller_budget_takes_bitrate_then_copies_then_bitrate() {
        let wanted = a(48, 2);
        let fitted = |kbps: f64| fit(wanted, Some(kbps * 1000.0));
        assert_eq!(fitted(120.0), a(37, 2));
        assert_eq!(
            fitted(80.0),
            a(36, 1),
            "23 kbit/s is too little to copy twice"
        );
        assert_eq!(fitted(57.0), a(24, 1));
        assert_eq!(fitted(55.0), a(48, 0), "in-band FEC from here on");
        assert_eq!(fitted(50.0), a(44, 0));
        assert_eq!(fitted(28.0), a(22, 0));
        assert_eq!(fitted(10.0), a(16, 0), "the floor");
        for kbps in [20.0, 30.0, 60.0, 100.0, 150.0] {
            let fitted = fitted(kbps);
            assert!(fitted.wire_bps() <= kbps * 1000.0 || fitted == a(16, 0));
        }
    }
}
