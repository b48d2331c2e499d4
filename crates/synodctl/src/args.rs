//! Command-line and REPL grammar: the clap definitions, the vstamp-style REPL aliases
//! (`GET`/`SET`/`DEL`/`SIZE`/`QUIT`) and the shell-like word splitter the REPL uses so that
//! values may contain spaces.
//!
//! One-shot commands and REPL lines share [`Command`], so a command behaves the same whether
//! it was typed at the shell or at the `synodctl>` prompt.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Where synodctl looks when neither `--endpoints` nor `SYNODCTL_ENDPOINTS` is given: node 1's
/// HTTP port under `synod dev`.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7001";

/// Longest a REPL line may be; a guard against pasting a file by mistake (values larger than
/// this belong in a one-shot `put`).
pub const REPL_LINE_BYTES_MAX: usize = 64 * 1024;

#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "synodctl",
    version,
    about = "Command-line client for Synod's HTTP/JSON API. Without a command, starts a REPL.",
    after_help = "Exit codes: 0 ok, 1 error reported by the server, 2 usage, 3 no endpoint reachable."
)]
pub struct Cli {
    /// Comma-separated HTTP endpoints (host:port or http://host:port), tried in order: on a
    /// connection error, a timeout or a 503 the next one is tried.
    #[arg(
        long,
        env = "SYNODCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT,
        global = true
    )]
    pub endpoints: Vec<String>,

    /// TLS: trust only this PEM CA bundle for the servers (etcdctl's flag). Any of --cacert,
    /// --cert, --key makes endpoints without a scheme https://.
    #[arg(
        long = "cacert",
        id = "tls_cacert",
        env = "SYNODCTL_CACERT",
        global = true
    )]
    pub cacert: Option<PathBuf>,

    /// TLS: present this PEM client certificate (with --key).
    #[arg(long = "cert", id = "tls_cert", env = "SYNODCTL_CERT", global = true)]
    pub cert: Option<PathBuf>,

    /// TLS: the PEM private key of --cert. (Each TLS flag has an id of its own: a global
    /// `key` would collide with the commands' KEY arguments.)
    #[arg(long = "key", id = "tls_key", env = "SYNODCTL_KEY", global = true)]
    pub key: Option<PathBuf>,

    /// Auth: `name:password` (etcdctl's flag). synodctl authenticates at each endpoint it
    /// talks to (tokens are member-local) and sends the token as `Authorization`.
    #[arg(long, env = "SYNODCTL_USER", global = true)]
    pub user: Option<String>,

    /// Time allowed for one request to one endpoint (e.g. 5s, 500ms, 2).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Simple, global = true)]
    pub write_out: Format,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Output formats, named like etcdctl's `-w`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable; `get` prints the key then the value on two lines.
    Simple,
    /// The server's JSON answer, one document per line.
    Json,
    /// Aligned columns for key lists, status and members.
    Table,
}

/// Read consistency, sent as the `consistency` query parameter.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (the default).
    #[default]
    Linearizable,
    /// Served from the answering node's state; may be stale, never goes back in time on one node.
    Sequential,
}

