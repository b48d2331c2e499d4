//! The campaign ledger: one JSON object per line (JSON Lines), appended, never rewritten, so
//! that "0 failures over N seeds" is a sum anyone can redo from the file and a git diff of it
//! is only ever added lines.
//!
//! Each entry covers one contiguous seed range `[first_seed, end_seed)` of one *cell* — an
//! engine, a node count and one workload (profile name plus every parameter that changes what a
//! seed runs) — at one commit. A new campaign continues every cell from the highest `end_seed`
//! any entry of that cell holds, at any commit, so no seed is counted twice and the totals
//! grow only by seeds that were really run. `cumulative_seeds` / `cumulative_failures` are the
//! cell's totals over the whole ledger up to and including the entry.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The default ledger, next to the docs that quote it.
pub const LEDGER_DEFAULT: &str = "docs/sim-ledger.jsonl";

/// What one seed of a cell runs, apart from the seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub profile: String,
    pub engine: String,
    pub nodes: usize,
    /// `all` or the fault list, as `--faults` takes it.
    pub faults: String,
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: u64,
    pub sim_seconds: u64,
    pub snapshot_entries: u64,
    /// Only in campaigns that prove the harness (their failures are expected): never counts
    /// towards a correct engine's totals, since it makes a cell of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted_bug: Option<String>,
}

/// One appended line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// UTC, ISO 8601, when the entry was written.
    pub date: String,
    /// The commit the binary was built from (`synod_buildinfo::COMMIT`; the tree's HEAD for a
    /// build without one), `+dirty` if the tree had changes or was at another commit.
    pub commit: String,
    #[serde(flatten)]
    pub cell: CellSpec,
    pub first_seed: u64,
    pub end_seed: u64,
    pub seeds: u64,
    pub failures: u64,
    pub failed_seeds: Vec<u64>,
    /// Seeds whose replicas were compared (agreement), of `seeds`.
    pub agreement_checked: u64,
    pub ops_ok: u64,
    pub simulated_s: f64,
    /// Summed per-seed wall time (seconds of one thread), for the rate per core.
    pub seed_wall_s: f64,
    /// Worker threads of the campaign that wrote the entry, and the load it measured.
    pub threads: usize,
    pub load_avg_1m: Option<f64>,
    pub cumulative_seeds: u64,
    pub cumulative_failures: u64,
}

/// Every entry of the ledger at `path` (none if it does not exist yet).
pub fn read(path: &Path) -> Result<Vec<LedgerEntry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read ledger {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("ledger {} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Appends `entries`, one line each.
pub fn append(path: &Path, entries: &[LedgerEntry]) -> Result<(), String> {
    let mut text = String::new();
    for e in entries {
        let line = serde_json::to_string(e).map_err(|e| format!("ledger entry: {e}"))?;
        text += &line;
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open ledger {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot append to ledger {}: {e}", path.display()))
}

/// Where a cell continues: past the highest seed any entry of it covers.
pub fn next_seed(entries: &[LedgerEntry], cell: &CellSpec) -> u64 {
    entries
        .iter()
        .filter(|e| e.cell == *cell)
        .map(|e| e.end_seed)
        .max()
        .unwrap_or(0)
}

/// The cell's (seeds, failures) over the whole ledger.
pub fn totals(entries: &[LedgerEntry], cell: &CellSpec) -> (u64, u64) {
    entries
        .iter()
        .filter(|e| e.cell == *cell)
        .fold((0, 0), |(s, f), e| (s + e.seeds, f + e.failures))
}

/// The commit the tree at the current directory is at, and whether it has changes other than
/// in the ledger itself (the campaign writes that one).
pub fn git_commit(ledger: &Path) -> Result<(String, bool), String> {
    let head = git(&["rev-parse", "HEAD"])?;
    let root = git(&["rev-parse", "--show-toplevel"])?;
    let ledger_in_repo = repo_relative(Path::new(root.trim()), ledger);
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    // Porcelain v1: two status letters, a space, the path from the repository root.
    let dirty = status
        .lines()
        .any(|l| l.get(3..).map(Path::new) != ledger_in_repo.as_deref());
    Ok((head.trim().to_string(), dirty))
}

/// `path` relative to the repository `root`, if it lies inside it.
fn repo_relative(root: &Path, path: &Path) -> Option<std::path::PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let dir = std::fs::canonicalize(path.parent().filter(|p| !p.as_os_str().is_empty())?)
        .or_else(|_| std::fs::canonicalize("."))
        .ok()?;
    let full = dir.join(path.file_name()?);
    full.strip_prefix(&root).ok().map(Path::to_path_buf)
}

fn git(args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The 1-minute load average (Linux), to say how busy the machine was.
pub fn load_avg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (the era-based
/// days-to-civil conversion; no date crate for one timestamp).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(engine: &str) -> CellSpec {
        CellSpec {
            profile: "long".into(),
            engine: engine.into(),
            nodes: 3,
            faults: "all".into(),
            clients: 10,
            ops_per_client: 200,
            keys: 20,
            sim_seconds: 60,
            snapshot_entries: 0,
            planted_bug: None,
        }
    }

    fn entry(engine: &str, first: u64, end: u64, failures: u64) -> LedgerEntry {
        LedgerEntry {
            date: now_utc(),
            commit: "abc".into(),
            cell: cell(engine),
            first_seed: first,
            end_seed: end,
            seeds: end - first,
            failures,
            failed_seeds: Vec::new(),
            agreement_checked: end - first,
            ops_ok: 0,
            simulated_s: 0.0,
            seed_wall_s: 0.0,
            threads: 1,
            load_avg_1m: None,
            cumulative_seeds: 0,
            cumulative_failures: 0,
        }
    }

    #[test]
    fn cells_continue_past_their_own_highest_seed_only() {
        let dir = std::env::temp_dir().join(format!("synod-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        assert!(
            read(&path)
                .expect("missing ledger reads as empty")
                .is_empty()
        );
        append(&path, &[entry("vr", 0, 100, 0), entry("vr", 100, 250, 1)]).expect("append");
        append(&path, &[entry("omnipaxos", 0, 40, 0)]).expect("append");
        let all = read(&path).expect("read back");
        assert_eq!(all.len(), 3);
        assert_eq!(next_seed(&all, &cell("vr")), 250);
        assert_eq!(next_seed(&all, &cell("caspaxos")), 0);
        assert_eq!(totals(&all, &cell("vr")), (250, 1));
        let mut other = cell("vr");
        other.keys = 21;
        assert_eq!(
            next_seed(&all, &other),
            0,
            "another workload is another cell"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
