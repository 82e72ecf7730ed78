//! Bitrate adaptation, sans IO: from one receiver's reports, how much a
//! sender may send on the way to it (its budget), after WebRTC's
//! loss-based bandwidth estimation (GCC): back off when loss comes with
//! the rate, probe up slowly while clean, and tell the loss a cap causes
//! from the loss a network has whatever is sent
//! (docs/protocol.md, *Bitrate adaptation*).
//!
//! Redundancy answers loss with more bits. Against random loss that is
//! what helps; against a link that loses what does not fit, it raises the
//! loss it answers, and the copies grow with it: a spiral. The two look
//! alike in one report; they differ when the rate changes. Each window is
//! judged against the last:
//!
//! - loss that rose as the rate rose is congestion: the budget falls to
//!   what got through, a little under, and the next window tests it;
//! - loss that came at a steady rate is tested: by the rate rise the copies
//!   it calls for bring anyway (unless it is heavy), or else by lowering
//!   the budget to what got through;
//! - loss that stayed as the rate rose, or did not fall when the budget
//!   fell, is random: it is taken as the network's, and the budget that
//!   was lowered to test it comes back; loss that fell is a cap's, and the
//!   budget stays; loss at or under that budget later, unless heavy, is
//!   the network's;
//! - clean windows under a budget raise it, after a hold, slowly near
//!   where the cap was found and faster beyond, until it no longer binds
//!   and goes; a little more loss than the random share holds it, and
//!   three such windows count as loss (GCC raises by 8% a second below 2%
//!   loss, holds from 2% to 10%, and lowers above; here the thresholds
//!   are the random share and a report's noise around it).
//!
//! The controller never reads a clock: the time and what was sent come in
//! with each report.

type Millis = u64;

/// What a sender has sent since its call started: bytes on the wire and
/// 20 ms frames (which time the windows, on the sender's own clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub frames: u64,
}

/// One receiver report's window: the loss (0 to 1) and the mean burst of
/// lost frames it reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub loss: f64,
    pub burst: f64,
}

/// Frames a report covers (one second): the sample its loss is measured on.
const FRAMES_PER_REPORT: f64 = 50.0;
/// Loss beyond the random share by this many standard deviations of one
/// report's measure (binomial, wider by the mean burst), plus a point, is
/// loss to act on; less is a report's noise.
const SIGNIFICANT_SIGMAS: f64 = 2.5;
/// Two reports' losses differ (the loss rose, or fell) by this many
/// standard deviations of their difference, plus a point.
const DIFFERENT_SIGMAS: f64 = 2.0;
/// Loss beyond the random share by one standard deviation, plus a point,
/// is doubtful: a budget is not raised on it, and three such windows in a
/// row at the budget count as loss (a probe a little past a cap loses
/// only a little, under a report's noise).
const DOUBTFUL_WINDOWS: u32 = 3;
/// Loss this heavy at a steady rate is tested by lowering the rate, not by
/// the copies it calls for: a network that loses a quarter of what it is
/// sent at random is rare, a cap far under the rate is not, and copies
/// there would lose most of a second more.
const HEAVY_LOSS: f64 = 0.25;
/// A rate that rose by a fifth since the last window: enough for a cap's
/// loss to show the difference.
const RISE: f64 = 1.2;
/// After congestion, the budget is this much of what got through: room for
/// the voice's variable bitrate, and for the cap to drain.
const BACK_OFF: f64 = 0.9;
/// Clean windows under the budget where loss last came raise it this much
/// each (a probe past the cap costs a window of a few percent)...
const NEAR_STEP: f64 = 1.04;
/// ...and past 10% above it, this much: the cap has moved.
const FAR_STEP: f64 = 1.15;
const NEAR: f64 = 1.1;
/// Clean time after congestion before the budget is probed up again;
/// doubled each time the cap is found where it was (within 15%), up to
/// 20 s: each probe past a steady cap costs a window of loss.
const HOLD_MS: Millis = 5_000;
const MAX_HOLD_MS: Millis = 20_000;
const SAME_CEILING: f64 = 0.15;
/// A controller whose receiver has not reported for this long is forgotten
/// (it left, or went quiet), as its reports are (media::feedback).
const FRESH_MS: Millis = 5_000;
/// The least budget: under it the voice is at its least bitrate anyway
/// (media::budget), and a path that lets nothing through still gets one.
const MIN_BUDGET_BPS: f64 = 16_000.0;

