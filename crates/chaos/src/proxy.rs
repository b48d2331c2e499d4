//! A fault-injecting TCP proxy for Synod's peer traffic, loopback only.
//!
//! For each member `j` the proxy listens on `j`'s *advertised* peer address and forwards to `j`'s
//! real peer listener (started with `--peer-listen-addr`). Synod's transport uses one TCP
//! connection per direction (the dialer only sends), and the dialer's first frame is a
//! [`Hello`] naming `from` and `to`, so after reading that frame the proxy knows the directed
//! link `from → j` a connection carries, and can apply that link's [`LinkRule`]:
//!
//! * **cut** closes the link's open connections and refuses new ones (they are accepted, their
//!   Hello read, then closed) until restored. We close rather than blackhole on purpose: a
//!   closed link makes the dialer go through its reconnect-with-backoff path, which is part of
//!   the program chaos runs exist to exercise, and a blackhole would have to keep reading (and
//!   discarding) a peer's stream forever. The cost: after a restore, a link comes back only when
//!   the dialer's backoff (≤ `reconnect_backoff_ms_max`, 2 s by default) next retries, which is
//!   included in the downtime a chaos run measures.
//! * **delay** holds each frame for `delay_ms` plus a uniform jitter in `[0, jitter_ms]`; frames
//!   keep their order (a frame is never delivered before the one read before it), as on TCP.
//! * **drop** discards a fraction of whole frames (never the Hello), from a seeded generator, so
//!   the peer sees a valid frame stream with holes — message loss, not corruption.
//!
//! The other direction of a connection carries only the acceptor's `HelloReply`; it is copied
//! byte for byte. Frames are parsed (`u32 BE length | payload`) with the length bounded by
//! `frame_bytes_max`; a zero or too-large length, or a first frame that is not a Hello to this
//! member, closes that connection — the proxy never panics on what it reads.
//!
//! The proxy is driven from code ([`Proxy::cut`] …) and by people through a line protocol on a
//! local TCP port ([`Proxy::serve_control`], documented in docs/chaos.md and by `help`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_core::{NodeId, SplitMix64};
use synod_node::transport::{Hello, MAGIC, decode_payload};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A directed link: frames sent by `.0` to `.1`.
pub type Link = (NodeId, NodeId);

/// A dialer must send its Hello within this, or the connection is closed.
const HELLO_TIMEOUT_MS: u64 = 2_000;
/// Connecting to a member's real listener gives up after this.
const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Frames read but not yet delivered (delayed) per connection; the reader waits when full, so a
/// slow link back-pressures the sender's socket instead of growing memory.
const DELAY_QUEUE_FRAMES_MAX: usize = 1_024;
/// Connections served at once per member listener; more are closed on accept.
const CONNECTIONS_PER_MEMBER_MAX: usize = 64;
/// Longest control-protocol line.
const CONTROL_LINE_BYTES_MAX: usize = 256;
/// Control connections served at once.
const CONTROL_CONNECTIONS_MAX: usize = 8;
/// Largest accepted delay or jitter, so a typo cannot park a link for a day.
pub const DELAY_MS_MAX: u64 = 60_000;

/// What the proxy does to one directed link. The default forwards everything at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkRule {
    pub cut: bool,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Frames dropped per thousand.
    pub drop_permille: u32,
}

impl LinkRule {
    fn is_default(&self) -> bool {
        *self == LinkRule::default()
    }
}

/// Counters of one directed link since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub frames_forwarded: u64,
    pub frames_dropped: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_closed_by_cut: u64,
}

/// One member behind the proxy: `listener` is bound on its advertised peer address, `target` is
/// its real peer listener.
pub struct Route {
    pub member: NodeId,
    pub listener: TcpListener,
    pub target: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Must be at least the cluster's `transport.frame_bytes_max`.
    pub frame_bytes_max: u32,
    /// Seeds the frame-drop decisions.
    pub seed: u64,
}