impl Consistency {
    pub fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Sequential => "sequential",
        }
    }
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Read KEY, or every key starting with KEY (--prefix), or the range [KEY, RANGE_END).
    Get(GetArgs),
    /// Delete KEY.
    Del { key: String },
    /// Compare-and-swap: write (or delete) KEY only if the expectation holds.
    Cas(CasArgs),
    /// Drop the history below REVISION: reads and watches before it then fail with
    /// `compacted`.
    Compact {
        revision: u64,
        /// Accepted for etcdctl compatibility; every Synod compaction is complete when applied.
        #[arg(long)]
        physical: bool,
    },
    /// Print changes to KEY, a prefix or [KEY, RANGE_END) as they happen, until interrupted.
    Watch(WatchArgs),
    /// Count keys starting with PREFIX (all keys when omitted).
    Count {
        prefix: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        consistency: Consistency,
    },
    /// Show the status of the answering node (or of every endpoint with --all).
    Status {
        /// Ask every endpoint, one row each, instead of the first that answers.
        #[arg(long)]
        all: bool,
    },
    /// List the cluster's members (the same as `member list`).
    Members,
    /// Change the cluster's members: list, add, remove, promote, update (etcd's
    /// `etcdctl member …`; ids in decimal, or hex with 0x as etcdctl prints them).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Hand leadership to member ID (etcd's `move-leader`; decimal, or hex with 0x): finds
    /// the leader through the endpoints' status and asks it; returns once ID leads.
    MoveLeader {
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Take the lock NAME (etcd's Lock service, over the member's gRPC port), run COMMAND
    /// while holding it — with SYNOD_LOCK_KEY, SYNOD_LOCK_REVISION (the fencing token) and
    /// SYNOD_LOCK_LEASE set — then release it and exit with COMMAND's status. Without a
    /// COMMAND, print the key and hold the lock until Ctrl-C. One-shot only.
    Lock(LockArgs),
    /// Back up the answering member (`snapshot save FILE`) or check a backup file and print
    /// what it holds (`snapshot status FILE`); `synod restore` makes a new cluster of one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Campaign in the election NAME with VALUE and hold the leadership until Ctrl-C; with
    /// --listen, print each leader (key, then value) as it changes. One-shot only.
    Elect(ElectArgs),
    /// The key ranges of a partitioned cluster: `range list` shows each range's group, keys,
    /// members and leader, as the answering member sees them; `range split KEY` cuts the
    /// range holding KEY in two there; `range merge KEY` joins the range beginning at KEY to
    /// the one below.
    #[command(subcommand)]
    Range(RangeCommand),
}

/// `synodctl range …`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum RangeCommand {
    /// One row per range (one row for an unpartitioned cluster).
    List,
    /// Split the range holding KEY at KEY: the keys from KEY on move to a new group on the
    /// same members (partitioned clusters). A KEY inside a `/`-directory whose keys on both
    /// sides hold leases (a lock's or an election's contenders) is refused unless --force.
    Split {
        key: String,
        /// Split even inside a directory of leased keys.
        #[arg(long)]
        force: bool,
    },
    /// Merge the range beginning at KEY into the range below it: the group that held it
    /// stops, and the group below takes over its keys (partitioned clusters).
    Merge { key: String },
    /// Move the replica of the group holding KEY from member FROM to member TO: TO joins the
    /// group as a learner, is promoted once in sync, then FROM leaves it (clusters with
    /// placement, `[partition] replicas`). Asked again, an unfinished move goes on.
    Move {
        key: String,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
}

/// `synodctl snapshot …`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum SnapshotCommand {
    /// Download a backup of the answering member's state into FILE (verified first).
    Save { file: std::path::PathBuf },
    /// Verify FILE and print its checksum, revision, keys and size (etcdctl's columns).
    Status { file: std::path::PathBuf },
}

