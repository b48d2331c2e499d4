//! Unit tests of the EPaxos protocol driven through the replica layer in memory.
