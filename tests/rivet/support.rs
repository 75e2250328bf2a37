//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A single-threaded runtime for a test that awaits driver calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A fleet written into a temporary directory.
pub struct TempFleet {
    pub dir: tempfile::TempDir,
}

impl TempFleet {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Copy a directory tree (files and symlinks) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if entry.file_name() == ".rivet" {
                continue;
            }
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Whether an emulator test (Redfish, IPMI, the `baremetal` client) is
/// switched off on purpose. Only `RIVET_SKIP_EMULATORS=1` does that, for a
/// laptop without the emulators; any other value runs the test. A skipped
/// test says `skipped:` and, when `RIVET_SKIPPED_LOG` names a file, adds a
/// line to it, so that a CI run, which must skip nothing, can fail on it
/// (test output of passing tests is captured and never printed).
pub fn skip_emulator_test(test: &str) -> bool {
    if std::env::var("RIVET_SKIP_EMULATORS").as_deref() != Ok("1") {
        return false;
    }
    // The test harness names each test's thread after the test.
    let current = std::thread::current();
    let name = current.name().unwrap_or("a test");
    eprintln!("skipped: {name}: {test} (RIVET_SKIP_EMULATORS=1)");
    if let Some(log) = std::env::var_os("RIVET_SKIPPED_LOG") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open RIVET_SKIPPED_LOG");
        writeln!(file, "skipped: {name}: {test}").expect("write RIVET_SKIPPED_LOG");
    }
    true
}
