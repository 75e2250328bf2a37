//! A real etcd for the tests and the benchmarks: one member of Debian's
//! `etcd-server` (3.4) serving clients on a free port of 127.0.0.1, with
//! its data on tmpfs (`/dev/shm`, a temporary directory where there is
//! none) because this build has no `--unsafe-no-fsync`. Shared by both
//! through `#[path]`.
//!
//! A missing `etcd` is a failure that says how to install it; deciding to
//! skip (`RIVET_SKIP_EMULATORS=1`) is the caller's, before `start`.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it starts (two shared
/// cores, many tests at once).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Ports handed out in this process, so two servers never race for one.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

pub struct EtcdServer {
    /// The client URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    pub url: String,
    pub port: u16,
    /// The certificates of a TLS server ([`EtcdServer::start_tls`]).
    pub tls: Option<TlsFiles>,
    peer_port: u16,
    /// Where `/health` answers over plain HTTP: the client port, or a
    /// metrics port for a TLS server.
    health_port: u16,
    extra_args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

/// PEM files made with `openssl` for a TLS server: the CA that signed the
/// server's and the client's certificates, and the client's identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// A TCP port of 127.0.0.1 nothing listens on, not handed out before.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = listener.local_addr().unwrap().port();
        if TAKEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

impl EtcdServer {
    /// A fresh etcd, answering `/health`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A fresh etcd started with `args` added to its flags (e.g.
    /// `--auth-token-ttl`).
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(args, None)
    }

    /// A fresh etcd serving clients over TLS only, requiring a client
    /// certificate signed by its CA (`--client-cert-auth`).
    pub fn start_tls() -> Self {
        Self::launch(&[], Some(()))
    }

    fn launch(args: &[&str], tls: Option<()>) -> Self {
        assert!(
            on_path("etcd"),
            "etcd is not installed: apt-get install -y etcd-server \
             (or set RIVET_SKIP_EMULATORS=1 to skip the emulator tests)"
        );
        // etcd binds its ports itself: another process may take one
        // between our check and its bind, so a few tries.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!("rivet-etcd-{port}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the etcd directory");
            let tls = tls.map(|()| TlsFiles::make(&dir));
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut server = Self {
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                peer_port: free_port(),
                health_port: if tls.is_some() { free_port() } else { port },
                tls,
                extra_args: args.iter().map(|a| a.to_string()).collect(),
                dir,
                child: None,
            };
            match server.run() {
                Ok(()) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("etcd did not start: {}", failures.join("; "));
    }

    /// Start the process on this server's ports and data, and wait for
    /// `/health`.
    fn run(&mut self) -> Result<(), String> {
        let name = format!("m{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.log_path()).expect("create the etcd log");
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .args(["--log-level", "error"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth")
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{}", self.health_port));
        }
        command
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run etcd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.healthy() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("etcd exited with {status}: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "etcd did not answer /health within {READY_WITHIN:?}: {}",
            self.log_tail()
        ))
    }

    /// Whether `/health` says `"health":"true"` (plain HTTP on loopback).
    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.health_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains(r#""health":"true""#)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The etcd process's pid (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd is running").id()
    }

    /// SIGTERM, and SIGKILL if it has not exited within 5 s; the data is
    /// kept for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // A paused etcd must run again to act on SIGTERM.
        signal(child.id(), libc::SIGCONT);
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// Stop, then start again on the same ports and data: keys survive,
    /// leases are reset to their full TTL, auth tokens are forgotten.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.run() {
            panic!("etcd did not restart: {why}");
        }
    }

    /// SIGSTOP: etcd keeps its connections and answers nothing (an outage
    /// that looks like a hung member).
    pub fn pause(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL works on a paused process too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

impl TlsFiles {
    /// A CA, a server certificate for 127.0.0.1 (also good for client
    /// authentication: etcd's gateway calls its own gRPC server with it)
    /// and a client certificate, all P-256, valid for two days.
    fn make(dir: &Path) -> Self {
        assert!(
            on_path("openssl"),
            "a TLS etcd needs openssl: apt-get install -y openssl"
        );
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let files = Self {
            ca: tls.join("ca.pem"),
            client_cert: tls.join("client.pem"),
            client_key: tls.join("client.key"),
            server_cert: tls.join("server.pem"),
            server_key: tls.join("server.key"),
        };
        let ca_key = tls.join("ca.key");
        openssl(
            &tls,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rivet-test-ca",
                "-keyout",
                path(&ca_key),
                "-out",
                path(&files.ca),
            ],
        );
        for (cert, key, name, usage) in [
            (
                &files.server_cert,
                &files.server_key,
                "etcd",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            (
                &files.client_cert,
                &files.client_key,
                "rivet",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let csr = tls.join(format!("{name}.csr"));
            let ext = tls.join(format!("{name}.ext"));
            std::fs::write(&ext, usage).unwrap();
            openssl(
                &tls,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    path(key),
                    "-out",
                    path(&csr),
                ],
            );
            openssl(
                &tls,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    path(&csr),
                    "-CA",
                    path(&files.ca),
                    "-CAkey",
                    path(&ca_key),
                    "-CAcreateserial",
                    "-extfile",
                    path(&ext),
                    "-out",
                    path(cert),
                ],
            );
        }
        files
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
