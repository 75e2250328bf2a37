//! A real Redfish BMC for tests: sushy-tools' emulator (fake driver) on a
//! free 127.0.0.1 port, with N systems, optional HTTPS (a throw-away CA) and
//! Basic authentication. Stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::root;

pub struct Sushy {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub tls: bool,
}

pub struct SushyOptions {
    pub systems: usize,
    pub tls: bool,
    pub auth: Option<(&'static str, &'static str)>,
    /// Seconds a power change takes to apply.
    pub power_delay: u32,
}

impl Default for SushyOptions {
    fn default() -> Self {
        Self {
            systems: 3,
            tls: false,
            auth: None,
            power_delay: 1,
        }
    }
}

/// Where the emulator is: `$RIVET_SUSHY_VENV` or `.venv` in the project.
fn venv() -> PathBuf {
    std::env::var_os("RIVET_SUSHY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"))
}

/// Whether emulator tests were explicitly switched off (laptops).
pub fn skipped() -> bool {
    crate::support::skip_emulator_test("a Redfish test on sushy-tools")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// System `i` (1-based) of an emulator on `port`.
pub fn system_id(port: u16, i: usize) -> String {
    format!("{port:08}-0000-4000-8000-{i:012}")
}

impl Sushy {
    pub fn start(options: SushyOptions) -> Self {
        let python = venv().join("bin/python");
        assert!(
            python.exists() && venv().join("bin/sushy-emulator").exists(),
            "sushy-tools is not installed: run `python3 -m venv .venv && .venv/bin/pip install sushy-tools==2.2.0` \
             in the project (or set RIVET_SUSHY_VENV), or set RIVET_SKIP_EMULATORS=1 to skip emulator tests"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = String::from(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n",
        );
        config.push_str(&format!("SUSHY_EMULATOR_LISTEN_PORT = {port}\n"));
        config.push_str(&format!(
            "SUSHY_EMULATOR_STATE_DIR = {:?}\n",
            dir.path().join("state")
        ));
        if options.tls {
            make_certificates(dir.path());
            config.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = {:?}\n",
                dir.path().join("cert.pem")
            ));
            config.push_str(&format!(
                "SUSHY_EMULATOR_SSL_KEY = {:?}\n",
                dir.path().join("key.pem")
            ));
        }
        if let Some((user, password)) = options.auth {
            // sushy-tools accepts bcrypt entries only; bcrypt comes with it.
            let out = Command::new(&python)
                .args(["-c", "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())", user, password])
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = {:?}\n",
                dir.path().join("htpasswd")
            ));
        }
        config.push_str("SUSHY_EMULATOR_FAKE_SYSTEMS = [\n");
        for i in 1..=options.systems {
            config.push_str(&format!(
                " {{'uuid': '{}', 'name': 'node-{i:04}', 'power_state': 'Off', 'nics': [{{'mac': '52:54:{:02x}:{:02x}:{:02x}:{:02x}', 'ip': '10.0.0.{i}'}}]}},\n",
                system_id(port, i),
                port >> 8,
                port & 255,
                i >> 8,
                i & 255
            ));
        }
        config.push_str("]\n");
        std::fs::write(dir.path().join("config.py"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let child = Command::new(&python)
            .arg(root().join("tests/testbeds/sushy_fixed_delay.py"))
            .args(["--fake", "--config"])
            .arg(dir.path().join("config.py"))
            .env("RIVET_FAKE_POWER_DELAY", options.power_delay.to_string())
            // InsertMedia downloads the image here.
            .env("TMPDIR", dir.path().join("tmp"))
            .env_remove("REQUESTS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("emulator.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let sushy = Self {
            child,
            port,
            dir,
            tls: options.tls,
        };
        sushy.wait_ready(options.auth);
        sushy
    }

    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn client(&self, auth: Option<(&str, &str)>) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30));
        if self.tls {
            let pem = std::fs::read(self.ca_file()).unwrap();
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        let _ = auth;
        builder.build().unwrap()
    }

    fn wait_ready(&self, auth: Option<(&str, &str)>) {
        let client = self.client(auth);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut request = client.get(format!("{}/redfish/v1/Systems", self.base()));
            if let Some((u, p)) = auth {
                request = request.basic_auth(u, Some(p));
            }
            if request.send().is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not come up: {}",
                std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Read a resource independently of rivet.
    pub fn get(&self, path: &str, auth: Option<(&str, &str)>) -> serde_json::Value {
        let mut request = self.client(auth).get(format!("{}{path}", self.base()));
        if let Some((u, p)) = auth {
            request = request.basic_auth(u, Some(p));
        }
        request.send().unwrap().json().unwrap()
    }

    pub fn system(&self, i: usize) -> serde_json::Value {
        self.get(
            &format!("/redfish/v1/Systems/{}", system_id(self.port, i)),
            None,
        )
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away CA and a CA:FALSE leaf for 127.0.0.1 (rustls rejects a
/// self-signed CA used as the server certificate).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?} failed");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
}

/// A tiny HTTP server handing out one file, for virtual media images.
pub struct ImageServer {
    pub port: u16,
}

impl ImageServer {
    pub fn start(bytes: usize) -> Self {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(&vec![0u8; bytes]);
            }
        });
        Self { port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}
