//! RTP port allocation: one even port per call leg (RTCP on the odd port above it), taken
//! from the configured ranges (one or several, e.g. around the OS's ephemeral range) and
//! returned when the call ends.
//!
//! Freed ports go to the back of the line, so a port is reused as late as possible and stray
//! packets of an ended call do not land in a new one.

use std::collections::VecDeque;

/// A pool of even RTP ports.
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    ranges: Vec<(u16, u16)>,
    in_use: usize,
}

impl PortPool {
    /// All even ports `p` with `lo <= p` and `p + 1 <= hi`.
    pub fn new(lo: u16, hi: u16) -> Self {
        Self::with_ranges(&[(lo, hi)])
    }

    /// All even ports `p` with `lo <= p` and `p + 1 <= hi` of each range, in the order given
    /// (a port in two overlapping ranges is taken once).
    pub fn with_ranges(ranges: &[(u16, u16)]) -> Self {
        let mut free: VecDeque<u16> = VecDeque::new();
        let mut seen = std::collections::HashSet::new();
        for &(lo, hi) in ranges {
            let first = lo.saturating_add(lo % 2);
            for p in (first..hi).step_by(2) {
                if seen.insert(p) {
                    free.push_back(p);
                }
            }
        }
        Self {
            free,
            ranges: ranges.to_vec(),
            in_use: 0,
        }
    }

    /// Takes a port, or `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.in_use += 1;
        Some(p)
    }

    /// Returns a port taken with [`allocate`](Self::allocate).
    pub fn release(&mut self, port: u16) {
        let ours = self.ranges.iter().any(|&(lo, hi)| port >= lo && port < hi);
        if !ours || port % 2 != 0 || self.in_use == 0 {
            return;
        }
        self.in_use -= 1;
        self.free.push_back(port);
    }

    /// Ports currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Ports available.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ports_released_to_the_back() {
        let mut p = PortPool::new(10001, 10008);
        assert_eq!(p.available(), 3); // 10002, 10004, 10006 (10008 has no RTCP port)
        let a = p.allocate();
        assert_eq!(a, Some(10002));
        p.release(10002);
        assert_eq!(p.allocate(), Some(10004));
        assert_eq!(p.allocate(), Some(10006));
        assert_eq!(p.allocate(), Some(10002));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 3);
        p.release(10003); // odd: ignored
        assert_eq!(p.in_use(), 3);
    }

    #[test]
    fn several_ranges_are_used_in_order_and_foreign_ports_are_ignored() {
        let mut p = PortPool::with_ranges(&[(20000, 20004), (10001, 10005), (20002, 20006)]);
        // 20000, 20002, then 10002, 10004, then 20004 (20002 only once)
        assert_eq!(p.available(), 5);
        let got: Vec<u16> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(got, vec![20000, 20002, 10002, 10004, 20004]);
        p.release(15000); // in no range: ignored
        assert_eq!(p.in_use(), 5);
        p.release(10004);
        assert_eq!(p.in_use(), 4);
        assert_eq!(p.allocate(), Some(10004));
    }
}
