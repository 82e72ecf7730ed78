//! A call's quality as one number: the E-model of ITU-T G.107, from what
//! the device measured, mapped to a mean opinion score (1 bad to 4.5).
//!
//! ```text
//! R   = 93.2 − Id − Ie,eff
//! Id  = 0.024·Ta + 0.11·(Ta − 177.3)·[Ta > 177.3]          (one-way delay Ta, ms)
//! Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl)              (random loss: BurstR = 1)
//! MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)          (1 below R = 0, 4.5 above 100)
//! ```
//!
//! G.113 has no impairment factors for Opus, so `Ie` and `Bpl` are fitted
//! to PESQ-WB scores of speech through termphone's own media path at 0%,
//! 5% and 10% loss (docs/benchmarks.md, `scripts/pesq_score.py`). `Ppl` is
//! the share of frames concealed (lost and not rebuilt from the next
//! packet's FEC, or played while the jitter buffer ran dry); a frame FEC
//! rebuilt is coarser than the original and counts as `FEC_WEIGHT` of a
//! concealed one.

/// Opus as it was fitted (32 kbps, FEC on; the default is 48 kbps now,
/// which PESQ-WB scores 0.1 to 0.3 higher clean): what the codec alone costs, in
/// R points.
const IE: f64 = 4.5;
/// How well concealment hides lost frames (higher: better hidden).
const BPL: f64 = 12.0;
/// A frame rebuilt from FEC, as a share of a concealed frame's harm.
const FEC_WEIGHT: f64 = 0.35;

/// What the estimate is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MosInputs {
    /// Frames expected from the others (received or missing at playout).
    pub expected: u64,
    /// Concealed: missing at their playout time and not rebuilt, or
    /// played while the jitter buffer ran dry.
    pub concealed: u64,
    /// Missing, but rebuilt from the next frame's FEC.
    pub fec_recovered: u64,
    /// Mouth to ear, one way (ms).
    pub one_way_delay_ms: f64,
}

/// The E-model's R factor (0 to 93.2).
pub fn r_factor(m: &MosInputs) -> f64 {
    let ta = m.one_way_delay_ms.max(0.0);
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    let ppl = if m.expected == 0 {
        0.0
    } else {
        100.0 * (m.concealed as f64 + FEC_WEIGHT * m.fec_recovered as f64) / m.expected as f64
    };
    let ie_eff = IE + (95.0 - IE) * ppl / (ppl + BPL);
    (93.2 - id - ie_eff).clamp(0.0, 100.0)
}

/// G.107's mapping of R to a mean opinion score.
pub fn mos_of(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)
    }
}

/// The estimate, to two decimals.
pub fn estimate(m: &MosInputs) -> f64 {
    (mos_of(r_factor(m)) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(concealed: u64, fec: u64, delay: f64) -> f64 {
        estimate(&MosInputs {
            expected: 1000,
            concealed,
            fec_recovered: fec,
            one_way_delay_ms: delay,
        })
    }

    #[test]
    fn g107_reference_points() {
        // G.107's own table: R 93.2 is MOS 4.41, R 50 is 2.58.
        assert!((mos_of(93.2) - 4.41).abs() < 0.01);
        assert!((mos_of(50.0) - 2.58).abs() < 0.01);
        assert_eq!(mos_of(-5.0), 1.0);
    }

    #[test]
    fn loss_and_delay_lower_the_score_and_fec_softens_loss() {
        let clean = call(0, 0, 60.0);
        assert!(clean > 4.2, "{clean}");
        assert!(call(50, 0, 60.0) < clean);
        assert!(call(100, 0, 60.0) < call(50, 0, 60.0));
        assert!(
            call(0, 100, 60.0) > call(100, 0, 60.0),
            "FEC rebuilt beats concealed"
        );
        assert!(call(0, 0, 400.0) < call(0, 0, 150.0));
        // Half the frames lost is a call nobody would rate fair.
        assert!(call(500, 0, 60.0) < 2.5, "{}", call(500, 0, 60.0));
        // No frame expected (a one-way call): only the delay and the codec count.
        let silent = estimate(&MosInputs {
            one_way_delay_ms: 60.0,
            ..MosInputs::default()
        });
        assert_eq!(silent, clean);
    }
}
