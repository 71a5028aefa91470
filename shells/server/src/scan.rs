//! `aicd-server policy scan`: the policy engine's secret rule over a change a person is about to
//! commit, for a pre-commit hook (`scripts/hooks/pre-commit`).
//!
//! Only the `secret` rule applies. The engine's other rules judge what an agent may push (protected
//! paths such as CI workflows, deleted tests and removed assertions, binary files, size limits),
//! which people change on purpose; `unsafe_path` cannot fire on paths git itself lists. The
//! repository's `.aicd.toml` counts as in a job: its `secret_patterns` add detectors and its
//! `secret_allow` globs skip paths (with `--staged`, the staged `.aicd.toml`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use aicd_core::policy::{self, FileDiff, Policy, PolicyConfig, RuleId, Violation};

/// `policy scan`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ScanArgs {
    /// Scan what is staged for the next commit (git's index) instead of files on disk: the added,
    /// copied, modified and renamed files, where only lines the commit adds count.
    #[arg(long)]
    staged: bool,
    /// Files or directories to scan (every line counts); with --staged, limits the scan to staged
    /// files under these paths.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// A reason the scan could not run (exit status 2).
struct Unusable(String);

/// One file to scan: its path as shown, its contents before (for a staged change) and after.
struct Scanned {
    path: String,
    before: Option<Vec<u8>>,
    after: Vec<u8>,
}

/// Runs the scan: prints each finding as `path:line: rule: message` (the secret redacted) and
/// exits 1 if there is any, 0 if there is none, 2 when it cannot run (bad arguments, not a git
/// repository, an unreadable file or `.aicd.toml`).
pub(crate) fn main(args: ScanArgs) -> ExitCode {
    let scanned = if args.staged {
        staged(&args.paths)
    } else if args.paths.is_empty() {
        Err(Unusable("name the files to scan, or --staged for what is staged for the next commit".into()))
    } else {
        on_disk(&args.paths)
    };
    let findings = scanned.and_then(|(files, config)| {
        let config = PolicyConfig::from_repo_toml(&config.unwrap_or_default()).map_err(|e| Unusable(e.to_string()))?;
        let policy = Policy::from_config(&PolicyConfig::merge(&PolicyConfig::default(), &config))
            .map_err(|e| Unusable(e.to_string()))?;
        Ok(secrets(&files, &policy))
    });
    match findings {
        Err(Unusable(why)) => {
            eprintln!("aicd-server policy scan: {why}");
            ExitCode::from(2)
        }
        Ok(findings) if findings.is_empty() => ExitCode::SUCCESS,
        Ok(findings) => {
            for finding in &findings {
                let path = finding.path.as_deref().unwrap_or_default();
                match finding.line {
                    Some(line) => println!("{path}:{line}: {}: {}", finding.rule, finding.message),
                    None => println!("{path}: {}: {}", finding.rule, finding.message),
                }
            }
            eprintln!(
                "aicd-server policy scan: {} possible secret(s). Remove them, or for a false positive add the \
                 path to `secret_allow` in the [policy] table of .aicd.toml.",
                findings.len()
            );
            ExitCode::from(1)
        }
    }
}

/// The `secret` violations of `files` under `policy`.
fn secrets(files: &[Scanned], policy: &Policy) -> Vec<Violation> {
    let diffs: Vec<FileDiff<'_>> =
        files.iter().map(|f| FileDiff { path: &f.path, before: f.before.as_deref(), after: Some(&f.after) }).collect();
    policy::evaluate(&diffs, policy).into_iter().filter(|v| v.rule == RuleId::Secret).collect()
}

/// The staged files (under `paths`, if any) with HEAD's contents (a rename's or copy's source),
/// and the staged `.aicd.toml`.
fn staged(paths: &[PathBuf]) -> Result<(Vec<Scanned>, Option<String>), Unusable> {
    let mut diff: Vec<String> =
        ["diff", "--cached", "--raw", "-z", "--no-abbrev", "--diff-filter=ACMR"].map(str::to_owned).into();
    diff.push("--".into());
    diff.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
    let listing = git(&diff)?;
    let mut files = Vec::new();
    let mut fields = listing.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(header) = fields.next() {
        // `:<old mode> <new mode> <old blob> <new blob> <status>`, then the path (a rename's or
        // copy's source first).
        let header = String::from_utf8_lossy(header);
        let parts: Vec<&str> = header.trim_start_matches(':').split(' ').collect();
        let [_, new_mode, old_blob, new_blob, status] = parts[..] else {
            return Err(Unusable(format!("git diff listed something unexpected: {header}")));
        };
        if status.starts_with(['R', 'C']) {
            fields.next();
        }
        let Some(path) = fields.next() else {
            return Err(Unusable(format!("git diff listed no path after: {header}")));
        };
        // Regular files only: not symbolic links (their contents are a path) or submodules.
        if !new_mode.starts_with("100") {
            continue;
        }
        let before = match old_blob.bytes().all(|b| b == b'0') {
            true => None,
            false => Some(git(&["cat-file".into(), "blob".into(), old_blob.into()])?),
        };
        let after = git(&["cat-file".into(), "blob".into(), new_blob.into()])?;
        files.push(Scanned { path: String::from_utf8_lossy(path).into_owned(), before, after });
    }
    let config = match git(&["rev-parse".into(), "-q".into(), "--verify".into(), ":.aicd.toml".into()]) {
        Ok(_) => Some(text(git(&["cat-file".into(), "blob".into(), ":.aicd.toml".into()])?, ".aicd.toml")?),
        Err(_) => None,
    };
    Ok((files, config))
}

/// The files at `paths` (directories walked, `.git` skipped), and `.aicd.toml` of the current
/// directory if there is one.
fn on_disk(paths: &[PathBuf]) -> Result<(Vec<Scanned>, Option<String>), Unusable> {
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files)?;
    }
    let config = match std::fs::read(".aicd.toml") {
        Ok(bytes) => Some(text(bytes, ".aicd.toml")?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Unusable(format!(".aicd.toml: {e}"))),
    };
    Ok((files, config))
}

fn walk(path: &Path, files: &mut Vec<Scanned>) -> Result<(), Unusable> {
    let unreadable = |e: std::io::Error| Unusable(format!("{}: {e}", path.display()));
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).map_err(unreadable)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for entry in entries.iter().filter(|e| e.file_name().is_none_or(|name| name != ".git")) {
            walk(entry, files)?;
        }
        return Ok(());
    }
    let after = std::fs::read(path).map_err(unreadable)?;
    files.push(Scanned { path: path.to_string_lossy().into_owned(), before: None, after });
    Ok(())
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, Unusable> {
    String::from_utf8(bytes).map_err(|_| Unusable(format!("{what} is not UTF-8")))
}

/// Runs `git args` in the current directory (with the environment git gave a hook, such as
/// `GIT_INDEX_FILE`), returning its standard output.
fn git(args: &[String]) -> Result<Vec<u8>, Unusable> {
    let out = Command::new("git").args(args).output().map_err(|e| Unusable(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Unusable(format!("git {} failed: {}", args.first().map_or("", String::as_str), stderr.trim())));
    }
    Ok(out.stdout)
}
