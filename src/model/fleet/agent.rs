//! Deploys through ironic-python-agent: the agent's ramdisk as a node or a
//! hardware type declares it (`deploy_kernel` + `deploy_ramdisk`, or
//! `deploy_iso`), the URLs the agent and BMCs fetch, and what a node whose
//! deploy interface needs the agent must declare. Which nodes those are is
//! read from the catalog's capabilities, never from names.

use std::sync::Arc;

use super::{Builder, loc};
use crate::config::raw::{HardwareTypeDecl, NodeDecl};
use crate::config::secret::url_secrets;
use crate::config::spanned::Sp;
use crate::diag::{Loc, Problem, SourceFile};
use crate::model::catalog::Capabilities;
use crate::model::hardware::HardwareType;
use crate::model::interface::InterfaceType;
use crate::model::node::{AgentImage, DeployRamdisk, ImageChecksum, Node, ProvisionTarget};

/// The three `deploy_*` keys of a node or a hardware type.
pub(super) struct RamdiskKeys<'a> {
    pub kernel: Option<&'a Sp<String>>,
    pub ramdisk: Option<&'a Sp<String>>,
    pub iso: Option<&'a Sp<String>>,
}

impl<'a> RamdiskKeys<'a> {
    pub fn of_node(decl: &'a NodeDecl) -> Self {
        Self {
            kernel: decl.deploy_kernel.as_ref(),
            ramdisk: decl.deploy_ramdisk.as_ref(),
            iso: decl.deploy_iso.as_ref(),
        }
    }

    pub fn of_type(decl: &'a HardwareTypeDecl) -> Self {
        Self {
            kernel: decl.deploy_kernel.as_ref(),
            ramdisk: decl.deploy_ramdisk.as_ref(),
            iso: decl.deploy_iso.as_ref(),
        }
    }
}

/// Why a URL cannot be fetched as given: the message's end, the label, the help.
struct BadUrl {
    what: String,
    label: &'static str,
    help: String,
}

impl BadUrl {
    /// The problem of the URL at `at`, whose message begins with `subject`.
    fn problem(self, code: &'static str, subject: String, at: &Loc) -> Problem {
        Problem::new(code, format!("{subject} {}", self.what))
            .at(at, self.label)
            .help(self.help)
    }
}

