//! A node's BMC: its address (scheme, host, path) fitting the hardware
//! type, and where its password comes from.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Builder, loc};
use crate::config::raw::NodeDecl;
use crate::config::secret::is_env_name;
use crate::diag::{Loc, Problem, SourceFile};
use crate::model::hardware::{BmcFamily, HardwareType};
use crate::model::node::{Bmc, BmcAddress, BmcProtocol, SecretSource};

impl Builder {
    pub(super) fn bmc(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        hw: &HardwareType,
    ) -> Option<Bmc> {
        let node = decl.name.value();
        let family = hw.bmc_family(&self.types);
        let Some(bmc) = &decl.bmc else {
            if matches!(family, BmcFamily::Fake | BmcFamily::Any) {
                // A node without a BMC gets an in-process fake one named after it.
                return Some(Bmc {
                    address: BmcAddress {
                        protocol: BmcProtocol::Fake,
                        scheme: "fake".to_string(),
                        host: node.clone(),
                        port: None,
                        path: String::new(),
                        query: None,
                        tls: false,
                        virtual_media: false,
                    },
                    username: None,
                    password: None,
                    verify_tls: true,
                    ca_file: None,
                    cipher_suite: None,
                });
            }
            let example = match family {
                BmcFamily::Ipmi => {
                    "bmc = { address = \"ipmi://10.0.0.7\", username = \"admin\", password_env = \"BMC_PASSWORD\" }"
                }
                _ => {
                    "bmc = { address = \"redfish+https://10.0.0.7/redfish/v1/Systems/1\", username = \"admin\", password_env = \"BMC_PASSWORD\" }"
                }
            };
            self.push(
                Problem::new("rivet::bmc::missing", format!("node `{node}` has no `bmc`"))
                    .at(
                        &loc(file, &decl.driver),
                        format!("a `{}` node needs a BMC", hw.name),
                    )
                    .help(format!("add {example}")),
            );
            return None;
        };
        let b = bmc.value();
        let at = loc(file, &b.address);
        let address = match parse_bmc_address(b.address.value()) {
            Ok(a) => a,
            Err((message, help)) => {
                self.push(
                    Problem::new("rivet::bmc::address", format!("node `{node}`: {message}"))
                        .at(&at, "malformed BMC address")
                        .help(help),
                );
                return None;
            }
        };
        let fits = match family {
            BmcFamily::Ipmi => address.protocol == BmcProtocol::Ipmi,
            BmcFamily::Redfish => address.protocol == BmcProtocol::Redfish,
            BmcFamily::Fake => address.protocol == BmcProtocol::Fake,
            BmcFamily::Any => true,
        };
        if !fits {
            let schemes = match family {
                BmcFamily::Ipmi => "ipmi://host[:port]",
                BmcFamily::Redfish => {
                    "redfish://, redfish+http://, redfish+https:// or redfish-virtualmedia://"
                }
                _ => "fake://name",
            };
            self.push(
                Problem::new(
                    "rivet::bmc::scheme_mismatch",
                    format!(
                        "node `{node}`: a `{}://` address does not fit hardware type `{}`",
                        address.scheme, hw.name
                    ),
                )
                .at(&at, "wrong protocol for this driver")
                .help(format!("`{}` talks to its BMC through {schemes}", hw.name)),
            );
            return None;
        }
        let password = match (&b.password_env, &b.password_file) {
            (Some(env), Some(_)) => {
                self.push(
                    Problem::new(
                        "rivet::bmc::two_passwords",
                        format!("node `{node}` sets both `password_env` and `password_file`"),
                    )
                    .at(&loc(file, env), "one of two password sources")
                    .help("keep one: `password_env` or `password_file`"),
                );
                return None;
            }
            (Some(env), None) => {
                if let Some(problem) = not_an_env_name(
                    "rivet::bmc::password_env",
                    &format!("node `{node}`"),
                    &loc(file, env),
                    env.value(),
                    "RACK1_BMC_PASSWORD",
                ) {
                    self.push(problem);
                    return None;
                }
                Some(SecretSource::Env(env.value().clone()))
            }
            (None, Some(path)) => Some(SecretSource::File(PathBuf::from(path.value()))),
            (None, None) => None,
        };
        if let Some(cs) = &b.cipher_suite
            && address.protocol != BmcProtocol::Ipmi
        {
            self.push(
                Problem::new(
                    "rivet::bmc::cipher_suite",
                    format!("node `{node}`: `cipher_suite` applies to IPMI only"),
                )
                .at(&loc(file, cs), "not an IPMI BMC")
                .help("remove `cipher_suite`, or use an `ipmi://` address"),
            );
            return None;
        }
        Some(Bmc {
            address,
            username: b.username.clone(),
            password,
            verify_tls: b.verify_tls.unwrap_or(true),
            ca_file: b.ca_file.as_ref().map(PathBuf::from),
            cipher_suite: b.cipher_suite.as_ref().map(|c| *c.value()),
        })
    }
}

