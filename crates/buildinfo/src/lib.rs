//! The commit this build of Synod came from (see `build.rs`): `synod --version`, the
//! simulator's ledger and the benchmarks name it.

/// The full commit hash, or "unknown" outside a git checkout.
pub const COMMIT: &str = env!("SYNOD_COMMIT");

/// The commit's first 12 hex digits (or "unknown").
pub fn short() -> &'static str {
    COMMIT.get(..12).unwrap_or(COMMIT)
}

/// `0.1.0 (commit 0123456789ab)`: the package version and the commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SYNOD_COMMIT"),
    ")"
);

#[cfg(test)]
mod tests {
    #[test]
    fn names_a_commit_or_says_unknown() {
        let c = super::COMMIT;
        assert!(
            c == "unknown" || (c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())),
            "{c}"
        );
        assert!(super::VERSION.contains(c));
        assert!(c.starts_with(super::short()));
    }
}
