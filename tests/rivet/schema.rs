//! The committed JSON schemas match the Rust types.

use crate::support::root;

#[test]
fn committed_schemas_are_up_to_date() {
    // With RIVET_UPDATE_SCHEMA=1 a stale schema is rewritten, and the test
    // still fails: it passes only on schemas that were already current.
    let update = std::env::var("RIVET_UPDATE_SCHEMA").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for (name, generated) in rivet::config::schema::all() {
        let path = root().join("schema").join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            if update {
                std::fs::write(&path, &generated).unwrap();
            }
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale: {}; {}",
        stale.join(", "),
        if update {
            "rewritten now: review and commit them"
        } else {
            "run `cargo run -- schema --out schema` (or RIVET_UPDATE_SCHEMA=1 cargo test) and commit them"
        }
    );
}

#[test]
fn node_schema_lists_node_keys_and_forbids_others() {
    let (_, text) = rivet::config::schema::all()
        .into_iter()
        .find(|(n, _)| *n == "node.schema.json")
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let node = &schema["$defs"]["NodeDecl"];
    assert_eq!(node["additionalProperties"], serde_json::json!(false));
    for key in [
        "name",
        "driver",
        "bmc",
        "desired",
        "deploy_steps",
        "boot_interface",
    ] {
        assert!(
            node["properties"].get(key).is_some(),
            "no `{key}` in the node schema"
        );
    }
    let bmc = &schema["$defs"]["BmcDecl"]["properties"];
    assert!(bmc.get("password").is_none());
    assert!(bmc.get("password_env").is_some());
}
