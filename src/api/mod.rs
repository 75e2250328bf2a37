//! The HTTP API: Ironic's v1 shapes, read-only but for vendor passthru, so
//! the OpenStack `baremetal` client works against a rivet daemon.
//!
//! `router(state)` builds the whole application as a value (tests call it
//! without a socket); `serve(listener, router, shutdown)` runs it until the
//! daemon shuts down. Errors are `error::ApiError` values, rendered in
//! Ironic's error shape in one place.

pub mod agent;
pub mod client;
pub mod drivers;
pub mod error;
pub mod forward;
pub mod index;
pub mod nodes;
pub mod passthru;
pub mod ports;
pub mod refusals;
pub mod resources;
pub mod time;
pub mod version;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use crate::conductor::Conductor;
use crate::conductor::metrics;
use crate::model::fleet::Fleet;
use crate::store::StoreError;
use error::{ApiError, ApiResult};
use index::{NodeCache, NodeIndex};

/// How the API guards itself.
#[derive(Clone)]
pub struct ApiOptions {
    /// Bearer token required for passthru calls (and reads, with `token_reads`).
    pub token: Option<String>,
    pub token_reads: bool,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("token", &self.token.as_ref().map(|_| "******"))
            .field("token_reads", &self.token_reads)
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            token: None,
            token_reads: false,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl ApiOptions {
    /// The options `[conductor]` asks for; the token is read from the
    /// environment variable `api_token_env` names, which must be set.
    pub fn from_fleet(fleet: &Fleet) -> Result<Self, String> {
        let conductor = &fleet.conductor;
        let token = match &conductor.api_token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => {
                    return Err(format!(
                        "`[conductor] api_token_env` names `{var}`, which is not set or empty; set it to the API token, or remove the setting"
                    ));
                }
            },
        };
        if conductor.api_token_reads && token.is_none() {
            return Err(
                "`[conductor] api_token_reads = true` needs a token: set `api_token_env` too"
                    .into(),
            );
        }
        Ok(Self {
            token,
            token_reads: conductor.api_token_reads,
            ..Self::default()
        })
    }
}

/// Everything the handlers share: the conductor they call, and the node
/// index and list pages they answer reads from.
pub struct Inner {
    pub conductor: Arc<Conductor>,
    pub options: ApiOptions,
    nodes: NodeCache,
    pages: nodes::PageCache,
    /// When the last pass the store recorded finished (a `rivet reconcile`
    /// before this daemon started, or an earlier daemon).
    recorded_pass: Option<SystemTime>,
}

#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiState {
    pub fn new(conductor: Arc<Conductor>, options: ApiOptions) -> Result<Self, StoreError> {
        let nodes = NodeCache::new(&conductor.store, conductor.fleet())?;
        let recorded_pass = conductor
            .store
            .runs()?
            .values()
            .filter_map(|run| run.finished_at.as_deref())
            .filter_map(|at| humantime::parse_rfc3339(at).ok())
            .max();
        Ok(Self(Arc::new(Inner {
            conductor,
            options,
            nodes,
            pages: nodes::PageCache::default(),
            recorded_pass,
        })))
    }

    /// How long ago the last pass finished: this daemon's, or else the last
    /// one the store recorded.
    pub fn last_pass_age(&self) -> Option<Duration> {
        self.conductor.last_pass().map(|t| t.elapsed()).or_else(|| {
            let at = self.recorded_pass?;
            Some(SystemTime::now().duration_since(at).unwrap_or_default())
        })
    }

    /// The nodes as of now.
    pub fn index(&self) -> Arc<NodeIndex> {
        self.nodes.index(self.conductor.fleet())
    }

    /// Fold committed node records into the index about once a second until
    /// `shutdown`: a converge nobody reads during would otherwise leave a
    /// second copy of every record it touched waiting in the cache.
    pub async fn keep_index_current(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    self.index();
                }
                () = shutdown.cancelled() => break,
            }
        }
    }
}

