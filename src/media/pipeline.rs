//! The media thread: clocks a call's [`CallMedia`] every 20 ms between its
//! source and sink, and reports levels and network quality ([`MediaReport`]).
//!
//! One thread per client, started with its first call. Between calls it
//! sleeps on its control channel and holds no device: a softphone does not
//! keep the microphone open while idle.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::codec::CodecSettings;
use super::control::{DeviceKind, MediaCommand, VoiceProcessing, VoiceProcessingChange};
use super::device::DeviceLists;
use super::device::{Counters, DEVICE_PERIOD_MS, PLAYBACK_TARGET};
use super::io::{Sink, Source};
use super::mos::{self, MosInputs};
use super::processing::VoiceProcessor;
use super::report::{DeviceState, MediaReport, MediaStats, NetworkQuality, VoiceVolume};
use super::session::{CallMedia, PeerQuality};
use super::spec::AudioSpec;
use super::tap::Tap;
use super::watch::Watcher;
use super::{FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};
use crate::error::{Error, ErrorCode};
use crate::ids::UserId;
use crate::protocol::RoomId;

/// USER_VOICE_VOLUME every 10 ticks (200 ms).
const VOLUME_EVERY: u64 = 10;
/// Network quality is measured over windows of 100 ticks (2 s).
const QUALITY_EVERY: u64 = 100;
/// A receiver report to the others every 50 ticks (1 s).
const REPORT_EVERY: u64 = 50;
/// A clock this far behind (the machine stalled) restarts instead of
/// racing to catch up.
const MAX_LAG: Duration = Duration::from_millis(100);

/// How far a card may run ahead of the system clock. A real card's clock
/// is within a fraction of a percent of it; ALSA's `null` device has none,
/// and would be ticked as fast as the thread runs, sending hundreds of
/// frames a second (past the relay's media rate limit) and playing the far
/// end's faster than it comes. What a fast card brings beyond this waits in
/// its capture ring, whose backlog is bounded (`device::MAX_CAPTURE_BACKLOG`).
const MAX_LEAD: Duration = Duration::from_millis(100);
/// A speaker whose callback has not run for this long is taken as stalled
/// (or not started yet: a PulseAudio stream takes a few hundred ms): the
/// call plays on the system clock meanwhile, so it goes on.
const STALL: Duration = Duration::from_millis(FRAME_MS * 3);
/// A microphone delivers in bursts (ALSA on PulseAudio: 20 to 40 ms, more
/// on a loaded machine), and a late burst only delays what is sent, while
/// silence put in its place is a gap in what the far end hears and moves
/// the echo against the canceller's reference: it is taken as stalled only
/// when its callback has not run for 200 ms. (Taking two ticks without a
/// callback between them as a stall, as this once did, filled every burst
/// that came a little late with 20 ms of silence: 6 to 8 a minute.)
const MIC_STALL: Duration = Duration::from_millis(10 * FRAME_MS);
/// Time to first audio ends with the first frame played this loud.
const AUDIBLE_DBFS: f64 = -40.0;
/// A device's over- and underruns until 200 ms after it started to flow
/// (while the card and the call's clock find each other) are logged, not
/// counted in MEDIA_STATS.
const WARM_UP: Duration = Duration::from_millis(200);

/// Before the devices report their latencies, the echo path is taken to be
/// what a 20 ms capture period, a double-buffered 20 ms playback period and
/// the playback ring's target add up to; AEC3's estimator takes it from there.
const ASSUMED_ECHO_DELAY_MS: i32 = 3 * DEVICE_PERIOD_MS as i32 + 10;

/// What a device's calls play and record; flags, `[media]` and `[audio]`
/// in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSettings {
    pub input: AudioSpec,
    pub output: AudioSpec,
    pub codec: CodecSettings,
    /// A file that gets a copy of everything played (`--audio-tap`,
    /// [`super::tap`]): what the flow runner listens to.
    pub tap: Option<PathBuf>,
    /// The stages that process a sound card's capture.
    pub voice: VoiceProcessing,
    /// The media thread asks for a higher scheduling priority (nice -10,
    /// where allowed): a device's call keeps its clock behind a compiler.
    /// Not in a load process: its hundreds of media threads would take
    /// every core from the runtime that drives their calls, so that none
    /// could end (issue 21: `two_way_audio` at 15 calls a second stuck with
    /// 260 calls up and none passing).
    pub raise_priority: bool,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            input: AudioSpec::Default,
            output: AudioSpec::Default,
            codec: CodecSettings::default(),
            tap: None,
            voice: VoiceProcessing::ON,
            raise_priority: true,
        }
    }
}

