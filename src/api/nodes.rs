//! `GET /v1/nodes[?detail=true]`, `GET /v1/nodes/{id}`, `…/states`,
//! `…/history`: built from the node index, so a read costs a lookup and
//! some string concatenation, not a scan or a store read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::index::{NodeEntry, NodeIndex};
use super::version::{BaseUrl, Negotiated, links};
use crate::model::fleet::Fleet;
use crate::store::records::{Event, Outcome};

/// Ironic's `max_limit`: the most nodes one page holds.
pub const MAX_LIMIT: usize = 1000;

/// A JSON body that is already text.
pub fn json_text(text: String) -> Response {
    json_bytes(Bytes::from(text))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A boolean query parameter, as Ironic reads one; absent is false.
pub(super) fn truthy(value: Option<&String>, param: &str) -> ApiResult<bool> {
    match value.map(|s| s.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(ApiError::BadParameter {
            param: param.to_string(),
            message: format!("`{v}` is not a boolean; use true or false"),
        }),
    }
}

fn node_links(out: &mut String, base: &str, uuid: &str) {
    let _ = write!(
        out,
        r#","links":[{{"href":"{base}/v1/nodes/{uuid}","rel":"self"}},{{"href":"{base}/nodes/{uuid}","rel":"bookmark"}}]"#
    );
}

/// The full node document for `GET /v1/nodes/{id}` and `?detail=true`.
fn write_detail(out: &mut String, state: &ApiState, fleet: &Fleet, entry: &NodeEntry, base: &str) {
    out.push_str(entry.detail_prefix(fleet));
    // Who holds the node's lock is live state, never cached.
    match state.conductor.locks.holder(&entry.name) {
        Some(_) => {
            let _ = write!(out, ",\"reservation\":{}", json!(fleet.conductor.host));
        }
        None => out.push_str(",\"reservation\":null"),
    }
    node_links(out, base, &entry.uuid);
    let _ = write!(
        out,
        r#","states":[{{"href":"{base}/v1/nodes/{u}/states","rel":"self"}},{{"href":"{base}/nodes/{u}/states","rel":"bookmark"}}]}}"#,
        u = entry.uuid
    );
}

/// The full node document at `version`: without the fields it does not
/// have yet. Only old versions pay for taking the cached text apart.
fn write_detail_at(
    out: &mut String,
    state: &ApiState,
    fleet: &Fleet,
    entry: &NodeEntry,
    base: &str,
    version: Negotiated,
) {
    if !version.hides_node_fields() {
        return write_detail(out, state, fleet, entry, base);
    }
    let mut text = String::new();
    write_detail(&mut text, state, fleet, entry, base);
    let mut doc: Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
    version.strip_node(&mut doc);
    out.push_str(&Value::Object(doc).to_string());
}

fn write_row(out: &mut String, entry: &NodeEntry, base: &str) {
    out.push_str(entry.row_prefix());
    node_links(out, base, &entry.uuid);
    out.push('}');
}

/// Only the asked-for fields of the full document.
fn selected(
    state: &ApiState,
    fleet: &Fleet,
    entry: &NodeEntry,
    fields: &[String],
    base: &str,
) -> Value {
    let mut doc = entry.document(fleet);
    doc.insert(
        "reservation".into(),
        json!(
            state
                .conductor
                .locks
                .holder(&entry.name)
                .map(|_| &fleet.conductor.host)
        ),
    );
    let mut out: Map<String, Value> = fields
        .iter()
        .filter_map(|f| doc.remove(f).map(|v| (f.clone(), v)))
        .collect();
    out.insert(
        "links".into(),
        links(base, &format!("nodes/{}", entry.uuid)),
    );
    Value::Object(out)
}

/// Parse `fields=a,b`; every name must be a node field.
fn parse_fields(
    fleet: &Fleet,
    index: &NodeIndex,
    text: Option<&String>,
) -> ApiResult<Option<Vec<String>>> {
    let Some(text) = text else { return Ok(None) };
    let fields: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let known = known_fields(fleet, index);
    let unknown: Vec<&str> = fields
        .iter()
        .filter(|f| !known.contains(f.as_str()) && f.as_str() != "reservation")
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadParameter {
            param: "fields".into(),
            message: format!("Field(s) \"{}\" are not valid", unknown.join(", ")),
        });
    }
    Ok(Some(fields))
}

