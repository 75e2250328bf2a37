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
use crate::model::node::Tenancy;
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

/// A boolean argument as Ironic reads one (oslo's strict `bool_from_string`);
/// absent is false.
pub fn truthy(value: Option<&String>, param: &str) -> ApiResult<bool> {
    Ok(flag(value, param)?.unwrap_or(false))
}

/// A boolean argument, None when absent.
pub fn flag(value: Option<&String>, param: &str) -> ApiResult<Option<bool>> {
    let Some(text) = value else { return Ok(None) };
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(Some(true)),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(Some(false)),
        _ => Err(ApiError::BadQuery(format!(
            "Invalid {param}: Unrecognized value '{text}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ))),
    }
}

/// Refuse arguments a list does not take, in Ironic's words.
pub fn only_known(params: &BTreeMap<String, String>, known: &[&str]) -> ApiResult<()> {
    let unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::BadQuery(format!(
        "Unexpected arguments: {}",
        unknown.join(", ")
    )))
}

/// A UUID argument, in Ironic's words when it is not one.
pub fn uuid_arg(value: Option<&String>, param: &str) -> ApiResult<Option<String>> {
    value
        .map(|text| {
            uuid::Uuid::parse_str(text)
                .map(|u| u.to_string())
                .map_err(|_| ApiError::BadQuery(format!("Expected UUID for {param}: {text}")))
        })
        .transpose()
}

/// A `limit` argument: Ironic's `max_limit` when absent or 0 (and at most that).
pub fn limit_arg(value: Option<&String>) -> ApiResult<usize> {
    match value {
        None => Ok(MAX_LIMIT),
        Some(text) => match parse_limit(text)? {
            0 => Ok(MAX_LIMIT),
            n => Ok(n.min(MAX_LIMIT)),
        },
    }
}

/// `[{self}, {bookmark}]` links to `path` as a JSON text.
pub fn write_links(out: &mut String, base: &str, path: &str) {
    let _ = write!(
        out,
        r#"[{{"href":"{base}/v1/{path}","rel":"self"}},{{"href":"{base}/{path}","rel":"bookmark"}}]"#
    );
}

/// `,"next":URL`: the same list at `base/v1/path` with the same arguments,
/// continuing after `marker`.
pub fn write_next(
    out: &mut String,
    base: &str,
    path: &str,
    params: &BTreeMap<String, String>,
    limit: usize,
    marker: &str,
) {
    let limit = limit.to_string();
    let query = params
        .iter()
        .filter(|(k, _)| k.as_str() != "marker" && k.as_str() != "limit")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("limit", limit.as_str()), ("marker", marker)]);
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    let _ = write!(
        out,
        ",\"next\":{}",
        json!(format!("{base}/v1/{path}?{encoded}"))
    );
}

/// The link arrays of a node document besides `links`, in Ironic's order.
const NODE_LINK_FIELDS: [&str; 4] = ["ports", "states", "portgroups", "volume"];

fn node_links(out: &mut String, base: &str, uuid: &str) {
    out.push_str(",\"links\":");
    write_links(out, base, &format!("nodes/{uuid}"));
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
    for field in NODE_LINK_FIELDS {
        let _ = write!(out, ",\"{field}\":");
        write_links(out, base, &format!("nodes/{}/{field}", entry.uuid));
    }
    out.push('}');
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

fn write_row(out: &mut String, fleet: &Fleet, entry: &NodeEntry, base: &str) {
    out.push_str(entry.row_prefix(fleet));
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
    for field in NODE_LINK_FIELDS {
        doc.insert(
            field.into(),
            links(base, &format!("nodes/{}/{field}", entry.uuid)),
        );
    }
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
    let known = known_fields(fleet, index);
    fields_arg(text, |f| {
        known.contains(f) || f == "reservation" || NODE_LINK_FIELDS.contains(&f)
    })
    .map(Some)
}

/// `fields=a,b`: the names, each of which must be `known`.
pub fn fields_arg(text: &str, known: impl Fn(&str) -> bool) -> ApiResult<Vec<String>> {
    let fields: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let unknown: Vec<&str> = fields
        .iter()
        .map(String::as_str)
        .filter(|f| !known(f))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadParameter {
            param: "fields".into(),
            message: format!("Field(s) \"{}\" are not valid", unknown.join(", ")),
        });
    }
    Ok(fields)
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
    only_known(&params, NODE_LIST_ARGS)?;
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
    let limit = limit_arg(params.get("limit"))?;
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
    let filter = NodeFilter::parse(&params)?;
    let matches = |e: &NodeEntry| filter.matches(fleet, e);

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
            None => write_row(&mut out, fleet, entry, &base),
        }
        taken += 1;
        last = Some(entry);
    }
    out.push(']');
    if let (true, Some(last)) = (more, last) {
        write_next(&mut out, &base, "nodes", &params, limit, &last.uuid);
    }
    out.push('}');
    let page = Bytes::from(out);
    if let Some(key) = key {
        state.pages.put(&index, key, page.clone());
    }
    Ok(json_bytes(page))
}

