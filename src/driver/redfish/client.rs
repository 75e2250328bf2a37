//! One BMC's HTTP client: authentication (session or Basic), retries of
//! transient failures, the system it drives, and how errors read.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Timing;
use crate::driver::DriverError;

pub(super) enum Auth {
    Unknown,
    Basic,
    Session(String),
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    /// `http(s)://host[:port]`
    pub(super) base: String,
    pub(super) system: tokio::sync::OnceCell<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) auth: tokio::sync::Mutex<Auth>,
    pub(super) timing: Timing,
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
}

/// The message a Redfish error body carries, or its text.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.pointer("/error/@Message.ExtendedInfo/0/Message")
            .or_else(|| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let text = body.trim();
        if text.len() > 300 {
            format!("{}…", &text[..300])
        } else {
            text.to_string()
        }
    })
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn login(&self, auth: &mut Auth) -> Result<(), DriverError> {
        let (Some(user), Some(pass)) = (&self.username, &self.password) else {
            *auth = Auth::Basic;
            return Ok(());
        };
        let response = self
            .http
            .post(self.url("/redfish/v1/SessionService/Sessions"))
            .json(&json!({ "UserName": user, "Password": pass }))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                match r
                    .headers()
                    .get("X-Auth-Token")
                    .and_then(|t| t.to_str().ok())
                {
                    Some(token) => *auth = Auth::Session(token.to_string()),
                    None => *auth = Auth::Basic,
                }
                Ok(())
            }
            // No SessionService, or one that wants authentication before a
            // session (404/405/401/…): Basic authentication on every request,
            // whose answer says whether the credentials are good.
            Ok(_) => {
                *auth = Auth::Basic;
                Ok(())
            }
            Err(e) => Err(transport(&self.base, &e)),
        }
    }

    /// One request with authentication, retrying transport errors and 5xx.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), DriverError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the endpoint limit stays open");
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let mut auth = self.auth.lock().await;
            if matches!(*auth, Auth::Unknown) {
                match self.login(&mut auth).await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() && attempt < self.timing.attempts => {
                        drop(auth);
                        tokio::time::sleep(self.timing.retry_wait(attempt)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut request = self.http.request(method.clone(), self.url(path));
            request = match &*auth {
                Auth::Session(token) => request.header("X-Auth-Token", token),
                _ => match (&self.username, &self.password) {
                    (Some(u), p) => request.basic_auth(u, p.as_deref()),
                    _ => request,
                },
            };
            drop(auth);
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Ok(text) => Ok((status, text)),
                        Err(e) => Err(transport(&self.base, &e)),
                    }
                }
                Err(e) => Err(transport(&self.base, &e)),
            };
            match outcome {
                Ok((StatusCode::UNAUTHORIZED, _)) if !relogged => {
                    let mut auth = self.auth.lock().await;
                    if matches!(*auth, Auth::Session(_)) {
                        // The session expired: log in again, once.
                        *auth = Auth::Unknown;
                        relogged = true;
                        continue;
                    }
                    return Err(credentials_refused(&self.base));
                }
                Ok((StatusCode::UNAUTHORIZED, _)) => return Err(credentials_refused(&self.base)),
                Ok((status, text))
                    if status.is_server_error() && attempt < self.timing.attempts =>
                {
                    tracing::debug!(bmc = %self.base, %status, "BMC error; retrying");
                    let _ = text;
                }
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_retryable() && attempt < self.timing.attempts => {
                    tracing::debug!(bmc = %self.base, error = %e, "BMC unreachable; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.timing.retry_wait(attempt)).await;
        }
    }

    /// GET a resource as JSON.
    pub(super) async fn get(&self, path: &str) -> Result<Value, DriverError> {
        let (status, text) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(http_error(&self.base, "GET", path, status, &text));
        }
        serde_json::from_str(&text).map_err(|_| {
            DriverError::retryable(format!(
                "the BMC {} answered GET {path} with something that is not JSON",
                self.base
            ))
        })
    }

    pub(super) async fn system_path(&self) -> Result<&str, DriverError> {
        self.system
            .get_or_try_init(|| async {
                let systems = self.get("/redfish/v1/Systems").await?;
                let members: Vec<&str> = systems["Members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x["@odata.id"].as_str()).collect())
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => Ok(one.to_string()),
                    [] => Err(DriverError::fatal(format!(
                        "the BMC {} lists no systems",
                        self.base
                    ))),
                    many => Err(DriverError::invalid(format!(
                        "the BMC {} has {} systems ({}); name one in the address, e.g. {}{}",
                        self.base,
                        many.len(),
                        many.join(", "),
                        self.base,
                        many[0]
                    ))),
                }
            })
            .await
            .map(String::as_str)
    }

    pub(super) async fn system(&self) -> Result<Value, DriverError> {
        let path = self.system_path().await?.to_string();
        self.get(&path).await
    }
}

fn transport(base: &str, e: &reqwest::Error) -> DriverError {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "cannot be reached"
    } else {
        "failed"
    };
    // reqwest errors carry the URL, which never holds a secret here (the
    // address may not carry credentials); the source chain says why.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    DriverError::retryable(format!("the BMC {base} {what}: {cause}"))
}

fn credentials_refused(base: &str) -> DriverError {
    DriverError::fatal(format!(
        "the BMC {base} refused the credentials (HTTP 401): check the node's bmc `username` and its password_env/password_file"
    ))
}

pub(super) fn http_error(
    base: &str,
    method: &str,
    path: &str,
    status: StatusCode,
    body: &str,
) -> DriverError {
    let message = format!(
        "the BMC {base} answered {method} {path} with {status}: {}",
        error_message(body)
    );
    if status.is_server_error() {
        DriverError::retryable(message)
    } else if status == StatusCode::NOT_FOUND {
        DriverError::fatal(message)
    } else {
        DriverError::invalid(message)
    }
}

pub(super) fn members(collection: &Value) -> Vec<String> {
    collection["Members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["@odata.id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