fn known_fields(fleet: &Fleet, index: &NodeIndex) -> std::collections::BTreeSet<String> {
    match index.entries.first() {
        Some(e) => e.document(fleet).keys().cloned().collect(),
        None => Default::default(),
    }
}

fn find<'a>(index: &'a NodeIndex, id: &str) -> ApiResult<&'a Arc<NodeEntry>> {
    index
        .find(id)
        .ok_or_else(|| ApiError::NodeNotFound(id.to_string()))
}

/// Rendered list pages of one index version: the same page asked again
/// (a dashboard polling) is answered without rendering. Only short rows are
/// kept; detail pages carry the live lock holder.
#[derive(Default)]
pub struct PageCache {
    pages: std::sync::Mutex<Option<Pages>>,
}

/// The index the pages were rendered from, and the pages by request.
type Pages = (Arc<NodeIndex>, HashMap<String, Bytes>);

/// Pages kept per index version.
const MAX_PAGES: usize = 256;

impl PageCache {
    fn get(&self, index: &Arc<NodeIndex>, key: &str) -> Option<Bytes> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        match &*pages {
            Some((at, pages)) if Arc::ptr_eq(at, index) => pages.get(key).cloned(),
            _ => None,
        }
    }

    fn put(&self, index: &Arc<NodeIndex>, key: String, page: Bytes) {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *pages {
            Some((at, pages)) if Arc::ptr_eq(at, index) => {
                if pages.len() >= MAX_PAGES {
                    pages.clear();
                }
                pages.insert(key, page);
            }
            _ => *pages = Some((Arc::clone(index), HashMap::from([(key, page)]))),
        }
    }
}

/// `GET /v1/nodes`
pub async fn list(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    version: Negotiated,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let index = state.index();
    let cacheable = !params.contains_key("detail") && !params.contains_key("fields");
    let key = cacheable.then(|| format!("{base} {params:?} {version:?}"));
    if let Some(page) = key.as_ref().and_then(|k| state.pages.get(&index, k)) {
        return Ok(json_bytes(page));
    }
    let fleet = &index.fleet;
    let detail = truthy(params.get("detail"), "detail")?;
    let fields = parse_fields(fleet, &index, params.get("fields"))?;
    if detail && fields.is_some() {
        return Err(ApiError::BadParameter {
            param: "fields".into(),
            message: "Can not specify ?detail=True and fields in the same request.".into(),
        });
    }
    let limit = match params.get("limit") {
        None => MAX_LIMIT,
        Some(text) => match parse_limit(text)? {
            0 => MAX_LIMIT,
            n => n.min(MAX_LIMIT),
        },
    };
    // Positions into `index.entries` in the asked order; None: by name.
    let order = sort_order(&index, params.get("sort_key"), params.get("sort_dir"))?;
    let at = |i: usize| order.as_ref().map_or(i, |o| o[i]);
    let start = match params.get("marker") {
        None => 0,
        Some(m) => index
            .position(m)
            .map(|p| match &order {
                Some(o) => o.iter().position(|&i| i == p).expect("a permutation") + 1,
                None => p + 1,
            })
            .ok_or_else(|| ApiError::BadParameter {
                param: "marker".into(),
                message: format!("no node `{m}` to continue after"),
            })?,
    };
    let provision = params.get("provision_state");
    let maintenance = match params.get("maintenance") {
        Some(_) => Some(truthy(params.get("maintenance"), "maintenance")?),
        None => None,
    };
    let driver = params.get("driver");
    let matches = |e: &NodeEntry| {
        provision.is_none_or(|p| e.provision_state().as_str() == p)
            && maintenance.is_none_or(|m| e.maintenance() == m)
            && driver.is_none_or(|d| e.driver(fleet) == d)
    };

    let mut out = String::with_capacity(64 + limit.min(index.entries.len()) * 320);
    out.push_str("{\"nodes\":[");
    let mut taken = 0;
    let mut last: Option<&NodeEntry> = None;
    let mut more = false;
    for entry in
        (start.min(index.entries.len())..index.entries.len()).map(|i| &index.entries[at(i)])
    {
        if !matches(entry) {
            continue;
        }
        if taken == limit {
            more = true;
            break;
        }
        if taken > 0 {
            out.push(',');
        }
        match &fields {
            Some(f) => {
                let mut doc = selected(&state, fleet, entry, f, &base);
                if let Value::Object(map) = &mut doc {
                    version.strip_node(map);
                }
                out.push_str(&doc.to_string());
            }
            None if detail => write_detail_at(&mut out, &state, fleet, entry, &base, version),
            None => write_row(&mut out, entry, &base),
        }
        taken += 1;
        last = Some(entry);
    }
    out.push(']');
    if let (true, Some(last)) = (more, last) {
        let mut query: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "marker" && k.as_str() != "limit")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        query.push(("limit".into(), limit.to_string()));
        query.push(("marker".into(), last.uuid.clone()));
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let _ = write!(
            out,
            ",\"next\":{}",
            json!(format!("{base}/v1/nodes?{encoded}"))
        );
    }
    out.push('}');
    let page = Bytes::from(out);
    if let Some(key) = key {
        state.pages.put(&index, key, page.clone());
    }
    Ok(json_bytes(page))
}