/// The arguments `GET /v1/nodes` takes (Ironic 39's).
const NODE_LIST_ARGS: &[&str] = &[
    "associated",
    "chassis_uuid",
    "conductor",
    "conductor_group",
    "description_contains",
    "detail",
    "driver",
    "fault",
    "fields",
    "include_children",
    "instance_uuid",
    "lessee",
    "limit",
    "maintenance",
    "marker",
    "owner",
    "parent_node",
    "project",
    "provision_state",
    "resource_class",
    "retired",
    "shard",
    "sharded",
    "sort_dir",
    "sort_key",
];

/// The faults Ironic records and filters by.
const FAULTS: [&str; 4] = [
    "power failure",
    "clean failure",
    "rescue abort failure",
    "service failure",
];

/// Every provision state Ironic knows, so a filter by one rivet never
/// enters answers an empty list, not an error.
const IRONIC_PROVISION_STATES: &[&str] = &[
    "active",
    "adopt failed",
    "adopting",
    "available",
    "clean failed",
    "clean hold",
    "clean wait",
    "cleaning",
    "deleted",
    "deleting",
    "deploy failed",
    "deploy hold",
    "deploying",
    "enroll",
    "error",
    "inspect failed",
    "inspect wait",
    "inspecting",
    "manageable",
    "rebuild",
    "rescue",
    "rescue failed",
    "rescue wait",
    "rescuing",
    "service failed",
    "service hold",
    "service wait",
    "servicing",
    "unrescue failed",
    "unrescuing",
    "verifying",
    "wait call-back",
];

/// The filters of one `GET /v1/nodes`, checked as Ironic checks them.
#[derive(Default)]
struct NodeFilter<'a> {
    /// rivet has no chassis: a chassis filter matches no node.
    chassis: bool,
    instance_uuid: Option<String>,
    associated: Option<bool>,
    maintenance: Option<bool>,
    retired: Option<bool>,
    provision_state: Option<&'a str>,
    driver: Option<&'a str>,
    resource_class: Option<&'a str>,
    fault: Option<&'a str>,
    conductor_group: Option<String>,
    conductor: Option<&'a str>,
    owner: Option<&'a str>,
    lessee: Option<&'a str>,
    /// Owner or lessee.
    project: Option<&'a str>,
    description_contains: Option<&'a str>,
    shards: Option<Vec<&'a str>>,
    sharded: Option<bool>,
    /// rivet's nodes have no parent: a parent filter matches no node.
    parent_node: bool,
}

