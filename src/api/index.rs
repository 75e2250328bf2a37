//! What the API knows of the nodes, kept ready for reads: the declarations
//! in force joined with the store's node records, sorted by name, with a
//! lookup by name and by UUID. The store tells the cache about every
//! committed node record, so a read never scans the store; a read after a
//! commit sees it (the pending records are folded in first).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{Map, Value, json};

use crate::model::fleet::Fleet;
use crate::model::node::{
    BmcProtocol, DeployRamdisk, ImageChecksum, LocalLink, Node, Tenancy, derived_port_uuid,
    normalize_mac,
};
use crate::store::records::NodeRecord;
use crate::store::{Store, StoreError, Write};
use crate::vocab::{InterfaceType, ProvisionState};

/// One node as the API shows it.
pub struct NodeEntry {
    pub name: String,
    pub uuid: String,
    /// Index into the fleet's nodes, when the node is declared.
    decl: Option<usize>,
    pub record: Option<Arc<NodeRecord>>,
    /// The detail document without its trailing `}`, so links and the lock
    /// holder can be appended per request.
    detail: OnceLock<Box<str>>,
    /// The list row without its trailing `}`.
    row: OnceLock<Box<str>>,
}

impl NodeEntry {
    pub fn provision_state(&self) -> ProvisionState {
        self.record
            .as_ref()
            .map_or(ProvisionState::Enroll, |r| r.provision_state)
    }

    pub fn maintenance(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.maintenance)
    }

    pub fn driver<'a>(&'a self, fleet: &'a Fleet) -> &'a str {
        match (self.decl, &self.record) {
            (Some(i), _) => &fleet.nodes[i].driver,
            (None, Some(r)) => &r.driver,
            (None, None) => "",
        }
    }

    pub fn declaration<'a>(&self, fleet: &'a Fleet) -> Option<&'a Arc<Node>> {
        self.decl.map(|i| &fleet.nodes[i])
    }

    /// What the node is declared for; None for a node no longer declared.
    pub fn tenancy<'a>(&self, fleet: &'a Fleet) -> Option<&'a Tenancy> {
        self.declaration(fleet).map(|n| &n.tenancy)
    }

    /// The conductor that manages the node: none once it is no longer
    /// declared (unmanaged nodes are left as they are). In a cluster, the
    /// owner that last wrote the node's record (none before any claimed it).
    pub fn conductor<'a>(&'a self, fleet: &'a Fleet) -> Option<&'a str> {
        self.decl?;
        if fleet.cluster.is_some() {
            return self.record.as_ref().and_then(|r| r.conductor.as_deref());
        }
        Some(fleet.conductor.host.as_str())
    }

    /// The detail document as a JSON object (for `fields=` and the states view).
    pub fn document(&self, fleet: &Fleet) -> Map<String, Value> {
        node_document(
            fleet,
            self.declaration(fleet).map(|n| &**n),
            self.record.as_deref(),
            self,
        )
    }

    /// The detail document, serialized, open at the end.
    pub fn detail_prefix(&self, fleet: &Fleet) -> &str {
        self.detail
            .get_or_init(|| open_object(&Value::Object(self.document(fleet))))
    }

    /// The short list row, serialized, open at the end.
    pub fn row_prefix(&self, fleet: &Fleet) -> &str {
        self.row.get_or_init(|| {
            let r = self.record.as_deref();
            open_object(&json!({
                "uuid": self.uuid,
                "name": self.name,
                "instance_uuid": self.tenancy(fleet).and_then(|t| t.instance_uuid.as_ref()),
                "maintenance": self.maintenance(),
                "power_state": r.and_then(|r| r.power_state),
                "provision_state": self.provision_state(),
            }))
        })
    }
}

/// A JSON object's text without its closing brace.
pub fn open_object(value: &Value) -> Box<str> {
    let mut text = value.to_string();
    text.pop();
    text.into_boxed_str()
}

/// The nodes at one moment: declarations in force plus records.
pub struct NodeIndex {
    pub fleet: Arc<Fleet>,
    /// Sorted by name.
    pub entries: Vec<Arc<NodeEntry>>,
    /// Name and UUID → position in `entries`.
    lookup: Arc<HashMap<String, usize>>,
    /// Every node's ports, declared and inspected.
    pub ports: Arc<PortIndex>,
}

