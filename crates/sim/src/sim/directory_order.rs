//! The range directory's order check ([`synod_core::directory_order`]): for any one key, the
//! generation the directory names for its owner never goes back along the meta group's log
//! (a record from a leader that has not applied its group's split or freeze yet must change
//! nothing). Checked on every member's copy whenever it moves to a later meta index; members
//! agree entry by entry (the agreement check), so one member's copy stands for the log.

use std::collections::BTreeMap;
use synod_core::directory_order::owner_went_back;
use synod_core::{DirectoryEntry, DirectoryStatus, NodeId};

/// Per member, the last copy seen and the meta index it was read at.
#[derive(Default)]
pub(super) struct DirectoryOrder {
    seen: BTreeMap<NodeId, (u64, Vec<DirectoryEntry>)>,
}

impl DirectoryOrder {
    /// Looks at `node`'s copy: the failure to report if a key's owner went back since the
    /// copy it showed at an earlier meta index. A member that restarted shows an earlier copy
    /// again; it is compared from there on.
    pub(super) fn observe(&mut self, node: NodeId, d: &DirectoryStatus) -> Option<String> {
        let at = d.copied_at;
        let failure = match self.seen.get(&node) {
            Some((before_at, before)) if *before_at < at => owner_went_back(before, &d.entries)
                .map(|m| {
                    format!("directory order: node {node}, meta index {before_at} → {at}: {m}")
                }),
            Some((before_at, _)) if *before_at == at => return None,
            _ => None,
        };
        self.seen.insert(node, (at, d.entries.clone()));
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: &str, group: u64, generation: u64) -> DirectoryEntry {
        DirectoryEntry::at(start, group, generation)
    }

    fn status(at: u64, entries: Vec<DirectoryEntry>) -> DirectoryStatus {
        DirectoryStatus {
            copied_at: at,
            entries,
            ..DirectoryStatus::default()
        }
    }

    #[test]
    fn a_member_is_compared_with_its_own_earlier_copies() {
        let mut order = DirectoryOrder::default();
        assert_eq!(
            order.observe(1, &status(1, vec![e("", 1, 0), e("m", 2, 1)])),
            None
        );
        assert_eq!(order.observe(2, &status(3, vec![e("", 1, 2)])), None);
        let back = order.observe(1, &status(2, vec![e("", 1, 0), e("m", 2, 0)]));
        assert!(back.is_some_and(|m| m.contains("meta index 1 → 2")));
        // A restarted member's earlier copy is a new baseline, not a failure.
        assert_eq!(order.observe(1, &status(1, vec![e("", 1, 0)])), None);
        assert_eq!(
            order.observe(1, &status(1, vec![e("", 1, 5)])),
            None,
            "the same index"
        );
    }
}
