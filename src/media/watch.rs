//! Hot-plug: a thread that lists the system's sound devices every second
//! (SPEC 8.1: `DEVICED_UPDATED` within 2 s of a change) and whenever asked.
//!
//! With a PulseAudio (or PipeWire) server the list is one cheap request to
//! it. Without one, listing means ALSA probing every plugin (slow, and
//! chatty on stderr), so the thread only lists again when asked or when
//! `/proc/asound/cards` changes (a card plugged in or out).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::device::{DeviceLists, Lister};

const POLL: Duration = Duration::from_secs(1);

/// What the thread tells its owner: a list, and whether it was asked for
/// (else it changed). Returns false once nobody listens.
pub type Listener = Box<dyn Fn(DeviceLists, bool) -> bool + Send>;

/// The thread ends when this is dropped (within a poll).
pub struct Watcher {
    requests: mpsc::Sender<()>,
}

impl Watcher {
    /// Starts watching; the first list is reported as not asked for (a
    /// baseline), and after it, each change.
    pub fn spawn(listener: Listener) -> Watcher {
        let (requests, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || watch(&rx, &listener))
            .expect("spawn the device watcher");
        Watcher { requests }
    }

    /// Lists the devices now and reports them, changed or not.
    pub fn refresh(&self) {
        let _ = self.requests.send(());
    }
}

fn watch(rx: &mpsc::Receiver<()>, listener: &Listener) {
    let mut lister = Lister::default();
    let mut last: Option<DeviceLists> = None;
    let mut cards = alsa_cards();
    let mut first = true;
    loop {
        let asked = if first {
            first = false;
            rx.try_recv().is_ok()
        } else {
            match rx.recv_timeout(POLL) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        // Several requests at once get one answer each, from one listing.
        let mut answers = usize::from(asked);
        while rx.try_recv().is_ok() {
            answers += 1;
        }
        if answers == 0 && last.is_some() && !lister.pollable() {
            let now = alsa_cards();
            if now == cards {
                continue;
            }
            cards = now;
        }
        let lists = match lister.lists() {
            Ok(lists) => lists,
            Err(e) => {
                tracing::debug!(error = %e, "listing sound devices");
                if answers == 0 {
                    continue;
                }
                DeviceLists::default()
            }
        };
        // The first list goes out too, as the baseline a later change (a
        // device in use that disappears) is told from.
        let changed = last.as_ref().is_none_or(|l| *l != lists);
        if changed && last.is_some() {
            tracing::info!("the system's sound devices changed");
        }
        last = Some(lists.clone());
        for _ in 0..answers {
            if !listener(lists.clone(), true) {
                return;
            }
        }
        if changed && answers == 0 && !listener(lists, false) {
            return;
        }
    }
}

fn alsa_cards() -> Option<String> {
    std::fs::read_to_string("/proc/asound/cards").ok()
}
