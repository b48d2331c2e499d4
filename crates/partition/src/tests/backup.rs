//! Backups of a partitioned member, restored into another layout: every key, lease, revision
//! and the history come along, whatever the old and new split keys (see `backup.rs`).

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
    for k in ["a", "h", "q", "z"] {
        net.put(0, k, &format!("{k}-value"));
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
    // and h (group [g, p)) were each their group's first write, and are now one group's.
    for k in ["a", "h"] {
        let past = Op::Range(synod_core::kv::RangeRequest {
            key: k.into(),
            revision: 1,
            ..Default::default()
        });
        let at_one = new.call(0, past).expect("a read at revision 1");
        assert_eq!(keys_of(&at_one), [k], "{k} at revision 1");
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
}
