//! Every list filter Ironic 39 documents for `/v1/nodes`, `/v1/ports` and
//! `/v1/drivers`, through `api::router` with `tower::ServiceExt::oneshot`:
//! a fleet where each filter selects a strict, non-empty subset, and the
//! refusals in Ironic's words.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rivet::api;
use rivet::conductor::Conductor;
use rivet::daemon;
use rivet::store::records::{NodeRecord, Properties};
use rivet::vocab::ProvisionState;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::fault;
use crate::support::TempFleet;

const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";

const NODES: &str = r#"
[[node]]
name = "a1"
driver = "fake-hardware"
resource_class = "rc-gpu"
owner = "team-a"
lessee = "team-b"
conductor_group = "Rack-1"
description = "GPU box, row 3"
shard = "s1"
instance = { uuid = "11111111-2222-3333-4444-555555555555" }

[[node.ports]]
address = "52:54:00:00:00:0A"
physical_network = "physnet1"
local_link_connection = { switch_id = "0a:1b:2c:3d:4e:5f", port_id = "Ethernet3/1" }

[[node.ports]]
address = "52:54:00:00:00:0b"
pxe_enabled = false

[[node]]
name = "a2"
driver = "fake-hardware"
resource_class = "rc-cpu"
owner = "team-b"
description = "plain"
shard = "s2"
retired = true
retired_reason = "end of life"
ports = [{ address = "52:54:00:00:00:0c", physical_network = "physnet2" }]

[[node]]
name = "a3"
driver = "ipmi"
bmc = { address = "ipmi://10.0.0.7:6230", username = "admin", password_env = "RIVET_TEST_BMC_PASSWORD" }

[[node]]
name = "a4"
driver = "fake-hardware"
resource_class = "rc-cpu"
owner = "team-a"
"#;

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";
const MAC_C: &str = "52:54:00:00:00:0c";
/// Only inspection found it (on a3).
const MAC_D: &str = "52:54:00:00:00:0d";

struct Api {
    app: Router,
    shared: Arc<Conductor>,
    _fleet: TempFleet,
}

