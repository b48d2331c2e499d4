//! Formats API answers for `-w simple|json|table`, modelled on etcdctl: `simple` is for
//! people and shell pipelines (`get` prints the key, then the value, on two lines), `json` is
//! the server's answer verbatim on one line (for `jq`), `table` aligns key lists, status and
//! members in bordered columns.
//!
//! Every function returns the text to print (without the final newline) so tests can compare
//! strings. Fields are read from the JSON by name rather than through typed structs, so a field
//! the server adds later never breaks the CLI, and a missing one shows as `-`.

use crate::args::Format;
use crate::client::CtlError;
use serde_json::Value;

/// Columns of a KV row in table form, in the order of the KV object in the API contract.
const KV_COLUMNS: [&str; 5] = ["key", "value", "version", "create_revision", "mod_revision"];

/// Fields of `/v1/status` shown in simple and table form (json shows everything).
const STATUS_FIELDS: [&str; 14] = [
    "member_id",
    "cluster_name",
    "engine",
    "version",
    "leader",
    "role",
    "term",
    "revision",
    "decided_index",
    "applied_index",
    "keys",
    "pending_requests",
    "connected_peers",
    "db_size_bytes",
];

const MEMBER_FIELDS: [&str; 6] = [
    "id",
    "name",
    "peer_addr",
    "http_addr",
    "grpc_addr",
    "learner",
];

