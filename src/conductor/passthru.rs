//! Vendor passthru, node and driver, with Ironic's rules: the method must
//! exist, accept the verb and get its required arguments; a method that
//! needs the exclusive lock meets a busy node with `Locked`; a sync method
//! answers with its return value, an async one is accepted at once while
//! the call goes on in the background (under the node lock) and its result
//! is recorded in the node's history. Knows nothing of HTTP: the API turns
//! these answers and errors into Ironic's status codes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::Conductor;
use crate::driver::DriverError;
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::fleet::Fleet;
use crate::model::hardware::HardwareType;
use crate::model::node::Node;
use crate::model::step::PassthruMethod;
use crate::reconcile::now;
use crate::store::Write;
use crate::store::records::{Event, Outcome};
use crate::vocab::InterfaceType;

/// Which passthru a call went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Node,
    Driver,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Driver => "driver",
        }
    }
}

/// Why a call was refused or failed.
#[derive(Debug, PartialEq)]
pub enum PassthruError {
    /// No such method on the node's (or driver's) vendor interface.
    NoHandler(String),
    /// The method does not accept this verb.
    WrongVerb { method: String, verb: String },
    /// A required argument is missing (or null).
    MissingArgument { arg: String, method: String },
    /// The method needs the node's exclusive lock, which another holds.
    Locked { node: String, host: String },
    /// The driver's own error.
    Driver(DriverError),
}

impl From<DriverError> for PassthruError {
    fn from(e: DriverError) -> Self {
        Self::Driver(e)
    }
}

/// What a call answered.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A sync method's return value.
    Returned(Value),
    /// An async method runs in the background; its result goes to history.
    Accepted,
}

/// Check a call against the declared methods, in Ironic's order (after the
/// method name and the body, which the caller checks).
pub fn check<'a>(
    methods: &'a [PassthruMethod],
    name: &str,
    verb: &str,
    args: &Map<String, Value>,
) -> Result<&'a PassthruMethod, PassthruError> {
    let method = methods
        .iter()
        .find(|m| m.method == name)
        .ok_or_else(|| PassthruError::NoHandler(name.to_string()))?;
    if !method.http_methods.iter().any(|v| v == verb) {
        return Err(PassthruError::WrongVerb {
            method: name.to_string(),
            verb: verb.to_string(),
        });
    }
    if let Some((arg, _)) = method
        .args
        .iter()
        .find(|(arg, info)| info.required && args.get(*arg).is_none_or(Value::is_null))
    {
        return Err(PassthruError::MissingArgument {
            arg: arg.clone(),
            method: name.to_string(),
        });
    }
    Ok(method)
}

/// Ironic's listing of methods; the node listing adds the lock flag.
pub fn listing(methods: &[PassthruMethod], scope: Scope) -> Value {
    let map: Map<String, Value> = methods
        .iter()
        .map(|m| {
            let mut doc = json!({
                "http_methods": m.http_methods,
                "async": m.is_async,
                "description": m.description,
                "attach": m.attach,
            });
            if scope == Scope::Node {
                doc["require_exclusive_lock"] = json!(m.require_exclusive_lock);
            }
            (m.method.clone(), doc)
        })
        .collect();
    Value::Object(map)
}

/// The methods a node's vendor interface offers.
pub fn node_methods<'a>(fleet: &'a Fleet, node: &Node) -> &'a [PassthruMethod] {
    fleet
        .interface_of(node, InterfaceType::Vendor)
        .map_or(&[], |v| &v.passthru[..])
}

/// The interface a hardware type's driver-level calls go through, when it
/// has driver-level methods: its default vendor interface, if a plugin.
pub fn driver_vendor<'a>(fleet: &'a Fleet, hw: &HardwareType) -> Option<&'a InterfaceImpl> {
    let name = fleet.type_default(hw, InterfaceType::Vendor)?;
    fleet
        .catalog
        .get(InterfaceType::Vendor, &name)
        .filter(|imp| matches!(imp.support, Support::Exec { .. }))
}

/// The methods of a hardware type's driver-level passthru.
pub fn driver_methods<'a>(fleet: &'a Fleet, hw: &HardwareType) -> &'a [PassthruMethod] {
    driver_vendor(fleet, hw).map_or(&[][..], |v| &v.passthru[..])
}

/// What a finished call returned, as history and logs record it.
fn result_detail(result: &Result<Value, DriverError>) -> (Outcome, String) {
    match result {
        Ok(v) => (Outcome::Succeeded, v.to_string()),
        Err(e) => (Outcome::Failed, e.message.clone()),
    }
}