/// `synodctl member …`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum MemberCommand {
    /// List the members of the configuration the answering member applied.
    List,
    /// Add a member; then start it with `synod server --join`. Add it as a learner, let it
    /// catch up, then promote it.
    Add {
        name: String,
        /// host:port (or http://host:port) other members dial.
        #[arg(long)]
        peer_addr: String,
        /// host:port of its HTTP API (it publishes it itself when it starts).
        #[arg(long, default_value = "")]
        http_addr: String,
        /// host:port of its etcd gRPC API (it publishes it itself when it starts).
        #[arg(long, default_value = "")]
        grpc_addr: String,
        /// Add it as a learner (receives the log, does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove the member ID.
    Remove {
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Make the learner ID a voter (refused until it caught up with the leader).
    Promote {
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Change the member ID's name or addresses (what is not given stays).
    Update {
        #[arg(value_parser = parse_member_id)]
        id: u64,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        peer_addr: String,
        #[arg(long, default_value = "")]
        http_addr: String,
        #[arg(long, default_value = "")]
        grpc_addr: String,
    },
}

/// A member id: decimal, or hex with `0x` (etcdctl prints ids in hex).
pub fn parse_member_id(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match parsed {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "{s:?} is not a member id (decimal, or hex with 0x)"
        )),
    }
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct LockArgs {
    pub name: String,
    /// TTL of the lock's lease, seconds: how long the lock outlives a synodctl that stops
    /// renewing it (killed, paused, cut off).
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// The command to run while holding the lock (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ElectArgs {
    pub name: String,
    /// What the leader announces (required unless --listen).
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
    /// Observe the election instead of campaigning.
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// TTL of the candidate's lease, seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct GetArgs {
    pub key: String,
    /// Exclusive end of a range read [KEY, RANGE_END).
    #[arg(conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Treat KEY as a prefix ("" = all keys).
    #[arg(long)]
    pub prefix: bool,
    /// At most N keys (0 = no limit).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    #[arg(long, value_enum, default_value_t)]
    pub consistency: Consistency,
    /// Read as of this store revision (0 = now).
    #[arg(long, default_value_t = 0)]
    pub rev: u64,
    /// Sort a prefix or range by this (ascending unless --order desc).
    #[arg(long, value_enum, ignore_case = true)]
    pub sort_by: Option<SortBy>,
    /// Order of a prefix or range (default: by key, ascending).
    #[arg(long, value_enum, ignore_case = true)]
    pub order: Option<Order>,
    /// Only keys last modified at or after this revision (prefix or range).
    #[arg(long)]
    pub min_mod_revision: Option<u64>,
    /// Only keys last modified at or before this revision (prefix or range).
    #[arg(long)]
    pub max_mod_revision: Option<u64>,
    /// Only keys created at or after this revision (prefix or range).
    #[arg(long)]
    pub min_create_revision: Option<u64>,
    /// Only keys created at or before this revision (prefix or range).
    #[arg(long)]
    pub max_create_revision: Option<u64>,
}

impl GetArgs {
    /// Whether this is a scan (answered by `GET /v1/kv?...`) rather than a single-key read.
    pub fn is_range(&self) -> bool {
        self.prefix || self.range_end.is_some()
    }

    /// The list query parameters for sorting and revision filters (only a scan takes them).
    pub fn list_options(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(by) = self.sort_by {
            q.push(("sort_target", by.as_query().to_string()));
        }
        if let Some(order) = self.order {
            q.push(("sort_order", order.as_query().to_string()));
        }
        let bounds = [
            ("min_mod_revision", self.min_mod_revision),
            ("max_mod_revision", self.max_mod_revision),
            ("min_create_revision", self.min_create_revision),
            ("max_create_revision", self.max_create_revision),
        ];
        for (name, bound) in bounds {
            if let Some(b) = bound {
                q.push((name, b.to_string()));
            }
        }
        q
    }
}

/// What `get --sort-by` sorts on (etcdctl's names).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Key,
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    #[value(alias = "modify")]
    Mod,
    Value,
}

impl SortBy {
    pub fn as_query(self) -> &'static str {
        match self {
            SortBy::Key => "key",
            SortBy::Version => "version",
            SortBy::Create => "create",
            SortBy::Mod => "mod",
            SortBy::Value => "value",
        }
    }
}

/// `get --order`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    #[value(alias = "ascend")]
    Asc,
    #[value(alias = "descend")]
    Desc,
}