/// The problem of a `password_env` (of `whose`, at `at`) that names no
/// environment variable; `None` when it names one. The value is never
/// quoted: what is no variable's name may be the password itself (the
/// loader has blanked it).
pub(super) fn not_an_env_name(
    code: &'static str,
    whose: &str,
    at: &Loc,
    value: &str,
    example: &str,
) -> Option<Problem> {
    (!is_env_name(value)).then(|| {
        Problem::new(
            code,
            format!("{whose}: `password_env` must name an environment variable"),
        )
        .at(at, "not a variable name")
        .help(format!(
            "name the variable that holds the password, e.g. `{example}` (letters, digits, `_`), never the password itself"
        ))
    })
}

/// Parse a BMC URL; on error, (message, help).
pub fn parse_bmc_address(text: &str) -> Result<BmcAddress, (String, String)> {
    let schemes_help = "use one of ipmi://host[:port], redfish://host, redfish+http://host[:port], \
                        redfish+https://host[/redfish/v1/Systems/ID], redfish-virtualmedia://host, fake://name";
    let url = url::Url::parse(text).map_err(|e| {
        (
            format!("`{text}` is not a URL: {e}"),
            schemes_help.to_string(),
        )
    })?;
    let scheme = url.scheme().to_string();
    let (protocol, tls, virtual_media) = match scheme.as_str() {
        "ipmi" => (BmcProtocol::Ipmi, false, false),
        "redfish" | "redfish+https" => (BmcProtocol::Redfish, true, false),
        "redfish+http" => (BmcProtocol::Redfish, false, false),
        "redfish-virtualmedia" | "redfish-virtualmedia+https" => (BmcProtocol::Redfish, true, true),
        "redfish-virtualmedia+http" => (BmcProtocol::Redfish, false, true),
        "fake" => (BmcProtocol::Fake, false, false),
        other => {
            return Err((
                format!("`{other}` is not a BMC address scheme"),
                schemes_help.to_string(),
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "the BMC address carries credentials".to_string(),
            "remove `user:password@` from the address; set `username` and `password_env` instead"
                .to_string(),
        ));
    }
    let host = url.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err((
            format!("`{text}` names no host"),
            format!("write the BMC's host name or IP address after `{scheme}://`"),
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    match protocol {
        BmcProtocol::Ipmi if !path.is_empty() => {
            return Err((
                format!("an IPMI address has no path, but `{text}` has `{path}`"),
                "write `ipmi://host` or `ipmi://host:port`".to_string(),
            ))
        }
        BmcProtocol::Redfish if !path.is_empty() && !path.starts_with("/redfish/v1/") => {
            return Err((
                format!("`{path}` is not a Redfish system path"),
                "write the system's path, e.g. `/redfish/v1/Systems/1`, or leave it out to use the only system".to_string(),
            ))
        }
        _ => {}
    }
    if url.query().is_some() && protocol != BmcProtocol::Fake {
        return Err((
            "only `fake://` addresses take `?options`".to_string(),
            "remove the `?…` part".to_string(),
        ));
    }
    Ok(BmcAddress {
        protocol,
        scheme,
        host,
        port: url.port(),
        path,
        query: url.query().map(str::to_string),
        tls,
        virtual_media,
    })
}