struct Shared {
    /// Rules by link; a std Mutex because it is held for a lookup, never across an await.
    rules: Mutex<BTreeMap<Link, LinkRule>>,
    stats: Mutex<BTreeMap<Link, LinkStats>>,
    /// Bumped on every rule change so open connections re-check whether they were cut.
    changed: watch::Sender<u64>,
    /// The member behind each route, by route index. A membership change (`synod chaos
    /// --faults reconfig`) gives a route a new member id: the replacement keeps the slot's
    /// addresses, so clients and schedules stay put while the cluster changes under them.
    slots: Mutex<Vec<NodeId>>,
    connections_total: AtomicU64,
    cfg: ProxyConfig,
}

impl Shared {
    fn members(&self) -> Vec<NodeId> {
        lock(&self.slots).clone()
    }

    fn rule(&self, link: Link) -> LinkRule {
        lock(&self.rules).get(&link).copied().unwrap_or_default()
    }

    fn count(&self, link: Link, f: impl FnOnce(&mut LinkStats)) {
        f(lock(&self.stats).entry(link).or_default());
    }
}

/// A poisoned lock only means another task panicked while holding it; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running proxy. Dropping it (or [`Proxy::shutdown`]) closes every listener and connection.
pub struct Proxy {
    shared: Arc<Shared>,
    /// Each route's listening address, by route index.
    listen: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding for every route. Must be called inside a tokio runtime.
    pub fn start(routes: Vec<Route>, cfg: ProxyConfig) -> std::io::Result<Proxy> {
        let members: Vec<NodeId> = routes.iter().map(|r| r.member).collect();
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            rules: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            changed,
            slots: Mutex::new(members),
            connections_total: AtomicU64::new(0),
            cfg,
        });
        let mut listen = Vec::new();
        let mut tasks = Vec::new();
        for (slot, r) in routes.into_iter().enumerate() {
            listen.push(r.listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(
                r.listener,
                slot,
                r.target,
                shared.clone(),
            )));
        }
        Ok(Proxy {
            shared,
            listen,
            tasks,
        })
    }

    /// The address the proxy listens on for `member` (its advertised peer address).
    pub fn listen_addr(&self, member: NodeId) -> Option<SocketAddr> {
        let slot = self.shared.members().iter().position(|&m| m == member)?;
        self.listen.get(slot).copied()
    }

    pub fn members(&self) -> Vec<NodeId> {
        self.shared.members()
    }

    /// The route that served `old` now serves `new` (a member replaced in its slot, or a spare
    /// slot's placeholder given to an added member). Rules on `old`'s links are dropped; its
    /// process is gone, so its connections close by themselves.
    pub fn rename(&self, old: NodeId, new: NodeId) {
        {
            let mut slots = lock(&self.shared.slots);
            assert!(!slots.contains(&new), "member {new} already has a route");
            if let Some(s) = slots.iter_mut().find(|m| **m == old) {
                *s = new;
            }
        }
        lock(&self.shared.rules).retain(|l, _| l.0 != old && l.1 != old);
        self.shared.changed.send_modify(|v| *v += 1);
    }

    fn update(&self, links: &[Link], f: impl Fn(&mut LinkRule)) {
        {
            let mut rules = lock(&self.shared.rules);
            for &link in links {
                let r = rules.entry(link).or_default();
                f(r);
                if r.is_default() {
                    rules.remove(&link);
                }
            }
        }
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Cuts each directed link: open connections are closed, new ones refused.
    pub fn cut(&self, links: &[Link]) {
        self.update(links, |r| r.cut = true);
    }

    /// Delays every frame on the links by `delay_ms` + uniform `[0, jitter_ms]` (capped at
    /// [`DELAY_MS_MAX`] each).
    pub fn delay(&self, links: &[Link], delay_ms: u64, jitter_ms: u64) {
        self.update(links, |r| {
            r.delay_ms = delay_ms.min(DELAY_MS_MAX);
            r.jitter_ms = jitter_ms.min(DELAY_MS_MAX);
        });
    }

    /// Drops `permille`/1000 of the frames on the links (capped at 1000).
    pub fn drop_frames(&self, links: &[Link], permille: u32) {
        self.update(links, |r| r.drop_permille = permille.min(1000));
    }

    /// Back to plain forwarding on these links.
    pub fn restore(&self, links: &[Link]) {
        self.update(links, |r| *r = LinkRule::default());
    }

    /// Back to plain forwarding everywhere.
    pub fn restore_all(&self) {
        lock(&self.shared.rules).clear();
        self.shared.changed.send_modify(|v| *v += 1);
    }

    pub fn rule(&self, link: Link) -> LinkRule {
        self.shared.rule(link)
    }

    pub fn stats(&self, link: Link) -> LinkStats {
        lock(&self.shared.stats)
            .get(&link)
            .copied()
            .unwrap_or_default()
    }

    /// Every link that is not plain forwarding.
    pub fn faulty_links(&self) -> BTreeMap<Link, LinkRule> {
        lock(&self.shared.rules).clone()
    }

    /// Every directed link between two distinct members.
    pub fn all_links(&self) -> Vec<Link> {
        let m = self.shared.members();
        let mut v = Vec::new();
        for &a in &m {
            for &b in &m {
                if a != b {
                    v.push((a, b));
                }
            }
        }
        v
    }

    /// Human-readable state: one line per link with its rule and counters.
    pub fn status(&self) -> String {
        let rules = self.faulty_links();
        let stats = lock(&self.shared.stats).clone();
        let mut s = String::new();
        for link in self.all_links() {
            let r = rules.get(&link).copied().unwrap_or_default();
            let st = stats.get(&link).copied().unwrap_or_default();
            s.push_str(&format!(
                "{} -> {}  {}  forwarded {} dropped {} conns {} refused {} closed-by-cut {}\n",
                link.0,
                link.1,
                describe_rule(&r),
                st.frames_forwarded,
                st.frames_dropped,
                st.connections_accepted,
                st.connections_refused,
                st.connections_closed_by_cut
            ));
        }
        s
    }

    /// Serves the control line protocol on `listener` until the proxy is shut down.
    pub fn serve_control(&mut self, listener: TcpListener) {
        let handle = ControlHandle {
            proxy_shared: self.shared.clone(),
        };
        self.tasks
            .push(tokio::spawn(control_accept_loop(listener, handle)));
    }

    /// Stops every listener and connection.
    pub fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn describe_rule(r: &LinkRule) -> String {
    if r.is_default() {
        return "ok".into();
    }
    let mut parts = Vec::new();
    if r.cut {
        parts.push("CUT".to_string());
    }
    if r.delay_ms > 0 || r.jitter_ms > 0 {
        parts.push(format!("delay {}ms±{}ms", r.delay_ms, r.jitter_ms));
    }
    if r.drop_permille > 0 {
        parts.push(format!("drop {}‰", r.drop_permille));
    }
    parts.join(", ")
}

async fn accept_loop(listener: TcpListener, slot: usize, target: SocketAddr, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_PER_MEMBER_MAX));
    // Dropping the JoinSet (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of file descriptors and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // over the bound: dropping the stream closes it
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ = serve_connection(stream, slot, target, shared).await;
        });
    }
}

