//! Opus at 48 kHz mono in 20 ms frames (SPEC section 5), VOIP application
//! with in-band FEC, through the `opus` crate (libopus).

use opus::{Application, Bitrate, Channels};

use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::protocol::MAX_MEDIA_PAYLOAD_BYTES;

/// Encoder settings; `[media]` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecSettings {
    pub bitrate_bps: i32,
    /// 0 (fastest) to 10 (best).
    pub complexity: i32,
    /// The loss the encoder plans its FEC for, in percent.
    pub expected_loss_percent: i32,
}

impl Default for CodecSettings {
    fn default() -> Self {
        CodecSettings {
            bitrate_bps: 48_000,
            complexity: 9,
            expected_loss_percent: 20,
        }
    }
}

pub struct Encoder {
    opus: opus::Encoder,
    packet: [u8; MAX_MEDIA_PAYLOAD_BYTES],
}

impl Encoder {
    pub fn new(settings: CodecSettings) -> Result<Self, opus::Error> {
        let mut opus = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        opus.set_bitrate(Bitrate::Bits(settings.bitrate_bps))?;
        opus.set_complexity(settings.complexity)?;
        opus.set_inband_fec(true)?;
        opus.set_packet_loss_perc(settings.expected_loss_percent)?;
        Ok(Encoder {
            opus,
            packet: [0; MAX_MEDIA_PAYLOAD_BYTES],
        })
    }

    /// Tells the encoder the loss the far end measures, so FEC follows it.
    pub fn set_expected_loss(&mut self, percent: i32) {
        let _ = self.opus.set_packet_loss_perc(percent.clamp(0, 100));
    }

    /// A new bitrate (bit/s) from the next frame on: the voice's share of
    /// the send budget (media::budget).
    pub fn set_bitrate(&mut self, bps: i32) {
        let _ = self.opus.set_bitrate(Bitrate::Bits(bps));
    }

    /// One 20 ms frame in, one Opus packet out (borrowed until the next call).
    pub fn encode(&mut self, pcm: &Frame) -> Result<&[u8], opus::Error> {
        let len = self.opus.encode_float(pcm, &mut self.packet)?;
        Ok(&self.packet[..len])
    }
}

pub struct Decoder {
    opus: opus::Decoder,
}

impl Decoder {
    pub fn new() -> Result<Self, opus::Error> {
        Ok(Decoder {
            opus: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
        })
    }

    /// Decodes `packet` into `out`; a packet that does not decode is concealed.
    pub fn decode(&mut self, packet: &[u8], out: &mut Frame) {
        self.run(packet, false, out);
    }

    /// Rebuilds the frame before `next_packet` from its in-band FEC.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut Frame) {
        self.run(next_packet, true, out);
    }

    /// Packet-loss concealment: a plausible continuation of what came before.
    pub fn conceal(&mut self, out: &mut Frame) {
        self.run(&[], false, out);
    }

    fn run(&mut self, packet: &[u8], fec: bool, out: &mut Frame) {
        match self.opus.decode_float(packet, out, fec) {
            Ok(n) if n == FRAME_SAMPLES => {}
            // A corrupt packet or one of another duration: conceal instead.
            _ => {
                if self.opus.decode_float(&[], out, false).is_err() {
                    out.fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, start: usize) -> Frame {
        std::array::from_fn(|i| {
            0.5 * (2.0 * std::f32::consts::PI * hz * (start + i) as f32 / 48_000.0).sin()
        })
    }

    #[test]
    fn a_tone_survives_encode_and_decode() {
        let mut enc = Encoder::new(CodecSettings::default()).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut out = [0.0; FRAME_SAMPLES];
        let mut energy = 0.0;
        for k in 0..10 {
            let packet = enc
                .encode(&tone(440.0, k * FRAME_SAMPLES))
                .unwrap()
                .to_vec();
            assert!(
                packet.len() < 200,
                "48 kbps is 120 bytes a frame: {}",
                packet.len()
            );
            dec.decode(&packet, &mut out);
            energy = out.iter().map(|s| s * s).sum::<f32>() / FRAME_SAMPLES as f32;
        }
        // A 0.5 sine has a mean square of 0.125.
        assert!((energy - 0.125).abs() < 0.03, "{energy}");
    }

    #[test]
    fn loss_is_concealed_or_rebuilt_not_silent() {
        let mut enc = Encoder::new(CodecSettings::default()).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut out = [0.0; FRAME_SAMPLES];
        let packets: Vec<_> = (0..12)
            .map(|k| {
                enc.encode(&tone(440.0, k * FRAME_SAMPLES))
                    .unwrap()
                    .to_vec()
            })
            .collect();
        for p in &packets[..10] {
            dec.decode(p, &mut out);
        }
        dec.decode_fec(&packets[11], &mut out);
        assert!(out.iter().any(|s| s.abs() > 0.1), "FEC gives sound");
        dec.conceal(&mut out);
        assert!(out.iter().any(|s| s.abs() > 0.05), "PLC gives sound");
        dec.decode(b"\xff\xff\xff", &mut out);
    }
}
