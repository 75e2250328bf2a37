//! rivet's etcd client against a real etcd (Debian's etcd-server 3.4,
//! through its v3 JSON gateway), and against an in-process fake for the
//! answers a real etcd never gives.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rivet::cluster::etcd::{
    Cmp, Compare, Etcd, EtcdConfig, EtcdError, Kv, Op, Txn, TxnResult, WatchEvent,
};
use serde_json::{Value, json};

use crate::etcd_server::EtcdServer;

/// A fresh etcd for `test`, or `None` when emulator tests are skipped.
pub fn server(test: &str) -> Option<EtcdServer> {
    if crate::support::skip_emulator_test(test) {
        return None;
    }
    Some(EtcdServer::start())
}

fn client(url: &str) -> Etcd {
    Etcd::new(&EtcdConfig::new([url])).unwrap()
}

/// Poll `probe` until it gives `Some`, failing after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call to the gateway itself, for what the client does not offer
/// (compaction, users and roles).
async fn gateway(url: &str, path: &str, body: Value) -> Value {
    gateway_as(url, path, body, None).await
}

/// [`gateway`] with an auth token.
async fn gateway_as(url: &str, path: &str, body: Value, token: Option<&str>) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.header("Authorization", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

type Batches = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<(i64, Vec<WatchEvent>), EtcdError>> + Send>,
>;

/// The next batch of a watch, within 15 s.
async fn next_batch(watch: &mut Batches) -> (i64, Vec<WatchEvent>) {
    tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("a watch batch within 15 s")
        .expect("the watch goes on")
        .expect("a batch, not an error")
}

#[test]
fn leases_are_granted_kept_alive_and_revoked() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let (lease, granted) = client.grant(Duration::from_secs(5)).await.unwrap();
        assert_eq!(granted, Duration::from_secs(5));
        assert_eq!(
            client.keepalive(lease).await.unwrap(),
            Duration::from_secs(5)
        );
        client.put("l/k", b"v", Some(lease)).await.unwrap();
        assert_eq!(client.get("l/k").await.unwrap().unwrap().lease, lease);
        client.revoke(lease).await.unwrap();
        assert_eq!(client.get("l/k").await.unwrap(), None, "revoking deletes");
        client
            .revoke(lease)
            .await
            .expect("a lease already gone is fine");
        assert_eq!(client.keepalive(lease).await, Err(EtcdError::LeaseExpired));
        // etcd's minimum TTL is 2 s, and it says what it granted.
        let (_, granted) = client.grant(Duration::from_millis(300)).await.unwrap();
        assert_eq!(granted, Duration::from_secs(2));
        let sent = client.requests();
        assert_eq!(
            (
                sent["lease_grant"],
                sent["keepalive"],
                sent["revoke"],
                sent["put"]
            ),
            (2, 2, 2, 1)
        );
    });
}

#[test]
fn a_lease_left_alone_expires_and_then_refuses_puts() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let (lease, granted) = client.grant(Duration::from_secs(2)).await.unwrap();
        assert_eq!(granted, Duration::from_secs(2));
        client.put("e/k", b"v", Some(lease)).await.unwrap();
        let started = Instant::now();
        eventually(
            "the lease's key is deleted",
            Duration::from_secs(15),
            || async { client.get("e/k").await.unwrap().is_none().then_some(()) },
        )
        .await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "expired after {took:?}"
        );
        assert_eq!(client.keepalive(lease).await, Err(EtcdError::LeaseExpired));
        assert_eq!(
            client.put("e/k", b"v", Some(lease)).await,
            Err(EtcdError::LeaseExpired)
        );
        let claim = Txn {
            compare: vec![Compare::CreateRevision("e/k".into(), Cmp::Equal, 0)],
            success: vec![Op::Put {
                key: "e/k".into(),
                value: b"v".to_vec(),
                lease: Some(lease),
            }],
            failure: vec![],
        };
        assert_eq!(client.txn(claim).await, Err(EtcdError::LeaseExpired));
        assert_eq!(client.get("e/k").await.unwrap(), None);
    });
}

fn claim(key: &str, value: &[u8]) -> Txn {
    Txn {
        compare: vec![Compare::CreateRevision(key.into(), Cmp::Equal, 0)],
        success: vec![
            Op::Put {
                key: key.into(),
                value: value.to_vec(),
                lease: None,
            },
            Op::Get { key: key.into() },
        ],
        failure: vec![
            Op::Get { key: key.into() },
            Op::Get {
                key: "c/none".into(),
            },
        ],
    }
}

