//! `synodctl lock` and `synodctl elect`: locks and leader election through etcd's Lock and
//! Election services on a member's gRPC port (the HTTP/JSON API has no lease stream).
//!
//! The gRPC address is found through the HTTP endpoints synodctl already knows: `GET
//! /v1/members` (with the usual failover) lists every member's `grpc_addr`; the member that
//! answered is tried first, then the others. Each command grants its own lease (`--ttl`),
//! keeps it alive while it holds the lock or leadership, and revokes it when done — so a
//! synodctl that is killed gives the lock up after at most the TTL, and one that exits
//! normally at once.
//!
//! Exit codes as for every command (1 the server refused, 3 nothing reachable), except that
//! `lock NAME -- COMMAND` exits with COMMAND's status (128 + signal if a signal ended it) and
//! an interrupted wait exits 130.

use crate::args::{ElectArgs, LockArgs};
use crate::client::{Client, Request};
use reqwest::Method;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb as epb;
use synod_etcd::pb::etcdserverpb::lease_client::LeaseClient;
use synod_etcd::pb::v3electionpb as elpb;
use synod_etcd::pb::v3electionpb::election_client::ElectionClient;
use synod_etcd::pb::v3lockpb as lpb;
use synod_etcd::pb::v3lockpb::lock_client::LockClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Exit code after Ctrl-C (the shell's convention for SIGINT).
const EXIT_INTERRUPTED: i32 = 130;
const EXIT_SERVER: i32 = 1;
const EXIT_UNREACHABLE: i32 = 3;

/// A failure, already reported on stderr, as its exit code.
struct Failed(i32);

fn fail(what: &str, s: &tonic::Status) -> Failed {
    eprintln!("synodctl: {what}: {:?}: {}", s.code(), s.message());
    let unreachable = matches!(s.code(), tonic::Code::Unavailable);
    Failed(if unreachable {
        EXIT_UNREACHABLE
    } else {
        EXIT_SERVER
    })
}

/// Where the gRPC services are: addresses (the answering member's first) and the TLS to
/// reach them with (synodctl's --cacert/--cert/--key).
struct Targets {
    addrs: Vec<String>,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The members' gRPC addresses, the answering member's first.
fn grpc_targets(client: &mut Client) -> Result<Targets, Failed> {
    let tls = client.tls().grpc().map_err(|e| {
        eprintln!("{}", crate::output::error(&e));
        Failed(e.exit_code())
    })?;
    let a = client
        .send(&Request::new(Method::GET, "/v1/members".into()))
        .map_err(|e| {
            eprintln!("{}", crate::output::error(&e));
            Failed(e.exit_code())
        })?;
    let members = a.body["members"].as_array().cloned().unwrap_or_default();
    let addr = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let mut targets: Vec<(bool, String)> = members
        .iter()
        .map(|m| (addr(m, "http_addr") != a.endpoint, addr(m, "grpc_addr")))
        .filter(|(_, g)| !g.is_empty())
        .collect();
    targets.sort_by_key(|(other, _)| *other);
    if targets.is_empty() {
        eprintln!(
            "synodctl: {} listed no member with a gRPC address",
            a.endpoint
        );
        return Err(Failed(EXIT_SERVER));
    }
    Ok(Targets {
        addrs: targets.into_iter().map(|(_, g)| g).collect(),
        tls,
    })
}

async fn connect(targets: &Targets, timeout: Duration) -> Result<Channel, Failed> {
    let mut attempts = Vec::new();
    let scheme = if targets.tls.is_some() {
        "https"
    } else {
        "http"
    };
    for t in &targets.addrs {
        let endpoint = match Channel::from_shared(format!("{scheme}://{t}")) {
            Ok(e) => e.connect_timeout(timeout),
            Err(e) => {
                attempts.push(format!("{t}: {e}"));
                continue;
            }
        };
        let endpoint = match &targets.tls {
            None => endpoint,
            Some(tls) => match endpoint.tls_config(tls.clone()) {
                Ok(e) => e,
                Err(e) => {
                    attempts.push(format!("{t}: {e}"));
                    continue;
                }
            },
        };
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) => attempts.push(format!("{t}: {e}")),
        }
    }
    eprintln!(
        "synodctl: no gRPC endpoint reachable: {}",
        attempts.join("; ")
    );
    Err(Failed(EXIT_UNREACHABLE))
}

/// A granted lease, kept alive until [`Session::close`] revokes it.
struct Session {
    ch: Channel,
    lease: i64,
    keepalive: JoinHandle<()>,
    timeout: Duration,
}

impl Session {
    async fn open(ch: Channel, ttl: i64, timeout: Duration) -> Result<Session, Failed> {
        let grant = LeaseClient::new(ch.clone())
            .lease_grant(epb::LeaseGrantRequest { ttl, id: 0 })
            .await
            .map_err(|s| fail("lease grant", &s))?
            .into_inner();
        let keepalive = tokio::spawn(synod_etcd::client::keep_alive(
            ch.clone(),
            grant.id,
            grant.ttl,
            timeout,
        ));
        Ok(Session {
            ch,
            lease: grant.id,
            keepalive,
            timeout,
        })
    }

    /// Completes when the lease is gone (the keep-alive loop only ends then).
    async fn lost(&mut self) {
        let _ = (&mut self.keepalive).await;
    }

    async fn close(self) {
        self.keepalive.abort();
        let mut c = LeaseClient::new(self.ch);
        let revoke = c.lease_revoke(epb::LeaseRevokeRequest { id: self.lease });
        if let Ok(Err(s)) = tokio::time::timeout(self.timeout, revoke).await {
            eprintln!("synodctl: lease revoke: {}", s.message());
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failed> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("synodctl: cannot start the async runtime: {e}");
            Failed(EXIT_SERVER)
        })
}

