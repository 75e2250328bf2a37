//! Vendor passthru, node and driver, with Ironic's rules: the method must
//! exist, accept the HTTP verb and get its required arguments; a method that
//! needs the exclusive lock meets a busy node with 409; a sync method
//! answers 200 with its return value, an async one 202 at once while the
//! call goes on in the background (under the node lock) and its result is
//! recorded in the node's history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::drivers::enabled_type;
use super::error::{ApiError, ApiResult};
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::fleet::Fleet;
use crate::model::hardware::HardwareType;
use crate::model::node::Node;
use crate::model::step::PassthruMethod;
use crate::reconcile::now;
use crate::store::Write;
use crate::store::records::{Event, Outcome};
use crate::vocab::InterfaceType;

/// Which passthru a call went through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Node,
    Driver,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Driver => "driver",
        }
    }
}

/// The arguments of a call: the JSON object in the body, `{}` when empty.
fn arguments(body: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<Map<String, Value>> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(limit)
        } else {
            ApiError::BadBody(format!("The request body could not be read: {e}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::BadBody(format!(
            "The request body must be a JSON object of the method's arguments, not {}.",
            kind_of(&other)
        ))),
        Err(e) => Err(ApiError::BadBody(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Check a call against the declared methods, in Ironic's order.
fn check<'a>(
    methods: &'a [PassthruMethod],
    params: &BTreeMap<String, String>,
    verb: &Method,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> ApiResult<(&'a PassthruMethod, Map<String, Value>)> {
    let name = params
        .get("method")
        .filter(|m| !m.is_empty())
        .ok_or(ApiError::MissingMethod)?;
    let args = arguments(body, limit)?;
    let method = methods
        .iter()
        .find(|m| &m.method == name)
        .ok_or_else(|| ApiError::NoHandler(name.clone()))?;
    if !method.http_methods.iter().any(|v| v == verb.as_str()) {
        return Err(ApiError::WrongVerb {
            method: name.clone(),
            verb: verb.to_string(),
        });
    }
    if let Some((arg, _)) = method
        .args
        .iter()
        .find(|(arg, info)| info.required && args.get(*arg).is_none_or(Value::is_null))
    {
        return Err(ApiError::MissingArgument {
            arg: arg.clone(),
            method: name.clone(),
        });
    }
    Ok((method, args))
}

/// Ironic's listing of methods; the node listing adds the lock flag.
fn listing(methods: &[PassthruMethod], scope: Scope) -> Value {
    let map: Map<String, Value> = methods
        .iter()
        .map(|m| {
            let mut doc = json!({
                "http_methods": m.http_methods,
                "async": m.is_async,
                "description": m.description,
                "attach": m.attach,
            });
            if scope == Scope::Node {
                doc["require_exclusive_lock"] = json!(m.require_exclusive_lock);
            }
            (m.method.clone(), doc)
        })
        .collect();
    Value::Object(map)
}

fn node_methods<'a>(fleet: &'a Fleet, node: &Node) -> &'a [PassthruMethod] {
    fleet
        .interface_of(node, InterfaceType::Vendor)
        .map_or(&[], |v| &v.passthru[..])
}

/// The interface a hardware type's driver-level calls go through, when it
/// has driver-level methods: its default vendor interface, if a plugin.
fn driver_vendor<'a>(fleet: &'a Fleet, hw: &HardwareType) -> Option<&'a InterfaceImpl> {
    let name = fleet.type_default(hw, InterfaceType::Vendor)?;
    fleet
        .catalog
        .get(InterfaceType::Vendor, &name)
        .filter(|imp| matches!(imp.support, Support::Exec { .. }))
}

/// The declared node a call is for.
fn declared_node(state: &ApiState, id: &str) -> ApiResult<(Arc<Fleet>, Arc<Node>)> {
    let index = state.index();
    let entry = index
        .find(id)
        .ok_or_else(|| ApiError::NodeNotFound(id.to_string()))?;
    let node = entry.declaration(&index.fleet).cloned().ok_or_else(|| {
        ApiError::Driver(crate::driver::DriverError::invalid(format!(
            "Node {} is no longer declared; rivet leaves it alone and calls nothing on it.",
            entry.name
        )))
    })?;
    Ok((Arc::clone(&index.fleet), node))
}