impl NodeIndex {
    fn build(fleet: Arc<Fleet>, records: &HashMap<String, Arc<NodeRecord>>) -> Self {
        let mut entries: Vec<Arc<NodeEntry>> = fleet
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                Arc::new(entry(
                    &node.name,
                    node.uuid.to_string(),
                    Some(i),
                    records.get(&node.name),
                ))
            })
            .collect();
        // Recorded nodes no longer declared still exist (unmanaged).
        for (name, record) in records {
            if fleet.node(name).is_none() {
                entries.push(Arc::new(entry(
                    name,
                    record.uuid.clone(),
                    None,
                    Some(record),
                )));
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut lookup = HashMap::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            lookup.insert(e.uuid.clone(), i);
            lookup.insert(e.name.clone(), i);
        }
        let ports = Arc::new(PortIndex::build(&fleet, &entries));
        Self {
            fleet,
            entries,
            lookup: Arc::new(lookup),
            ports,
        }
    }

    /// The same nodes with some records replaced.
    fn with_records(&self, records: &HashMap<String, Arc<NodeRecord>>, changed: &[String]) -> Self {
        let mut entries = self.entries.clone();
        // Ports change only when what inspection found does.
        let mut inspected_changed = false;
        for name in changed {
            if let Some(&i) = self.lookup.get(name) {
                let old = &entries[i];
                let record = records.get(name);
                inspected_changed |=
                    old.record.as_ref().map(|r| &r.properties) != record.map(|r| &r.properties);
                entries[i] = Arc::new(entry(&old.name, old.uuid.clone(), old.decl, record));
            }
        }
        let ports = if inspected_changed {
            Arc::new(PortIndex::build(&self.fleet, &entries))
        } else {
            Arc::clone(&self.ports)
        };
        Self {
            fleet: Arc::clone(&self.fleet),
            entries,
            lookup: Arc::clone(&self.lookup),
            ports,
        }
    }

    /// A node by name or UUID.
    pub fn find(&self, id: &str) -> Option<&Arc<NodeEntry>> {
        self.position(id).map(|i| &self.entries[i])
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.lookup.get(id).copied()
    }
}

fn entry(
    name: &str,
    uuid: String,
    decl: Option<usize>,
    record: Option<&Arc<NodeRecord>>,
) -> NodeEntry {
    NodeEntry {
        name: name.to_string(),
        uuid,
        decl,
        record: record.cloned(),
        detail: OnceLock::new(),
        row: OnceLock::new(),
    }
}

/// Where the API learned of a port (`extra.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSource {
    Declared,
    Inspected,
}

impl PortSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declared => "declared",
            Self::Inspected => "inspected",
        }
    }
}

/// One port as the API shows it.
pub struct PortEntry {
    pub uuid: String,
    /// Lower case, `:`-separated.
    pub address: String,
    /// Position of its node in `NodeIndex::entries`.
    pub node: usize,
    pub pxe_enabled: bool,
    pub physical_network: Option<String>,
    pub local_link_connection: LocalLink,
    pub source: PortSource,
    /// The detail document without its links and trailing `}`, rendered
    /// at the first read.
    pub detail: OnceLock<Box<str>>,
}

/// The ports of every node, in node order (a node's declared ports first,
/// then those only inspection found), with the lookups the list filters
/// are answered from: no filter scans the fleet's ports.
#[derive(Default)]
pub struct PortIndex {
    pub ports: Vec<PortEntry>,
    by_uuid: HashMap<String, usize>,
    by_address: HashMap<String, usize>,
    /// Per node (its position in `entries`): its ports' positions.
    by_node: Vec<Range<usize>>,
    by_physical_network: HashMap<String, Vec<usize>>,
    /// Ports of the nodes in each shard.
    by_shard: HashMap<String, Vec<usize>>,
    /// `[not pxe_enabled, pxe_enabled]`.
    by_pxe: [Vec<usize>; 2],
}