/// Reads one frame (`u32 BE length | payload`), bounded by `frame_bytes_max`, and returns it
/// *with* its length prefix so the proxy can forward it byte for byte. `Ok(None)` on a clean end
/// of stream between frames; an error on a bad length or a stream cut mid-frame. Parsing and
/// bounds are the node transport's own ([`synod_node::transport::read_frame`]), so the proxy
/// can never disagree with the peers about where a frame ends.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame_bytes_max: u32,
) -> std::io::Result<Option<Vec<u8>>> {
    let Some(payload) = synod_node::transport::read_frame(r, frame_bytes_max).await? else {
        return Ok(None);
    };
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(Some(frame))
}

/// Why a connection was closed by the proxy (for tests and logs).
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    BadHello(String),
    Refused,
    Upstream(String),
    Cut,
    Eof,
    Io(String),
}

async fn serve_connection(
    inbound: TcpStream,
    slot: usize,
    target: SocketAddr,
    shared: Arc<Shared>,
) -> Closed {
    let _ = inbound.set_nodelay(true);
    let (mut in_r, mut in_w) = inbound.into_split();
    let max = shared.cfg.frame_bytes_max;
    let hello_frame = match tokio::time::timeout(
        Duration::from_millis(HELLO_TIMEOUT_MS),
        read_frame(&mut in_r, max),
    )
    .await
    {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Closed::BadHello("closed before the hello".into()),
        Ok(Err(e)) => return Closed::BadHello(e.to_string()),
        Err(_) => return Closed::BadHello("no hello in time".into()),
    };
    let hello: Hello = match decode_payload(&hello_frame[4..]) {
        Ok(h) => h,
        Err(e) => return Closed::BadHello(e),
    };
    let members = shared.members();
    let member = members[slot];
    if hello.magic != MAGIC || hello.to != member || !members.contains(&hello.from) {
        return Closed::BadHello(format!(
            "hello {hello:?} is not for member {member} via this proxy"
        ));
    }
    let link = (hello.from, member);
    if shared.rule(link).cut {
        shared.count(link, |s| s.connections_refused += 1);
        return Closed::Refused;
    }
    let upstream = match tokio::time::timeout(
        Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS),
        TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Closed::Upstream(e.to_string()),
        Err(_) => return Closed::Upstream("connect timed out".into()),
    };
    let _ = upstream.set_nodelay(true);
    shared.count(link, |s| s.connections_accepted += 1);
    let (mut up_r, mut up_w) = upstream.into_split();
    if let Err(e) = up_w.write_all(&hello_frame).await {
        return Closed::Io(e.to_string());
    }

    let conn_no = shared.connections_total.fetch_add(1, Ordering::Relaxed);
    let mut rng = SplitMix64::new(
        shared.cfg.seed
            ^ (link.0 << 40)
            ^ (link.1 << 20)
            ^ conn_no.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE_FRAMES_MAX);
    let reader = {
        let shared = shared.clone();
        async move {
            let mut last_due = Instant::now();
            loop {
                let frame = match read_frame(&mut in_r, max).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return Closed::Eof,
                    Err(e) => return Closed::Io(e.to_string()),
                };
                let rule = shared.rule(link);
                if rule.drop_permille > 0 && rng.below(1000) < u64::from(rule.drop_permille) {
                    shared.count(link, |s| s.frames_dropped += 1);
                    continue;
                }
                let jitter = if rule.jitter_ms > 0 {
                    rng.below(rule.jitter_ms + 1)
                } else {
                    0
                };
                let due =
                    (Instant::now() + Duration::from_millis(rule.delay_ms + jitter)).max(last_due);
                last_due = due;
                if tx.send((due, frame)).await.is_err() {
                    return Closed::Eof;
                }
            }
        }
    };
    let writer = {
        let shared = shared.clone();
        async move {
            while let Some((due, frame)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if let Err(e) = up_w.write_all(&frame).await {
                    return Closed::Io(e.to_string());
                }
                shared.count(link, |s| s.frames_forwarded += 1);
            }
            Closed::Eof
        }
    };
    // The acceptor only ever sends its HelloReply back; copy it through unchanged.
    let reverse = async move {
        match tokio::io::copy(&mut up_r, &mut in_w).await {
            Ok(_) => Closed::Eof,
            Err(e) => Closed::Io(e.to_string()),
        }
    };
    let mut changed = shared.changed.subscribe();
    let cut_watch = {
        let shared = shared.clone();
        async move {
            loop {
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if shared.rule(link).cut {
                    shared.count(link, |s| s.connections_closed_by_cut += 1);
                    return Closed::Cut;
                }
            }
        }
    };
    // Whichever ends first ends the connection; returning drops both sockets (closing them).
    tokio::select! {
        c = reader => c,
        c = writer => c,
        c = reverse => c,
        c = cut_watch => c,
    }
}

