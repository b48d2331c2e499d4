//! The simulator draws from core's [`SplitMix64`], the one seeded generator every crate shares
//! (its stream is the one this module used to define, so recorded seeds replay unchanged). The
//! re-export only keeps the `synod_sim::rng` path; code in this crate names
//! `synod_core::SplitMix64` directly.

pub use synod_core::SplitMix64;