#[test]
fn a_create_revision_0_claim_succeeds_once_and_shows_the_winner_to_the_second() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let first = client(&etcd.url);
    let second = client(&etcd.url);
    crate::support::rt().block_on(async {
        let won: TxnResult = first.txn(claim("c/node-1", b"daemon-a")).await.unwrap();
        assert!(won.succeeded);
        let mine = won.gets[0].clone().expect("the get after the put sees it");
        assert_eq!(
            (mine.value.as_slice(), mine.create_revision, mine.version),
            (&b"daemon-a"[..], won.revision, 1)
        );
        assert_eq!(won.gets.len(), 1);

        let lost = second.txn(claim("c/node-1", b"daemon-b")).await.unwrap();
        assert!(!lost.succeeded);
        assert_eq!(lost.gets, vec![Some(mine.clone()), None]);
        assert_eq!(lost.revision, won.revision, "a failed claim writes nothing");
        assert_eq!(second.get("c/node-1").await.unwrap(), Some(mine.clone()));

        // The winner hands over: a compare on its mod revision, then the
        // prefix delete empties what is left.
        let handover = Txn {
            compare: vec![Compare::ModRevision(
                "c/node-1".into(),
                Cmp::Equal,
                mine.mod_revision,
            )],
            success: vec![Op::Delete {
                key: "c/node-1".into(),
            }],
            failure: vec![],
        };
        assert!(first.txn(handover.clone()).await.unwrap().succeeded);
        assert!(!first.txn(handover).await.unwrap().succeeded, "only once");
        first.put("c/a", b"1", None).await.unwrap();
        first.put("c/b", b"2", None).await.unwrap();
        first.put("d", b"outside", None).await.unwrap();
        let emptied = first
            .txn(Txn {
                compare: vec![Compare::Version("c/a".into(), Cmp::Greater, 0)],
                success: vec![Op::DeletePrefix {
                    prefix: "c/".into(),
                }],
                failure: vec![],
            })
            .await
            .unwrap();
        assert!(emptied.succeeded && emptied.gets.is_empty());
        assert_eq!(first.range_prefix("c/").await.unwrap().0, vec![]);
        assert!(first.get("d").await.unwrap().is_some());
        assert_eq!(first.requests()["txn"], 4);
        assert_eq!(second.requests()["txn"], 1);
    });
}

#[test]
fn range_prefix_reads_2500_keys_in_pages_at_one_revision() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let mut last = 0;
        for batch in 0..25 {
            let puts = (0..100)
                .map(|i| Op::Put {
                    key: format!("p/{:05}", batch * 100 + i),
                    value: vec![0xff, (i % 256) as u8],
                    lease: None,
                })
                .collect();
            let done = client
                .txn(Txn {
                    success: puts,
                    ..Txn::default()
                })
                .await
                .unwrap();
            last = done.revision;
        }
        // Neighbours of the prefix stay out.
        client.put("p", b"x", None).await.unwrap();
        let outside = client.put("p0", b"x", None).await.unwrap();
        let before = client.requests()["range"];
        let (kvs, revision) = client.range_prefix("p/").await.unwrap();
        assert_eq!(client.requests()["range"] - before, 3, "pages of 1,000");
        assert_eq!(revision, outside);
        assert_eq!(kvs.len(), 2500);
        let keys: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
        let expected: Vec<String> = (0..2500).map(|i| format!("p/{i:05}")).collect();
        assert_eq!(keys, expected);
        assert!(kvs.iter().all(|kv| kv.value[0] == 0xff && kv.version == 1));
        assert_eq!(kvs.last().unwrap().mod_revision, last);
        let (all, _) = client.range_prefix("").await.unwrap();
        assert_eq!(all.len(), 2502);
    });
}

