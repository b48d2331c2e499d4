//! etcd's Watch service: one bidirectional stream carries any number of watchers.
//!
//! Semantics are etcd v3's: create with key / range_end, `start_revision` (0 = from the next
//! revision; a past one replays history, then goes live), `prev_kv`, NOPUT / NODELETE
//! filters, `progress_notify`, client-chosen `watch_id` (a duplicate is refused with etcd's
//! reason; ids chosen here are never reused on a stream), cancel, and `fragment`. A range
//! holding no key (range_end at or below key) is refused as etcd refuses it. A watcher whose start revision was compacted is created
//! and then cancelled with `compact_revision` set. A `ProgressRequest` is answered (watch_id
//! −1, the member's revision) only once every watcher on the stream has caught up, so the
//! revision it reports is one the client has seen everything up to.
//!
//! Events come from the member's [`WatchHub`]: only applied revisions, in revision order, a
//! revision never split across responses (several may share one) unless the watcher asked
//! for fragments and one revision alone is larger than the request limit. The stream's task
//! keeps only cursors: responses go to the client through a small bounded channel, so a slow
//! client slows only its own stream and a watcher that falls behind reads history from the
//! engine a page at a time (see `synod_node::watch`).

use crate::convert::{self, key_value};
use crate::error::api_error_to_status;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::mvccpb;
use crate::service::EtcdService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use synod_core::EngineError;
use synod_core::kv::{EventKind, WatchEvent};
use synod_node::watch::{Cursor, CursorError, WatchFilter, WatchHubs};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses queued to one client stream; a client that reads slower than this blocks only
/// its own stream's task.
const STREAM_RESPONSES_MAX: usize = 16;
/// Revisions one watcher reads per round, so one far-behind watcher cannot starve the others
/// on its stream or the stream's control messages.
const REVISIONS_PER_ROUND: usize = 64;
/// A response carrying more than this many bytes of events is sent and the next revision
/// starts a new one (revisions are never split for it).
const RESPONSE_BYTES_SOFT_MAX: usize = 1 << 20;
/// Watchers one stream may hold; more are refused (bounded memory per client).
const WATCHERS_PER_STREAM_MAX: usize = 65_536;
/// etcd's reason for a duplicate client-chosen watch id.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's reason for a watch whose range_end is at or below its key.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

