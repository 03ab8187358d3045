//! Health scoring: per-asset signal windows, features, the ISO/NEMA rule baseline and the
//! assessment that combines them into health, failure probability and a maintenance action.
//!
//! Pure parts (`features`, `rules`, `assess`) are functions of their inputs; the `scorer` task is
//! the only async piece.

pub mod assess;
pub mod features;
pub mod model;
pub mod rules;
pub mod scorer;
pub mod window;
