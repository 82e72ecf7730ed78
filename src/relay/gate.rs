//! Who may hold a connection before logging in.
//!
//! A socket that never logs in costs the relay as much as a device does. The
//! gate counts such connections, in total and per address, from accept until
//! the connection's first successful login (or its end), so that a flood of
//! idle sockets is refused at the door while logged-in devices keep the rest
//! of `max_connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why the gate said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerAddress,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Total => {
                "too many connections are waiting to log in (relay.max_unauthenticated); try again later"
            }
            Refusal::PerAddress => {
                "too many connections from your address are waiting to log in \
                 (relay.max_unauthenticated_per_address); try again later"
            }
        }
    }
}

#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total,
            max_per_address,
            state: Mutex::new(Counts::default()),
        })
    }

    /// A place for a connection from `addr` until it logs in.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Unauthenticated, Refusal> {
        let mut counts = self.state.lock().expect("gate lock");
        if counts.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_addr = counts.per_address.entry(addr).or_default();
        if *from_addr >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *from_addr += 1;
        counts.total += 1;
        Ok(Unauthenticated {
            gate: self.clone(),
            addr,
        })
    }

    /// Connections that have not logged in yet.
    pub fn waiting(&self) -> usize {
        self.state.lock().expect("gate lock").total
    }

    fn release(&self, addr: IpAddr) {
        let mut counts = self.state.lock().expect("gate lock");
        counts.total -= 1;
        if let Some(n) = counts.per_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&addr);
            }
        }
    }
}

/// Held by a connection until it logs in; dropping it frees the place.
#[derive(Debug)]
pub struct Unauthenticated {
    gate: Arc<Gate>,
    addr: IpAddr,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.gate.release(self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_until_login_and_free_on_drop() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::PerAddress);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        assert_eq!(gate.waiting(), 2);
        assert!(gate.admit(a).is_ok());
    }
}