#[test]
fn a_watch_sees_puts_and_an_expired_leases_deletes_in_one_batch() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let start = client.put("w-before", b"", None).await.unwrap() + 1;
        let mut watch: Batches = Box::pin(client.watch_prefix("w/", start));
        let (lease, _) = client.grant(Duration::from_secs(2)).await.unwrap();
        let keys = ["w/a", "w/b", "w/c"];
        for key in keys {
            client.put(key, key.as_bytes(), Some(lease)).await.unwrap();
        }
        client.put("x/not-watched", b"", None).await.unwrap();
        let mut puts = BTreeSet::new();
        let deleted = loop {
            let (revision, events) = next_batch(&mut watch).await;
            let deletes: Vec<&Kv> = events
                .iter()
                .filter_map(|e| match e {
                    WatchEvent::Delete(kv) => Some(kv),
                    WatchEvent::Put(_) => None,
                })
                .collect();
            for event in &events {
                if let WatchEvent::Put(kv) = event {
                    assert_eq!(kv.value, kv.key.as_bytes());
                    assert_eq!(kv.lease, lease);
                    assert!(kv.mod_revision <= revision);
                    puts.insert(kv.key.clone());
                }
            }
            if !deletes.is_empty() {
                let revisions: BTreeSet<i64> = deletes.iter().map(|kv| kv.mod_revision).collect();
                assert_eq!(revisions.len(), 1, "one revision deletes them all");
                break deletes
                    .iter()
                    .map(|kv| kv.key.clone())
                    .collect::<BTreeSet<_>>();
            }
        };
        assert_eq!(puts, keys.iter().map(|k| k.to_string()).collect());
        assert_eq!(deleted, puts, "every key of the lease in one batch");
        assert_eq!(client.requests()["watch"], 1);
    });
}

#[test]
fn a_watch_with_prev_kv_shows_what_a_delete_removed_and_ends_when_compacted() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let first = client.put("v/k", b"one", None).await.unwrap();
        client.put("v/k", b"two", None).await.unwrap();
        client.delete("v/k").await.unwrap();
        let mut watch: Batches = Box::pin(client.watch_prefix_with_prev_kv("v/", first));
        let mut events = Vec::new();
        while events.len() < 3 {
            events.extend(next_batch(&mut watch).await.1);
        }
        let WatchEvent::Delete(gone) = &events[2] else {
            panic!("the third event is the delete: {events:?}")
        };
        assert_eq!(
            (
                gone.key.as_str(),
                gone.value.as_slice(),
                gone.version,
                gone.mod_revision
            ),
            ("v/k", &b"two"[..], 2, first + 2)
        );
        drop(watch);

        let now = client.put("v/k", b"three", None).await.unwrap();
        gateway(
            &etcd.url,
            "/v3/kv/compaction",
            json!({"revision": now.to_string()}),
        )
        .await;
        let mut old: Batches = Box::pin(client.watch_prefix("v/", first));
        let ended = tokio::time::timeout(Duration::from_secs(15), old.next())
            .await
            .expect("an answer within 15 s");
        assert_eq!(ended, Some(Err(EtcdError::Compacted { revision: now })));
        assert!(
            old.next().await.is_none(),
            "the stream ends after its error"
        );
    });
}

#[test]
fn a_watch_ends_with_an_error_when_etcd_goes_away() {
    let Some(mut etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let revision = client.put("g/k", b"v", None).await.unwrap();
        let mut watch: Batches = Box::pin(client.watch_prefix("g/", revision));
        assert_eq!(next_batch(&mut watch).await.0, revision);
        etcd.stop();
        let ended = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("an answer within 15 s");
        assert!(
            matches!(&ended, Some(Err(EtcdError::Unreachable { endpoints, .. })) if *endpoints == etcd.url),
            "{ended:?}"
        );
        assert!(watch.next().await.is_none(), "the stream ends after its error");
    });
}

