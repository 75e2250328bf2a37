//! The agent channel: Ironic's `GET /v1/lookup` and `POST
//! /v1/heartbeat/{node}`, which the ironic-python-agent in a deploy ramdisk
//! calls. They are the only requests besides vendor passthru that change
//! anything, and only for a node whose deploy waits for its agent
//! (`reconcile::agent`); every other node is unknown to them (404), as in
//! Ironic. They need no API token: an agent has none, it proves itself
//! with the agent token its lookup handed out (docs/API.md).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use crate::reconcile::agent::{Agents, Heartbeat, Refusal};

/// The agent's routes, for any router whose state holds the channel.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Agents>: FromRef<S>,
{
    Router::new()
        .route("/v1/lookup", get(lookup))
        .route("/v1/heartbeat/{node}", post(heartbeat))
}

/// The agent channel alone, with the version document the agent reads
/// first: what `rivet reconcile` serves while a deploy waits for agents,
/// within the API's default body limit and request timeout.
pub fn router(agents: Arc<Agents>) -> Router {
    Router::new()
        .route("/", get(super::version::root))
        .merge(routes::<Arc<Agents>>())
        .fallback(|| async { ApiError::PathNotFound })
        .with_state(agents)
        .layer(axum::extract::DefaultBodyLimit::max(
            super::ApiOptions::default().body_limit,
        ))
        .layer(axum::middleware::from_fn(super::version::headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            super::ApiOptions::default().request_timeout,
        ))
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unknown(message) => ApiError::AgentNotFound(message),
        Refusal::Invalid(message) => ApiError::BadBody(message),
        Refusal::Store(message) => ApiError::Internal(message),
    }
}

/// The MAC addresses of `addresses` (comma separated, the parameter may
/// repeat), lower case; what is not a MAC is left out, as Ironic does.
fn addresses(query: &str) -> (Vec<String>, Option<String>) {
    let mut macs = Vec::new();
    let mut uuid = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "addresses" => macs.extend(
                value
                    .split(',')
                    .filter_map(|m| crate::model::node::normalize_mac(m.trim())),
            ),
            "node_uuid" if !value.is_empty() => uuid = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    (macs, uuid)
}

/// `GET /v1/lookup?addresses=MAC[,MAC…][&node_uuid=UUID]`
pub async fn lookup(
    State(agents): State<Arc<Agents>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (macs, uuid) = addresses(query.as_deref().unwrap_or(""));
    if macs.is_empty() && uuid.is_none() {
        return Err(ApiError::BadBody(
            "Incomplete lookup request: valid MAC addresses or a node UUID are required".into(),
        ));
    }
    let found = agents
        .lookup(&macs, uuid.as_deref())
        .await
        .map_err(refused)?;
    let token = found
        .token
        .as_ref()
        .map_or("******", |token| token.expose());
    Ok(Json(json!({
        "node": {
            "uuid": found.uuid,
            "properties": found.properties,
            "instance_info": found.instance_info,
            "driver_internal_info": {},
        },
        // The keys Ironic's lookup sends that the agent reads, with
        // Ironic's values but the heartbeat timeout.
        "config": {
            "metrics": {
                "backend": "noop", "prepend_host": false, "prepend_uuid": false,
                "prepend_host_reverse": true, "global_prefix": null,
            },
            "metrics_statsd": { "statsd_host": "localhost", "statsd_port": 8125 },
            "heartbeat_timeout": found.heartbeat_timeout.as_secs().max(1),
            "agent_token": token,
            "agent_token_required": true,
            "agent_md5_checksum_enable": false,
            "disable_deep_image_inspection": false,
            "permitted_image_formats": ["raw", "qcow2", "iso"],
        },
    })))
}

/// `POST /v1/heartbeat/{node}`: exactly 202 when accepted (the agent
/// treats any other status as a failed heartbeat).
pub async fn heartbeat(
    State(agents): State<Arc<Agents>>,
    Path(node): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadBody(format!("the heartbeat is not JSON: {e}")))?;
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    let beat = Heartbeat {
        callback_url: text("callback_url"),
        token: text("agent_token"),
        agent_version: text("agent_version").map(|v| crate::driver::scrub::cut(&v, 64).to_string()),
    };
    agents
        .heartbeat(&node.to_ascii_lowercase(), beat)
        .await
        .map_err(refused)?;
    Ok(StatusCode::ACCEPTED)
}