impl PortIndex {
    fn build(fleet: &Fleet, entries: &[Arc<NodeEntry>]) -> Self {
        let mut ports = Vec::new();
        let mut by_node = Vec::with_capacity(entries.len());
        // A declared MAC wins over the same MAC inspected on any node.
        let declared: std::collections::HashSet<&str> = fleet
            .nodes
            .iter()
            .flat_map(|n| n.ports.iter().map(|p| p.address.as_str()))
            .collect();
        let mut inspected_seen = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let start = ports.len();
            if let Some(node) = e.declaration(fleet) {
                ports.extend(node.ports.iter().map(|p| PortEntry {
                    uuid: p.uuid.to_string(),
                    address: p.address.clone(),
                    node: i,
                    pxe_enabled: p.pxe_enabled,
                    physical_network: p.physical_network.clone(),
                    local_link_connection: p.local_link_connection.clone(),
                    source: PortSource::Declared,
                    detail: OnceLock::new(),
                }));
            }
            let node_uuid = uuid::Uuid::parse_str(&e.uuid).unwrap_or_default();
            for mac in inspected_macs(e.record.as_deref()) {
                if declared.contains(mac.as_str()) || !inspected_seen.insert(mac.clone()) {
                    continue;
                }
                ports.push(PortEntry {
                    uuid: derived_port_uuid(&node_uuid, &mac).to_string(),
                    address: mac,
                    node: i,
                    pxe_enabled: true,
                    physical_network: None,
                    local_link_connection: LocalLink::default(),
                    source: PortSource::Inspected,
                    detail: OnceLock::new(),
                });
            }
            by_node.push(start..ports.len());
        }
        let mut index = Self {
            by_uuid: HashMap::with_capacity(ports.len()),
            by_address: HashMap::with_capacity(ports.len()),
            by_node,
            ..Self::default()
        };
        for (at, p) in ports.iter().enumerate() {
            index.by_uuid.insert(p.uuid.clone(), at);
            index.by_address.insert(p.address.clone(), at);
            if let Some(net) = &p.physical_network {
                index
                    .by_physical_network
                    .entry(net.clone())
                    .or_default()
                    .push(at);
            }
            if let Some(shard) = entries[p.node]
                .tenancy(fleet)
                .and_then(|t| t.shard.as_ref())
            {
                index.by_shard.entry(shard.clone()).or_default().push(at);
            }
            index.by_pxe[usize::from(p.pxe_enabled)].push(at);
        }
        index.ports = ports;
        index
    }

    /// A port by UUID.
    pub fn find(&self, uuid: &str) -> Option<usize> {
        self.by_uuid.get(uuid).copied()
    }

    /// The port with this MAC (any case).
    pub fn by_address(&self, mac: &str) -> Option<usize> {
        self.by_address.get(&mac.to_ascii_lowercase()).copied()
    }

    /// A node's ports, by its position in the node index.
    pub fn of_node(&self, node: usize) -> Range<usize> {
        self.by_node.get(node).cloned().unwrap_or(0..0)
    }

    pub fn on_physical_network(&self, net: &str) -> &[usize] {
        self.by_physical_network.get(net).map_or(&[], Vec::as_slice)
    }

    pub fn in_shard(&self, shard: &str) -> &[usize] {
        self.by_shard.get(shard).map_or(&[], Vec::as_slice)
    }

    pub fn with_pxe(&self, enabled: bool) -> &[usize] {
        &self.by_pxe[usize::from(enabled)]
    }
}

/// The MACs inspection recorded for a node (`properties.macs`), normalised.
fn inspected_macs(record: Option<&NodeRecord>) -> Vec<String> {
    let Some(record) = record.filter(|r| !r.properties.is_empty()) else {
        return Vec::new();
    };
    match record.properties.to_map().get("macs") {
        Some(Value::Array(macs)) => macs
            .iter()
            .filter_map(Value::as_str)
            .filter_map(normalize_mac)
            .collect(),
        _ => Vec::new(),
    }
}

/// Node records committed since the index was last brought up to date:
/// the latest per node, so a long converge without reads keeps at most one
/// record per node here.
#[derive(Default)]
struct Feed {
    pending: Mutex<HashMap<String, NodeRecord>>,
    dirty: AtomicBool,
}

impl Feed {
    fn push(&self, writes: &[Write]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for w in writes {
            if let Write::Node(name, record) = w {
                pending.insert(name.clone(), record.clone());
            }
        }
        if !pending.is_empty() {
            self.dirty.store(true, Ordering::Release);
        }
    }
}

/// The index, kept current by the store's commit notifications.
pub struct NodeCache {
    feed: Arc<Feed>,
    current: RwLock<Arc<NodeIndex>>,
    /// Every record, as of `current`; held while the index is rebuilt.
    records: Mutex<HashMap<String, Arc<NodeRecord>>>,
}

impl NodeCache {
    /// Subscribe to the store's commits, then read its node records once.
    pub fn new(store: &Store, fleet: Arc<Fleet>) -> Result<Self, StoreError> {
        let feed = Arc::new(Feed::default());
        let sink = Arc::clone(&feed);
        store.observe(move |writes| sink.push(writes));
        let records: HashMap<String, Arc<NodeRecord>> = store
            .nodes()?
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        let index = NodeIndex::build(fleet, &records);
        Ok(Self {
            feed,
            current: RwLock::new(Arc::new(index)),
            records: Mutex::new(records),
        })
    }

