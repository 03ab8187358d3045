//! Features over a signal window, as pure functions. Each takes the window's points (oldest first,
//! time in seconds) and returns `None` when the window is too short to say anything, so a feature
//! is never computed from an empty or single-point window by accident.

/// One observation: seconds since an arbitrary origin, and the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: f64,
    pub value: f64,
}

pub fn mean(values: impl ExactSizeIterator<Item = f64>) -> Option<f64> {
    let n = values.len();
    (n > 0).then(|| values.sum::<f64>() / n as f64)
}

pub fn rms(values: impl ExactSizeIterator<Item = f64>) -> Option<f64> {
    let n = values.len();
    (n > 0).then(|| (values.map(|v| v * v).sum::<f64>() / n as f64).sqrt())
}

pub fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Sample standard deviation (n − 1); `None` below two values.
pub fn std_dev(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values.iter().copied())?;
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    Some(var.sqrt())
}

/// Least-squares slope in units per second; `None` below two points or when all share one time.
pub fn trend_slope(points: &[Point]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.t).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.value).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.t - mt).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.t - mt) * (p.value - mv)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Change between the first and last point per second.
pub fn rate_of_change(points: &[Point]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let dt = last.t - first.t;
    (dt > 0.0).then(|| (last.value - first.value) / dt)
}

/// Seconds spent at or above `threshold`, each point holding until the next one.
pub fn time_at_or_above(points: &[Point], threshold: f64) -> f64 {
    points
        .windows(2)
        .filter(|w| w[0].value >= threshold)
        .map(|w| w[1].t - w[0].t)
        .sum()
}

/// Temperature rise over ambient (K).
pub fn rise_over_ambient(temperature: f64, ambient: f64) -> f64 {
    temperature - ambient
}

/// Three-phase (or any multi-phase) current unbalance as NEMA MG 1 defines it: the largest
/// deviation from the mean divided by the mean. `None` with no current flowing.
pub fn current_unbalance(phases: &[f64]) -> Option<f64> {
    let m = mean(phases.iter().copied())?;
    if m.abs() < f64::EPSILON {
        return None;
    }
    let worst = phases.iter().map(|p| (p - m).abs()).fold(0.0, f64::max);
    Some(worst / m)
}

/// How far `value` lies outside `[low, high]`, as a fraction of the range width (0 inside).
pub fn range_deviation(value: f64, low: f64, high: f64) -> f64 {
    let width = (high - low).abs().max(f64::EPSILON);
    if value < low {
        (low - value) / width
    } else if value > high {
        (value - high) / width
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[(f64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(t, value)| Point { t, value })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn statistics() {
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(v.iter().copied()), Some(5.0));
        assert!(close(
            rms([3.0, 4.0].into_iter()).expect("rms"),
            (12.5f64).sqrt()
        ));
        assert_eq!(min_max(v.iter().copied()), Some((2.0, 9.0)));
        assert!(close(std_dev(&v).expect("std"), (32.0f64 / 7.0).sqrt()));
        assert_eq!(mean(std::iter::empty()), None);
        assert_eq!(std_dev(&[1.0]), None);
        assert_eq!(min_max(std::iter::empty()), None);
    }

    #[test]
    fn slope_and_rate() {
        // value = 3 + 0.5 t with noise that cancels
        let p = pts(&[(0.0, 3.1), (2.0, 3.9), (4.0, 5.1), (6.0, 5.9)]);
        assert!(close(trend_slope(&p).expect("slope"), 0.48));
        assert!(close(rate_of_change(&p).expect("rate"), 2.8 / 6.0));
        assert_eq!(trend_slope(&pts(&[(1.0, 1.0), (1.0, 2.0)])), None);
        assert_eq!(rate_of_change(&pts(&[(1.0, 1.0)])), None);
    }

    #[test]
    fn time_in_zone_holds_each_value_until_the_next_point() {
        let p = pts(&[
            (0.0, 1.0),
            (10.0, 5.0),
            (15.0, 6.0),
            (20.0, 2.0),
            (30.0, 7.0),
        ]);
        assert!(close(time_at_or_above(&p, 5.0), 10.0));
        assert!(close(time_at_or_above(&p, 100.0), 0.0));
    }

    #[test]
    fn unbalance_follows_nema() {
        // NEMA MG 1 example: 460, 467, 450 → mean 459, max deviation 9 → 1.96 %
        let u = current_unbalance(&[460.0, 467.0, 450.0]).expect("unbalance");
        assert!(close(u, 9.0 / 459.0));
        assert_eq!(current_unbalance(&[0.0, 0.0, 0.0]), None);
        assert!(close(
            current_unbalance(&[10.0, 10.0, 10.0]).expect("balanced"),
            0.0
        ));
    }

    #[test]
    fn range_deviation_is_zero_inside_and_relative_outside() {
        assert_eq!(range_deviation(5.0, 2.0, 6.0), 0.0);
        assert!(close(range_deviation(7.0, 2.0, 6.0), 0.25));
        assert!(close(range_deviation(1.0, 2.0, 6.0), 0.25));
        assert!(close(rise_over_ambient(75.0, 25.0), 50.0));
    }
}
