//! The caspaxos engine (being written).
