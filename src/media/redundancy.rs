//! Voice with redundancy (RFC 2198's idea, as WebRTC sends Opus): each
//! frame also carries copies of the one to four frames before it, so a lost
//! frame is still played as it was sent when the next one arrives, where
//! in-band FEC would rebuild a coarser version of it and a burst of two
//! would defeat FEC altogether. The sender turns it on, and deeper, as
//! the others report loss (media::feedback); it costs the bits of the
//! copies (docs/protocol.md, *Voice with redundancy*).

/// The payload of a `VoiceRed` frame: `len u16 | primary | count u8 |`
/// then per copy, the frame just before first, `len u16 | packet`.
pub fn encode(primary: &[u8], copies: &[&[u8]]) -> Vec<u8> {
    let size = 3 + primary.len() + copies.iter().map(|c| 2 + c.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(primary.len() as u16).to_be_bytes());
    out.extend_from_slice(primary);
    out.push(copies.len() as u8);
    for copy in copies {
        out.extend_from_slice(&(copy.len() as u16).to_be_bytes());
        out.extend_from_slice(copy);
    }
    out
}

/// The primary packet and the copies (the frame before first), or `None`
/// for a payload that is not one.
pub fn decode(payload: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let (primary, rest) = take(payload)?;
    let (&count, mut rest) = rest.split_first()?;
    let mut copies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (copy, tail) = take(rest)?;
        copies.push(copy);
        rest = tail;
    }
    (rest.is_empty() && !primary.is_empty()).then_some((primary, copies))
}

fn take(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = u16::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The most copies a frame carries: four bursts in five of a mean of three
/// lost frames are still played as sent. Each copy costs the voice's
/// bitrate again, and the receiver a frame of delay.
pub const MAX_COPIES: usize = 4;

/// The share of bursts the copies cover whole.
const BURSTS_COVERED: f64 = 0.8;

/// How many earlier frames each frame carries, for the worst loss the
/// others report (percent) and the longest mean burst (frames): none on a
/// clean network (below 2%); from 2%, one (a single loss then costs
/// nothing), two from 8% (so do two in a row), and enough for four bursts
/// in five, up to four. A burst's length is taken as geometric, as in a
/// Gilbert-Elliott channel (each lost frame followed by another with the
/// same odds): the mean alone then says how long the long ones are, and a
/// mean of three is a burst of four or more one time in three. Copies for
/// the mean only (three) left the tails of those bursts to concealment,
/// the most of what 5% bursty loss cost (docs/benchmarks.md).
pub fn depth_for(loss_percent: f64, mean_burst: f64) -> usize {
    if loss_percent < 2.0 {
        return 0;
    }
    let by_loss = if loss_percent >= 8.0 { 2 } else { 1 };
    // P(burst > n) = (1 - 1/mean)^n; the n that makes it 1 - BURSTS_COVERED.
    let go_on = 1.0 - 1.0 / mean_burst.max(1.0);
    let by_burst = match go_on > 0.0 {
        true => ((1.0 - BURSTS_COVERED).ln() / go_on.ln()).round() as usize,
        false => 0,
    };
    by_loss.max(by_burst).min(MAX_COPIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_garbage_is_refused() {
        let payload = encode(b"now", &[b"one before", b"two"]);
        let (primary, copies) = decode(&payload).unwrap();
        assert_eq!(primary, b"now");
        assert_eq!(copies, [&b"one before"[..], &b"two"[..]]);
        assert_eq!(decode(&encode(b"x", &[])), Some((&b"x"[..], vec![])));
        for bad in [&[][..], &[0, 5, 1, 2], &[0, 1, 7], &[0, 1, 7, 1, 0, 9]] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(decode(&encode(b"", &[])), None, "a primary is never empty");
    }

    #[test]
    fn depth_grows_with_the_reported_loss_and_its_bursts() {
        let single = [0.0, 1.9, 2.0, 7.9, 8.0, 30.0].map(|loss| depth_for(loss, 1.0));
        assert_eq!(single, [0, 0, 1, 1, 2, 2]);
        // Bursts of three on average: four copies (a burst of four or more
        // is one in three), once there is loss to speak of.
        let bursty = [1.9, 2.0, 8.0].map(|loss| depth_for(loss, 3.0));
        assert_eq!(bursty, [0, 4, 4]);
        // Random loss has bursts of a frame or a little more: the loss decides.
        let random = [1.0, 1.2, 1.5, 2.0].map(|burst| depth_for(5.0, burst));
        assert_eq!(random, [1, 1, 1, 2]);
        assert_eq!(depth_for(50.0, 9.0), MAX_COPIES);
        assert_eq!(depth_for(0.0, 9.0), 0);
    }
}
