//! `synodctl watch`: follows `GET /v1/watch` (NDJSON, one JSON object per line) and prints
//! each revision's events as they arrive, until interrupted (Ctrl-C) or stdout closes.
//!
//! **Resuming.** The command remembers the next revision it needs: the created line's
//! `start_revision`, then one past each revision printed or progress line seen. If a stream
//! breaks — the endpoint dies, goes silent for longer than the heartbeat allows
//! ([`crate::client::STREAM_SILENCE_MAX`]), or ends the stream at shutdown — the watch is
//! reopened at the next endpoint from that revision, so nothing is missed or printed twice.
//! Streams that break before reporting anything count as failures: after one per endpoint
//! in a row the command gives up. A stream cancelled because the history it needed was
//! compacted cannot be resumed: that is an error (`compacted`, exit 1).

use crate::args::{Format, WatchArgs};
use crate::client::{Client, CtlError, RESPONSE_BYTES_MAX, Request, STREAM_PROGRESS_MS, Stream};
use crate::output;
use reqwest::Method;
use serde_json::Value;
use std::io::{BufRead, Read, Write};

/// How one stream ended, when that is not an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The stream broke; `reported` says whether it gave anything (an event or progress).
    Broken { reason: String, reported: bool },
    /// Nobody reads our output any more (`synodctl watch k | head -3`).
    OutputClosed,
}

pub fn run(
    client: &mut Client,
    format: Format,
    args: &WatchArgs,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    // 0 until the first stream says where "from now on" starts.
    let mut next = args.rev;
    let mut fruitless = 0;
    loop {
        let stream = client.open_stream(&request(args, next)?)?;
        let endpoint = stream.endpoint.clone();
        match follow(stream, format, &mut next, out)? {
            Ended::OutputClosed => return Ok(()),
            Ended::Broken { reason, reported } => {
                fruitless = if reported { 0 } else { fruitless + 1 };
                if fruitless >= client.endpoint_count() {
                    return Err(CtlError::Unreachable(vec![format!(
                        "{endpoint}: the watch stream broke ({reason}); no endpoint kept one open"
                    )]));
                }
                eprintln!(
                    "synodctl: the watch stream from {endpoint} broke ({reason}); resuming at revision {next}"
                );
                client.skip_preferred();
            }
        }
    }
}

/// `GET /v1/watch` for `args`, from revision `start` (0 = from now on).
fn request(args: &WatchArgs, start: u64) -> Result<Request, CtlError> {
    let mut req = Request::new(Method::GET, "/v1/watch".into());
    req = match (&args.range_end, args.prefix) {
        (_, true) => req.query("prefix", args.key.clone()),
        _ if args.key.is_empty() => {
            return Err(CtlError::Usage(
                "the key must not be empty (watch every key with --prefix '')".into(),
            ));
        }
        (Some(end), false) => req.query("key", args.key.clone()).query("end", end.clone()),
        (None, false) => req.query("key", args.key.clone()),
    };
    if start > 0 {
        req = req.query("start_revision", start.to_string());
    }
    if args.prev_kv {
        req = req.query("prev_kv", "true");
    }
    // The heartbeat that lets a silent stream be told from a dead one.
    Ok(req.query("progress_notify_ms", STREAM_PROGRESS_MS.to_string()))
}

/// Reads one stream to its end, printing events and moving `next` along.
fn follow(
    stream: Stream,
    format: Format,
    next: &mut u64,
    out: &mut dyn Write,
) -> Result<Ended, CtlError> {
    let Stream {
        endpoint,
        mut reader,
    } = stream;
    let mut reported = false;
    let mut line = String::new();
    loop {
        line.clear();
        let broken = |reason: String| Ended::Broken { reason, reported };
        match (&mut reader).take(RESPONSE_BYTES_MAX).read_line(&mut line) {
            Ok(0) => return Ok(broken("the server closed it".into())),
            Ok(_) if !line.ends_with('\n') => return Ok(broken("cut off mid-line".into())),
            Ok(_) => {}
            Err(e) => return Ok(broken(format!("reading: {e}"))),
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| CtlError::BadAnswer {
            endpoint: endpoint.clone(),
            reason: format!("a watch line that is not JSON: {e}"),
        })?;
        if v.get("created").is_some() {
            if *next == 0 {
                *next = v["start_revision"].as_u64().unwrap_or(0);
            }
        } else if let Some(p) = v.get("progress_revision").and_then(Value::as_u64) {
            *next = (*next).max(p + 1);
            reported = true;
        } else if v.get("canceled").is_some() {
            return canceled(&endpoint, v).map(|reason| Ended::Broken { reason, reported });
        } else if let Some(revision) = v.get("revision").and_then(Value::as_u64) {
            *next = revision + 1;
            reported = true;
            let text = match format {
                Format::Json => line.trim_end().to_string(),
                Format::Simple | Format::Table => output::watch_events(&v),
            };
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return Ok(Ended::OutputClosed);
            }
        }
        // Any other line is a shape this version does not know: skip it.
    }
}

