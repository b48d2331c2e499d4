//! Range reads over several groups are one cut of every group at one revision (`gather.rs`):
//! the reply's revision `H` covers every write at or below it and no later write gets `H` or
//! less — what a client that lists and then watches from `H + 1` relies on.

use super::*;

/// A net whose groups stand at different revisions, closes off: group [.., g) at 4 (`a`
/// written four times, at 1 to 4), [g, p) at 1 (`h`), [p, ..) at 1 (`q`).
fn uneven(bug: Option<PlantedBug>) -> Net {
    let mut net = Net::new(0);
    for (i, n) in net.nodes.iter_mut().enumerate() {
        let mut c = config(i as u64 + 1, 0);
        c.planted_bug = bug;
        *n = Node::recover(c, Vec::new()).expect("boot");
        n.closing.off = true;
    }
    net.rounds(50);
    net.put(2, "q", "1");
    net.put(1, "h", "1");
    for v in ["1", "2", "3", "4"] {
        net.put(0, "a", v);
    }
    net
}

/// Reads every key at node `at` as `consistency`, at `revision` (0: latest); closes are
/// switched on once it is submitted if `close`.
fn list(
    net: &mut Net,
    at: usize,
    consistency: Consistency,
    revision: u64,
    close: bool,
) -> Result<Response, EngineError> {
    let op = Op::Range(RangeRequest {
        revision,
        ..all_keys()
    });
    let id = net.submit(at, op, consistency);
    for n in &mut net.nodes {
        n.closing.off = !close;
    }
    net.wait(id)
}

/// `(key, value, mod revision)` of a range answer.
fn entries(r: &Response) -> Vec<(String, String, u64)> {
    let ResponseBody::Range(body) = &r.body else {
        panic!("not a range answer: {r:?}");
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    body.kvs
        .iter()
        .map(|kv| (text(&kv.key), text(&kv.value), kv.mod_revision))
        .collect()
}

/// Lists every key, then writes one key in each group: whether every write came after the
/// list's revision (what a watch from `H + 1` needs).
fn list_then_write(bug: Option<PlantedBug>) -> (Response, Vec<u64>) {
    let mut net = uneven(bug);
    // With the planted bug the groups behind never need a close to be answered: they stay
    // behind, as they may for a round in a real cluster.
    let listed = list(&mut net, 1, Consistency::Linearizable, 0, bug.is_none()).expect("list");
    let writes = ["b", "i", "r"].map(|k| {
        let put = net.call(0, Op::Put(PutRequest::new(k, "after")));
        put.expect("put").revision
    });
    (listed, writes.to_vec())
}

#[test]
fn a_list_over_groups_is_every_group_at_its_revision_and_later_writes_come_after_it() {
    let (listed, writes) = list_then_write(None);
    assert_eq!(listed.revision, 4, "the largest group's revision");
    assert_eq!(
        entries(&listed),
        [
            ("a".into(), "4".into(), 4),
            ("h".into(), "1".into(), 1),
            ("q".into(), "1".into(), 1)
        ]
    );
    assert!(
        writes.iter().all(|&w| w > listed.revision),
        "writes after the list got {writes:?}, the list said {}",
        listed.revision
    );
}

#[test]
fn planted_unaligned_list_lets_a_later_write_fall_below_its_revision() {
    let (listed, writes) = list_then_write(Some(PlantedBug::PartitionSpanReadUnaligned));
    assert_eq!(listed.revision, 4);
    assert!(
        writes.iter().any(|&w| w <= listed.revision),
        "the check must catch the planted bug: writes {writes:?}, list at {}",
        listed.revision
    );
}

#[test]
fn a_serializable_list_reads_every_group_at_the_lowest_revision_at_once() {
    let mut net = uneven(None);
    // Closes stay off: no group needs to move for this one.
    let listed = list(&mut net, 2, Consistency::Sequential, 0, false).expect("list");
    assert_eq!(listed.revision, 1);
    assert_eq!(
        entries(&listed),
        [
            ("a".into(), "1".into(), 1),
            ("h".into(), "1".into(), 1),
            ("q".into(), "1".into(), 1)
        ],
        "every group as it was at revision 1: a's first value"
    );
}

#[test]
fn a_read_at_a_revision_over_groups_waits_for_the_groups_behind_to_close_it() {
    let mut net = uneven(None);
    let at3 = list(&mut net, 0, Consistency::Linearizable, 3, true).expect("read at 3");
    assert_eq!(
        entries(&at3),
        [
            ("a".into(), "3".into(), 3),
            ("h".into(), "1".into(), 1),
            ("q".into(), "1".into(), 1)
        ]
    );
    assert_eq!(
        at3.revision, 4,
        "the header is the store's current revision"
    );
    let beyond = list(&mut net, 0, Consistency::Linearizable, 50, true);
    assert!(
        matches!(beyond, Err(EngineError::FutureRevision { .. })),
        "{beyond:?}"
    );
}

#[test]
fn a_part_that_fails_answers_the_read_once_and_no_other_part_reaches_the_client() {
    let mut net = uneven(None);
    // Group [.., g) compacts to 3; the others, at 1, have not reached it and are left alone.
    let compact = Op::Compact(synod_core::kv::CompactRequest {
        revision: 3,
        physical: false,
    });
    net.call(0, compact).expect("compacted");
    let failed = list(&mut net, 0, Consistency::Linearizable, 2, false);
    assert_eq!(
        failed,
        Err(EngineError::Compacted {
            compact_revision: 3
        })
    );
    net.rounds(100);
    let stray: Vec<&ClientReply> = net
        .replies
        .iter()
        .filter(|r| r.id.client == ClientId(99))
        .collect();
    assert!(
        stray.is_empty(),
        "a part's answer reached the client: {stray:?}"
    );
}
