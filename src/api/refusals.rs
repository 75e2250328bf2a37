//! Answers for what rivet's API does not do: every write under `/v1` but
//! vendor passthru is refused with 405 and what to edit instead; a read of
//! a path Ironic only writes to is 405 "method not allowed"; anything else
//! that is not routed does not exist (404).

use axum::extract::Request;
use axum::http::Method;

use super::error::ApiError;

/// What to edit instead of writing `path`, in words for the refusal.
pub fn instead(method: &Method, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let node_file = match segments.as_slice() {
        ["v1", "nodes"] => {
            return "To add a node, declare a `[[node]]` in a node file of the fleet directory; rivet enrolls and converges it.".into();
        }
        ["v1", "nodes", _] if method == Method::DELETE => {
            return "To remove a node, delete its `[[node]]` from its file: with `[conductor] prune = true` rivet undeploys it, otherwise it is left unmanaged.".into();
        }
        ["v1", "nodes", _] => "its fields",
        ["v1", "nodes", _, "states", "power"] => "`desired.power`",
        ["v1", "nodes", _, "states", "provision"] => "`desired.provision`",
        ["v1", "nodes", _, "states", "boot_mode"] => "`desired.boot_mode`",
        ["v1", "nodes", _, "traits", ..] => "`traits`",
        ["v1", "nodes", _, "management", "boot_device", ..] => "`desired.boot_device`",
        ["v1", "nodes", _, "maintenance"] => {
            return "Maintenance is not declared: rivet puts a node in maintenance after 3 failed power syncs and takes it out when its BMC answers again.".into();
        }
        ["v1", "nodes", _, "states", "console"] => {
            return "rivet has no console: there is nothing to enable.".into();
        }
        ["v1", "nodes", _, "bios", ..] => {
            return "BIOS settings are applied by a `bios.apply_configuration` deploy step, declared in the node's `deploy_steps` or a `[[deploy_template]]`.".into();
        }
        ["v1", "deploy_templates", ..] => {
            return "Deploy templates are declared as `[[deploy_template]]` in the fleet's files; rivet serves the ones in force.".into();
        }
        _ => {
            return "Change the declarations instead; rivet converges them.".into();
        }
    };
    format!("Edit {node_file} in the node's `[[node]]` declaration instead; rivet converges it.")
}

/// Paths Ironic only writes to (PUT), below `/v1/nodes/{id}/`.
const WRITE_ONLY: &[&[&str]] = &[
    &["states", "power"],
    &["states", "provision"],
    &["states", "raid"],
    &["states", "boot_mode"],
    &["states", "secure_boot"],
    &["maintenance"],
    &["management", "inject_nmi"],
];

fn write_only(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "nodes", _, rest @ ..] => WRITE_ONLY.contains(&rest),
        _ => false,
    }
}

fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

fn read_only(method: &Method, path: &str) -> ApiError {
    ApiError::ReadOnly {
        method: method.to_string(),
        path: path.to_string(),
        instead: instead(method, path),
    }
}

/// The router's fallback: a path no route serves.
pub async fn unrouted(request: Request) -> ApiError {
    let (method, path) = (request.method(), request.uri().path());
    if is_write(method) && (path == "/v1" || path.starts_with("/v1/")) {
        read_only(method, path)
    } else if write_only(path) {
        ApiError::MethodNotAllowed {
            path: path.to_string(),
        }
    } else {
        ApiError::PathNotFound
    }
}

/// A routed path asked with a verb it does not serve.
pub async fn wrong_verb(request: Request) -> ApiError {
    let (method, path) = (request.method(), request.uri().path());
    if is_write(method) {
        read_only(method, path)
    } else {
        ApiError::MethodNotAllowed {
            path: path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_field_to_edit() {
        let put = Method::PUT;
        assert!(instead(&put, "/v1/nodes/n1/states/power").contains("`desired.power`"));
        assert!(instead(&put, "/v1/nodes/n1/states/provision").contains("`desired.provision`"));
        assert!(instead(&put, "/v1/nodes/n1/traits/CUSTOM_A").contains("`traits`"));
        assert!(
            instead(&put, "/v1/nodes/n1/management/boot_device").contains("`desired.boot_device`")
        );
        assert!(instead(&put, "/v1/nodes/n1/maintenance").contains("not declared"));
        assert!(instead(&Method::DELETE, "/v1/nodes/n1").contains("delete its `[[node]]`"));
    }

    #[test]
    fn only_paths_ironic_writes_to_are_write_only() {
        assert!(write_only("/v1/nodes/n1/states/power"));
        assert!(write_only("/v1/nodes/n1/states/provision/"));
        assert!(!write_only("/v1/nodes/n1/states"));
        assert!(!write_only("/v1/nodes/n1/states/console"));
        assert!(!write_only("/v1/nodes/n1/bogus"));
    }
}
