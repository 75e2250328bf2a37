//! How an `ipmitool` run failed, told apart by what it printed, and the
//! [`DriverError`] each failure becomes.

use crate::driver::DriverError;
use crate::model::node::Node;

/// Answers a BMC gives when it is busy for a moment (Ironic's list of
/// retryable IPMI failures): the same command soon after usually works.
const BUSY_ANSWERS: [&str; 5] = [
    "insufficient resources for session",
    "node busy",
    "timeout",
    "out of space",
    "bmc initialization in progress",
];

/// How an ipmitool run ended, before it becomes a [`DriverError`].
#[derive(Debug)]
pub(super) enum Failure {
    /// The BMC answered that it cannot serve now.
    Busy(String),
    /// Nothing answered.
    NoAnswer(String),
    /// The BMC refused the user name or password.
    Credentials(String),
    /// The BMC refused the privilege level or cipher suite.
    Refused(String),
    /// The BMC does not implement the command.
    NotImplemented(String),
    /// Any other failure of the command.
    Command(String),
    Driver(DriverError),
}

/// What ipmitool says (in lower case) when a session or command fails, and
/// what that means; the first match wins.
type Tell = (&'static [&'static str], fn(String) -> Failure);
const TELLS: [Tell; 4] = [
    (
        &[
            "rakp 2 hmac is invalid",
            "unauthorized name",
            "rakp 2 message indicates an error",
        ],
        Failure::Credentials,
    ),
    (
        &[
            "insufficient privilege",
            "invalid authentication algorithm",
            "invalid integrity algorithm",
            "invalid encryption algorithm",
        ],
        Failure::Refused,
    ),
    (
        &[
            "get auth capabilities error",
            "no response from remote controller",
        ],
        Failure::NoAnswer,
    ),
    (&BUSY_ANSWERS, Failure::Busy),
];

pub(super) fn classify(success: bool, stdout: String, stderr: String) -> Result<String, Failure> {
    let lower = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    for (tells, failure) in TELLS {
        if has(tells) {
            return Err(failure(stderr));
        }
    }
    // ipmitool exits 0 after some refused settings (`bootdev floppy` on
    // ipmi_sim prints "… failed: Unspecified error"), so stderr decides too.
    if !success || lower.contains(" failed") || lower.contains("unable to") {
        if has(&["invalid command", "not supported", "command not supported"]) {
            return Err(Failure::NotImplemented(stderr));
        }
        if has(&["unable to establish ipmi v2"]) {
            return Err(Failure::NoAnswer(stderr));
        }
        return Err(Failure::Command(stderr));
    }
    Ok(stdout)
}

impl Failure {
    pub(super) fn into_error(self, node: &Node, command: &[&str]) -> DriverError {
        let what = format!("node {}: ipmitool {}", node.name, command.join(" "));
        let bmc = &node.bmc.address;
        match self {
            Failure::Driver(e) => e,
            Failure::Busy(said) => {
                DriverError::retryable(format!("{what}: the BMC stayed busy: {said}"))
            }
            Failure::NoAnswer(said) => DriverError::retryable(format!(
                "{what}: the BMC at {bmc} does not answer ({said}); check the address and that the BMC is up"
            )),
            Failure::Credentials(said) => DriverError::fatal(format!(
                "{what}: the BMC at {bmc} refused the credentials ({said}); check the node's bmc username and password_env/password_file"
            )),
            Failure::Refused(said) => DriverError::fatal(format!(
                "{what}: the BMC at {bmc} refused the session ({said}); check that the user has ADMINISTRATOR privilege and the node's bmc cipher_suite"
            )),
            Failure::NotImplemented(said) => DriverError::fatal(format!(
                "{what}: the BMC does not support this command ({said})"
            )),
            Failure::Command(said) => DriverError::fatal(format!("{what} failed: {said}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart_by_what_ipmitool_says() {
        let session = "Error: Unable to establish IPMI v2 / RMCP+ session";
        let class =
            |success: bool, stderr: &str| match classify(success, String::new(), stderr.into()) {
                Ok(_) => "ok",
                Err(Failure::Credentials(_)) => "credentials",
                Err(Failure::NoAnswer(_)) => "no answer",
                Err(Failure::NotImplemented(_)) => "not implemented",
                Err(Failure::Command(_)) => "command",
                Err(Failure::Busy(_)) => "busy",
                Err(Failure::Refused(_)) => "refused",
                Err(Failure::Driver(_)) => "driver",
            };
        for (success, stderr, expected) in [
            (
                false,
                format!("> RAKP 2 HMAC is invalid; {session}"),
                "credentials",
            ),
            (
                false,
                format!("Get Auth Capabilities error; {session}"),
                "no answer",
            ),
            (false, session.to_string(), "no answer"),
            (
                false,
                "MC reset command failed: Invalid command".into(),
                "not implemented",
            ),
            // ipmitool exits 0 after this one.
            (
                true,
                "Set Chassis Boot Parameter 5 failed: Unspecified error".into(),
                "command",
            ),
            (false, "Error: Node busy".into(), "busy"),
            (false, "Invalid authentication algorithm".into(), "refused"),
            (true, String::new(), "ok"),
        ] {
            assert_eq!(class(success, &stderr), expected, "{stderr}");
        }
    }
}
