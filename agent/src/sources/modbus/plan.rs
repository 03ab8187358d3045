//! Request planning: which reads fetch a device's tags in the fewest requests.
//!
//! Tags are grouped by poll interval, then by table; within a table they are sorted by address and
//! merged greedily. A request may span unmapped addresses only up to `max_gap` in a row, may not
//! exceed the device's (and the protocol's) size limit, and may never touch a forbidden range.
//!
//! A block (`count`) is read on its own, in one request that the link splits into reads of at
//! most the device's limit: it is large, and a torn block is worse than one more request.
//!
//! Why greedy is minimal: every feasible request covers a run of consecutive tags in address order,
//! and shrinking a feasible run from either end keeps it feasible (the gaps inside stay the same,
//! the span only shrinks). For such a monotone property, taking the longest feasible run each time
//! yields the fewest runs. `tests::greedy_matches_exhaustive_search` checks this against a brute
//! force on random maps.

use std::time::Duration;

use firmware_config::{Device, Forbidden, Table, Tag};

/// One read request and the tags it serves (indexes into the device's tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub tags: Vec<usize>,
}

impl ReadRequest {
    /// Requests on the wire: a block longer than the device's limit takes several.
    pub fn reads(&self, max_registers: u16) -> usize {
        if self.table.is_bits() {
            return 1;
        }
        usize::from(self.count).div_ceil(usize::from(max_registers.max(1)))
    }
}

/// The requests that run together at one poll interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    pub interval: Duration,
    pub requests: Vec<ReadRequest>,
}

/// Constraints for merging tags into requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap: u16,
    pub forbidden: &'a [Forbidden],
    pub one_per_tag: bool,
}

impl<'a> Limits<'a> {
    pub fn of(device: &'a Device) -> Self {
        Limits {
            max_registers: device.max_registers_per_request,
            max_bits: device.max_bits_per_request,
            max_gap: device.max_gap,
            forbidden: &device.forbidden,
            one_per_tag: device.one_request_per_tag,
        }
    }

    fn max_span(&self, table: Table) -> u32 {
        u32::from(if table.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        })
    }

    fn touches_forbidden(&self, table: Table, first: u32, last: u32) -> bool {
        self.forbidden
            .iter()
            .any(|f| f.table == table && u32::from(f.first) <= last && first <= u32::from(f.last))
    }
}

/// Groups a device's tags by poll interval (shortest first) and plans each group's requests.
pub fn plan_device(device: &Device) -> Vec<PollGroup> {
    let mut intervals: Vec<Duration> = device.tags.iter().map(|t| t.poll_interval).collect();
    intervals.sort();
    intervals.dedup();
    let limits = Limits::of(device);
    intervals
        .into_iter()
        .map(|interval| PollGroup {
            interval,
            requests: plan_reads(
                device
                    .tags
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.poll_interval == interval),
                limits,
            ),
        })
        .collect()
}

/// Plans the fewest requests covering `tags` (index, tag) under `limits`.
pub fn plan_reads<'t>(
    tags: impl IntoIterator<Item = (usize, &'t Tag)>,
    limits: Limits<'_>,
) -> Vec<ReadRequest> {
    let (blocks, mut sorted): (Vec<_>, Vec<_>) = tags
        .into_iter()
        .partition(|(_, t): &(usize, &Tag)| t.is_block());
    sorted.sort_by_key(|(i, t)| (t.table, t.address, t.last_address(), *i));

    let mut requests: Vec<ReadRequest> = blocks
        .into_iter()
        .map(|(index, tag)| ReadRequest {
            table: tag.table,
            start: tag.address,
            count: tag.width(),
            tags: vec![index],
        })
        .collect();
    // Current run: table, first and last address (inclusive, u32 to avoid overflow), tags.
    let mut run: Option<(Table, u32, u32, Vec<usize>)> = None;
    for (index, tag) in sorted {
        let (first, last) = (u32::from(tag.address), u32::from(tag.last_address()));
        if let Some((table, start, end, members)) = &mut run {
            let gap = first.saturating_sub(*end + 1);
            let new_end = (*end).max(last);
            let fits = !limits.one_per_tag
                && *table == tag.table
                && gap <= u32::from(limits.max_gap)
                && new_end - *start < limits.max_span(tag.table)
                && !limits.touches_forbidden(tag.table, *start, new_end);
            if fits {
                *end = new_end;
                members.push(index);
                continue;
            }
        }
        if let Some(done) = run.replace((tag.table, first, last, vec![index])) {
            requests.push(finish(done));
        }
    }
    requests.extend(run.map(finish));
    requests
}

