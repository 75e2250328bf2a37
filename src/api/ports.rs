//! `GET /v1/ports[/detail]`, `/v1/ports/{uuid}`, `/v1/nodes/{id}/ports[/detail]`:
//! Ironic's ports resource over the ports the node index holds (declared,
//! and those only inspection found). Every filter starts from one of the
//! index's lookups (by MAC, by node, by physical network, by shard, by
//! `pxe_enabled`), so a filtered list never scans the fleet's ports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::index::{NodeIndex, PortEntry, open_object};
use super::nodes::{
    fields_arg, flag, json_text, limit_arg, only_known, sort_descending, truthy, uuid_arg,
    write_links, write_next,
};
use super::version::{BaseUrl, links};

/// The arguments a port list takes (Ironic 39's, and `pxe_enabled`).
const PORT_LIST_ARGS: &[&str] = &[
    "address",
    "detail",
    "fields",
    "limit",
    "marker",
    "node",
    "node_uuid",
    "physical_network",
    "portgroup",
    "project",
    "pxe_enabled",
    "shard",
    "sort_dir",
    "sort_key",
];

/// The fields ports can be sorted by; `id` (Ironic's default) is the
/// index's order: by node name, declared ports before inspected ones.
const PORT_SORT_KEYS: [&str; 6] = [
    "id",
    "uuid",
    "address",
    "node_uuid",
    "physical_network",
    "pxe_enabled",
];

/// The full port document, in Ironic's field names.
fn document(index: &NodeIndex, port: &PortEntry, base: &str) -> Map<String, Value> {
    let node = &index.entries[port.node];
    let mut doc = Map::new();
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_string(), v);
    };
    put("uuid", json!(port.uuid));
    put("address", json!(port.address));
    put("node_uuid", json!(node.uuid));
    put("pxe_enabled", json!(port.pxe_enabled));
    put("physical_network", json!(port.physical_network));
    put(
        "local_link_connection",
        serde_json::to_value(&port.local_link_connection)
            .map(|v| match v {
                // Only the keys declared, as Ironic keeps them.
                Value::Object(m) => {
                    Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
                }
                other => other,
            })
            .unwrap_or_else(|_| json!({})),
    );
    put("extra", json!({ "source": port.source.as_str() }));
    put("internal_info", json!({}));
    put("is_smartnic", json!(false));
    put("available_for_dynamic_portgroup", json!(true));
    put("portgroup_uuid", Value::Null);
    for key in [
        "created_at",
        "updated_at",
        "name",
        "description",
        "vendor",
        "category",
    ] {
        put(key, Value::Null);
    }
    put("links", links(base, &format!("ports/{}", port.uuid)));
    doc
}

/// The full port document as text, rendered once per index version.
fn write_detail(out: &mut String, index: &NodeIndex, port: &PortEntry, base: &str) {
    out.push_str(port.detail.get_or_init(|| {
        let mut doc = document(index, port, base);
        doc.remove("links");
        open_object(&Value::Object(doc))
    }));
    out.push_str(",\"links\":");
    write_links(out, base, &format!("ports/{}", port.uuid));
    out.push('}');
}

/// The short list row: `uuid`, `address`, `links`.
fn write_row(out: &mut String, port: &PortEntry, base: &str) {
    let _ = write!(
        out,
        "{{\"uuid\":{},\"address\":{},\"links\":",
        json!(port.uuid),
        json!(port.address)
    );
    write_links(out, base, &format!("ports/{}", port.uuid));
    out.push('}');
}

/// What one port list asks for.
struct PortQuery<'a> {
    detail: bool,
    fields: Option<Vec<String>>,
    limit: usize,
    marker: Option<usize>,
    sort_key: &'a str,
    descending: bool,
    address: Option<&'a str>,
    node: Option<usize>,
    physical_network: Option<&'a str>,
    shards: Option<Vec<&'a str>>,
    pxe_enabled: Option<bool>,
    project: Option<&'a str>,
}

