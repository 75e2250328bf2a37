//! A client of a running daemon's API, for `rivet status --url` and
//! `rivet passthru`.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::version::{MAX_VERSION, VERSION_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the rivet API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("the API at {url} answered with something that is not JSON: {message}")]
    NotJson { url: String, message: String },
}

/// What a passthru call answered.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// A sync method's return value.
    Returned(Value),
    /// An async method was accepted and runs in the background.
    Accepted,
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `url` (e.g. `http://127.0.0.1:6385`), sending
    /// `token` as a bearer token when given.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert(VERSION_HEADER, HeaderValue::from_static(MAX_VERSION));
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Unreachable {
                    url: url.to_string(),
                    message: "the token has characters a header cannot carry".into(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    async fn answer(&self, response: reqwest::Response) -> Result<Option<Value>, ClientError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                message: fault_text(&body),
            });
        }
        if body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ClientError::NotJson {
                url: self.base.clone(),
                message: e.to_string(),
            })
    }

    async fn send_get(&self, url: &str) -> Result<reqwest::Response, ClientError> {
        self.http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// GET a path such as `/v1/nodes/n1`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send_get(&format!("{}{path}", self.base)).await?;
        Ok(self.answer(response).await?.unwrap_or(Value::Null))
    }

    /// The fleet identity `/healthz` names, whatever its status (a degraded
    /// daemon still says which fleet it serves); `None` when the answer has
    /// none (not a rivet daemon, or an older one).
    pub async fn fleet_identity(&self) -> Result<Option<String>, ClientError> {
        let response = self.send_get(&format!("{}/healthz", self.base)).await?;
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(doc["fleet"].as_str().map(str::to_string))
    }

    /// Every node, in detail, following the pages.
    pub async fn nodes(&self) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{}/v1/nodes?detail=true", self.base));
        while let Some(url) = next.take() {
            let response = self.send_get(&url).await?;
            let page = self.answer(response).await?.unwrap_or(Value::Null);
            if let Some(nodes) = page["nodes"].as_array() {
                out.extend(nodes.iter().cloned());
            }
            next = page["next"].as_str().map(str::to_string);
        }
        Ok(out)
    }

    /// Call a node's vendor passthru method.
    pub async fn passthru(
        &self,
        node: &str,
        method: &str,
        http_method: &str,
        args: &Map<String, Value>,
    ) -> Result<CallResult, ClientError> {
        let verb = reqwest::Method::from_bytes(http_method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ClientError::Api {
                status: 400,
                message: format!("`{http_method}` is not an HTTP method"),
            })?;
        let encoded: String = url::form_urlencoded::byte_serialize(method.as_bytes()).collect();
        let url = format!(
            "{}/v1/nodes/{node}/vendor_passthru?method={encoded}",
            self.base
        );
        let response = self
            .http
            .request(verb, url)
            .json(args)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let accepted = response.status() == reqwest::StatusCode::ACCEPTED;
        let body = self.answer(response).await?;
        Ok(if accepted {
            CallResult::Accepted
        } else {
            CallResult::Returned(body.unwrap_or(Value::Null))
        })
    }
}

/// The message inside Ironic's error body, or the body as it is.
fn fault_text(body: &[u8]) -> String {
    let outer: Option<Value> = serde_json::from_slice(body).ok();
    let inner: Option<Value> = outer
        .as_ref()
        .and_then(|o| o["error_message"].as_str())
        .and_then(|s| serde_json::from_str(s).ok());
    inner
        .as_ref()
        .and_then(|i| i["faultstring"].as_str().or(i["description"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_string_is_unwrapped_from_ironics_body() {
        let body = br#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"No handler for method x\", \"debuginfo\": null}"}"#;
        assert_eq!(fault_text(body), "No handler for method x");
        assert_eq!(fault_text(b"plain"), "plain");
    }
}
