//! The unbounded queues of a device: commands into its connection task,
//! events out of it (and, in `termphone load`, on to the flow).
//!
//! tokio's mpsc allocates a block of 32 slots with every channel, 4 KiB
//! for events before the first one is sent, and a load process pays that
//! for each of its thousands of idle devices (docs/benchmarks.md, *Load*).
//! futures-channel's queue allocates a node per message waiting, so an
//! idle device's queues are a few hundred bytes. Same rules as tokio's
//! unbounded channel: in order, never full, `recv` ends with `None` once
//! every sender is gone and the queue is empty.

use futures_channel::mpsc;

/// A new queue.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::unbounded();
    (Sender(tx), Receiver(rx))
}

pub struct Sender<T>(mpsc::UnboundedSender<T>);

// Derived, it would ask `T: Clone`.
impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Sender<T> {
    /// Queues `value`; an error gives it back when the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), mpsc::TrySendError<T>> {
        self.0.unbounded_send(value)
    }
}

pub struct Receiver<T>(mpsc::UnboundedReceiver<T>);

impl<T> Receiver<T> {
    /// The next value, or `None` once every sender is gone and the queue is
    /// empty. Cancel-safe: dropped before it is ready, it takes nothing.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_come_in_order_then_none_once_every_sender_is_gone() {
        let (tx, mut rx) = unbounded();
        let other = tx.clone();
        tx.send(1).unwrap();
        other.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(other);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_send_to_a_dropped_receiver_gives_the_value_back() {
        let (tx, rx) = unbounded();
        drop(rx);
        assert_eq!(tx.send(7).unwrap_err().into_inner(), 7);
    }
}