/// `GET /v1/nodes/{id}/vendor_passthru/methods`
pub async fn node_methods_list(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (fleet, node) = declared_node(&state, &id)?;
    Ok(Json(listing(node_methods(&fleet, &node), Scope::Node)))
}

/// `GET /v1/drivers/{name}/vendor_passthru/methods`
pub async fn driver_methods_list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleet = state.conductor.fleet();
    let hw = enabled_type(&fleet, &name)?;
    let methods = driver_vendor(&fleet, hw).map_or(&[][..], |v| &v.passthru[..]);
    Ok(Json(listing(methods, Scope::Driver)))
}

/// What a finished call returned, as the history records it.
fn result_detail(result: &Result<Value, crate::driver::DriverError>) -> (Outcome, String) {
    match result {
        Ok(v) => (Outcome::Succeeded, v.to_string()),
        Err(e) => (Outcome::Failed, e.message.clone()),
    }
}

/// `{GET,POST,PUT,PATCH,DELETE} /v1/nodes/{id}/vendor_passthru?method=M`
/// and `/v1/drivers/{name}/vendor_passthru?method=M`, also with the method
/// in the path (`…/vendor_passthru/{method}`), as the `baremetal` client
/// calls it; Ironic accepts both forms.
pub async fn call(
    State(state): State<ApiState>,
    Path(path): Path<BTreeMap<String, String>>,
    verb: Method,
    Query(mut params): Query<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(method) = path.get("method") {
        params.insert("method".into(), method.clone());
    }
    let (scope, result) = match (path.get("id"), path.get("name")) {
        (Some(id), _) => (
            Scope::Node,
            node_call(&state, id, &verb, &params, body).await,
        ),
        (None, Some(name)) => (
            Scope::Driver,
            driver_call(&state, name, &verb, &params, body).await,
        ),
        (None, None) => (Scope::Node, Err(ApiError::PathNotFound)),
    };
    state.finish_call(scope, result)
}

