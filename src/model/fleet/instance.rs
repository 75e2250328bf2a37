//! A node's `instance`: its checksum and root device hints checked on every
//! node that gives them, whatever its deploy interface, and the instance
//! as the model keeps it; a deploy interface that boots an image needs one
//! to boot.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Builder, loc};
use crate::config::raw::{NodeDecl, RootDeviceDecl, SizeHint};
use crate::config::spanned::Sp;
use crate::diag::{Problem, SourceFile, shorten};
use crate::model::catalog::Capabilities;
use crate::model::interface::InterfaceType;
use crate::model::node::{
    BadChecksum, CHECKSUM_ALGORITHMS, ImageChecksum, Instance, Node, ProvisionTarget,
};

/// The comparison operators Ironic accepts before a number in a hint.
const NUMBER_OPERATORS: [&str; 7] = ["==", "!=", ">=", "<=", "=", ">", "<"];

impl Builder {
    /// The node's `instance` as the model keeps it, each given field checked.
    pub(super) fn instance_of(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
    ) -> Option<Instance> {
        let instance = decl.instance.as_ref()?.value();
        let node = decl.name.value();
        if let Some(checksum) = &instance.checksum
            && let Err(bad) = ImageChecksum::parse(checksum.value())
        {
            self.push(checksum_problem(file, node, checksum, &bad));
        }
        let root_device = instance
            .root_device
            .as_ref()
            .map(|hints| self.root_device(file, node, hints.value()));
        let text = |field: &Option<Sp<String>>| field.as_ref().map(|f| f.value().clone());
        Some(Instance {
            image: text(&instance.image),
            checksum: text(&instance.checksum),
            kernel: text(&instance.kernel),
            ramdisk: text(&instance.ramdisk),
            root_device,
            disk_format: instance.disk_format.as_ref().map(|f| *f.value()),
            uuid: instance.uuid.clone(),
        })
    }

    /// Root device hints by name, as Ironic keeps them; a `size` that is no
    /// positive number of GiB and an empty string hint are problems.
    fn root_device(
        &mut self,
        file: &Arc<SourceFile>,
        node: &str,
        hints: &RootDeviceDecl,
    ) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if let Some(size) = &hints.size {
            if !is_size_hint(size.value()) {
                let shown = match size.value() {
                    SizeHint::Gib(n) => n.to_string(),
                    SizeHint::Expression(text) => format!("\"{text}\""),
                };
                self.push(
                    Problem::new(
                        "rivet::instance::root_device",
                        format!(
                            "node `{node}`: root device hint `size = {}` is not a size in GiB",
                            shorten(&shown, 40)
                        ),
                    )
                    .at(&loc(file, size), "not a positive number of GiB")
                    .help("write a whole number of GiB above 0, e.g. `size = 100`, or an operator and one, e.g. `size = \">= 100\"` (`==`, `!=`, `>=`, `<=`, `>`, `<`; alternatives: `\"<or> 100 <or> 200\"`)"),
                );
            }
            let value = match size.value() {
                SizeHint::Gib(n) => json!(n),
                SizeHint::Expression(text) => json!(text),
            };
            out.insert("size".to_string(), value);
        }
        if let Some(rotational) = hints.rotational {
            out.insert("rotational".to_string(), json!(rotational));
        }
        for (name, hint) in hints.texts() {
            let Some(hint) = hint else { continue };
            if hint.value().trim().is_empty() {
                self.push(
                    Problem::new(
                        "rivet::instance::root_device",
                        format!("node `{node}`: root device hint `{name}` is empty"),
                    )
                    .at(&loc(file, hint), "empty hint")
                    .help(format!(
                        "give the value the disk must have, e.g. `{name} = \"{}\"`, or remove `{name}`",
                        hint_example(name)
                    )),
                );
            }
            out.insert(name.to_string(), json!(hint.value()));
        }
        out
    }

    /// A deploy interface that boots an image needs to be told which one.
    pub(super) fn instance_missing(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        node: &Node,
    ) {
        if node.desired.provision != ProvisionTarget::Active {
            return;
        }
        let deploy = node.interfaces.get(InterfaceType::Deploy);
        let boots = self
            .catalog
            .capabilities(InterfaceType::Deploy, deploy)
            .contains(Capabilities::BOOTS_TO_DEPLOY);
        if !boots {
            return;
        }
        let has_boot_media = node
            .instance
            .as_ref()
            .is_some_and(|i| i.image.is_some() || (i.kernel.is_some() && i.ramdisk.is_some()));
        if !has_boot_media {
            let at = decl
                .desired
                .provision
                .as_ref()
                .map_or_else(|| node.at.clone(), |p| loc(file, p));
            self.push(
                Problem::new(
                    "rivet::node::instance_missing",
                    format!("node `{}` is to be active with the `{deploy}` deploy interface but declares nothing to boot", node.name),
                )
                .at(&at, "needs an instance")
                .help("add `instance = { image = \"http://…/boot.iso\" }` (or `kernel` and `ramdisk`)"),
            );
        }
    }
}