impl<'a> NodeFilter<'a> {
    fn parse(params: &'a BTreeMap<String, String>) -> ApiResult<Self> {
        let text = |k: &str| params.get(k).map(String::as_str);
        if let Some(state) = text("provision_state")
            && !IRONIC_PROVISION_STATES.contains(&state)
        {
            return Err(ApiError::BadQuery(format!(
                "Provision state \"{state}\" is not valid"
            )));
        }
        if let Some(fault) = text("fault")
            && !FAULTS.contains(&fault)
        {
            return Err(ApiError::BadQuery(format!(
                "Unrecognized fault \"{fault}\" is specified, allowed faults are ('{}')",
                FAULTS.join("', '")
            )));
        }
        flag(params.get("include_children"), "include_children")?;
        Ok(Self {
            chassis: uuid_arg(params.get("chassis_uuid"), "chassis_uuid")?.is_some(),
            instance_uuid: uuid_arg(params.get("instance_uuid"), "instance_uuid")?,
            associated: flag(params.get("associated"), "associated")?,
            maintenance: flag(params.get("maintenance"), "maintenance")?,
            retired: flag(params.get("retired"), "retired")?,
            provision_state: text("provision_state"),
            driver: text("driver"),
            resource_class: text("resource_class"),
            fault: text("fault"),
            conductor_group: text("conductor_group").map(str::to_ascii_lowercase),
            conductor: text("conductor"),
            owner: text("owner"),
            lessee: text("lessee"),
            project: text("project"),
            description_contains: text("description_contains"),
            shards: text("shard").map(|s| s.split(',').map(str::trim).collect()),
            sharded: flag(params.get("sharded"), "sharded")?,
            parent_node: params.contains_key("parent_node"),
        })
    }

    fn matches(&self, fleet: &Fleet, e: &NodeEntry) -> bool {
        let t = e.tenancy(fleet);
        let field = |f: fn(&Tenancy) -> Option<&str>| t.and_then(f);
        let equal = |want: Option<&str>, f: fn(&Tenancy) -> Option<&str>| {
            want.is_none_or(|w| field(f) == Some(w))
        };
        let instance = field(|t| t.instance_uuid.as_deref());
        let shard = field(|t| t.shard.as_deref());
        !self.chassis
            && !self.parent_node
            && self
                .instance_uuid
                .as_deref()
                .is_none_or(|u| instance == Some(u))
            && self.associated.is_none_or(|a| instance.is_some() == a)
            && self.maintenance.is_none_or(|m| e.maintenance() == m)
            && self
                .retired
                .is_none_or(|r| t.is_some_and(|t| t.retired) == r)
            && self
                .provision_state
                .is_none_or(|p| e.provision_state().as_str() == p)
            && self.driver.is_none_or(|d| e.driver(fleet) == d)
            && equal(self.resource_class, |t| t.resource_class.as_deref())
            && self.fault.is_none_or(|f| {
                e.record
                    .as_ref()
                    .is_some_and(|r| r.fault.as_deref() == Some(f))
            })
            && self
                .conductor_group
                .as_deref()
                .is_none_or(|g| field(|t| Some(t.conductor_group.as_str())).unwrap_or("") == g)
            && self.conductor.is_none_or(|c| e.conductor(fleet) == Some(c))
            && equal(self.owner, |t| t.owner.as_deref())
            && equal(self.lessee, |t| t.lessee.as_deref())
            && self.project.is_none_or(|p| {
                field(|t| t.owner.as_deref()) == Some(p)
                    || field(|t| t.lessee.as_deref()) == Some(p)
            })
            && self.description_contains.is_none_or(|d| {
                field(|t| t.description.as_deref()).is_some_and(|text| text.contains(d))
            })
            && self
                .shards
                .as_ref()
                .is_none_or(|s| shard.is_some_and(|x| s.contains(&x)))
            && self.sharded.is_none_or(|s| shard.is_some() == s)
    }
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

/// Whether `sort_dir` asks for descending order, in Ironic's words when it
/// is neither `asc` nor `desc`.
pub fn sort_descending(dir: Option<&str>) -> ApiResult<bool> {
    match dir {
        None | Some("asc") => Ok(false),
        Some("desc") => Ok(true),
        Some(other) => Err(ApiError::BadQuery(format!(
            "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
        ))),
    }
}

/// The order `sort_key`/`sort_dir` ask for, as positions into the entries
/// (which are by name); None when that is by name, ascending. Ties keep
/// name order.
fn sort_order(
    index: &NodeIndex,
    key: Option<&String>,
    dir: Option<&String>,
) -> ApiResult<Option<Vec<usize>>> {
    let descending = sort_descending(dir.map(String::as_str))?;
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