/// One receiver's path: its budget, and what the controller has learned.
#[derive(Debug, Default)]
pub struct RateControl {
    /// What may be sent, in bit/s on the wire; `None` while no limit binds.
    budget: Option<f64>,
    /// The loss that stays whatever is sent (0 to 1).
    random_loss: f64,
    /// The last window: its send rate and loss.
    last: Option<(f64, f64)>,
    /// The budget was lowered to see whether the loss falls with the rate:
    /// the budget before the test.
    testing: Option<Option<f64>>,
    /// The budget at which congestion was last confirmed, over BACK_OFF:
    /// about what the cap lets through.
    ceiling: Option<f64>,
    /// That budget: loss at it or under is not the cap's.
    under_cap: Option<f64>,
    /// No probing up before this, and the hold that set it.
    hold_until: Millis,
    hold_ms: Millis,
    /// Doubtful windows in a row at the budget.
    doubts: u32,
    /// What had been sent at the last report, and when it came.
    sent: Sent,
    heard_at: Millis,
}

impl RateControl {
    /// What may be sent on this path now, bit/s; `None`: no limit.
    pub fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// The loss taken as random (0 to 1).
    pub fn random_loss(&self) -> f64 {
        self.random_loss
    }

    /// The send rate over the last report's window, bit/s.
    pub fn sent_bps(&self) -> Option<f64> {
        self.last.map(|(bps, _)| bps)
    }

    /// Whether its receiver reported lately.
    pub fn fresh(&self, now: Millis) -> bool {
        now.saturating_sub(self.heard_at) <= FRESH_MS
    }

    /// A report came at `now`, when `sent` had been sent in all, whose
    /// loss says nothing of the path (what was sent in its window is not
    /// what will be): the next window is measured from here.
    pub fn skip(&mut self, now: Millis, sent: Sent) {
        (self.sent, self.heard_at) = (sent, now);
    }

    /// A report came at `now`, when `sent` had been sent in all; `wanted`
    /// is what the sender would send without a budget (bit/s), for the
    /// loss reported: more copies coming are a test of their own, and a
    /// budget that no longer binds goes.
    pub fn report(&mut self, now: Millis, sent: Sent, window: Window, wanted_bps: f64) {
        let frames = sent.frames - self.sent.frames;
        let bytes = sent.bytes - self.sent.bytes;
        (self.sent, self.heard_at) = (sent, now);
        if frames == 0 {
            return;
        }
        let bps = bytes as f64 * 8.0 * FRAMES_PER_REPORT / frames as f64;
        let loss = window.loss;
        let noise = |p: f64| noise(p, window.burst);
        let excess = loss - self.random_loss;
        let sigma = noise(self.random_loss);
        let lossy = excess > SIGNIFICANT_SIGMAS * sigma + 0.01;
        let doubtful = excess > sigma + 0.01;
        // Whether the loss went from `a` to `b`, beyond both reports' noise.
        let grew = |a: f64, b: f64| b - a > DIFFERENT_SIGMAS * noise(a).hypot(noise(b)) + 0.01;
        let last = self.last.replace((bps, loss));

        if let Some(before) = self.testing.take() {
            let loss_before = last.map_or(1.0, |(_, l)| l);
            if lossy && !grew(loss, loss_before) {
                // It stayed as the rate fell: the network's own loss, and
                // the budget comes back.
                self.random_loss = (loss + loss_before) / 2.0;
                self.budget = before;
            } else {
                // It fell with the rate: a cap, at about what got through.
                // (Loss left beyond the random share is judged at this
                // budget from the next window on.)
                self.found_cap(now);
            }
            return;
        }
        if !lossy {
            // Clean windows move the random share; while probing past a
            // cap only down: a probe a little past it loses a little,
            // unnoticed, and must not raise it.
            let probing = self.budget.is_some() && !self.under_cap();
            if !probing || loss < self.random_loss {
                self.random_loss += (loss - self.random_loss) / 5.0;
            }
            self.doubts = match doubtful && probing {
                true => self.doubts + 1,
                false => 0,
            };
            match self.doubts {
                0 => self.probe(now, wanted_bps),
                DOUBTFUL_WINDOWS.. => self.back_off(bps, loss, self.budget),
                _ => {}
            }
            return;
        }
        match last {
            Some((bps_before, loss_before)) if self.budget.is_none() && bps > RISE * bps_before => {
                if grew(loss_before, loss) {
                    self.back_off(bps, loss, self.budget);
                } else {
                    // It stayed as the rate rose: the network's own.
                    self.random_loss = (loss + loss_before) / 2.0;
                }
            }
            // The copies this loss calls for raise the rate: the next
            // window says whether the loss rises with it.
            _ if self.budget.is_none() && wanted_bps > RISE * bps && loss < HEAVY_LOSS => {}
            // Under where the cap was found, loss that is not heavy is
            // the network's own.
            Some((_, loss_before)) if self.under_cap() && loss < HEAVY_LOSS => {
                self.random_loss = (loss + loss_before) / 2.0;
            }
            _ => self.back_off(bps, loss, self.budget),
        }
    }

