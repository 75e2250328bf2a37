//! JSON schemas for the declaration files, generated from the serde types.

use schemars::schema_for;

use super::raw::{DriverFile, NodeFile, RivetFile};

/// (file name under `schema/`, pretty JSON with a trailing newline).
pub fn all() -> Vec<(&'static str, String)> {
    let render = |schema: schemars::Schema| {
        let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
        text.push('\n');
        text
    };
    vec![
        ("rivet.schema.json", render(schema_for!(RivetFile))),
        ("node.schema.json", render(schema_for!(NodeFile))),
        ("driver.schema.json", render(schema_for!(DriverFile))),
    ]
}
