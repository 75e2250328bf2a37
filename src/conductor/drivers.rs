//! Hardware types as `baremetal driver list` and `GET /v1/drivers` show
//! them: shared by `rivet driver` and the API.

use serde_json::{Map, Value, json};

use crate::model::fleet::Fleet;
use crate::model::hardware::HardwareType;
use crate::vocab::InterfaceType;

/// The enabled hardware types, in the fleet's order.
pub fn enabled(fleet: &Fleet) -> impl Iterator<Item = &HardwareType> {
    fleet
        .types
        .iter()
        .filter(|t| fleet.hardware.enabled_types.contains(&t.name))
}

/// An enabled hardware type by name.
pub fn enabled_type<'a>(fleet: &'a Fleet, name: &str) -> Option<&'a HardwareType> {
    fleet
        .hardware_type(name)
        .filter(|t| fleet.hardware.enabled_types.contains(&t.name))
}

/// A hardware type as `GET /v1/drivers[?detail=true]` shows it (without links).
pub fn driver_json(fleet: &Fleet, hw: &HardwareType, detail: bool) -> Value {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(hw.name));
    doc.insert("hosts".into(), json!([fleet.conductor.host]));
    doc.insert("type".into(), json!("dynamic"));
    if detail {
        for kind in InterfaceType::ALL {
            doc.insert(kind.default_key(), json!(fleet.type_default(hw, kind)));
            doc.insert(kind.enabled_key(), json!(fleet.type_enabled(hw, kind)));
        }
    }
    Value::Object(doc)
}
