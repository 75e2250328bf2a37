//! The read-only resources beside nodes, in Ironic's shapes: a node's
//! validation, traits, boot device (and the ones it supports), BIOS
//! settings and console; the conductor; the deploy templates. Everything is
//! read from the declarations in force and the store's records: no request
//! reaches a BMC.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::response::Json;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::index::NodeEntry;
use super::nodes::truthy;
use super::time;
use super::version::{BaseUrl, links};
use crate::conductor::drivers as conductor_drivers;
use crate::model::catalog::{Capabilities, Support};
use crate::model::fleet::Fleet;
use crate::model::fleet::steps::DeployTemplate;
use crate::model::node::Node;
use crate::store::records::NodeRecord;
use crate::vocab::{BootDevice, InterfaceType};

fn with_node<T>(
    state: &ApiState,
    id: &str,
    f: impl FnOnce(&Fleet, &NodeEntry) -> ApiResult<T>,
) -> ApiResult<T> {
    let index = state.index();
    let entry = index
        .find(id)
        .ok_or_else(|| ApiError::NodeNotFound(id.to_string()))?;
    f(&index.fleet, entry)
}

/// The interfaces `validate` answers for: every type but vendor, in
/// Ironic's order.
const VALIDATED: [InterfaceType; 12] = [
    InterfaceType::Boot,
    InterfaceType::Deploy,
    InterfaceType::Management,
    InterfaceType::Network,
    InterfaceType::Power,
    InterfaceType::Bios,
    InterfaceType::Console,
    InterfaceType::Firmware,
    InterfaceType::Inspect,
    InterfaceType::Raid,
    InterfaceType::Rescue,
    InterfaceType::Storage,
];

/// Why one interface of a node cannot do its work now; `None` when it can.
fn invalid_reason(
    fleet: &Fleet,
    node: &Node,
    record: Option<&NodeRecord>,
    kind: InterfaceType,
) -> Option<String> {
    let name = node.interfaces.get(kind).as_str();
    let kind_name = kind.as_str();
    // Ironic's `no-*` implementations refuse every call.
    if name.starts_with("no-") {
        return Some(format!(
            "Driver {} does not support {kind_name} (disabled or not implemented).",
            node.driver
        ));
    }
    let Some(imp) = fleet.interface_of(node, kind) else {
        return Some(format!(
            "rivet does not know the {kind_name} interface {name}."
        ));
    };
    if let Support::Unsupported(why) = &imp.support {
        return Some(format!(
            "rivet cannot drive the {kind_name} interface {name}: {why}."
        ));
    }
    match kind {
        InterfaceType::Power | InterfaceType::Management => {
            let failures = record.map_or(0, |r| r.power_failures);
            (failures > 0).then(|| {
                format!(
                    "The BMC did not answer the last {failures} power read(s){}.",
                    record
                        .and_then(|r| r.last_error.as_deref().or(r.fault.as_deref()))
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            })
        }
        InterfaceType::Deploy if imp.capabilities.contains(Capabilities::BOOTS_TO_DEPLOY) => {
            let image = node.instance.as_ref().and_then(|i| i.image.as_ref());
            image.is_none().then(|| {
                "No image to deploy: declare `instance = { image = \"…\" }` in the node's file."
                    .to_string()
            })
        }
        _ => None,
    }
}

/// `GET /v1/nodes/{id}/validate`
pub async fn validate(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |fleet, entry| {
        let record = entry.record.as_deref();
        let mut doc = Map::new();
        for kind in VALIDATED {
            let reason = match entry.declaration(fleet) {
                Some(node) => invalid_reason(fleet, node, record, kind),
                None => Some("The node is no longer declared: rivet leaves it alone.".into()),
            };
            let result = match reason {
                None => json!({ "result": true }),
                Some(reason) => json!({ "result": false, "reason": reason }),
            };
            doc.insert(kind.as_str().to_string(), result);
        }
        Ok(Json(Value::Object(doc)))
    })
}

/// `GET /v1/nodes/{id}/traits`
pub async fn traits(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |fleet, entry| {
        let traits = entry.declaration(fleet).map_or(&[][..], |n| &n.traits[..]);
        Ok(Json(json!({ "traits": traits })))
    })
}

/// `GET /v1/nodes/{id}/management/boot_device`: the device rivet last set
/// (it always sets it persistently), or nulls when it never did.
pub async fn boot_device(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |_, entry| {
        let device = entry.record.as_ref().and_then(|r| r.boot_device);
        Ok(Json(json!({
            "boot_device": device,
            "persistent": device.map(|_| true),
        })))
    })
}

/// Every device rivet sets through a management interface it drives.
const BOOT_DEVICES: [BootDevice; 4] = [
    BootDevice::Pxe,
    BootDevice::Disk,
    BootDevice::Cdrom,
    BootDevice::Bios,
];

/// `GET /v1/nodes/{id}/management/boot_device/supported`
pub async fn supported_boot_devices(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |fleet, entry| {
        let drives = entry.declaration(fleet).is_some_and(|node| {
            let management = fleet.interface_of(node, InterfaceType::Management);
            management.is_some_and(|m| {
                matches!(m.support, Support::Builtin)
                    && !m.capabilities.contains(Capabilities::NO_OP)
            })
        });
        let devices: &[BootDevice] = if drives { &BOOT_DEVICES } else { &[] };
        Ok(Json(json!({ "supported_boot_devices": devices })))
    })
}

fn bios_setting(base: &str, node_uuid: &str, name: &str, value: &Value) -> Value {
    json!({
        "name": name,
        "value": value,
        "links": links(base, &format!("nodes/{node_uuid}/bios/{name}")),
    })
}