#[test]
fn a_restarted_etcd_is_asked_again_over_a_new_connection() {
    let Some(mut etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    let rt = crate::support::rt();
    rt.block_on(async {
        client.put("r/k", b"v", None).await.unwrap();
    });
    // The runtime is idle while etcd restarts, so the connection the put
    // left in the pool looks alive until a request is written to it.
    etcd.restart();
    rt.block_on(async {
        assert_eq!(client.get("r/k").await.unwrap().unwrap().value, b"v");
    });
}

#[test]
fn unreachable_names_every_endpoint() {
    let config = EtcdConfig {
        request_timeout: Duration::from_secs(2),
        ..EtcdConfig::new(["http://127.0.0.1:1", "http://127.0.0.1:2/"])
    };
    let client = Etcd::new(&config).unwrap();
    let error = crate::support::rt().block_on(client.check()).unwrap_err();
    let EtcdError::Unreachable { endpoints, message } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(endpoints, "http://127.0.0.1:1, http://127.0.0.1:2");
    assert!(
        message.starts_with("http://127.0.0.1:2: ") && message.contains("refused"),
        "{message}"
    );
    assert!(
        error
            .to_string()
            .contains("http://127.0.0.1:1, http://127.0.0.1:2")
    );
    assert_eq!(client.requests()["range"], 2);
}

#[test]
fn requests_move_past_dead_endpoints_and_remember_the_one_that_answered() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    // A port that accepts connections and never answers, and a closed one.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let timeout = Duration::from_millis(400);
    let client = Etcd::new(&EtcdConfig {
        request_timeout: timeout,
        ..EtcdConfig::new([hung_url.clone(), closed, etcd.url.clone()])
    })
    .unwrap();
    crate::support::rt().block_on(async {
        let started = Instant::now();
        client.check().await.unwrap();
        assert!(
            started.elapsed() >= timeout,
            "the hung endpoint was waited for"
        );
        assert_eq!(client.endpoint(), etcd.url);
        assert_eq!(client.requests()["range"], 3);
        client.put("f/k", b"v", None).await.unwrap();
        assert_eq!(client.get("f/k").await.unwrap().unwrap().value, b"v");
        assert_eq!(
            (client.requests()["range"], client.requests()["put"]),
            (4, 1),
            "straight to the endpoint that answered"
        );
    });
    drop(hung);
}

#[test]
fn a_paused_etcd_times_out_and_answers_again_once_resumed() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = Etcd::new(&EtcdConfig {
        request_timeout: Duration::from_millis(500),
        ..EtcdConfig::new([etcd.url.clone()])
    })
    .unwrap();
    crate::support::rt().block_on(async {
        client.put("o/k", b"v", None).await.unwrap();
        etcd.pause();
        let error = client.get("o/k").await.unwrap_err();
        assert!(
            matches!(&error, EtcdError::Unreachable { message, .. } if message.contains("no answer within 500ms")),
            "{error:?}"
        );
        etcd.resume();
        assert_eq!(client.get("o/k").await.unwrap().unwrap().value, b"v");
    });
}

#[test]
fn two_hundred_compare_and_swaps_each_win_once() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let client = client(&etcd.url);
    crate::support::rt().block_on(async {
        let mut revision = client.put("s/counter", b"0", None).await.unwrap();
        let mut took = Vec::new();
        for n in 1..=200u32 {
            let swap = Txn {
                compare: vec![Compare::ModRevision(
                    "s/counter".into(),
                    Cmp::Equal,
                    revision,
                )],
                success: vec![Op::Put {
                    key: "s/counter".into(),
                    value: n.to_string().into_bytes(),
                    lease: None,
                }],
                failure: vec![],
            };
            let started = Instant::now();
            let done = client.txn(swap.clone()).await.unwrap();
            took.push(started.elapsed());
            assert!(done.succeeded && done.revision == revision + 1);
            assert!(
                !client.txn(swap).await.unwrap().succeeded,
                "a stale swap loses"
            );
            revision = done.revision;
        }
        let value = client.get("s/counter").await.unwrap().unwrap();
        assert_eq!((value.value, value.version), (b"200".to_vec(), 201));
        assert_eq!(client.requests()["txn"], 400);
        took.sort();
        eprintln!(
            "txn compare-and-swap through the gateway: p50 {:?}, p99 {:?}",
            took[took.len() / 2],
            took[took.len() * 99 / 100]
        );
    });
}