    /// The index for the declarations in force, with every committed record.
    pub fn index(&self, fleet: Arc<Fleet>) -> Arc<NodeIndex> {
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if Arc::ptr_eq(&current.fleet, &fleet) && !self.feed.dirty.load(Ordering::Acquire) {
                return Arc::clone(&current);
            }
        }
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let pending = {
            let mut pending = self.feed.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.feed.dirty.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        let current = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        let same_fleet = Arc::ptr_eq(&current.fleet, &fleet);
        if same_fleet && pending.is_empty() {
            return current;
        }
        let mut changed = Vec::with_capacity(pending.len());
        for (name, record) in pending {
            records.insert(name.clone(), Arc::new(record));
            changed.push(name);
        }
        let known = changed.iter().all(|n| current.position(n).is_some());
        let next = Arc::new(if same_fleet && known {
            current.with_records(&records, &changed)
        } else {
            NodeIndex::build(fleet, &records)
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&next);
        next
    }
}

/// The node's `driver_info`: its BMC settings and the agent's ramdisk.
fn driver_info(node: &Node) -> Value {
    let mut info = bmc_info(node);
    let ramdisk = match &node.deploy_ramdisk {
        Some(DeployRamdisk::Network { kernel, ramdisk }) => {
            vec![("deploy_kernel", kernel), ("deploy_ramdisk", ramdisk)]
        }
        Some(DeployRamdisk::VirtualMedia { iso }) => vec![("deploy_iso", iso)],
        None => Vec::new(),
    };
    if let Value::Object(map) = &mut info {
        for (key, url) in ramdisk {
            map.insert(key.to_string(), json!(url));
        }
    }
    info
}

/// Ironic's name for a BMC setting of a protocol, e.g. `ipmi_address`.
fn bmc_info(node: &Node) -> Value {
    let bmc = &node.bmc;
    let a = &bmc.address;
    let secret = bmc.password.as_ref().map(|_| "******");
    match a.protocol {
        BmcProtocol::Ipmi => json!({
            "ipmi_address": a.host,
            "ipmi_port": a.port.unwrap_or(623),
            "ipmi_username": bmc.username,
            "ipmi_password": secret,
            "ipmi_cipher_suite": bmc.cipher_suite,
        }),
        BmcProtocol::Redfish => {
            let scheme = if a.tls { "https" } else { "http" };
            let port = a.port.map(|p| format!(":{p}")).unwrap_or_default();
            json!({
                "redfish_address": format!("{scheme}://{}{port}", a.host),
                "redfish_system_id": (!a.path.is_empty()).then_some(&a.path),
                "redfish_username": bmc.username,
                "redfish_password": secret,
                "redfish_verify_ca": match &bmc.ca_file {
                    Some(path) => json!(path),
                    None => json!(bmc.verify_tls),
                },
            })
        }
        BmcProtocol::Fake => json!({
            "fake_address": a.to_string(),
            "fake_username": bmc.username,
            "fake_password": secret,
        }),
    }
}

/// A URL with any password in it replaced by `******`.
fn without_password(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("******"));
            u.to_string()
        }
        _ => text.to_string(),
    }
}

fn instance_info(node: &Node) -> Value {
    let Some(i) = &node.instance else {
        return json!({});
    };
    let mut info = Map::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            info.insert(key.to_string(), json!(without_password(v)));
        }
    };
    put("image_source", &i.image);
    put("image_checksum", &i.checksum);
    put("kernel", &i.kernel);
    put("ramdisk", &i.ramdisk);
    if let Some(hints) = &i.root_device {
        info.insert("root_device".into(), json!(hints));
    }
    // What Ironic's direct deploy reads: the checksum as algorithm and
    // digest, and the image's format.
    if let Some(checksum) = i
        .checksum
        .as_deref()
        .and_then(|c| ImageChecksum::parse(c).ok())
    {
        info.insert("image_os_hash_algo".into(), json!(checksum.algo));
        info.insert("image_os_hash_value".into(), json!(checksum.value));
    }
    if let Some(format) = i.disk_format {
        info.insert("image_disk_format".into(), json!(format.as_str()));
    }
    Value::Object(info)
}

