//! Inputs the `snapshot_chunk` fuzz target (fuzz/) found that crashed a VR replica, replayed
//! the way that target delivers them: member 2 of {1, 2, 3}, fresh at first boot, receiving
//! postcard-encoded replica messages from its peers and ticked after each one.

use synod_core::{Engine, EngineConfig, NodeId};
use synod_replica::Replica;
use synod_vr::{VIEW_MAX, Vr};

type Message = <Replica<Vr> as Engine>::Message;

fn replica() -> Replica<Vr> {
    let mut config = EngineConfig::new(2, vec![1, 2, 3], 0x5eed);
    config.first_boot = true;
    config.snapshot_entries = 4;
    Replica::<Vr>::recover(config, Vec::new()).expect("a fresh replica recovers")
}

/// Delivers `(from, message)`s, ticking after each, then ticks through several election
/// timeouts (where the crash happened) and drains the output as the node would.
fn deliver(replica: &mut Replica<Vr>, messages: Vec<(NodeId, Message)>) {
    for (from, m) in messages {
        replica.receive(from, m);
        replica.tick();
        let _ = replica.ready();
    }
    for _ in 0..100 {
        replica.tick();
        let _ = replica.ready();
    }
}

/// The fuzzer's input, minimised: flags 0x3a (VR, tick after each message), then from member
/// 1 a `Protocol(Prepare { view: u64::MAX, .. })` and a few more messages. (Re-encoded with
/// the epoch byte protocol messages carry since membership change.) The replica
/// adopted view u64::MAX, and at the next view-change timeout `next_view` computed
/// `view + 1`: an overflow panic (in release builds a wrap to view 0, a view going back).
const CRASH_VIEW_OVERFLOW: &[u8] = &[
    0x3a, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
];

/// Decodes an input of the fuzz target: `flags | (from u8, postcard message)…`, a byte that
/// is not a member id naming member `MEMBERS[byte % 3]`.
fn decode(input: &[u8]) -> Vec<(NodeId, Message)> {
    const MEMBERS: [NodeId; 3] = [1, 2, 3];
    let mut rest = &input[1..];
    let mut out = Vec::new();
    while let Some((&from, body)) = rest.split_first() {
        let Ok((m, tail)) = postcard::take_from_bytes::<Message>(body) else {
            break;
        };
        let from = NodeId::from(from);
        let from = if MEMBERS.contains(&from) {
            from
        } else {
            MEMBERS[(from % 3) as usize]
        };
        out.push((from, m));
        rest = tail;
    }
    out
}

#[test]
fn fuzz_regression_view_overflow_replayed() {
    let messages = decode(CRASH_VIEW_OVERFLOW);
    assert!(
        matches!(
            messages.first(),
            Some((
                1,
                Message::Protocol {
                    m: synod_vr::Message::Prepare { view: u64::MAX, .. },
                    ..
                }
            ))
        ),
        "the input still decodes as the crash it was"
    );
    let mut r = replica();
    deliver(&mut r, messages);
    assert!(r.status().term <= VIEW_MAX + 3, "{:?}", r.status());
}

#[test]
fn fuzz_regression_views_beyond_view_max_are_dropped() {
    for view in [VIEW_MAX + 1, u64::MAX - 1, u64::MAX] {
        let mut r = replica();
        let messages = vec![
            (
                1,
                Message::Protocol {
                    epoch: 0,
                    m: synod_vr::Message::Prepare {
                        view,
                        start: 0,
                        entries: Vec::new(),
                        commit: 0,
                    },
                },
            ),
            (
                3,
                Message::Protocol {
                    epoch: 0,
                    m: synod_vr::Message::StartViewChange {
                        view,
                        connected: true,
                        joined: vec![3],
                    },
                },
            ),
        ];
        deliver(&mut r, messages);
        assert!(r.status().term < VIEW_MAX, "view {view}: {:?}", r.status());
    }
    // VIEW_MAX itself is still a view: its changes stay far from overflowing.
    let mut r = replica();
    let at_max = Message::Protocol {
        epoch: 0,
        m: synod_vr::Message::StartViewChange {
            view: VIEW_MAX,
            connected: true,
            joined: vec![3],
        },
    };
    deliver(&mut r, vec![(3, at_max)]);
}
