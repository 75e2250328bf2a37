//! The read-only resources, microversion headers, refusals and timestamps
//! of the API, through `api::router` with `oneshot`, over a fleet that a
//! real `rivet reconcile` converged first; and rivet's answers held to the
//! key sets and value types of real Ironic 39 answers
//! (`tests/fixtures/ironic-api/`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use rivet::api;
use rivet::conductor::Conductor;
use rivet::daemon;
use serde_json::Value;
use tower::ServiceExt;

use crate::api::fault;
use crate::support::{TempFleet, fixture};

pub const HOST: &str = "rivet-test";

pub const RIVET_TOML: &str = "[conductor]\nhost = \"rivet-test\"\n\
    [hardware]\nenabled_hardware_types = [\"fake-hardware\", \"ipmi\"]\n";

pub const TEMPLATES: &str = r#"
[[deploy_template]]
name = "CUSTOM_TUNED"
steps = [{ interface = "bios", step = "apply_configuration", priority = 150, args = { settings = [{ name = "LogicalProc", value = "Enabled" }] } }]
"#;

/// `f1` is deployed through a template that applies a BIOS setting.
pub const NODES: &str = r#"
[[node]]
name = "f1"
driver = "fake-hardware"
traits = ["CUSTOM_TUNED", "CUSTOM_B"]
console_interface = "no-console"
desired = { provision = "active", power = "on" }
"#;

/// An IPMI node declared after the converge: rivet never reached it.
pub const LATER_NODES: &str = r#"
[[node]]
name = "r1"
driver = "ipmi"
bmc = { address = "ipmi://10.0.0.7:6230", username = "admin", password_env = "RIVET_TEST_BMC_PASSWORD" }
desired = { provision = "manageable" }
"#;

pub fn fleet() -> TempFleet {
    TempFleet::new(&[
        ("rivet.toml", RIVET_TOML),
        ("drivers/templates.toml", TEMPLATES),
        ("nodes/a.toml", NODES),
    ])
}

/// Converge with the real binary, as an operator would before starting the
/// daemon; then declare `r1`, which has no BMC to reach.
fn converge_then_declare_r1(fleet: &TempFleet) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivet"))
        .env("NO_COLOR", "1")
        .arg("reconcile")
        .arg(fleet.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(fleet.path().join("nodes/b.toml"), LATER_NODES).unwrap();
}

struct Api {
    app: Router,
    _conductor: Arc<Conductor>,
    _fleet: TempFleet,
}

