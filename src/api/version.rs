//! Microversions: every response carries the supported range, and a request
//! may ask for one, as `OpenStack-API-Version: baremetal 1.N` (what
//! openstacksdk, Ansible and metalsmith send) or
//! `X-OpenStack-Ironic-API-Version: 1.N`, either also `latest`. When both
//! are sent the standard header wins, as in Ironic. A node document leaves
//! out the fields the asked version does not have yet; a request that asks
//! for no version gets every field (Ironic would serve 1.1, which lacks
//! nearly all of them and helps nobody).

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;

pub const MIN_VERSION: &str = "1.1";
pub const MAX_VERSION: &str = "1.115";
const MAX_MINOR: u32 = 115;

pub const VERSION_HEADER: &str = "x-openstack-ironic-api-version";
/// The header every OpenStack service reads: `baremetal 1.N`.
pub const STANDARD_HEADER: &str = "openstack-api-version";
const SERVICE: &str = "baremetal";
const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";

/// The version a request negotiated: its minor number, and whether the
/// client asked for it (no header negotiates 1.1 but hides nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub minor: u32,
    pub asked: bool,
}

impl Negotiated {
    /// What a request without a version header gets.
    pub const UNASKED: Self = Self {
        minor: 1,
        asked: false,
    };

    /// Whether a node field is hidden at this version.
    pub fn hides(self, field: &str) -> bool {
        self.asked && node_field_since(field) > self.minor
    }

    /// Whether any node field is hidden at this version.
    pub fn hides_node_fields(self) -> bool {
        self.asked && self.minor < NEWEST_NODE_FIELD
    }

    /// Remove from a node document the fields this version does not have.
    pub fn strip_node(self, doc: &mut Map<String, Value>) {
        if self.hides_node_fields() {
            doc.retain(|field, _| !self.hides(field));
        }
    }
}

/// The microversion that added each node field (Ironic's version history);
/// fields not listed are as old as the API.
const NODE_FIELDS_SINCE: &[(u32, &[&str])] = &[
    (3, &["driver_internal_info"]),
    (5, &["name"]),
    (6, &["inspection_started_at", "inspection_finished_at"]),
    (7, &["clean_step"]),
    (12, &["raid_config", "target_raid_config"]),
    (20, &["network_interface"]),
    (21, &["resource_class"]),
    (24, &["portgroups"]),
    (
        31,
        &[
            "boot_interface",
            "console_interface",
            "deploy_interface",
            "inspect_interface",
            "management_interface",
            "power_interface",
            "raid_interface",
            "vendor_interface",
        ],
    ),
    (32, &["volume"]),
    (33, &["storage_interface"]),
    (37, &["traits"]),
    (38, &["rescue_interface"]),
    (40, &["bios_interface"]),
    (42, &["fault"]),
    (44, &["deploy_step"]),
    (46, &["conductor_group"]),
    (47, &["automated_clean"]),
    (48, &["protected", "protected_reason"]),
    (49, &["conductor"]),
    (50, &["owner"]),
    (51, &["description"]),
    (52, &["allocation_uuid"]),
    (61, &["retired", "retired_reason"]),
    (65, &["lessee"]),
    (66, &["network_data"]),
    (75, &["boot_mode", "secure_boot"]),
    (82, &["shard"]),
    (83, &["parent_node"]),
    (86, &["firmware_interface"]),
    (87, &["service_step"]),
    (95, &["disable_power_off"]),
    (104, &["instance_name"]),
    (109, &["health"]),
];

/// The version that added the newest node field.
const NEWEST_NODE_FIELD: u32 = 109;

/// The microversion that added a node field; 1 for the oldest ones.
pub fn node_field_since(field: &str) -> u32 {
    NODE_FIELDS_SINCE
        .iter()
        .find(|(_, fields)| fields.contains(&field))
        .map_or(1, |(since, _)| *since)
}

/// Handlers take the negotiated version as an argument; the middleware
/// put it there (a router without it serves every field).
impl<S: Send + Sync> FromRequestParts<S> for Negotiated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Negotiated>()
            .copied()
            .unwrap_or(Negotiated::UNASKED))
    }
}

/// The version text a request sent, the standard header first.
fn requested(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(STANDARD_HEADER) {
        let text = value.to_str().unwrap_or("");
        for part in text.split(',') {
            let mut words = part.split_whitespace();
            if words
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case(SERVICE))
            {
                return Some(words.collect::<Vec<_>>().join(" "));
            }
        }
    }
    headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string())
}

/// Read the requested version. No header means the oldest, as in Ironic.
pub fn negotiate(headers: &HeaderMap) -> Result<Negotiated, ApiError> {
    let Some(text) = requested(headers) else {
        return Ok(Negotiated::UNASKED);
    };
    let asked = |minor| Negotiated { minor, asked: true };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(asked(MAX_MINOR));
    }
    let (major, minor) = text
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| ApiError::BadVersionHeader(text.clone()))?;
    if major != 1 {
        return Err(ApiError::VersionMajorNotAcceptable(text));
    }
    if !(1..=MAX_MINOR).contains(&minor) {
        return Err(ApiError::VersionNotAcceptable(text));
    }
    Ok(asked(minor))
}

