//! A private PostgreSQL server of a test's own, for tests that restart or crash the database
//! without disturbing the shared one other tests use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL cluster in a temporary directory, listening on `127.0.0.1:<port>` with trust
/// authentication for `postgres`; stopped (immediately) and removed when dropped. When the test
/// runs as root, the server runs as the `postgres` system user (PostgreSQL refuses root).
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a cluster. Panics, saying why, if PostgreSQL's server programs are not
    /// found (`AICD_PG_BINDIR`, else `/usr/lib/postgresql/<version>/bin`, else `PATH`).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("aicd-pg-").tempdir().expect("a directory for the cluster");
        let as_postgres = is_root();
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let cluster = Self { dir, bin, port: crate::RedisServer::free_port(), as_postgres };
        let data = cluster.data().display().to_string();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        cluster.ctl(&["start"]);
        cluster
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of its `postgres` database as the superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crashes and restarts the server (`pg_ctl restart -m immediate`): every connection is cut,
    /// and the server recovers from its write-ahead log before it answers again.
    pub fn restart(&self) {
        self.ctl(&["restart", "-m", "immediate"]);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
            panic!("cannot run {} (PostgreSQL's server programs are needed): {e}", program.display())
        });
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AICD_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    // The newest installed, else whatever `PATH` finds.
    versions.pop().unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_to_postgres(dir: &Path) {
    let status = Command::new("chown").arg("postgres:postgres").arg(dir).status();
    assert!(status.is_ok_and(|s| s.success()), "cannot hand {} to the postgres user", dir.display());
}