#[test]
fn auth_sends_a_token_renews_it_and_never_shows_the_password() {
    let Some(etcd) = server("an etcd test") else {
        return;
    };
    let password = "canary-etcd-pw-7d1f";
    crate::support::rt().block_on(async {
        // etcdctl is not part of Debian's etcd-server: the gateway does it.
        gateway(&etcd.url, "/v3/auth/role/add", json!({"name": "root"})).await;
        gateway(
            &etcd.url,
            "/v3/auth/user/add",
            json!({"name": "root", "password": password}),
        )
        .await;
        gateway(
            &etcd.url,
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        )
        .await;
        gateway(&etcd.url, "/v3/auth/enable", json!({})).await;
    });
    let login = |password: &str| EtcdConfig {
        username: Some("root".into()),
        password: Some(password.into()),
        ..EtcdConfig::new([etcd.url.clone()])
    };
    let client = Etcd::new(&login(password)).unwrap();
    assert!(!format!("{client:?} {:?}", login(password)).contains(password));
    let rt = crate::support::rt();
    rt.block_on(async {
        client.check().await.unwrap();
        let put = client.put("a/k", b"v", None).await.unwrap();
        let mut watch: Batches = Box::pin(client.watch_prefix("a/", put));
        assert_eq!(next_batch(&mut watch).await.1.len(), 1);
        assert_eq!(client.requests()["auth"], 1, "one token for all");

        let wrong = Etcd::new(&login("not-the-canary-etcd-pw-7d1f-either")).unwrap();
        let error = wrong.check().await.unwrap_err();
        assert!(
            matches!(&error, EtcdError::Status { message, .. } if message.contains("authentication failed")),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?}").contains("canary-etcd-pw"));

        let anonymous = self::client(&etcd.url);
        assert!(matches!(
            anonymous.get("a/k").await,
            Err(EtcdError::Status { status: 400, .. })
        ));
    });
    // Turning auth off and on again drops every token etcd handed out: the
    // client authenticates again, once, and goes on, for a watch (which
    // etcd cancels at once) and for a request.
    let drop_tokens = || async {
        let root = gateway(
            &etcd.url,
            "/v3/auth/authenticate",
            json!({"name": "root", "password": password}),
        )
        .await;
        let root = root["token"].as_str().expect("a token");
        gateway_as(&etcd.url, "/v3/auth/disable", json!({}), Some(root)).await;
        gateway(&etcd.url, "/v3/auth/enable", json!({})).await;
    };
    rt.block_on(async {
        drop_tokens().await;
        let mut watch: Batches = Box::pin(client.watch_prefix("a/", 1));
        assert_eq!(next_batch(&mut watch).await.1.len(), 1);
        assert_eq!(client.requests()["auth"], 2);
        assert_eq!(
            client.requests()["watch"],
            3,
            "the refused watch, then again"
        );
        assert_eq!(client.get("a/k").await.unwrap().unwrap().value, b"v");
        drop_tokens().await;
        let before = client.requests()["range"];
        assert_eq!(client.get("a/k").await.unwrap().unwrap().value, b"v");
        assert_eq!(client.requests()["auth"], 3);
        assert_eq!(
            client.requests()["range"] - before,
            2,
            "refused, then again"
        );
    });
}

#[test]
fn tls_with_a_client_certificate() {
    if crate::support::skip_emulator_test("an etcd test") {
        return;
    }
    let etcd = EtcdServer::start_tls();
    let tls = etcd.tls.clone().unwrap();
    let with_identity = Etcd::new(&EtcdConfig {
        ca_file: Some(tls.ca.clone()),
        cert_file: Some(tls.client_cert.clone()),
        key_file: Some(tls.client_key.clone()),
        ..EtcdConfig::new([etcd.url.clone()])
    })
    .unwrap();
    let without = Etcd::new(&EtcdConfig {
        ca_file: Some(tls.ca.clone()),
        request_timeout: Duration::from_secs(2),
        ..EtcdConfig::new([etcd.url.clone()])
    })
    .unwrap();
    crate::support::rt().block_on(async {
        with_identity.check().await.unwrap();
        let revision = with_identity.put("t/k", b"v", None).await.unwrap();
        let mut watch: Batches = Box::pin(with_identity.watch_prefix("t/", revision));
        assert_eq!(next_batch(&mut watch).await.1.len(), 1);
        let refused = without.check().await.unwrap_err();
        assert!(
            matches!(refused, EtcdError::Unreachable { .. }),
            "{refused:?}"
        );
    });
    let unreadable = Etcd::new(&EtcdConfig {
        ca_file: Some(tls.ca.with_file_name("missing.pem")),
        ..EtcdConfig::new([etcd.url.clone()])
    });
    assert!(
        matches!(&unreadable, Err(EtcdError::Invalid(m)) if m.contains("missing.pem")),
        "{unreadable:?}"
    );
}

