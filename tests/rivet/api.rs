//! The API as a value: `api::router` called with `tower::ServiceExt::oneshot`,
//! over the state a daemon opens, without a socket or a converge loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rivet::api::{self, ApiOptions, ApiState};
use rivet::conductor::Conductor;
use rivet::daemon;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::TempFleet;

pub const FLEET_NODES: &str = r#"
[[node]]
name = "n1"
driver = "fake-hardware"
desired = { provision = "active", power = "on" }

[[node]]
name = "n2"
driver = "fake-hardware"
desired = { provision = "available" }

[[node]]
name = "r1"
driver = "ipmi"
bmc = { address = "ipmi://10.0.0.7:6230", username = "admin", password_env = "RIVET_TEST_BMC_PASSWORD" }
desired = { provision = "manageable" }
"#;

fn fleet() -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_hardware_types = [\"fake-hardware\", \"ipmi\"]\n",
        ),
        ("nodes/a.toml", FLEET_NODES),
    ])
}

struct Api {
    shared: Arc<Conductor>,
    app: Router,
    _fleet: TempFleet,
}

impl Api {
    fn new() -> Self {
        Self::with(|shared| daemon::api_state(shared).unwrap())
    }

    fn with(state: impl FnOnce(&Arc<Conductor>) -> ApiState) -> Self {
        let fleet = fleet();
        let shared = Conductor::open(fleet.path(), &Default::default()).unwrap();
        let app = api::router(state(&shared));
        Self {
            shared,
            app,
            _fleet: fleet,
        }
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(get(uri)).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn raw(&self, uri: &str) -> (StatusCode, String) {
        let (status, _, body) = self.call(get(uri)).await;
        (status, body)
    }

    async fn send(&self, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, _, body) = self.call(request).await;
        (status, body)
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

/// The faultstring inside Ironic's error body.
pub fn fault(body: &str) -> String {
    let outer: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let inner: Value = serde_json::from_str(outer["error_message"].as_str().unwrap()).unwrap();
    inner["faultstring"]
        .as_str()
        .or(inner["description"].as_str())
        .unwrap()
        .to_string()
}

/// Ironic's passthru answers, one per line: verb | query on the node's
/// `vendor_passthru` (or a whole path) | body | code | the body (2xx) or the
/// error's faultstring (`…` at the end: its beginning). Shared with the
/// live tests.
const PASSTHRU_CASES: &str = "
POST | ?method=third_method_sync      | {\"bar\":\"meow\"}  | 200 | true
POST | ?method=third_method_sync      | {\"bar\":\"woof\"}  | 200 | false
POST | /third_method_sync             | {\"bar\":\"meow\"}  | 200 | true
POST | ?method=second_method          | {\"bar\":\"kazoo\"} | 202 |
POST | ?method=fourth_method_shared_lock | {\"bar\":\"woof\"} | 202 |
POST | ?method=third_method_sync      | {}              | 400 | Parameter 'bar' not passed to method 'third_method_sync'.
POST | ?method=second_method          | {}              | 400 | Parameter 'bar' not passed to method 'second_method'.
POST | ?method=no_such_method         | {\"bar\":\"x\"}     | 400 | No handler for method no_such_method
POST |                                | {\"bar\":\"x\"}     | 400 | Missing mandatory parameter: method
GET  | ?method=third_method_sync      |                 | 400 | The method third_method_sync does not support HTTP GET
PUT  | ?method=second_method          | {\"bar\":\"kazoo\"} | 400 | The method second_method does not support HTTP PUT
DELETE | ?method=second_method        |                 | 400 | The method second_method does not support HTTP DELETE
PATCH | ?method=second_method         | {\"bar\":\"kazoo\"} | 400 | The method second_method does not support HTTP PATCH
POST | ?method=second_method          | {bar            | 400 | The request body is not valid JSON…
POST | /v1/nodes/no-such-node/vendor_passthru?method=second_method | {\"bar\":\"kazoo\"} | 404 | Node no-such-node could not be found.
POST | /v1/drivers/fake-hardware/vendor_passthru?method=second_method | {\"bar\":\"kazoo\"} | 400 | No handler for method second_method
";

pub struct PassthruCase {
    pub verb: &'static str,
    pub query: &'static str,
    pub body: &'static str,
    code: u16,
    expected: &'static str,
}

impl PassthruCase {
    /// Where to send it, given the node's `vendor_passthru` URL and the root.
    pub fn uri(&self, vendor_passthru: &str, root: &str) -> String {
        if self.query.starts_with("/v1/") {
            format!("{root}{}", self.query)
        } else {
            format!("{vendor_passthru}{}", self.query)
        }
    }

    /// Assert an answer is the one Ironic gives.
    pub fn check(&self, status: u16, body: &str) {
        let what = format!("{} {} {}: {body}", self.verb, self.query, self.body);
        assert_eq!(status, self.code, "{what}");
        if let Some(beginning) = self.expected.strip_suffix('…') {
            assert!(fault(body).starts_with(beginning), "{what}");
        } else if self.code >= 400 {
            assert_eq!(fault(body), self.expected, "{what}");
        } else {
            assert_eq!(body, self.expected, "{what}");
        }
    }
}

pub fn passthru_cases() -> Vec<PassthruCase> {
    PASSTHRU_CASES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&'static str> = line.split('|').map(str::trim).collect();
            PassthruCase {
                verb: cols[0],
                query: cols[1],
                body: cols[2],
                code: cols[3].parse().unwrap(),
                expected: cols[4],
            }
        })
        .collect()
}

#[tokio::test]
async fn version_documents_and_negotiation() {
    let api = Api::new();
    let (status, headers, body) = api.call(get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-openstack-ironic-api-minimum-version"], "1.1");
    assert_eq!(headers["x-openstack-ironic-api-maximum-version"], "1.115");
    assert_eq!(headers["x-openstack-ironic-api-version"], "1.1");
    assert!(
        headers["x-openstack-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["default_version"]["version"], "1.115");
    assert_eq!(doc["versions"][0]["min_version"], "1.1");

    let latest = Request::builder()
        .uri("/v1")
        .header("X-OpenStack-Ironic-API-Version", "latest")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = api.call(latest).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-openstack-ironic-api-version"], "1.115");
    let v1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v1["id"], "v1");
    assert!(
        v1["nodes"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/v1/nodes/")
    );

    let too_high = Request::builder()
        .uri("/v1/nodes/n1")
        .header("X-OpenStack-Ironic-API-Version", "1.999")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = api.call(too_high).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert!(headers.get("x-openstack-ironic-api-version").is_none());
    assert_eq!(headers["x-openstack-ironic-api-maximum-version"], "1.115");
    assert_eq!(
        fault(&body),
        "Version 1.999 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
    );
    let bad = Request::builder()
        .uri("/v1")
        .header("X-OpenStack-Ironic-API-Version", "one")
        .body(Body::empty())
        .unwrap();
    // Garbage is not acceptable either, in Ironic's words.
    let (status, _, body) = api.call(bad).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(
        fault(&body),
        "Invalid value for X-OpenStack-Ironic-API-Version header"
    );
}

#[tokio::test]
async fn nodes_list_pages_filters_and_shows_by_name_or_uuid() {
    let api = Api::new();
    let (status, list) = api.get("/v1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "r1"]);
    // Never converged: enroll, power unknown.
    assert_eq!(list["nodes"][0]["provision_state"], "enroll");
    assert_eq!(list["nodes"][0]["power_state"], Value::Null);
    assert!(list.get("next").is_none());
    let row = list["nodes"][0].as_object().unwrap();
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "instance_uuid",
            "links",
            "maintenance",
            "name",
            "power_state",
            "provision_state",
            "uuid"
        ]
    );

    let (_, page) = api.get("/v1/nodes?limit=2").await;
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let uuid = page["nodes"][1]["uuid"].as_str().unwrap();
    assert!(
        next.contains(&format!("marker={uuid}")) && next.contains("limit=2"),
        "{next}"
    );
    let rest = &next[next.find("/v1/").unwrap()..];
    let (_, page2) = api.get(rest).await;
    assert_eq!(page2["nodes"][0]["name"], "r1");
    assert!(page2.get("next").is_none());

    let (_, by_driver) = api.get("/v1/nodes?driver=ipmi").await;
    assert_eq!(by_driver["nodes"].as_array().unwrap().len(), 1);
    let (_, enrolled) = api.get("/v1/nodes?provision_state=active").await;
    assert!(enrolled["nodes"].as_array().unwrap().is_empty());
    let (_, fields) = api.get("/v1/nodes?fields=name,driver").await;
    assert_eq!(fields["nodes"][2]["driver"], "ipmi");
    assert!(fields["nodes"][2].get("provision_state").is_none());
    let (status, body) = api.get("/v1/nodes?fields=name,nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = api.get("/v1/nodes?limit=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, detail) = api.get("/v1/nodes?detail=true").await;
    assert_eq!(detail["nodes"][2]["management_interface"], "ipmitool");

    let (status, by_name) = api.get("/v1/nodes/r1").await;
    assert_eq!(status, StatusCode::OK);
    let uuid = by_name["uuid"].as_str().unwrap().to_string();
    let (_, by_uuid) = api.get(&format!("/v1/nodes/{uuid}")).await;
    assert_eq!(by_uuid, by_name);
    for field in [
        "driver",
        "power_interface",
        "vendor_interface",
        "provision_state",
        "target_provision_state",
        "power_state",
        "target_power_state",
        "maintenance",
        "fault",
        "last_error",
        "deploy_step",
        "traits",
        "updated_at",
        "reservation",
    ] {
        assert!(by_name.get(field).is_some(), "node document lacks {field}");
    }
    assert_eq!(by_name["driver_info"]["ipmi_password"], "******");
    assert_eq!(by_name["driver_info"]["ipmi_address"], "10.0.0.7");
    assert_eq!(by_name["driver_info"]["ipmi_port"], 6230);
    assert!(
        by_name["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/nodes/{uuid}"))
    );

    let (status, states) = api.get("/v1/nodes/n1/states").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(states["provision_state"], "enroll");
    let (status, body) = api.raw("/v1/nodes/no-such-node").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fault(&body), "Node no-such-node could not be found.");
}

fn names(list: &Value) -> Vec<String> {
    list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn nodes_sort_by_ironic_sort_keys_across_pages() {
    let api = Api::new();
    let (_, desc) = api.get("/v1/nodes?sort_key=name&sort_dir=desc").await;
    assert_eq!(names(&desc), ["r1", "n2", "n1"]);
    // By UUID, one node a page, following `next`: every node once, in order.
    let (_, all) = api.get("/v1/nodes?fields=name,uuid").await;
    let mut expected: Vec<(String, String)> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["uuid"].as_str().unwrap().into(),
                n["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut uri = "/v1/nodes?sort_key=uuid&limit=1".to_string();
    loop {
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(names(&page));
        match page["next"].as_str() {
            Some(next) => uri = next[next.find("/v1/").unwrap()..].to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
    assert_eq!(seen, expected);
    // Equal keys keep name order.
    let mut record = rivet::store::records::NodeRecord::enrolled("u", "fake-hardware");
    record.provision_state = rivet::vocab::ProvisionState::Active;
    api.shared.store.put_node("n1", &record).unwrap();
    let (_, by_state) = api.get("/v1/nodes?sort_key=provision_state").await;
    assert_eq!(names(&by_state), ["n1", "n2", "r1"]);
    let (_, by_state) = api
        .get("/v1/nodes?sort_key=provision_state&sort_dir=desc")
        .await;
    assert_eq!(names(&by_state), ["r1", "n2", "n1"]);
    let (_, by_driver) = api.get("/v1/nodes?sort_key=driver&sort_dir=desc").await;
    assert_eq!(names(&by_driver), ["r1", "n2", "n1"]);

    let (status, body) = api.raw("/v1/nodes?sort_key=colour").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        fault(&body).starts_with("The sort_key value \"colour\" is an invalid field for sorting"),
        "{body}"
    );
    let (status, body) = api.raw("/v1/nodes?sort_dir=up").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        fault(&body),
        "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'"
    );
}

#[tokio::test]
async fn drivers_as_rivet_driver_shows_them_with_links() {
    let api = Api::new();
    let (_, list) = api.get("/v1/drivers").await;
    let names: Vec<&str> = list["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fake-hardware", "ipmi"]);
    assert_eq!(list["drivers"][0]["type"], "dynamic");
    assert!(list["drivers"][0].get("default_vendor_interface").is_none());
    assert!(
        list["drivers"][0]["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/v1/drivers/fake-hardware")
    );
    let (_, detail) = api.get("/v1/drivers?detail=true").await;
    assert_eq!(detail["drivers"][0]["default_vendor_interface"], "fake");
    let (status, one) = api.get("/v1/drivers/ipmi").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["default_power_interface"], "ipmitool");
    assert!(
        one["properties"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/properties")
    );
    let (_, props) = api.get("/v1/drivers/ipmi/properties").await;
    assert!(props["bmc.address"].as_str().unwrap().contains("Required"));
    let (_, methods) = api
        .get("/v1/drivers/fake-hardware/vendor_passthru/methods")
        .await;
    assert_eq!(methods, json!({}));
    let (status, body) = api.raw("/v1/drivers/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fault(&body), "Driver nope could not be found.");
}

#[tokio::test]
async fn writes_are_refused_and_change_nothing() {
    let api = Api::new();
    for (method, uri) in [
        ("POST", "/v1/nodes"),
        ("PATCH", "/v1/nodes/n1"),
        ("DELETE", "/v1/nodes/n1"),
        ("PUT", "/v1/nodes/n1/states/provision"),
        ("PUT", "/v1/nodes/n1/states/power"),
        ("POST", "/v1/drivers"),
        ("POST", "/v1/ports"),
        ("PATCH", "/v1/ports/1be26c0b-03f2-4d2e-ae87-c02d7f33c123"),
    ] {
        let (status, body) = api.send(method, uri, r#"{"target": "deleted"}"#).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(fault(&body).contains("read-only"), "{body}");
    }
    // A write is refused as one even where nothing is served.
    let (status, body) = api.send("POST", "/v1/ports", "{}").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(fault(&body).contains("read-only"), "{body}");
    let (status, body) = api.raw("/v1/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fault(&body), "The requested resource could not be found.");
    let (_, n1) = api.get("/v1/nodes/n1").await;
    assert_eq!(n1["provision_state"], "enroll");
    assert!(api.shared.store.nodes().unwrap().is_empty());
}

#[tokio::test]
async fn passthru_answers_every_code_of_ironic() {
    let api = Api::new();
    let vp = "/v1/nodes/n1/vendor_passthru";
    let (status, methods) = api.get(&format!("{vp}/methods")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        methods["third_method_sync"],
        json!({"http_methods": ["POST"], "async": false, "description": "Test if the value of bar is meow", "attach": false, "require_exclusive_lock": true})
    );
    assert_eq!(
        methods["fourth_method_shared_lock"]["require_exclusive_lock"],
        false
    );

    for case in passthru_cases() {
        let (status, text) = api.send(case.verb, &case.uri(vp, ""), case.body).await;
        case.check(status.as_u16(), &text);
    }
    let big = format!(r#"{{"bar":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, _) = api
        .send("POST", &format!("{vp}?method=second_method"), &big)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The 202 call's result lands in the node's history.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, history) = api.get("/v1/nodes/n1/history").await;
        let done = history["history"].as_array().unwrap().iter().any(|e| {
            e["action"] == "vendor_passthru.second_method"
                && e["outcome"] == "succeeded"
                && e["detail"] == "true"
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no history event: {history}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (_, metrics) = api.raw("/metrics").await;
    assert!(
        metrics.contains("rivet_passthru_calls_total{scope=\"node\",code=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rivet_passthru_calls_total{scope=\"node\",code=\"400\"} 9"),
        "{metrics}"
    );
    assert!(metrics.contains("rivet_nodes{provision_state=\"enroll\"} 3"));
}

#[tokio::test]
async fn a_held_node_lock_refuses_exclusive_methods_only() {
    let api = Api::new();
    let guard = api.shared.locks.try_lock("n1", "converge").unwrap();
    let host = api.shared.fleet().conductor.host.clone();
    let vp = "/v1/nodes/n1/vendor_passthru";
    for method in ["third_method_sync", "second_method"] {
        let (status, body) = api
            .send(
                "POST",
                &format!("{vp}?method={method}"),
                r#"{"bar":"meow"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            fault(&body),
            format!(
                "Node n1 is locked by host {host}, please retry after the current operation is completed."
            )
        );
    }
    let (status, _) = api
        .send(
            "POST",
            &format!("{vp}?method=fourth_method_shared_lock"),
            r#"{"bar":"woof"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, n1) = api.get("/v1/nodes/n1").await;
    assert_eq!(n1["reservation"], json!(host));
    // Another node is not affected.
    let (status, body) = api
        .send(
            "POST",
            "/v1/nodes/n2/vendor_passthru?method=third_method_sync",
            r#"{"bar":"meow"}"#,
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
    drop(guard);
    let (status, _) = api
        .send(
            "POST",
            &format!("{vp}?method=third_method_sync"),
            r#"{"bar":"meow"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, n1) = api.get("/v1/nodes/n1").await;
    assert_eq!(n1["reservation"], Value::Null);
}

#[tokio::test]
async fn node_documents_follow_the_store() {
    let api = Api::new();
    let mut record = rivet::store::records::NodeRecord::enrolled("u", "fake-hardware");
    record.provision_state = rivet::vocab::ProvisionState::Active;
    record.power_state = Some(rivet::vocab::PowerState::On);
    record.last_error = Some("boom".into());
    record.properties = rivet::store::records::Properties::new(
        json!({"cpus": 8, "memory_gib": 64, "macs": ["52:54:00:00:00:01"]})
            .as_object()
            .unwrap(),
    );
    api.shared.store.put_node("n2", &record).unwrap();
    let (_, n2) = api.get("/v1/nodes/n2").await;
    assert_eq!(n2["provision_state"], "active");
    assert_eq!(n2["power_state"], "power on");
    assert_eq!(n2["last_error"], "boom");
    // What inspection found, with Ironic's memory_mb beside memory_gib.
    assert_eq!(
        n2["properties"],
        json!({"cpus": 8, "memory_gib": 64, "memory_mb": 65536, "macs": ["52:54:00:00:00:01"]})
    );
    let (_, n1) = api.get("/v1/nodes/n1").await;
    assert_eq!(n1["properties"], json!({}));
    let (_, active) = api.get("/v1/nodes?provision_state=active").await;
    assert_eq!(active["nodes"][0]["name"], "n2");
    // A recorded node no longer declared is still shown.
    api.shared.store.put_node("gone", &record).unwrap();
    let (status, gone) = api.get("/v1/nodes/gone").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gone["extra"]["declared"], false);
}

#[tokio::test]
async fn a_token_guards_passthru_and_optionally_reads() {
    let token = "s3cret-token";
    let api = Api::with(|shared| {
        ApiState::new(
            Arc::clone(shared),
            ApiOptions {
                token: Some(token.into()),
                token_reads: true,
                ..ApiOptions::default()
            },
        )
        .unwrap()
    });
    let call = |auth: Option<String>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/v1/nodes/n1/vendor_passthru?method=third_method_sync");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(r#"{"bar":"meow"}"#)).unwrap()
    };
    let (status, headers, body) = api.call(call(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(fault(&body).starts_with("Authentication required"));
    assert_eq!(
        api.call(call(Some("Bearer wrong".into()))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call(call(Some(format!("Bearer {token}")))).await.0,
        StatusCode::OK
    );
    let with_x_auth = Request::builder()
        .uri("/v1/nodes")
        .header("x-auth-token", token)
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.call(with_x_auth).await.0, StatusCode::OK);
    assert_eq!(api.call(get("/v1/nodes")).await.0, StatusCode::UNAUTHORIZED);
    // Version documents and health stay open for clients and probes.
    assert_eq!(api.call(get("/")).await.0, StatusCode::OK);
    assert_ne!(api.call(get("/healthz")).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_says_what_is_wrong() {
    let api = Api::new();
    let (status, doc) = api.get("/healthz").await;
    // No daemon loop runs here: the watcher is not alive.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(doc["watcher_alive"], false);
    assert_eq!(doc["store"], "ok");
    api.shared.watcher_alive.store(true, Ordering::SeqCst);
    let (status, doc) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["nodes"], 3);
    assert_eq!(doc["last_pass_age_seconds"], Value::Null);
}

#[tokio::test]
async fn one_history_event_by_its_uuid_or_sequence_number() {
    let api = Api::new();
    let event = |node: &str, action: &str| {
        rivet::store::Write::Event(rivet::store::records::Event::note(
            node,
            action,
            rivet::store::records::Outcome::Noted,
            "checked",
            "2026-01-01T00:00:00Z".into(),
        ))
    };
    api.shared
        .store
        .apply(&[
            event("n1", "first"),
            event("n2", "other"),
            event("n1", "second"),
        ])
        .unwrap();
    let (_, list) = api.get("/v1/nodes/n1/history").await;
    let items = list["history"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let second = &items[1];
    assert_eq!(second["event_type"], "second");
    let uuid = second["uuid"].as_str().unwrap();
    assert!(
        second["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/history/{uuid}"))
    );
    let (status, one) = api.get(&format!("/v1/nodes/n1/history/{uuid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&one, second);
    let (_, by_seq) = api.get("/v1/nodes/n1/history/3").await;
    assert_eq!(&by_seq, second);
    // Another node's event is not this node's.
    let (status, body) = api.raw("/v1/nodes/n1/history/2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fault(&body), "Node history record 2 could not be found.");
}

#[tokio::test]
async fn a_limit_of_10_to_the_20_is_every_node_not_an_error() {
    let api = Api::new();
    let (status, list) = api.get("/v1/nodes?limit=100000000000000000000").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["nodes"].as_array().unwrap().len(), 3);
    let (status, history) = api
        .get("/v1/nodes/n1/history?limit=100000000000000000000")
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let (status, _) = api.get("/v1/nodes?limit=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_direct_node_shows_its_image_and_the_agents_ramdisk_as_ironic_does() {
    let sha = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_deploy_interfaces = [\"fake\", \"direct\"]\n",
        ),
        (
            "nodes/a.toml",
            &format!(
                "[[node]]\nname = \"d1\"\ndriver = \"fake-hardware\"\ndeploy_interface = \"direct\"\n\
                 deploy_kernel = \"http://10.0.0.2/ipa.kernel\"\ndeploy_ramdisk = \"http://10.0.0.2/ipa.initramfs\"\n\
                 instance = {{ image = \"http://10.0.0.2/disk.qcow2\", checksum = \"sha256:{sha}\", disk_format = \"qcow2\" }}\n\
                 desired = {{ provision = \"active\" }}\n[[node.ports]]\naddress = \"52:54:00:00:00:01\"\n\n\
                 [[node]]\nname = \"plain\"\ndriver = \"fake-hardware\"\n"
            ),
        ),
    ]);
    let shared = Conductor::open(fleet.path(), &Default::default()).unwrap();
    let app = api::router(daemon::api_state(&shared).unwrap());
    let show = |name: &str| {
        let app = app.clone();
        let uri = format!("/v1/nodes/{name}");
        async move {
            let response = app.oneshot(get(&uri)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()
        }
    };
    let node = show("d1").await;
    assert_eq!(
        node["instance_info"],
        json!({
            "image_source": "http://10.0.0.2/disk.qcow2",
            "image_checksum": format!("sha256:{sha}"),
            "image_os_hash_algo": "sha256",
            "image_os_hash_value": sha.to_ascii_lowercase(),
            "image_disk_format": "qcow2",
        })
    );
    assert_eq!(
        node["driver_info"]["deploy_kernel"],
        "http://10.0.0.2/ipa.kernel"
    );
    assert_eq!(
        node["driver_info"]["deploy_ramdisk"],
        "http://10.0.0.2/ipa.initramfs"
    );
    assert!(node["driver_info"].get("deploy_iso").is_none());
    let plain = show("plain").await;
    assert_eq!(plain["instance_info"], json!({}));
    let keys: Vec<&String> = plain["driver_info"].as_object().unwrap().keys().collect();
    assert!(keys.iter().all(|k| !k.starts_with("deploy_")), "{keys:?}");
}