/// What the control protocol needs of the proxy (it outlives no proxy: tasks are aborted with it).
#[derive(Clone)]
struct ControlHandle {
    proxy_shared: Arc<Shared>,
}

async fn control_accept_loop(listener: TcpListener, handle: ControlHandle) {
    let slots = Arc::new(Semaphore::new(CONTROL_CONNECTIONS_MAX));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let handle = handle.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ = serve_control_connection(stream, handle).await;
        });
    }
}

async fn serve_control_connection(stream: TcpStream, handle: ControlHandle) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let proxy = Proxy {
        shared: handle.proxy_shared.clone(),
        listen: Vec::new(),
        tasks: Vec::new(),
    };
    loop {
        let mut line = Vec::new();
        let n = (&mut r)
            .take(CONTROL_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > CONTROL_LINE_BYTES_MAX {
            w.write_all(
                format!("error: line longer than {CONTROL_LINE_BYTES_MAX} bytes\n").as_bytes(),
            )
            .await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let reply = control_command(&proxy, text.trim());
        w.write_all(reply.as_bytes()).await?;
        if text.trim() == "quit" {
            return Ok(());
        }
    }
}

/// The control protocol's help text (also in docs/chaos.md).
pub const CONTROL_HELP: &str = "\
commands (FROM/TO: a member id or *; links are directed FROM -> TO):
  status                       every link: rule and counters
  cut FROM TO                  close and refuse FROM -> TO (one way)
  isolate N                    cut every link to and from N
  partition A,B C,D            cut both ways between the two groups
  delay FROM TO MS [JITTER]    hold each frame MS (+ up to JITTER) ms
  drop FROM TO PERCENT         drop that share of frames (0-100)
  restore FROM TO | restore all
  help | quit
every reply ends with a line starting with `ok` or `error`
";

/// Executes one control line; the reply always ends with a line starting `ok` or `error`.
pub fn control_command(proxy: &Proxy, line: &str) -> String {
    match control_command_inner(proxy, line) {
        Ok(s) => s,
        Err(e) => format!("error: {e}\n"),
    }
}

fn control_command_inner(proxy: &Proxy, line: &str) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let parse_links = |from: &str, to: &str| -> Result<Vec<Link>, String> {
        let side = |s: &str| -> Result<Vec<NodeId>, String> {
            if s == "*" {
                return Ok(proxy.members());
            }
            let id: NodeId = s
                .parse()
                .map_err(|_| format!("{s:?} is not a member id or *"))?;
            if !proxy.members().contains(&id) {
                return Err(format!("no member {id}; members are {:?}", proxy.members()));
            }
            Ok(vec![id])
        };
        let mut v = Vec::new();
        for a in side(from)? {
            for b in side(to)? {
                if a != b {
                    v.push((a, b));
                }
            }
        }
        Ok(v)
    };
    let num = |s: &str, what: &str| -> Result<u64, String> {
        s.parse::<u64>()
            .map_err(|_| format!("{what} {s:?} is not a number"))
    };
    match words.as_slice() {
        [] => Ok("ok\n".into()),
        ["help"] => Ok(format!("{CONTROL_HELP}ok\n")),
        ["quit"] => Ok("ok bye\n".into()),
        ["status"] => Ok(format!("{}ok\n", proxy.status())),
        ["cut", from, to] => {
            let links = parse_links(from, to)?;
            proxy.cut(&links);
            Ok(format!("ok cut {} link(s)\n", links.len()))
        }
        ["isolate", n] => {
            let mut links = parse_links(n, "*")?;
            links.extend(parse_links("*", n)?);
            proxy.cut(&links);
            Ok(format!("ok cut {} link(s)\n", links.len()))
        }
        ["partition", a, b] => {
            let group = |s: &str| -> Result<Vec<String>, String> {
                let v: Vec<String> = s
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                if v.is_empty() {
                    Err("empty group".into())
                } else {
                    Ok(v)
                }
            };
            let (ga, gb) = (group(a)?, group(b)?);
            let mut links = Vec::new();
            for x in &ga {
                for y in &gb {
                    links.extend(parse_links(x, y)?);
                    links.extend(parse_links(y, x)?);
                }
            }
            proxy.cut(&links);
            Ok(format!("ok cut {} link(s)\n", links.len()))
        }
        ["delay", from, to, ms, rest @ ..] if rest.len() <= 1 => {
            let links = parse_links(from, to)?;
            let ms = num(ms, "delay")?;
            let jitter = rest
                .first()
                .map(|j| num(j, "jitter"))
                .transpose()?
                .unwrap_or(0);
            if ms > DELAY_MS_MAX || jitter > DELAY_MS_MAX {
                return Err(format!("delay and jitter are at most {DELAY_MS_MAX} ms"));
            }
            proxy.delay(&links, ms, jitter);
            Ok(format!("ok delayed {} link(s)\n", links.len()))
        }
        ["drop", from, to, pct] => {
            let links = parse_links(from, to)?;
            let pct = num(pct, "percent")?;
            if pct > 100 {
                return Err("percent is 0-100".into());
            }
            proxy.drop_frames(&links, (pct * 10) as u32);
            Ok(format!("ok dropping {pct}% on {} link(s)\n", links.len()))
        }
        ["restore", "all"] => {
            proxy.restore_all();
            Ok("ok restored all\n".into())
        }
        ["restore", from, to] => {
            let links = parse_links(from, to)?;
            proxy.restore(&links);
            Ok(format!("ok restored {} link(s)\n", links.len()))
        }
        _ => Err(format!("unknown command {line:?}; try `help`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_node::transport::{HelloReply, encode_frame};

    const MAX: u32 = 1 << 20;
    /// Every wait in these tests is bounded by this.
    const DEADLINE_MS: u64 = 5_000;

    /// A member behind the proxy: accepts dialed connections, answers the hello like Synod's
    /// transport, and reports every later frame payload (as text) with the dialer's id.
    struct Upstream {
        frames: mpsc::Receiver<(NodeId, Vec<u8>)>,
        accepted: Arc<AtomicU64>,
    }

    async fn upstream() -> (SocketAddr, Upstream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(1024);
        let accepted = Arc::new(AtomicU64::new(0));
        let acc = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                acc.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(Some(f)) = read_frame(&mut s, MAX).await else {
                        return;
                    };
                    let hello: Hello = decode_payload(&f[4..]).unwrap();
                    let reply = encode_frame(&HelloReply::Accepted, MAX).unwrap();
                    s.write_all(&reply).await.unwrap();
                    while let Ok(Some(f)) = read_frame(&mut s, MAX).await {
                        if tx.send((hello.from, f[4..].to_vec())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (
            addr,
            Upstream {
                frames: rx,
                accepted,
            },
        )
    }

    /// A proxy for members 1, 2, 3 where member 2 is `target`.
    async fn proxy_to(target: SocketAddr) -> Proxy {
        let mut routes = Vec::new();
        for m in [1, 2, 3] {
            routes.push(Route {
                member: m,
                listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                target: if m == 2 {
                    target
                } else {
                    "127.0.0.1:9".parse().unwrap()
                },
            });
        }
        Proxy::start(
            routes,
            ProxyConfig {
                frame_bytes_max: MAX,
                seed: 7,
            },
        )
        .unwrap()
    }

    /// Dials member 2 through the proxy as `from`; Ok(stream) once the hello was accepted.
    async fn dial(proxy: &Proxy, from: NodeId) -> std::io::Result<TcpStream> {
        let mut s = TcpStream::connect(proxy.listen_addr(2).unwrap()).await?;
        let hello = test_hello(from, 2);
        s.write_all(&encode_frame(&hello, MAX).unwrap()).await?;
        match read_frame(&mut s, MAX).await? {
            Some(f) => {
                let r: HelloReply = decode_payload(&f[4..]).map_err(std::io::Error::other)?;
                assert_eq!(r, HelloReply::Accepted);
                Ok(s)
            }
            None => Err(std::io::Error::other("closed during the handshake")),
        }
    }

    fn test_hello(from: NodeId, to: NodeId) -> Hello {
        Hello {
            magic: MAGIC,
            cluster_id: 1,
            from,
            to,
            data_id: 0,
            probe: false,
            replace_data_id: false,
            question: None,
        }
    }

    fn data(text: &str) -> Vec<u8> {
        let mut v = (text.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(text.as_bytes());
        v
    }

    async fn next(up: &mut Upstream) -> Option<(NodeId, String)> {
        let r = tokio::time::timeout(Duration::from_millis(DEADLINE_MS), up.frames.recv())
            .await
            .ok()??;
        Some((r.0, String::from_utf8(r.1).unwrap()))
    }

    /// True once `s` reads end-of-stream or an error (the proxy closed it).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_millis(DEADLINE_MS), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn forwards_frames_and_cut_closes_refuses_then_restores() {
        let (addr, mut up) = upstream().await;
        let proxy = proxy_to(addr).await;
        let mut s = dial(&proxy, 1).await.unwrap();
        s.write_all(&data("one")).await.unwrap();
        assert_eq!(next(&mut up).await, Some((1, "one".into())));

        proxy.cut(&[(1, 2)]);
        assert!(closed(&mut s).await, "a cut closes the open connection");
        assert!(dial(&proxy, 1).await.is_err(), "and refuses new ones");
        // The other direction of the cut and other links are untouched.
        let mut s3 = dial(&proxy, 3).await.unwrap();
        s3.write_all(&data("from3")).await.unwrap();
        assert_eq!(next(&mut up).await, Some((3, "from3".into())));
        let st = proxy.stats((1, 2));
        assert_eq!(
            (st.connections_refused, st.connections_closed_by_cut),
            (1, 1)
        );

        proxy.restore(&[(1, 2)]);
        let mut s = dial(&proxy, 1).await.unwrap();
        s.write_all(&data("two")).await.unwrap();
        assert_eq!(next(&mut up).await, Some((1, "two".into())));
        assert!(proxy.faulty_links().is_empty());
    }

    #[tokio::test]
    async fn delay_holds_frames_in_order() {
        let (addr, mut up) = upstream().await;
        let proxy = proxy_to(addr).await;
        proxy.delay(&[(1, 2)], 300, 100);
        let mut s = dial(&proxy, 1).await.unwrap();
        let t = Instant::now();
        for i in 0..20 {
            s.write_all(&data(&format!("m{i}"))).await.unwrap();
        }
        for i in 0..20 {
            assert_eq!(next(&mut up).await, Some((1, format!("m{i}"))));
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "took {took:?}");
        assert!(took < Duration::from_millis(2_000), "took {took:?}");
    }

    #[tokio::test]
    async fn drop_discards_a_seeded_fraction_of_whole_frames() {
        let (addr, mut up) = upstream().await;
        let proxy = proxy_to(addr).await;
        proxy.drop_frames(&[(1, 2)], 500);
        let mut s = dial(&proxy, 1).await.unwrap();
        const FRAMES: usize = 400;
        for i in 0..FRAMES {
            s.write_all(&data(&format!("m{i}"))).await.unwrap();
        }
        // A marker after restoring shows every surviving frame arrived, intact and in order.
        let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
        while proxy.stats((1, 2)).frames_forwarded + proxy.stats((1, 2)).frames_dropped
            < FRAMES as u64
        {
            assert!(Instant::now() < deadline, "frames not all processed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.restore(&[(1, 2)]);
        s.write_all(&data("end")).await.unwrap();
        let mut got = Vec::new();
        loop {
            let (_, m) = next(&mut up).await.unwrap();
            if m == "end" {
                break;
            }
            got.push(m[1..].parse::<usize>().unwrap());
        }
        assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept");
        assert!(
            (120..=280).contains(&got.len()),
            "kept {} of {FRAMES} at 50%",
            got.len()
        );
        assert_eq!(
            proxy.stats((1, 2)).frames_dropped as usize,
            FRAMES - got.len()
        );
    }

    #[tokio::test]
    async fn garbage_and_bad_hellos_are_closed_without_reaching_the_member() {
        let (addr, up) = upstream().await;
        let proxy = proxy_to(addr).await;
        let p2 = proxy.listen_addr(2).unwrap();
        // A length prefix beyond the bound.
        let mut s = TcpStream::connect(p2).await.unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .unwrap();
        assert!(closed(&mut s).await);
        // A zero length.
        let mut s = TcpStream::connect(p2).await.unwrap();
        s.write_all(&[0, 0, 0, 0]).await.unwrap();
        assert!(closed(&mut s).await);
        // A well-framed payload that is not a hello.
        let mut s = TcpStream::connect(p2).await.unwrap();
        s.write_all(&data("GET / HTTP/1.1")).await.unwrap();
        assert!(closed(&mut s).await);
        // A hello addressed to another member, and one from a stranger.
        for (from, to) in [(1, 3), (99, 2)] {
            let mut s = TcpStream::connect(p2).await.unwrap();
            let hello = test_hello(from, to);
            s.write_all(&encode_frame(&hello, MAX).unwrap())
                .await
                .unwrap();
            assert!(closed(&mut s).await);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
        // The proxy still serves a proper dialer.
        assert!(dial(&proxy, 1).await.is_ok());
    }

    #[tokio::test]
    async fn read_frame_parses_and_bounds() {
        let mut ok: &[u8] = &[0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9];
        assert_eq!(
            read_frame(&mut ok, 16).await.unwrap(),
            Some(vec![0, 0, 0, 2, 7, 8])
        );
        assert_eq!(
            read_frame(&mut ok, 16).await.unwrap(),
            Some(vec![0, 0, 0, 1, 9])
        );
        assert_eq!(read_frame(&mut ok, 16).await.unwrap(), None);
        let mut big: &[u8] = &[0, 0, 0, 17];
        assert!(read_frame(&mut big, 16).await.is_err());
        let mut torn: &[u8] = &[0, 0, 0, 4, 1];
        assert!(read_frame(&mut torn, 16).await.is_err());
    }

    #[tokio::test]
    async fn control_protocol() {
        let (addr, _up) = upstream().await;
        let mut proxy = proxy_to(addr).await;
        assert!(control_command(&proxy, "cut 1 2").starts_with("ok"));
        assert!(proxy.rule((1, 2)).cut && !proxy.rule((2, 1)).cut);
        assert!(control_command(&proxy, "isolate 3").starts_with("ok cut 4"));
        assert!(control_command(&proxy, "partition 1 2,3").starts_with("ok cut 4"));
        assert!(control_command(&proxy, "delay * 2 100 20").starts_with("ok delayed 2"));
        assert_eq!(proxy.rule((3, 2)).delay_ms, 100);
        assert!(control_command(&proxy, "drop 2 1 30").starts_with("ok"));
        assert_eq!(proxy.rule((2, 1)).drop_permille, 300);
        for bad in [
            "cut 1 9",
            "cut x 2",
            "drop 1 2 101",
            "delay 1 2 99999999",
            "frobnicate",
            "partition , 1",
        ] {
            assert!(control_command(&proxy, bad).starts_with("error"), "{bad}");
        }
        assert!(control_command(&proxy, "status").contains("1 -> 2  CUT"));
        assert!(control_command(&proxy, "restore all").starts_with("ok"));
        assert!(proxy.faulty_links().is_empty());

        // Over the wire.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let caddr = l.local_addr().unwrap();
        proxy.serve_control(l);
        let s = TcpStream::connect(caddr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"cut 2 3\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "ok cut 1 link(s)\n");
        assert!(proxy.rule((2, 3)).cut);
        w.write_all(&[b'x'; 400]).await.unwrap();
        w.write_all(b"\n").await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("error: line longer"), "{line}");
    }
}