/// A field rendered for people: strings as they are, `null`/missing as `-`, lists joined.
pub fn field(v: &Value, name: &str) -> String {
    scalar(v.get(name).unwrap_or(&Value::Null))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn json(body: &Value) -> String {
    body.to_string()
}

/// `put`: etcdctl prints `OK`.
pub fn put(format: Format, body: &Value) -> String {
    match format {
        Format::Json => json(body),
        Format::Simple | Format::Table => "OK".to_string(),
    }
}

/// `get KEY`: `{"kv": KV, ...}`.
pub fn get_one(format: Format, body: &Value, keys_only: bool) -> String {
    match format {
        Format::Json => json(body),
        _ => {
            let kvs: Vec<Value> = body.get("kv").cloned().into_iter().collect();
            kvs_text(format, &kvs, keys_only)
        }
    }
}

/// `get --prefix` / ranges: `{"kvs": [KV...], "count", "more", ...}`.
pub fn get_many(format: Format, body: &Value, keys_only: bool) -> String {
    match format {
        Format::Json => json(body),
        _ => {
            let kvs = body
                .get("kvs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            kvs_text(format, &kvs, keys_only)
        }
    }
}

fn kvs_text(format: Format, kvs: &[Value], keys_only: bool) -> String {
    let columns: &[&str] = if keys_only {
        &KV_COLUMNS[..1]
    } else {
        &KV_COLUMNS
    };
    if format == Format::Table {
        let rows = kvs
            .iter()
            .map(|kv| columns.iter().map(|c| field(kv, c)).collect())
            .collect::<Vec<_>>();
        return table(columns, &rows);
    }
    // Simple: key and value on their own lines, like etcdctl; the value verbatim so that
    // `synodctl get k | tail -n1` gives back exactly what was put (single-line values).
    let mut lines = Vec::new();
    for kv in kvs {
        lines.push(field(kv, "key"));
        if !keys_only {
            lines.push(field(kv, "value"));
        }
    }
    lines.join("\n")
}

/// `del`: etcdctl prints the number of keys deleted.
pub fn del(format: Format, body: &Value) -> String {
    match format {
        Format::Json => json(body),
        _ => field(body, "deleted"),
    }
}

/// `cas` that succeeded (a failed one is a 409 error, see [`error`]).
pub fn cas(format: Format, body: &Value) -> String {
    match format {
        Format::Json => json(body),
        _ => "OK".to_string(),
    }
}

/// `compact`: etcdctl's line.
pub fn compact(format: Format, body: &Value) -> String {
    match format {
        Format::Json => json(body),
        _ => format!("compacted revision {}", field(body, "compact_revision")),
    }
}

/// One revision line of `watch` (`{"revision", "events": [...]}`) as etcdctl prints events:
/// per event its type (`PUT` / `DELETE`), then the previous key and value if the line has
/// them, then the key and value (a deleted key's value is empty, so that line is blank).
pub fn watch_events(line: &Value) -> String {
    let events = line
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut lines = Vec::new();
    for e in events {
        lines.push(field(e, "type").to_uppercase());
        for kv in [e.get("prev_kv"), e.get("kv")].into_iter().flatten() {
            if kv.is_object() {
                lines.push(field(kv, "key"));
                lines.push(kv.get("value").and_then(Value::as_str).unwrap_or("").into());
            }
        }
    }
    lines.join("\n")
}

/// `count`: the number alone, for scripts.
pub fn count(format: Format, body: &Value) -> String {
    match format {
        Format::Json => json(body),
        _ => field(body, "count"),
    }
}

/// `status`: one answer per endpoint (one for plain `status`, all for `status --all`).
pub fn status(format: Format, answers: &[(String, Value)]) -> String {
    match format {
        Format::Json => answers
            .iter()
            .map(|(_, body)| json(body))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Simple => answers
            .iter()
            .map(|(endpoint, body)| {
                let width = STATUS_FIELDS.iter().map(|f| f.len()).max().unwrap_or(0);
                let mut lines = vec![format!("{:width$}  {endpoint}", "endpoint")];
                for f in STATUS_FIELDS {
                    lines.push(format!("{f:width$}  {}", field(body, f)));
                }
                lines.join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
        Format::Table => {
            let mut header = vec!["endpoint"];
            header.extend(STATUS_FIELDS);
            let rows = answers
                .iter()
                .map(|(endpoint, body)| {
                    let mut row = vec![endpoint.clone()];
                    row.extend(STATUS_FIELDS.iter().map(|f| field(body, f)));
                    row
                })
                .collect::<Vec<_>>();
            table(&header, &rows)
        }
    }
}

/// `members`: `{"members": [...]}`; simple is etcdctl's comma-separated line per member.
pub fn members(format: Format, body: &Value) -> String {
    let members = body
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows = members
        .iter()
        .map(|m| {
            MEMBER_FIELDS
                .iter()
                .map(|f| field(m, f))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    match format {
        Format::Json => json(body),
        Format::Simple => rows
            .iter()
            .map(|r| r.join(", "))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Table => table(&MEMBER_FIELDS, &rows),
    }
}

const RANGE_FIELDS: [&str; 9] = [
    "group",
    "start",
    "end",
    "members",
    "leader",
    "preferred_leader",
    "applied_index",
    "revision",
    "keys",
];

/// `range list`, from a member's `/v1/status`: its `groups`, or the whole keyspace as one
/// range when the cluster is not partitioned. Every group spans every member.
pub fn ranges(format: Format, body: &Value) -> String {
    if format == Format::Json {
        return json(body.get("groups").unwrap_or(&Value::Null));
    }
    let members: Vec<String> = body
        .get("members")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(|m| field(m, "id")).collect())
        .unwrap_or_default();
    let whole = serde_json::json!([{
        "group": 0, "start": "", "end": "",
        "leader": body.get("leader"), "preferred_leader": null,
        "applied_index": body.get("applied_index"), "revision": body.get("revision"),
        "keys": body.get("keys"),
    }]);
    let mut groups = match body.get("groups").and_then(Value::as_array) {
        Some(g) if !g.is_empty() => g.clone(),
        _ => whole.as_array().cloned().unwrap_or_default(),
    };
    if let Some(d) = body.get("directory").filter(|d| d["placed"] == true) {
        groups = with_placed_ranges(groups, d);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            RANGE_FIELDS
                .iter()
                .map(|f| match *f {
                    "members" => group_members(g).unwrap_or_else(|| members.join(",")),
                    "end" if field(g, "end").is_empty() => "(end)".to_string(),
                    // A split-off group's id is a 53-bit hash: its short name reads better.
                    "group" if !field(g, "name").is_empty() => field(g, "name"),
                    _ => field(g, f),
                })
                .collect()
        })
        .collect();
    let mut out = match format {
        Format::Simple | Format::Table => table(&RANGE_FIELDS, &rows),
        Format::Json => unreachable!("answered above"),
    };
    if let Some(d) = body.get("directory") {
        out.push_str(&directory_line(d));
        for m in d
            .get("moves")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "\nmoving: group {} from member {} to member {} (recorded; its leader goes on \
                 with it)",
                field(m, "name"),
                field(m, "from"),
                field(m, "to")
            ));
        }
    }
    for f in body
        .get("failed_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "\nFAILED: group {} did not start on this member: {}",
            field(f, "name"),
            field(f, "error")
        ));
    }
    out
}