/// The node document, in Ironic's field names.
fn node_document(
    fleet: &Fleet,
    node: Option<&Node>,
    record: Option<&NodeRecord>,
    entry: &NodeEntry,
) -> Map<String, Value> {
    let mut doc = Map::new();
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_string(), v);
    };
    put("uuid", json!(entry.uuid));
    put("name", json!(entry.name));
    put("driver", json!(entry.driver(fleet)));
    for kind in InterfaceType::ALL {
        let name = match (node, record) {
            (Some(n), _) => Some(n.interfaces.get(kind).clone()),
            (None, Some(r)) => r.interfaces.get(kind).cloned(),
            (None, None) => None,
        };
        put(&kind.node_key(), json!(name));
    }
    put("provision_state", json!(entry.provision_state()));
    put(
        "target_provision_state",
        json!(record.and_then(|r| r.target_provision_state)),
    );
    put("power_state", json!(record.and_then(|r| r.power_state)));
    put(
        "target_power_state",
        json!(record.and_then(|r| r.target_power_state)),
    );
    put("maintenance", json!(entry.maintenance()));
    let fault = record.and_then(|r| r.fault.clone());
    put(
        "maintenance_reason",
        json!(if entry.maintenance() {
            fault.clone()
        } else {
            None
        }),
    );
    put("fault", json!(fault));
    put(
        "last_error",
        json!(record.and_then(|r| r.last_error.clone())),
    );
    put(
        "deploy_step",
        record
            .and_then(|r| r.deploy_step.clone())
            .unwrap_or_else(|| json!({})),
    );
    put("boot_mode", json!(record.and_then(|r| r.boot_mode)));
    let at = |field: fn(&NodeRecord) -> &Option<String>| {
        json!(super::time::ironic_opt(
            record.and_then(|r| field(r).as_deref())
        ))
    };
    put("updated_at", at(|r| &r.updated_at));
    put("provision_updated_at", at(|r| &r.updated_at));
    put("created_at", at(|r| &r.created_at));
    put("inspection_started_at", at(|r| &r.inspection_started_at));
    put("inspection_finished_at", at(|r| &r.inspection_finished_at));
    put("traits", json!(node.map_or(&[][..], |n| &n.traits[..])));
    put("driver_info", node.map_or_else(|| json!({}), driver_info));
    put(
        "instance_info",
        node.map_or_else(|| json!({}), instance_info),
    );
    put("conductor", json!(entry.conductor(fleet)));
    put(
        "extra",
        json!({
            "declared": node.is_some(),
            "unmanaged": record.is_some_and(|r| r.unmanaged),
            "boot_device": record.and_then(|r| r.boot_device),
            "desired": node.map(|n| json!({
                "provision": n.desired.provision,
                "power": n.desired.power,
                "boot_device": n.desired.boot_device,
                "boot_mode": n.desired.boot_mode,
            })),
            "depends_on": node.map(|n| n.depends_on.iter().map(|d| d.value.clone()).collect::<Vec<_>>()),
            "rollout": node.and_then(|n| n.rollout.clone()),
        }),
    );
    put(
        "driver_internal_info",
        match record.and_then(|r| r.agent.as_ref()) {
            Some(agent) => json!({
                "agent_url": agent.url,
                "agent_version": agent.version,
                "agent_secret_token": "******",
            }),
            None => json!({}),
        },
    );
    for key in [
        "clean_step",
        "service_step",
        "network_data",
        "raid_config",
        "target_raid_config",
    ] {
        put(key, json!({}));
    }
    for key in [
        "allocation_uuid",
        "automated_clean",
        "chassis_uuid",
        "health",
        "instance_name",
        "parent_node",
        "protected_reason",
        "secure_boot",
    ] {
        put(key, Value::Null);
    }
    for key in ["console_enabled", "protected", "disable_power_off"] {
        put(key, json!(false));
    }
    let tenancy = node.map(|n| &n.tenancy);
    let text = |f: fn(&Tenancy) -> &Option<String>| json!(tenancy.and_then(|t| f(t).as_ref()));
    put("resource_class", text(|t| &t.resource_class));
    put("owner", text(|t| &t.owner));
    put("lessee", text(|t| &t.lessee));
    put("description", text(|t| &t.description));
    put("retired_reason", text(|t| &t.retired_reason));
    put("shard", text(|t| &t.shard));
    put("instance_uuid", text(|t| &t.instance_uuid));
    put("retired", json!(tenancy.is_some_and(|t| t.retired)));
    put(
        "conductor_group",
        json!(tenancy.map_or("", |t| t.conductor_group.as_str())),
    );
    put(
        "properties",
        Value::Object(record.map_or_else(Map::new, |r| ironic_properties(r.properties.to_map()))),
    );
    doc
}

/// What inspection found, with Ironic's `memory_mb` beside rivet's
/// `memory_gib` so scripts written against Ironic read the same key.
fn ironic_properties(mut found: Map<String, Value>) -> Map<String, Value> {
    if let Some(gib) = found.get("memory_gib").and_then(Value::as_u64)
        && !found.contains_key("memory_mb")
    {
        found.insert("memory_mb".into(), json!(gib * 1024));
    }
    found
}
