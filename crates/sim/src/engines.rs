//! The engines the simulator runs, by the names tests and the CLI use: a log protocol on the
//! replica layer, or CASPaxos on its own per-register path.

pub type OmniPaxosEngine = synod_replica::Replica<synod_omnipaxos::OmniPaxos>;
pub type VrEngine = synod_replica::Replica<synod_vr::Vr>;
pub type EPaxosEngine = synod_replica::Replica<synod_epaxos::EPaxos>;
pub type CasPaxosEngine = synod_caspaxos::CasPaxos;
