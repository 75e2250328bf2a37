//! The one error type of the API. Every failure a handler can meet is a
//! variant here, and `IntoResponse` renders it in Ironic's shape: a JSON
//! object whose `error_message` is itself a JSON document, as a string.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::version::{MAX_VERSION, MIN_VERSION};
use crate::driver::{DriverError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Node {0} could not be found.")]
    NodeNotFound(String),
    #[error("The requested resource could not be found.")]
    PathNotFound,
    #[error("Driver {0} could not be found.")]
    DriverNotFound(String),
    #[error("Port {0} could not be found.")]
    PortNotFound(String),
    #[error("Portgroup {0} could not be found.")]
    PortgroupNotFound(String),
    #[error("Node history record {0} could not be found.")]
    HistoryNotFound(String),
    #[error("Node {node} doesn't have a BIOS setting '{name}'")]
    BiosSettingNotFound { node: String, name: String },
    #[error("Conductor {0} could not be found.")]
    ConductorNotFound(String),
    #[error("Deploy template {0} could not be found.")]
    DeployTemplateNotFound(String),
    /// A lookup or heartbeat for a node that waits for no agent.
    #[error("{0}")]
    AgentNotFound(String),
    /// A write: rivet changes nodes only by converging the declarations;
    /// `instead` says what to edit.
    #[error("rivet's API is read-only: {method} {path} would change something. {instead}")]
    ReadOnly {
        method: String,
        path: String,
        instead: String,
    },
    /// A path Ironic only writes to, read.
    #[error(
        "Method not allowed: {path} is only written to in Ironic's API, never read, and rivet's API is read-only."
    )]
    MethodNotAllowed { path: String },
    #[error("Missing mandatory parameter: method")]
    MissingMethod,
    #[error("No handler for method {0}")]
    NoHandler(String),
    #[error("The method {method} does not support HTTP {verb}")]
    WrongVerb { method: String, verb: String },
    #[error("Parameter '{arg}' not passed to method '{method}'.")]
    MissingArgument { arg: String, method: String },
    #[error("{0}")]
    BadBody(String),
    #[error("The request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    #[error("Invalid value for {param}: {message}")]
    BadParameter { param: String, message: String },
    /// Ironic's own wording for a query it refuses (sorting).
    #[error("{0}")]
    BadQuery(String),
    /// Ironic's words, whichever header carried the value.
    #[error("Invalid value for X-OpenStack-Ironic-API-Version header")]
    BadVersionHeader(String),
    #[error(
        "Version {0} was requested but the minor version is not supported by this service. The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
    )]
    VersionNotAcceptable(String),
    #[error(
        "Mutually exclusive versions requested. Version {0} requested but not supported by this service. The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
    )]
    VersionMajorNotAcceptable(String),
    #[error(
        "Node {node} is locked by host {host}, please retry after the current operation is completed."
    )]
    NodeLocked { node: String, host: String },
    #[error(
        "Authentication required: send the API token as `Authorization: Bearer TOKEN` or `X-Auth-Token: TOKEN`."
    )]
    Unauthorized,
    #[error("{0}")]
    Driver(DriverError),
    #[error("{0}")]
    Unavailable(String),
    #[error("The request took too long and was abandoned.")]
    Timeout,
    #[error("{0}")]
    Internal(String),
}

/// Ironic's fault document, in its key order.
#[derive(Serialize)]
struct Fault<'a> {
    faultcode: &'a str,
    faultstring: &'a str,
    debuginfo: Option<()>,
}

/// The shape Ironic's version middleware answers 406 with.
#[derive(Serialize)]
struct VersionFault<'a> {
    code: u16,
    title: &'a str,
    description: &'a str,
}

#[derive(Serialize)]
struct Body {
    error_message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NodeNotFound(_)
            | PathNotFound
            | DriverNotFound(_)
            | PortNotFound(_)
            | PortgroupNotFound(_)
            | HistoryNotFound(_)
            | BiosSettingNotFound { .. }
            | ConductorNotFound(_)
            | DeployTemplateNotFound(_)
            | AgentNotFound(_) => StatusCode::NOT_FOUND,
            ReadOnly { .. } | MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            MissingMethod
            | NoHandler(_)
            | WrongVerb { .. }
            | MissingArgument { .. }
            | BadBody(_)
            | BadParameter { .. }
            | BadQuery(_) => StatusCode::BAD_REQUEST,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            VersionNotAcceptable(_) | VersionMajorNotAcceptable(_) | BadVersionHeader(_) => {
                StatusCode::NOT_ACCEPTABLE
            }
            NodeLocked { .. } => StatusCode::CONFLICT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Driver(e) => match e.kind {
                ErrorKind::Invalid | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
                ErrorKind::Retryable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Fatal => StatusCode::INTERNAL_SERVER_ERROR,
                // Another conductor owns the node now, as a held lock is 409.
                ErrorKind::Fenced => StatusCode::CONFLICT,
            },
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error_message` string: a JSON document of its own.
    pub fn error_message(&self) -> String {
        let text = self.to_string();
        let status = self.status();
        if let ApiError::VersionNotAcceptable(_)
        | ApiError::VersionMajorNotAcceptable(_)
        | ApiError::BadVersionHeader(_) = self
        {
            return json_text(&VersionFault {
                code: status.as_u16(),
                title: status.canonical_reason().unwrap_or("Not Acceptable"),
                description: &text,
            });
        }
        let faultcode = if status.is_server_error() {
            "Server"
        } else {
            "Client"
        };
        json_text(&Fault {
            faultcode,
            faultstring: &text,
            debuginfo: None,
        })
    }
}

fn json_text(value: &impl Serialize) -> String {
    // Serializing these plain structs of strings cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        ApiError::Driver(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json_text(&Body {
            error_message: self.error_message(),
        });
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self == ApiError::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_message_is_a_json_string_inside_json() {
        let e = ApiError::MissingArgument {
            arg: "bar".into(),
            method: "second_method".into(),
        };
        let inner: serde_json::Value = serde_json::from_str(&e.error_message()).unwrap();
        assert_eq!(
            inner,
            serde_json::json!({
                "faultcode": "Client",
                "faultstring": "Parameter 'bar' not passed to method 'second_method'.",
                "debuginfo": null
            })
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_too_high_version_answers_in_the_version_shape() {
        let e = ApiError::VersionNotAcceptable("1.999".into());
        let inner: serde_json::Value = serde_json::from_str(&e.error_message()).unwrap();
        assert_eq!(inner["code"], 406);
        assert_eq!(inner["title"], "Not Acceptable");
        assert_eq!(
            inner["description"],
            "Version 1.999 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
        );
    }
}