fn checksum_problem(
    file: &Arc<SourceFile>,
    node: &str,
    checksum: &Sp<String>,
    bad: &BadChecksum,
) -> Problem {
    let text = checksum.value().trim();
    let algorithms = CHECKSUM_ALGORITHMS
        .iter()
        .map(|(algo, len)| format!("`{algo}:` and {len} hex digits"))
        .collect::<Vec<_>>()
        .join(" or ");
    let (message, label, help) = match bad {
        BadChecksum::NoAlgorithm { fits: Some(algo) } => (
            format!("node `{node}`: the checksum does not say its algorithm"),
            "no `algo:` before the hex",
            // The whole value, so the line can be copied: a digest of
            // a known length is short enough to show.
            format!("name the algorithm before the hex: checksum = \"{algo}:{text}\""),
        ),
        BadChecksum::NoAlgorithm { fits: None } => (
            format!(
                "node `{node}`: checksum `{}` is not `algo:hex`",
                shorten(text, 40)
            ),
            "not a checksum",
            format!("write the algorithm and the image's digest: {algorithms}, e.g. `sha256:9f86d0…`"),
        ),
        BadChecksum::Md5 => (
            format!("node `{node}`: md5 checksums are refused"),
            "md5",
            "ironic-python-agent refuses md5 by default (`md5_enabled = False`: md5 is broken, an image can be forged to match): give its sha256 (`sha256sum IMAGE`) as `checksum = \"sha256:<hex>\"`".to_string(),
        ),
        BadChecksum::UnknownAlgorithm(algo) => (
            format!(
                "node `{node}`: checksum algorithm `{}` is not one the agent verifies",
                shorten(algo, 20)
            ),
            "unknown algorithm",
            format!("use {algorithms}"),
        ),
        BadChecksum::BadDigest { algo, hex_len } => (
            format!("node `{node}`: the {algo} digest is not {hex_len} hex digits"),
            "wrong digest",
            format!(
                "a {algo} digest is {hex_len} hex digits (0-9, a-f, either case), as `{algo}sum IMAGE` prints it"
            ),
        ),
    };
    Problem::new("rivet::instance::checksum", message)
        .at(&loc(file, checksum), label)
        .help(help)
}

/// Whether a `size` hint is one Ironic accepts: a positive number of GiB,
/// as such or as a string, after one of its comparison operators, or
/// alternatives joined by `<or>`.
fn is_size_hint(size: &SizeHint) -> bool {
    let positive = |text: &str| text.trim().parse::<u64>().is_ok_and(|n| n > 0);
    match size {
        SizeHint::Gib(n) => *n > 0,
        SizeHint::Expression(text) => {
            let text = text.trim();
            if let Some(rest) = text.strip_prefix("<or>") {
                return rest.split("<or>").all(positive);
            }
            let number = NUMBER_OPERATORS
                .iter()
                .find_map(|op| text.strip_prefix(op))
                .unwrap_or(text);
            positive(number)
        }
    }
}

fn hint_example(name: &str) -> &'static str {
    match name {
        "model" => "PERC H730P",
        "vendor" => "samsung",
        "serial" => "S3EVNX0J123456",
        "wwn" | "wwn_with_extension" => "0x4000cca77fc4dba1",
        "wwn_vendor_extension" => "0x8b0e1de5",
        "name" => "/dev/sda",
        "hctl" => "1:0:0:0",
        _ => "pci-0000:00:1f.2-ata-1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::InstanceDecl;

    fn decl_of(text: &str) -> InstanceDecl {
        toml::from_str(text).expect("an instance table")
    }

    #[test]
    fn size_hints_are_positive_gib_with_ironic_operators() {
        let expr = |s: &str| SizeHint::Expression(s.to_string());
        for ok in [
            SizeHint::Gib(100),
            expr("100"),
            expr(">= 100"),
            expr("<100"),
            expr("== 8"),
            expr("!= 4"),
            expr("<or> 100 <or> 200"),
        ] {
            assert!(is_size_hint(&ok), "{ok:?}");
        }
        for bad in [
            SizeHint::Gib(0),
            SizeHint::Gib(-1),
            expr(""),
            expr("big"),
            expr(">= "),
            expr("100GiB"),
            expr("<or> 100 <or>"),
            expr("=> 100"),
        ] {
            assert!(!is_size_hint(&bad), "{bad:?}");
        }
    }

    #[test]
    fn root_device_hints_keep_their_types() {
        let decl =
            decl_of("root_device = { size = \">= 100\", rotational = false, serial = \"S3EV\" }");
        let hints = decl.root_device.unwrap();
        assert!(
            matches!(hints.size.as_ref().map(|s| s.value()), Some(SizeHint::Expression(e)) if e == ">= 100")
        );
        assert_eq!(hints.rotational, Some(false));
        assert_eq!(
            hints.serial.as_ref().map(|s| s.value().as_str()),
            Some("S3EV")
        );
    }
}
