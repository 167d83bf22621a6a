//! Read buffers lent per thread.
//!
//! An idle connection must not own a large buffer (thousands of idle WebSockets and kept-alive
//! HTTP clients sit behind one proxy), and a busy one must not allocate and free one per
//! message. So connections borrow a buffer for exactly as long as bytes are in flight and give
//! it back to the thread's pool after: no lock, no allocation in the steady state.

use std::{
    cell::RefCell,
    ops::{Deref, DerefMut},
};

/// Capacity of a lent buffer (a TLS record's worth of plaintext).
pub const SIZE: usize = 16 * 1024;

/// Buffers kept per thread (enough for the connections a thread moves bytes for at once in
/// practice; more are allocated and freed as needed).
const KEPT: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`SIZE`] bytes of capacity, back to the pool when dropped.
#[derive(Debug)]
pub struct Lent(Vec<u8>);

impl Lent {
    /// Borrows a buffer from this thread's pool (or allocates one).
    pub fn take() -> Self {
        let pooled = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
        Self(pooled.unwrap_or_else(|| Vec::with_capacity(SIZE)))
    }
}

impl Deref for Lent {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        // One that grew for a large head is not kept at that size.
        if buf.capacity() > 4 * SIZE {
            return;
        }
        buf.clear();
        // The task may have moved threads meanwhile: the buffer joins that thread's pool.
        // (During thread teardown the pool is gone and the buffer is simply freed.)
        let _pooled_or_freed = POOL.try_with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEPT {
                pool.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled() -> usize {
        POOL.with(|p| p.borrow().len())
    }

    #[test]
    fn buffers_come_back_empty_and_are_reused() {
        let mut a = Lent::take();
        assert!(a.is_empty() && a.capacity() >= SIZE);
        a.extend_from_slice(b"bytes in flight");
        let ptr = a.as_ptr();
        drop(a);
        let b = Lent::take();
        assert!(b.is_empty(), "handed out cleared");
        assert_eq!(
            b.as_ptr(),
            ptr,
            "the same allocation, from this thread's pool"
        );
    }

    #[test]
    fn grown_buffers_are_not_kept() {
        let mut a = Lent::take();
        let before = pooled();
        a.reserve(8 * SIZE);
        drop(a);
        assert_eq!(pooled(), before);
        drop(Lent::take());
        assert_eq!(pooled(), before + 1, "a normal one is kept");
    }
}