impl Order {
    pub fn as_query(self) -> &'static str {
        match self {
            Order::Asc => "ascend",
            Order::Desc => "descend",
        }
    }
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct WatchArgs {
    pub key: String,
    /// Exclusive end of a range watch [KEY, RANGE_END).
    #[arg(conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Treat KEY as a prefix ("" = every key).
    #[arg(long)]
    pub prefix: bool,
    /// Start at this revision (replaying the history since); 0 = from now on.
    #[arg(long, default_value_t = 0)]
    pub rev: u64,
    /// Also print each key as it was before the change.
    #[arg(long)]
    pub prev_kv: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
#[command(group = clap::ArgGroup::new("expect").required(true).multiple(false))]
#[command(group = clap::ArgGroup::new("then").required(true).multiple(false))]
pub struct CasArgs {
    pub key: String,
    /// Succeed only if the key's version is N (version 0 never matches; use --expect-absent).
    #[arg(long, group = "expect")]
    pub expect_version: Option<u64>,
    /// Succeed only if the key's value is V.
    #[arg(long, group = "expect")]
    pub expect_value: Option<String>,
    /// Succeed only if the key does not exist.
    #[arg(long, group = "expect")]
    pub expect_absent: bool,
    /// New value to write when the expectation holds.
    #[arg(long, group = "then")]
    pub value: Option<String>,
    /// Delete the key when the expectation holds. Required instead of --value (rather than
    /// "no --value means delete") so that a forgotten flag never deletes data.
    #[arg(long, group = "then")]
    pub delete: bool,
}

/// One REPL line, after alias rewriting and word splitting.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    disable_help_subcommand = true,
    help_template = "{subcommands}"
)]
pub struct ReplLine {
    #[command(subcommand)]
    pub command: ReplCommand,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum ReplCommand {
    #[command(flatten)]
    Kv(Command),
    /// Print this message.
    Help,
    /// Leave the REPL.
    Quit,
}

/// Rewrites the vstamp CLI's commands to ours (`GET k` → `get k`, `SET k v` → `put k v`,
/// `DEL k` → `del k`, `SIZE` → `count`, `QUIT`/`exit` → `quit`). Command names are
/// case-insensitive; arguments are left untouched (keys and values are case-sensitive).
pub fn rewrite_alias(mut words: Vec<String>) -> Vec<String> {
    if let Some(first) = words.first_mut() {
        let lower = first.to_ascii_lowercase();
        *first = match lower.as_str() {
            "set" => "put".to_string(),
            "size" => "count".to_string(),
            "exit" | "q" => "quit".to_string(),
            "delete" | "rm" => "del".to_string(),
            _ => lower,
        };
    }
    words
}

/// Parses one REPL line. `Ok(None)` for a blank line or a `#` comment.
pub fn parse_repl_line(line: &str) -> Result<Option<ReplCommand>, String> {
    if line.len() > REPL_LINE_BYTES_MAX {
        return Err(format!(
            "line too long: {} bytes, at most {REPL_LINE_BYTES_MAX}",
            line.len()
        ));
    }
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let words = rewrite_alias(split_words(trimmed)?);
    ReplLine::try_parse_from(words)
        .map(|l| Some(l.command))
        .map_err(|e| {
            let text = e.render().to_string();
            // The caller prefixes "Error: "; clap's own "error: " would say it twice.
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            text.trim_end().to_string()
        })
}

/// Splits a line into words like a POSIX shell does, minus expansions: whitespace separates,
/// `'…'` is literal, `"…"` allows `\"` and `\\`, and a backslash outside quotes escapes the next
/// character. `''` yields an empty word (how to type an empty value or prefix).
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Distinguishes "no word yet" from "an empty quoted word".
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses `5s`, `500ms`, `2m` or a bare number of seconds (`2`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1_000.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 5s, 500ms, 2m, 3)"))?;
    let ms = value * unit_ms;
    if !ms.is_finite() || ms < 1.0 {
        return Err(format!("duration {s:?} must be at least 1ms"));
    }
    Ok(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("synodctl").chain(args.iter().copied()))
    }

    fn repl(line: &str) -> ReplCommand {
        match parse_repl_line(line) {
            Ok(Some(c)) => c,
            other => panic!("{line:?} parsed to {other:?}"),
        }
    }

    #[test]
    fn endpoints_split_on_commas_and_flags_are_global() {
        let c = cli(&[
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "-w",
            "json",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(c.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(c.write_out, Format::Json);
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn get_flags() {
        let c = cli(&[
            "get",
            "pre",
            "--prefix",
            "--limit",
            "3",
            "--keys-only",
            "--consistency",
            "sequential",
        ])
        .unwrap();
        let Some(Command::Get(g)) = c.command else {
            panic!("not a get: {c:?}")
        };
        assert!(g.prefix && g.keys_only && g.is_range());
        assert_eq!(g.limit, Some(3));
        assert_eq!(g.consistency, Consistency::Sequential);
        assert!(
            cli(&["get", "a", "z", "--prefix"]).is_err(),
            "range end and prefix conflict"
        );
    }

    #[test]
    fn history_flags() {
        let c = cli(&[
            "get",
            "p",
            "--prefix",
            "--rev",
            "4",
            "--sort-by",
            "MODIFY",
            "--order",
            "desc",
            "--min-create-revision",
            "2",
        ])
        .unwrap();
        let Some(Command::Get(g)) = c.command else {
            panic!("not a get: {c:?}")
        };
        assert_eq!(g.rev, 4);
        assert_eq!(
            g.list_options(),
            vec![
                ("sort_target", "mod".to_string()),
                ("sort_order", "descend".to_string()),
                ("min_create_revision", "2".to_string()),
            ]
        );
        assert!(cli(&["get", "p", "--sort-by", "size"]).is_err());
        assert_eq!(
            cli(&["compact", "7", "--physical"]).unwrap().command,
            Some(Command::Compact {
                revision: 7,
                physical: true
            })
        );
        assert!(cli(&["compact"]).is_err(), "needs a revision");
        let c = cli(&["watch", "k", "--prefix", "--rev", "3", "--prev-kv"]).unwrap();
        let Some(Command::Watch(w)) = c.command else {
            panic!("not a watch: {c:?}")
        };
        assert!(w.prefix && w.prev_kv && w.rev == 3);
        assert!(cli(&["watch", "a", "z", "--prefix"]).is_err());
    }

    #[test]
    fn cas_needs_exactly_one_expectation_and_one_outcome() {
        assert!(cli(&["cas", "k", "--expect-version", "3", "--value", "v"]).is_ok());
        assert!(cli(&["cas", "k", "--expect-absent", "--delete"]).is_ok());
        assert!(
            cli(&["cas", "k", "--value", "v"]).is_err(),
            "no expectation"
        );
        assert!(cli(&["cas", "k", "--expect-absent"]).is_err(), "no outcome");
        let both = cli(&[
            "cas",
            "k",
            "--expect-absent",
            "--expect-value",
            "x",
            "--value",
            "v",
        ]);
        assert!(both.is_err(), "two expectations");
        let both = cli(&["cas", "k", "--expect-absent", "--value", "v", "--delete"]);
        assert!(both.is_err(), "two outcomes");
        let e = cli(&["cas", "k", "--value", "v"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "usage errors exit 2");
    }

    #[test]
    fn vstamp_aliases() {
        assert_eq!(
            repl("SET a 1"),
            ReplCommand::Kv(Command::Put {
                key: "a".into(),
                value: "1".into()
            })
        );
        assert!(
            matches!(repl("GET a"), ReplCommand::Kv(Command::Get(g)) if g.key == "a" && !g.is_range())
        );
        assert_eq!(
            repl("DEL a"),
            ReplCommand::Kv(Command::Del { key: "a".into() })
        );
        assert!(matches!(
            repl("SIZE"),
            ReplCommand::Kv(Command::Count { prefix: None, .. })
        ));
        assert_eq!(repl("QUIT"), ReplCommand::Quit);
        assert_eq!(repl("exit"), ReplCommand::Quit);
        assert_eq!(repl("help"), ReplCommand::Help);
        // Only the command word is case-folded; keys keep their case.
        assert_eq!(
            repl("Del MyKey"),
            ReplCommand::Kv(Command::Del {
                key: "MyKey".into()
            })
        );
    }

    #[test]
    fn repl_blank_comment_and_errors() {
        assert_eq!(parse_repl_line("   "), Ok(None));
        assert_eq!(parse_repl_line("# note"), Ok(None));
        let unknown = parse_repl_line("frobnicate").unwrap_err();
        assert!(
            unknown.starts_with("unrecognized subcommand 'frobnicate'"),
            "{unknown}"
        );
        assert!(parse_repl_line("SET a").is_err(), "missing value");
        assert!(parse_repl_line("SET a 'unterminated").is_err());
        assert!(parse_repl_line(&"x".repeat(REPL_LINE_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn values_with_spaces_by_quoting() {
        assert_eq!(
            repl(r#"SET greeting "hello world""#),
            ReplCommand::Kv(Command::Put {
                key: "greeting".into(),
                value: "hello world".into()
            })
        );
        assert_eq!(
            split_words(r#"a 'b c' "d \"e\" \\ \n" f\ g '' x"#).unwrap(),
            vec!["a", "b c", r#"d "e" \ \n"#, "f g", "", "x"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_words("it's").unwrap_err(),
            "unterminated single quote"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