/// `GET /v1/nodes/{id}/bios`: the settings rivet last applied through the
/// node's bios interface; none when it applied none.
pub async fn bios(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |_, entry| {
        let settings: Vec<Value> = entry
            .record
            .iter()
            .flat_map(|r| r.bios.iter())
            .map(|(name, value)| bios_setting(&base, &entry.uuid, name, value))
            .collect();
        Ok(Json(json!({ "bios": settings })))
    })
}

/// `GET /v1/nodes/{id}/bios/{setting}`: `{"Name": {…}}`, as Ironic nests it.
pub async fn bios_one(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path((id, setting)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |_, entry| {
        let value = entry
            .record
            .as_ref()
            .and_then(|r| r.bios.get(&setting))
            .ok_or_else(|| ApiError::BiosSettingNotFound {
                node: id.clone(),
                name: setting.clone(),
            })?;
        let mut doc = Map::new();
        doc.insert(
            setting.clone(),
            bios_setting(&base, &entry.uuid, &setting, value),
        );
        Ok(Json(Value::Object(doc)))
    })
}

/// `GET /v1/nodes/{id}/states/console`: rivet has no console.
pub async fn console(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_node(&state, &id, |_, _| {
        Ok(Json(
            json!({ "console_enabled": false, "console_info": null }),
        ))
    })
}

/// A conductor as Ironic shows it: this daemon, or in a cluster a live
/// member (its own drivers and start time are known for this daemon only).
fn conductor_doc(state: &ApiState, base: &str, detail: bool, member: &Conductorship) -> Value {
    let fleet = state.conductor.fleet();
    let host = &member.host;
    let mut doc = json!({
        "hostname": host,
        "conductor_group": member.group,
        "links": links(base, &format!("conductors/{host}")),
        "alive": true,
    });
    if detail && let Value::Object(map) = &mut doc {
        let now = SystemTime::now();
        let started = now
            .checked_sub(state.conductor.started.elapsed())
            .unwrap_or(now);
        let drivers: Vec<&str> = conductor_drivers::enabled(&fleet)
            .map(|t| t.name.as_str())
            .collect();
        map.insert(
            "created_at".into(),
            if member.me {
                json!(time::at_time(started))
            } else {
                Value::Null
            },
        );
        // This answer is the conductor's heartbeat: it is alive now (a
        // member's key lives only as long as its lease).
        map.insert("updated_at".into(), json!(time::at_time(now)));
        // Every member serves the same declarations, so the same drivers.
        map.insert("drivers".into(), json!(drivers));
    }
    doc
}

/// One conductor of the list.
struct Conductorship {
    host: String,
    group: String,
    me: bool,
}

/// The live conductors: every member in a cluster, else this daemon.
fn live_conductors(state: &ApiState) -> Vec<Conductorship> {
    let fleet = state.conductor.fleet();
    match &state.conductor.cluster {
        Some(cluster) => cluster
            .members()
            .into_iter()
            .map(|m| Conductorship {
                me: m.host == cluster.host,
                host: m.host,
                group: m.conductor_group,
            })
            .collect(),
        None => vec![Conductorship {
            host: fleet.conductor.host.clone(),
            group: String::new(),
            me: true,
        }],
    }
}

/// `GET /v1/conductors[?detail=true]`: the live conductors.
pub async fn conductors(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let detail = truthy(params.get("detail"), "detail")?;
    let all: Vec<Value> = live_conductors(&state)
        .iter()
        .map(|m| conductor_doc(&state, &base, detail, m))
        .collect();
    Ok(Json(json!({ "conductors": all })))
}

/// `GET /v1/conductors/{hostname}`
pub async fn conductor(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(hostname): Path<String>,
) -> ApiResult<Json<Value>> {
    let all = live_conductors(&state);
    let Some(member) = all.iter().find(|m| m.host == hostname) else {
        return Err(ApiError::ConductorNotFound(hostname));
    };
    Ok(Json(conductor_doc(&state, &base, true, member)))
}

/// A deploy template's UUID: stable, derived from its name.
fn template_uuid(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("deploy_template/{name}").as_bytes(),
    )
    .to_string()
}

fn template_doc(base: &str, template: &DeployTemplate, detail: bool) -> Value {
    let uuid = template_uuid(&template.name);
    let mut doc = json!({
        "uuid": uuid,
        "name": template.name,
        "links": links(base, &format!("deploy_templates/{uuid}")),
    });
    if detail && let Value::Object(map) = &mut doc {
        let steps: Vec<Value> = template
            .steps
            .iter()
            .map(|s| {
                json!({
                    "interface": s.interface.as_str(),
                    "step": s.step,
                    "args": s.args,
                    "priority": s.priority,
                })
            })
            .collect();
        // The declarations do not say when a template was written.
        map.insert("created_at".into(), Value::Null);
        map.insert("updated_at".into(), Value::Null);
        map.insert("extra".into(), json!({}));
        map.insert("steps".into(), json!(steps));
    }
    doc
}

/// `GET /v1/deploy_templates[?detail=true]`: the templates in force.
pub async fn deploy_templates(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let detail = truthy(params.get("detail"), "detail")?;
    let fleet = state.conductor.fleet();
    let templates: Vec<Value> = fleet
        .templates
        .iter()
        .map(|t| template_doc(&base, t, detail))
        .collect();
    Ok(Json(json!({ "deploy_templates": templates })))
}

/// `GET /v1/deploy_templates/{name_or_uuid}`
pub async fn deploy_template(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleet = state.conductor.fleet();
    fleet
        .templates
        .iter()
        .find(|t| t.name == id || template_uuid(&t.name) == id)
        .map(|t| Json(template_doc(&base, t, true)))
        .ok_or(ApiError::DeployTemplateNotFound(id))
}