fn finish((table, start, end, tags): (Table, u32, u32, Vec<usize>)) -> ReadRequest {
    // Validation guarantees addresses and spans fit in u16.
    ReadRequest {
        table,
        start: start as u16,
        count: (end - start + 1) as u16,
        tags,
    }
}

/// One request per tag: the fallback for a coalesced read the device refused.
pub fn split(request: &ReadRequest, tags: &[Tag]) -> Vec<ReadRequest> {
    request
        .tags
        .iter()
        .map(|&i| ReadRequest {
            table: request.table,
            start: tags[i].address,
            count: tags[i].width(),
            tags: vec![i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::{DataType, WordOrder};

    fn tag(table: Table, address: u16, data_type: DataType) -> Tag {
        Tag {
            name: format!("{table:?}{address}"),
            table,
            address,
            written_address: u32::from(address),
            data_type,
            order: WordOrder::ABCD,
            bit: (data_type == DataType::Bool && !table.is_bits()).then_some(0),
            length: 0,
            scaling: None,
            unit: None,
            poll_interval: Duration::from_secs(1),
            count: 1,
        }
    }

    fn limits(max_registers: u16, max_gap: u16, forbidden: &[Forbidden]) -> Limits<'_> {
        Limits {
            max_registers,
            max_bits: 2000,
            max_gap,
            forbidden,
            one_per_tag: false,
        }
    }

    fn plan(tags: &[Tag], limits: Limits<'_>) -> Vec<ReadRequest> {
        plan_reads(tags.iter().enumerate(), limits)
    }

    #[test]
    fn a_block_is_read_alone_whatever_its_length() {
        use DataType::*;
        let mut block = tag(Table::InputRegister, 10, I16);
        block.count = 4096;
        let tags = [
            tag(Table::InputRegister, 9, U16),
            block,
            tag(Table::InputRegister, 4106, U16),
        ];
        let requests = plan(&tags, limits(125, 10, &[]));
        assert_eq!(requests.len(), 3, "{requests:?}");
        let block = ReadRequest {
            table: Table::InputRegister,
            start: 10,
            count: 4096,
            tags: vec![1],
        };
        assert!(requests.contains(&block));
        assert_eq!(
            (block.reads(125), block.reads(4096), block.reads(0)),
            (33, 1, 4096)
        );
    }

    #[test]
    fn contiguous_tags_share_one_request() {
        use DataType::*;
        let tags = [
            tag(Table::HoldingRegister, 0, F32),
            tag(Table::HoldingRegister, 2, U16),
            tag(Table::HoldingRegister, 3, F64),
        ];
        let requests = plan(&tags, limits(125, 0, &[]));
        assert_eq!(requests.len(), 1);
        assert_eq!((requests[0].start, requests[0].count), (0, 7));
    }

    #[test]
    fn gap_size_limit_forbidden_and_tables_split_requests() {
        use DataType::*;
        let tags = [
            tag(Table::HoldingRegister, 0, U16),
            tag(Table::HoldingRegister, 10, U16), // gap of 9
            tag(Table::InputRegister, 0, U16),    // other table
            tag(Table::Coil, 0, Bool),
            tag(Table::Coil, 3, Bool),
        ];
        assert_eq!(plan(&tags, limits(125, 9, &[])).len(), 3);
        assert_eq!(plan(&tags, limits(125, 8, &[])).len(), 4);
        let forbidden = [Forbidden {
            table: Table::HoldingRegister,
            first: 5,
            last: 5,
        }];
        assert_eq!(
            plan(&tags, limits(125, 9, &forbidden)).len(),
            4,
            "never reads register 5"
        );
        assert_eq!(
            plan(&tags, limits(10, 9, &[])).len(),
            4,
            "span 11 > 10 registers"
        );
        let mut one_per_tag = limits(125, 100, &[]);
        one_per_tag.one_per_tag = true;
        assert_eq!(plan(&tags, one_per_tag).len(), 5);
    }

    #[test]
    fn protocol_limit_125_registers() {
        let tags: Vec<Tag> = (0..300)
            .map(|a| tag(Table::HoldingRegister, a, DataType::U16))
            .collect();
        let requests = plan(&tags, limits(125, 0, &[]));
        assert_eq!(
            requests.iter().map(|r| r.count).collect::<Vec<_>>(),
            [125, 125, 50]
        );
    }

    #[test]
    fn split_reads_each_tag_alone() {
        let tags = [
            tag(Table::HoldingRegister, 0, DataType::F32),
            tag(Table::HoldingRegister, 4, DataType::U16),
        ];
        let merged = plan(&tags, limits(125, 4, &[]));
        assert_eq!(merged.len(), 1);
        let parts = split(&merged[0], &tags);
        assert_eq!(
            parts.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            [(0, 2), (4, 1)]
        );
    }

    /// Fewest requests by exhaustive search. An optimal request can always be shrunk to start at
    /// some tag's first address and end at some tag's last address, so those are the candidates.
    fn brute_force_minimum(tags: &[Tag], limits: Limits<'_>) -> usize {
        let table = tags[0].table;
        let mut candidates: Vec<(u32, u32)> = Vec::new();
        for a in tags {
            for b in tags {
                let (first, last) = (u32::from(a.address), u32::from(b.last_address()));
                if first > last || last - first >= limits.max_span(table) {
                    continue;
                }
                if limits.touches_forbidden(table, first, last) {
                    continue;
                }
                // Every run of unread-but-unmapped addresses inside must be ≤ max_gap.
                let mapped = |addr: u32| {
                    tags.iter().any(|t| {
                        u32::from(t.address) <= addr && addr <= u32::from(t.last_address())
                    })
                };
                let mut run = 0;
                let mut ok = true;
                for addr in first..=last {
                    run = if mapped(addr) { 0 } else { run + 1 };
                    ok &= run <= u32::from(limits.max_gap);
                }
                if ok {
                    candidates.push((first, last));
                }
            }
        }
        let covers = |chosen: &[(u32, u32)], t: &Tag| {
            chosen
                .iter()
                .any(|(f, l)| *f <= u32::from(t.address) && u32::from(t.last_address()) <= *l)
        };
        for k in 1..=tags.len() {
            let mut idx: Vec<usize> = (0..k).collect();
            loop {
                let chosen: Vec<(u32, u32)> = idx.iter().map(|&i| candidates[i]).collect();
                if tags.iter().all(|t| covers(&chosen, t)) {
                    return k;
                }
                // next combination
                let mut i = k;
                while i > 0 && idx[i - 1] == candidates.len() - k + i - 1 {
                    i -= 1;
                }
                if i == 0 {
                    break;
                }
                idx[i - 1] += 1;
                for j in i..k {
                    idx[j] = idx[j - 1] + 1;
                }
            }
        }
        tags.len()
    }

    #[test]
    fn greedy_matches_exhaustive_search() {
        let types = [DataType::U16, DataType::F32, DataType::F64, DataType::Bool];
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..400 {
            let n = rng.usize(1..=7);
            let mut tags: Vec<Tag> = Vec::new();
            while tags.len() < n {
                let candidate = tag(
                    Table::HoldingRegister,
                    rng.u16(0..40),
                    types[rng.usize(..4)],
                );
                // Overlapping tags are allowed except inside forbidden ranges (validation).
                tags.push(candidate);
            }
            let forbidden_range = [Forbidden {
                table: Table::HoldingRegister,
                first: rng.u16(0..44),
                last: 0,
            }];
            let forbidden_range = [Forbidden {
                last: forbidden_range[0].first + rng.u16(0..3),
                ..forbidden_range[0]
            }];
            let use_forbidden = round % 2 == 0;
            let forbidden: &[Forbidden] = if use_forbidden { &forbidden_range } else { &[] };
            tags.retain(|t| {
                !forbidden
                    .iter()
                    .any(|f| f.first <= t.last_address() && t.address <= f.last)
            });
            if tags.is_empty() {
                continue;
            }
            let limits = limits(rng.u16(4..=20), rng.u16(0..=6), forbidden);
            let greedy = plan(&tags, limits);
            let all: Vec<usize> = greedy.iter().flat_map(|r| r.tags.clone()).collect();
            assert_eq!(all.len(), tags.len(), "every tag read exactly once");
            for r in &greedy {
                assert!(u32::from(r.count) <= limits.max_span(r.table));
                assert!(!limits.touches_forbidden(
                    r.table,
                    r.start.into(),
                    u32::from(r.start) + u32::from(r.count) - 1
                ));
            }
            assert_eq!(
                greedy.len(),
                brute_force_minimum(&tags, limits),
                "round {round}: {tags:?} {limits:?}"
            );
        }
    }
}