fn request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    HeaderValue::from_str(&format!("req-{uuid}")).unwrap_or(HeaderValue::from_static("req-"))
}

/// Middleware: negotiate, then stamp the version headers and a request id
/// on every answer, errors included.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let negotiated = negotiate(request.headers());
    let mut response = match &negotiated {
        Ok(version) => {
            request.extensions_mut().insert(*version);
            next.run(request).await
        }
        Err(e) => e.clone().into_response(),
    };
    let h = response.headers_mut();
    h.insert(MIN_HEADER, HeaderValue::from_static(MIN_VERSION));
    h.insert(MAX_HEADER, HeaderValue::from_static(MAX_VERSION));
    if let Ok(Negotiated { minor, .. }) = negotiated {
        if let Ok(v) = HeaderValue::from_str(&format!("1.{minor}")) {
            h.insert(VERSION_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{SERVICE} 1.{minor}")) {
            h.insert(STANDARD_HEADER, v);
        }
    }
    // The answer depends on these headers: caches must key on them.
    h.append(
        header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Ironic-API-Version"),
    );
    let id = request_id();
    h.insert(HeaderName::from_static("openstack-request-id"), id.clone());
    h.insert(HeaderName::from_static("x-openstack-request-id"), id);
    response
}

/// `http://host:port` as the client addressed us, for links.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("127.0.0.1:6385");
        Ok(BaseUrl(format!("http://{host}")))
    }
}

/// A `[self, bookmark]` pair of links, as Ironic writes them.
pub fn links(base: &str, path: &str) -> Value {
    json!([
        { "href": format!("{base}/v1/{path}"), "rel": "self" },
        { "href": format!("{base}/{path}"), "rel": "bookmark" },
    ])
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{ "href": format!("{base}/v1/"), "rel": "self" }],
        "status": "CURRENT",
        "min_version": MIN_VERSION,
        "version": MAX_VERSION,
    })
}

/// `GET /`
pub async fn root(BaseUrl(base): BaseUrl) -> Json<Value> {
    Json(json!({
        "name": "OpenStack Ironic API",
        "description": "rivet: declarative bare-metal provisioning, serving Ironic's v1 API (read-only, plus vendor passthru).",
        "default_version": version_doc(&base),
        "versions": [version_doc(&base)],
    }))
}

/// `GET /v1`
pub async fn v1(BaseUrl(base): BaseUrl) -> Json<Value> {
    Json(json!({
        "id": "v1",
        "links": [
            { "href": format!("{base}/v1/"), "rel": "self" },
            { "href": "https://docs.openstack.org//ironic/latest/contributor//webapi.html", "rel": "describedby", "type": "text/html" },
        ],
        "media_types": { "base": "application/json", "type": "application/vnd.openstack.ironic.v1+json" },
        "nodes": links(&base, "nodes/"),
        "drivers": links(&base, "drivers/"),
        "version": version_doc(&base),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(VERSION_HEADER, HeaderValue::from_str(value).unwrap());
        h
    }

    fn asked(minor: u32) -> Result<Negotiated, ApiError> {
        Ok(Negotiated { minor, asked: true })
    }

    #[test]
    fn versions_negotiate_like_ironic() {
        assert_eq!(negotiate(&HeaderMap::new()), Ok(Negotiated::UNASKED));
        assert_eq!(negotiate(&with("latest")), asked(115));
        assert_eq!(negotiate(&with("1.72")), asked(72));
        assert_eq!(
            negotiate(&with("1.999")),
            Err(ApiError::VersionNotAcceptable("1.999".into()))
        );
        assert_eq!(
            negotiate(&with("2.1")),
            Err(ApiError::VersionMajorNotAcceptable("2.1".into()))
        );
        assert_eq!(
            negotiate(&with("one")),
            Err(ApiError::BadVersionHeader("one".into()))
        );
    }

    fn standard(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(STANDARD_HEADER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_standard_header_is_read_and_wins_over_ironics() {
        assert_eq!(negotiate(&standard("baremetal 1.80")), asked(80));
        assert_eq!(
            negotiate(&standard("compute 2.1, baremetal latest")),
            asked(115)
        );
        // Another service's version is not ours: Ironic's header decides.
        let mut both = standard("compute 2.90");
        both.insert(VERSION_HEADER, HeaderValue::from_static("1.70"));
        assert_eq!(negotiate(&both), asked(70));
        let mut both = standard("baremetal 1.80");
        both.insert(VERSION_HEADER, HeaderValue::from_static("1.70"));
        assert_eq!(negotiate(&both), asked(80));
        assert_eq!(
            negotiate(&standard("baremetal abc")),
            Err(ApiError::BadVersionHeader("abc".into()))
        );
    }

    #[test]
    fn fields_appear_at_the_version_that_added_them() {
        let at = |minor| Negotiated { minor, asked: true };
        assert!(at(1).hides("name") && !at(5).hides("name"));
        assert!(at(80).hides("shard") && !at(82).hides("shard"));
        assert!(!at(1).hides("uuid") && !at(1).hides("provision_state"));
        assert!(!Negotiated::UNASKED.hides("health"));
        assert!(at(108).hides_node_fields() && !at(109).hides_node_fields());
    }
}
