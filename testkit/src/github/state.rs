//! What the fake GitHub remembers.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::json::{WEB, object_id};
use super::{FULL_NAME, REPO_ID};

/// A pull request opened on the fake.
#[derive(Clone, Debug)]
pub struct Pull {
    /// Its number.
    pub number: u64,
    /// Its head branch.
    pub head: String,
    /// The head commit when it was opened.
    pub head_sha: String,
    /// Its base branch.
    pub base: String,
    /// Its title.
    pub title: String,
    /// Its body.
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
}

impl Pull {
    /// Its web address.
    pub fn html_url(&self) -> String {
        format!("{WEB}/{FULL_NAME}/pull/{}", self.number)
    }
}

/// An issue comment created on the fake, with every text it has had.
#[derive(Clone, Debug)]
pub struct Comment {
    /// Its id.
    pub id: u64,
    /// The issue (or pull request) it is on.
    pub issue: u64,
    /// Its texts: the first as posted, then one per edit.
    pub bodies: Vec<String>,
}

impl Comment {
    /// Its current text.
    pub fn body(&self) -> &str {
        self.bodies.last().map(String::as_str).unwrap_or_default()
    }

    /// How many times it was edited.
    pub fn edits(&self) -> usize {
        self.bodies.len().saturating_sub(1)
    }
}

#[derive(Clone, Debug)]
pub(super) struct Commit {
    pub(super) tree: String,
    pub(super) message: String,
    pub(super) parents: Vec<String>,
}

/// A file of a tree: its mode, type and blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Leaf {
    pub(super) mode: String,
    pub(super) kind: String,
    pub(super) sha: String,
}

/// Trees are kept flat: every file by its full path.
pub(super) type Files = BTreeMap<String, Leaf>;

/// What an installation token minted by the fake may do, as its mint request asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenGrant {
    /// `repository_ids` of the mint request; `None` for every repository of the installation.
    pub repository_ids: Option<Vec<u64>>,
    /// `permissions` of the mint request (`contents` → `write`, ...); empty means the App's.
    pub permissions: BTreeMap<String, String>,
}

impl TokenGrant {
    pub(super) fn from_request(body: &Value) -> Self {
        let repository_ids = body
            .get("repository_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect());
        let permissions = body
            .get("permissions")
            .and_then(Value::as_object)
            .map(|p| p.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        Self { repository_ids, permissions }
    }

    /// Whether it reaches the repository.
    pub(super) fn reaches_repository(&self) -> bool {
        self.repository_ids.as_ref().is_none_or(|ids| ids.contains(&REPO_ID))
    }

    /// Whether it holds `permission` at `level` (`read` or `write`; `write` implies `read`).
    pub(super) fn allows(&self, permission: &str, level: &str) -> bool {
        if self.permissions.is_empty() {
            return true;
        }
        match self.permissions.get(permission).map(String::as_str) {
            Some("write") => true,
            Some("read") => level == "read",
            _ => false,
        }
    }
}

/// A GitHub user the fake knows (for the App's OAuth flow).
#[derive(Clone, Debug)]
pub(super) struct User {
    pub(super) id: u64,
    /// Whether `GET /user/installations` lists the App's installation for them.
    pub(super) sees_installation: bool,
    /// Their role in the organization `acme` (`admin`, `member`), if they are in it.
    pub(super) org_role: Option<String>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) refs: BTreeMap<String, String>,
    pub(super) commits: HashMap<String, Commit>,
    pub(super) trees: HashMap<String, Files>,
    pub(super) blobs: HashMap<String, Vec<u8>>,
    pub(super) pulls: Vec<Pull>,
    pub(super) comments: Vec<Comment>,
    pub(super) permissions: HashMap<String, String>,
    /// Installation tokens minted, by token.
    pub(super) tokens: HashMap<String, TokenGrant>,
    /// Mint requests, in order.
    pub(super) grants: Vec<TokenGrant>,
    /// Users of the OAuth flow, by login.
    pub(super) users: HashMap<String, User>,
    /// OAuth codes not yet exchanged: code → login.
    pub(super) codes: HashMap<String, String>,
    /// User tokens handed out: token → login.
    pub(super) user_tokens: HashMap<String, String>,
    /// User tokens revoked through `DELETE /applications/{client_id}/token`.
    pub(super) revoked: Vec<String>,
    /// Paths (prefixes) that answer with a status instead: GitHub failing.
    pub(super) failing: Vec<(String, u16)>,
    /// Requests no route of the fake knows, as `METHOD /path?query`.
    pub(super) unknown: Vec<String>,
}

impl State {
    pub(super) fn put_blob(&mut self, content: Vec<u8>) -> String {
        let sha = object_id(&[b"blob", &content]);
        self.blobs.insert(sha.clone(), content);
        sha
    }

    pub(super) fn put_tree(&mut self, files: Files) -> String {
        let listing: Vec<String> = files.iter().map(|(p, l)| format!("{} {} {} {p}", l.mode, l.kind, l.sha)).collect();
        let sha = object_id(&[b"tree", listing.join("\n").as_bytes()]);
        self.trees.insert(sha.clone(), files);
        sha
    }

    pub(super) fn put_commit(&mut self, commit: Commit) -> String {
        let parents = commit.parents.join(",");
        let sha = object_id(&[b"commit", commit.tree.as_bytes(), parents.as_bytes(), commit.message.as_bytes()]);
        self.commits.insert(sha.clone(), commit);
        sha
    }

    /// The tree of a commit or of a branch's head, or the tree of that sha.
    pub(super) fn tree_of(&self, name: &str) -> String {
        let commit = if self.commits.contains_key(name) { Some(name) } else { self.refs.get(name).map(String::as_str) };
        commit.and_then(|c| self.commits.get(c)).map_or_else(|| name.to_owned(), |c| c.tree.clone())
    }
}
