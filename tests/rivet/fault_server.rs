//! An in-process HTTP server with scripted answers, for BMC faults a real
//! emulator cannot produce (5xx, garbage bodies, hangs, power that never
//! arrives) and for Redfish features sushy-tools' fake driver lacks
//! (SessionService, BIOS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An extra header of an `Answer` that the server does not send: its value
/// in milliseconds is the pause after each byte of the body.
pub const TRICKLE: &str = "x-fault-trickle-ms";

/// What to answer: status, extra headers, body; `None` = never answer.
pub type Answer = Option<(u16, Vec<(String, String)>, String)>;

pub struct FaultServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FaultServer {
    pub fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.is_empty() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.trim().split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    let request = Seen {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    log.lock().unwrap().push(request.clone());
                    match handler(&request) {
                        None => std::thread::sleep(std::time::Duration::from_secs(3600)),
                        Some((status, extra, body)) => {
                            let mut head = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                                body.len()
                            );
                            let mut trickle = None;
                            for (k, v) in extra {
                                if k == TRICKLE {
                                    trickle = v.parse().ok().map(std::time::Duration::from_millis);
                                    continue;
                                }
                                head.push_str(&format!("{k}: {v}\r\n"));
                            }
                            head.push_str("\r\n");
                            let _ = stream.write_all(head.as_bytes());
                            match trickle {
                                None => {
                                    let _ = stream.write_all(body.as_bytes());
                                }
                                // A slow BMC: one byte per pause, while the
                                // client keeps the connection.
                                Some(pause) => {
                                    for byte in body.as_bytes() {
                                        if stream.write_all(&[*byte]).is_err() {
                                            break;
                                        }
                                        std::thread::sleep(pause);
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { port, seen }
    }

    pub fn requests(&self, method: &str, path_part: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_part))
            .cloned()
            .collect()
    }
}

/// `body` as JSON, one byte every `pause_ms`.
pub fn trickled(status: u16, body: serde_json::Value, pause_ms: u64) -> Answer {
    Some((
        status,
        vec![
            ("Content-Type".into(), "application/json".into()),
            (TRICKLE.into(), pause_ms.to_string()),
        ],
        body.to_string(),
    ))
}

pub fn json(status: u16, body: serde_json::Value) -> Answer {
    Some((
        status,
        vec![("Content-Type".into(), "application/json".into())],
        body.to_string(),
    ))
}
