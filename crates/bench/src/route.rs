//! Which connection each request goes to. `--target leader` and `--target all` give every
//! worker one connection for all its keys; `--target ranges` gives it one per key range, so a
//! key goes to the endpoint serving its range — a client that knows a partitioned cluster's
//! layout and sends each key to its group's leader, as `leader` does for a single group.

use crate::client::{self, Kv};
use crate::conn::Connection;
use std::sync::Arc;

/// The connections of a run, grouped by the key range they serve.
pub struct Routes {
    /// Split keys, ascending: range r holds keys from `splits[r - 1]` (inclusive) to `splits[r]`.
    splits: Arc<[Vec<u8>]>,
    /// `by_range[r]`: the connections to range r's endpoint (never empty).
    by_range: Vec<Vec<Connection>>,
}

impl Routes {
    /// Every key over the same connections.
    pub fn single(conns: Vec<Connection>) -> Self {
        Self::by_range(Vec::new(), vec![conns])
    }

    /// Keys cut by `splits` into `splits.len() + 1` ranges, range r over `by_range[r]`.
    pub fn by_range(splits: Vec<Vec<u8>>, by_range: Vec<Vec<Connection>>) -> Self {
        assert_eq!(splits.len() + 1, by_range.len(), "one endpoint per range");
        assert!(
            by_range.iter().all(|c| !c.is_empty()),
            "a range without connections"
        );
        assert!(splits.windows(2).all(|w| w[0] < w[1]), "splits must ascend");
        Self {
            splits: splits.into(),
            by_range,
        }
    }

    /// Total connections.
    pub fn connections(&self) -> usize {
        self.by_range.iter().map(Vec::len).sum()
    }

    /// Worker `i`'s clients: for each range, connection `i mod n` of that range's `n`, so the
    /// workers spread round-robin over each range's connections.
    pub fn worker(&self, i: usize) -> WorkerRoutes {
        WorkerRoutes {
            splits: self.splits.clone(),
            kvs: self
                .by_range
                .iter()
                .map(|conns| client::kv(&conns[i % conns.len()]))
                .collect(),
        }
    }
}

/// One worker's clients, one per range.
pub struct WorkerRoutes {
    splits: Arc<[Vec<u8>]>,
    kvs: Vec<Kv>,
}

impl WorkerRoutes {
    /// The client for `key`'s range.
    pub fn kv_for(&mut self, key: &[u8]) -> &mut Kv {
        &mut self.kvs[range_of(&self.splits, key)]
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
}
