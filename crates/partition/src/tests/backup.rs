//! Backups of a partitioned member, restored into another layout: every key, lease, revision
//! and the history come along, whatever the old and new split keys; HashKV at a revision, the
//! same whatever the layout (see `backup.rs`).

use super::leases::{grant, put_with, time_to_live};
use super::*;
use synod_core::membership::Configuration;

/// The first records of a 3-member cluster restored from `image` with `splits`.
fn restored(image: &GroupsImage, splits: &[&str]) -> Vec<GroupRecord<<Group as Engine>::Record>> {
    let splits: Vec<Vec<u8>> = splits.iter().map(|k| k.as_bytes().to_vec()).collect();
    let images = image.images();
    let records = synod_replica::restored_checkpoints::<synod_omnipaxos::OmniPaxos>(
        &images,
        &splits,
        Configuration::of_ids(&[1, 2, 3]),
    )
    .expect("restored records");
    assert_eq!(records.len(), splits.len() + 1, "one group per range");
    vec![GroupRecord::Checkpoint(
        records
            .into_iter()
            .enumerate()
            .map(|(g, r)| (g as GroupId, r))
            .collect(),
    )]
}

#[test]
fn a_backup_of_every_group_restores_into_another_layout() {
    let mut net = Net::new(0);
    net.rounds(50);
    let lease = grant(&mut net, 0, 60);
    let mut put_at = std::collections::BTreeMap::new();
    for k in ["a", "h", "q", "z"] {
        let put = Op::Put(PutRequest::new(k, format!("{k}-value")));
        put_at.insert(k, net.call(0, put).expect("put").revision);
    }
    put_with(&mut net, 1, "b", lease);
    put_with(&mut net, 1, "r", lease);
    net.call(2, split("t")).expect("split");
    net.rounds(20);
    let backup = net.nodes[1].backup_image().expect("backup of every group");
    assert_eq!(backup.keys, 6);
    let top = net.nodes[1]
        .status()
        .groups
        .iter()
        .map(|g| g.revision)
        .max();
    assert_eq!(Some(backup.revision), top, "the highest group revision");
    let image = GroupsImage::decode(&backup.state).expect("decodes");
    let starts: Vec<&[u8]> = image.groups.iter().map(|(k, _, _)| k.as_slice()).collect();
    assert_eq!(
        starts,
        [&b""[..], b"g", b"p", b"t"],
        "the layout, split included"
    );

    // Into two ranges cut at "m": each new group holds its keys and the lease, with the
    // keys it holds; writes go on above the backup's revision.
    let disk = restored(&image, &["m"]);
    let cfg = |id| {
        let mut c = config(id, 0);
        c.split_keys = vec![b"m".to_vec()];
        c
    };
    let mut new = Net {
        nodes: (1..=3)
            .map(|id| Node::recover(cfg(id), disk.clone()).expect("restored member starts"))
            .collect(),
        down: None,
        disks: vec![disk.clone(); 3],
        replies: Vec::new(),
        seq: 0,
        tap: None,
        tapped: Vec::new(),
        audit: None,
        audit_failures: Vec::new(),
    };
    new.rounds(50);
    for n in &new.nodes {
        assert_eq!(
            keys_per_group(n),
            vec![3, 3],
            "a, b, h below m; q, r, z above"
        );
    }
    let all = new.call(2, Op::Range(all_keys())).expect("read");
    assert_eq!(keys_of(&all), ["a", "b", "h", "q", "r", "z"]);
    // The history came along too, each key at its own group's revisions: a (group [.., g))
    // and h (group [g, p)) are now one group's, each readable at the revision of its put.
    for k in ["a", "h"] {
        let past = Op::Range(synod_core::kv::RangeRequest {
            key: k.into(),
            revision: put_at[k],
            ..Default::default()
        });
        let then = new.call(0, past).expect("a read at the put's revision");
        assert_eq!(keys_of(&then), [k], "{k} at revision {}", put_at[k]);
    }
    let ttl = time_to_live(&mut new, 0, lease);
    assert_eq!(ttl.granted_ttl, 60);
    assert_eq!(
        ttl.keys,
        vec![b"b".to_vec(), b"r".to_vec()],
        "the lease's keys of both groups"
    );
    let put = new
        .call(1, Op::Put(PutRequest::new("c", "new")))
        .expect("put");
    assert!(
        put.revision > backup.revision,
        "{} after {}",
        put.revision,
        backup.revision
    );
}