    /// Whether the budget is at or under the one the cap was last found at.
    fn under_cap(&self) -> bool {
        matches!((self.budget, self.under_cap), (Some(b), Some(at)) if b <= at)
    }

    /// The loss fell with the rate: the budget stays, and is held before
    /// probing, longer each time the cap is found where it was.
    fn found_cap(&mut self, now: Millis) {
        let ceiling = self.budget.map(|b| b / BACK_OFF);
        let again = matches!((self.ceiling, ceiling),
            (Some(was), Some(is)) if (is / was - 1.0).abs() < SAME_CEILING);
        self.hold_ms = match again {
            true => (2 * self.hold_ms).clamp(HOLD_MS, MAX_HOLD_MS),
            false => HOLD_MS,
        };
        (self.ceiling, self.under_cap) = (ceiling, self.budget);
        self.hold_until = now + self.hold_ms;
    }

    /// Lowers the budget under what got through at `bps` losing `loss`
    /// (less the random share, which a lower rate does not save), and
    /// waits for the next window to judge; `before` comes back if the loss
    /// does not fall.
    fn back_off(&mut self, bps: f64, loss: f64, before: Option<f64>) {
        let through = bps * (1.0 - loss) / (1.0 - self.random_loss).max(0.05);
        self.budget = Some((BACK_OFF * through).max(MIN_BUDGET_BPS));
        self.testing = Some(before);
        self.doubts = 0;
    }

    /// A clean window: a budget that binds grows (after the hold), and
    /// goes once what is wanted fits.
    fn probe(&mut self, now: Millis, wanted_bps: f64) {
        let Some(budget) = self.budget.filter(|_| now >= self.hold_until) else {
            return;
        };
        let near = self.ceiling.is_some_and(|c| budget < NEAR * c);
        let budget = budget * if near { NEAR_STEP } else { FAR_STEP };
        self.budget = (budget < wanted_bps).then_some(budget);
    }
}

