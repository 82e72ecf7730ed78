//! The connection task's side of a call's media: the media thread (started
//! with the first call), the frames it wants sent, and the round trip it
//! needs for network quality.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use crate::client::engine::MediaCommand;
use crate::client::event::Event;
use crate::media::pipeline::{Control, MediaHandle, MediaSettings, Reporter};

/// Media frames waiting for the socket: 100 ms. More is stale voice.
const SEND_QUEUE: usize = 5;
const PING_EVERY: Duration = Duration::from_secs(2);

pub enum Outgoing {
    Frame(Vec<u8>),
    Ping,
}

pub struct MediaLink {
    settings: MediaSettings,
    events: mpsc::UnboundedSender<Event>,
    to_send: mpsc::Sender<Vec<u8>>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    thread: Option<MediaHandle>,
    in_call: bool,
    ping: Interval,
    ping_sent: Option<Instant>,
}

impl MediaLink {
    pub fn new(settings: MediaSettings, events: mpsc::UnboundedSender<Event>) -> Self {
        let (to_send, outgoing) = mpsc::channel(SEND_QUEUE);
        let mut ping = tokio::time::interval(PING_EVERY);
        // Between calls the ticks are not polled; they must not come in a burst after.
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        MediaLink {
            settings,
            events,
            to_send,
            outgoing,
            thread: None,
            in_call: false,
            ping,
            ping_sent: None,
        }
    }

    /// What the engine tells the media thread (starting it the first time).
    pub fn control(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Start { .. } => self.in_call = true,
            MediaCommand::Stop => self.in_call = false,
            _ => {}
        }
        let control = Control::Call(command);
        let (settings, to_send, events) = (&self.settings, &self.to_send, &self.events);
        self.thread
            .get_or_insert_with(|| {
                MediaHandle::spawn(settings.clone(), to_send.clone(), reporter(events.clone()))
            })
            .send(control);
    }

    /// A binary frame from the relay.
    pub fn received(&self, frame: Vec<u8>) {
        if let Some(thread) = &self.thread {
            thread.send(Control::Frame(frame));
        }
    }

    /// What to put on the socket next: a frame the media thread wants sent,
    /// or, every 2 s during a call, a ping.
    pub async fn next(&mut self) -> Outgoing {
        tokio::select! {
            // This link holds a sender itself, so the channel never closes.
            Some(frame) = self.outgoing.recv() => Outgoing::Frame(frame),
            _ = self.ping.tick(), if self.in_call => {
                self.ping_sent = Some(Instant::now());
                Outgoing::Ping
            }
        }
    }

    pub fn pong(&mut self) {
        if let (Some(sent), Some(thread)) = (self.ping_sent.take(), &self.thread) {
            thread.send(Control::Rtt(sent.elapsed().as_millis() as u64));
        }
    }
}

/// The media thread's reports, as this device's events.
fn reporter(events: mpsc::UnboundedSender<Event>) -> Reporter {
    Box::new(move |report| {
        let _ = events.send(Event::from(report));
    })
}
