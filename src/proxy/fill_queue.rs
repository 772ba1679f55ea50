//! Bounds on fills waiting for an upstream slot, overall and per client address, so cold
//! requests cannot pile up without limit; a ticket holds one place until its fill starts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct FillQueue {
    max: usize,
    per_client: usize,
    waiting: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One queued fill's place; released when dropped (the fill got its slot, or never ran).
pub struct Ticket {
    queue: Arc<FillQueue>,
    addr: IpAddr,
}

impl FillQueue {
    pub fn new(max: usize, per_client: usize) -> Self {
        Self {
            max: max.max(1),
            per_client: per_client.max(1),
            waiting: Mutex::new((0, HashMap::new())),
        }
    }

    /// A place for one more waiting fill from `addr`, or `None` when the queue (or this
    /// client's share of it) is full.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Ticket> {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mine = w.1.get(&addr).copied().unwrap_or(0);
        if w.0 >= self.max || mine >= self.per_client {
            return None;
        }
        w.0 += 1;
        w.1.insert(addr, mine + 1);
        Some(Ticket {
            queue: self.clone(),
            addr,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = self.queue.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.0 = w.0.saturating_sub(1);
        if let Some(n) = w.1.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.1.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_bounds_and_releases_on_drop() {
        let q = Arc::new(FillQueue::new(3, 2));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let t1 = q.admit(a).expect("1st");
        let _t2 = q.admit(a).expect("2nd");
        assert!(q.admit(a).is_none(), "per-client share");
        let _t3 = q.admit(b).expect("other client");
        assert!(q.admit(b).is_none(), "overall bound");
        drop(t1);
        assert!(q.admit(a).is_some(), "released");
    }
}
