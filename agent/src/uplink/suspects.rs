//! Finding the one record a broker will not take.
//!
//! Some brokers answer a publish they refuse by closing the connection: a packet above their own
//! size limit, a topic their ACL forbids (AWS IoT, some EMQX setups), bytes they cannot parse. The
//! uplink then reconnects and sends the same record first again, for ever, while everything behind
//! it waits. To find it without blaming records for an ordinary outage:
//!
//! - A connection lost with records in flight puts the uplink **on probation**: those records are
//!   suspects, and until each has been acknowledged (or as many acknowledgements have arrived) the
//!   uplink sends one record at a time.
//! - On probation, a connection that ends while exactly one record is in flight, because the broker
//!   closed it within [`STRIKE_WINDOW`] of that record being sent or because its PUBACK never came,
//!   is a **strike** against that record. Any other way of losing the connection (a timeout, a
//!   refused reconnect, the network) clears every strike: they must come in a row.
//! - [`MAX_STRIKES`] strikes in a row and the record is handed back to be moved to the dead-letter
//!   area (see `store::dead_letters`); the stream goes on.
//!
//! Pure: the uplink tells it what happened and asks it how many records may be in flight.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Strikes in a row that condemn a record.
pub const MAX_STRIKES: u32 = 3;

/// A close counts against the record in flight only if it came this soon after the record was
/// sent: a broker that refuses a packet closes at once.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(5);

/// How a connection ended, as far as blaming a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The broker closed or reset the connection.
    ClosedByBroker,
    /// A record's PUBACK did not come in time.
    NoAck,
    /// Anything else: a timeout, the network, a stop.
    Other,
}

/// A record in flight when the connection ended: its id and how long ago it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub id: u64,
    pub sent_ago: Duration,
}

#[derive(Debug, Default)]
pub struct Suspects {
    suspects: HashSet<u64>,
    /// Acknowledgements still to see, one record at a time, before probation ends.
    probation_left: usize,
    strikes: HashMap<u64, u32>,
}

impl Suspects {
    /// Records allowed in flight: one on probation, else `normal`.
    pub fn window(&self, normal: usize) -> usize {
        if self.on_probation() {
            1
        } else {
            normal
        }
    }

    pub fn on_probation(&self) -> bool {
        self.probation_left > 0
    }

    /// The broker acknowledged record `id`.
    pub fn acknowledged(&mut self, id: u64) {
        self.strikes.remove(&id);
        if self.on_probation() {
            self.suspects.remove(&id);
            self.probation_left -= 1;
            if self.suspects.is_empty() {
                self.probation_left = 0;
            }
        }
        if !self.on_probation() {
            self.suspects.clear();
        }
    }

    /// A record left the stream another way (moved to the dead letters, evicted).
    pub fn forget(&mut self, id: u64) {
        self.strikes.remove(&id);
        self.suspects.remove(&id);
        if self.suspects.is_empty() {
            self.probation_left = 0;
        }
    }

    /// The connection ended with `in_flight` records awaiting their PUBACK. Returns the record to
    /// move to the dead letters, with its strikes, when it has earned it.
    pub fn lost(&mut self, in_flight: &[InFlight], how: Loss) -> Option<(u64, u32)> {
        let blamed = match (self.on_probation(), in_flight, how) {
            (true, [only], Loss::ClosedByBroker) if only.sent_ago <= STRIKE_WINDOW => Some(only.id),
            (true, [only], Loss::NoAck) => Some(only.id),
            _ => None,
        };
        match blamed {
            Some(id) => {
                self.strikes.retain(|other, _| *other == id);
                let strikes = self.strikes.entry(id).or_insert(0);
                *strikes += 1;
                if *strikes >= MAX_STRIKES {
                    let strikes = *strikes;
                    self.forget(id);
                    return Some((id, strikes));
                }
            }
            None => self.strikes.clear(),
        }
        self.suspects.extend(in_flight.iter().map(|r| r.id));
        self.probation_left = self.probation_left.max(self.suspects.len());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flying(ids: &[u64], ago_ms: u64) -> Vec<InFlight> {
        ids.iter()
            .map(|&id| InFlight {
                id,
                sent_ago: Duration::from_millis(ago_ms),
            })
            .collect()
    }

    #[test]
    fn a_record_the_broker_closes_on_three_times_in_a_row_is_condemned() {
        let mut suspects = Suspects::default();
        assert_eq!(suspects.window(100), 100);
        // The broker closes while ten records are in flight: which one is not known yet.
        assert_eq!(
            suspects.lost(
                &flying(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3),
                Loss::ClosedByBroker
            ),
            None
        );
        assert_eq!(suspects.window(100), 1, "probation: one at a time");
        for id in [1, 2] {
            suspects.acknowledged(id);
        }
        // Record 3, alone in flight, is met with a close three times.
        assert_eq!(suspects.lost(&flying(&[3], 2), Loss::ClosedByBroker), None);
        assert_eq!(suspects.lost(&flying(&[3], 2), Loss::ClosedByBroker), None);
        assert_eq!(
            suspects.lost(&flying(&[3], 2), Loss::ClosedByBroker),
            Some((3, 3))
        );
        assert!(
            suspects.on_probation(),
            "the other suspects are still unproven"
        );
        for id in 4..=10 {
            suspects.acknowledged(id);
        }
        assert_eq!(
            suspects.window(100),
            100,
            "all proven: back to the full window"
        );
    }

    #[test]
    fn an_outage_blames_no_record() {
        let mut suspects = Suspects::default();
        suspects.lost(&flying(&[1, 2, 3], 10), Loss::ClosedByBroker);
        // Closed long after it was sent: the broker went away, the record did nothing.
        for _ in 0..5 {
            assert_eq!(
                suspects.lost(&flying(&[1], 60_000), Loss::ClosedByBroker),
                None
            );
        }
        // Timeouts and network failures blame nobody and reset the count.
        suspects.lost(&flying(&[1], 1), Loss::ClosedByBroker);
        suspects.lost(&flying(&[1], 1), Loss::ClosedByBroker);
        suspects.lost(&flying(&[1], 1), Loss::Other);
        suspects.lost(&flying(&[1], 1), Loss::ClosedByBroker);
        assert_eq!(
            suspects.lost(&flying(&[1], 1), Loss::ClosedByBroker),
            None,
            "strikes must come in a row"
        );
        assert_eq!(
            suspects.lost(&flying(&[1], 1), Loss::ClosedByBroker),
            Some((1, 3))
        );
    }

    #[test]
    fn a_missing_puback_is_a_strike_and_probation_ends_with_the_suspects() {
        let mut suspects = Suspects::default();
        // Not on probation: a lone record lost is a suspect, not yet a strike.
        assert_eq!(suspects.lost(&flying(&[7], 1), Loss::NoAck), None);
        assert_eq!(suspects.lost(&flying(&[7], 1), Loss::NoAck), None);
        assert_eq!(suspects.lost(&flying(&[7], 1), Loss::NoAck), None);
        assert_eq!(suspects.lost(&flying(&[7], 1), Loss::NoAck), Some((7, 3)));
        assert!(!suspects.on_probation());
        // A suspect evicted from the outbox never comes back: probation still ends.
        suspects.lost(&flying(&[8, 9], 1), Loss::Other);
        suspects.forget(8);
        assert!(suspects.on_probation());
        suspects.acknowledged(9);
        assert!(!suspects.on_probation());
        // Nothing in flight: nothing to suspect.
        suspects.lost(&[], Loss::ClosedByBroker);
        assert!(!suspects.on_probation());
    }
}