/// Placement: a member runs some groups only, so the directory's other ranges are added, in
/// key order, with the members the directory names and no figures (`-`): only their hosts
/// know them.
fn with_placed_ranges(hosted: Vec<Value>, d: &Value) -> Vec<Value> {
    let recorded = d.get("ranges").and_then(Value::as_array);
    let recorded: Vec<&Value> = recorded.into_iter().flatten().collect();
    let mut rows = Vec::with_capacity(recorded.len());
    for (i, r) in recorded.iter().enumerate() {
        if r["group"].is_null() {
            continue; // an entry that only ends the range before it
        }
        let here = hosted.iter().find(|g| g["group"] == r["group"]);
        rows.push(match here {
            Some(g) => (*g).clone(),
            None => serde_json::json!({
                "group": r["group"], "name": r["name"], "start": r["start"],
                "end": recorded.get(i + 1).map_or(Value::from(""), |n| n["start"].clone()),
                "voters": r["members"], "learners": [],
                "leader": "-", "preferred_leader": "-", "applied_index": "-",
                "revision": "-", "keys": "-",
            }),
        });
    }
    rows
}

/// The range directory under `range list`'s table: its group's leader and how far it applied,
/// then whether it records the ranges above or which it records instead.
fn directory_line(d: &Value) -> String {
    let ranges: Vec<String> = d
        .get("ranges")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| format!("{}@{:?}", field(r, "name"), field(r, "start")))
                .collect()
        })
        .unwrap_or_default();
    let agrees = d.get("matches_layout").and_then(Value::as_bool) == Some(true);
    format!(
        "\ndirectory: leader {}, applied {}; {}",
        field(d, "leader"),
        field(d, "applied_index"),
        match (agrees, d["placed"] == true) {
            (true, false) => format!("records these {} ranges", ranges.len()),
            (true, true) => format!(
                "records these {} ranges; groups live on some members each (- where this \
                 member does not host it)",
                ranges.len()
            ),
            (false, _) => format!("behind the layout, records {}", ranges.join(" ")),
        }
    )
}

/// A group's own members (`1,2,3,4(learner)`), which differ from the cluster's only while a
/// membership change spreads through the groups; `None` from a member that does not say.
fn group_members(g: &Value) -> Option<String> {
    let ids = |f: &str| -> Option<Vec<String>> {
        g.get(f)?
            .as_array()?
            .iter()
            .map(|v| v.as_u64().map(|id| id.to_string()))
            .collect()
    };
    let mut out = ids("voters")?;
    out.extend(
        ids("learners")?
            .into_iter()
            .map(|id| format!("{id}(learner)")),
    );
    Some(out.join(","))
}

/// A split's answer: `Range [START, KEY) kept; KEY.. is a new group (from log index N)`.
pub fn range_split(format: Format, body: &Value) -> String {
    if format == Format::Json {
        return json(body);
    }
    let end = |k: &str| {
        if k.is_empty() {
            "(end)".to_string()
        } else {
            k.to_string()
        }
    };
    format!(
        "Range [{}, {}) kept; {}.. is a new group (from log index {})",
        field(body, "start"),
        end(&field(body, "end")),
        field(body, "new_start"),
        field(body, "index"),
    )
}

