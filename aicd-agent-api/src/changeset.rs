//! The coder's output: the file changes to propose.

mod content_repr;

use serde::{Deserialize, Serialize};

/// A set of file changes produced by [`Agent::code`](crate::Agent::code).
///
/// In JSON a change looks like
/// `{"path":"a.txt","op":{"kind":"write","content":{"text":"hi\n"}}}`;
/// content that is not valid UTF-8 is written as `{"hex":"ff00"}` instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Changeset {
    /// A summary of the changes, readable by a person (e.g. a commit message).
    pub summary: String,
    /// The changes, in order. The policy engine validates their paths.
    pub changes: Vec<FileChange>,
}

impl Changeset {
    /// A changeset with a summary and changes.
    pub fn new(summary: impl Into<String>, changes: Vec<FileChange>) -> Self {
        Self { summary: summary.into(), changes }
    }

    /// The paths the changeset touches, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.changes.iter().map(|c| c.path.as_str()).collect()
    }

    /// True when there are no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The sum of the sizes of all written contents, in bytes (deletes
    /// count zero).
    pub fn total_bytes(&self) -> usize {
        self.changes.iter().filter_map(|c| c.content()).map(<[u8]>::len).sum()
    }
}

/// One change to one file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileChange {
    /// The path, relative to the repository root, `/`-separated, as the
    /// agent wrote it (not yet validated).
    pub path: String,
    /// What to do to the file.
    pub op: ChangeOp,
}

impl FileChange {
    /// A change that writes `content` to `path`, creating or replacing it.
    pub fn write(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Self { path: path.into(), op: ChangeOp::Write { content: content.into() } }
    }

    /// A change that deletes the file at `path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self { path: path.into(), op: ChangeOp::Delete }
    }

    /// The written content, or `None` for a delete.
    pub fn content(&self) -> Option<&[u8]> {
        match &self.op {
            ChangeOp::Write { content } => Some(content),
            ChangeOp::Delete => None,
        }
    }

    /// True when the change deletes the file.
    pub fn is_delete(&self) -> bool {
        matches!(self.op, ChangeOp::Delete)
    }
}

/// What a [`FileChange`] does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeOp {
    /// Create or replace the file with `content` (any bytes).
    Write {
        /// The file's new content. In JSON: `{"text": ...}` when it is
        /// valid UTF-8, else `{"hex": ...}`.
        #[serde(with = "content_repr")]
        content: Vec<u8>,
    },
    /// Delete the file.
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Changeset {
        Changeset::new(
            "s",
            vec![
                FileChange::write("a.txt", "héllo\n"),
                FileChange::write("bin.dat", vec![0xff, 0x00, 0xfe, b'a']),
                FileChange::delete("old.txt"),
            ],
        )
    }

    #[test]
    fn helpers() {
        let c = sample();
        assert_eq!(c.paths(), ["a.txt", "bin.dat", "old.txt"]);
        assert_eq!(c.total_bytes(), "héllo\n".len() + 4);
        assert!(!c.is_empty());
        assert!(Changeset::default().is_empty());
        assert!(c.changes[2].is_delete());
        assert_eq!(c.changes[2].content(), None);
    }

    #[test]
    fn json_round_trip_with_non_utf8() {
        let c = sample();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["changes"][0]["op"], serde_json::json!({"kind": "write", "content": {"text": "héllo\n"}}));
        assert_eq!(json["changes"][1]["op"], serde_json::json!({"kind": "write", "content": {"hex": "ff00fe61"}}));
        assert_eq!(json["changes"][2]["op"], serde_json::json!({"kind": "delete"}));
        let back: Changeset = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Changeset>(&text).unwrap(), c);
    }

    #[test]
    fn hex_is_accepted_for_text_and_uppercase() {
        let op: ChangeOp = serde_json::from_str(r#"{"kind":"write","content":{"hex":"4869FF"}}"#).unwrap();
        assert_eq!(op, ChangeOp::Write { content: vec![b'H', b'i', 0xff] });
    }

    #[test]
    fn bad_content_is_rejected() {
        for bad in [
            r#"{"kind":"write","content":{"hex":"abc"}}"#,
            r#"{"kind":"write","content":{"hex":"zz"}}"#,
            r#"{"kind":"write","content":{"base64":"aGk="}}"#,
            r#"{"kind":"write","content":"hi"}"#,
            r#"{"kind":"write"}"#,
        ] {
            assert!(serde_json::from_str::<ChangeOp>(bad).is_err(), "{bad}");
        }
    }
}
