//! RTP port allocation: one even port per call leg (RTCP on the odd port above it), taken
//! from the configured range and returned when the call ends.
//!
//! Freed ports go to the back of the line, so a port is reused as late as possible and stray
//! packets of an ended call do not land in a new one.

use std::collections::VecDeque;

/// A pool of even RTP ports.
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    lo: u16,
    hi: u16,
    in_use: usize,
}

impl PortPool {
    /// All even ports `p` with `lo <= p` and `p + 1 <= hi`.
    pub fn new(lo: u16, hi: u16) -> Self {
        let first = lo + (lo % 2);
        let free: VecDeque<u16> = (first..hi).step_by(2).collect();
        Self {
            free,
            lo,
            hi,
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
        if port < self.lo || port >= self.hi || port % 2 != 0 || self.in_use == 0 {
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
}
