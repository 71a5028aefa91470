//! The tools the model may call: the read tools every step offers, and one submit tool per
//! step. Their names and parameters are a fixed protocol; arguments are checked against them
//! before anything runs, and what does not fit goes back to the model as a tool error.

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::ToolSpec;

/// `list_files`.
pub(crate) const LIST_FILES: &str = "list_files";
/// `read_file`.
pub(crate) const READ_FILE: &str = "read_file";
/// `search`.
pub(crate) const SEARCH: &str = "search";
/// The planner's submit tool.
pub(crate) const SUBMIT_PLAN: &str = "submit_plan";
/// The coder's submit tool.
pub(crate) const SUBMIT_CHANGES: &str = "submit_changes";
/// The critic's submit tool.
pub(crate) const SUBMIT_REVIEW: &str = "submit_review";

/// The read tools, offered in every step.
pub(crate) fn read_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: LIST_FILES,
            description: "List the repository's files under a directory (all files when `path` is omitted).",
            parameters: json!({
                "type": "object",
                "properties": { "path": { "type": "string", "description": "A directory, e.g. `src/`" } },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: READ_FILE,
            description: "Read a file, with line numbers. Long files are cut: ask for a range of lines to read on.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": { "type": "string" },
                    "start_line": { "type": "integer", "minimum": 1 },
                    "end_line": { "type": "integer", "minimum": 1 }
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: SEARCH,
            description: "Search the repository's text files for a regular expression; answers `path:line: text` lines.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "pattern": { "type": "string", "description": "A regular expression (Rust syntax)" },
                    "path": { "type": "string", "description": "Only files under this directory" }
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
        },
    ]
}

/// The planner's submit tool.
pub(crate) fn submit_plan() -> ToolSpec {
    ToolSpec {
        name: SUBMIT_PLAN,
        description: "Submit the plan. Call it once, when you know what to change.",
        parameters: json!({
            "type": "object",
            "properties": {
                "summary": { "type": "string" },
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "description": { "type": "string" },
                            "files": { "type": "array", "items": { "type": "string" } }
                        },
                        "required": ["description", "files"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["summary", "steps"],
            "additionalProperties": false
        }),
    }
}

/// The coder's submit tool.
pub(crate) fn submit_changes() -> ToolSpec {
    ToolSpec {
        name: SUBMIT_CHANGES,
        description: "Submit the change: edits applied in order. `write` gives a whole file, `delete` removes one, \
                      `replace` swaps exactly one occurrence of `search` in the current file for `replace`.",
        parameters: json!({
            "type": "object",
            "properties": {
                "summary": { "type": "string", "description": "The commit message" },
                "edits": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": { "type": "string" },
                            "action": { "type": "string", "enum": ["write", "delete", "replace"] },
                            "content": { "type": "string" },
                            "search": { "type": "string" },
                            "replace": { "type": "string" }
                        },
                        "required": ["path", "action"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["summary", "edits"],
            "additionalProperties": false
        }),
    }
}

/// The critic's submit tool.
pub(crate) fn submit_review() -> ToolSpec {
    ToolSpec {
        name: SUBMIT_REVIEW,
        description: "Submit the review. `request_changes` sends the coder back with your comments.",
        parameters: json!({
            "type": "object",
            "properties": {
                "verdict": { "type": "string", "enum": ["approve", "request_changes"] },
                "summary": { "type": "string" },
                "comments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": { "type": "string" },
                            "line": { "type": "integer", "minimum": 1 },
                            "body": { "type": "string" }
                        },
                        "required": ["body"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["verdict", "summary", "comments"],
            "additionalProperties": false
        }),
    }
}

/// `list_files` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListFiles {
    #[serde(default)]
    pub(crate) path: Option<String>,
}

/// `read_file` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadFile {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) start_line: Option<u64>,
    #[serde(default)]
    pub(crate) end_line: Option<u64>,
}

/// `search` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Search {
    pub(crate) pattern: String,
    #[serde(default)]
    pub(crate) path: Option<String>,
}

/// `submit_plan` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitPlan {
    pub(crate) summary: String,
    pub(crate) steps: Vec<PlannedStep>,
}

/// One step of `submit_plan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlannedStep {
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) files: Vec<String>,
}

/// `submit_changes` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitChanges {
    pub(crate) summary: String,
    pub(crate) edits: Vec<Edit>,
}

/// One edit of `submit_changes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Edit {
    pub(crate) path: String,
    pub(crate) action: EditAction,
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) search: Option<String>,
    #[serde(default)]
    pub(crate) replace: Option<String>,
}

/// What an edit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EditAction {
    Write,
    Delete,
    Replace,
}

/// `submit_review` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitReview {
    pub(crate) verdict: ReviewVerdict,
    pub(crate) summary: String,
    #[serde(default)]
    pub(crate) comments: Vec<ReviewComment>,
}

/// `submit_review`'s verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReviewVerdict {
    Approve,
    RequestChanges,
}

/// One comment of `submit_review`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewComment {
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) line: Option<u64>,
    pub(crate) body: String,
}

/// The arguments of a call to `tool`, read as `T`, or the tool error the model is told.
pub(crate) fn arguments<T: for<'de> Deserialize<'de>>(
    tool: &str,
    arguments: &Result<Value, String>,
) -> Result<T, String> {
    let value = arguments.as_ref().map_err(|e| format!("the arguments of `{tool}` are not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!("the arguments of `{tool}` must be a JSON object"));
    }
    serde_json::from_value(value.clone()).map_err(|e| format!("invalid arguments for `{tool}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_against_the_protocol() {
        let ok: ReadFile = arguments(READ_FILE, &Ok(json!({ "path": "a.rs", "start_line": 3 }))).unwrap();
        assert_eq!((ok.path.as_str(), ok.start_line, ok.end_line), ("a.rs", Some(3), None));
        for bad in [json!({}), json!({ "path": 3 }), json!({ "path": "a", "colour": 1 }), json!(["a"])] {
            let err = arguments::<ReadFile>(READ_FILE, &Ok(bad.clone())).unwrap_err();
            assert!(err.contains("read_file"), "{bad}: {err}");
        }
        let err = arguments::<ReadFile>(READ_FILE, &Err("expected value at line 1".into())).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let edit: SubmitChanges = arguments(
            SUBMIT_CHANGES,
            &Ok(json!({ "summary": "s", "edits": [{ "path": "a", "action": "replace", "search": "x", "replace": "y" }] })),
        )
        .unwrap();
        assert_eq!(edit.edits[0].action, EditAction::Replace);
        assert!(
            arguments::<SubmitChanges>(
                SUBMIT_CHANGES,
                &Ok(json!({ "summary": "s", "edits": [{ "path": "a", "action": "move" }] }))
            )
            .is_err()
        );
        let review: SubmitReview = arguments(
            SUBMIT_REVIEW,
            &Ok(json!({ "verdict": "request_changes", "summary": "s", "comments": [{ "body": "b" }] })),
        )
        .unwrap();
        assert_eq!(review.verdict, ReviewVerdict::RequestChanges);
    }

    #[test]
    fn every_schema_forbids_unknown_arguments() {
        let mut all = read_tools();
        all.extend([submit_plan(), submit_changes(), submit_review()]);
        for tool in all {
            assert_eq!(tool.parameters["additionalProperties"], false, "{}", tool.name);
            assert_eq!(tool.parameters["type"], "object");
        }
    }
}
