//! One BMC's HTTP client: authentication (session or Basic), retries of
//! transient failures, the system it drives, and how errors read.

use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Timing;
use crate::driver::body::{BodyError, read_capped};
use crate::driver::scrub::Secrets;
use crate::driver::{DriverError, fence};

/// The most rivet reads of one BMC answer; a larger body is an error, not
/// a gigabyte of memory.
pub(super) const MAX_BODY: usize = 4 << 20;

pub(super) enum Auth {
    Unknown,
    Basic,
    /// A Redfish session: its token and, to delete it, its URI.
    Session {
        token: String,
        location: Option<String>,
    },
}

/// How rivet is logged in to one BMC endpoint as one user, shared by every
/// client (system) behind it, so that rivet holds at most one session per
/// endpoint and user.
pub(super) struct Login {
    pub(super) auth: tokio::sync::Mutex<Auth>,
    /// The password, its Basic form and every session token: never shown.
    pub(super) secrets: Mutex<Secrets>,
}

impl Login {
    pub(super) fn new(username: Option<&str>, password: Option<&str>) -> Self {
        Self {
            auth: tokio::sync::Mutex::new(Auth::Unknown),
            secrets: Mutex::new(Secrets::login(username, password)),
        }
    }
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    /// `http(s)://host[:port]`
    pub(super) base: String,
    pub(super) system: tokio::sync::OnceCell<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) login: Arc<Login>,
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
    from_json.unwrap_or_else(|| body.to_string())
}

/// Follow a redirect only within the BMC's own origin: a redirect elsewhere
/// would carry the login body (a 307 re-POSTs `UserName` and `Password`)
/// to another host.
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().first().cloned();
        match from {
            Some(from) if from.origin() != attempt.url().origin() => {
                let message = format!(
                    "the BMC at {from} redirected to {}, another host; rivet follows redirects only within the BMC's own address (set the node's bmc address to where the BMC really answers)",
                    attempt.url()
                );
                attempt.error(message)
            }
            _ if attempt.previous().len() > 5 => attempt.error("too many redirects"),
            _ => attempt.follow(),
        }
    })
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The secrets this BMC could echo.
    pub(super) fn secrets(&self) -> Secrets {
        self.login
            .secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Not fenced: a session is no hardware action, and a conductor
    /// whose lease expired may still log in to read.
    async fn log_in(&self, auth: &mut Auth) -> Result<(), DriverError> {
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
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .and_then(|t| t.to_str().ok())
                        .map(str::to_string)
                };
                match header("X-Auth-Token") {
                    Some(token) => {
                        self.login
                            .secrets
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .add(&token);
                        *auth = Auth::Session {
                            token,
                            location: header("Location"),
                        };
                    }
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

    /// Delete the session, if there is one: a BMC keeps only a few. Not
    /// fenced: ending a session changes nothing on the system.
    pub(super) async fn log_out(&self) {
        let mut auth = self.login.auth.lock().await;
        if let Auth::Session { token, location } = &*auth {
            let path = location
                .clone()
                .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions".to_string());
            let url = if path.starts_with('/') {
                self.url(&path)
            } else {
                path
            };
            match self
                .http
                .delete(&url)
                .header("X-Auth-Token", token)
                .send()
                .await
            {
                Ok(r) => tracing::debug!(bmc = %self.base, status = %r.status(), "session deleted"),
                Err(e) => {
                    tracing::debug!(bmc = %self.base, error = %transport(&self.base, &e), "could not delete the session")
                }
            }
        }
        *auth = Auth::Unknown;
    }

    /// The body of `response`, at most [`MAX_BODY`] bytes of it.
    async fn body(&self, response: reqwest::Response) -> Result<String, DriverError> {
        match read_capped(response, MAX_BODY).await {
            Ok(body) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(BodyError::TooLarge) => Err(DriverError::fatal(format!(
                "the BMC {} answered with more than {} MiB; rivet reads at most that much of one answer",
                self.base,
                MAX_BODY >> 20
            ))),
            Err(BodyError::Broken(e)) => Err(transport(&self.base, &e)),
        }
    }

    /// One request with authentication, retrying transport errors and 5xx.
    /// Every attempt of a request that acts on the system (any method but
    /// GET and HEAD) checks the fence just before it goes out, and may take
    /// no longer than the time left on the lease.
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
        let acts = !matches!(method, Method::GET | Method::HEAD);
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let mut auth = self.login.auth.lock().await;
            if matches!(*auth, Auth::Unknown) {
                match self.log_in(&mut auth).await {
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
            let sent_token = match &*auth {
                Auth::Session { token, .. } => {
                    request = request.header("X-Auth-Token", token);
                    Some(token.clone())
                }
                _ => {
                    if let Some(u) = &self.username {
                        request = request.basic_auth(u, self.password.as_deref());
                    }
                    None
                }
            };
            drop(auth);
            if let Some(body) = body {
                request = request.json(body);
            }
            if acts {
                let sent = fence::check(&format!("{method} {path}"))?;
                if sent.timeout.is_some() {
                    request = request.timeout(sent.cap(self.timing.request));
                }
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    self.body(response).await.map(|text| (status, text))
                }
                Err(e) => Err(transport(&self.base, &e)),
            };
            match outcome {
                Ok((StatusCode::UNAUTHORIZED, _)) if !relogged => {
                    let mut auth = self.login.auth.lock().await;
                    match &*auth {
                        // The session expired: log in again, once.
                        Auth::Session { token, .. } if Some(token) == sent_token.as_ref() => {
                            *auth = Auth::Unknown;
                        }
                        // Another client behind this endpoint logged in again already.
                        Auth::Session { .. } => {}
                        _ => return Err(credentials_refused(&self.base)),
                    }
                    relogged = true;
                    continue;
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

    /// GET a resource as JSON, scrubbed of the secrets the BMC could echo.
    pub(super) async fn get(&self, path: &str) -> Result<Value, DriverError> {
        let (status, text) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(self.http_error("GET", path, status, &text));
        }
        let mut value: Value = serde_json::from_str(&text).map_err(|_| {
            DriverError::retryable(format!(
                "the BMC {} answered GET {path} with something that is not JSON",
                self.base
            ))
        })?;
        self.secrets().scrub_json(&mut value);
        Ok(value)
    }

    /// The error for an unsuccessful answer: what the BMC said, scrubbed and
    /// cut, classed by its status.
    pub(super) fn http_error(
        &self,
        method: &str,
        path: &str,
        status: StatusCode,
        body: &str,
    ) -> DriverError {
        let message = format!(
            "the BMC {} answered {method} {path} with {status}: {}",
            self.base,
            self.secrets().message(&error_message(body))
        );
        if status.is_server_error() {
            DriverError::retryable(message)
        } else if status == StatusCode::NOT_FOUND {
            DriverError::fatal(message)
        } else {
            DriverError::invalid(message)
        }
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
    if e.is_redirect() {
        return DriverError::fatal(cause);
    }
    if cause.contains("certificate") {
        return DriverError::fatal(format!(
            "the BMC {base} {what}: its certificate is not trusted ({cause}); set the node's bmc `ca_file` to the CA that signed it, or `verify_tls = false` to accept any certificate"
        ));
    }
    DriverError::retryable(format!("the BMC {base} {what}: {cause}"))
}

fn credentials_refused(base: &str) -> DriverError {
    DriverError::fatal(format!(
        "the BMC {base} refused the credentials (HTTP 401): check the node's bmc `username` and its password_env/password_file"
    ))
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
