//! Which connection each request goes to. `--target leader` and `--target all` give every
//! worker one connection for all its keys; `--target ranges` gives it one per endpoint and
//! sends each key to the endpoint serving its range — a client that knows a partitioned
//! cluster's layout and sends each key to its group's leader, as `leader` does for a single
//! group. Ranges on the same endpoint (several groups led by one member) share its
//! connections, so the connections asked for are spread over the members, not the ranges.

use crate::client::{self, Kv};
use crate::conn::Connection;
use std::sync::Arc;

/// The connections of a run, grouped by endpoint, and which endpoint serves each key range.
pub struct Routes {
    /// Split keys, ascending: range r holds keys from `splits[r - 1]` (inclusive) to `splits[r]`.
    splits: Arc<[Vec<u8>]>,
    /// `by_endpoint[e]`: the connections to endpoint e (never empty).
    by_endpoint: Vec<Vec<Connection>>,
    /// `endpoint_of[r]`: the endpoint serving range r.
    endpoint_of: Arc<[usize]>,
}

impl Routes {
    /// Every key over the same connections.
    pub fn single(conns: Vec<Connection>) -> Self {
        Self::by_range(Vec::new(), vec![conns], vec![0])
    }

    /// Keys cut by `splits` into `splits.len() + 1` ranges, range r served by endpoint
    /// `endpoint_of[r]`, whose connections are `by_endpoint[endpoint_of[r]]`.
    pub fn by_range(
        splits: Vec<Vec<u8>>,
        by_endpoint: Vec<Vec<Connection>>,
        endpoint_of: Vec<usize>,
    ) -> Self {
        assert_eq!(
            splits.len() + 1,
            endpoint_of.len(),
            "one endpoint per range"
        );
        assert!(
            endpoint_of.iter().all(|&e| e < by_endpoint.len()),
            "a range's endpoint is not connected"
        );
        assert!(
            by_endpoint.iter().all(|c| !c.is_empty()),
            "an endpoint without connections"
        );
        assert!(splits.windows(2).all(|w| w[0] < w[1]), "splits must ascend");
        Self {
            splits: splits.into(),
            by_endpoint,
            endpoint_of: endpoint_of.into(),
        }
    }

    /// Total connections.
    pub fn connections(&self) -> usize {
        self.by_endpoint.iter().map(Vec::len).sum()
    }

    /// Worker `i`'s clients: for each endpoint, connection `i mod n` of its `n`, so the
    /// workers spread round-robin over each endpoint's connections.
    pub fn worker(&self, i: usize) -> WorkerRoutes {
        WorkerRoutes {
            splits: self.splits.clone(),
            endpoint_of: self.endpoint_of.clone(),
            kvs: self
                .by_endpoint
                .iter()
                .map(|conns| client::kv(&conns[i % conns.len()]))
                .collect(),
        }
    }
}

/// Each range's endpoint among the distinct ones of `per_range` (one endpoint per range, in
/// key order): the distinct endpoints in first-seen order, and each range's index into them.
pub fn distinct_endpoints(per_range: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut distinct: Vec<String> = Vec::new();
    let index = per_range
        .iter()
        .map(|e| match distinct.iter().position(|d| d == e) {
            Some(i) => i,
            None => {
                distinct.push(e.clone());
                distinct.len() - 1
            }
        })
        .collect();
    (distinct, index)
}

/// One worker's clients, one per endpoint.
pub struct WorkerRoutes {
    splits: Arc<[Vec<u8>]>,
    endpoint_of: Arc<[usize]>,
    kvs: Vec<Kv>,
}

impl WorkerRoutes {
    /// The client for the endpoint serving `key`'s range.
    pub fn kv_for(&mut self, key: &[u8]) -> &mut Kv {
        &mut self.kvs[self.endpoint_of[range_of(&self.splits, key)]]
    }
}

/// The range of `key` among those `splits` cut: a split key is the first key of its range.
fn range_of(splits: &[Vec<u8>], key: &[u8]) -> usize {
    splits.partition_point(|s| s.as_slice() <= key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_to_the_range_its_split_keys_put_it_in() {
        let splits = vec![b"00002500".to_vec(), b"00005000".to_vec()];
        assert_eq!(range_of(&splits, b"00000000"), 0);
        assert_eq!(range_of(&splits, b"00002499"), 0);
        // A split key is the first key of the upper range, as a partitioned cluster cuts it.
        assert_eq!(range_of(&splits, b"00002500"), 1);
        assert_eq!(range_of(&splits, b"00004999"), 1);
        assert_eq!(range_of(&splits, b"00005000"), 2);
        assert_eq!(range_of(&splits, b"99999999"), 2);
        assert_eq!(range_of(&[], b"anything"), 0);
    }

    #[test]
    fn ranges_on_one_endpoint_share_it() {
        let per_range = ["a:1", "b:2", "a:1", "c:3", "b:2"].map(String::from);
        let (distinct, index) = distinct_endpoints(&per_range);
        assert_eq!(distinct, ["a:1", "b:2", "c:3"]);
        assert_eq!(index, [0, 1, 0, 2, 1]);
    }
}
