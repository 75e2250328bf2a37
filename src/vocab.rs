//! The words of the declaration format that every layer shares: interface
//! types, target states, boot devices and modes, step argument info.
//! Nothing here knows about files, spans or drivers.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One of Ironic's interface types.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    Bios,
    Boot,
    Console,
    Deploy,
    Firmware,
    Inspect,
    Management,
    Network,
    Power,
    Raid,
    Rescue,
    Storage,
    Vendor,
}

impl InterfaceType {
    /// Every type, in alphabetical order (the order output lists them in).
    pub const ALL: [InterfaceType; 13] = [
        Self::Bios,
        Self::Boot,
        Self::Console,
        Self::Deploy,
        Self::Firmware,
        Self::Inspect,
        Self::Management,
        Self::Network,
        Self::Power,
        Self::Raid,
        Self::Rescue,
        Self::Storage,
        Self::Vendor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Boot => "boot",
            Self::Console => "console",
            Self::Deploy => "deploy",
            Self::Firmware => "firmware",
            Self::Inspect => "inspect",
            Self::Management => "management",
            Self::Network => "network",
            Self::Power => "power",
            Self::Raid => "raid",
            Self::Rescue => "rescue",
            Self::Storage => "storage",
            Self::Vendor => "vendor",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Core interfaces must resolve to a real implementation on every node.
    pub fn is_core(self) -> bool {
        matches!(
            self,
            Self::Boot | Self::Deploy | Self::Management | Self::Network | Self::Power
        )
    }

    /// Ironic's tie-breaker between deploy steps of equal priority: the
    /// higher number runs first. Interfaces without steps rank 0.
    pub fn step_rank(self) -> u8 {
        match self {
            Self::Vendor => 7,
            Self::Power => 6,
            Self::Management => 5,
            Self::Firmware => 4,
            Self::Deploy => 3,
            Self::Bios => 2,
            Self::Raid => 1,
            _ => 0,
        }
    }

    /// The node key naming this interface, e.g. `boot_interface`.
    pub fn node_key(self) -> String {
        format!("{}_interface", self.as_str())
    }

    /// The `rivet.toml` key listing enabled implementations.
    pub fn enabled_key(self) -> String {
        format!("enabled_{}_interfaces", self.as_str())
    }

    /// The `rivet.toml` key naming the default implementation.
    pub fn default_key(self) -> String {
        format!("default_{}_interface", self.as_str())
    }

    /// The hardware-type key listing supported implementations.
    pub fn supported_key(self) -> String {
        format!("supported_{}_interfaces", self.as_str())
    }
}

impl fmt::Display for InterfaceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value for each interface type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerInterface<T>(pub [T; 13]);

impl<T> PerInterface<T> {
    pub fn get(&self, kind: InterfaceType) -> &T {
        &self.0[kind as usize]
    }

