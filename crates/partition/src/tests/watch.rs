//! The partitioned engine's watch feed: each group's revisions, and the moves of keys between
//! groups at the revisions where splits and merges took effect (see `watch.rs`).

use super::*;
use synod_core::{GroupEvents, MoveKind, WatchMove};

/// Everything node `at` has published since the last call, by group.
fn feed(net: &mut Net, at: usize) -> BTreeMap<GroupId, GroupEvents> {
    let mut out: BTreeMap<GroupId, GroupEvents> = BTreeMap::new();
    for b in net.nodes[at].take_group_watch_events() {
        let e = out.entry(b.group).or_default();
        e.group = b.group;
        e.events.extend(b.events);
        e.moves.extend(b.moves);
    }
    out
}

fn revisions_of(e: &GroupEvents) -> Vec<(u64, String)> {
    e.events
        .iter()
        .flat_map(|r| {
            r.events
                .iter()
                .map(move |ev| (r.revision, String::from_utf8_lossy(&ev.kv.key).into_owned()))
        })
        .collect()
}

fn range(start: &str, end: &str) -> KeyRange {
    KeyRange::new(start, end)
}

#[test]
fn a_split_hands_its_keys_on_to_the_new_group_at_the_split_revision() {
    let mut net = Net::new(0);
    for at in 0..3 {
        assert!(feed(&mut net, at).is_empty(), "switched on, nothing yet");
    }
    net.rounds(50);
    for k in ["h", "k", "m"] {
        net.put(0, k, "before");
    }
    net.call(1, split("k")).expect("split");
    net.rounds(20);
    let before = feed(&mut net, 2);
    let child = net.nodes[2].layout().group_of(b"k");
    let g1 = &before[&1];
    assert_eq!(
        revisions_of(g1),
        [(1, "h".into()), (2, "k".into()), (3, "m".into())]
    );
    assert_eq!(
        g1.moves,
        [WatchMove {
            through: 3,
            range: range("k", "p"),
            kind: MoveKind::Group(child),
        }],
        "the keys from k on left group 1 after its revision 3, for the new group"
    );
    // The new group goes on from its parent's revision; the parent from its own.
    net.put(0, "m", "after");
    net.put(1, "h", "after");
    net.rounds(5);
    let after = feed(&mut net, 2);
    assert_eq!(revisions_of(&after[&child]), [(4, "m".into())]);
    assert_eq!(revisions_of(&after[&1]), [(4, "h".into())]);
    assert!(after.values().all(|e| e.moves.is_empty()));
    assert_eq!(
        net.nodes[2]
            .group_watch_history(child, 4, 10)
            .map(|h| h.len()),
        Ok(1)
    );
    // The new group holds its keys' past too (a watch resumed from before the split is sent
    // there): every revision of the parent's history, with the moved keys' events only.
    let past = net.nodes[1]
        .group_watch_history(child, 1, 10)
        .expect("the moved keys' history");
    let keys: Vec<(u64, Vec<String>)> = past
        .iter()
        .map(|r| {
            let ks = r.events.iter();
            (
                r.revision,
                ks.map(|e| String::from_utf8_lossy(&e.kv.key).into())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (1, vec![]),
            (2, vec!["k".to_string()]),
            (3, vec!["m".to_string()]),
            (4, vec!["m".to_string()]),
        ]
    );
}

#[test]
fn a_merge_ends_the_upper_stream_and_the_lower_one_jumps_over_it() {
    let mut net = Net::new(0);
    // The jump an absorb makes, apart from the revision closes that would make it first.
    for n in &mut net.nodes {
        n.closing.off = true;
    }
    for at in 0..3 {
        let _ = feed(&mut net, at);
    }
    net.rounds(50);
    for k in ["q", "r", "s", "t"] {
        net.put(0, k, "v"); // group 2: revisions 1..4
    }
    net.put(0, "h", "v"); // group 1: revision 1
    net.call(1, merge("p")).expect("merge");
    net.rounds(20);
    let got = feed(&mut net, 0);
    assert_eq!(
        got[&2].moves,
        [WatchMove {
            through: 4,
            range: range("p", ""),
            kind: MoveKind::Frozen,
        }],
        "the frozen group's watchers are told after its last revision"
    );
    assert_eq!(
        got[&1].moves,
        [WatchMove {
            through: 4,
            range: range("p", ""),
            kind: MoveKind::Absorbed { before: 1, from: 2 },
        }],
        "group 1 jumped from 1 to 4 with no event of its own keys"
    );
    net.put(2, "z", "v");
    net.rounds(5);
    let after = feed(&mut net, 0);
    assert_eq!(revisions_of(&after[&1]), [(5, "z".into())]);
    assert!(
        !after.contains_key(&2),
        "the retired group publishes nothing more"
    );
}
