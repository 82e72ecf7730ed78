//! What the media thread reports about a call: voice levels, the network
//! as it hears it, its counters at the end, and device errors. The client
//! turns each into its engine event; the serde attributes are those events'
//! fields in headless mode (docs/headless.md).

use serde::Serialize;

use super::control::Digit;
use super::quality::Quality;
use crate::error::Error;
use crate::ids::UserId;
use crate::protocol::RoomId;

/// One participant's voice level, 0 to 100 (`USER_VOICE_VOLUME`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoiceVolume {
    #[serde(rename = "userID")]
    pub user_id: UserId,
    pub volume: u8,
}

/// One participant's network as this device receives it
/// (`ON_USER_NETWORK_QUALITY_CHANGED`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkQuality {
    #[serde(rename = "userID")]
    pub user_id: UserId,
    /// 0 unknown, 1 excellent, 2 good, 3 poor, 4 bad, 5 very bad, 6 down.
    pub quality: Quality,
    pub loss_percent: f64,
    pub jitter_ms: u64,
    /// This device's round trip to the relay, once measured.
    pub rtt_ms: Option<u64>,
}

/// What a call's media did on this device (`MEDIA_STATS`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Missing at their playout time (rebuilt by FEC or concealed).
    pub frames_lost: u64,
    pub fec_recovered: u64,
    pub late: u64,
    /// Ticks the jitter buffer ran dry and concealed.
    pub jitter_underruns: u64,
    pub capture_underruns: u64,
    pub capture_overruns: u64,
    pub playback_underruns: u64,
    pub playback_overruns: u64,
    /// Frames dropped because the connection could not take them.
    pub send_drops: u64,
    /// What the capture device itself buffers (ms), as its host reports it;
    /// null without a sound card, or when the host does not say.
    pub capture_latency_ms: Option<u64>,
    /// What the playback device itself buffers (ms), likewise.
    pub playback_latency_ms: Option<u64>,
    /// The E-model's estimate of the call's quality, 1 to 4.5 (media::mos).
    pub mos: f64,
    /// From the call's start to the first frame played above -40 dBFS;
    /// null while nothing audible has been played.
    pub time_to_first_audio_ms: Option<u64>,
    /// Interarrival jitter of the others' voice (RFC 3550), the worst stream.
    pub jitter_ms: u64,
    /// Frames missing at their playout time, of those expected, in percent.
    pub loss_percent: f64,
    /// The loss this device's encoder plans its FEC for, in percent: the
    /// configured one until the others report, then after the worst loss
    /// they report (media::feedback).
    pub fec_planned_percent: i32,
    /// The worst loss of this device's voice the others reported lately
    /// (percent); null before any report.
    pub reported_loss_percent: Option<f64>,
    /// Earlier frames each of this device's voice frames carries copies of
    /// now (0 to 3: redundancy, media::redundancy).
    pub redundancy: usize,
    /// The others' frames lost on the way but played as sent, from a
    /// later frame's copy.
    pub red_recovered: u64,
    /// The longest mean burst of lost frames in this device's voice the
    /// others reported lately (frames); null before any report.
    pub reported_burst: Option<f64>,
    /// The others' voice played faster than the clock (time-compressed,
    /// media::stretch) to bring the jitter buffer back down, in ms.
    pub accelerated_ms: u64,
    /// What this device may send to the others, in kbit/s on the wire
    /// (voice, copies and headers), as its rate controller found from
    /// their reports (media::rate); null while no limit binds.
    pub budget_kbps: Option<f64>,
    /// The Opus bitrate its encoder runs at now (kbit/s): the configured
    /// one, or less within the budget.
    pub bitrate_kbps: f64,
    /// What it sent over the last report's window (kbit/s on the wire);
    /// null before any report.
    pub sent_kbps: Option<f64>,
    /// The voice processing stages on at the end of the call (all false
    /// for files, tones, `echo` and null audio, which are never processed).
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain: bool,
    /// The echo canceller's last echo return loss enhancement (dB: how much
    /// it took off the echo), and the delay it found between what the
    /// speaker played and its echo (ms); null while it is off.
    pub echo_return_loss_enhancement_db: Option<f64>,
    pub echo_delay_ms: Option<i32>,
    /// How long the call ran with the link to the relay down (ms): the
    /// others' voice could not come, and counts as lost.
    pub outage_ms: u64,
}

/// One sound device, as `DEVICED_UPDATED` lists it: `deviceId` is what
/// `--audio-in` / `--audio-out` and `switchDevice` accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoundDevice {
    pub device_id: String,
    pub label: String,
}

/// The system's sound devices, and what this device uses now
/// (`DEVICED_UPDATED`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    pub microphone_list: Vec<SoundDevice>,
    pub speaker_list: Vec<SoundDevice>,
    #[serde(rename = "currentMicrophoneID")]
    pub current_microphone_id: String,
    #[serde(rename = "currentSpeakerID")]
    pub current_speaker_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MediaReport {
    /// Every participant's level (this device's user first), five times a second.
    Volumes(Vec<VoiceVolume>),
    /// The other participants' network, every 2 s when a grade changes.
    Network(Vec<NetworkQuality>),
    /// The call's figures: when its media stopped, or when asked
    /// (`getMediaStats`).
    Stats {
        room: RoomId,
        stats: Box<MediaStats>,
    },
    /// A device or file failed; the call goes on without it. With the
    /// command that asked for it (`switchDevice`), if one did.
    Failed(Error, Option<&'static str>),
    /// The devices, asked for or changed (`DEVICED_UPDATED`).
    Devices(DeviceState),
    /// `user` sent a DTMF digit in call `call_id` (heard once).
    Dtmf {
        call_id: String,
        user: UserId,
        digit: Digit,
    },
}