    pub fn get_mut(&mut self, kind: InterfaceType) -> &mut T {
        &mut self.0[kind as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (InterfaceType, &T)> {
        InterfaceType::ALL.into_iter().zip(self.0.iter())
    }

    pub fn from_fn(f: impl FnMut(InterfaceType) -> T) -> Self {
        Self(InterfaceType::ALL.map(f))
    }
}

/// Values many records share, each kept once for the life of the process
/// (there are few distinct ones: names and sets of names).
struct Interner<T: ?Sized>(OnceLock<Mutex<HashSet<Arc<T>>>>);

impl<T: ?Sized + Hash + Eq> Interner<T> {
    const fn new() -> Self {
        Self(OnceLock::new())
    }

    fn intern(&self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let mut known = self
            .0
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = known.get(value) {
            return Arc::clone(shared);
        }
        let shared = make();
        known.insert(Arc::clone(&shared));
        shared
    }
}

/// A short name many nodes share: a hardware type or an interface
/// implementation (`redfish`, `pxe`, `no-vendor`, …). Interned, because a
/// fleet has a few dozen distinct names and 14 of them on every node: each
/// node holds shared pointers instead of its own copies (10,000 nodes keep
/// ~6 MB less this way).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(text: &str) -> Self {
        static NAMES: Interner<str> = Interner::new();
        Self(NAMES.intern(text, || Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name::new(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The implementation recorded for each interface type, where one is.
/// Interned as a whole: nodes of one hardware type share one set, so a
/// stored node record holds a pointer instead of 13 names (~2 KB less than
/// a map of owned strings). Serialized as the map `{"boot": "pxe", …}`
/// with only the recorded types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceNames(Option<Arc<PerInterface<Option<Name>>>>);

impl InterfaceNames {
    fn interned(set: PerInterface<Option<Name>>) -> Self {
        if set.0.iter().all(Option::is_none) {
            return Self(None);
        }
        static SETS: Interner<PerInterface<Option<Name>>> = Interner::new();
        Self(Some(SETS.intern(&set, || Arc::new(set.clone()))))
    }

    pub fn get(&self, kind: InterfaceType) -> Option<&Name> {
        self.0.as_ref()?.get(kind).as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = (InterfaceType, &Name)> {
        self.0
            .iter()
            .flat_map(|set| set.iter())
            .filter_map(|(kind, name)| Some((kind, name.as_ref()?)))
    }
}

impl From<&PerInterface<Name>> for InterfaceNames {
    fn from(all: &PerInterface<Name>) -> Self {
        Self::interned(PerInterface::from_fn(|kind| Some(all.get(kind).clone())))
    }
}

impl Serialize for InterfaceNames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(kind, name)| (kind.as_str(), name)))
    }
}

impl<'de> Deserialize<'de> for InterfaceNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = InterfaceNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from interface type to implementation")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InterfaceNames, A::Error> {
                let mut names = PerInterface::<Option<Name>>::default();
                while let Some((KnownType(kind), name)) = map.next_entry::<KnownType, Name>()? {
                    // A type this build does not know is not ours to keep.
                    if let Some(kind) = kind {
                        *names.get_mut(kind) = Some(name);
                    }
                }
                Ok(InterfaceNames::interned(names))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A map key that may name an interface type, read without allocating.
struct KnownType(Option<InterfaceType>);

impl<'de> Deserialize<'de> for KnownType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = KnownType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an interface type")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KnownType, E> {
                Ok(KnownType(InterfaceType::parse(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The provision states a node can be declared to reach.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionTarget {
    Manageable,
    Available,
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerTarget {
    On,
    Off,
}

/// Boot devices a node can be told to boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    Bios,
}

/// The format of a whole-disk image the agent writes (Ironic's
/// `image_disk_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Written to the disk byte for byte.
    Raw,
    /// Converted to raw by the agent as it writes it.
    Qcow2,
}

/// One argument a step or passthru method accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgInfo {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

/// Ironic's provision states, as its API spells them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ProvisionState {
    #[serde(rename = "enroll")]
    Enroll,
    #[serde(rename = "verifying")]
    Verifying,
    #[serde(rename = "manageable")]
    Manageable,
    #[serde(rename = "cleaning")]
    Cleaning,
    #[serde(rename = "available")]
    Available,
    #[serde(rename = "deploying")]
    Deploying,
    /// A deploy waits for the agent in the node's ramdisk to call back.
    #[serde(rename = "wait call-back")]
    WaitCallBack,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "deploy failed")]
    DeployFailed,
    #[serde(rename = "deleting")]
    Deleting,
    #[serde(rename = "error")]
    Error,
}

impl ProvisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verifying => "verifying",
            Self::Manageable => "manageable",
            Self::Cleaning => "cleaning",
            Self::Available => "available",
            Self::Deploying => "deploying",
            Self::WaitCallBack => "wait call-back",
            Self::Active => "active",
            Self::DeployFailed => "deploy failed",
            Self::Deleting => "deleting",
            Self::Error => "error",
        }
    }

    /// States a node rests in; the others are passed through by an action.
    pub fn is_stable(self) -> bool {
        matches!(
            self,
            Self::Enroll
                | Self::Manageable
                | Self::Available
                | Self::Active
                | Self::DeployFailed
                | Self::Error
        )
    }
}

impl From<ProvisionTarget> for ProvisionState {
    fn from(t: ProvisionTarget) -> Self {
        match t {
            ProvisionTarget::Manageable => Self::Manageable,
            ProvisionTarget::Available => Self::Available,
            ProvisionTarget::Active => Self::Active,
        }
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ironic's power states, as its API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    #[serde(rename = "power on")]
    On,
    #[serde(rename = "power off")]
    Off,
    #[serde(rename = "rebooting")]
    Rebooting,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "power on",
            Self::Off => "power off",
            Self::Rebooting => "rebooting",
        }
    }

    /// `on` / `off`, as declarations and plans write it.
    pub fn short(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Rebooting => "rebooting",
        }
    }
}

impl From<PowerTarget> for PowerState {
    fn from(t: PowerTarget) -> Self {
        match t {
            PowerTarget::On => Self::On,
            PowerTarget::Off => Self::Off,
        }
    }
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::Cdrom => "cdrom",
            Self::Bios => "bios",
        }
    }
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uefi => "uefi",
            Self::Bios => "bios",
        }
    }
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (i, kind) in InterfaceType::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            assert_eq!(InterfaceType::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn equal_names_share_one_allocation() {
        let a = Name::new("redfish-virtual-media");
        let b: Name = serde_json::from_str("\"redfish-virtual-media\"").unwrap();
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&a.0, &Name::new("redfish").0));
    }

    #[test]
    fn interface_names_read_and_write_the_stored_map() {
        let text = r#"{"boot":"pxe","power":"ipmitool","teleport":"x"}"#;
        let names: InterfaceNames = serde_json::from_str(text).unwrap();
        assert_eq!(names.get(InterfaceType::Boot).unwrap(), "pxe");
        assert_eq!(names.get(InterfaceType::Power).unwrap(), "ipmitool");
        assert_eq!(names.get(InterfaceType::Deploy), None);
        // A type this build does not know is dropped, the rest kept in order.
        assert_eq!(
            serde_json::to_string(&names).unwrap(),
            r#"{"boot":"pxe","power":"ipmitool"}"#
        );
        assert!(
            serde_json::from_str::<InterfaceNames>("{}")
                .unwrap()
                .is_empty()
        );
    }
}
