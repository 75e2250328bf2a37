//! Vendor passthru over HTTP, node and driver: the handlers read the method
//! name and the JSON body (Ironic checks those first), resolve the node or
//! driver, and hand the call to `conductor::passthru`, which checks it
//! against the declared methods, takes the node lock, calls and records.
//! Its answers become Ironic's status codes here: 200 with the value, 202
//! for an async call, 400/404/409 with Ironic's messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value};

use super::ApiState;
use super::drivers::enabled_type;
use super::error::{ApiError, ApiResult};
use crate::conductor::passthru::{
    Answer, PassthruError, Scope, driver_methods, listing, node_methods,
};
use crate::model::fleet::Fleet;
use crate::model::node::Node;

impl From<PassthruError> for ApiError {
    fn from(e: PassthruError) -> Self {
        match e {
            PassthruError::NoHandler(method) => ApiError::NoHandler(method),
            PassthruError::WrongVerb { method, verb } => ApiError::WrongVerb { method, verb },
            PassthruError::MissingArgument { arg, method } => {
                ApiError::MissingArgument { arg, method }
            }
            PassthruError::Locked { node, host } => ApiError::NodeLocked { node, host },
            PassthruError::Driver(e) => ApiError::Driver(e),
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

/// The method name and arguments of a call, in Ironic's order: the method
/// first, then the body.
fn method_and_arguments(
    params: &BTreeMap<String, String>,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> ApiResult<(String, Map<String, Value>)> {
    let name = params
        .get("method")
        .filter(|m| !m.is_empty())
        .ok_or(ApiError::MissingMethod)?;
    Ok((name.clone(), arguments(body, limit)?))
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
    Ok(Json(listing(driver_methods(&fleet, hw), Scope::Driver)))
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
    let scope = if path.contains_key("id") {
        Scope::Node
    } else {
        Scope::Driver
    };
    let result = call_conductor(&state, &path, verb.as_str(), &params, body).await;
    let response = match result {
        Ok(Answer::Returned(value)) => Json(value).into_response(),
        Ok(Answer::Accepted) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    };
    state
        .conductor
        .metrics
        .passthru_call(scope, response.status().as_u16());
    response
}

async fn call_conductor(
    state: &ApiState,
    path: &BTreeMap<String, String>,
    verb: &str,
    params: &BTreeMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Answer> {
    let limit = state.options.body_limit;
    let conductor = &state.conductor;
    match (path.get("id"), path.get("name")) {
        (Some(id), _) => {
            let (fleet, node) = declared_node(state, id)?;
            let (method, args) = method_and_arguments(params, body, limit)?;
            Ok(conductor
                .node_passthru(fleet, node, &method, verb, args)
                .await?)
        }
        (None, Some(name)) => {
            let fleet = conductor.fleet();
            let hw = enabled_type(&fleet, name)?;
            let (method, args) = method_and_arguments(params, body, limit)?;
            Ok(conductor
                .driver_passthru(&fleet, hw, &method, verb, args)
                .await?)
        }
        (None, None) => Err(ApiError::PathNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(method: Option<&str>) -> BTreeMap<String, String> {
        method
            .map(|m| [("method".to_string(), m.to_string())].into())
            .unwrap_or_default()
    }

    fn body(text: &str) -> Result<Bytes, BytesRejection> {
        Ok(Bytes::from(text.to_string()))
    }

    #[test]
    fn the_method_is_checked_before_the_body() {
        let err = |m: Option<&str>, b: &str| method_and_arguments(&params(m), body(b), 1024).err();
        assert_eq!(err(None, "{bar"), Some(ApiError::MissingMethod));
        assert!(matches!(
            err(Some("second_method"), "{bar"),
            Some(ApiError::BadBody(_))
        ));
        assert!(matches!(
            err(Some("second_method"), "[1]"),
            Some(ApiError::BadBody(_))
        ));
        let (name, args) =
            method_and_arguments(&params(Some("m")), body(r#"{"bar": "meow"}"#), 1024).unwrap();
        assert_eq!(name, "m");
        assert_eq!(args["bar"], "meow");
        assert!(
            method_and_arguments(&params(Some("m")), body(""), 1024)
                .unwrap()
                .1
                .is_empty()
        );
    }
}
