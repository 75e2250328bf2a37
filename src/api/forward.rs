//! Any daemon of a cluster answers for every node: lists and node show come
//! from its copy of the peers' records; a node's history, states and vendor
//! passthru come from its owner, to which the request is forwarded as it
//! came (method, path, query, headers with the token, body) and whose
//! answer is returned as it went. A reverse proxy rather than a redirect:
//! python-requests drops `Authorization` on a redirect to another host,
//! so the `baremetal` client would lose its token.
//!
//! A forwarded request carries `X-Rivet-Forwarded-By` and is never
//! forwarded again, so two daemons that disagree for a moment about an
//! owner cannot bounce a request between them.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;

/// Set on a request one daemon forwards to another: the sender's host.
pub const FORWARDED_BY: &str = "x-rivet-forwarded-by";
/// The most of an owner's answer relayed.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What of a node a path asks for, when the owner must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerPart {
    States,
    History,
    Passthru,
    /// The agent channel: its lookups and heartbeats go to the conductor
    /// whose deploy opened it, the node's owner.
    Agent,
}

/// `/v1/nodes/{id}/states…`, `/history…`, `/vendor_passthru…` → (id, part).
fn owner_part(path: &str) -> Option<(&str, OwnerPart)> {
    let rest = path.strip_prefix("/v1/nodes/")?;
    let (id, rest) = rest.split_once('/')?;
    let section = rest.split('/').next().unwrap_or("");
    let part = match section {
        "states" => OwnerPart::States,
        "history" => OwnerPart::History,
        // The methods list is the declarations', the same everywhere.
        "vendor_passthru" if rest != "vendor_passthru/methods" => OwnerPart::Passthru,
        _ => return None,
    };
    Some((id, part))
}

/// The node an agent's lookup (by `node_uuid`, else the first MAC of
/// `addresses` that a port has) or heartbeat names, by name or UUID.
fn agent_node(index: &super::index::NodeIndex, path: &str, query: Option<&str>) -> Option<String> {
    if let Some(id) = path.strip_prefix("/v1/heartbeat/") {
        return Some(id.to_ascii_lowercase());
    }
    if path != "/v1/lookup" {
        return None;
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query?.as_bytes())
        .into_owned()
        .collect();
    if let Some((_, uuid)) = pairs
        .iter()
        .find(|(k, v)| k == "node_uuid" && !v.is_empty())
    {
        return Some(uuid.to_ascii_lowercase());
    }
    pairs
        .iter()
        .filter(|(k, _)| k == "addresses")
        .flat_map(|(_, v)| v.split(','))
        .find_map(|mac| index.ports.by_address(mac.trim()))
        .map(|port| index.entries[index.ports.ports[port].node].uuid.clone())
}

/// The middleware: serve here, forward to the owner, or (passthru of a node
/// no live conductor owns) answer 503.
pub async fn to_owner(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.conductor.cluster.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_BY) {
        return next.run(request).await;
    }
    let index = state.index();
    let path = request.uri().path();
    let (id, part) = match owner_part(path) {
        Some((id, part)) => (id.to_string(), part),
        None => match agent_node(&index, path, request.uri().query()) {
            Some(id) => (id, OwnerPart::Agent),
            None => return next.run(request).await,
        },
    };
    let (name, uuid) = match index.find(&id) {
        Some(entry) => (entry.name.clone(), entry.uuid.clone()),
        None => return next.run(request).await,
    };
    if cluster.owns(&name) {
        return next.run(request).await;
    }
    match cluster.owner(&uuid) {
        Some(member) if member.host != cluster.host && !member.url.is_empty() => {
            forward(&member.url, &cluster.host, request, state.options.body_limit)
                .await
                .unwrap_or_else(|e| e.into_response())
        }
        _ if part == OwnerPart::Passthru => ApiError::Unavailable(format!(
            "No conductor owns node {name} now, so its vendor passthru cannot run. Its conductor group has no live member, or a takeover is under way; try again in a few seconds."
        ))
        .into_response(),
        // States and history of a node between owners: this daemon's copy.
        _ => next.run(request).await,
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            // The owner's answer is relayed as it is, redirects included.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the forwarding client builds")
    })
}

/// Hop-by-hop headers, which belong to one connection, not the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn forward(
    owner_url: &str,
    me: &str,
    request: Request,
    body_limit: usize,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", owner_url.trim_end_matches('/'));
    let body = axum::body::to_bytes(body, body_limit)
        .await
        .map_err(|_| ApiError::BodyTooLarge(body_limit))?;
    let mut outgoing = client().request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing = outgoing.header(
        FORWARDED_BY,
        HeaderValue::from_str(me).unwrap_or(HeaderValue::from_static("peer")),
    );
    let mut answer = outgoing.send().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "The conductor that owns this node does not answer at {owner_url} ({}); try again in a few seconds.",
            if e.is_timeout() { "timed out" } else { "connection failed" }
        ))
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = answer.headers().clone();
    let too_large = || {
        ApiError::Unavailable("The owner's answer is larger than a conductor relays.".to_string())
    };
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    // Read at most the cap, whatever the answer says of its length.
    let mut bytes = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|_| {
        ApiError::Unavailable("The owner's answer broke off; try again.".to_string())
    })? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_answers_states_history_and_passthru_only() {
        assert_eq!(
            owner_part("/v1/nodes/n1/states"),
            Some(("n1", OwnerPart::States))
        );
        assert_eq!(
            owner_part("/v1/nodes/n1/states/power"),
            Some(("n1", OwnerPart::States))
        );
        assert_eq!(
            owner_part("/v1/nodes/n1/history/abc"),
            Some(("n1", OwnerPart::History))
        );
        assert_eq!(
            owner_part("/v1/nodes/n1/vendor_passthru/x"),
            Some(("n1", OwnerPart::Passthru))
        );
        assert_eq!(owner_part("/v1/nodes/n1/vendor_passthru/methods"), None);
        assert_eq!(owner_part("/v1/nodes/n1"), None);
        assert_eq!(owner_part("/v1/nodes/n1/ports"), None);
        assert_eq!(owner_part("/v1/ports/x"), None);
    }
}
