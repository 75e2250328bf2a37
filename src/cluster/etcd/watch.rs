//! A watch of a prefix: one long `POST /v3/watch` whose answer is a
//! chunked stream of JSON lines, `{"result": WatchResponse}` or
//! `{"error": ...}`, turned into batches of events.

use serde_json::{Value, json};

use super::wire::{self, b64};
use super::{Etcd, EtcdError, Kind, MAX_BODY, MAX_WATCH_LINE, WatchEvent, prefix_range, refusal};

type Batch = (i64, Vec<WatchEvent>);

/// The watch of `prefix` from `start_revision` (0: from now) as a stream
/// that ends after its first error. Nothing is sent before it is polled.
pub(super) fn stream(
    etcd: Etcd,
    prefix: &str,
    start_revision: i64,
    prev_kv: bool,
) -> impl futures_util::Stream<Item = Result<Batch, EtcdError>> + Send + 'static {
    let (key, range_end) = prefix_range(prefix);
    let watch = Watch {
        etcd,
        key,
        range_end,
        next_revision: start_revision.max(0),
        prev_kv,
        open: None,
        buf: Vec::new(),
        scanned: 0,
        renewed: false,
        done: false,
    };
    futures_util::stream::unfold(watch, |mut watch| async move {
        if watch.done {
            return None;
        }
        let item = watch.next_batch().await;
        watch.done = item.is_err();
        Some((item, watch))
    })
}

struct Watch {
    etcd: Etcd,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Where a new connection starts: after the last event seen, or after
    /// the revision the watch was created at (0 before that, from now).
    next_revision: i64,
    prev_kv: bool,
    open: Option<Open>,
    /// Bytes received and not yet split into lines.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line break.
    scanned: usize,
    /// Whether the token was renewed since the last watch etcd created.
    renewed: bool,
    done: bool,
}

struct Open {
    endpoint: String,
    response: reqwest::Response,
    /// The token the watch was opened with.
    token: Option<std::sync::Arc<str>>,
}

/// What one line of the stream means.
enum Message {
    Batch(Batch),
    Nothing,
    /// etcd refused the token: authenticate again and reconnect.
    Reconnect,
}

impl Watch {
    async fn next_batch(&mut self) -> Result<Batch, EtcdError> {
        loop {
            if self.open.is_none() {
                self.open = Some(self.connect().await?);
                self.buf.clear();
                self.scanned = 0;
            }
            while let Some(line) = self.take_line()? {
                match self.message(&line)? {
                    Message::Batch(batch) => return Ok(batch),
                    Message::Nothing => {}
                    Message::Reconnect => {
                        self.open = None;
                        break;
                    }
                }
            }
            let Some(open) = self.open.as_mut() else {
                continue;
            };
            match open.response.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: open.endpoint.clone(),
                        message: "the watch stream ended".into(),
                    });
                }
                Err(e) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: open.endpoint.clone(),
                        message: format!("the watch stream broke: {}", super::causes(&e)),
                    });
                }
            }
        }
    }

    /// Open the watch at the first endpoint that answers.
    async fn connect(&mut self) -> Result<Open, EtcdError> {
        let mut create = json!({"key": b64(&self.key), "range_end": b64(&self.range_end)});
        if self.next_revision > 0 {
            create["start_revision"] = Value::String(self.next_revision.to_string());
        }
        if self.prev_kv {
            create["prev_kv"] = Value::Bool(true);
        }
        let body =
            serde_json::to_vec(&json!({"create_request": create})).expect("JSON values serialize");
        loop {
            let token = self.etcd.token().await?;
            let (endpoint, response) = self
                .etcd
                .open_stream(Kind::Watch, &body, token.as_deref())
                .await?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(Open {
                    endpoint,
                    response,
                    token,
                });
            }
            let body = super::read_capped(response, MAX_BODY)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            let (code, message) = wire::error_of(&body);
            if self.may_renew(code, &message) {
                self.etcd.forget_token(token.as_deref());
                continue;
            }
            return Err(refusal(status, code, message));
        }
    }

    /// Whether a refusal is of the token and it was not renewed yet (then
    /// it is renewed once).
    fn may_renew(&mut self, code: i64, message: &str) -> bool {
        let renew =
            self.etcd.inner.login.is_some() && !self.renewed && wire::is_bad_token(code, message);
        self.renewed |= renew;
        renew
    }

    fn forget_token(&self) {
        let token = self.open.as_ref().and_then(|open| open.token.as_deref());
        self.etcd.forget_token(token);
    }

    /// The next whole line received, if there is one.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, EtcdError> {
        match self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            Some(at) if self.scanned + at <= MAX_WATCH_LINE => {
                let line: Vec<u8> = self.buf.drain(..=self.scanned + at).collect();
                self.scanned = 0;
                Ok(Some(line))
            }
            None if self.buf.len() <= MAX_WATCH_LINE => {
                self.scanned = self.buf.len();
                Ok(None)
            }
            _ => Err(EtcdError::Invalid(format!(
                "etcd sent a watch message longer than {} MiB; rivet reads at most that much of one",
                MAX_WATCH_LINE >> 20
            ))),
        }
    }

    fn message(&mut self, line: &[u8]) -> Result<Message, EtcdError> {
        if line.trim_ascii().is_empty() {
            return Ok(Message::Nothing);
        }
        let line: wire::StreamLine<wire::WatchResponse> = wire::parse("a watch", line)?;
        if let Some(e) = line.error {
            let message = wire::quote(e.message.as_bytes());
            if self.may_renew(e.grpc_code.0, &message) {
                self.forget_token();
                return Ok(Message::Reconnect);
            }
            let status = u16::try_from(e.http_code.0).unwrap_or(200);
            return Err(refusal(status, e.grpc_code.0, message));
        }
        let Some(answer) = line.result else {
            return Err(EtcdError::Invalid(
                "etcd sent a watch message with neither result nor error".into(),
            ));
        };
        if answer.canceled {
            if answer.compact_revision.0 > 0 {
                return Err(EtcdError::Compacted {
                    revision: answer.compact_revision.0,
                });
            }
            let reason = wire::quote(answer.cancel_reason.as_bytes());
            if self.may_renew(0, &reason) {
                self.forget_token();
                return Ok(Message::Reconnect);
            }
            return Err(EtcdError::Status {
                status: 200,
                message: format!("etcd cancelled the watch: {reason}"),
            });
        }
        if answer.created {
            self.renewed = false;
            if self.next_revision == 0 {
                self.next_revision = answer.header.revision.0 + 1;
            }
        }
        if answer.events.is_empty() {
            return Ok(Message::Nothing);
        }
        let events = answer
            .events
            .into_iter()
            .map(wire::WireEvent::into_event)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = events.last() {
            let (WatchEvent::Put(kv) | WatchEvent::Delete(kv)) = last;
            self.next_revision = self.next_revision.max(kv.mod_revision + 1);
        }
        Ok(Message::Batch((answer.header.revision.0, events)))
    }
}
