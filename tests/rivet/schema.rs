//! The committed JSON schemas match the Rust types.

use crate::support::root;

#[test]
fn committed_schemas_are_up_to_date() {
    let update = std::env::var_os("RIVET_UPDATE_SCHEMA").is_some();
    for (name, generated) in rivet::config::schema::all() {
        let path = root().join("schema").join(name);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schema/{name} is stale: run `cargo run -- schema --out schema` (or RIVET_UPDATE_SCHEMA=1 cargo test) and commit it"
        );
    }
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
