//! Decisions drawn from scores and samples: the alert lifecycle, tag limits, and the alerts the
//! agent raises, acknowledges and shows.

pub mod alerts;
pub mod conditions;
pub mod lifecycle;
pub mod limits;
