//! The ipmitool vendor interface: the `send_raw` and `bmc_reset` passthru.

use async_trait::async_trait;
use serde_json::Value;

use super::IpmiDriver;
use crate::driver::{DriverError, Vendor};
use crate::model::node::Node;

impl IpmiDriver {
    /// The ipmitool vendor passthru methods: `send_raw` and `bmc_reset`.
    async fn vendor_call(
        &self,
        node: &Node,
        method: &str,
        args: &Value,
    ) -> Result<Value, DriverError> {
        match method {
            "send_raw" => {
                let text = args
                    .get("raw_bytes")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        DriverError::invalid("`raw_bytes` is required, e.g. \"0x06 0x01\"")
                    })?;
                let bytes = raw_bytes(text).map_err(DriverError::invalid)?;
                let mut command = vec!["raw"];
                command.extend(bytes.iter().map(String::as_str));
                let out = self.run_change(node, &command).await?;
                Ok(Value::String(
                    out.split_whitespace().collect::<Vec<_>>().join(" "),
                ))
            }
            "bmc_reset" => {
                let warm = match args.get("warm") {
                    None | Some(Value::Null) => true,
                    Some(value) => flag(value).ok_or_else(|| {
                        DriverError::invalid(format!("`warm` must be true or false, not {value}"))
                    })?,
                };
                let kind = if warm { "warm" } else { "cold" };
                self.run_change(node, &["mc", "reset", kind]).await?;
                Ok(Value::Null)
            }
            other => Err(DriverError::unsupported(format!(
                "the ipmitool vendor interface has no method `{other}` (send_raw, bmc_reset)"
            ))),
        }
    }
}

#[async_trait]
impl Vendor for IpmiDriver {
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        _http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        self.vendor_call(node, method, &args).await
    }
}

/// `"0x06 0x01"` → `["0x06", "0x01"]`, each checked to be one byte.
fn raw_bytes(text: &str) -> Result<Vec<String>, String> {
    let bytes: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if bytes.len() < 2 {
        return Err(format!(
            "`raw_bytes` needs at least a network function and a command, e.g. \"0x06 0x01\"; got `{text}`"
        ));
    }
    for byte in &bytes {
        let value = match byte.strip_prefix("0x").or_else(|| byte.strip_prefix("0X")) {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None => byte.parse::<u8>().ok(),
        };
        if value.is_none() {
            return Err(format!(
                "`{byte}` in `raw_bytes` is not a byte (write 0x00 to 0xff)"
            ));
        }
    }
    Ok(bytes)
}

/// A passthru flag: JSON true/false or Ironic's strings ("true", "no", "1", …).
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
            "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_must_be_bytes() {
        assert_eq!(raw_bytes("0x06 0x01").unwrap(), ["0x06", "0x01"]);
        assert_eq!(raw_bytes(" 6  1 255 ").unwrap(), ["6", "1", "255"]);
        assert!(raw_bytes("0x06").is_err());
        assert!(raw_bytes("0x06 0x100").is_err());
        assert!(raw_bytes("0x06 0x01; reboot").is_err());
    }

    #[test]
    fn flags_accept_ironic_spellings() {
        assert_eq!(flag(&Value::Bool(false)), Some(false));
        assert_eq!(flag(&Value::String("True".into())), Some(true));
        assert_eq!(flag(&Value::String("0".into())), Some(false));
        assert_eq!(flag(&Value::String("maybe".into())), None);
    }
}