#[tonic::async_trait]
impl Watch for EtcdService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let hubs = match self.handle.watch_hubs() {
            Ok(hubs) => hubs.clone(),
            Err(e) => {
                self.handle
                    .metrics()
                    .observe_request("grpc", "watch", "unimplemented", 0.0);
                return Err(api_error_to_status(&e));
            }
        };
        let (tx, rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        let limits = &self.handle.info().limits;
        let stream = WatchStream {
            svc: self.clone(),
            hubs,
            out: tx,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            progress_requested: false,
            fragment_bytes: limits.request_bytes_max.max(1024),
            progress_every: Duration::from_millis(limits.watch_progress_notify_ms.max(10)),
        };
        self.handle
            .metrics()
            .observe_request("grpc", "watch", "ok", 0.0);
        // The stream's task runs as the caller that opened it: each create is checked.
        let caller = synod_node::auth::current();
        tokio::spawn(synod_node::auth::scope(
            caller,
            stream.run(request.into_inner()),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Watcher {
    filter: WatchFilter,
    /// Its place in its keys' revision stream (`next`: the next revision it needs).
    cursor: Cursor,
    progress_notify: bool,
    fragment: bool,
    /// When it was last sent anything (for progress notifications).
    last_sent: Instant,
}

/// The client went away: the stream's task ends.
struct Gone;

struct WatchStream {
    svc: EtcdService,
    hubs: Arc<WatchHubs>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    progress_requested: bool,
    fragment_bytes: usize,
    progress_every: Duration,
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        let mut head = self.hubs.subscribe();
        let mut stopping = self.svc.stopping.clone();
        let mut ticker = tokio::time::interval(self.progress_every.min(Duration::from_secs(1)));
        let mut half_closed = false;
        loop {
            if *stopping.borrow() {
                return;
            }
            let Ok(behind) = self.serve_round().await else {
                return;
            };
            if self.progress_requested
                && !behind
                && let Some(revision) = self.progress()
            {
                self.progress_requested = false;
                if self.send(self.response(-1, revision)).await.is_err() {
                    return;
                }
                for w in self.watchers.values() {
                    w.cursor.claim(revision);
                }
            }
            tokio::select! {
                biased;
                () = self.out.closed() => return,
                // Server shutdown: ending the stream lets the client reconnect elsewhere.
                r = stopping.changed() => if r.is_err() || *stopping.borrow() {
                    return;
                },
                r = requests.message(), if !half_closed => match r {
                    Ok(Some(req)) => {
                        if self.handle_request(req).await.is_err() {
                            return;
                        }
                    }
                    // The client may stop sending and keep reading (etcd keeps serving).
                    Ok(None) => half_closed = true,
                    Err(status) => {
                        tracing::debug!(%status, "watch stream: client request error");
                        return;
                    }
                },
                // Work left from the last round: go round again without waiting.
                () = std::future::ready(()), if behind => {}
                _ = head.changed() => {}
                _ = ticker.tick() => {
                    if self.notify_progress().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn response(&self, watch_id: i64, revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.svc.header_at(revision)),
            watch_id,
            ..Default::default()
        }
    }

    /// etcd's answer to a create it refuses: created and cancelled at once, watch id −1.
    fn refusal(&self, revision: u64, reason: &str) -> pb::WatchResponse {
        let mut r = self.response(-1, revision);
        r.created = true;
        r.canceled = true;
        r.cancel_reason = reason.to_string();
        r
    }

    async fn send(&self, r: pb::WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(r)).await.map_err(|_| Gone)
    }

    async fn handle_request(&mut self, req: pb::WatchRequest) -> Result<(), Gone> {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                // etcd answers only a cancel of a watcher that exists.
                if let Some(w) = self.watchers.remove(&c.watch_id) {
                    let mut r = self.response(c.watch_id, w.cursor.head());
                    r.canceled = true;
                    self.send(r).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), Gone> {
        let head = self.hubs.head();
        // etcd refuses a range holding no key, before it assigns an id: an end at or below
        // the key (an end of "\0" is no end: every key from `key` on).
        if !c.range_end.is_empty() && c.range_end != [0] && c.range_end <= c.key {
            return self.send(self.refusal(head, EMPTY_RANGE)).await;
        }
        // The whole watched range must be readable (etcd's rule); checked when the watcher is
        // created, like etcd, not again for each event.
        if let Err(e) = self.svc.handle.auth().require_read(&c.key, &c.range_end) {
            let status = api_error_to_status(&e);
            return self.send(self.refusal(head, status.message())).await;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            // Like etcd, never hand out an id twice on one stream, even after a cancel: the
            // client may still be tearing down the old watcher under that id.
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        if id < 0 {
            let reason = "synod: watch_id must not be negative";
            return self.send(self.refusal(head, reason)).await;
        }
        if self.watchers.contains_key(&id) {
            return self.send(self.refusal(head, DUPLICATE_WATCH_ID)).await;
        }
        if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            let reason = format!(
                "synod: at most {WATCHERS_PER_STREAM_MAX} watchers per stream; open another stream"
            );
            return self.send(self.refusal(head, &reason)).await;
        }
        use pb::watch_create_request::FilterType;
        let filter = WatchFilter {
            key: c.key,
            range_end: c.range_end,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        // etcd reads a start revision of 0 or below as "from the next revision" (of the
        // keys' group, partitioned).
        let start = u64::try_from(c.start_revision).ok().filter(|r| *r > 0);
        // Groups hosted elsewhere (placement) are read through remote hubs, started here.
        let prepared = self.hubs.prepare(&filter.key, &filter.range_end).await;
        let made = prepared.and_then(|()| self.hubs.cursor(&filter.key, &filter.range_end, start));
        let cursor = match made {
            Ok(cursor) => cursor,
            Err(reason) => return self.send(self.refusal(head, &reason)).await,
        };
        let head = cursor.head();
        self.watchers.insert(
            id,
            Watcher {
                filter,
                cursor,
                progress_notify: c.progress_notify,
                fragment: c.fragment,
                last_sent: Instant::now(),
            },
        );
        let mut r = self.response(id, head);
        r.created = true;
        self.send(r).await
    }

    /// One bounded round over every watcher that is behind the head. Returns whether any is
    /// still behind afterwards.
    async fn serve_round(&mut self) -> Result<bool, Gone> {
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.cursor.ready())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.serve_one(id).await?;
        }
        Ok(self.watchers.values().any(|w| w.cursor.ready()))
    }

    /// The revision a stream-wide progress response may claim: every watcher on the stream
    /// has seen everything up to it in its own group (the lowest, when they differ). `None`
    /// while a watcher may claim none (`Cursor::progress`): the answer waits.
    fn progress(&self) -> Option<u64> {
        let mut heads = self.watchers.values().map(|w| w.cursor.progress());
        let lowest = heads.try_fold(u64::MAX, |low, h| h.map(|h| low.min(h)))?;
        Some(match self.watchers.is_empty() {
            true => self.hubs.head(),
            false => lowest,
        })
    }

    async fn serve_one(&mut self, id: i64) -> Result<(), Gone> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        match w.cursor.read(REVISIONS_PER_ROUND).await {
            Ok(revs) => {
                let next = w.cursor.next();
                let mut batch: Vec<mvccpb::Event> = Vec::new();
                let mut batch_bytes = 0;
                let mut through = next.saturating_sub(1);
                let mut out = Vec::new();
                for rev in &revs {
                    let events = w.filter.select(rev);
                    through = rev.revision;
                    w.cursor.advance(rev.revision + 1);
                    if events.is_empty() {
                        continue;
                    }
                    batch_bytes += events.iter().map(event_bytes).sum::<usize>();
                    batch.extend(events.into_iter().map(event));
                    if batch_bytes >= RESPONSE_BYTES_SOFT_MAX {
                        out.push((std::mem::take(&mut batch), through));
                        batch_bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    out.push((batch, through));
                }
                let fragment = w.fragment;
                if !out.is_empty() {
                    w.last_sent = Instant::now();
                }
                for (events, through) in out {
                    self.send_events(id, events, through, fragment).await?;
                }
                Ok(())
            }
            Err(e) => {
                let head = w.cursor.head();
                self.watchers.remove(&id);
                let mut r = self.response(id, head);
                r.canceled = true;
                match e {
                    CursorError::Engine(EngineError::Compacted { compact_revision }) => {
                        r.compact_revision = i64::try_from(compact_revision).unwrap_or(i64::MAX);
                        r.cancel_reason = synod_core::ERR_COMPACTED.to_string();
                    }
                    CursorError::Engine(other) => r.cancel_reason = format!("synod: {other}"),
                    CursorError::Moved(reason) => r.cancel_reason = reason,
                }
                self.send(r).await
            }
        }
    }

    /// Sends one watcher's events as one response, or — if it asked for fragments and they
    /// exceed the request limit — as several, all but the last marked `fragment`.
    async fn send_events(
        &self,
        id: i64,
        events: Vec<mvccpb::Event>,
        through: u64,
        fragment: bool,
    ) -> Result<(), Gone> {
        let total: usize = events.iter().map(prost::Message::encoded_len).sum();
        if !fragment || total <= self.fragment_bytes {
            let mut r = self.response(id, through);
            r.events = events;
            return self.send(r).await;
        }
        let mut parts: Vec<Vec<mvccpb::Event>> = vec![Vec::new()];
        let mut part_bytes = 0;
        for e in events {
            let n = prost::Message::encoded_len(&e);
            if part_bytes + n > self.fragment_bytes && !parts.last().is_none_or(Vec::is_empty) {
                parts.push(Vec::new());
                part_bytes = 0;
            }
            part_bytes += n;
            if let Some(p) = parts.last_mut() {
                p.push(e);
            }
        }
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            let mut r = self.response(id, through);
            r.events = part;
            r.fragment = i < last;
            self.send(r).await?;
        }
        Ok(())
    }

    /// Caught-up watchers that asked for progress notifications and were sent nothing for a
    /// whole interval get an empty response stamped with the revision they have seen through
    /// (`Cursor::progress`).
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let every = self.progress_every;
        let due: Vec<(i64, u64)> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.last_sent.elapsed() >= every)
            .filter_map(|(id, w)| Some((*id, w.cursor.progress()?)))
            .collect();
        for (id, head) in due {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.last_sent = Instant::now();
                w.cursor.claim(head);
            }
            self.send(self.response(id, head)).await?;
        }
        Ok(())
    }
}

fn event_bytes(e: &WatchEvent) -> usize {
    let kv = |k: &synod_core::kv::KeyValue| 48 + k.key.len() + k.value.len();
    kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv)
}

fn event(e: WatchEvent) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(convert::key_value),
    }
}
