//! The settings that differ between the hosts one fleet directory serves:
//! `rivet daemon`'s `--host`, `--state`, `--http` and `--advertise-url`,
//! which win over `rivet.toml`'s `[conductor]` and `[cluster]` values and
//! are checked as those are.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Builder;
use super::cluster::{ClusterSettings, UrlOf, service_url};
use super::conductor::Conductor;
use crate::config::secret::blank_url_secrets;
use crate::diag::Problem;

/// This host's settings given on the command line; `None` keeps the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOverrides {
    /// Over `[conductor] host`.
    pub host: Option<String>,
    /// Over `[conductor] state`; relative to the current directory, as a
    /// path on the command line is (the file's is relative to the fleet's).
    pub state: Option<PathBuf>,
    /// Over `[conductor] http`.
    pub http: Option<SocketAddr>,
    /// Over `[cluster] advertise_url`.
    pub advertise_url: Option<String>,
}

/// Why `name` cannot name a conductor's host (it is a key in etcd and a
/// path segment of `/v1/conductors/{hostname}`); `None` when it can.
pub(super) fn host_name_error(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 255 {
        Some("it is longer than 255 characters")
    } else if !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        Some("it holds a space, a `/` or a character other than printable ASCII")
    } else {
        None
    }
}

pub(super) const HOST_HELP: &str = "name the host in printable ASCII without spaces or `/`, at most 255 characters, e.g. `prov-1.example.org`; unset, it is the machine's hostname";

impl Builder {
    /// Put this host's flags over the file's values, each checked as the
    /// file's is; a problem names the flag, having no place in a file.
    pub(super) fn host_overrides(
        &mut self,
        overrides: &HostOverrides,
        conductor: &mut Conductor,
        cluster: Option<&mut ClusterSettings>,
    ) {
        if let Some(host) = &overrides.host {
            match host_name_error(host) {
                None => conductor.host = host.clone(),
                Some(why) => self.push(
                    Problem::new(
                        "rivet::conductor::host",
                        format!("`--host {host}` is not a host name: {why}"),
                    )
                    .help(HOST_HELP),
                ),
            }
        }
        if let Some(state) = &overrides.state {
            conductor.state = state.clone();
        }
        if let Some(http) = overrides.http {
            conductor.http = http;
        }
        let Some(advertise) = &overrides.advertise_url else {
            return;
        };
        // A flag's URL is blanked as a file's would be, so a password in it
        // is never shown.
        let shown = blank_url_secrets(advertise);
        let Some(cluster) = cluster else {
            self.push(
                Problem::new(
                    "rivet::cluster::advertise_url",
                    "`--advertise-url` is for a fleet of several daemons, and this one has no [cluster] in rivet.toml",
                )
                .help("remove `--advertise-url`, or add [cluster] to rivet.toml with the etcd endpoints the daemons share"),
            );
            return;
        };
        match service_url(&shown, UrlOf::Advertise, "`--advertise-url`") {
            Ok(_) => cluster.advertise_url = Some(advertise.clone()),
            Err(bad) => {
                self.push(Problem::new("rivet::cluster::advertise_url", bad.message).help(bad.help))
            }
        }
    }
}
