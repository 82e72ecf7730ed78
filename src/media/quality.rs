//! ON_USER_NETWORK_QUALITY_CHANGED: a grade from measured loss, jitter and
//! round-trip time, on the vendor's scale (0 unknown, 1 excellent ... 5 very
//! bad, 6 down).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u8")]
pub enum Quality {
    Unknown = 0,
    Excellent = 1,
    Good = 2,
    Poor = 3,
    Bad = 4,
    VeryBad = 5,
    Down = 6,
}

impl From<Quality> for u8 {
    fn from(q: Quality) -> u8 {
        q as u8
    }
}

impl Quality {
    pub fn label(self) -> &'static str {
        match self {
            Quality::Unknown => "unknown",
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Poor => "poor",
            Quality::Bad => "bad",
            Quality::VeryBad => "very bad",
            Quality::Down => "down",
        }
    }
}

/// What one window of measurement saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurement {
    pub loss_percent: f64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<u64>,
    /// Frames received in the window: none means the sender is gone (or muted).
    pub received: u64,
}

/// The grade is the worst that any one of loss, jitter and round trip earns.
pub fn grade(m: &Measurement) -> Quality {
    const STEPS: [(f64, f64, u64, Quality); 4] = [
        (1.0, 20.0, 100, Quality::Excellent),
        (3.0, 40.0, 200, Quality::Good),
        (8.0, 60.0, 300, Quality::Poor),
        (15.0, 100.0, 500, Quality::Bad),
    ];
    let rtt = m.rtt_ms.unwrap_or(0);
    STEPS
        .iter()
        .find(|(loss, jitter, max_rtt, _)| {
            m.loss_percent < *loss && m.jitter_ms < *jitter && rtt < *max_rtt
        })
        .map_or(Quality::VeryBad, |step| step.3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(loss: f64, jitter: f64, rtt: u64) -> Measurement {
        Measurement {
            loss_percent: loss,
            jitter_ms: jitter,
            rtt_ms: Some(rtt),
            received: 50,
        }
    }

    #[test]
    fn the_worst_measure_sets_the_grade() {
        assert_eq!(grade(&m(0.0, 2.0, 5)), Quality::Excellent);
        assert_eq!(grade(&m(2.0, 2.0, 5)), Quality::Good);
        assert_eq!(grade(&m(0.0, 2.0, 250)), Quality::Poor);
        assert_eq!(grade(&m(10.0, 2.0, 5)), Quality::Bad);
        assert_eq!(grade(&m(0.0, 150.0, 5)), Quality::VeryBad);
        assert_eq!(serde_json::to_string(&Quality::Good).unwrap(), "2");
    }
}