/// A `canceled` line: the reason if the watch can resume elsewhere, the error if not.
fn canceled(endpoint: &str, line: Value) -> Result<String, CtlError> {
    let reason = line["reason"]
        .as_str()
        .unwrap_or("no reason given")
        .to_string();
    match line.get("compact_revision").and_then(Value::as_u64) {
        None => Ok(format!("canceled: {reason}")),
        Some(c) => Err(CtlError::Server {
            endpoint: endpoint.to_string(),
            status: 200,
            code: "compacted".into(),
            message: format!(
                "{reason} (compacted up to revision {c}); read the keys again, then watch from \
                 that read's revision + 1"
            ),
            body: line,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(key: &str, range_end: Option<&str>, prefix: bool) -> WatchArgs {
        WatchArgs {
            key: key.into(),
            range_end: range_end.map(str::to_string),
            prefix,
            rev: 0,
            prev_kv: true,
        }
    }

    fn query(r: &Request) -> Vec<(&str, &str)> {
        r.query.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn requests_name_the_keys_the_start_and_a_heartbeat() {
        let heartbeat = STREAM_PROGRESS_MS.to_string();
        let r = request(&args("a", None, false), 0).unwrap();
        assert_eq!(r.path, "/v1/watch");
        assert_eq!(
            query(&r),
            [
                ("key", "a"),
                ("prev_kv", "true"),
                ("progress_notify_ms", heartbeat.as_str())
            ]
        );
        let r = request(&args("a", Some("c"), false), 7).unwrap();
        assert_eq!(
            &query(&r)[..3],
            [("key", "a"), ("end", "c"), ("start_revision", "7")]
        );
        let r = request(&args("", None, true), 0).unwrap();
        assert_eq!(query(&r)[0], ("prefix", ""));
        let e = request(&args("", None, false), 0).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    /// Runs `follow` over a canned stream body served by a one-shot HTTP stub.
    fn follow_body(body: &'static str, next: &mut u64) -> (Result<Ended, CtlError>, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let mut client = Client::new(&[addr], Duration::from_secs(5)).unwrap();
        let stream = client
            .open_stream(&Request::new(Method::GET, "/v1/watch".into()))
            .unwrap();
        let mut out = Vec::new();
        let ended = follow(stream, Format::Simple, next, &mut out);
        (ended, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_stream_moves_the_resume_point_and_prints_events() {
        let body = concat!(
            r#"{"created":true,"revision":4,"start_revision":5}"#,
            "\n",
            r#"{"revision":5,"events":[{"type":"put","kv":{"key":"a","value":"1","version":1,"create_revision":5,"mod_revision":5},"prev_kv":null}]}"#,
            "\n",
            r#"{"progress_revision":9}"#,
            "\n",
            r#"{"canceled":true,"reason":"the server is shutting down"}"#,
            "\n",
        );
        let mut next = 0;
        let (ended, out) = follow_body(body, &mut next);
        assert_eq!(
            ended.unwrap(),
            Ended::Broken {
                reason: "canceled: the server is shutting down".into(),
                reported: true
            }
        );
        assert_eq!(out, "PUT\na\n1\n");
        assert_eq!(next, 10, "resumes after the progress revision");
    }

    #[test]
    fn a_compacted_stream_is_an_error_and_a_cut_one_is_not() {
        let body = concat!(
            r#"{"created":true,"revision":9,"start_revision":2}"#,
            "\n",
            r#"{"canceled":true,"reason":"compacted","compact_revision":6}"#,
            "\n",
        );
        let mut next = 2;
        let (ended, _) = follow_body(body, &mut next);
        let e = ended.unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("compacted: "), "{e}");
        assert!(e.to_string().contains("revision 6"), "{e}");

        let mut next = 3;
        let (ended, _) = follow_body(r#"{"created":true,"revision":2,"start_re"#, &mut next);
        assert_eq!(
            ended.unwrap(),
            Ended::Broken {
                reason: "cut off mid-line".into(),
                reported: false
            }
        );
        assert_eq!(next, 3);
    }
}