#[test]
fn a_backup_refuses_while_a_group_waits_for_its_state() {
    let mut node = Node::recover(config(1, 0), Vec::new()).expect("boot");
    // A split-off group this member skipped: it starts without state and owns nothing
    // until a snapshot arrives, so its keys would be missing from the file.
    let child = CHILD_ID_BASE + 1;
    node.layout.split(b"x".to_vec(), child);
    let waiting = Group::recover(node.group_config(child), Vec::new()).expect("joiner");
    node.groups.insert(child, waiting);
    let err = node.backup_image().expect_err("a group without state");
    assert!(err.to_string().contains("no state on this member"), "{err}");
    let err = node.hash_kv(1).expect_err("a group without state");
    assert!(err.to_string().contains("no state on this member"), "{err}");
}

/// HashKV at `rev` on every member (hash, compaction), once every group there reached it.
fn hashes_at(net: &mut Net, rev: u64) -> Vec<(u32, u64)> {
    for _ in 0..200 {
        let all: Result<Vec<_>, _> = net.nodes.iter().map(|n| n.hash_kv(rev)).collect();
        match all {
            Ok(h) => {
                return h
                    .into_iter()
                    .map(|h| (h.hash, h.compact_revision))
                    .collect();
            }
            Err(EngineError::FutureRevision { .. }) => net.round(),
            Err(e) => panic!("HashKV at {rev}: {e}"),
        }
    }
    panic!("some group never reached revision {rev}");
}

#[test]
fn hash_kv_at_a_revision_is_the_same_on_every_member_whatever_the_layout() {
    let mut net = Net::new(0);
    net.rounds(50);
    for (i, k) in ["a", "h", "i", "q", "h", "z"].into_iter().enumerate() {
        net.put(i % 3, k, &format!("v{i}"));
    }
    net.call(1, delete("i")).expect("delete");
    let at = revision_of(
        &net.call(0, Op::Put(PutRequest::new("b", "last")))
            .expect("put"),
    );
    let before = hashes_at(&mut net, at);
    assert!(before.windows(2).all(|w| w[0] == w[1]), "{before:?}");
    // Writes after `at` change nothing at `at`; a split and a merge neither.
    net.put(2, "k", "later");
    net.call(0, split("l")).expect("split");
    net.rounds(20);
    assert_eq!(hashes_at(&mut net, at), before, "after a split at l");
    // A merge joins two histories from the later of their starts, which may raise the
    // compaction: then the hash covers less history — as etcd's, comparable only between
    // members at the same compaction (the corruption check compares only those).
    net.call(0, merge("l")).expect("merge");
    net.call(0, merge("p")).expect("merge");
    net.rounds(20);
    let merged = hashes_at(&mut net, at);
    assert!(merged.windows(2).all(|w| w[0] == w[1]), "{merged:?}");
    assert!(
        merged[0] == before[0] || merged[0].1 > before[0].1,
        "{merged:?} {before:?}"
    );
    // What was written after `at` shows at a later revision.
    let now = revision_of(
        &net.call(0, Op::Put(PutRequest::new("c", "now")))
            .expect("put"),
    );
    assert_ne!(hashes_at(&mut net, now)[0].0, merged[0].0);
    // Below a compaction: refused.
    net.call(
        0,
        Op::Compact(synod_core::kv::CompactRequest {
            revision: at,
            physical: false,
        }),
    )
    .expect("compact");
    net.rounds(10);
    let err = net.nodes[0].hash_kv(at - 1).expect_err("compacted");
    assert!(matches!(err, EngineError::Compacted { .. }), "{err}");
}

fn revision_of(r: &Response) -> u64 {
    r.revision
}