/// The fields nodes can be sorted by (Ironic's `sort_key`); `id` is
/// Ironic's default, which rivet (having no database ids) takes as the name.
const SORT_KEYS: [&str; 8] = [
    "id",
    "name",
    "uuid",
    "driver",
    "provision_state",
    "power_state",
    "maintenance",
    "updated_at",
];

/// The order `sort_key`/`sort_dir` ask for, as positions into the entries
/// (which are by name); None when that is by name, ascending. Ties keep
/// name order.
fn sort_order(
    index: &NodeIndex,
    key: Option<&String>,
    dir: Option<&String>,
) -> ApiResult<Option<Vec<usize>>> {
    let descending = match dir.map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::BadQuery(format!(
                "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
            )));
        }
    };
    let key = key.map_or("name", String::as_str);
    if !SORT_KEYS.contains(&key) {
        return Err(ApiError::BadQuery(format!(
            "The sort_key value \"{key}\" is an invalid field for sorting; valid: {}",
            SORT_KEYS.join(", ")
        )));
    }
    let by_name = matches!(key, "id" | "name");
    if by_name && !descending {
        return Ok(None);
    }
    let fleet = &index.fleet;
    let value = |e: &NodeEntry| -> Option<String> {
        let record = e.record.as_deref();
        match key {
            "uuid" => Some(e.uuid.clone()),
            "driver" => Some(e.driver(fleet).to_string()),
            "provision_state" => Some(e.provision_state().as_str().to_string()),
            "power_state" => record
                .and_then(|r| r.power_state)
                .map(|p| p.as_str().to_string()),
            "maintenance" => Some(e.maintenance().to_string()),
            "updated_at" => record.and_then(|r| r.updated_at.clone()),
            _ => None,
        }
    };
    let mut order: Vec<usize> = (0..index.entries.len()).collect();
    if !by_name {
        let keys: Vec<Option<String>> = index.entries.iter().map(|e| value(e)).collect();
        // Stable: equal keys stay in name order.
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    }
    if descending {
        order.reverse();
    }
    Ok(Some(order))
}

/// `GET /v1/nodes/{id}`
pub async fn show(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    version: Negotiated,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let index = state.index();
    let entry = find(&index, &id)?;
    if let Some(fields) = parse_fields(&index.fleet, &index, params.get("fields"))? {
        let mut doc = selected(&state, &index.fleet, entry, &fields, &base);
        if let Value::Object(map) = &mut doc {
            version.strip_node(map);
        }
        return Ok(json_text(doc.to_string()));
    }
    let mut out = String::with_capacity(4096);
    write_detail_at(&mut out, &state, &index.fleet, entry, &base, version);
    Ok(json_text(out))
}

