//! A fresh SQLite database file per test.

use std::path::{Path, PathBuf};

/// A temporary directory holding a SQLite database path; both are removed on drop.
#[derive(Debug)]
pub struct TestSqlite {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TestSqlite {
    /// A path to a database file that does not exist yet, in a new temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("aicd-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for SQLite: {e}"));
        let path = dir.path().join("aicd.db");
        Self { dir, path }
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory (for other files the test needs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestSqlite {
    fn default() -> Self {
        Self::new()
    }
}
