//! The media path of a call (SPEC section 5):
//!
//! ```text
//! source ─► 20 ms frame ─► Opus encode ─► binary frame ─► relay room
//! sink   ◄─ mix ◄─ Opus decode / FEC / PLC ◄─ jitter buffer ◄─ binary frame
//! ```
//!
//! The sans-IO parts ([`jitter`], [`session`], [`level`], [`quality`]) run
//! on virtual time and are tested as such; [`pipeline`] is the thread that
//! clocks them every 20 ms, and [`io`] and [`device`] are the sources and
//! sinks it reads and writes (files, tones, cpal devices); [`stretch`]
//! time-compresses what the jitter buffer holds too much of. [`ringtone`]
//! plays while a call rings, on the same device code. [`report`] is what
//! the thread tells the client, [`mos`] the call's quality in one figure;
//! [`tap`] copies what is played for [`analysis`] to check (flows' audio
//! steps). [`processing`] cleans a sound card's capture (echo
//! cancellation, noise suppression, gain control) before it is encoded,
//! its [`noise_suppressor`] heard as much as [`noise_floor`] says the
//! room is noisy, its [`expander`] turning down the other voices it
//! leaves. [`feedback`] carries the receivers' reports; [`rate`] finds
//! from them what the network lets through, and [`budget`] fits the voice
//! and its [`redundancy`] in it.

pub mod analysis;
pub mod budget;
pub mod codec;
pub mod control;
pub mod device;
pub mod dtmf;
pub mod echo_filter;
pub mod expander;
pub mod feedback;
pub mod gain_filter;
pub mod io;
pub mod jitter;
pub mod level;
pub mod mos;
pub mod noise_floor;
pub mod noise_suppressor;
pub mod pipeline;
pub mod processing;
pub mod quality;
pub mod rate;
pub mod redundancy;
pub mod report;
pub mod resample;
pub mod ringtone;
pub mod session;
pub mod spec;
pub mod stretch;
pub mod tap;
#[cfg(test)]
mod test_speech;
pub mod watch;

/// Opus runs at 48 kHz mono.
pub const SAMPLE_RATE: u32 = 48_000;

/// One frame is 20 ms.
pub const FRAME_MS: u64 = 20;

/// Samples in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// One frame of mono PCM, -1.0 to 1.0.
pub type Frame = [f32; FRAME_SAMPLES];
