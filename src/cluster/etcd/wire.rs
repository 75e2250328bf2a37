//! The JSON shapes of etcd's v3 gateway (grpc-gateway over etcd's protobuf
//! API) and their traps: keys and values are base64, 64-bit integers come
//! as strings (numbers are accepted too), and a field at its default value
//! is left out (a failed txn has no `succeeded`, an empty range no `kvs`,
//! an expired lease's keepalive no `TTL`). Every answer is untrusted: what
//! does not fit these shapes is an error, never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, de::DeserializeOwned};

use super::{EtcdError, Kv, WatchEvent};

/// grpc's status codes that mean something to the client.
pub const CODE_NOT_FOUND: i64 = 5;
pub const CODE_PERMISSION_DENIED: i64 = 7;
pub const CODE_OUT_OF_RANGE: i64 = 11;
pub const CODE_UNAUTHENTICATED: i64 = 16;

/// The longest piece of an answer an error message quotes, in bytes.
const QUOTE_BYTES: usize = 300;

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// An answer's body as `T`, or `Invalid` saying what it was not.
pub fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, EtcdError> {
    serde_json::from_slice(body).map_err(|e| {
        EtcdError::Invalid(format!(
            "etcd's answer to {what} is not the gateway's JSON ({e}): {}",
            quote(body)
        ))
    })
}