/// A split (`split`) or a merge whose retry found the layout already as asked, after an
/// attempt that got no answer: says so, and that the earlier attempt may be what did it.
pub fn range_already(format: Format, key: &str, split: bool, endpoint: &str) -> String {
    let (state, done) = if split {
        ("begins", "split")
    } else {
        ("no longer begins", "merged")
    };
    if format == Format::Json {
        return json(&serde_json::json!({
            "key": key,
            "already": done,
            "endpoint": endpoint,
        }));
    }
    format!(
        "A range {state} at {key} (as {endpoint} reports): an earlier attempt that got no \
         answer {done} it, or another change did"
    )
}

/// A merge's answer: `Range [KEY, END) merged into the range below (frozen at log index N)`.
pub fn range_merge(format: Format, body: &Value) -> String {
    if format == Format::Json {
        return json(body);
    }
    let end = field(body, "end");
    format!(
        "Range [{}, {}) merged into the range below (frozen at log index {})",
        field(body, "start"),
        if end.is_empty() {
            "(end)"
        } else {
            end.as_str()
        },
        field(body, "index"),
    )
}

/// A move's answer: `Range of KEY now on members 1,3,5`.
pub fn range_move(format: Format, key: &str, body: &Value) -> String {
    if format == Format::Json {
        return json(body);
    }
    let members: Vec<String> = (body.get("members").and_then(Value::as_array))
        .map(|m| m.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    format!("Range of {key:?} now on members {}", members.join(","))
}

/// A membership change's answer: `DONE (configuration version V)` (DONE: "Member 4
/// removed", …); an add's is `Member ID added …` and the new member's line. json is the
/// server's answer.
pub fn member_changed(format: Format, done: &str, body: &Value) -> String {
    if format == Format::Json {
        return json(body);
    }
    let version = field(body, "version");
    match body.get("member") {
        Some(m) => format!(
            "Member {} added (configuration version {version})\n{}",
            field(m, "id"),
            MEMBER_FIELDS
                .iter()
                .map(|f| field(m, f))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("{done} (configuration version {version})"),
    }
}

/// The text for stderr: `Error: code: message (HTTP status from endpoint)`, plus the current
/// value when a compare-and-swap lost, so the user can retry without another `get`.
pub fn error(e: &CtlError) -> String {
    let mut text = format!("Error: {e}");
    if let CtlError::Server { code, body, .. } = e
        && code == "cas_conflict"
    {
        match body.get("kv") {
            Some(kv) if kv.is_object() => text.push_str(&format!(
                "\ncurrent: version={} mod_revision={} value={}",
                field(kv, "version"),
                field(kv, "mod_revision"),
                field(kv, "value"),
            )),
            _ => text.push_str("\ncurrent: (absent)"),
        }
    }
    text
}

/// A bordered table in the style of etcdctl's (headers upper-cased, cells left-aligned).
/// Control characters in cells are escaped so one value cannot break the grid.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape_controls(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let rule = format!("+{rule}+");
    let line = |cells: &[String]| {
        let inner = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count())))
            .collect::<Vec<_>>()
            .join("|");
        format!("|{inner}|")
    };
    let mut out = vec![rule.clone(), line(&header), rule.clone()];
    out.extend(rows.iter().map(|r| line(r)));
    out.push(rule);
    out.join("\n")
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn range_list_shows_each_groups_own_members() {
        let body = json!({
            "members": [{"id": 1}, {"id": 2}, {"id": 3}],
            "groups": [
                {"group": 0, "start": "", "end": "m", "voters": [1, 2, 3], "learners": [4]},
                {"group": 1, "start": "m", "end": "", "voters": [1, 2, 3], "learners": []},
                {"group": 2, "start": "t", "end": ""}
            ]
        });
        let out = ranges(Format::Simple, &body);
        assert!(out.contains("| 1,2,3,4(learner) |"), "{out}");
        assert_eq!(out.matches("| 1,2,3 ").count(), 2, "{out}");
        assert!(!out.contains("directory"), "none kept: {out}");
    }

    #[test]
    fn range_list_names_a_group_that_did_not_start() {
        let body = json!({
            "groups": [{"group": 0, "name": "0", "start": "", "end": "", "leader": 1}],
            "failed_groups": [{"group": 9, "name": "9f00", "error": "no state"}],
        });
        let out = ranges(Format::Simple, &body);
        assert!(
            out.contains("FAILED: group 9f00 did not start on this member: no state"),
            "{out}"
        );
    }

    #[test]
    fn range_list_says_whether_the_directory_records_the_layout() {
        let mut body = json!({
            "groups": [{"group": 0, "start": "", "end": "m"}, {"group": 1, "start": "m", "end": ""}],
            "directory": {"leader": 2, "applied_index": 9, "matches_layout": true,
                          "ranges": [{"start": "", "name": "0"}, {"start": "m", "name": "1"}]}
        });
        let out = ranges(Format::Simple, &body);
        assert!(
            out.ends_with("directory: leader 2, applied 9; records these 2 ranges"),
            "{out}"
        );
        body["directory"]["matches_layout"] = json!(false);
        let out = ranges(Format::Simple, &body);
        assert!(
            out.ends_with("behind the layout, records 0@\"\" 1@\"m\""),
            "{out}"
        );
    }

    #[test]
    fn range_list_of_placed_groups_shows_the_directorys_other_ranges() {
        let body = json!({
            "groups": [
                {"group": 0, "start": "", "end": "m", "voters": [1, 2, 3, 4, 5], "learners": [],
                 "leader": 1, "keys": 4},
            ],
            "directory": {"leader": 2, "applied_index": 9, "matches_layout": true, "placed": true,
                          "ranges": [
                              {"start": "", "group": 0, "name": "0", "members": [1, 2, 3, 4, 5]},
                              {"start": "m", "group": 1, "name": "1", "members": [2, 3, 4]}]}
        });
        let out = ranges(Format::Simple, &body);
        assert!(out.contains("| 1,2,3,4,5 | 1 "), "{out}");
        assert!(
            out.contains("| 1     | m     | (end) | 2,3,4     | -      |"),
            "{out}"
        );
        assert!(
            out.contains("records these 2 ranges; groups live on some"),
            "{out}"
        );
    }

    fn kv(k: &str, v: &str, version: u64) -> Value {
        json!({"key": k, "value": v, "version": version, "create_revision": 2, "mod_revision": 7})
    }

    #[test]
    fn get_simple_is_key_then_value() {
        let body = json!({"kv": kv("a", "hello world", 1), "revision": 7});
        assert_eq!(get_one(Format::Simple, &body, false), "a\nhello world");
        assert_eq!(get_one(Format::Simple, &body, true), "a");
        assert_eq!(get_one(Format::Json, &body, false), body.to_string());
        let list = json!({"kvs": [kv("a", "1", 1), kv("b", "2", 3)], "count": 2, "more": false});
        assert_eq!(get_many(Format::Simple, &list, false), "a\n1\nb\n2");
        assert_eq!(get_many(Format::Simple, &list, true), "a\nb");
        assert_eq!(get_many(Format::Simple, &json!({"kvs": []}), false), "");
    }

    #[test]
    fn kv_table_aligns_columns() {
        let list = json!({"kvs": [kv("a", "1", 1), kv("bee", "two\nlines", 12)]});
        let expected = "\
+-----+------------+---------+-----------------+--------------+
| KEY | VALUE      | VERSION | CREATE_REVISION | MOD_REVISION |
+-----+------------+---------+-----------------+--------------+
| a   | 1          | 1       | 2               | 7            |
| bee | two\\nlines | 12      | 2               | 7            |
+-----+------------+---------+-----------------+--------------+";
        assert_eq!(get_many(Format::Table, &list, false), expected);
        let keys = get_many(Format::Table, &list, true);
        assert!(
            keys.contains("| KEY |") && !keys.contains("VALUE"),
            "{keys}"
        );
    }

    #[test]
    fn writes_and_counts() {
        let body = json!({"kv": kv("a", "1", 1), "prev_kv": null, "revision": 7});
        assert_eq!(put(Format::Simple, &body), "OK");
        assert_eq!(put(Format::Table, &body), "OK");
        assert_eq!(put(Format::Json, &body), body.to_string());
        assert_eq!(
            del(Format::Simple, &json!({"deleted": 1, "revision": 8})),
            "1"
        );
        assert_eq!(cas(Format::Simple, &json!({"succeeded": true})), "OK");
        assert_eq!(
            count(Format::Simple, &json!({"kvs": [], "count": 42})),
            "42"
        );
    }

    #[test]
    fn watch_events_print_like_etcdctl() {
        let line = json!({"revision": 7, "events": [
            {"type": "put", "kv": kv("a", "new", 2), "prev_kv": kv("a", "old", 1)},
            {"type": "delete", "kv": {"key": "b", "value": "", "version": 0,
                                      "create_revision": 0, "mod_revision": 7},
             "prev_kv": null},
        ]});
        assert_eq!(watch_events(&line), "PUT\na\nold\na\nnew\nDELETE\nb\n");
        assert_eq!(
            compact(
                Format::Simple,
                &json!({"compact_revision": 5, "revision": 9})
            ),
            "compacted revision 5"
        );
    }

    #[test]
    fn status_and_members() {
        let st = json!({"member_id": 1, "engine": "omnipaxos", "leader": null, "term": 3,
                        "connected_peers": [2, 3], "role": "leader"});
        let simple = status(Format::Simple, &[("h:1".into(), st.clone())]);
        assert!(
            simple.starts_with("endpoint          h:1\nmember_id         1\n"),
            "{simple}"
        );
        assert!(
            simple.contains("\nleader            -\n"),
            "null shows as -: {simple}"
        );
        assert!(simple.contains("\nconnected_peers   2,3\n"), "{simple}");
        assert!(
            simple.contains("\ncluster_name      -\n"),
            "missing shows as -: {simple}"
        );
        let t = status(
            Format::Table,
            &[("h:1".into(), st.clone()), ("h:2".into(), st.clone())],
        );
        assert_eq!(
            t.lines().count(),
            6,
            "rule, header, rule, 2 rows, rule:\n{t}"
        );
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("| ENDPOINT | MEMBER_ID |")
        );
        assert_eq!(
            status(Format::Json, &[("h:1".into(), st.clone())]),
            st.to_string()
        );

        let m = json!({"members": [{"id": 1, "name": "n1", "peer_addr": "p:1",
                        "http_addr": "h:1", "grpc_addr": "g:1", "learner": false}]});
        assert_eq!(members(Format::Simple, &m), "1, n1, p:1, h:1, g:1, false");
        assert!(members(Format::Table, &m).contains("| 1  | n1   | p:1       |"));
    }

    #[test]
    fn errors_name_the_code_and_show_the_current_value_on_conflict() {
        let e = CtlError::Server {
            endpoint: "h:1".into(),
            status: 409,
            code: "cas_conflict".into(),
            message: "expected version 1".into(),
            body: json!({"error": {}, "kv": kv("a", "now", 2)}),
        };
        assert_eq!(
            error(&e),
            "Error: cas_conflict: expected version 1 (HTTP 409 from h:1)\n\
             current: version=2 mod_revision=7 value=now"
        );
        let mut absent = e.clone();
        if let CtlError::Server { body, .. } = &mut absent {
            *body = json!({"error": {}, "kv": null});
        }
        assert!(error(&absent).ends_with("\ncurrent: (absent)"));
        assert_eq!(
            error(&CtlError::Unreachable(vec!["h:1: refused".into()])),
            "Error: no endpoint reachable: h:1: refused"
        );
    }
}
