//! The range directory's order: for any one key, the owner a copy of the directory names
//! never goes back to an older range generation along the meta group's log (the records'
//! guards, crates/partition/src/directory.rs). One check for both the simulator (every
//! member's copy at every meta index it shows) and `synod chaos --directory` (every member's
//! `/v1/status` during the run).

use crate::DirectoryEntry;

/// The entry holding `key` in `entries` (in key order): the last one beginning at or before it.
fn holder<'a>(entries: &'a [DirectoryEntry], key: &[u8]) -> Option<&'a DirectoryEntry> {
    entries.iter().rfind(|e| e.start.as_slice() <= key)
}

/// How new a key's owner is: nobody (no entry, or one naming nobody) is older than every owner.
fn rank(e: Option<&DirectoryEntry>) -> Option<u64> {
    e.filter(|e| e.group != DirectoryEntry::NOBODY)
        .map(|e| e.generation)
}

/// Whether entry `new` names an older owner than `old` (both name one): a lower generation,
/// another group at the same generation, or the same group at the same generation with an
/// older configuration.
fn older(old: &DirectoryEntry, new: &DirectoryEntry) -> bool {
    match new.generation.cmp(&old.generation) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => {
            new.group != old.group || new.config_version < old.config_version
        }
    }
}

fn show(e: Option<&DirectoryEntry>) -> String {
    match e {
        Some(e) if e.group != DirectoryEntry::NOBODY => {
            format!(
                "group {:#x} (generation {}, configuration {})",
                e.group, e.generation, e.config_version
            )
        }
        _ => "nobody".to_string(),
    }
}

/// A key whose owner went back from copy `before` to the later copy `after`, if any: to an
/// older generation, to nobody, to another group at the same generation, or to an older
/// configuration of the same group. Checked at every
/// entry's first key of either copy (between two of them both copies name one owner each).
pub fn owner_went_back(before: &[DirectoryEntry], after: &[DirectoryEntry]) -> Option<String> {
    let keys = before.iter().chain(after).map(|e| e.start.as_slice());
    for key in keys {
        let (old, new) = (holder(before, key), holder(after, key));
        let back = match (old, rank(old), new, rank(new)) {
            (Some(o), Some(_), Some(n), Some(_)) => older(o, n),
            (_, Some(_), _, None) => true,
            _ => false,
        };
        if back {
            return Some(format!(
                "key {:?} went from {} to {}",
                String::from_utf8_lossy(key),
                show(old),
                show(new)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: &str, group: u64, generation: u64) -> DirectoryEntry {
        DirectoryEntry::at(start, group, generation)
    }

    #[test]
    fn newer_owners_pass_and_older_ones_fail() {
        let nobody = DirectoryEntry::NOBODY;
        let steps = [
            vec![e("", 1, 0), e("m", nobody, 0)],
            vec![e("", 1, 0), e("m", 2, 0)],
            vec![e("", 1, 0), e("m", 2, 1), e("t", 3, 1)],
            vec![e("", 1, 2), e("t", 3, 1)],
        ];
        for w in steps.windows(2) {
            assert_eq!(owner_went_back(&w[0], &w[1]), None, "{w:?}");
        }
        let back = owner_went_back(&steps[3], &[e("", 1, 2), e("t", 1, 0)]);
        assert!(
            back.as_deref().is_some_and(|m| m.contains("\"t\"")),
            "{back:?}"
        );
        let to_nobody = owner_went_back(&steps[1], &[e("", 1, 0), e("m", nobody, 0)]);
        assert!(to_nobody.is_some_and(|m| m.ends_with("to nobody")));
        let same_generation = owner_went_back(&steps[1], &[e("", 1, 0), e("m", 4, 0)]);
        assert!(same_generation.is_some());
        let reconfigured = |v: u64| DirectoryEntry {
            config_version: v,
            members: vec![1, 2, 3 + v],
            ..e("m", 2, 0)
        };
        let later = [e("", 1, 0), reconfigured(5)];
        assert_eq!(owner_went_back(&steps[1], &later), None);
        let back = owner_went_back(&later, &[e("", 1, 0), reconfigured(4)]);
        assert!(back.is_some_and(|m| m.contains("configuration 4")));
    }
}
