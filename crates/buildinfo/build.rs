//! Reads the commit the source tree is at (`git rev-parse HEAD`) into `SYNOD_COMMIT`, so that a
//! binary can say which code it is — a ledger or a benchmark naming the tree's HEAD instead
//! would name the wrong code whenever the binary is older than the tree. Outside a git
//! checkout (a source tarball) it is "unknown". Runs again when HEAD moves (a commit, a
//! checkout), not on every source change: whether the tree had uncommitted changes when built
//! is not recorded here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&here, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SYNOD_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(dir) = git(&here, &["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        // HEAD names the branch; the branch's ref file (or packed-refs) moves on a commit.
        // Only files that exist: cargo runs a script again every build while one it watches
        // is missing.
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(head) = git(&here, &["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(head));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