impl<'a> PortQuery<'a> {
    fn parse(
        index: &NodeIndex,
        params: &'a BTreeMap<String, String>,
        node: Option<usize>,
    ) -> ApiResult<Self> {
        only_known(params, PORT_LIST_ARGS)?;
        let text = |k: &str| params.get(k).map(String::as_str);
        if let Some(group) = text("portgroup") {
            // rivet has no port groups.
            return Err(ApiError::PortgroupNotFound(group.to_string()));
        }
        let detail = truthy(params.get("detail"), "detail")?;
        let fields = parse_fields(text("fields"))?;
        if detail && fields.is_some() {
            return Err(ApiError::BadParameter {
                param: "fields".into(),
                message: "Can not specify ?detail=True and fields in the same request.".into(),
            });
        }
        let mut node = node;
        if let Some(id) = text("node") {
            node = Some(
                index
                    .position(id)
                    .ok_or_else(|| ApiError::NodeNotFound(id.to_string()))?,
            );
        }
        if let Some(uuid) = uuid_arg(params.get("node_uuid"), "node_uuid")? {
            let at = index
                .position(&uuid)
                .ok_or_else(|| ApiError::NodeNotFound(uuid.clone()))?;
            if node.is_some_and(|n| n != at) {
                // Two different nodes: no port is on both.
                node = Some(usize::MAX);
            } else {
                node = Some(at);
            }
        }
        let marker = match uuid_arg(params.get("marker"), "marker")? {
            None => None,
            Some(uuid) => Some(
                index
                    .ports
                    .find(&uuid)
                    .ok_or(ApiError::PortNotFound(uuid))?,
            ),
        };
        let sort_key = text("sort_key").unwrap_or("id");
        if !PORT_SORT_KEYS.contains(&sort_key) {
            return Err(ApiError::BadQuery(format!(
                "The sort_key value \"{sort_key}\" is an invalid field for sorting"
            )));
        }
        let descending = sort_descending(text("sort_dir"))?;
        Ok(Self {
            detail,
            fields,
            limit: limit_arg(params.get("limit"))?,
            marker,
            sort_key,
            descending,
            address: text("address"),
            node,
            physical_network: text("physical_network"),
            shards: text("shard").map(|s| s.split(',').map(str::trim).collect()),
            pxe_enabled: flag(params.get("pxe_enabled"), "pxe_enabled")?,
            project: text("project"),
        })
    }

    /// The ports that can match, from the narrowest lookup asked for.
    fn candidates(&self, index: &NodeIndex) -> Vec<usize> {
        let ports = &index.ports;
        if let Some(mac) = self.address {
            return ports.by_address(mac).into_iter().collect();
        }
        if let Some(node) = self.node {
            return ports.of_node(node).collect();
        }
        if let Some(net) = self.physical_network {
            return ports.on_physical_network(net).to_vec();
        }
        if let Some(shards) = &self.shards {
            let mut all: Vec<usize> = shards
                .iter()
                .flat_map(|s| ports.in_shard(s).iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            return all;
        }
        if let Some(pxe) = self.pxe_enabled {
            return ports.with_pxe(pxe).to_vec();
        }
        (0..ports.ports.len()).collect()
    }

    fn matches(&self, index: &NodeIndex, at: usize) -> bool {
        let port = &index.ports.ports[at];
        let fleet = &index.fleet;
        let tenancy = index.entries[port.node].tenancy(fleet);
        self.address
            .is_none_or(|a| port.address.eq_ignore_ascii_case(a))
            && self.node.is_none_or(|n| port.node == n)
            && self
                .physical_network
                .is_none_or(|n| port.physical_network.as_deref() == Some(n))
            && self.shards.as_ref().is_none_or(|s| {
                tenancy
                    .and_then(|t| t.shard.as_deref())
                    .is_some_and(|x| s.contains(&x))
            })
            && self.pxe_enabled.is_none_or(|p| port.pxe_enabled == p)
            && self.project.is_none_or(|p| {
                tenancy.is_some_and(|t| {
                    t.owner.as_deref() == Some(p) || t.lessee.as_deref() == Some(p)
                })
            })
    }

    /// The sort value of a port; ties keep the index's order.
    fn key(&self, index: &NodeIndex, at: usize) -> (Option<String>, usize) {
        let port = &index.ports.ports[at];
        let value = match self.sort_key {
            "uuid" => Some(port.uuid.clone()),
            "address" => Some(port.address.clone()),
            "node_uuid" => Some(index.entries[port.node].uuid.clone()),
            "physical_network" => port.physical_network.clone(),
            "pxe_enabled" => Some(port.pxe_enabled.to_string()),
            _ => None,
        };
        (value, at)
    }
}

/// Parse `fields=a,b`; every name must be a port field.
fn parse_fields(text: Option<&str>) -> ApiResult<Option<Vec<String>>> {
    let Some(text) = text else { return Ok(None) };
    let known = [
        "uuid",
        "address",
        "node_uuid",
        "pxe_enabled",
        "physical_network",
        "local_link_connection",
        "extra",
        "internal_info",
        "is_smartnic",
        "available_for_dynamic_portgroup",
        "portgroup_uuid",
        "created_at",
        "updated_at",
        "name",
        "description",
        "vendor",
        "category",
        "links",
    ];
    fields_arg(text, |f| known.contains(&f)).map(Some)
}

/// Only the asked-for fields of a port document, and its links.
fn pick(mut doc: Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    let links = doc.remove("links").unwrap_or(Value::Null);
    let mut picked: Map<String, Value> = fields
        .iter()
        .filter_map(|f| doc.remove(f).map(|v| (f.clone(), v)))
        .collect();
    picked.insert("links".into(), links);
    picked
}

/// One page of ports; `path` is the list's own path, for `next`.
fn page(
    index: &NodeIndex,
    params: &BTreeMap<String, String>,
    node: Option<usize>,
    base: &str,
    path: &str,
) -> ApiResult<String> {
    let query = PortQuery::parse(index, params, node)?;
    let mut chosen: Vec<usize> = query
        .candidates(index)
        .into_iter()
        .filter(|&at| query.matches(index, at))
        .collect();
    if query.sort_key != "id" {
        chosen.sort_by_cached_key(|&at| query.key(index, at));
    }
    if query.descending {
        chosen.reverse();
    }
    let start = match query.marker {
        None => 0,
        Some(marker) => {
            let after = query.key(index, marker);
            if query.descending {
                chosen.partition_point(|&at| query.key(index, at) >= after)
            } else {
                chosen.partition_point(|&at| query.key(index, at) <= after)
            }
        }
    };
    let rest = &chosen[start.min(chosen.len())..];
    let taken = &rest[..rest.len().min(query.limit)];
    let mut out = String::with_capacity(64 + taken.len() * 200);
    out.push_str("{\"ports\":[");
    for (i, &at) in taken.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let port = &index.ports.ports[at];
        match &query.fields {
            Some(fields) => {
                let picked = pick(document(index, port, base), fields);
                out.push_str(&Value::Object(picked).to_string());
            }
            None if query.detail => write_detail(&mut out, index, port, base),
            None => write_row(&mut out, port, base),
        }
    }
    out.push(']');
    if let (true, Some(&last)) = (rest.len() > taken.len(), taken.last()) {
        write_next(
            &mut out,
            base,
            path,
            params,
            query.limit,
            &index.ports.ports[last].uuid,
        );
    }
    out.push('}');
    Ok(out)
}