/// Check a URL the agent or a BMC downloads: `http://` or `https://` with a
/// host, and no credentials (the loader has blanked them already, so they
/// show as `user:****@` or `?token=****`, and are never quoted).
fn fetchable_url(text: &str, example: &str) -> Result<(), BadUrl> {
    let write = format!("write an `http://` or `https://` URL, e.g. `{example}`");
    if !url_secrets(text).is_empty() {
        return Err(BadUrl {
            what: "carries credentials".to_string(),
            label: "credentials in a URL",
            help: "remove the credentials: the agent and BMCs download it without any, so serve it where no password or token is needed (a provisioning network)".to_string(),
        });
    }
    let url = url::Url::parse(text).map_err(|e| BadUrl {
        what: format!("is not a URL ({e})"),
        label: "not a URL",
        help: write.clone(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadUrl {
            what: "carries credentials".to_string(),
            label: "credentials in a URL",
            help: "remove `user:password@`: the agent and BMCs download it without credentials"
                .to_string(),
        });
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(BadUrl {
            what: format!("is a `{}:` URL, not `http://` or `https://`", url.scheme()),
            label: "not http or https",
            help: format!(
                "{write}: the agent and BMCs download it themselves, and rivet serves no files"
            ),
        });
    }
    Ok(())
}

impl Builder {
    /// The ramdisks one node or hardware type declares (`whose` names it in
    /// messages), each URL checked; a kernel without its ramdisk, or the
    /// other way round, is a problem and gives neither.
    pub(super) fn declared_ramdisks(
        &mut self,
        file: &Arc<SourceFile>,
        whose: &str,
        keys: RamdiskKeys<'_>,
    ) -> Vec<DeployRamdisk> {
        let mut ok = true;
        for (key, value, example) in [
            ("deploy_kernel", keys.kernel, "http://10.0.0.2/ipa.kernel"),
            (
                "deploy_ramdisk",
                keys.ramdisk,
                "http://10.0.0.2/ipa.initramfs",
            ),
            ("deploy_iso", keys.iso, "http://10.0.0.2/ipa.iso"),
        ] {
            let Some(value) = value else { continue };
            if let Err(bad) = fetchable_url(value.value(), example) {
                ok = false;
                self.push(bad.problem(
                    "rivet::deploy_ramdisk::url",
                    format!("{whose}: `{key}`"),
                    &loc(file, value),
                ));
            }
        }
        let network = match (keys.kernel, keys.ramdisk) {
            (Some(kernel), Some(ramdisk)) => Some(DeployRamdisk::Network {
                kernel: kernel.value().clone(),
                ramdisk: ramdisk.value().clone(),
            }),
            (None, None) => None,
            (Some(given), None) | (None, Some(given)) => {
                ok = false;
                let (has, lacks, line) = if keys.kernel.is_some() {
                    (
                        "deploy_kernel",
                        "deploy_ramdisk",
                        "deploy_ramdisk = \"http://…/ipa.initramfs\"",
                    )
                } else {
                    (
                        "deploy_ramdisk",
                        "deploy_kernel",
                        "deploy_kernel = \"http://…/ipa.kernel\"",
                    )
                };
                self.push(
                    Problem::new(
                        "rivet::deploy_ramdisk::incomplete",
                        format!("{whose}: `{has}` is given without `{lacks}`"),
                    )
                    .at(&loc(file, given), format!("no `{lacks}` beside it"))
                    .help(format!(
                        "the agent boots from the network as a kernel and its ramdisk, built together: add `{line}` here (one given here replaces both of the hardware type's)"
                    )),
                );
                None
            }
        };
        let iso = keys.iso.map(|iso| DeployRamdisk::VirtualMedia {
            iso: iso.value().clone(),
        });
        if !ok {
            return Vec::new();
        }
        network.into_iter().chain(iso).collect()
    }

    /// The ramdisk `node` boots the agent from: of the node's own and its
    /// hardware type's, the one whose form its boot interface boots.
    pub(super) fn deploy_ramdisk(
        &self,
        node: &Node,
        hw: &HardwareType,
        own: Vec<DeployRamdisk>,
    ) -> Option<DeployRamdisk> {
        let virtual_media = self.boots_virtual_media(node);
        DeployRamdisk::over(own, &hw.deploy_ramdisks)
            .into_iter()
            .find(|r| r.is_virtual_media() == virtual_media)
    }

    fn boots_virtual_media(&self, node: &Node) -> bool {
        self.catalog
            .capabilities(
                InterfaceType::Boot,
                node.interfaces.get(InterfaceType::Boot),
            )
            .contains(Capabilities::VIRTUAL_MEDIA)
    }

    /// What a node whose deploy interface needs the agent must declare,
    /// each thing missing one problem: always a port (the agent looks its
    /// node up by MAC) and a ramdisk its boot interface boots; to be active,
    /// an image the agent can download, its checksum and its disk format.
    /// The image it writes, when the node is to be active and has all.
    pub(super) fn agent_deploy(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        node: &Node,
    ) -> Option<AgentImage> {
        let deploy = node.interfaces.get(InterfaceType::Deploy);
        if !self
            .catalog
            .capabilities(InterfaceType::Deploy, deploy)
            .contains(Capabilities::NEEDS_AGENT)
        {
            return None;
        }
        let name = &node.name;
        let through = format!("deploys through the agent (`{deploy}` deploy interface)");
        if node.ports.is_empty() {
            self.push(
                Problem::new(
                    "rivet::agent::no_port",
                    format!("node `{name}` {through} but declares no port"),
                )
                .at(&node.at, "no [[node.ports]]")
                .help(
                    "the agent finds its node by the MAC of a NIC: add after this node\n\
                     [[node.ports]]\n\
                     address = \"52:54:00:12:34:56\"",
                ),
            );
        }
        if node.deploy_ramdisk.is_none() {
            let boot = node.interfaces.get(InterfaceType::Boot);
            let help = if self.boots_virtual_media(node) {
                format!(
                    "its boot interface `{boot}` inserts the agent as virtual media: add `deploy_iso = \"http://…/ipa.iso\"` to this node or to its [[hardware_type]]"
                )
            } else {
                format!(
                    "its boot interface `{boot}` boots the agent from the network: add to this node or to its [[hardware_type]]\n\
                     deploy_kernel = \"http://…/ipa.kernel\"\n\
                     deploy_ramdisk = \"http://…/ipa.initramfs\""
                )
            };
            self.push(
                Problem::new(
                    "rivet::agent::no_deploy_ramdisk",
                    format!(
                        "node `{name}` {through} but declares no agent ramdisk its boot interface boots"
                    ),
                )
                .at(&node.at, "no deploy ramdisk")
                .help(help),
            );
        }
        if node.desired.provision != ProvisionTarget::Active {
            return None;
        }
        self.agent_image(file, decl, node, &through)
    }

    /// The image of an agent deploy, or the problem for each thing missing.
    fn agent_image(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        node: &Node,
        through: &str,
    ) -> Option<AgentImage> {
        let name = &node.name;
        let Some((table, instance)) = decl.instance.as_ref().zip(node.instance.as_ref()) else {
            self.push(
                Problem::new(
                    "rivet::agent::instance",
                    format!("node `{name}` is to be active and {through} but declares no instance"),
                )
                .at(&node.at, "no instance")
                .help("add the image the agent writes, its sha256 and its format:\ninstance = { image = \"http://…/disk.qcow2\", checksum = \"sha256:<hex>\", disk_format = \"qcow2\" }"),
            );
            return None;
        };
        let table_at = loc(file, table);
        let missing = |key: &str, help: &str| {
            Problem::new(
                "rivet::agent::instance",
                format!(
                    "node `{name}` is to be active and {through} but its instance has no `{key}`"
                ),
            )
            .at(&table_at, format!("no `{key}`"))
            .help(help.to_string())
        };
        let mut problems = Vec::new();
        if instance.image.is_none() {
            problems.push(missing(
                "image",
                "add the whole-disk image the agent writes to `instance`: `image = \"http://…/disk.qcow2\"`",
            ));
        }
        if instance.checksum.is_none() {
            problems.push(missing(
                "checksum",
                "add the image's digest, as `sha256sum IMAGE` prints it, to `instance`: `checksum = \"sha256:<hex>\"`",
            ));
        }
        if instance.disk_format.is_none() {
            problems.push(missing(
                "disk_format",
                "add the image's format to `instance`: `disk_format = \"qcow2\"` (or `\"raw\"`)",
            ));
        }
        let raw = table.value();
        if let Some(image) = &raw.image
            && let Err(bad) = fetchable_url(image.value(), "http://10.0.0.2/ubuntu-24.04.qcow2")
        {
            problems.push(bad.problem(
                "rivet::agent::image_url",
                format!("node `{name}`: the image the agent downloads"),
                &loc(file, image),
            ));
        }
        let mut partition = [&raw.kernel, &raw.ramdisk].into_iter().flatten();
        if let Some(first) = partition.next() {
            let mut problem = Problem::new(
                "rivet::agent::partition_image",
                format!(
                    "node `{name}` {through}, which writes whole-disk images: the instance's `kernel` and `ramdisk` are for partition images"
                ),
            )
            .at(&loc(file, first), "a partition image's kernel or ramdisk")
            .help("give a whole-disk image (with its partition table and boot loader) as `image` and remove `kernel` and `ramdisk` from `instance`");
            for other in partition {
                problem = problem.also(&loc(file, other), "and this");
            }
            problems.push(problem);
        }
        if !problems.is_empty() {
            self.problems.extend(problems);
            return None;
        }
        Some(AgentImage {
            url: instance.image.clone()?,
            disk_format: instance.disk_format?,
            checksum: ImageChecksum::parse(instance.checksum.as_deref()?).ok()?,
            root_device: instance.root_device.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_agent_fetches_are_http_or_https_without_credentials() {
        let ok = |t: &str| fetchable_url(t, "x").is_ok();
        assert!(ok("http://10.0.0.2/ipa.kernel"));
        assert!(ok("https://images.example/ubuntu.qcow2"));
        for bad in [
            "file:///srv/ipa.kernel",
            "ftp://10.0.0.2/ipa.kernel",
            "10.0.0.2/ipa.kernel",
            "http://admin:*******@10.0.0.2/ipa.kernel",
            "http://*****@10.0.0.2/ipa.kernel",
            "https://images.example/a.qcow2?token=*****",
            "",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
