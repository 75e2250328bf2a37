//! Each node's `[[node.ports]]`: a MAC address in Ironic's form, a UUID
//! (declared, or derived from the node and the MAC), and a MAC that no other
//! port of the fleet declares, since an agent's lookup finds its node by it.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{Builder, loc};
use crate::config::raw::NodeDecl;
use crate::diag::{Loc, Problem, SourceFile};
use crate::model::node::{Port, derived_port_uuid, normalize_mac};

/// Every declared MAC (normalised) and the places that declare it, so a MAC
/// declared twice is reported at each place, whichever node comes first.
pub(super) struct DeclaredMacs(HashMap<String, Vec<Loc>>);

impl DeclaredMacs {
    pub(super) fn of(decls: &[(Arc<SourceFile>, NodeDecl)]) -> Self {
        let mut macs: HashMap<String, Vec<Loc>> = HashMap::new();
        for (file, decl) in decls {
            for port in &decl.ports {
                if let Some(mac) = normalize_mac(port.address.value()) {
                    macs.entry(mac).or_default().push(loc(file, &port.address));
                }
            }
        }
        Self(macs)
    }
}

impl Builder {
    /// The node's ports; a problem for each malformed MAC or UUID and each
    /// MAC or UUID declared twice.
    pub(super) fn ports(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        node_uuid: &Uuid,
        macs: &DeclaredMacs,
        port_uuids: &mut HashMap<Uuid, Loc>,
    ) -> Vec<Port> {
        let mut out = Vec::with_capacity(decl.ports.len());
        for port in &decl.ports {
            let at = loc(file, &port.address);
            let written = port.address.value();
            let Some(address) = normalize_mac(written) else {
                self.push(
                    Problem::new(
                        "rivet::port::address",
                        format!("`{written}` is not a MAC address"),
                    )
                    .at(&at, "invalid MAC address")
                    .help(
                        "write six pairs of hex digits separated by `:`, e.g. `52:54:00:12:34:56`",
                    ),
                );
                continue;
            };
            let places = &macs.0[&address];
            if places.len() > 1 {
                let mut problem = Problem::new(
                    "rivet::port::duplicate_address",
                    format!(
                        "MAC address {address} is declared by {} ports",
                        places.len()
                    ),
                )
                .at(&at, "declared here");
                for other in places
                    .iter()
                    .filter(|p| !(Arc::ptr_eq(&p.file, &at.file) && p.span == at.span))
                {
                    problem = problem.also(other, "and here");
                }
                self.push(problem.help(
                    "a MAC belongs to one port of one node: remove the duplicate or correct the address",
                ));
                continue;
            }
            let uuid = match &port.uuid {
                None => derived_port_uuid(node_uuid, &address),
                Some(text) => match Uuid::parse_str(text.value()) {
                    Ok(u) => u,
                    Err(e) => {
                        self.push(
                            Problem::new(
                                "rivet::port::uuid",
                                format!("`{}` is not a UUID: {e}", text.value()),
                            )
                            .at(&loc(file, text), "invalid UUID")
                            .help("write a UUID like `1be26c0b-03f2-4d2e-ae87-c02d7f33c123`, or remove `uuid` to derive one from the node and the MAC"),
                        );
                        continue;
                    }
                },
            };
            let uuid_at = port.uuid.as_ref().map_or(at.clone(), |u| loc(file, u));
            if let Some(first) = port_uuids.get(&uuid) {
                self.push(
                    Problem::new(
                        "rivet::port::duplicate_uuid",
                        format!("UUID {uuid} is used by two ports"),
                    )
                    .at(&uuid_at, "used again here")
                    .also(first, "first used here")
                    .help("every port needs its own UUID: change or remove one `uuid`"),
                );
                continue;
            }
            port_uuids.insert(uuid, uuid_at);
            out.push(Port {
                uuid,
                address,
                pxe_enabled: port.pxe_enabled.unwrap_or(true),
                physical_network: port.physical_network.clone(),
                local_link_connection: port.local_link_connection.clone().unwrap_or_default(),
                at,
            });
        }
        out
    }
}