impl axum::extract::FromRef<ApiState> for Arc<crate::reconcile::agent::Agents> {
    fn from_ref(state: &ApiState) -> Self {
        Arc::clone(&state.conductor.agents)
    }
}

/// The whole API as one router.
pub fn router(state: ApiState) -> Router {
    let open = Router::new()
        .route("/", get(version::root))
        .route("/v1", get(version::v1))
        .route("/v1/", get(version::v1))
        .route("/healthz", get(healthz))
        .merge(agent::routes::<ApiState>());
    let mut reads = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/", get(nodes::list))
        .route("/v1/nodes/detail", get(nodes_detail))
        .route("/v1/nodes/{id}", get(nodes::show))
        .route("/v1/nodes/{id}/states", get(nodes::states))
        .route("/v1/nodes/{id}/states/console", get(resources::console))
        .route("/v1/nodes/{id}/validate", get(resources::validate))
        .route("/v1/nodes/{id}/traits", get(resources::traits))
        .route(
            "/v1/nodes/{id}/management/boot_device",
            get(resources::boot_device),
        )
        .route(
            "/v1/nodes/{id}/management/boot_device/supported",
            get(resources::supported_boot_devices),
        )
        .route("/v1/nodes/{id}/bios", get(resources::bios))
        .route("/v1/nodes/{id}/bios/{setting}", get(resources::bios_one))
        .route("/v1/conductors", get(resources::conductors))
        .route("/v1/conductors/{hostname}", get(resources::conductor))
        .route("/v1/deploy_templates", get(resources::deploy_templates))
        .route("/v1/deploy_templates/{id}", get(resources::deploy_template))
        .route("/v1/nodes/{id}/history", get(nodes::history))
        .route("/v1/nodes/{id}/history/{event}", get(nodes::history_event))
        .route(
            "/v1/nodes/{id}/vendor_passthru/methods",
            get(passthru::node_methods_list),
        )
        .route("/v1/drivers", get(drivers::list))
        .route("/v1/drivers/", get(drivers::list))
        .route("/v1/drivers/{name}", get(drivers::show))
        .route("/v1/drivers/{name}/properties", get(drivers::properties))
        .route(
            "/v1/drivers/{name}/vendor_passthru/methods",
            get(passthru::driver_methods_list),
        )
        .route("/v1/ports", get(ports::list))
        .route("/v1/ports/", get(ports::list))
        .route("/v1/ports/detail", get(ports::detail))
        .route("/v1/ports/{uuid}", get(ports::show))
        .route("/v1/nodes/{id}/ports", get(ports::of_node))
        .route("/v1/nodes/{id}/ports/detail", get(ports::of_node_detail));
    let mut calls = Router::new()
        .route("/v1/nodes/{id}/vendor_passthru", any(passthru::call))
        .route(
            "/v1/nodes/{id}/vendor_passthru/{method}",
            any(passthru::call),
        )
        .route("/v1/drivers/{name}/vendor_passthru", any(passthru::call))
        .route(
            "/v1/drivers/{name}/vendor_passthru/{method}",
            any(passthru::call),
        );
    if state.options.token.is_some() {
        calls = calls.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        if state.options.token_reads {
            reads = reads.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
    }
    let timeout = state.options.request_timeout;
    let body_limit = state.options.body_limit;
    open.merge(reads)
        .merge(calls)
        .fallback(refusals::unrouted)
        .method_not_allowed_fallback(refusals::wrong_verb)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(version::headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn(log_request))
}

/// Serve `app` on `listener` until `shutdown` resolves, then let requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// One line per request: verb, path, status, time. Never headers, bodies or
/// query values other than the passthru method name.
async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "rivet::api::request", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let verb = request.method().clone();
    let path = request.uri().path().to_string();
    let method = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "method")
            .map(|(_, v)| v.into_owned())
    });
    let response = next.run(request).await;
    tracing::info!(
        target: "rivet::api::request",
        %verb,
        %path,
        passthru_method = method.as_deref().unwrap_or(""),
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .map(str::trim);
    }
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.options.token else {
        return next.run(request).await;
    };
    match presented_token(request.headers()) {
        Some(given) if crate::driver::scrub::same_secret(given, expected) => {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// `GET /v1/nodes/detail`: Ironic's older spelling of `?detail=true`.
async fn nodes_detail(
    state: State<ApiState>,
    base: version::BaseUrl,
    negotiated: version::Negotiated,
    axum::extract::Query(mut params): axum::extract::Query<
        std::collections::BTreeMap<String, String>,
    >,
) -> ApiResult<Response> {
    params.insert("detail".into(), "true".into());
    nodes::list(state, base, negotiated, axum::extract::Query(params)).await
}

/// `GET /healthz`: 200 when the store answers, the watcher runs and no node
/// failed by a bug in rivet ("degraded" names those until they converge
/// again), else 503.
async fn healthz(State(state): State<ApiState>) -> Response {
    let store = Arc::clone(&state.conductor.store);
    let store_check = tokio::task::spawn_blocking(move || store.node(""))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map(drop).map_err(|e| e.to_string()));
    let watcher = state.conductor.watcher_alive();
    let healthy = store_check.is_ok() && watcher;
    // Nodes whose last failure was a bug in rivet, until they converge again.
    let marker = format!("{}:", crate::reconcile::unwind::INTERNAL_ERROR);
    let internal_errors: Vec<String> = state
        .index()
        .entries
        .iter()
        .filter(|e| {
            e.record
                .as_ref()
                .and_then(|r| r.last_error.as_deref())
                .is_some_and(|error| error.contains(&marker))
        })
        .map(|e| e.name.to_string())
        .collect();
    let cluster = state.conductor.cluster.as_ref().map(|c| c.status());
    let stale = cluster.as_ref().and_then(|c| c.stale.clone());
    let doc = json!({
        "fleet": state.conductor.fleet_identity(),
        "host": state.conductor.fleet().conductor.host,
        // Stale: reads are served from what this daemon last saw, and
        // nothing converges until etcd answers again.
        "status": if !healthy { "unhealthy" } else if !internal_errors.is_empty() { "degraded" } else if stale.is_some() { "stale" } else { "ok" },
        "internal_errors": internal_errors,
        "store": match &store_check { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        "watcher_alive": watcher,
        "last_pass_age_seconds": state.last_pass_age().map(|age| age.as_secs_f64()),
        "declaration_problems": state.conductor.declaration_problems(),
        "nodes": state.index().entries.len(),
    });
    let mut doc = doc;
    if let (Some(cluster), Value::Object(map)) = (cluster, &mut doc) {
        map.insert(
            "warnings".into(),
            json!(stale.into_iter().collect::<Vec<_>>()),
        );
        map.insert("cluster".into(), json!(cluster));
    }
    let status = if healthy && internal_errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(doc)).into_response()
}

/// `GET /metrics`
async fn metrics_text(State(state): State<ApiState>) -> Response {
    let index = state.index();
    let mut by_state: std::collections::BTreeMap<_, u64> =
        metrics::ALL_STATES.iter().map(|s| (*s, 0)).collect();
    let mut maintenance = 0;
    for e in &index.entries {
        *by_state.entry(e.provision_state()).or_default() += 1;
        maintenance += u64::from(e.maintenance());
    }
    let text = state.conductor.metrics.render(&metrics::Gauges {
        nodes_by_state: by_state,
        maintenance,
        watcher_alive: state.conductor.watcher_alive(),
        last_pass_age: state.last_pass_age(),
        declaration_problems: state.conductor.declaration_problems(),
    });
    let text = match &state.conductor.cluster {
        Some(cluster) => text + &metrics::render_cluster(cluster),
        None => text,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
