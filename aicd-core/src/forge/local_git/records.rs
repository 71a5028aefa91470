//! Pull requests and comments of a local repository, kept as files under `<git-dir>/aicd/`:
//! `pulls/<number>.json` and `comments/<issue>/<id>.md`.
//!
//! New files are written to a temporary name and hard-linked into place, so a reader never sees a
//! half-written file and two processes can never take the same number; replaced files are written
//! to a temporary name and renamed over the old one.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::super::CommentId;
use super::super::rules::{rejected, unavailable};
use crate::forge::PullRequest;
use crate::{Error, Result};

/// Largest record file read back.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// The records of one repository.
pub(super) struct Records {
    root: PathBuf,
}

impl Records {
    /// The records under `<common_dir>/aicd`.
    pub(super) fn new(common_dir: &Path) -> Self {
        Self { root: common_dir.join("aicd") }
    }

    fn pulls_dir(&self) -> PathBuf {
        self.root.join("pulls")
    }

    fn comments_dir(&self, issue: u64) -> PathBuf {
        self.root.join("comments").join(issue.to_string())
    }

    /// Every pull request, by number.
    pub(super) fn pulls(&self) -> Result<Vec<PullRequest>> {
        let mut pulls = Vec::new();
        for (_, path) in numbered(&self.pulls_dir(), "json")? {
            let raw = read_bounded(&path)?;
            let pull: PullRequest = serde_json::from_slice(&raw)
                .map_err(|e| Error::Corrupt(format!("pull request record {}: {e}", path.display())))?;
            pulls.push(pull);
        }
        Ok(pulls)
    }

    /// Records a new pull request made by `make` from the number it gets (the next free one).
    pub(super) fn create_pull(&self, make: impl Fn(u64) -> PullRequest) -> Result<PullRequest> {
        let dir = self.pulls_dir();
        let next = numbered(&dir, "json")?.last().map_or(1, |(n, _)| n + 1);
        let mut made = None;
        create_numbered(&dir, "json", next, |number| {
            let pull = make(number);
            let json = serde_json::to_vec_pretty(&pull).map_err(|e| Error::Corrupt(e.to_string()))?;
            made = Some(pull);
            Ok(json)
        })?;
        made.ok_or_else(|| unavailable("the pull request could not be recorded"))
    }

    /// Records a new comment on `issue`; ids are unique across the repository's issues.
    pub(super) fn post_comment(&self, issue: u64, body: &str) -> Result<CommentId> {
        let all = self.root.join("comments");
        let mut next = 1;
        for (_, dir) in numbered(&all, "")? {
            if let Some((last, _)) = numbered(&dir, "md")?.last() {
                next = next.max(last + 1);
            }
        }
        let id = create_numbered(&self.comments_dir(issue), "md", next, |_| Ok(body.as_bytes().to_vec()))?;
        Ok(CommentId(id))
    }

    /// Replaces the text of comment `id` on `issue`.
    pub(super) fn update_comment(&self, issue: u64, id: CommentId, body: &str) -> Result<()> {
        let dir = self.comments_dir(issue);
        let path = dir.join(format!("{}.md", id.0));
        if !path.is_file() {
            return Err(Error::NotFound { kind: "comment" });
        }
        let tmp = write_temp(&dir, body.as_bytes())?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(&path, e)
        })
    }

    /// The text of each comment on `issue`, oldest first.
    pub(super) fn comments(&self, issue: u64) -> Result<Vec<String>> {
        numbered(&self.comments_dir(issue), "md")?
            .into_iter()
            .map(|(_, path)| read_bounded(&path).map(|raw| String::from_utf8_lossy(&raw).into_owned()))
            .collect()
    }
}

/// The entries of `dir` named `<number>.<ext>` (or `<number>` when `ext` is empty), by number; none
/// if `dir` does not exist.
fn numbered(dir: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stem = if ext.is_empty() { Some(name) } else { name.strip_suffix(ext).and_then(|s| s.strip_suffix('.')) };
        let number = stem.filter(|s| s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse::<u64>().ok());
        if let Some(number) = number.filter(|n| *n > 0) {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Creates `<dir>/<n>.<ext>` for the first free `n` from `first`, with the content `content(n)`,
/// and returns `n`.
fn create_numbered(dir: &Path, ext: &str, first: u64, mut content: impl FnMut(u64) -> Result<Vec<u8>>) -> Result<u64> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    for number in first..first.saturating_add(1000) {
        let target = dir.join(format!("{number}.{ext}"));
        let bytes = content(number)?;
        let tmp = write_temp(dir, &bytes)?;
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(number),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // No hard links on this file system: create the file exclusively instead.
            Err(_) => match fs::OpenOptions::new().write(true).create_new(true).open(&target) {
                Ok(mut file) => {
                    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| io_error(&target, e))?;
                    return Ok(number);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&target, e)),
            },
        }
    }
    Err(unavailable(format!("could not find a free number in {}", dir.display())))
}

/// Writes `bytes` to a new temporary file in `dir` and returns its path.
fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    Ok(tmp)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut raw))
        .map_err(|e| io_error(path, e))?;
    if raw.len() as u64 > MAX_RECORD_BYTES {
        return Err(Error::Corrupt(format!("{} is larger than {MAX_RECORD_BYTES} bytes", path.display())));
    }
    Ok(raw)
}

fn io_error(path: &Path, e: io::Error) -> Error {
    let message = format!("{}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => rejected(message),
        _ => unavailable(message),
    }
}
