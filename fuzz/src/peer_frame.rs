//! `peer_frame`: bytes a peer could send on a transport connection.
//!
//! The input is the connection's byte stream. It is cut into frames by the transport's own
//! [`read_frame`] (length prefix, `frame_bytes_max`) and every frame payload is decoded by
//! [`decode_payload`] as each thing that can arrive on a peer connection: the handshake
//! ([`Hello`], [`HelloReply`], peer questions and their answers inside them) and each engine's
//! message type, partitioned members' frames (every group's messages, relays) included. Whatever decodes must re-encode
//! with [`encode_frame`] and decode again to the same bytes: a value the transport accepts but
//! cannot send back intact would be a silent corruption between members.

use crate::{CasPaxosEngine, OmniPaxosEngine, PartitionedOmniPaxos, PartitionedVr, VrEngine};
use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_core::Engine;
use synod_node::config::TransportConfig;
use synod_node::transport::{Hello, HelloReply, decode_payload, encode_frame, read_frame};

/// The most frames one input is cut into: the stream reader is linear, this only bounds the
/// time of a run made of thousands of tiny frames.
const FRAMES_MAX: usize = 256;

pub fn run(data: &[u8]) {
    // The node's real bound, so a length prefix the node would believe is believed here too.
    let max = TransportConfig::default().frame_bytes_max;
    let mut stream = data;
    for _ in 0..FRAMES_MAX {
        // A `&[u8]` reader never pends, so blocking on it is immediate.
        let payload = match futures::executor::block_on(read_frame(&mut stream, max)) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        round_trip::<Hello>(&payload);
        round_trip::<HelloReply>(&payload);
        round_trip::<<OmniPaxosEngine as Engine>::Message>(&payload);
        round_trip::<<VrEngine as Engine>::Message>(&payload);
        round_trip::<<CasPaxosEngine as Engine>::Message>(&payload);
        round_trip::<<PartitionedOmniPaxos as Engine>::Message>(&payload);
        round_trip::<<PartitionedVr as Engine>::Message>(&payload);
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(payload: &[u8]) {
    let Ok(value) = decode_payload::<T>(payload) else {
        return;
    };
    let frame = encode_frame(&value, u32::MAX).expect("a decoded value re-encodes");
    let again = decode_payload::<T>(&frame[4..]).expect("a re-encoded value decodes");
    let frame_again = encode_frame(&again, u32::MAX).expect("a decoded value re-encodes");
    assert_eq!(frame, frame_again, "decode/encode is not stable");
}