impl Api {
    /// The fleet above with records: a1 and a4 active (a4 in maintenance
    /// after power failures), a2 available, a3 inspected (MAC_D, and MAC_A,
    /// which a1 declares), and `gone`, recorded but no longer declared.
    fn new() -> Self {
        let fleet = TempFleet::new(&[
            (
                "rivet.toml",
                "[conductor]\nhost = \"conductor-1\"\n[hardware]\nenabled_hardware_types = [\"fake-hardware\", \"ipmi\"]\n",
            ),
            ("nodes/a.toml", NODES),
        ]);
        let shared = Conductor::open(fleet.path(), &Default::default()).unwrap();
        let put = |name: &str, edit: &dyn Fn(&mut NodeRecord)| {
            let mut record = NodeRecord::enrolled(
                rivet::model::node::derived_uuid(name).to_string(),
                "fake-hardware",
            );
            edit(&mut record);
            shared.store.put_node(name, &record).unwrap();
        };
        put("a1", &|r| r.provision_state = ProvisionState::Active);
        put("a2", &|r| r.provision_state = ProvisionState::Available);
        put("a3", &|r| {
            r.properties = Properties::new(
                json!({"cpus": 2, "macs": [MAC_D.to_uppercase(), MAC_A]})
                    .as_object()
                    .unwrap(),
            );
        });
        put("a4", &|r| {
            r.provision_state = ProvisionState::Active;
            r.maintenance = true;
            r.fault = Some("power failure".into());
        });
        put("gone", &|r| {
            r.provision_state = ProvisionState::Manageable;
            r.unmanaged = true;
        });
        let app = api::router(daemon::api_state(&shared).unwrap());
        Self {
            app,
            shared,
            _fleet: fleet,
        }
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn json(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The values of `key` in the list `list` of `uri`'s answer.
    async fn column(&self, uri: &str, list: &str, key: &str) -> Vec<String> {
        let doc = self.json(uri).await;
        doc[list]
            .as_array()
            .unwrap_or_else(|| panic!("{uri}: {doc}"))
            .iter()
            .map(|n| {
                n[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{uri}: {n}"))
                    .to_string()
            })
            .collect()
    }
}

fn uuid_of(name: &str) -> String {
    rivet::model::node::derived_uuid(name).to_string()
}

#[tokio::test]
async fn every_node_list_filter_selects_what_ironic_selects() {
    let api = Api::new();
    let all = api.column("/v1/nodes", "nodes", "name").await;
    assert_eq!(all, ["a1", "a2", "a3", "a4", "gone"]);
    let a2_uuid = uuid_of("a2");
    let cases: &[(&str, &[&str])] = &[
        ("associated=true", &["a1"]),
        ("associated=False", &["a2", "a3", "a4", "gone"]),
        (&format!("instance_uuid={INSTANCE}"), &["a1"]),
        ("maintenance=true", &["a4"]),
        ("maintenance=f", &["a1", "a2", "a3", "gone"]),
        ("retired=true", &["a2"]),
        ("provision_state=active", &["a1", "a4"]),
        ("driver=ipmi", &["a3"]),
        ("resource_class=rc-cpu", &["a2", "a4"]),
        ("fault=power%20failure", &["a4"]),
        ("conductor_group=RACK-1", &["a1"]),
        ("conductor=conductor-1", &["a1", "a2", "a3", "a4"]),
        ("owner=team-a", &["a1", "a4"]),
        ("lessee=team-b", &["a1"]),
        ("project=team-b", &["a1", "a2"]),
        ("description_contains=box", &["a1"]),
        ("shard=s1,s2", &["a1", "a2"]),
        ("sharded=false", &["a3", "a4", "gone"]),
        ("resource_class=rc-cpu&owner=team-a", &["a4"]),
        ("resource_class=rc-cpu&limit=1", &["a2"]),
        (&format!("resource_class=rc-cpu&marker={a2_uuid}"), &["a4"]),
        ("owner=team-a&detail=true", &["a1", "a4"]),
    ];
    for (query, expected) in cases {
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{query}: a row must select a strict, non-empty subset"
        );
        let names = api
            .column(&format!("/v1/nodes?{query}"), "nodes", "name")
            .await;
        assert_eq!(&names, expected, "?{query}");
    }
    // The same filters through the older `detail` path.
    let names = api
        .column("/v1/nodes/detail?resource_class=rc-gpu", "nodes", "name")
        .await;
    assert_eq!(names, ["a1"]);

    // rivet has no chassis and no parent nodes: such filters match nothing.
    for query in [
        "chassis_uuid=1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        "parent_node=a1",
    ] {
        let names = api
            .column(&format!("/v1/nodes?{query}"), "nodes", "name")
            .await;
        assert!(names.is_empty(), "?{query}: {names:?}");
    }
    let names = api
        .column("/v1/nodes?include_children=true", "nodes", "name")
        .await;
    assert_eq!(names, all);
}

#[tokio::test]
async fn bad_node_list_arguments_answer_ironic_s_400() {
    let api = Api::new();
    for (query, message) in [
        ("bogus=1&zzz=2", "Unexpected arguments: bogus, zzz"),
        (
            "fault=bogus",
            "Unrecognized fault \"bogus\" is specified, allowed faults are ('power failure', 'clean failure', 'rescue abort failure', 'service failure')",
        ),
        (
            "provision_state=bogus",
            "Provision state \"bogus\" is not valid",
        ),
        (
            "maintenance=maybe",
            "Invalid maintenance: Unrecognized value 'maybe', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
        ),
        (
            "associated=2",
            "Invalid associated: Unrecognized value '2', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
        ),
        (
            "instance_uuid=nope",
            "Expected UUID for instance_uuid: nope",
        ),
        ("chassis_uuid=nope", "Expected UUID for chassis_uuid: nope"),
    ] {
        let (status, body) = api.get(&format!("/v1/nodes?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "?{query}: {body}");
        assert_eq!(fault(&body), message, "?{query}");
    }
    // A provision state rivet never enters is valid, and matches nothing.
    let names = api
        .column("/v1/nodes?provision_state=rescue%20wait", "nodes", "name")
        .await;
    assert!(names.is_empty());
}

#[tokio::test]
async fn node_documents_show_the_declared_fields_at_ironic_s_names() {
    let api = Api::new();
    let a1 = api.json("/v1/nodes/a1").await;
    for (key, value) in [
        ("resource_class", json!("rc-gpu")),
        ("owner", json!("team-a")),
        ("lessee", json!("team-b")),
        ("conductor_group", json!("rack-1")),
        ("description", json!("GPU box, row 3")),
        ("shard", json!("s1")),
        ("instance_uuid", json!(INSTANCE)),
        ("retired", json!(false)),
        ("conductor", json!("conductor-1")),
    ] {
        assert_eq!(a1[key], value, "{key}");
    }
    let a2 = api.json("/v1/nodes/a2").await;
    assert_eq!(
        (&a2["retired"], &a2["retired_reason"]),
        (&json!(true), &json!("end of life"))
    );
    assert_eq!(a2["conductor_group"], "");
    let gone = api.json("/v1/nodes/gone").await;
    assert_eq!(gone["conductor"], Value::Null);
    // Ironic's link arrays to the node's sub-resources.
    let u = uuid_of("a1");
    for field in ["ports", "portgroups", "volume", "states"] {
        assert_eq!(
            a1[field][0]["href"],
            format!("http://127.0.0.1:6385/v1/nodes/{u}/{field}"),
            "{field}: {}",
            a1[field]
        );
        assert_eq!(a1[field][1]["rel"], "bookmark");
    }
    let only = api.json("/v1/nodes/a1?fields=ports,owner").await;
    assert_eq!(only["ports"], a1["ports"]);
    assert_eq!(only["owner"], "team-a");
    let rows = api.json("/v1/nodes?associated=true").await;
    assert_eq!(rows["nodes"][0]["instance_uuid"], INSTANCE);
}

#[tokio::test]
async fn ports_are_served_with_every_filter_from_the_index() {
    let api = Api::new();
    let all = api.column("/v1/ports", "ports", "address").await;
    // The MAC a1 declares is not shown again as inspected on a3.
    assert_eq!(all, [MAC_A, MAC_B, MAC_C, MAC_D]);
    let cases: &[(&str, &[&str])] = &[
        (&format!("address={}", MAC_A.to_uppercase()), &[MAC_A]),
        ("node=a1", &[MAC_A, MAC_B]),
        (&format!("node_uuid={}", uuid_of("a2")), &[MAC_C]),
        ("pxe_enabled=false", &[MAC_B]),
        ("physical_network=physnet1", &[MAC_A]),
        ("shard=s2", &[MAC_C]),
        ("project=team-b", &[MAC_A, MAC_B, MAC_C]),
        ("node=a1&pxe_enabled=true", &[MAC_A]),
        (
            "sort_key=address&sort_dir=desc",
            &[MAC_D, MAC_C, MAC_B, MAC_A],
        ),
        ("limit=2", &[MAC_A, MAC_B]),
    ];
    for (query, expected) in cases {
        let macs = api
            .column(&format!("/v1/ports?{query}"), "ports", "address")
            .await;
        assert_eq!(&macs, expected, "?{query}");
        let macs = api
            .column(&format!("/v1/ports/detail?{query}"), "ports", "address")
            .await;
        assert_eq!(&macs, expected, "detail ?{query}");
    }

    // Pages continue from `next`.
    let first = api.json("/v1/ports?limit=3").await;
    let next = first["next"].as_str().unwrap();
    let rest = next.strip_prefix("http://127.0.0.1:6385").unwrap();
    let macs = api.column(rest, "ports", "address").await;
    assert_eq!(macs, [MAC_D]);

    // The detail shape, with where each port comes from.
    let detail = api.json(&format!("/v1/ports/detail?address={MAC_A}")).await;
    let port = &detail["ports"][0];
    assert_eq!(port["node_uuid"], uuid_of("a1"));
    assert_eq!(port["extra"], json!({"source": "declared"}));
    assert_eq!(port["pxe_enabled"], true);
    assert_eq!(port["physical_network"], "physnet1");
    assert_eq!(
        port["local_link_connection"],
        json!({"switch_id": "0a:1b:2c:3d:4e:5f", "port_id": "Ethernet3/1"})
    );
    assert_eq!(port["portgroup_uuid"], Value::Null);
    let uuid = port["uuid"].as_str().unwrap();
    assert_eq!(
        uuid,
        rivet::model::node::derived_port_uuid(&rivet::model::node::derived_uuid("a1"), MAC_A)
            .to_string()
    );
    let shown = api.json(&format!("/v1/ports/{uuid}")).await;
    assert_eq!(&shown, port);
    let inspected = api.json(&format!("/v1/ports/detail?address={MAC_D}")).await;
    assert_eq!(inspected["ports"][0]["extra"]["source"], "inspected");
    assert_eq!(inspected["ports"][0]["node_uuid"], uuid_of("a3"));
    let fields = api
        .json(&format!(
            "/v1/ports?address={MAC_B}&fields=pxe_enabled,node_uuid"
        ))
        .await;
    let keys: Vec<&String> = fields["ports"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["links", "node_uuid", "pxe_enabled"]);

    // A node's ports, by name or UUID.
    let macs = api.column("/v1/nodes/a1/ports", "ports", "address").await;
    assert_eq!(macs, [MAC_A, MAC_B]);
    let detail = api
        .json(&format!(
            "/v1/nodes/{}/ports/detail?pxe_enabled=0",
            uuid_of("a1")
        ))
        .await;
    assert_eq!(detail["ports"][0]["address"], MAC_B);
    assert_eq!(detail["ports"].as_array().unwrap().len(), 1);
    let none = api.column("/v1/nodes/a4/ports", "ports", "address").await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn port_refusals_in_ironic_s_words() {
    let api = Api::new();
    for (uri, status, message) in [
        (
            "/v1/ports?bogus=1",
            400,
            "Unexpected arguments: bogus".to_string(),
        ),
        (
            "/v1/ports?portgroup=pg1",
            404,
            "Portgroup pg1 could not be found.".to_string(),
        ),
        (
            "/v1/ports?node=nope",
            404,
            "Node nope could not be found.".to_string(),
        ),
        (
            "/v1/ports?node_uuid=nope",
            400,
            "Expected UUID for node_uuid: nope".to_string(),
        ),
        (
            "/v1/ports/1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            404,
            "Port 1be26c0b-03f2-4d2e-ae87-c02d7f33c123 could not be found.".to_string(),
        ),
        (
            "/v1/ports?sort_key=bogus",
            400,
            "The sort_key value \"bogus\" is an invalid field for sorting".to_string(),
        ),
        (
            "/v1/ports?marker=nope",
            400,
            "Expected UUID for marker: nope".to_string(),
        ),
        (
            "/v1/nodes/nope/ports",
            404,
            "Node nope could not be found.".to_string(),
        ),
        (
            "/v1/nodes/a1/ports?node=a2",
            400,
            "Unexpected arguments: node".to_string(),
        ),
    ] {
        let (code, body) = api.get(uri).await;
        assert_eq!(code.as_u16(), status, "{uri}: {body}");
        assert_eq!(fault(&body), message, "{uri}");
    }
}

#[tokio::test]
async fn ports_follow_what_inspection_finds() {
    let api = Api::new();
    let mut record = api.shared.store.node("a4").unwrap().unwrap();
    record.properties =
        Properties::new(json!({"macs": ["52:54:00:00:00:0e"]}).as_object().unwrap());
    api.shared.store.put_node("a4", &record).unwrap();
    let macs = api.column("/v1/nodes/a4/ports", "ports", "address").await;
    assert_eq!(macs, ["52:54:00:00:00:0e"]);
    let found = api
        .column("/v1/ports?address=52:54:00:00:00:0e", "ports", "address")
        .await;
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn driver_lists_filter_by_type_as_ironic_does() {
    let api = Api::new();
    let dynamic = api
        .column("/v1/drivers?type=dynamic", "drivers", "name")
        .await;
    assert_eq!(dynamic, api.column("/v1/drivers", "drivers", "name").await);
    assert!(!dynamic.is_empty());
    let classic = api.json("/v1/drivers?type=classic&detail=true").await;
    assert_eq!(classic, json!({"drivers": []}));
    for (query, message) in [
        (
            "type=bogus",
            "\"type\" filter must be one of \"classic\" or \"dynamic\", if specified.",
        ),
        ("bogus=1", "Unexpected arguments: bogus"),
        (
            "detail=maybe",
            "Invalid detail: Unrecognized value 'maybe', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
        ),
    ] {
        let (status, body) = api.get(&format!("/v1/drivers?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "?{query}: {body}");
        assert_eq!(fault(&body), message, "?{query}");
    }
}
