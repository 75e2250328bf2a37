//! A static HTTP file server on 127.0.0.1 for deploy images: what a
//! deploy ramdisk downloads from (ironic-python-agent reads with
//! `requests`, which needs `Content-Length`). Every request is counted per
//! file, so a test can assert an image was downloaded once. Std threads
//! only; stops when dropped. Shared by the tests and the benchmarks through
//! `#[path]`.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    /// The file name asked for (the path without its leading `/`).
    pub file: String,
    pub status: u16,
}

pub struct ImageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<Served>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl ImageServer {
    /// Serve the regular files directly in `dir` (no subdirectories) on a
    /// free port of 127.0.0.1.
    pub fn serve(dir: &Path) -> Self {
        Self::serve_paced(dir, Duration::ZERO)
    }

    /// As `serve`, pausing `pace` after each 64 KiB of a body: a slow
    /// network, so that a test can act while an image is being written.
    pub fn serve_paced(dir: &Path, pace: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let dir = dir.to_path_buf();
        let acceptor = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (dir, stop, served) = (dir.clone(), Arc::clone(&stop), Arc::clone(&served));
                    std::thread::spawn(move || answer(stream, &dir, pace, &stop, &served));
                }
            })
        };
        Self {
            addr,
            stop,
            served,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT/<file>`.
    pub fn url(&self, file: &str) -> String {
        format!("http://{}/{file}", self.addr)
    }

    /// Every request so far, in the order they were answered.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap().clone()
    }

    /// How many requests named `file`, whatever their method and answer.
    pub fn requests(&self, file: &str) -> usize {
        self.served().iter().filter(|s| s.file == file).count()
    }

    /// How many times `file` was sent whole (a GET answered 200).
    pub fn downloads(&self, file: &str) -> usize {
        self.served()
            .iter()
            .filter(|s| s.file == file && s.method == "GET" && s.status == 200)
            .count()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept: one connection wakes it to see
        // the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The file a request path names inside `dir`: one plain name, no
/// traversal, no query.
fn file_in(dir: &Path, path: &str) -> Option<(String, PathBuf)> {
    let name = path.split(['?', '#']).next()?.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return None;
    }
    let file = dir.join(name);
    file.is_file().then(|| (name.to_string(), file))
}

/// Answer one request on `stream`, then close it.
fn answer(
    stream: TcpStream,
    dir: &Path,
    pace: Duration,
    stop: &AtomicBool,
    served: &Mutex<Vec<Served>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    // The headers: read to the blank line, none is needed.
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let found = file_in(dir, &path);
    let name = found
        .as_ref()
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| path.trim_start_matches('/').to_string());
    let mut stream = stream;
    let status = match (&*method, found) {
        ("GET" | "HEAD", Some((_, file))) => match std::fs::File::open(&file) {
            Ok(mut body) => {
                let length = body.metadata().map(|m| m.len()).unwrap_or(0);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {length}\r\nConnection: close\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).is_ok() && method == "GET" {
                    send(&mut body, &mut stream, pace, stop);
                }
                200
            }
            Err(_) => status_only(&mut stream, 500, "Internal Server Error"),
        },
        ("GET" | "HEAD", None) => status_only(&mut stream, 404, "Not Found"),
        _ => status_only(&mut stream, 405, "Method Not Allowed"),
    };
    served.lock().unwrap().push(Served {
        method,
        file: name,
        status,
    });
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Copy the body in chunks, `pace` apart, giving up once the server stops.
fn send(body: &mut std::fs::File, stream: &mut TcpStream, pace: Duration, stop: &AtomicBool) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match body.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                if !pace.is_zero() {
                    std::thread::sleep(pace);
                }
            }
        }
    }
}

fn status_only(stream: &mut TcpStream, status: u16, reason: &str) -> u16 {
    let _ = stream.write_all(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    status
}
