//! `GET /v1/drivers[?detail=true][&type=dynamic]`, `/v1/drivers/{name}`,
//! `/v1/drivers/{name}/properties`: the enabled hardware types, as
//! `rivet driver list --format json` shows them, plus links.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Json;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::nodes::{only_known, truthy};
use super::version::{BaseUrl, links};
use crate::conductor::drivers::{self as conductor_drivers, driver_json};
use crate::model::fleet::Fleet;
use crate::model::hardware::{BmcFamily, HardwareType};

/// An enabled hardware type by name.
pub fn enabled_type<'a>(fleet: &'a Fleet, name: &str) -> ApiResult<&'a HardwareType> {
    conductor_drivers::enabled_type(fleet, name)
        .ok_or_else(|| ApiError::DriverNotFound(name.to_string()))
}

fn document(fleet: &Fleet, hw: &HardwareType, detail: bool, base: &str) -> Value {
    let mut doc = driver_json(fleet, hw, detail);
    if let Value::Object(map) = &mut doc {
        map.insert("links".into(), links(base, &format!("drivers/{}", hw.name)));
        map.insert(
            "properties".into(),
            links(base, &format!("drivers/{}/properties", hw.name)),
        );
    }
    doc
}

/// `GET /v1/drivers`
pub async fn list(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Value>> {
    only_known(&params, &["detail", "type"])?;
    let fleet = state.conductor.fleet();
    let detail = truthy(params.get("detail"), "detail")?;
    // Every hardware type is what Ironic calls dynamic; classic drivers are gone.
    let dynamic = match params.get("type").map(String::as_str) {
        None | Some("dynamic") => true,
        Some("classic") => false,
        Some(_) => {
            return Err(ApiError::BadQuery(
                "\"type\" filter must be one of \"classic\" or \"dynamic\", if specified.".into(),
            ));
        }
    };
    let drivers: Vec<Value> = conductor_drivers::enabled(&fleet)
        .filter(|_| dynamic)
        .map(|hw| document(&fleet, hw, detail, &base))
        .collect();
    Ok(Json(json!({ "drivers": drivers })))
}

/// `GET /v1/drivers/{name}`
pub async fn show(
    State(state): State<ApiState>,
    BaseUrl(base): BaseUrl,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleet = state.conductor.fleet();
    let hw = enabled_type(&fleet, &name)?;
    Ok(Json(document(&fleet, hw, true, &base)))
}

/// `GET /v1/drivers/{name}/properties`: what a node of this type declares
/// for its BMC, as Ironic lists a driver's `driver_info` keys.
pub async fn properties(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleet = state.conductor.fleet();
    let hw = enabled_type(&fleet, &name)?;
    let family = hw.bmc_family(&fleet.types);
    let mut props = BTreeMap::new();
    let schemes = match family {
        BmcFamily::Ipmi => "ipmi://host[:port]",
        BmcFamily::Redfish => {
            "redfish://, redfish+http://, redfish+https://host/redfish/v1/Systems/ID or redfish-virtualmedia://"
        }
        BmcFamily::Fake => "fake://name[?latency=…&fail=…]",
        BmcFamily::Any => "any BMC URL rivet knows",
    };
    let required = if family == BmcFamily::Fake || family == BmcFamily::Any {
        "Optional"
    } else {
        "Required"
    };
    props.insert(
        "bmc.address",
        format!("The BMC as a URL: {schemes}. {required}."),
    );
    if family != BmcFamily::Fake {
        props.insert("bmc.username", "User name on the BMC. Optional.".into());
        props.insert(
            "bmc.password_env",
            "Environment variable holding the BMC password (or bmc.password_file). Optional."
                .into(),
        );
        props.insert(
            "bmc.password_file",
            "File holding the BMC password (or bmc.password_env). Optional.".into(),
        );
    }
    if matches!(family, BmcFamily::Redfish | BmcFamily::Any) {
        props.insert(
            "bmc.verify_tls",
            "Verify the BMC's TLS certificate; default true. Optional.".into(),
        );
        props.insert(
            "bmc.ca_file",
            "CA bundle to verify the BMC's certificate with. Optional.".into(),
        );
    }
    if matches!(family, BmcFamily::Ipmi | BmcFamily::Any) {
        props.insert(
            "bmc.cipher_suite",
            "IPMI cipher suite; unset lets ipmitool choose. Optional.".into(),
        );
    }
    Ok(Json(json!(props)))
}