/// What the fake gateway answers: a status and a body.
#[derive(Clone)]
enum Garbage {
    Text(&'static str),
    Bytes(Vec<u8>),
    /// `n` MiB of `x`, streamed without a length.
    Mebibytes(usize),
}

/// A fake gateway on 127.0.0.1 answering every request with `answer`:
/// real etcd never sends these bodies, so only a fake can test that the
/// client survives them.
async fn fake_gateway(answer: Garbage) -> String {
    use axum::body::{Body, Bytes};
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move {
            let body = match answer {
                Garbage::Text(text) => Body::from(text),
                Garbage::Bytes(bytes) => Body::from(bytes),
                Garbage::Mebibytes(n) => {
                    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
                    Body::from_stream(futures_util::stream::iter(
                        (0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                    ))
                }
            };
            axum::response::Response::builder()
                .status(200)
                .body(body)
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn is_invalid<T: std::fmt::Debug>(result: &Result<T, EtcdError>) -> bool {
    matches!(result, Err(EtcdError::Invalid(_)))
}

#[test]
fn garbage_from_the_gateway_is_invalid_not_a_panic() {
    crate::support::rt().block_on(async {
        let cases: Vec<(&str, Garbage)> = vec![
            ("not JSON", Garbage::Text("<html>oops")),
            (
                "a key not base64",
                Garbage::Text(r#"{"kvs":[{"key":"!!"}]}"#),
            ),
            (
                "a revision not a number",
                Garbage::Text(
                    r#"{"kvs":[{"key":"YQ==","mod_revision":"12x"}],"header":{"revision":[]}}"#,
                ),
            ),
            ("kvs not a list", Garbage::Text(r#"{"kvs":5}"#)),
            (
                "a key not UTF-8",
                Garbage::Text(r#"{"kvs":[{"key":"/w=="}]}"#),
            ),
            ("an empty body", Garbage::Text("")),
            ("more than 64 MiB", Garbage::Mebibytes(65)),
        ];
        for (what, answer) in cases {
            let client = client(&fake_gateway(answer).await);
            assert!(is_invalid(&client.get("a").await), "get, {what}");
            // A check reads no key, so a bad key does not fail it.
            if what != "a key not UTF-8" {
                assert!(is_invalid(&client.check().await), "check, {what}");
            }
            assert!(
                is_invalid(&client.range_prefix("a/").await),
                "range, {what}"
            );
            assert!(is_invalid(&client.keepalive(1).await), "keepalive, {what}");
        }
        let cases: Vec<(&str, &'static str)> = vec![
            (
                "a txn with too few responses",
                r#"{"succeeded":true,"responses":[]}"#,
            ),
            ("a lease without an ID", r#"{"ID":"0","TTL":"5"}"#),
            ("a lease with a negative TTL", r#"{"ID":"7","TTL":"-5"}"#),
            ("a keepalive with neither result nor error", r#"{"x":1}"#),
            (
                "a range page with more but no key",
                r#"{"more":true,"kvs":[]}"#,
            ),
            (
                "a range page going backwards",
                r#"{"more":true,"kvs":[{"key":"YQ=="}]}"#,
            ),
        ];
        for (what, text) in cases {
            let client = client(&fake_gateway(Garbage::Text(text)).await);
            let txn = client
                .txn(Txn {
                    success: vec![Op::Get { key: "a".into() }],
                    ..Txn::default()
                })
                .await;
            let grant = client.grant(Duration::from_secs(5)).await;
            let keepalive = client.keepalive(7).await;
            let range = client.range_prefix("b/").await;
            assert!(
                [
                    is_invalid(&txn),
                    is_invalid(&grant),
                    is_invalid(&keepalive),
                    is_invalid(&range)
                ]
                .iter()
                .any(|bad| *bad),
                "{what}: {txn:?} {grant:?} {keepalive:?} {range:?}"
            );
        }
        // Watches: a line that never ends, a line that is not JSON, an
        // event of no known type.
        let long_line = fake_gateway(Garbage::Mebibytes(17)).await;
        let not_json = fake_gateway(Garbage::Text("{\"result\":\n")).await;
        let odd_event = fake_gateway(Garbage::Text(
            "{\"result\":{\"events\":[{\"type\":\"BOGUS\",\"kv\":{\"key\":\"YQ==\"}}]}}\n",
        ))
        .await;
        for url in [long_line, not_json, odd_event] {
            let client = client(&url);
            let mut watch: Batches = Box::pin(client.watch_prefix("a/", 0));
            let first = watch.next().await.expect("an item");
            assert!(is_invalid(&first), "{url}: {first:?}");
            assert!(watch.next().await.is_none());
        }
        // Random bytes, anywhere.
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(1..400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let client = client(&fake_gateway(Garbage::Bytes(bytes)).await);
            assert!(is_invalid(&client.get("a").await), "seed {seed}");
            assert!(
                is_invalid(&client.txn(claim("a", b"v")).await),
                "seed {seed}"
            );
            let mut watch: Batches = Box::pin(client.watch_prefix("a/", 0));
            let first = watch.next().await.expect("an item");
            assert!(first.is_err(), "seed {seed}: {first:?}");
        }
    });
}
