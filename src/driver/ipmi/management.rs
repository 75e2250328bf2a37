//! The ipmitool management interface: `chassis bootdev` and the boot flags
//! `chassis bootparam get 5` reads back.

use async_trait::async_trait;

use super::IpmiDriver;
use crate::driver::{DriverError, Management};
use crate::model::node::Node;
use crate::vocab::{BootDevice, BootMode};

impl IpmiDriver {
    /// `chassis bootparam get 5`, parsed.
    async fn boot_flags(&self, node: &Node) -> Result<BootFlags, DriverError> {
        let out = self
            .run(node, &["chassis", "bootparam", "get", "5"])
            .await?;
        BootFlags::parse(&out).ok_or_else(|| {
            DriverError::fatal(format!(
                "node {}: `ipmitool chassis bootparam get 5` has no boot device selector",
                node.name
            ))
        })
    }

    /// `chassis bootdev DEVICE options=…`. IPMI sets the boot mode only
    /// together with a device, so both go in one command.
    async fn bootdev(
        &self,
        node: &Node,
        device: &str,
        persistent: bool,
        uefi: bool,
    ) -> Result<(), DriverError> {
        let flags: Vec<&str> = [(persistent, "persistent"), (uefi, "efiboot")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let options = (!flags.is_empty()).then(|| format!("options={}", flags.join(",")));
        let mut command = vec!["chassis", "bootdev", device];
        command.extend(options.as_deref());
        self.run_change(node, &command).await.map(drop)
    }
}

#[async_trait]
impl Management for IpmiDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        Ok(self.boot_flags(node).await?.device)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        // `bootdev` without `efiboot` switches a UEFI node to legacy: keep
        // the declared mode (as Ironic keeps the node's boot mode).
        let uefi = node.desired.boot_mode == Some(BootMode::Uefi);
        self.bootdev(node, bootdev_name(device), persistent, uefi)
            .await?;
        // Only the device is compared: some BMCs (ipmi_sim among them) keep
        // the device but not the persistence.
        let now = self.boot_flags(node).await?.device;
        if now == Some(device) {
            Ok(())
        } else {
            Err(DriverError::fatal(format!(
                "node {}: set the boot device to {}, but the BMC reports {}",
                node.name,
                device.as_str(),
                now.map_or("no override", BootDevice::as_str)
            )))
        }
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(self.boot_flags(node).await?.mode())
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        // The mode is a flag of the boot device override: set it with the
        // declared device, or else the one in force (or none). Not read back:
        // see `BootFlags::mode`.
        let device = match node.desired.boot_device {
            Some(device) => Some(device),
            None => self.boot_flags(node).await?.device,
        };
        self.bootdev(
            node,
            device.map_or("none", bootdev_name),
            true,
            mode == BootMode::Uefi,
        )
        .await
    }
}

/// `ipmitool chassis bootdev` names.
fn bootdev_name(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "pxe",
        BootDevice::Disk => "disk",
        BootDevice::Cdrom => "cdrom",
        BootDevice::Bios => "bios",
    }
}

/// The boot flags `chassis bootparam get 5` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootFlags {
    /// The override in force; `None` for "No override" and devices rivet
    /// has no name for (floppy, safe mode, …).
    device: Option<BootDevice>,
    /// "Boot Flag Valid": the BMC applies these flags at the next boot.
    valid: bool,
    efi: bool,
}

impl BootFlags {
    fn parse(out: &str) -> Option<Self> {
        let selector = out
            .lines()
            .find_map(|line| line.split_once("Boot Device Selector :"))?
            .1
            .trim();
        // Ironic's table of ipmitool's selector texts.
        let device = match selector {
            "Force PXE" => Some(BootDevice::Pxe),
            "Force Boot from default Hard-Drive" => Some(BootDevice::Disk),
            "Force Boot from CD/DVD" => Some(BootDevice::Cdrom),
            "Force Boot into BIOS Setup" => Some(BootDevice::Bios),
            _ => None,
        };
        Some(Self {
            device,
            valid: out.contains("Boot Flag Valid"),
            efi: out.contains("BIOS EFI boot"),
        })
    }

    /// The boot mode, when the BMC says its flags are in force. Flags marked
    /// invalid carry a mode bit that means nothing: ipmi_sim, for one,
    /// always reports "Boot Flag Invalid" and legacy, whatever was set, so
    /// reading it as legacy would report a drift that is not there.
    fn mode(&self) -> Option<BootMode> {
        self.valid.then_some(if self.efi {
            BootMode::Uefi
        } else {
            BootMode::Bios
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTPARAM: &str = "Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: 0004000000
 Boot Flags :
   - Boot Flag Invalid
   - Options apply to only next boot
   - BIOS PC Compatible (legacy) boot
   - Boot Device Selector : Force PXE
   - BIOS verbosity : System Default
";

    #[test]
    fn boot_flags_read_the_selector_and_the_mode_only_when_valid() {
        let flags = BootFlags::parse(BOOTPARAM).unwrap();
        assert_eq!(flags.device, Some(BootDevice::Pxe));
        assert_eq!(flags.mode(), None, "invalid flags say nothing of the mode");
        let valid = BOOTPARAM
            .replace("Boot Flag Invalid", "Boot Flag Valid")
            .replace("BIOS PC Compatible (legacy) boot", "BIOS EFI boot")
            .replace("Force PXE", "Force Boot from default Hard-Drive");
        let flags = BootFlags::parse(&valid).unwrap();
        assert_eq!(flags.device, Some(BootDevice::Disk));
        assert_eq!(flags.mode(), Some(BootMode::Uefi));
        let none = BOOTPARAM.replace("Force PXE", "No override");
        assert_eq!(BootFlags::parse(&none).unwrap().device, None);
        assert_eq!(BootFlags::parse("Chassis Power is on"), None);
    }
}