/// The start of an untrusted body, lossily decoded, for an error message.
pub fn quote(body: &[u8]) -> String {
    let mut end = body.len().min(QUOTE_BYTES);
    // Cut at a character boundary of the lossy text: back off to a byte
    // that does not continue a UTF-8 sequence.
    while end < body.len() && end > 0 && (body[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    let text = String::from_utf8_lossy(&body[..end]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < body.len() {
        out.push('…');
    }
    out
}

/// An int64 as the gateway writes it: a string of digits, or a number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct I64(pub i64);

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = I64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a 64-bit integer, as a string or a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<I64, E> {
                Ok(I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<I64, E> {
                i64::try_from(v)
                    .map(I64)
                    .map_err(|_| E::custom(format!("{v} does not fit in 64 signed bits")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<I64, E> {
                v.parse()
                    .map(I64)
                    .map_err(|_| E::custom(format!("`{}` is not a 64-bit integer", cut(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<I64, E> {
                Ok(I64(0))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// Bytes as the gateway writes them: standard base64.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = B64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<B64, E> {
                STANDARD
                    .decode(v)
                    .map(B64)
                    .map_err(|_| E::custom(format!("`{}` is not base64", cut(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<B64, E> {
                Ok(B64(Vec::new()))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// A string field that may be `null` (the gateway never writes one, but a
/// `null` is no reason to fail).
fn string_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

fn bool_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or_default())
}

fn cut(v: &str) -> &str {
    let mut end = v.len().min(60);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    pub revision: I64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireKv {
    pub key: B64,
    pub create_revision: I64,
    pub mod_revision: I64,
    pub version: I64,
    pub value: B64,
    pub lease: I64,
}

impl WireKv {
    pub fn into_kv(self) -> Result<Kv, EtcdError> {
        let key = String::from_utf8(self.key.0).map_err(|e| {
            EtcdError::Invalid(format!(
                "etcd returned a key that is not UTF-8: {}",
                quote(e.as_bytes())
            ))
        })?;
        Ok(Kv {
            key,
            value: self.value.0,
            create_revision: self.create_revision.0,
            mod_revision: self.mod_revision.0,
            version: self.version.0,
            lease: self.lease.0,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<WireKv>,
    #[serde(deserialize_with = "bool_or_null")]
    pub more: bool,
    pub count: I64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    pub header: Header,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteResponse {
    pub header: Header,
    pub deleted: I64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    #[serde(deserialize_with = "bool_or_null")]
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// One answer of a txn branch: exactly one of these is set.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_put: Option<PutResponse>,
    pub response_delete_range: Option<DeleteResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseGrantResponse {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: I64,
    #[serde(rename = "TTL")]
    pub ttl: I64,
    #[serde(deserialize_with = "string_or_null")]
    pub error: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseKeepAliveResponse {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: I64,
    #[serde(rename = "TTL")]
    pub ttl: I64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthenticateResponse {
    #[serde(deserialize_with = "string_or_null")]
    pub token: String,
}

/// One line of a streamed answer (keepalive, watch): a message or an error.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
pub struct StreamLine<T> {
    #[serde(default)]
    pub result: Option<T>,
    #[serde(default)]
    pub error: Option<StreamError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamError {
    pub grpc_code: I64,
    pub http_code: I64,
    #[serde(deserialize_with = "string_or_null")]
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub header: Header,
    #[serde(deserialize_with = "bool_or_null")]
    pub created: bool,
    #[serde(deserialize_with = "bool_or_null")]
    pub canceled: bool,
    pub compact_revision: I64,
    #[serde(deserialize_with = "string_or_null")]
    pub cancel_reason: String,
    pub events: Vec<WireEvent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireEvent {
    /// `PUT` (left out, being the default) or `DELETE`.
    #[serde(rename = "type", deserialize_with = "string_or_null")]
    pub kind: String,
    pub kv: WireKv,
    pub prev_kv: Option<WireKv>,
}

impl WireEvent {
    /// The event; a delete carries the deleted key's last value, create
    /// revision, version and lease from `prev_kv` when the watch asked for
    /// it, with the delete's own mod_revision.
    pub fn into_event(self) -> Result<WatchEvent, EtcdError> {
        match self.kind.as_str() {
            "" | "PUT" => Ok(WatchEvent::Put(self.kv.into_kv()?)),
            "DELETE" => {
                let deleted = self.kv.into_kv()?;
                Ok(WatchEvent::Delete(match self.prev_kv {
                    Some(prev) => Kv {
                        mod_revision: deleted.mod_revision,
                        ..prev.into_kv()?
                    },
                    None => deleted,
                }))
            }
            other => Err(EtcdError::Invalid(format!(
                "etcd sent a watch event of unknown type `{}`",
                cut(other)
            ))),
        }
    }
}

/// The body of an answer that is not 2xx: `{"error", "message", "code"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "string_or_null")]
    pub error: String,
    #[serde(deserialize_with = "string_or_null")]
    pub message: String,
    pub code: I64,
}

/// What an answer other than 2xx says: its grpc code and message. A body
/// that is not etcd's error JSON is quoted as the message, with code 0.
pub fn error_of(body: &[u8]) -> (i64, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            let message = if e.message.is_empty() {
                e.error
            } else {
                e.message
            };
            (e.code.0, quote(message.as_bytes()))
        }
        Err(_) => (0, quote(body)),
    }
}

/// Whether a grpc error is etcd saying a lease is gone.
pub fn is_lease_gone(code: i64, message: &str) -> bool {
    code == CODE_NOT_FOUND && message.contains("lease not found")
}

/// Whether a grpc error is etcd saying a revision was compacted.
pub fn is_compacted(code: i64, message: &str) -> bool {
    code == CODE_OUT_OF_RANGE && message.contains("compacted")
}

/// Whether a grpc error is etcd refusing the auth token (expired, or issued
/// by another member: simple tokens live in one member's memory).
pub fn is_bad_token(code: i64, message: &str) -> bool {
    code == CODE_UNAUTHENTICATED || message.contains("invalid auth token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_read_strings_numbers_and_absence() {
        let r: RangeResponse =
            serde_json::from_str(r#"{"header":{"revision":"9"},"count":3}"#).unwrap();
        assert_eq!((r.header.revision.0, r.count.0, r.kvs.len()), (9, 3, 0));
        let r: RangeResponse = serde_json::from_str("{}").unwrap();
        assert_eq!((r.header.revision.0, r.count.0, r.more), (0, 0, false));
        assert!(serde_json::from_str::<RangeResponse>(r#"{"count":"3x"}"#).is_err());
        assert!(
            serde_json::from_str::<RangeResponse>(r#"{"count":18446744073709551615}"#).is_err()
        );
    }

    #[test]
    fn a_failed_txn_has_no_succeeded() {
        let t: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"4"}}"#).unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.header.revision.0, 4);
    }

    #[test]
    fn keys_and_values_are_base64() {
        let kv: WireKv =
            serde_json::from_str(r#"{"key":"YS94","value":"aGVsbG8=","lease":"7"}"#).unwrap();
        let kv = kv.into_kv().unwrap();
        assert_eq!(
            (kv.key.as_str(), kv.value.as_slice(), kv.lease),
            ("a/x", &b"hello"[..], 7)
        );
        assert!(serde_json::from_str::<WireKv>(r#"{"key":"!!"}"#).is_err());
        let not_utf8: WireKv = serde_json::from_str(r#"{"key":"/w=="}"#).unwrap();
        assert!(matches!(not_utf8.into_kv(), Err(EtcdError::Invalid(_))));
    }

    #[test]
    fn a_delete_takes_what_it_deleted_from_prev_kv() {
        let e: WireEvent = serde_json::from_str(
            r#"{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"5"},
                "prev_kv":{"key":"YQ==","create_revision":"2","mod_revision":"4","version":"3","value":"eA==","lease":"8"}}"#,
        )
        .unwrap();
        let WatchEvent::Delete(kv) = e.into_event().unwrap() else {
            panic!("a delete")
        };
        assert_eq!(
            (
                kv.mod_revision,
                kv.create_revision,
                kv.version,
                kv.lease,
                kv.value
            ),
            (5, 2, 3, 8, b"x".to_vec())
        );
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let (code, message) = error_of(
            br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        );
        assert!(is_lease_gone(code, &message));
        let (code, message) = error_of(b"Not Found\n");
        assert_eq!((code, message.as_str()), (0, "Not Found "));
    }

    #[test]
    fn quotes_are_short_and_printable() {
        let long = vec![b'a'; 1000];
        let q = quote(&long);
        assert!(q.len() <= QUOTE_BYTES + '…'.len_utf8() && q.ends_with('…'));
        let q = quote("é".repeat(400).as_bytes());
        assert!(q.ends_with('…') && !q.contains('\u{fffd}'));
        assert_eq!(quote(b"a\x00b\nc"), "a b c");
    }
}