impl Conductor {
    /// Call `method` on a declared node's vendor interface.
    pub async fn node_passthru(
        &self,
        fleet: Arc<Fleet>,
        node: Arc<Node>,
        name: &str,
        verb: &str,
        args: Map<String, Value>,
    ) -> Result<Answer, PassthruError> {
        let (is_async, exclusive) = {
            let method = check(node_methods(&fleet, &node), name, verb, &args)?;
            (method.is_async, method.require_exclusive_lock)
        };
        let guard = if exclusive {
            let purpose = format!("vendor passthru {name}");
            match self.locks.try_lock(&node.name, &purpose) {
                Ok(guard) => Some(guard),
                Err(holder) => {
                    tracing::info!(node = %node.name, method = %name, %holder, "passthru refused: the node is locked");
                    return Err(PassthruError::Locked {
                        node: node.name.clone(),
                        host: fleet.conductor.host.clone(),
                    });
                }
            }
        } else {
            None
        };
        // In a cluster only the owner calls the BMC, and only under its lease.
        let permit = self
            .permits()
            .permit(&node)
            .map_err(|refused| DriverError::fenced(refused.0))?;
        let registry = self.registry();
        let journal = self.journal.clone();
        let (method, verb) = (name.to_string(), verb.to_string());
        let call = {
            let (registry, node, method) =
                (Arc::clone(&registry), Arc::clone(&node), method.clone());
            async move {
                let result = crate::driver::fence::within(
                    permit,
                    registry.passthru(&fleet, &node, &method, &verb, Value::Object(args)),
                )
                .await;
                drop(guard);
                result
            }
        };
        self.answer(is_async, call, move |result, took| async move {
            let (outcome, detail) = result_detail(&result);
            let mut event = Event::note(
                &node.name,
                &format!("vendor_passthru.{method}"),
                outcome,
                detail,
                now(),
            );
            event.protocol = Some(registry.protocol(&node).to_string());
            event.duration_ms = Some(took.as_millis() as u64);
            if let Err(e) = journal.commit(vec![Write::Event(event)]).await {
                tracing::error!(node = %node.name, %method, error = %e, "cannot record the result of an async passthru call");
            }
            tracing::info!(node = %node.name, %method, ok = result.is_ok(), "async passthru call finished");
        })
        .await
    }

    /// Call `method` on a hardware type's driver-level passthru.
    pub async fn driver_passthru(
        &self,
        fleet: &Fleet,
        hw: &HardwareType,
        name: &str,
        verb: &str,
        args: Map<String, Value>,
    ) -> Result<Answer, PassthruError> {
        let vendor = driver_vendor(fleet, hw)
            .cloned()
            .ok_or_else(|| PassthruError::NoHandler(name.to_string()))?;
        let is_async = check(&vendor.passthru, name, verb, &args)?.is_async;
        let registry = self.registry();
        let (method, verb) = (name.to_string(), verb.to_string());
        let call = {
            let method = method.clone();
            async move {
                registry
                    .driver_passthru(&vendor, &method, &verb, Value::Object(args))
                    .await
            }
        };
        let driver = hw.name.clone();
        self.answer(is_async, call, move |result, _| async move {
            let (_, detail) = result_detail(&result);
            // No node, so no history: the result goes to the log.
            tracing::info!(%driver, %method, ok = result.is_ok(), result = %detail, "async driver passthru call finished");
        })
        .await
    }

    /// Run a checked call: wait for a sync one, or start an async one in the
    /// background (shutdown waits for it) and hand its result to `done`.
    async fn answer<C, D, F>(
        &self,
        is_async: bool,
        call: C,
        done: D,
    ) -> Result<Answer, PassthruError>
    where
        C: Future<Output = Result<Value, DriverError>> + Send + 'static,
        D: FnOnce(Result<Value, DriverError>, Duration) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        if !is_async {
            return Ok(Answer::Returned(call.await?));
        }
        self.calls.spawn(async move {
            let started = Instant::now();
            let result = call.await;
            done(result, started.elapsed()).await;
        });
        Ok(Answer::Accepted)
    }

    /// Wait for async passthru calls in flight, so their results are
    /// recorded before the store closes.
    pub async fn wait_for_calls(&self) {
        self.calls.close();
        self.calls.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::builtin_interfaces;

    fn fake_methods() -> Vec<PassthruMethod> {
        builtin_interfaces()
            .into_iter()
            .find(|i| i.kind == InterfaceType::Vendor && i.name == "fake")
            .unwrap()
            .passthru
    }

    fn args(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn calls_are_checked_in_ironics_order() {
        let methods = fake_methods();
        let err = |m: &str, verb: &str, a: &str| check(&methods, m, verb, &args(a)).err();
        assert_eq!(
            err("nope", "POST", "{}"),
            Some(PassthruError::NoHandler("nope".into()))
        );
        assert_eq!(
            err("second_method", "PUT", "{}"),
            Some(PassthruError::WrongVerb {
                method: "second_method".into(),
                verb: "PUT".into()
            })
        );
        assert_eq!(
            err("third_method_sync", "POST", r#"{"bar": null}"#),
            Some(PassthruError::MissingArgument {
                arg: "bar".into(),
                method: "third_method_sync".into()
            })
        );
        let m = check(
            &methods,
            "third_method_sync",
            "POST",
            &args(r#"{"bar": "meow"}"#),
        )
        .unwrap();
        assert_eq!(m.method, "third_method_sync");
        assert!(check(&methods, "log_passthrough", "POST", &Map::new()).is_ok());
    }

    #[test]
    fn the_driver_listing_omits_the_lock_flag() {
        let methods = fake_methods();
        let node = listing(&methods, Scope::Node);
        let driver = listing(&methods, Scope::Driver);
        assert_eq!(
            node["fourth_method_shared_lock"]["require_exclusive_lock"],
            false
        );
        assert!(
            driver["fourth_method_shared_lock"]
                .get("require_exclusive_lock")
                .is_none()
        );
        assert_eq!(driver["third_method_sync"]["async"], false);
    }
}
