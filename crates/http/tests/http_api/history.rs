//! MVCC over HTTP: reads at a past revision (one key and lists), etcd's sort and revision
//! filters on lists, and `POST /v1/compact` with the compacted / future-revision errors.

use crate::common;

use common::*;
use serde_json::{Value, json};

async fn omnipaxos() -> Server {
    Server::start(local_node("omnipaxos", ALL_CAPS)).await
}

fn keys(list: &Value) -> Vec<&str> {
    list["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .filter_map(|kv| kv["key"].as_str())
        .collect()
}

#[tokio::test]
async fn a_key_reads_as_it_was_at_a_past_revision() {
    let s = omnipaxos().await;
    s.put_ok("a", "1").await; // revision 1
    s.put_ok("a", "2").await; // 2
    s.put_ok("b", "x").await; // 3
    s.delete("/v1/kv/a").await; // 4

    let (status, r) = s.get("/v1/kv/a?revision=1").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r,
        json!({"kv": {"key": "a", "value": "1", "version": 1, "create_revision": 1, "mod_revision": 1},
               "revision": 4}),
        "the kv as of revision 1, the reply's revision is the store's"
    );
    let (_, r) = s.get("/v1/kv/a?revision=3&consistency=sequential").await;
    assert_eq!(
        (&r["kv"]["value"], &r["kv"]["version"]),
        (&json!("2"), &json!(2))
    );
    let (status, r) = s.get("/v1/kv/a?revision=4").await;
    assert_eq!(
        (status, error_code(&r)),
        (404, "key_not_found"),
        "deleted at 4"
    );
    let (status, r) = s.get("/v1/kv/a?revision=5").await;
    assert_eq!((status, error_code(&r)), (400, "future_revision"));
    let (status, r) = s.get("/v1/kv/a?revision=-1").await;
    assert_eq!((status, error_code(&r)), (400, "invalid_request"));

    let (status, r) = s.get("/v1/kv?prefix=&revision=2").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(keys(&r), ["a"], "b did not exist yet at revision 2");
    assert_eq!(r["kvs"][0]["value"], "2");
    assert_eq!(r["revision"], 4);
    s.assert_still_serving().await;
}

#[tokio::test]
async fn lists_sort_and_filter_by_revision_like_etcd() {
    let s = omnipaxos().await;
    s.put_ok("k1", "c").await; // 1
    s.put_ok("k2", "a").await; // 2
    s.put_ok("k3", "b").await; // 3
    s.put_ok("k1", "d").await; // 4: k1 at version 2
    s.put_ok("k1", "e").await; // 5: k1 at version 3, mod 5

    let list = |q: &'static str| {
        let s = &s;
        async move {
            let (status, r) = s.get(&format!("/v1/kv?prefix=k&{q}")).await;
            assert_eq!(status, 200, "{q}: {r}");
            r
        }
    };
    assert_eq!(keys(&list("sort_order=descend").await), ["k3", "k2", "k1"]);
    assert_eq!(
        keys(&list("sort_target=value").await),
        ["k2", "k3", "k1"],
        "a target other than the key sorts ascending by default"
    );
    assert_eq!(
        keys(&list("sort_target=mod&sort_order=descend").await),
        ["k1", "k3", "k2"]
    );
    assert_eq!(
        keys(&list("sort_target=version&sort_order=descend&limit=1").await),
        ["k1"]
    );
    assert_eq!(
        keys(&list("sort_target=create&sort_order=ascend").await),
        ["k1", "k2", "k3"]
    );
    assert_eq!(keys(&list("min_mod_revision=3").await), ["k1", "k3"]);
    assert_eq!(keys(&list("max_mod_revision=3").await), ["k2", "k3"]);
    assert_eq!(
        keys(&list("min_create_revision=2&max_create_revision=2").await),
        ["k2"]
    );
    // At revision 3 every key was at version 1: sorted by value, k2 (a), k3 (b), k1 (c).
    let r = list("revision=3&sort_target=value").await;
    assert_eq!(keys(&r), ["k2", "k3", "k1"]);
    assert_eq!(r["kvs"][2]["value"], "c");

    for bad in ["sort_order=up", "sort_target=size", "min_mod_revision=x"] {
        let (status, r) = s.get(&format!("/v1/kv?prefix=k&{bad}")).await;
        assert_eq!((status, error_code(&r)), (400, "invalid_request"), "{bad}");
    }
}

#[tokio::test]
async fn compaction_drops_old_revisions_and_says_so() {
    let s = omnipaxos().await;
    for v in ["1", "2", "3", "4"] {
        s.put_ok("c", v).await; // revisions 1..=4
    }
    let (status, r) = s.post("/v1/compact", r#"{"revision": 3}"#).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"compact_revision": 3, "revision": 4}));

    let (status, r) = s.get("/v1/kv/c?revision=2").await;
    assert_eq!((status, error_code(&r)), (410, "compacted"));
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("revision 3"),
        "names the compaction: {message}"
    );
    let (status, r) = s.get("/v1/kv?prefix=&revision=1").await;
    assert_eq!((status, error_code(&r)), (410, "compacted"));
    let (status, r) = s.get("/v1/kv/c?revision=3").await;
    assert_eq!((status, &r["kv"]["value"]), (200, &json!("3")), "{r}");

    let (status, r) = s.post("/v1/compact", r#"{"revision": 3}"#).await;
    assert_eq!(
        (status, error_code(&r)),
        (410, "compacted"),
        "not above the last"
    );
    let (status, r) = s
        .post("/v1/compact", r#"{"revision": 9, "physical": true}"#)
        .await;
    assert_eq!((status, error_code(&r)), (400, "future_revision"));
    for bad in [
        r#"{"revision": 0}"#,
        r#"{"revision": -1}"#,
        r#"{"rev": 4}"#,
        r#"{"revision": 4, "hard": true}"#,
    ] {
        let (status, r) = s.post("/v1/compact", bad).await;
        assert_eq!((status, error_code(&r)), (400, "invalid_request"), "{bad}");
    }
    let (status, r) = s
        .post("/v1/compact", r#"{"revision": 4, "physical": true}"#)
        .await;
    assert_eq!(status, 200, "{r}");
    s.assert_still_serving().await;
}

#[tokio::test]
async fn engines_without_revisions_refuse_history() {
    let s = Server::start(local_node("caspaxos", CASPAXOS_CAPS)).await;
    s.put_ok("a", "1").await;
    let (status, r) = s.get("/v1/kv/a?revision=1").await;
    assert_eq!((status, error_code(&r)), (501, "unsupported"));
    let (status, r) = s.post("/v1/compact", r#"{"revision": 1}"#).await;
    assert_eq!((status, error_code(&r)), (501, "unsupported"));
    let (status, r) = s.get("/v1/watch?key=a").await;
    assert_eq!((status, error_code(&r)), (501, "unsupported"));
    // Reads of the current state still work.
    let (status, _) = s.get("/v1/kv/a").await;
    assert_eq!(status, 200);
}
