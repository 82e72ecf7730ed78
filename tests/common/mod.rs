#![allow(dead_code)]

pub mod headless;
pub mod mesh;
pub mod net;
pub mod pulse;

/// Tests that judge real time (a call's audio on its 20 ms clock) and the
/// suite's heaviest tests take turns: on a 2-core machine the heavy ones
/// starve the media thread, and a gap in the audio would then say something
/// about the machine, not about termphone.
pub static REAL_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
