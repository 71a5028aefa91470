use super::*;
use crate::ChangeOp;

fn ok(body: &str) -> Vec<FileChange> {
    parse_script(body).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn err(body: &str) -> ScriptError {
    parse_script(body).expect_err("expected an error")
}

fn text(change: &FileChange) -> &str {
    std::str::from_utf8(change.content().expect("a write")).unwrap()
}

#[test]
fn backtick_fence() {
    let c = ok("Intro\n\n```aicd:write hello.txt\nHello\nworld\n```\n\nOutro");
    assert_eq!(c, [FileChange::write("hello.txt", "Hello\nworld\n")]);
}

#[test]
fn tilde_fence() {
    let c = ok("~~~aicd:write a.md\n# A\n~~~");
    assert_eq!(c, [FileChange::write("a.md", "# A\n")]);
}

#[test]
fn longer_fences_need_long_enough_closers() {
    let body = "````aicd:write doc.md\n```rust\nfn x() {}\n```\n`````\n";
    assert_eq!(text(&ok(body)[0]), "```rust\nfn x() {}\n```\n");
    // A tilde run never closes a backtick block.
    let body = "```aicd:write a\n~~~\n```";
    assert_eq!(text(&ok(body)[0]), "~~~\n");
}

#[test]
fn backticks_nested_in_tilde_block() {
    let body = "~~~ aicd:write README.md\nUse:\n```sh\nmake\n```\n~~~\n";
    assert_eq!(text(&ok(body)[0]), "Use:\n```sh\nmake\n```\n");
}

#[test]
fn crlf_and_cr_line_endings_are_normalised() {
    let body = "Do it\r\n```aicd:write a.txt\r\none\r\ntwo\r\n```\r\n";
    assert_eq!(ok(body), [FileChange::write("a.txt", "one\ntwo\n")]);
    let body = "```aicd:write a.txt\rone\r```";
    assert_eq!(ok(body), [FileChange::write("a.txt", "one\n")]);
}

#[test]
fn unterminated_directive_fence() {
    let e = err("text\n```aicd:write a.txt\nhello\n");
    assert_eq!(e, ScriptError::UnterminatedFence { line: 2, fence: "```".into(), info: "aicd:write a.txt".into() });
    assert!(e.to_string().starts_with("line 2: the code block opened with ```aicd:write"));
    // A shorter closer does not close it.
    assert!(matches!(err("````aicd:write a\nx\n```\n"), ScriptError::UnterminatedFence { line: 1, .. }));
}

#[test]
fn unterminated_plain_fence_is_content_unless_it_hides_a_directive() {
    let body = "~~~aicd:write a\nA\n~~~\n```rust\nlet x = 1;\n";
    assert_eq!(ok(body).len(), 1);
    let body = "```rust\nlet x = 1;\n\n~~~aicd:write a\nA\n~~~\n";
    assert_eq!(err(body), ScriptError::UnterminatedFence { line: 1, fence: "```".into(), info: "rust".into() });
}

#[test]
fn missing_path() {
    for body in ["```aicd:write\nx\n```", "```aicd:write   \nx\n```", "~~~aicd:delete\n~~~"] {
        assert!(matches!(err(body), ScriptError::MissingPath { line: 1, .. }), "{body}");
    }
    assert!(err("```aicd:delete\n```").to_string().contains("`aicd:delete` needs a path"));
}

#[test]
fn no_blocks() {
    assert!(ok("").is_empty());
    assert!(ok("Just words.\n\n```rust\nfn main() {}\n```\n").is_empty());
    assert!(ok("Inline ```aicd:write x``` is not a block").is_empty());
}

#[test]
fn delete_blocks() {
    assert_eq!(ok("```aicd:delete old.txt\n```"), [FileChange::delete("old.txt")]);
    // Blank lines are not content.
    assert_eq!(ok("```aicd:delete old.txt\n  \n\n```"), [FileChange::delete("old.txt")]);
    assert_eq!(
        err("text\n```aicd:delete old.txt\nsomething\n```"),
        ScriptError::DeleteWithContent { line: 2, path: "old.txt".into() }
    );
}

#[test]
fn multiple_blocks_in_order_with_other_blocks_skipped() {
    let body = "\
Please:

```aicd:write src/a.rs
fn a() {}
```

```rust
// aicd:write ignored.rs
```

~~~aicd:delete src/old.rs
~~~

```aicd:write docs/b.md
```
";
    let c = ok(body);
    assert_eq!(c.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["src/a.rs", "src/old.rs", "docs/b.md"]);
    assert_eq!(text(&c[0]), "fn a() {}\n");
    assert_eq!(c[1].op, ChangeOp::Delete);
    assert_eq!(text(&c[2]), "");
}

#[test]
fn info_string_with_extra_spaces_and_tabs() {
    let c = ok("```   aicd:write \t my dir/file name.txt  \t\nx\n```");
    assert_eq!(c[0].path, "my dir/file name.txt");
    let c = ok("~~~\taicd:delete\tgone.txt\n~~~");
    assert_eq!(c, [FileChange::delete("gone.txt")]);
}

#[test]
fn paths_are_passed_through() {
    let c = ok("```aicd:write ../../etc/passwd\nx\n```");
    assert_eq!(c[0].path, "../../etc/passwd");
}

#[test]
fn indentation_rules() {
    // Up to three spaces before the fence; content loses that much.
    let c = ok("  ```aicd:write a\n    four\n  two\n one\n  ```");
    assert_eq!(text(&c[0]), "  four\ntwo\none\n");
    // Four spaces (or a tab) make an indented code block, not a fence.
    assert!(ok("    ```aicd:write a\n    x\n    ```").is_empty());
    assert!(ok("\t```aicd:write a\nx\n```").is_empty());
    // The closing fence may be indented up to three spaces and followed by
    // spaces, but not by text.
    let c = ok("```aicd:write a\nx\n```  extra\n   ```   \n");
    assert_eq!(text(&c[0]), "x\n```  extra\n");
}

#[test]
fn backtick_info_with_backtick_is_not_a_fence() {
    assert!(ok("```aicd:write a`b\nx\n```").is_empty());
    // But tilde fences allow it.
    assert_eq!(ok("~~~aicd:write a`b\nx\n~~~")[0].path, "a`b");
}

#[test]
fn two_char_runs_are_not_fences() {
    assert!(ok("``aicd:write a\nx\n``").is_empty());
}

#[test]
fn unknown_directive_and_other_languages() {
    assert_eq!(err("```aicd:writ a\n```"), ScriptError::UnknownDirective { line: 1, directive: "aicd:writ".into() });
    assert!(ok("```rust aicd:write a\nx\n```").is_empty());
}

#[test]
fn duplicate_paths() {
    let body = "```aicd:write a\n1\n```\n```aicd:delete a\n```";
    assert_eq!(err(body), ScriptError::DuplicatePath { line: 4, path: "a".into(), first_line: 1 });
}

#[test]
fn content_is_exact() {
    let c = ok("```aicd:write a\n\n  spaced  \n\ttab\n\n```");
    assert_eq!(text(&c[0]), "\n  spaced  \n\ttab\n\n");
}