async fn node_call(
    state: &ApiState,
    id: &str,
    verb: &Method,
    params: &BTreeMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (fleet, node) = declared_node(state, id)?;
    let (method, args) = check(
        node_methods(&fleet, &node),
        params,
        verb,
        body,
        state.options.body_limit,
    )?;
    let guard = if method.require_exclusive_lock {
        let purpose = format!("vendor passthru {}", method.method);
        match state.locks.try_lock(&node.name, &purpose) {
            Ok(guard) => Some(guard),
            Err(holder) => {
                tracing::info!(node = %node.name, method = %method.method, %holder, "passthru refused: the node is locked");
                return Err(ApiError::NodeLocked {
                    node: node.name.clone(),
                    host: fleet.conductor.host.clone(),
                });
            }
        }
    } else {
        None
    };
    let registry = state.conductor.registry();
    let name = method.method.clone();
    let verb = verb.to_string();
    let args = Value::Object(args);
    if !method.is_async {
        let result = registry.passthru(&fleet, &node, &name, &verb, args).await;
        drop(guard);
        return Ok(Json(result?).into_response());
    }
    let journal = state.journal.clone();
    state.calls.spawn(async move {
        let started = Instant::now();
        let result = registry.passthru(&fleet, &node, &name, &verb, args).await;
        drop(guard);
        let (outcome, detail) = result_detail(&result);
        let event = Event {
            seq: 0,
            node: node.name.clone(),
            run_id: None,
            op_index: None,
            action: format!("vendor_passthru.{name}"),
            outcome,
            protocol: Some(registry.protocol(&node).to_string()),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            detail: Some(detail),
            at: now(),
        };
        if let Err(e) = journal.commit(vec![Write::Event(event)]).await {
            tracing::error!(node = %node.name, method = %name, error = %e, "cannot record the result of an async passthru call");
        }
        tracing::info!(node = %node.name, method = %name, ok = result.is_ok(), "async passthru call finished");
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn driver_call(
    state: &ApiState,
    driver: &str,
    verb: &Method,
    params: &BTreeMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let fleet = state.conductor.fleet();
    let hw = enabled_type(&fleet, driver)?;
    let vendor = driver_vendor(&fleet, hw).cloned();
    let methods = vendor.as_ref().map_or(&[][..], |v| &v.passthru[..]);
    let (method, args) = check(methods, params, verb, body, state.options.body_limit)?;
    // `check` found the method, so there is a vendor interface.
    let Some(vendor) = vendor.clone() else {
        return Err(ApiError::NoHandler(method.method.clone()));
    };
    let registry = state.conductor.registry();
    let name = method.method.clone();
    let verb = verb.to_string();
    let args = Value::Object(args);
    if !method.is_async {
        let result = registry.driver_passthru(&vendor, &name, &verb, args).await;
        return Ok(Json(result?).into_response());
    }
    let driver = hw.name.clone();
    state.calls.spawn(async move {
        let result = registry.driver_passthru(&vendor, &name, &verb, args).await;
        let (_, detail) = result_detail(&result);
        // No node, so no history: the result goes to the log.
        tracing::info!(%driver, method = %name, ok = result.is_ok(), result = %detail, "async driver passthru call finished");
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::builtin_interfaces;

    fn fake_methods() -> Vec<PassthruMethod> {
        builtin_interfaces()
            .into_iter()
            .find(|i| i.kind == InterfaceType::Vendor && i.name == "fake")
            .unwrap()
            .passthru
    }

    fn params(method: Option<&str>) -> BTreeMap<String, String> {
        method
            .map(|m| [("method".to_string(), m.to_string())].into())
            .unwrap_or_default()
    }

    fn body(text: &str) -> Result<Bytes, BytesRejection> {
        Ok(Bytes::from(text.to_string()))
    }

    #[test]
    fn calls_are_checked_in_ironics_order() {
        let methods = fake_methods();
        let post = Method::POST;
        let err = |m: Option<&str>, verb: &Method, b: &str| {
            check(&methods, &params(m), verb, body(b), 1024).err()
        };
        assert_eq!(err(None, &post, "{bar"), Some(ApiError::MissingMethod));
        assert!(matches!(
            err(Some("second_method"), &post, "{bar"),
            Some(ApiError::BadBody(_))
        ));
        assert!(matches!(
            err(Some("second_method"), &post, "[1]"),
            Some(ApiError::BadBody(_))
        ));
        assert_eq!(
            err(Some("nope"), &post, "{}"),
            Some(ApiError::NoHandler("nope".into()))
        );
        assert_eq!(
            err(Some("second_method"), &Method::PUT, "{}"),
            Some(ApiError::WrongVerb {
                method: "second_method".into(),
                verb: "PUT".into()
            })
        );
        assert_eq!(
            err(Some("third_method_sync"), &post, r#"{"bar": null}"#),
            Some(ApiError::MissingArgument {
                arg: "bar".into(),
                method: "third_method_sync".into()
            })
        );
        let (m, args) = check(
            &methods,
            &params(Some("third_method_sync")),
            &post,
            body(r#"{"bar": "meow"}"#),
            1024,
        )
        .unwrap();
        assert_eq!(m.method, "third_method_sync");
        assert_eq!(args["bar"], "meow");
        assert!(
            check(
                &methods,
                &params(Some("log_passthrough")),
                &post,
                body(""),
                1024
            )
            .is_ok()
        );
    }

    #[test]
    fn the_driver_listing_omits_the_lock_flag() {
        let methods = fake_methods();
        let node = listing(&methods, Scope::Node);
        let driver = listing(&methods, Scope::Driver);
        assert_eq!(
            node["fourth_method_shared_lock"]["require_exclusive_lock"],
            false
        );
        assert!(
            driver["fourth_method_shared_lock"]
                .get("require_exclusive_lock")
                .is_none()
        );
        assert_eq!(driver["third_method_sync"]["async"], false);
    }
}