impl Api {
    fn converged() -> Self {
        let fleet = fleet();
        converge_then_declare_r1(&fleet);
        let conductor = Conductor::open(fleet.path(), &Default::default()).unwrap();
        let app = api::router(daemon::api_state(&conductor).unwrap());
        Self {
            app,
            _conductor: conductor,
            _fleet: fleet,
        }
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// A request with headers, e.g. `[("OpenStack-API-Version", "baremetal 1.80")]`.
    async fn ask(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.call(request.body(Body::empty()).unwrap()).await
    }

    /// GET at the latest version; the body as JSON.
    async fn latest(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .ask("GET", uri, &[("X-OpenStack-Ironic-API-Version", "latest")])
            .await;
        let doc = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{uri}: {body}"));
        (status, doc)
    }
}

fn capture(name: &str) -> Value {
    let path = fixture(&format!("ironic-api/{name}.body"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn keys(doc: &Value) -> BTreeSet<String> {
    doc.as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"))
        .keys()
        .cloned()
        .collect()
}

/// A JSON value's type, as the client parsing it sees it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Hold rivet's answer to Ironic's: the same keys at every level (rivet may
/// add keys where `extra_ok`), the same value types, arrays compared by
/// their first items. rivet's `null` stands in for a value only at the keys
/// of `unknown_ok`: what rivet cannot know.
fn same_shape(at: &str, ironic: &Value, rivet: &Value, extra_ok: bool, unknown_ok: &[&str]) {
    let key = at.rsplit('.').next().unwrap_or(at);
    // A null in the capture says nothing of the type a value has when set.
    if ironic.is_null() || (rivet.is_null() && unknown_ok.contains(&key)) {
        return;
    }
    assert_eq!(
        kind(ironic),
        kind(rivet),
        "{at}: Ironic has {ironic}, rivet {rivet}"
    );
    match (ironic, rivet) {
        (Value::Object(i), Value::Object(r)) => {
            let missing: Vec<&String> = i.keys().filter(|k| !r.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{at}: rivet lacks {missing:?}: {rivet}");
            if !extra_ok {
                let extra: Vec<&String> = r.keys().filter(|k| !i.contains_key(*k)).collect();
                assert!(extra.is_empty(), "{at}: rivet adds {extra:?}");
            }
            for (k, v) in i {
                same_shape(&format!("{at}.{k}"), v, &r[k], extra_ok, unknown_ok);
            }
        }
        (Value::Array(i), Value::Array(r)) => {
            if let (Some(a), Some(b)) = (i.first(), r.first()) {
                same_shape(&format!("{at}[0]"), a, b, extra_ok, unknown_ok);
            }
        }
        _ => {}
    }
}

/// `2026-12-01T08:47:02.319383+00:00`, as Ironic writes times.
fn ironic_time(text: &Value) -> bool {
    let t = text.as_str().unwrap_or("");
    t.len() == 32
        && t.ends_with("+00:00")
        && t.as_bytes()[19] == b'.'
        && t[20..26].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_have_the_keys_and_types_of_ironics() {
    let api = Api::converged();
    let (_, traits) = api.latest("/v1/nodes/f1/traits").await;
    let (_, templates) = api.latest("/v1/deploy_templates").await;
    let template_uuid = templates["deploy_templates"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    // (capture, rivet's path, rivet may add keys, keys rivet may leave null)
    let cases: &[(&str, String, bool, &[&str])] = &[
        ("node_traits", "/v1/nodes/f1/traits".into(), false, &[]),
        (
            "node_boot_device",
            "/v1/nodes/f1/management/boot_device".into(),
            false,
            &[],
        ),
        (
            "node_boot_dev_supp",
            "/v1/nodes/f1/management/boot_device/supported".into(),
            false,
            &[],
        ),
        ("node_bios", "/v1/nodes/f1/bios".into(), false, &[]),
        (
            "node_console_get",
            "/v1/nodes/f1/states/console".into(),
            false,
            &[],
        ),
        ("conductors", "/v1/conductors".into(), false, &[]),
        (
            "conductor_one",
            format!("/v1/conductors/{HOST}"),
            false,
            &[],
        ),
        (
            "deploy_templates",
            "/v1/deploy_templates".into(),
            false,
            &[],
        ),
        (
            "deploy_templates_det",
            "/v1/deploy_templates?detail=true".into(),
            false,
            &["created_at"],
        ),
        (
            "deploy_template_one",
            format!("/v1/deploy_templates/{template_uuid}"),
            false,
            &["created_at"],
        ),
        // rivet's own fields stand beside Ironic's.
        ("node_history", "/v1/nodes/f1/history".into(), true, &[]),
        ("node_states", "/v1/nodes/f1/states".into(), true, &[]),
    ];
    for (name, path, extra_ok, unknown_ok) in cases {
        let (status, doc) = api.latest(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {doc}");
        same_shape(name, &capture(name), &doc, *extra_ok, unknown_ok);
    }
    assert_eq!(
        traits["traits"],
        serde_json::json!(["CUSTOM_TUNED", "CUSTOM_B"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_resources_tell_what_was_declared_and_recorded() {
    let api = Api::converged();
    // Validation from composition, declarations and the last BMC contact.
    let (_, f1) = api.latest("/v1/nodes/f1/validate").await;
    for kind in ["boot", "deploy", "management", "power", "bios"] {
        assert_eq!(f1[kind]["result"], true, "{kind}: {f1}");
    }
    assert_eq!(f1["console"]["result"], false);
    assert_eq!(
        f1["console"]["reason"],
        "Driver fake-hardware does not support console (disabled or not implemented)."
    );
    assert!(f1.get("vendor").is_none());

    // Boot device: the last one rivet set (the fake deploy boots from disk).
    let (_, device) = api.latest("/v1/nodes/f1/management/boot_device").await;
    assert_eq!(
        device,
        serde_json::json!({"boot_device": "disk", "persistent": true})
    );
    let (_, never) = api.latest("/v1/nodes/r1/management/boot_device").await;
    assert_eq!(
        never,
        serde_json::json!({"boot_device": null, "persistent": null})
    );
    let (_, supported) = api
        .latest("/v1/nodes/r1/management/boot_device/supported")
        .await;
    assert_eq!(
        supported["supported_boot_devices"],
        serde_json::json!(["pxe", "disk", "cdrom", "bios"])
    );

    // BIOS: what the template's step applied; nothing for a node never set.
    let (_, bios) = api.latest("/v1/nodes/f1/bios").await;
    assert_eq!(bios["bios"][0]["name"], "LogicalProc");
    assert_eq!(bios["bios"][0]["value"], "Enabled");
    let (status, one) = api.latest("/v1/nodes/f1/bios/LogicalProc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["LogicalProc"]["value"], "Enabled");
    let (status, body) = api.latest("/v1/nodes/f1/bios/NoSuchSetting").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        fault(&body.to_string()),
        "Node f1 doesn't have a BIOS setting 'NoSuchSetting'"
    );
    let (_, none) = api.latest("/v1/nodes/r1/bios").await;
    assert_eq!(none, serde_json::json!({"bios": []}));

    // The conductor is this daemon.
    let (_, conductor) = api.latest(&format!("/v1/conductors/{HOST}")).await;
    assert_eq!(conductor["alive"], true);
    assert_eq!(
        conductor["drivers"],
        serde_json::json!(["fake-hardware", "ipmi"])
    );
    assert!(ironic_time(&conductor["created_at"]), "{conductor}");
    let (status, _) = api.latest("/v1/conductors/elsewhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deploy templates by name or UUID, with their steps.
    let (_, by_name) = api.latest("/v1/deploy_templates/CUSTOM_TUNED").await;
    let uuid = by_name["uuid"].as_str().unwrap();
    let (_, by_uuid) = api.latest(&format!("/v1/deploy_templates/{uuid}")).await;
    assert_eq!(by_name, by_uuid);
    assert_eq!(by_name["steps"][0]["step"], "apply_configuration");
    assert_eq!(by_name["steps"][0]["priority"], 150);
    let (status, _) = api.latest("/v1/deploy_templates/CUSTOM_NONE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A node that does not exist has none of these.
    for path in ["validate", "traits", "bios", "management/boot_device"] {
        let (status, _) = api.latest(&format!("/v1/nodes/nope/{path}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_are_ironics_with_microseconds() {
    let api = Api::converged();
    let (_, f1) = api.latest("/v1/nodes/f1").await;
    for field in [
        "created_at",
        "updated_at",
        "provision_updated_at",
        "inspection_started_at",
        "inspection_finished_at",
    ] {
        assert!(ironic_time(&f1[field]), "{field}: {}", f1[field]);
    }
    assert!(f1["created_at"].as_str() <= f1["updated_at"].as_str());
    assert!(f1["inspection_started_at"].as_str() <= f1["inspection_finished_at"].as_str());
    // Never converged: nothing seen yet.
    let (_, r1) = api.latest("/v1/nodes/r1").await;
    assert_eq!(r1["created_at"], Value::Null);
    assert_eq!(r1["inspection_finished_at"], Value::Null);

    let (_, history) = api.latest("/v1/nodes/f1/history").await;
    let events = history["history"].as_array().unwrap();
    assert!(events.len() > 2, "{history}");
    let times: Vec<&str> = events
        .iter()
        .map(|e| {
            assert!(ironic_time(&e["created_at"]), "{e}");
            e["created_at"].as_str().unwrap()
        })
        .collect();
    // Sub-second precision keeps events a few milliseconds apart distinct.
    let distinct: BTreeSet<&&str> = times.iter().collect();
    assert!(distinct.len() > 1, "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn microversions_come_through_either_header() {
    let api = Api::converged();
    let standard = ("OpenStack-API-Version", "baremetal 1.80");
    let (status, headers, body) = api.ask("GET", "/v1/nodes/f1", &[standard]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-openstack-ironic-api-version"], "1.80");
    assert_eq!(headers["openstack-api-version"], "baremetal 1.80");
    let vary = headers["vary"].to_str().unwrap();
    assert!(
        vary.contains("OpenStack-API-Version") && vary.contains("X-OpenStack-Ironic-API-Version"),
        "{vary}"
    );
    let at_80: Value = serde_json::from_str(&body).unwrap();

    // Both sent: the standard one wins, as in Ironic.
    let (_, headers, body) = api
        .ask(
            "GET",
            "/v1/nodes/f1",
            &[standard, ("X-OpenStack-Ironic-API-Version", "1.70")],
        )
        .await;
    assert_eq!(headers["x-openstack-ironic-api-version"], "1.80");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), at_80);

    // The fields of 1.80 are Ironic's fields of 1.80: every field rivet
    // shows at the latest version is there at 1.80 exactly when Ironic's is.
    let (_, latest) = api.latest("/v1/nodes/f1").await;
    let (ironic_80, ironic_latest) = (keys(&capture("osver_ok")), keys(&capture("osver_latest")));
    let rivet_80 = keys(&at_80);
    let mut hidden = Vec::new();
    for field in keys(&latest) {
        if ironic_latest.contains(&field) {
            assert_eq!(
                rivet_80.contains(&field),
                ironic_80.contains(&field),
                "{field} at 1.80"
            );
            if !ironic_80.contains(&field) {
                hidden.push(field);
            }
        }
    }
    assert!(hidden.contains(&"shard".to_string()), "{hidden:?}");
    // An older version hides older fields; no header hides nothing.
    let (_, _, old) = api
        .ask(
            "GET",
            "/v1/nodes/f1",
            &[("X-OpenStack-Ironic-API-Version", "1.30")],
        )
        .await;
    let old: Value = serde_json::from_str(&old).unwrap();
    assert!(old.get("traits").is_none() && old.get("power_interface").is_none());
    assert_eq!(old["name"], "f1");
    let (_, _, unasked) = api.ask("GET", "/v1/nodes/f1", &[]).await;
    assert_eq!(
        keys(&serde_json::from_str(&unasked).unwrap()),
        keys(&latest)
    );

    // 406, in Ironic's words, for too high, another major, or garbage.
    let description = |name: &str| {
        let inner: Value =
            serde_json::from_str(capture(name)["error_message"].as_str().unwrap()).unwrap();
        inner["description"].as_str().unwrap().to_string()
    };
    for (header, value, capture) in [
        ("OpenStack-API-Version", "baremetal 1.999", "osver_too_high"),
        ("OpenStack-API-Version", "baremetal abc", "osver_garbage"),
        ("X-OpenStack-Ironic-API-Version", "2.1", "xver_major2"),
    ] {
        let (status, headers, body) = api.ask("GET", "/v1/nodes/f1", &[(header, value)]).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{value}");
        assert!(headers.get("x-openstack-ironic-api-version").is_none());
        assert_eq!(fault(&body), description(capture), "{value}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_say_what_to_edit_and_what_does_not_exist() {
    let api = Api::converged();
    for (method, path, names) in [
        ("PUT", "/v1/nodes/f1/states/power", "`desired.power`"),
        (
            "PUT",
            "/v1/nodes/f1/states/provision",
            "`desired.provision`",
        ),
        ("PUT", "/v1/nodes/f1/traits", "`traits`"),
        ("PUT", "/v1/nodes/f1/traits/CUSTOM_X", "`traits`"),
        ("DELETE", "/v1/nodes/f1/traits/CUSTOM_B", "`traits`"),
        (
            "PUT",
            "/v1/nodes/f1/management/boot_device",
            "`desired.boot_device`",
        ),
        ("PUT", "/v1/nodes/f1/maintenance", "not declared"),
        ("DELETE", "/v1/nodes/f1/maintenance", "not declared"),
        ("POST", "/v1/nodes", "`[[node]]`"),
        ("POST", "/v1/deploy_templates", "`[[deploy_template]]`"),
        (
            "PATCH",
            "/v1/deploy_templates/CUSTOM_TUNED",
            "`[[deploy_template]]`",
        ),
        ("POST", "/v1/conductors", "declarations"),
        ("POST", "/v1/allocations", "declarations"),
        ("PUT", "/v1/nodes/f1/vifs", "declarations"),
    ] {
        let (status, _, body) = api.ask(method, path, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let text = fault(&body);
        assert!(
            text.contains("read-only") && text.contains(names),
            "{method} {path}: {text}"
        );
    }
    // A path Ironic only writes to, read: method not allowed, not a write.
    for path in ["/v1/nodes/f1/states/power", "/v1/nodes/f1/states/provision"] {
        let (status, _, body) = api.ask("GET", path, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let text = fault(&body);
        assert!(text.starts_with("Method not allowed"), "{text}");
        assert!(!text.contains("would change"), "{text}");
    }
    // Reads of what does not exist are 404s.
    for path in [
        "/v1/nodes/f1/bogus",
        "/v1/chassis",
        "/v1/nodes/f1/states/bogus",
    ] {
        let (status, _, body) = api.ask("GET", path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    // Vendor passthru is still a call, not a refusal.
    let (status, _, _) = api
        .ask("POST", "/v1/nodes/f1/vendor_passthru?method=no_such", &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Where Ironic answers 500 for a client mistake, rivet answers 400.
    let (status, _, body) = api.ask("GET", "/v1/nodes?fields=bogus", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(fault(&body).contains("bogus"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_know_the_pass_run_before_the_daemon() {
    let api = Api::converged();
    let (_, _, health) = api.ask("GET", "/healthz", &[]).await;
    let health: Value = serde_json::from_str(&health).unwrap();
    let age = health["last_pass_age_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{health}"));
    assert!((0.0..600.0).contains(&age), "{health}");
    let (_, _, metrics) = api.ask("GET", "/metrics", &[]).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rivet_last_pass_age_seconds ")),
        "{metrics}"
    );
}
