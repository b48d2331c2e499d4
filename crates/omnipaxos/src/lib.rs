//! The omnipaxos engine (being written).