/// `synodctl lock`; returns the exit code.
pub fn lock(client: &mut Client, args: &LockArgs, timeout: Duration) -> i32 {
    let mut run = || -> Result<i32, Failed> {
        let targets = grpc_targets(client)?;
        runtime()?.block_on(lock_async(&targets, args, timeout))
    };
    run().unwrap_or_else(|Failed(code)| code)
}

async fn lock_async(targets: &Targets, args: &LockArgs, timeout: Duration) -> Result<i32, Failed> {
    let ch = connect(targets, timeout).await?;
    let mut session = Session::open(ch.clone(), args.ttl, timeout).await?;
    let request = lpb::LockRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease,
    };
    let mut locks = LockClient::new(ch);
    // One listener for the whole call, first polled before the lock is asked for: a Ctrl-C
    // between two `select!`s (right after the key is printed) is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let locked = tokio::select! {
        r = locks.lock(request) => r,
        _ = &mut interrupted => {
            session.close().await;
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let locked = match locked {
        Ok(r) => r.into_inner(),
        Err(s) => {
            session.close().await;
            return Err(fail("lock", &s));
        }
    };
    let key = String::from_utf8_lossy(&locked.key).into_owned();
    let token = locked.header.map_or(0, |h| h.revision);
    let code = if args.command.is_empty() {
        println!("{key}");
        tokio::select! {
            _ = &mut interrupted => 0,
            () = session.lost() => {
                eprintln!("synodctl: lost the lock {key}: its lease ended");
                EXIT_SERVER
            }
        }
    } else {
        run_holding(&args.command, &key, token, &mut session).await
    };
    if let Err(s) = locks.unlock(lpb::UnlockRequest { key: locked.key }).await {
        eprintln!("synodctl: unlock: {}", s.message());
    }
    session.close().await;
    Ok(code)
}

/// Runs the command while the lock is held; its exit code (128 + signal if killed).
async fn run_holding(command: &[String], key: &str, token: i64, session: &mut Session) -> i32 {
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("SYNOD_LOCK_KEY", key)
        .env("SYNOD_LOCK_REVISION", token.to_string())
        .env("SYNOD_LOCK_LEASE", format!("{:x}", session.lease))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synodctl: cannot run {}: {e}", command[0]);
            return 127;
        }
    };
    let status = tokio::select! {
        s = child.wait() => s,
        () = session.lost() => {
            // The lock is gone; the command keeps running, and we say so.
            eprintln!("synodctl: WARNING: lost the lock {key} (lease ended) while {} runs", command[0]);
            child.wait().await
        }
    };
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("synodctl: waiting for {}: {e}", command[0]);
            EXIT_SERVER
        }
    }
}

/// `synodctl elect`; returns the exit code.
pub fn elect(client: &mut Client, args: &ElectArgs, timeout: Duration) -> i32 {
    let mut run = || -> Result<i32, Failed> {
        let targets = grpc_targets(client)?;
        let rt = runtime()?;
        if args.listen {
            rt.block_on(observe(&targets, args, timeout))
        } else {
            rt.block_on(campaign(&targets, args, timeout))
        }
    };
    run().unwrap_or_else(|Failed(code)| code)
}

fn print_leader(kv: Option<&synod_etcd::pb::mvccpb::KeyValue>) {
    if let Some(kv) = kv {
        println!("{}", String::from_utf8_lossy(&kv.key));
        println!("{}", String::from_utf8_lossy(&kv.value));
    }
}

async fn campaign(targets: &Targets, args: &ElectArgs, timeout: Duration) -> Result<i32, Failed> {
    let ch = connect(targets, timeout).await?;
    let mut session = Session::open(ch.clone(), args.ttl, timeout).await?;
    let value = args.value.clone().unwrap_or_default();
    let request = elpb::CampaignRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease,
        value: value.clone().into_bytes(),
    };
    let mut election = ElectionClient::new(ch);
    // As in `lock_async`: one listener, so a Ctrl-C right after the value is printed counts.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let won = tokio::select! {
        r = election.campaign(request) => r,
        _ = &mut interrupted => {
            session.close().await;
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let leader = match won {
        Ok(r) => r.into_inner().leader,
        Err(s) => {
            session.close().await;
            return Err(fail("campaign", &s));
        }
    };
    if let Some(l) = &leader {
        println!("{}", String::from_utf8_lossy(&l.key));
        println!("{value}");
    }
    let code = tokio::select! {
        _ = &mut interrupted => 0,
        () = session.lost() => {
            eprintln!("synodctl: lost the leadership of {}: its lease ended", args.name);
            EXIT_SERVER
        }
    };
    if let Err(s) = election.resign(elpb::ResignRequest { leader }).await {
        eprintln!("synodctl: resign: {}", s.message());
    }
    session.close().await;
    Ok(code)
}

async fn observe(targets: &Targets, args: &ElectArgs, timeout: Duration) -> Result<i32, Failed> {
    let ch = connect(targets, timeout).await?;
    let request = elpb::LeaderRequest {
        name: args.name.clone().into_bytes(),
    };
    let mut stream = ElectionClient::new(ch)
        .observe(request)
        .await
        .map_err(|s| fail("observe", &s))?
        .into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(0),
            m = stream.message() => match m {
                Ok(Some(r)) => print_leader(r.kv.as_ref()),
                Ok(None) => {
                    eprintln!("synodctl: the member ended the observation");
                    return Ok(EXIT_UNREACHABLE);
                }
                Err(s) => return Err(fail("observe", &s)),
            },
        }
    }
}
