//! Microversions: every response carries the supported range, and a request
//! may ask for one (`X-OpenStack-Ironic-API-Version: 1.N` or `latest`).
//! rivet serves every field at every version: the number only has to be in
//! range, as clients negotiate before they call anything else.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::error::ApiError;

pub const MIN_VERSION: &str = "1.1";
pub const MAX_VERSION: &str = "1.115";
const MAX_MINOR: u32 = 115;

pub const VERSION_HEADER: &str = "x-openstack-ironic-api-version";
const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";

/// The version a request negotiated: its minor number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated(pub u32);

/// Read the requested version. No header means the oldest, as in Ironic.
pub fn negotiate(headers: &HeaderMap) -> Result<Negotiated, ApiError> {
    let Some(value) = headers.get(VERSION_HEADER) else {
        return Ok(Negotiated(1));
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.eq_ignore_ascii_case("latest") {
        return Ok(Negotiated(MAX_MINOR));
    }
    let (major, minor) = text
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| ApiError::BadVersionHeader(text.to_string()))?;
    if major != 1 || !(1..=MAX_MINOR).contains(&minor) {
        return Err(ApiError::VersionNotAcceptable(text.to_string()));
    }
    Ok(Negotiated(minor))
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
    if let Ok(Negotiated(minor)) = negotiated
        && let Ok(v) = HeaderValue::from_str(&format!("1.{minor}"))
    {
        h.insert(VERSION_HEADER, v);
    }
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

    #[test]
    fn versions_negotiate_like_ironic() {
        assert_eq!(negotiate(&HeaderMap::new()), Ok(Negotiated(1)));
        assert_eq!(negotiate(&with("latest")), Ok(Negotiated(115)));
        assert_eq!(negotiate(&with("1.72")), Ok(Negotiated(72)));
        assert_eq!(
            negotiate(&with("1.999")),
            Err(ApiError::VersionNotAcceptable("1.999".into()))
        );
        assert_eq!(
            negotiate(&with("2.1")),
            Err(ApiError::VersionNotAcceptable("2.1".into()))
        );
        assert_eq!(
            negotiate(&with("one")),
            Err(ApiError::BadVersionHeader("one".into()))
        );
    }
}
