//! Fixed-capacity signal windows.
//!
//! Invariant: a window never allocates after construction. Its storage is a `heapless::Deque` of
//! [`MAX_WINDOW`] points; the configured capacity (≤ `MAX_WINDOW`) only decides when the oldest
//! point is dropped. Memory per asset is therefore fixed at start-up whatever the uptime.

use firmware_config::MAX_WINDOW;
use heapless::Deque;

use super::features::Point;

#[derive(Debug, Clone)]
pub struct Window {
    points: Deque<Point, MAX_WINDOW>,
    capacity: usize,
}

impl Window {
    /// `capacity` is clamped to `1..=MAX_WINDOW` (the config validation rejects anything else).
    pub fn new(capacity: usize) -> Window {
        Window {
            points: Deque::new(),
            capacity: capacity.clamp(1, MAX_WINDOW),
        }
    }

    pub fn push(&mut self, point: Point) {
        if self.points.len() >= self.capacity {
            self.points.pop_front();
        }
        // Cannot fail: the length is below capacity ≤ MAX_WINDOW after the pop above.
        let _ = self.points.push_back(point);
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<Point> {
        self.points.back().copied()
    }

    /// Oldest first, copied into `scratch` (reused across calls, so scoring does not allocate
    /// once warm).
    pub fn points_into<'s>(&self, scratch: &'s mut Vec<Point>) -> &'s [Point] {
        scratch.clear();
        scratch.extend(self.points.iter().copied());
        scratch
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.value)
    }

    /// Drops points older than `t`; a signal that stopped updating must not be scored on old data.
    pub fn forget_before(&mut self, t: f64) {
        while self.points.front().is_some_and(|p| p.t < t) {
            self.points.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_points_and_never_grows() {
        let mut window = Window::new(3);
        for t in 0..10 {
            window.push(Point {
                t: f64::from(t),
                value: f64::from(t) * 10.0,
            });
        }
        assert_eq!(window.len(), 3);
        assert_eq!(window.values().collect::<Vec<_>>(), vec![70.0, 80.0, 90.0]);
        let mut scratch = Vec::new();
        assert_eq!(window.points_into(&mut scratch)[0].t, 7.0);

        let mut big = Window::new(10_000);
        for t in 0..1_000 {
            big.push(Point {
                t: f64::from(t),
                value: 0.0,
            });
        }
        assert_eq!(big.len(), MAX_WINDOW);
        assert_eq!(
            std::mem::size_of::<Window>(),
            std::mem::size_of::<Deque<Point, MAX_WINDOW>>() + std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn forgets_stale_points() {
        let mut window = Window::new(10);
        for t in 0..5 {
            window.push(Point {
                t: f64::from(t),
                value: 1.0,
            });
        }
        window.forget_before(3.0);
        assert_eq!(window.len(), 2);
        window.forget_before(100.0);
        assert!(window.is_empty());
    }
}
