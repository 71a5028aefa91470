//! The instructions of each role: built into the crate, or read from a directory at run time
//! (`AICD_AGENT_PROMPTS_DIR`), so a private brain can be swapped in without forking the code.
//!
//! A prompt file starts with a `version: <name>` line, which is recorded with every step's
//! result; the rest is the system prompt.

use std::path::Path;

/// One role's instructions and their version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// The version recorded with the step's result (`planner@1`).
    pub version: String,
    /// The system prompt.
    pub text: String,
}

/// The three roles' instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompts {
    /// The planner's.
    pub planner: Prompt,
    /// The coder's.
    pub coder: Prompt,
    /// The critic's.
    pub critic: Prompt,
}

const ROLES: [&str; 3] = ["planner", "coder", "critic"];

impl Prompts {
    /// The prompts built into the crate.
    pub fn builtin() -> Self {
        let parse =
            |role: &str, text: &str| Prompt::parse(role, text).unwrap_or_else(|_| Prompt::unversioned(role, text));
        Self {
            planner: parse("planner", include_str!("prompts/planner.md")),
            coder: parse("coder", include_str!("prompts/coder.md")),
            critic: parse("critic", include_str!("prompts/critic.md")),
        }
    }

    /// The built-in prompts, each replaced by `<dir>/<role>.md` where that file exists
    /// (`planner.md`, `coder.md`, `critic.md`). A readable error names a file that cannot be read
    /// or has no `version:` line.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let mut prompts = Self::builtin();
        for role in ROLES {
            let path = dir.join(format!("{role}.md"));
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read the prompt {}: {e}", path.display())),
            };
            let prompt = Prompt::parse(role, &text).map_err(|why| format!("the prompt {}: {why}", path.display()))?;
            match role {
                "planner" => prompts.planner = prompt,
                "coder" => prompts.coder = prompt,
                _ => prompts.critic = prompt,
            }
        }
        Ok(prompts)
    }
}

impl Prompt {
    /// A prompt file's text for `role`: a `version: <name>` first line, then the prompt.
    fn parse(role: &str, text: &str) -> Result<Self, String> {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let version = first
            .trim()
            .strip_prefix("version:")
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64 && !v.contains(char::is_whitespace))
            .ok_or_else(|| "the first line must be `version: <name>` (one word)".to_owned())?;
        let text = rest.trim().to_owned();
        if text.is_empty() {
            return Err("the prompt is empty".into());
        }
        Ok(Self { version: format!("{role}@{version}"), text })
    }

    fn unversioned(role: &str, text: &str) -> Self {
        Self { version: format!("{role}@builtin"), text: text.trim().to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prompts_are_versioned() {
        let prompts = Prompts::builtin();
        assert_eq!(prompts.planner.version, "planner@1");
        assert_eq!(prompts.coder.version, "coder@1");
        assert_eq!(prompts.critic.version, "critic@1");
        assert!(prompts.coder.text.contains("submit_changes") && !prompts.coder.text.starts_with("version"));
    }

    #[test]
    fn a_directory_overrides_some_roles() {
        let dir = std::env::temp_dir().join(format!("aicd-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("critic.md"), "version: strict-2\nBe strict.\n").unwrap();
        let prompts = Prompts::from_dir(&dir).unwrap();
        assert_eq!((prompts.critic.version.as_str(), prompts.critic.text.as_str()), ("critic@strict-2", "Be strict."));
        assert_eq!(prompts.coder, Prompts::builtin().coder);
        std::fs::write(dir.join("coder.md"), "Do things.\n").unwrap();
        assert!(Prompts::from_dir(&dir).unwrap_err().contains("version"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
