//! `synodctl`: Synod's command-line client over the HTTP/JSON API.
//!
//! With a command (`put`, `get`, `del`, `cas`, `compact`, `watch`, `count`, `status`,
//! `members`, and the gRPC-based `lock` and `elect` of `coord.rs`) it runs it once and exits 0 (ok), 1 (the server reported an error), 2 (usage) or
//! 3 (no endpoint reachable). Without one it starts a REPL (see `repl.rs`). This file maps
//! each [`Command`] to its API request and its output formatter; the transport is
//! `client.rs`, the text is `output.rs`, the streaming `watch` is `watch.rs`.

mod args;
mod client;
mod coord;
mod output;
mod repl;
mod snapshot;
mod watch;

use args::{Cli, Command, Format, GetArgs, MemberCommand};
use clap::Parser;
use client::{Answer, Client, CtlError, Request, kv_path};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that exit 0 and print to stdout.
            let _ = e.print();
            return exit(e.exit_code());
        }
    };
    let tls = client::Tls {
        cacert: cli.cacert.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    let client = Client::with_tls(&cli.endpoints, cli.timeout, tls).and_then(|c| match &cli.user {
        Some(user) => c.with_user(user),
        None => Ok(c),
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", output::error(&e));
            return exit(e.exit_code());
        }
    };
    let code = match &cli.command {
        None => repl::run(&mut client, cli.write_out),
        Some(Command::Lock(l)) => coord::lock(&mut client, l, cli.timeout),
        Some(Command::Elect(e)) => coord::elect(&mut client, e, cli.timeout),
        Some(cmd) => {
            let mut stdout = std::io::stdout().lock();
            let result = run_command(&mut client, cli.write_out, cmd, &mut stdout);
            let _ = stdout.flush();
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{}", output::error(&e));
                    e.exit_code()
                }
            }
        }
    };
    exit(code)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs one command, writing its output (if it succeeded) to `out`. The error, if any, is for