/// The standard deviation of one report's loss around `p`, for the mean
/// burst it reports (a burst of lost frames is one event, not several:
/// fewer independent events, wider noise).
fn noise(p: f64, burst: f64) -> f64 {
    let p = p.clamp(0.01, 0.99);
    (p * (1.0 - p) * burst.max(1.0) / FRAMES_PER_REPORT).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path on virtual time, a report a second: `network(bps)` is the
    /// loss at a send rate; the sender sends what it wants (`wanted(loss)`,
    /// bit/s, of the last report's loss) within the budget.
    fn run(
        seconds: u64,
        wanted: impl Fn(f64) -> f64,
        network: impl Fn(u64, f64) -> f64,
    ) -> (RateControl, Vec<(f64, f64)>) {
        let mut rate = RateControl::default();
        let mut sent = Sent::default();
        let mut loss = 0.0;
        let mut trace = Vec::new();
        for second in 1..=seconds {
            let want = wanted(loss);
            let bps = rate.budget().map_or(want, |b| b.min(want));
            sent.bytes += (bps / 8.0) as u64;
            sent.frames += 50;
            loss = network(second, bps);
            let window = Window { loss, burst: 1.0 };
            rate.report(second * 1_000, sent, window, wanted(loss));
            trace.push((bps, loss));
        }
        (rate, trace)
    }

    /// Redundancy's rate: 54 kbit/s clean, 103 with a copy from 2% loss,
    /// 153 with two from 8%.
    fn copies(loss: f64) -> f64 {
        match loss {
            l if l < 0.02 => 54_000.0,
            l if l < 0.08 => 103_000.0,
            _ => 153_000.0,
        }
    }

    /// A cap loses what exceeds it, on top of `random` loss.
    fn capped(cap: f64, random: f64) -> impl Fn(f64) -> f64 {
        move |bps| 1.0 - (1.0 - random) * (cap / bps).min(1.0)
    }

    #[test]
    fn a_cap_far_under_the_rate_is_found_at_once() {
        let cap = capped(32_000.0, 0.0);
        let (rate, trace) = run(30, copies, |_, bps| cap(bps));
        // 54 kbit/s lose 41%: too heavy to try the copies it calls for
        // (153 kbit/s would lose 79%); the rate comes under the cap at once.
        assert!(
            trace[1..].iter().all(|(bps, _)| *bps <= 34_000.0),
            "{trace:?}"
        );
        let lossy = trace[1..].iter().filter(|(_, loss)| *loss > 0.03).count();
        assert!(lossy <= 2, "probes past the cap lose a little: {trace:?}");
        assert!(rate.budget().unwrap() > 26_000.0, "{trace:?}");
        assert_eq!(rate.random_loss(), 0.0);
    }

    #[test]
    fn random_loss_keeps_its_copies_and_a_budget_never_comes() {
        // 10% lost whatever is sent, give or take a report's noise.
        let noise = [0.10, 0.14, 0.06, 0.12, 0.08, 0.16, 0.10, 0.04, 0.12, 0.10];
        let (rate, trace) = run(40, copies, |s, _| noise[s as usize % 10]);
        assert_eq!(rate.budget(), None, "{trace:?}");
        // What the last report's loss calls for, every second.
        let unlimited = trace.windows(2).all(|w| w[1].0 == copies(w[0].1));
        assert!(unlimited, "{trace:?}");
        assert!((0.06..=0.14).contains(&rate.random_loss()));
    }

    #[test]
    fn random_loss_under_a_cap_is_told_apart_and_the_lifted_cap_is_found() {
        // 5% random; a cap of 64 kbit/s for 40 s, then none.
        let cap = capped(64_000.0, 0.05);
        let network = |s: u64, bps| if s <= 40 { cap(bps) } else { 0.05 };
        let (rate, trace) = run(80, copies, network);
        // The copies that 5% calls for lose 41%, and the rate comes down;
        // probes past the cap lose a little more than the random share.
        let capped = &trace[2..40];
        assert!(capped.iter().all(|(bps, _)| *bps < 72_000.0), "{trace:?}");
        let loss = capped.iter().map(|(_, loss)| loss).sum::<f64>() / capped.len() as f64;
        assert!(loss < 0.065, "{loss}: {trace:?}");
        assert!((0.04..=0.06).contains(&rate.random_loss()), "{trace:?}");
        // Lifted at 40 s: the copies come back within 25 s.
        assert_eq!(rate.budget(), None, "{trace:?}");
        assert!(
            trace[65..].iter().all(|(bps, _)| *bps == 103_000.0),
            "{trace:?}"
        );
    }

    #[test]
    fn random_loss_that_grows_under_a_budget_brings_the_budget_back() {
        let mut rate = RateControl {
            budget: Some(60_000.0),
            last: Some((60_000.0, 0.0)),
            ..RateControl::default()
        };
        let mut sent = Sent::default();
        let mut report = |now: Millis, bps: f64, loss: f64, rate: &mut RateControl| {
            sent.bytes += (bps / 8.0) as u64;
            sent.frames += 50;
            rate.report(now, sent, Window { loss, burst: 1.0 }, 153_000.0);
        };
        report(1_000, 60_000.0, 0.2, &mut rate);
        let tested = rate.budget().unwrap();
        assert!(tested < 50_000.0, "lowered to see: {tested}");
        report(2_000, tested, 0.2, &mut rate);
        assert_eq!(rate.budget(), Some(60_000.0), "the loss stayed: random");
        assert_eq!(rate.random_loss(), 0.2);
        report(3_000, 60_000.0, 0.2, &mut rate);
        assert!(rate.budget().unwrap() > 60_000.0, "and probing goes on");
    }

    #[test]
    fn a_receiver_gone_quiet_is_forgotten() {
        let mut rate = RateControl::default();
        let sent = Sent {
            bytes: 6_750,
            frames: 50,
        };
        rate.report(
            1_000,
            sent,
            Window {
                loss: 0.0,
                burst: 0.0,
            },
            54_000.0,
        );
        assert_eq!(rate.sent_bps(), Some(54_000.0));
        assert!(rate.fresh(6_000));
        assert!(!rate.fresh(6_001));
    }
}
