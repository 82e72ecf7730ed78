//! The connection task's side of a call's media: the media thread (started
//! with the first call), the frames it wants sent, and the round trip it
//! needs for network quality.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use crate::client::engine::MediaCommand;
use crate::client::event::Event;
use crate::client::queue;
use crate::media::pipeline::{Control, MediaHandle, MediaSettings, Reporter};

/// Media frames waiting for the socket: 100 ms. More is stale voice.
const SEND_QUEUE: usize = 5;
const PING_EVERY: Duration = Duration::from_secs(2);

pub enum Outgoing {
    Frame(Vec<u8>),
    Ping,
}

pub struct MediaLink {
    /// `None`: calls without media; nothing is started.
    settings: Option<MediaSettings>,
    events: queue::Sender<Event>,
    /// From the first call on: a device that never calls (a load process
    /// holds thousands idle) keeps no queue or timer for it.
    started: Option<Started>,
    in_call: bool,
    ping_sent: Option<Instant>,
}

/// The media thread and what the connection task keeps for it.
struct Started {
    thread: MediaHandle,
    /// Held so that the queue never closes (the thread holds the other).
    _to_send: mpsc::Sender<Vec<u8>>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    ping: Interval,
}

impl MediaLink {
    pub fn new(settings: Option<MediaSettings>, events: queue::Sender<Event>) -> Self {
        MediaLink {
            settings,
            events,
            started: None,
            in_call: false,
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
        let Some(settings) = &self.settings else {
            return;
        };
        let events = &self.events;
        let started = self.started.get_or_insert_with(|| {
            let (to_send, outgoing) = mpsc::channel(SEND_QUEUE);
            let mut ping = tokio::time::interval(PING_EVERY);
            // Between calls the ticks are not polled; they must not come in a burst after.
            ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Started {
                thread: MediaHandle::spawn(
                    settings.clone(),
                    to_send.clone(),
                    reporter(events.clone()),
                ),
                _to_send: to_send,
                outgoing,
                ping,
            }
        });
        started.thread.send(Control::Call(command));
    }

    /// A binary frame from the relay.
    pub fn received(&self, frame: Vec<u8>) {
        if let Some(started) = &self.started {
            started.thread.send(Control::Frame(frame));
        }
    }

    /// What to put on the socket next: a frame the media thread wants sent,
    /// or, every 2 s during a call, a ping.
    pub async fn next(&mut self) -> Outgoing {
        let Some(started) = self.started.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            // This link holds a sender itself, so the channel never closes.
            Some(frame) = started.outgoing.recv() => Outgoing::Frame(frame),
            _ = started.ping.tick(), if self.in_call => {
                self.ping_sent = Some(Instant::now());
                Outgoing::Ping
            }
        }
    }

    pub fn pong(&mut self) {
        if let (Some(sent), Some(started)) = (self.ping_sent.take(), &self.started) {
            started
                .thread
                .send(Control::Rtt(sent.elapsed().as_millis() as u64));
        }
    }
}

/// The media thread's reports, as this device's events.
fn reporter(events: queue::Sender<Event>) -> Reporter {
    Box::new(move |report| {
        let _ = events.send(Event::from(report));
    })
}
