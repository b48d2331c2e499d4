//! `synod sim --campaign` end to end on the toy engine (milliseconds per seed): the ledger
//! continues each cell where it stopped, totals accumulate, and a failing seed makes the exit
//! status 1 and is recorded in a cell of its own (the planted bug is part of the cell).

use synod_sim::campaign;
use synod_sim::ledger;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn temp_ledger(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synod-campaign-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("ledger.jsonl");
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn a_second_campaign_continues_after_the_first_and_totals_accumulate() {
    let path = temp_ledger("continue");
    let common = format!(
        "--campaign --profile short --engines toy --nodes 3,5 --threads 2 --allow-dirty --ledger {}",
        path.display()
    );
    assert_eq!(campaign::run_cli(&args(&format!("{common} --seeds 3"))), 0);
    assert_eq!(campaign::run_cli(&args(&format!("{common} --seeds 2"))), 0);
    let entries = ledger::read(&path).expect("the ledger reads back");
    for nodes in [3, 5] {
        let cell: Vec<_> = entries.iter().filter(|e| e.cell.nodes == nodes).collect();
        let ranges: Vec<_> = cell.iter().map(|e| (e.first_seed, e.end_seed)).collect();
        assert_eq!(ranges, vec![(0, 3), (3, 5)], "{nodes} nodes");
        let last = cell.last().expect("two entries");
        assert_eq!((last.cumulative_seeds, last.cumulative_failures), (5, 0));
        assert!(cell.iter().all(|e| e.agreement_checked == e.seeds));
        assert!(
            cell.iter()
                .all(|e| e.commit.ends_with("+dirty") || !e.commit.is_empty())
        );
    }
}

#[test]
fn a_failing_seed_fails_the_campaign_and_is_recorded() {
    let path = temp_ledger("failing");
    let line = format!(
        "--campaign --profile short --engines toy --nodes 3 --seeds 50 --threads 2 --allow-dirty --planted-bug stale-linearizable-read --faults partition,loss --ledger {}",
        path.display()
    );
    assert_eq!(campaign::run_cli(&args(&line)), 1);
    let entries = ledger::read(&path).expect("the ledger reads back");
    let failures: u64 = entries.iter().map(|e| e.failures).sum();
    assert!(failures > 0);
    assert!(
        entries
            .iter()
            .all(|e| e.cell.planted_bug.as_deref() == Some("stale-linearizable-read"))
    );
}

#[test]
fn a_campaign_needs_a_duration_or_a_seed_count() {
    assert_eq!(campaign::run_cli(&args("--campaign --engines toy")), 2);
}