impl MediaSettings {
    /// Refuses at start what a call could not open (see [`Source::check`]),
    /// naming where it was set.
    pub fn check(&self) -> Result<(), String> {
        let hint = "(--audio-in / --audio-out, or input / output in [media] of the config)";
        Source::check(&self.input).map_err(|e| {
            format!(
                "audio input {}; name a WAV file that exists, or null, tone:HZ or a device {hint}",
                e.message
            )
        })?;
        Sink::check(&self.output).map_err(|e| format!("audio output {} {hint}", e.message))
    }
}

/// Where the media thread's reports go (called on the media thread).
pub type Reporter = Box<dyn Fn(MediaReport) + Send>;

/// What the connection task tells the media thread.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// What the call needs, as the engine said it.
    Call(MediaCommand),
    /// A binary frame from the relay.
    Frame(Vec<u8>),
    /// The latest round trip to the relay.
    Rtt(u64),
    /// The system's sound devices, from the watcher: asked for, or changed.
    Devices { lists: DeviceLists, asked: bool },
    /// The handle is gone: end the call and the thread.
    Quit,
}

pub struct MediaHandle {
    control: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl MediaHandle {
    /// Starts the thread. Frames to send go to `outgoing` (dropped, and
    /// counted, when the connection cannot keep up); what happens to `reporter`.
    pub fn spawn(
        settings: MediaSettings,
        outgoing: Sender<Vec<u8>>,
        reporter: Reporter,
    ) -> MediaHandle {
        let (control, rx) = mpsc::channel();
        let to_self = control.clone();
        let thread = std::thread::Builder::new()
            .name("media".into())
            .spawn(move || {
                if settings.raise_priority {
                    super::device::raise_priority();
                }
                let mut pipeline = Pipeline {
                    settings,
                    outgoing,
                    reporter,
                    calls: 0,
                    rtt_ms: None,
                    to_self,
                    watcher: None,
                    lists: None,
                    tap: None,
                };
                // A device that uses a sound card hears of hot-plugs from
                // the start; one on files or null audio once it asks.
                if pipeline.uses_a_card() {
                    pipeline.watch();
                }
                pipeline.run(rx)
            })
            .expect("spawn the media thread");
        MediaHandle {
            control,
            thread: Some(thread),
        }
    }

    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }
}