/// `GET /v1/nodes/{id}/states`
pub async fn states(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let index = state.index();
    let entry = find(&index, &id)?;
    let doc = entry.document(&index.fleet);
    let mut out = Map::new();
    for key in [
        "provision_state",
        "target_provision_state",
        "power_state",
        "target_power_state",
        "last_error",
        "provision_updated_at",
        "console_enabled",
        "raid_config",
        "target_raid_config",
        "boot_mode",
        "secure_boot",
        "deploy_step",
        "maintenance",
        "fault",
    ] {
        out.insert(
            key.to_string(),
            doc.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(json_text(Value::Object(out).to_string()))
}

/// One history event in Ironic's shape, with rivet's own fields beside.
/// `GET /v1/nodes/{id}/history/{event}`: one event by the UUID the list
/// gives it (or by its sequence number).
pub async fn history_event(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path((id, event)): Path<(String, String)>,
) -> ApiResult<Response> {
    let index = state.index();
    let entry = find(&index, &id)?;
    // A node keeps at most `history_max_entries` events: a short scan.
    let events = node_events(&state, &entry.name, usize::MAX).await?;
    let seq = event.parse::<u64>().ok();
    events
        .iter()
        .find(|e| Some(e.seq) == seq || event_uuid(&entry.uuid, e.seq).to_string() == event)
        .map(|e| {
            let host = &index.fleet.conductor.host;
            json_text(history_item(&base, host, &entry.uuid, e).to_string())
        })
        .ok_or(ApiError::HistoryNotFound(event))
}

/// A node's last `limit` events, read off the async threads.
async fn node_events(state: &ApiState, node: &str, limit: usize) -> ApiResult<Vec<Event>> {
    let store = Arc::clone(&state.conductor.store);
    let name = node.to_string();
    tokio::task::spawn_blocking(move || store.node_history(&name, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// An event's UUID: stable, derived from its node and sequence number.
fn event_uuid(node_uuid: &str, seq: u64) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{node_uuid}/{seq}").as_bytes(),
    )
}

fn history_item(base: &str, host: &str, node_uuid: &str, e: &Event) -> Value {
    let severity = match e.outcome {
        Outcome::Failed => "ERROR",
        _ => "INFO",
    };
    let mut text = format!("{} {}", e.action, outcome_word(e.outcome));
    if let Some(d) = &e.detail {
        text.push_str(": ");
        text.push_str(d);
    }
    let uuid = event_uuid(node_uuid, e.seq);
    json!({
        "uuid": uuid.to_string(),
        "created_at": super::time::ironic(&e.at),
        "severity": severity,
        "event": text,
        "event_type": e.action,
        "conductor": host,
        "user": null,
        "seq": e.seq,
        "action": e.action,
        "outcome": e.outcome,
        "detail": e.detail,
        "run_id": e.run_id,
        "protocol": e.protocol,
        "duration_ms": e.duration_ms,
        "links": links(base, &format!("nodes/{node_uuid}/history/{uuid}")),
    })
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Started => "started",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Resumed => "resumed",
        Outcome::Noted => "noted",
    }
}

/// `GET /v1/nodes/{id}/history[?limit=N]`: the node's last events, oldest first.
pub async fn history(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let index = state.index();
    let entry = find(&index, &id)?;
    let limit = match params.get("limit") {
        None => 100,
        Some(t) => match parse_limit(t)? {
            0 => {
                return Err(ApiError::BadParameter {
                    param: "limit".into(),
                    message: format!("`{t}`: Limit must be positive"),
                });
            }
            n => n,
        },
    };
    let events = node_events(&state, &entry.name, limit).await?;
    let host = &index.fleet.conductor.host;
    let items: Vec<Value> = events
        .iter()
        .map(|e| history_item(&base, host, &entry.uuid, e))
        .collect();
    Ok(json_text(json!({ "history": items }).to_string()))
}

/// A `limit` parameter: a whole number, at least 0; one too large for any
/// count (`10^20`) is as many as there are, not an error.
fn parse_limit(text: &str) -> Result<usize, ApiError> {
    match text.parse::<usize>() {
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Ok(usize::MAX),
        Err(_) => Err(ApiError::BadParameter {
            param: "limit".into(),
            message: format!("`{text}`: Limit must be positive"),
        }),
    }
}
