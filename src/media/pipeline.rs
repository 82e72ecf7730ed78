//! The media thread: clocks a call's [`CallMedia`] every 20 ms between its
//! source and sink, and reports levels and network quality ([`MediaReport`]).
//!
//! One thread per client, started with its first call. Between calls it
//! sleeps on its control channel and holds no device: a softphone does not
//! keep the microphone open while idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::codec::CodecSettings;
use super::device::Counters;
use super::io::{Sink, Source};
use super::report::{MediaReport, MediaStats, NetworkQuality, VoiceVolume};
use super::session::{CallMedia, PeerQuality};
use super::spec::AudioSpec;
use super::{FRAME_MS, FRAME_SAMPLES};
use crate::error::{Error, ErrorCode};
use crate::ids::UserId;
use crate::protocol::{MediaPeer, RoomId};

/// USER_VOICE_VOLUME every 10 ticks (200 ms).
const VOLUME_EVERY: u64 = 10;
/// Network quality is measured over windows of 100 ticks (2 s).
const QUALITY_EVERY: u64 = 100;
/// A clock this far behind (the machine stalled) restarts instead of
/// racing to catch up.
const MAX_LAG: Duration = Duration::from_millis(100);

/// What a device's calls play and record; flags and `[media]` in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSettings {
    pub input: AudioSpec,
    pub output: AudioSpec,
    pub codec: CodecSettings,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            input: AudioSpec::Default,
            output: AudioSpec::Default,
            codec: CodecSettings::default(),
        }
    }
}

/// Where the media thread's reports go (called on the media thread).
pub type Reporter = Box<dyn Fn(MediaReport) + Send>;

/// What the connection task tells the media thread.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// This device entered the call in `room`.
    Start {
        me: UserId,
        room: RoomId,
    },
    /// The call ended for this device.
    Stop,
    Mute(bool),
    Peers {
        room: RoomId,
        peers: Vec<MediaPeer>,
    },
    /// A binary frame from the relay.
    Frame(Vec<u8>),
    /// The latest round trip to the relay.
    Rtt(u64),
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
        let thread = std::thread::Builder::new()
            .name("media".into())
            .spawn(move || {
                Pipeline {
                    settings,
                    outgoing,
                    reporter,
                    calls: 0,
                    rtt_ms: None,
                }
                .run(rx)
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
        let _ = self.control.send(Control::Stop);
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
}

/// One call in progress on the thread.
struct Live {
    media: CallMedia,
    source: Source,
    sink: Sink,
    started: Instant,
    next_tick: Instant,
    ticks: u64,
    /// Grades last reported, to report only changes.
    reported: Vec<(UserId, u8)>,
    send_drops: u64,
}

impl Pipeline {
    fn run(mut self, rx: mpsc::Receiver<Control>) {
        let mut live: Option<Live> = None;
        loop {
            // The clock first: a steady stream of incoming frames must not
            // hold a tick back.
            if let Some(l) = live.as_mut()
                && Instant::now() >= l.next_tick
            {
                self.tick(l);
                continue;
            }
            let msg = match &live {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(l) => rx.recv_timeout(l.next_tick.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(Control::Start { me, room }) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                    live = self.start(me, room);
                }
                Ok(Control::Stop) => {
                    if let Some(old) = live.take() {
                        self.finish(old);
                    }
                }
                Ok(Control::Rtt(ms)) => self.rtt_ms = Some(ms),
                Ok(other) => {
                    if let Some(l) = live.as_mut() {
                        l.control(other);
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

    fn start(&mut self, me: UserId, room: RoomId) -> Option<Live> {
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
        let source = Source::open(&self.settings.input).unwrap_or_else(|e| {
            self.report(fallback(e, "input"));
            Source::Null
        });
        let sink = Sink::open(&self.settings.output, self.calls > 0).unwrap_or_else(|e| {
            self.report(fallback(e, "output"));
            Sink::Null
        });
        self.calls += 1;
        let now = Instant::now();
        Some(Live {
            media,
            source,
            sink,
            started: now,
            next_tick: now,
            ticks: 0,
            reported: Vec::new(),
            send_drops: 0,
        })
    }

    fn finish(&mut self, live: Live) {
        let stats = live.media.stats();
        let count = |c: Option<&Arc<Counters>>, f: fn(&Counters) -> &AtomicU64| {
            c.map_or(0, |c| f(c).load(Ordering::Relaxed))
        };
        let capture = match &live.source {
            Source::Device(c) => Some(&c.counters),
            _ => None,
        };
        let playback = match &live.sink {
            Sink::Device(p) => Some(&p.counters),
            _ => None,
        };
        let stats = MediaStats {
            frames_sent: live.ticks - live.send_drops,
            frames_received: stats.received,
            frames_lost: stats.lost,
            fec_recovered: stats.fec_recovered,
            late: stats.late,
            jitter_underruns: stats.underruns,
            capture_underruns: count(capture, |c| &c.underruns),
            capture_overruns: count(capture, |c| &c.overruns),
            playback_underruns: count(playback, |c| &c.underruns),
            playback_overruns: count(playback, |c| &c.overruns),
            send_drops: live.send_drops,
        };
        tracing::info!(?stats, "call media ended");
        if let Err(e) = live.sink.finish() {
            self.report(e);
        }
        (self.reporter)(MediaReport::Ended {
            room: live.media.room(),
            stats,
        });
    }

    fn tick(&mut self, live: &mut Live) {
        let now = Instant::now();
        if now.duration_since(live.next_tick) > MAX_LAG {
            live.next_tick = now;
        }
        live.next_tick += Duration::from_millis(FRAME_MS);
        live.ticks += 1;

        let mut frame = [0.0; FRAME_SAMPLES];
        live.source.read(&mut frame);
        match live.media.capture(&frame) {
            Ok(packet) => {
                if self.outgoing.try_send(packet).is_err() {
                    live.send_drops += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "opus encode failed"),
        }
        live.media.playout(&mut frame);
        live.source.heard(&frame);
        if let Err(e) = live.sink.write(&frame) {
            self.report(e);
            live.sink = Sink::Null;
        }

        if live.ticks.is_multiple_of(VOLUME_EVERY) {
            let volume_map = live
                .media
                .take_volumes()
                .into_iter()
                .map(|(user_id, volume)| VoiceVolume { user_id, volume })
                .collect();
            (self.reporter)(MediaReport::Volumes(volume_map));
        }
        if live.ticks.is_multiple_of(QUALITY_EVERY) {
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

    fn report(&self, error: Error) {
        tracing::warn!(%error, "media");
        (self.reporter)(MediaReport::Failed(error));
    }
}

impl Live {
    fn control(&mut self, control: Control) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        match control {
            Control::Mute(muted) => self.media.set_muted(muted),
            Control::Peers { room, peers } if room == self.media.room() => {
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

/// The device error, reworded to say first what the user gets.
fn fallback(e: Error, side: &str) -> Error {
    Error::new(
        e.code,
        format!(
            "no audio {side} device, so the call goes on with null audio {side} ({})",
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