impl Drop for MediaHandle {
    /// Ends the call in progress and waits, so that a WAV sink is complete
    /// when the client exits.
    fn drop(&mut self) {
        let _ = self.control.send(Control::Quit);
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.control, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Pipeline {
    settings: MediaSettings,
    outgoing: Sender<Vec<u8>>,
    reporter: Reporter,
    /// Calls so far: a WAV sink is appended to after the first.
    calls: u32,
    rtt_ms: Option<u64>,
    /// For the device watcher, which reports on this thread's channel.
    to_self: mpsc::Sender<Control>,
    watcher: Option<Watcher>,
    /// The devices last listed.
    lists: Option<DeviceLists>,
    /// Opened with the first call, kept for the later ones.
    tap: Option<Tap>,
}

/// One call in progress on the thread.
struct Live {
    call_id: String,
    media: CallMedia,
    source: Source,
    /// A sound card's capture is processed before it is encoded.
    voice: Option<VoiceProcessor>,
    /// What the card played, on its way to the echo canceller.
    played: Vec<f32>,
    sink: Sink,
    started: Instant,
    /// The microphone side's clock: sends a frame per tick.
    mic: Clock,
    /// The speaker side's clock: plays a frame per tick.
    speaker: Clock,
    capture_runs: Runs,
    playback_runs: Runs,
    /// Grades last reported, to report only changes.
    reported: Vec<(UserId, u8)>,
    send_drops: u64,
    /// From the call's start to the first frame played above -40 dBFS.
    first_audio: Option<Duration>,
    /// Mic ticks that sent nothing: this device only listened.
    listened: u64,
    /// The time the link to the relay was down in this call.
    outage: Outage,
}

/// How long the call ran with the link to the relay down.
#[derive(Default)]
struct Outage {
    /// Outages over: their time, and the frames they cost.
    past: Duration,
    past_frames: u64,
    /// Since when the one under way, if any.
    since: Option<Instant>,
}

impl Outage {
    fn link(&mut self, up: bool, now: Instant) {
        match (up, self.since) {
            (false, None) => self.since = Some(now),
            (true, Some(since)) => {
                self.past += now - since;
                self.past_frames += Self::frames_of(now - since);
                self.since = None;
            }
            _ => {}
        }
    }

    fn total(&self, now: Instant) -> Duration {
        self.past + self.since.map_or(Duration::ZERO, |since| now - since)
    }

    /// The others' frames the outages cost that the jitter buffer did not
    /// count already.
    fn frames_lost(&self, now: Instant) -> u64 {
        self.past_frames + self.since.map_or(0, |since| Self::frames_of(now - since))
    }

    /// One outage's frames past the first second: across a pause in a
    /// stream, which an outage is, the jitter buffer counts up to a second
    /// of the gap as lost itself.
    fn frames_of(outage: Duration) -> u64 {
        let frames = outage.as_millis() as u64 / FRAME_MS;
        frames.saturating_sub(crate::media::jitter::PAUSE_GAP_LOST_UP_TO)
    }
}

/// When one side of the call ticks next. With a sound card on that side,
/// the card's clock decides (`Live::mic_due_in`, `Live::speaker_due_in`);
/// without one, or while the card's callbacks do not run (stalled, or not
/// started yet: an ALSA stream on PulseAudio can take 2 s), the system
/// clock, a frame every 20 ms from the card's last tick.
struct Clock {
    /// The system clock's next tick.
    next: Instant,
    started: Instant,
    ticks: u64,
}

impl Clock {
    fn new(now: Instant) -> Self {
        Clock {
            next: now,
            started: now,
            ticks: 0,
        }
    }

    /// A tick now, on the card's clock (`card`) or the system's.
    fn tick(&mut self, now: Instant, card: bool) {
        if card || now.duration_since(self.next) > MAX_LAG {
            self.next = now;
        }
        self.next += Duration::from_millis(FRAME_MS);
        self.ticks += 1;
    }

    /// How long until a card that wants `samples` more (48 kHz) is due, or,
    /// when its callbacks have not run for `stall` (`None`: the card is
    /// stalled or not started), until the system clock's tick.
    fn due_in(&self, now: Instant, card: Option<(&Counters, usize)>, stall: Duration) -> Duration {
        let quiet = card.and_then(|(c, _)| c.since_callback(now));
        match (card, quiet) {
            (Some((_, samples)), Some(quiet)) if quiet < stall => {
                let wait = match samples {
                    0 => Duration::ZERO,
                    _ => Duration::from_micros(samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
                        .max(Duration::from_millis(1))
                        .min(stall - quiet),
                };
                // Not before this tick's time on the system clock, less the lead.
                let real_time = self.started + Duration::from_millis(FRAME_MS * self.ticks);
                wait.max(real_time.saturating_duration_since(now + MAX_LEAD))
            }
            _ => self.next.saturating_duration_since(now),
        }
    }

    /// Whether the card (if any) is what paces this side now.
    fn on_card(card: Option<&Counters>, now: Instant, stall: Duration) -> bool {
        card.and_then(|c| c.since_callback(now))
            .is_some_and(|quiet| quiet < stall)
    }
}

impl Pipeline {
    fn run(mut self, rx: mpsc::Receiver<Control>) {
        let mut live: Option<Live> = None;
        loop {
            // The clock first: a steady stream of incoming frames must not
            // hold a tick back. But one message a round still comes in (the
            // wait below is then zero): a thread behind its clock, ticking
            // without a pause, heard no stop, and its call's media ran on
            // until it caught up.
            if let Some(l) = live.as_mut() {
                let now = Instant::now();
                let (mic, speaker) = (l.mic_due_in(now), l.speaker_due_in(now));
                if mic.is_zero() {
                    self.tick_mic(l, now);
                }
                if speaker.is_zero() {
                    self.tick_speaker(l, now);
                }
            }
            let msg = match &live {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(l) => {
                    let now = Instant::now();
                    rx.recv_timeout(l.mic_due_in(now).min(l.speaker_due_in(now)))
                }
            };
            match msg {
                Ok(Control::Call(MediaCommand::Start { me, call_id, room })) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                    live = self.start(me, call_id, room);
                }
                Ok(Control::Call(MediaCommand::SendDtmf(digits))) => {
                    if let Some(Err(e)) = live.as_mut().map(|l| l.media.send_dtmf(&digits)) {
                        tracing::warn!(error = %e, "sendDTMF");
                        (self.reporter)(MediaReport::Failed(e, Some("sendDTMF")));
                    }
                }
                Ok(Control::Call(MediaCommand::StopDtmf)) => {
                    if let Some(Err(e)) = live.as_mut().map(|l| l.media.stop_dtmf()) {
                        (self.reporter)(MediaReport::Failed(e, Some("sendDTMF")));
                    }
                }
                Ok(Control::Call(MediaCommand::Stop)) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                }
                Ok(Control::Rtt(ms)) => self.rtt_ms = Some(ms),
                Ok(Control::Call(MediaCommand::Stats)) => {
                    if let Some(l) = live.as_ref() {
                        let stats = self.stats(l);
                        (self.reporter)(MediaReport::Stats {
                            room: l.media.room(),
                            stats: Box::new(stats),
                        });
                    }
                }
                Ok(Control::Call(MediaCommand::ListDevices)) => self.watch().refresh(),
                Ok(Control::Call(MediaCommand::SwitchDevice { kind, spec })) => {
                    self.switch(live.as_mut(), kind, spec)
                }
                Ok(Control::Call(MediaCommand::SetVoiceProcessing(change))) => {
                    self.set_voice(live.as_mut(), change)
                }
                Ok(Control::Devices { lists, asked }) => self.devices(live.as_mut(), lists, asked),
                Ok(Control::Quit) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                    return;
                }
                Ok(other) => {
                    if let Some(l) = live.as_mut() {
                        l.control(other);
                        for (user, digit) in l.media.take_digits() {
                            let call_id = l.call_id.clone();
                            (self.reporter)(MediaReport::Dtmf {
                                call_id,
                                user,
                                digit,
                            });
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                    return;
                }
            }
        }
    }

    fn start(&mut self, me: UserId, call_id: String, room: RoomId) -> Option<Live> {
        let media = match CallMedia::new(me, room, self.settings.codec) {
            Ok(m) => m,
            Err(e) => {
                self.report(Error::new(
                    ErrorCode::AudioDeviceFailed,
                    format!("the Opus codec cannot start ({e}); this call has no audio"),
                ));
                return None;
            }
        };
        // A side that does not open is null audio from now on, as when a
        // device in use goes: said in an ERROR, and in DEVICED_UPDATED, so
        // that front ends show what the call really uses.
        let mut fell_back = false;
        let source = Source::open(&self.settings.input).unwrap_or_else(|e| {
            self.report(fallback(e, "input"));
            self.settings.input = AudioSpec::Null;
            fell_back = true;
            Source::Null
        });
        let sink = Sink::open(&self.settings.output, self.calls > 0).unwrap_or_else(|e| {
            self.report(fallback(e, "output"));
            self.settings.output = AudioSpec::Null;
            fell_back = true;
            Sink::Null
        });
        if fell_back {
            self.watch().refresh();
        }
        if self.calls == 0
            && let Some(path) = &self.settings.tap
        {
            match Tap::create(path) {
                Ok(tap) => self.tap = Some(tap),
                Err(e) => self.report(e),
            }
        }
        self.calls += 1;
        let now = Instant::now();
        let voice = self.processor(&source);
        Some(Live {
            call_id,
            media,
            source,
            voice,
            played: Vec::with_capacity(4 * FRAME_SAMPLES),
            sink,
            started: now,
            mic: Clock::new(now),
            speaker: Clock::new(now),
            capture_runs: Runs::new(),
            playback_runs: Runs::new(),
            reported: Vec::new(),
            send_drops: 0,
            first_audio: None,
            listened: 0,
            outage: Outage::default(),
        })
    }

    fn finish(&mut self, mut live: Live) {
        let (capture, playback) = live.counters();
        let (capture, playback) = (capture.cloned(), playback.cloned());
        live.capture_runs.close(capture.as_deref());
        live.playback_runs.close(playback.as_deref());
        let stats = self.stats(&live);
        tracing::info!(?stats, jitter = ?live.media.jitter_depth(), "call media ended");
        if let Err(e) = live.sink.finish() {
            self.report(e);
        }
        (self.reporter)(MediaReport::Stats {
            room: live.media.room(),
            stats: Box::new(stats),
        });
    }

    /// The call's figures so far (`MEDIA_STATS`).
    fn stats(&self, live: &Live) -> MediaStats {
        let jitter = live.media.stats();
        let voice = (live.voice.as_ref()).map_or(VoiceProcessing::OFF, VoiceProcessor::settings);
        let echo = live.voice.as_ref().and_then(VoiceProcessor::metrics);
        let (capture, playback) = live.counters();
        let latency = |c: Option<&Arc<Counters>>| c.and_then(|c| c.latency_ms());
        let (capture_latency_ms, playback_latency_ms) = (latency(capture), latency(playback));
        let (_, target_depth, jitter_ms) = live.media.jitter_depth();
        // The others' voice that could not come while the link was down.
        let now = Instant::now();
        let outage_lost = live.outage.frames_lost(now);
        // Lost on the way: missing at playout, or filled from a copy (RED).
        let expected = jitter.received + jitter.lost + jitter.red_recovered + outage_lost;
        // Mouth to ear: half the round trip, a frame to fill, the jitter
        // buffer's depth, and what each sound card holds.
        let one_way_delay_ms = self.rtt_ms.unwrap_or(0) as f64 / 2.0
            + (FRAME_MS as f64) * (1 + target_depth) as f64
            + (capture_latency_ms.unwrap_or(0) + playback_latency_ms.unwrap_or(0)) as f64;
        let mos = mos::estimate(&MosInputs {
            expected,
            // Concealed: lost and not rebuilt, and the ticks the buffer ran dry.
            concealed: jitter.lost - jitter.fec_recovered.min(jitter.lost)
                + jitter.underruns
                + outage_lost,
            fec_recovered: jitter.fec_recovered,
            one_way_delay_ms,
        });
        let now_ms = live.started.elapsed().as_millis() as u64;
        let (fec_planned_percent, reported_loss_percent) = live.media.feedback(now_ms);
        let (budget_bps, bitrate_bps, sent_bps) = live.media.rate();
        let kbps = |bps: f64| (bps / 100.0).round() / 10.0;
        let loss_percent = match expected {
            0 => 0.0,
            _ => {
                let lost = (jitter.lost + jitter.red_recovered + outage_lost) as f64;
                (10_000.0 * lost / expected as f64).round() / 100.0
            }
        };
        MediaStats {
            frames_sent: live.mic.ticks - live.send_drops - live.listened,
            frames_received: jitter.received,
            frames_lost: jitter.lost,
            fec_recovered: jitter.fec_recovered,
            late: jitter.late,
            jitter_underruns: jitter.underruns,
            capture_underruns: live.capture_runs.counted.1,
            capture_overruns: live.capture_runs.counted.0,
            playback_underruns: live.playback_runs.counted.1,
            playback_overruns: live.playback_runs.counted.0,
            send_drops: live.send_drops,
            capture_latency_ms,
            playback_latency_ms,
            mos,
            time_to_first_audio_ms: live.first_audio.map(|d| d.as_millis() as u64),
            jitter_ms,
            loss_percent,
            fec_planned_percent,
            reported_loss_percent,
            redundancy: live.media.redundancy(),
            red_recovered: jitter.red_recovered,
            reported_burst: live.media.reported_burst(now_ms),
            accelerated_ms: jitter.accelerated_samples / (u64::from(SAMPLE_RATE) / 1000),
            budget_kbps: budget_bps.map(kbps),
            bitrate_kbps: kbps(f64::from(bitrate_bps)),
            sent_kbps: sent_bps.map(kbps),
            echo_cancellation: voice.echo_cancellation,
            noise_suppression: voice.noise_suppression,
            auto_gain: voice.auto_gain,
            echo_return_loss_enhancement_db: echo.map(|m| (m.erle_db * 10.0).round() / 10.0),
            echo_delay_ms: echo.map(|m| m.delay_ms),
            outage_ms: live.outage.total(now).as_millis() as u64,
        }
    }

    /// The microphone side: a frame read, encoded and sent.
    fn tick_mic(&mut self, live: &mut Live, now: Instant) {
        let (capture, _) = live.counters();
        let capture = capture.cloned();
        live.mic
            .tick(now, Clock::on_card(capture.as_deref(), now, MIC_STALL));
        live.capture_runs.settle(now, capture.as_deref());
        let mut frame = [0.0; FRAME_SAMPLES];
        live.source.read(&mut frame);
        live.feed_reference();
        let lost = match &mut live.source {
            Source::Device(c) => c.take_lost(),
            _ => 0,
        };
        // An audience member sends nothing; its source is still read, so
        // that a file or a device keeps its pace.
        if !live.media.sends() {
            live.listened += 1;
            return;
        }
        let delay_ms = live.echo_delay_ms();
        if let Some(voice) = live.voice.as_mut() {
            voice.drop_reference(lost);
            if let Some(delay_ms) = delay_ms {
                voice.set_device_delay(delay_ms);
            }
            voice.capture(&mut frame);
        }
        // A digit going out travels beside the voice, on the same clock.
        if let Some(event) = live.media.telephone_event()
            && self.outgoing.try_send(event).is_err()
        {
            tracing::debug!("dropped a telephone event: the connection is behind");
        }
        match live.media.capture(&frame) {
            Ok(packet) => {
                if self.outgoing.try_send(packet).is_err() {
                    live.send_drops += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "opus encode failed"),
        }
    }

    /// The speaker side: a frame mixed and played, and the reports that
    /// go with what is heard.
    fn tick_speaker(&mut self, live: &mut Live, now: Instant) {
        let (_, playback) = live.counters();
        let playback = playback.cloned();
        (live.speaker).tick(now, Clock::on_card(playback.as_deref(), now, STALL));
        live.playback_runs.settle(now, playback.as_deref());
        let mut frame = [0.0; FRAME_SAMPLES];
        let heard = live.media.playout(&mut frame);
        live.source.heard(&frame);
        // The others' voice: this device's own key tones are not audio come.
        if live.first_audio.is_none() && heard > AUDIBLE_DBFS {
            live.first_audio = Some(now - live.started);
        }
        if let Some(tap) = self.tap.as_mut()
            && let Err(e) = tap.write(&frame)
        {
            self.tap = None;
            self.report(Error::new(
                ErrorCode::AudioDeviceFailed,
                format!("the audio tap failed ({e}); it stops here"),
            ));
        }
        live.feed_reference();
        if let Err(e) = live.sink.write(&frame) {
            self.report(e);
            live.sink = Sink::Null;
        }

        if live.speaker.ticks.is_multiple_of(VOLUME_EVERY) {
            let volume_map = live
                .media
                .take_volumes()
                .into_iter()
                .map(|(user_id, volume)| VoiceVolume { user_id, volume })
                .collect();
            (self.reporter)(MediaReport::Volumes(volume_map));
        }
        if live.speaker.ticks.is_multiple_of(REPORT_EVERY)
            && let Some(report) = live.media.receiver_report()
            && self.outgoing.try_send(report).is_err()
        {
            tracing::debug!("dropped a receiver report: the connection is behind");
        }
        if live.speaker.ticks.is_multiple_of(QUALITY_EVERY) {
            let list = live.media.take_quality(self.rtt_ms);
            let grades: Vec<_> = list
                .iter()
                .map(|q| (q.user.clone(), q.quality as u8))
                .collect();
            if grades != live.reported && !list.is_empty() {
                live.reported = grades;
                let list = list.into_iter().map(network_quality).collect();
                (self.reporter)(MediaReport::Network(list));
            }
        }
    }

    /// The stages for `source`: only a sound card's capture is processed.
    fn processor(&self, source: &Source) -> Option<VoiceProcessor> {
        if !matches!(source, Source::Device(_)) || !self.settings.voice.any() {
            return None;
        }
        Some(VoiceProcessor::new(
            self.settings.voice,
            ASSUMED_ECHO_DELAY_MS,
        ))
    }

    /// `setAudioProcessing`: for this call and the next ones.
    fn set_voice(&mut self, live: Option<&mut Live>, change: VoiceProcessingChange) {
        self.settings.voice = self.settings.voice.apply(change);
        tracing::info!(voice = ?self.settings.voice, "voice processing");
        let Some(live) = live else { return };
        match live.voice.as_mut() {
            Some(voice) => voice.set(self.settings.voice),
            None => live.voice = self.processor(&live.source),
        }
    }

    fn report(&self, error: Error) {
        tracing::warn!(%error, "media");
        (self.reporter)(MediaReport::Failed(error, None));
    }

    fn uses_a_card(&self) -> bool {
        self.settings.input.is_card() || self.settings.output.is_card()
    }

    /// The device watcher, started the first time it is needed.
    fn watch(&mut self) -> &Watcher {
        let to_self = self.to_self.clone();
        self.watcher.get_or_insert_with(|| {
            Watcher::spawn(Box::new(move |lists, asked| {
                to_self.send(Control::Devices { lists, asked }).is_ok()
            }))
        })
    }

    /// `switchDevice`: opens the new source or sink (in the call too, which
    /// goes on) and keeps it for later calls; then DEVICED_UPDATED. A device
    /// that does not open is an ERROR, and the old one stays.
    fn switch(&mut self, mut live: Option<&mut Live>, kind: DeviceKind, spec: AudioSpec) {
        if let Some(live) = live.as_deref_mut()
            && let Err(e) = live.replace(kind, &spec, self.calls > 1)
        {
            tracing::warn!(error = %e, "switchDevice");
            (self.reporter)(MediaReport::Failed(e, Some("switchDevice")));
            return;
        }
        // Another microphone, or another room for the echo: start afresh.
        if let Some(live) = live {
            live.voice = self.processor(&live.source);
        }
        tracing::info!(?kind, %spec, "switched device");
        match kind {
            DeviceKind::Microphone => self.settings.input = spec,
            DeviceKind::Speaker => self.settings.output = spec,
        }
        self.watch().refresh();
    }

    /// A list from the watcher. A device in use that has gone (it was
    /// listed before and is not now) falls back to the default, or to null
    /// audio, with an ERROR naming it; the call goes on.
    fn devices(&mut self, mut live: Option<&mut Live>, lists: DeviceLists, asked: bool) {
        let previous = self.lists.replace(lists.clone());
        for kind in [DeviceKind::Microphone, DeviceKind::Speaker] {
            let input = kind == DeviceKind::Microphone;
            let current = match kind {
                DeviceKind::Microphone => &self.settings.input,
                DeviceKind::Speaker => &self.settings.output,
            };
            let AudioSpec::Device(name) = current else {
                continue;
            };
            let gone =
                previous.as_ref().is_some_and(|p| p.has(input, name)) && !lists.has(input, name);
            if !gone {
                continue;
            }
            let name = name.clone();
            let mut fallback = AudioSpec::Default;
            if let Some(live) = live.as_deref_mut()
                && live.replace(kind, &fallback, self.calls > 1).is_err()
            {
                fallback = AudioSpec::Null;
                let _ = live.replace(kind, &fallback, self.calls > 1);
            }
            if let Some(live) = live.as_deref_mut() {
                live.voice = self.processor(&live.source);
            }
            let side = if input { "microphone" } else { "speaker" };
            let error = Error::new(
                ErrorCode::AudioDeviceGone,
                format!("the {side} {name:?} is gone; using {fallback} instead"),
            );
            tracing::warn!(%error, "media");
            (self.reporter)(MediaReport::Failed(error, None));
            match kind {
                DeviceKind::Microphone => self.settings.input = fallback,
                DeviceKind::Speaker => self.settings.output = fallback,
            }
        }
        // The watcher's first list is a baseline, not news.
        let changed = previous.as_ref().is_some_and(|p| *p != lists);
        if asked || changed {
            (self.reporter)(MediaReport::Devices(DeviceState {
                microphone_list: lists.microphones,
                speaker_list: lists.speakers,
                current_microphone_id: self.settings.input.to_string(),
                current_speaker_id: self.settings.output.to_string(),
            }));
        }
    }
}

impl Live {
    /// Opens `spec` as this call's microphone or speaker in place of the
    /// current one (whose counts are kept); `append` continues a WAV sink.
    fn replace(&mut self, kind: DeviceKind, spec: &AudioSpec, append: bool) -> Result<(), Error> {
        match kind {
            DeviceKind::Microphone => {
                let source = Source::open(spec)?;
                let (capture, _) = self.counters();
                let capture = capture.cloned();
                self.capture_runs.close(capture.as_deref());
                self.source = source;
            }
            DeviceKind::Speaker => {
                let sink = Sink::open(spec, append)?;
                let (_, playback) = self.counters();
                let playback = playback.cloned();
                self.playback_runs.close(playback.as_deref());
                std::mem::replace(&mut self.sink, sink).finish()?;
            }
        }
        Ok(())
    }

    /// How long until the microphone side ticks: a frame's worth captured
    /// (the microphone's clock paces what is sent; the far end's jitter
    /// buffer absorbs its drift, as it does any sender's).
    fn mic_due_in(&self, now: Instant) -> Duration {
        let card = match &self.source {
            Source::Device(c) => Some((&*c.counters, FRAME_SAMPLES.saturating_sub(c.available()))),
            _ => None,
        };
        self.mic.due_in(now, card, MIC_STALL)
    }

    /// How long until the speaker side ticks: the playback ring is down to
    /// its target (the speaker's clock paces playout, so the ring never
    /// fills up).
    fn speaker_due_in(&self, now: Instant) -> Duration {
        let card = match &self.sink {
            Sink::Device(p) => Some((&*p.counters, p.queued().saturating_sub(PLAYBACK_TARGET))),
            _ => None,
        };
        self.speaker.due_in(now, card, STALL)
    }

    /// What the sound card played since the last tick, to the echo
    /// canceller (before the capture it may echo in). Taken on every tick,
    /// canceller or not, so that the ring of what was played never fills.
    fn feed_reference(&mut self) {
        if let Sink::Device(playback) = &mut self.sink {
            self.played.clear();
            playback.take_played(&mut self.played);
            if let Some(voice) = self.voice.as_mut() {
                voice.render(&self.played);
            }
        }
    }

    /// The echo path's delay as the devices know it: what the playback
    /// device holds, what waits in the playback ring, and what the capture
    /// device holds; once both have said.
    fn echo_delay_ms(&self) -> Option<i32> {
        let (capture, playback) = self.counters();
        let capture = capture?.latency_ms()?;
        let playback = playback?.latency_ms()?;
        let ring = (PLAYBACK_TARGET as u64 * 1000 / u64::from(SAMPLE_RATE)) as i32;
        Some((capture + playback) as i32 + ring)
    }

    fn counters(&self) -> (Option<&Arc<Counters>>, Option<&Arc<Counters>>) {
        let capture = match &self.source {
            Source::Device(c) => Some(&c.counters),
            _ => None,
        };
        let playback = match &self.sink {
            Sink::Device(p) => Some(&p.counters),
            _ => None,
        };
        (capture, playback)
    }

    fn control(&mut self, control: Control) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        match control {
            Control::Call(MediaCommand::Mute(muted)) => self.media.set_muted(muted),
            Control::Call(MediaCommand::Listen(listening)) => self.media.set_listening(listening),
            Control::Call(MediaCommand::Link(up)) => self.outage.link(up, Instant::now()),
            Control::Call(MediaCommand::Peers { room, peers }) if room == self.media.room() => {
                self.media.set_peers(&peers)
            }
            Control::Frame(frame) => {
                if let Err(e) = self.media.receive(now_ms, &frame) {
                    tracing::debug!(error = %e, "dropped a media frame");
                }
            }
            _ => {}
        }
    }
}

/// A side's over- and underruns (samples, ticks) past each device's warm-up.
struct Runs {
    /// Since when the current device moves audio.
    flowing: Option<Instant>,
    /// Its counters at the end of its warm-up.
    base: Option<(u64, u64)>,
    /// (overruns, underruns) counted for devices already closed.
    counted: (u64, u64),
}

impl Runs {
    fn new() -> Self {
        Runs {
            flowing: None,
            base: None,
            counted: (0, 0),
        }
    }

    /// Takes the baseline once the current device's warm-up is over: 200 ms
    /// after it has moved its first 100 ms of audio.
    fn settle(&mut self, now: Instant, counters: Option<&Counters>) {
        let Some(c) = counters.filter(|_| self.base.is_none()) else {
            return;
        };
        match self.flowing {
            None if c.flowing(SAMPLE_RATE, 100) => self.flowing = Some(now),
            Some(since) if now.duration_since(since) >= WARM_UP => {
                let base = c.runs();
                if base != (0, 0) {
                    tracing::info!(overruns = base.0, underruns = base.1, "device warm-up");
                }
                self.base = Some(base);
            }
            _ => {}
        }
    }

    /// The current device closes (`counters`, if it was one): what it
    /// counted after its warm-up is kept.
    fn close(&mut self, counters: Option<&Counters>) {
        if let (Some(base), Some(c)) = (self.base.take(), counters) {
            let (over, under) = c.runs();
            self.counted.0 += over - base.0;
            self.counted.1 += under - base.1;
        }
        self.flowing = None;
    }
}

/// The device error, reworded to say first what the user gets.
fn fallback(e: Error, side: &str) -> Error {
    Error::new(
        e.code,
        format!(
            "no audio {side} device, so the call goes on with null audio {side}, as later calls will until a device is picked ({})",
            e.message
        ),
    )
}

fn network_quality(q: PeerQuality) -> NetworkQuality {
    NetworkQuality {
        user_id: q.user,
        quality: q.quality,
        loss_percent: (q.measurement.loss_percent * 10.0).round() / 10.0,
        jitter_ms: q.measurement.jitter_ms.round() as u64,
        rtt_ms: q.measurement.rtt_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outages' time adds up over their ups and downs; what each cost in
    /// frames is past the second the jitter buffer counts across a pause.
    #[test]
    fn an_outage_counts_its_time_and_the_frames_past_a_second() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut outage = Outage::default();
        outage.link(false, at(1_000));
        outage.link(false, at(1_500));
        outage.link(true, at(1_600));
        assert_eq!(outage.total(at(5_000)), Duration::from_millis(600));
        assert_eq!(outage.frames_lost(at(5_000)), 0, "under a second");
        outage.link(false, at(6_000));
        assert_eq!(outage.total(at(9_000)), Duration::from_millis(3_600));
        assert_eq!(outage.frames_lost(at(9_000)), 150 - 50);
        outage.link(true, at(9_000));
        outage.link(false, at(10_000));
        outage.link(true, at(12_000));
        assert_eq!(outage.total(at(20_000)), Duration::from_millis(5_600));
        assert_eq!(outage.frames_lost(at(20_000)), 100 + 50);
    }

    /// A microphone whose burst came a little late is waited for, not
    /// filled with silence: only 200 ms without a callback is a stall.
    #[test]
    fn a_late_microphone_is_waited_for_and_a_stalled_one_replaced() {
        let card = Counters::default();
        let start = Instant::now();
        let mut mic = Clock::new(start);
        // Never called back: the system clock, a frame every 20 ms.
        assert_eq!(
            mic.due_in(start, Some((&card, FRAME_SAMPLES)), MIC_STALL),
            Duration::ZERO
        );
        card.called_back();
        mic.tick(start, true);
        mic.tick(start, true);
        // Two ticks on one burst, and the next is 40 ms late: still waited for.
        let late = start + Duration::from_millis(60);
        let wait = mic.due_in(late, Some((&card, FRAME_SAMPLES / 2)), MIC_STALL);
        assert!(wait > Duration::ZERO, "{wait:?}");
        // A frame in: due at once.
        assert_eq!(
            mic.due_in(late, Some((&card, 0)), MIC_STALL),
            Duration::ZERO
        );
        // Silent for 200 ms: stalled, the system clock takes over.
        let stalled = start + MIC_STALL + Duration::from_millis(5);
        let due = mic.due_in(stalled, Some((&card, FRAME_SAMPLES)), MIC_STALL);
        assert_eq!(due, Duration::ZERO);
    }

    /// A card without a clock (ALSA's null device always has a frame in)
    /// is held to the system's, with `MAX_LEAD` to spare.
    #[test]
    fn a_card_without_a_clock_runs_no_faster_than_real_time() {
        let card = Counters::default();
        let start = Instant::now();
        let mut mic = Clock::new(start);
        // Ticks while due at `now`; how many.
        let run = |mic: &mut Clock, now| {
            card.called_back();
            let mut n = 0;
            while n < 100 && mic.due_in(now, Some((&card, 0)), MIC_STALL).is_zero() {
                mic.tick(now, true);
                n += 1;
            }
            n
        };
        let frame = Duration::from_millis(FRAME_MS);
        let lead = MAX_LEAD.as_millis() as u64 / FRAME_MS;
        assert_eq!(run(&mut mic, start), lead + 1);
        assert_eq!(mic.due_in(start, Some((&card, 0)), MIC_STALL), frame);
        // 200 ms later, 10 more: a frame's time apart, as the system clock.
        assert_eq!(run(&mut mic, start + 10 * frame), 10);
    }
}