/// the caller to print to stderr and turn into an exit code.
pub fn run_command(
    client: &mut Client,
    format: Format,
    cmd: &Command,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    match cmd {
        Command::Put { key, value } => {
            let req = Request::new(Method::PUT, kv_path(key, "")?).body(json!({ "value": value }));
            let a = client.send(&req)?;
            emit(out, output::put(format, &a.body));
        }
        Command::Get(g) if !g.is_range() => {
            if !g.list_options().is_empty() {
                return Err(CtlError::Usage(
                    "sorting and revision filters need --prefix or a RANGE_END".into(),
                ));
            }
            let mut req = Request::new(Method::GET, kv_path(&g.key, "")?)
                .query("consistency", g.consistency.as_query());
            if g.rev > 0 {
                req = req.query("revision", g.rev.to_string());
            }
            let a = client.send(&req)?;
            emit(out, output::get_one(format, &a.body, g.keys_only));
        }
        Command::Get(g) => {
            let a = client.send(&list_request(g))?;
            emit(out, output::get_many(format, &a.body, g.keys_only));
        }
        Command::Del { key } => {
            let a = client.send(&Request::new(Method::DELETE, kv_path(key, "")?))?;
            emit(out, output::del(format, &a.body));
        }
        Command::Cas(c) => {
            let expect = if let Some(v) = c.expect_version {
                json!({ "version": v })
            } else if let Some(v) = &c.expect_value {
                json!({ "value": v })
            } else {
                // clap's "expect" group guarantees exactly one of the three.
                debug_assert!(c.expect_absent);
                json!("absent")
            };
            let value = match (&c.value, c.delete) {
                (Some(v), false) => json!(v),
                (None, true) => Value::Null,
                _ => unreachable!("clap's \"then\" group requires exactly one of --value/--delete"),
            };
            let req = Request::new(Method::POST, kv_path(&c.key, "/cas")?)
                .body(json!({ "expect": expect, "value": value }));
            let a = client.send(&req)?;
            check_cas(&a)?;
            emit(out, output::cas(format, &a.body));
        }
        Command::Compact { revision, physical } => {
            let req = Request::new(Method::POST, "/v1/compact".into())
                .body(json!({ "revision": revision, "physical": physical }));
            let a = client.send(&req)?;
            emit(out, output::compact(format, &a.body));
        }
        Command::Watch(w) => watch::run(client, format, w, out)?,
        Command::Count {
            prefix,
            consistency,
        } => {
            let req = Request::new(Method::GET, "/v1/kv".into())
                .query("prefix", prefix.clone().unwrap_or_default())
                .query("count_only", "true")
                .query("consistency", consistency.as_query());
            let a = client.send(&req)?;
            emit(out, output::count(format, &a.body));
        }
        Command::Status { all: false } => {
            let a = client.send(&Request::new(Method::GET, "/v1/status".into()))?;
            emit(out, output::status(format, &[(a.endpoint, a.body)]));
        }
        Command::Status { all: true } => status_all(client, format, out)?,
        Command::Range(args::RangeCommand::List) => {
            let a = client.send(&Request::new(Method::GET, "/v1/status".into()))?;
            emit(out, output::ranges(format, &a.body));
        }
        Command::Range(args::RangeCommand::Split { key, force }) => {
            let body = json!({ "key": key, "force": force });
            let req = Request::new(Method::POST, "/v1/ranges/split".into()).body(body);
            match layout_change(client, &req, "does not cut")? {
                Ok(a) => emit(out, output::range_split(format, &a.body)),
                Err(endpoint) => emit(out, output::range_already(format, key, true, &endpoint)),
            }
        }
        Command::Range(args::RangeCommand::Merge { key }) => {
            let req =
                Request::new(Method::POST, "/v1/ranges/merge".into()).body(json!({ "key": key }));
            match layout_change(client, &req, "does not begin a range")? {
                Ok(a) => emit(out, output::range_merge(format, &a.body)),
                Err(endpoint) => emit(out, output::range_already(format, key, false, &endpoint)),
            }
        }
        Command::Range(args::RangeCommand::Move { key, from, to }) => {
            let body = json!({ "key": key, "from": from, "to": to });
            let req = Request::new(Method::POST, "/v1/ranges/move".into()).body(body);
            let a = client.send(&req)?;
            emit(out, output::range_move(format, key, &a.body));
        }
        Command::Members | Command::Member(MemberCommand::List) => {
            let a = client.send(&Request::new(Method::GET, "/v1/members".into()))?;
            emit(out, output::members(format, &a.body));
        }
        Command::Snapshot(args::SnapshotCommand::Save { file }) => {
            snapshot::save(client, file, out)?;
        }
        Command::Snapshot(args::SnapshotCommand::Status { file }) => {
            snapshot::status(file, format, out)?;
        }
        Command::Member(m) => {
            let (req, done) = member_request(m);
            let a = client.send(&req)?;
            emit(out, output::member_changed(format, &done, &a.body));
        }
        Command::MoveLeader { id } => {
            let a = move_leader(client, *id)?;
            let from = a.0;
            // etcdctl's words, ids in hex as it prints them.
            emit(
                out,
                format!("Leadership transferred from {from:x} to {id:x}"),
            );
        }
        Command::Lock(_) | Command::Elect(_) => {
            return Err(CtlError::Usage(
                "lock and elect hold a lease while they run: use them as one-shot commands \
                 (synodctl lock NAME -- COMMAND), not in the REPL"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Sends a split or a merge with failover. When an endpoint was tried without a definite
/// answer (a timeout) and a later one refuses because the layout already is what was asked
/// (`done_words`: a range begins at the key, for a split; none does, for a merge), the first
/// attempt may have taken effect after all, or another change made the same layout. Either
/// way the layout asked for holds, so that is success, said plainly: `Ok(Err(endpoint))`.
/// Without an earlier attempt the refusal stands: nothing this command sent changed it.
fn layout_change(
    client: &mut Client,
    req: &Request,
    done_words: &str,
) -> Result<Result<Answer, String>, CtlError> {
    match client.send_noting_retry(req) {
        (Ok(a), _) => Ok(Ok(a)),
        (
            Err(CtlError::Server {
                endpoint,
                code,
                message,
                ..
            }),
            true,
        ) if code == "invalid_request" && message.contains(done_words) => Ok(Err(endpoint)),
        (Err(e), _) => Err(e),
    }
}

/// `move-leader ID`, as etcdctl does it: the leader is found through the endpoints' status
/// (its HTTP address through the member list), and only it is asked — a follower would answer
/// "not leader". Returns the old leader's id.
fn move_leader(client: &mut Client, id: u64) -> Result<(u64, Answer), CtlError> {
    let status = client.send(&Request::new(Method::GET, "/v1/status".into()))?;
    let no_leader = |endpoint: String| CtlError::Server {
        endpoint,
        status: 503,
        code: "no_leader".into(),
        message: "the cluster has no leader to move".into(),
        body: Value::Null,
    };
    let Some(leader) = status.body.get("leader").and_then(Value::as_u64) else {
        return Err(no_leader(status.endpoint));
    };
    let members = client.send(&Request::new(Method::GET, "/v1/members".into()))?;
    let addr = members
        .body
        .get("members")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .find(|m| m.get("id").and_then(Value::as_u64) == Some(leader))
        })
        .and_then(|m| m.get("http_addr").and_then(Value::as_str))
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let req = Request::new(Method::POST, format!("/v1/members/{id}/lead"));
    let answer = match addr {
        Some(addr) => client.for_endpoint(addr)?.send(&req)?,
        // No published address: the endpoint that answered the status may be the leader.
        None => client.send(&req)?,
    };
    Ok((leader, answer))
}

/// `status --all`: every endpoint's row, then the first failure (if any) as the error.
fn status_all(client: &Client, format: Format, out: &mut dyn Write) -> Result<(), CtlError> {
    let req = Request::new(Method::GET, "/v1/status".into());
    let mut answers = Vec::new();
    let mut first_error = None;
    for idx in 0..client.endpoint_count() {
        match client.send_one(idx, &req) {
            Ok(a) => answers.push((a.endpoint, a.body)),
            Err(e) => {
                // Reported after the rows of the endpoints that did answer.
                first_error.get_or_insert(e);
            }
        }
    }
    if !answers.is_empty() {
        emit(out, output::status(format, &answers));
    }
    first_error.map_or(Ok(()), Err)
}

/// `GET /v1/kv?...` for a prefix or range read.
fn list_request(g: &GetArgs) -> Request {
    let mut req = Request::new(Method::GET, "/v1/kv".into());
    req = match &g.range_end {
        Some(end) => req.query("start", g.key.clone()).query("end", end.clone()),
        None => req.query("prefix", g.key.clone()),
    };
    if let Some(limit) = g.limit {
        req = req.query("limit", limit.to_string());
    }
    if g.keys_only {
        req = req.query("keys_only", "true");
    }
    if g.rev > 0 {
        req = req.query("revision", g.rev.to_string());
    }
    for (name, value) in g.list_options() {
        req = req.query(name, value);
    }
    req.query("consistency", g.consistency.as_query())
}

/// The contract answers a lost compare-and-swap with 409; a 200 that says `succeeded: false`
/// (an older or different server) must not be reported as success.
fn check_cas(a: &Answer) -> Result<(), CtlError> {
    match a.body.get("succeeded").and_then(Value::as_bool) {
        Some(true) => Ok(()),
        _ => Err(CtlError::Server {
            endpoint: a.endpoint.clone(),
            status: 200,
            code: "cas_conflict".into(),
            message: "the compare-and-swap did not succeed".into(),
            body: a.body.clone(),
        }),
    }
}

/// Writes one command's output. Write errors (a closed pipe, as with `| head`) are ignored on
/// purpose: the command itself succeeded and there is nobody left to tell.
/// The request of a `member` change, and its confirmation (an add's names the new id).
fn member_request(m: &MemberCommand) -> (Request, String) {
    match m {
        MemberCommand::List => (
            Request::new(Method::GET, "/v1/members".into()),
            String::new(),
        ),
        MemberCommand::Add {
            name,
            peer_addr,
            http_addr,
            grpc_addr,
            learner,
        } => (
            Request::new(Method::POST, "/v1/members".into()).body(json!({
                "name": name, "peer_addr": peer_addr, "http_addr": http_addr,
                "grpc_addr": grpc_addr, "learner": learner,
            })),
            String::new(),
        ),
        MemberCommand::Remove { id } => (
            Request::new(Method::DELETE, format!("/v1/members/{id}")),
            format!("Member {id} removed"),
        ),
        MemberCommand::Promote { id } => (
            Request::new(Method::POST, format!("/v1/members/{id}/promote")),
            format!("Member {id} promoted"),
        ),
        MemberCommand::Update {
            id,
            name,
            peer_addr,
            http_addr,
            grpc_addr,
        } => (
            Request::new(Method::PUT, format!("/v1/members/{id}")).body(json!({
                "name": name, "peer_addr": peer_addr, "http_addr": http_addr,
                "grpc_addr": grpc_addr,
            })),
            format!("Member {id} updated"),
        ),
    }
}

fn emit(out: &mut dyn Write, text: String) {
    if text.is_empty() {
        return;
    }
    let _ = writeln!(out, "{text}");
}