/// `GET /v1/ports`
pub async fn list(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let index = state.index();
    Ok(json_text(page(&index, &params, None, &base, "ports")?))
}

/// `GET /v1/ports/detail`
pub async fn detail(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Query(mut params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    params.insert("detail".into(), "true".into());
    let index = state.index();
    Ok(json_text(page(
        &index,
        &params,
        None,
        &base,
        "ports/detail",
    )?))
}

/// `GET /v1/ports/{uuid}`
pub async fn show(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(uuid): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    only_known(&params, &["fields"])?;
    let index = state.index();
    let at = index
        .ports
        .find(&uuid.to_ascii_lowercase())
        .ok_or(ApiError::PortNotFound(uuid))?;
    let port = &index.ports.ports[at];
    if let Some(fields) = parse_fields(params.get("fields").map(String::as_str))? {
        let picked = pick(document(&index, port, &base), &fields);
        return Ok(json_text(Value::Object(picked).to_string()));
    }
    let mut out = String::with_capacity(1024);
    write_detail(&mut out, &index, port, &base);
    Ok(json_text(out))
}

/// `GET /v1/nodes/{id}/ports`
pub async fn of_node(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    node_page(&state, &base, &id, params, false)
}

/// `GET /v1/nodes/{id}/ports/detail`
pub async fn of_node_detail(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    node_page(&state, &base, &id, params, true)
}

fn node_page(
    state: &ApiState,
    base: &str,
    id: &str,
    mut params: BTreeMap<String, String>,
    detail: bool,
) -> ApiResult<Response> {
    let index = state.index();
    let node = index
        .position(id)
        .ok_or_else(|| ApiError::NodeNotFound(id.to_string()))?;
    // The node is the path's; Ironic refuses to be told it twice.
    for arg in ["node", "node_uuid"] {
        if params.contains_key(arg) {
            return Err(ApiError::BadQuery(format!("Unexpected arguments: {arg}")));
        }
    }
    let mut path = format!("nodes/{}/ports", index.entries[node].uuid);
    if detail {
        params.insert("detail".into(), "true".into());
        path.push_str("/detail");
    }
    Ok(json_text(page(&index, &params, Some(node), base, &path)?))
}
