//! Tests for the `secret` rule. Every fake secret is assembled at run time so this file holds no
//! literal that a secret scanner would flag.

use super::*;
use crate::policy::{PolicyBlocked, PolicyConfig, evaluate};

fn scan_with(policy: &Policy, path: &str, before: Option<&str>, after: &str) -> Vec<Violation> {
    let diff = FileDiff { path, before: before.map(str::as_bytes), after: Some(after.as_bytes()) };
    let mut out = Vec::new();
    check(&diff, policy, &mut out);
    out
}

fn scan(before: Option<&str>, after: &str) -> Vec<Violation> {
    scan_with(&Policy::default(), "src/config.py", before, after)
}

/// (expected label, secret value, line that leaks it)
fn fakes() -> Vec<(&'static str, String, String)> {
    let github = format!("ghp_{}", "a1B2".repeat(9));
    let github_pat = format!("github_{}_{}", "pat", "11AbCdEfG0x9Y8".repeat(5));
    let aws_id = format!("{}{}", "AK", "IAQ7ZP3MXK5RT2WN8B");
    let aws_secret = format!("{}{}", "Tq3vL9xZ2pW8mK4nR7sY", "1bH6cJ0dF5gA/uE+iO3e");
    let stripe = format!("sk_{}_{}", "live", "Zq8mT4vW9pL2xR7nK5a1B2c3");
    let webhook = format!("whsec_{}", "Zq8mT4vW9pL2xR7nK5a1B2c3d4E5");
    let slack = format!("xoxb-{}-{}", "1234567890-9876543210", "Zq8mT4vW9pL2xR7nK5a1B2c3");
    let slack_hook =
        format!("https://hooks.{}.com/services/{}", "slack", "T0A1B2C3D/B0A1B2C3D/Zq8mT4vW9pL2xR7nK5a1B2c3");
    let generic = format!("{}{}", "Zq8mT4vW9", "pL2xR7nK5");
    vec![
        ("GitHub token", github.clone(), format!("TOKEN = \"{github}\"")),
        ("GitHub fine-grained token", github_pat.clone(), format!("auth({github_pat})")),
        ("AWS access key id", aws_id.clone(), format!("key_id: {aws_id}")),
        ("AWS secret access key", aws_secret.clone(), format!("aws_secret_access_key = {aws_secret}")),
        ("Stripe secret key", stripe.clone(), format!("stripe.api_key = '{stripe}'")),
        ("Stripe webhook secret", webhook.clone(), format!("hook({webhook})")),
        ("Slack token", slack.clone(), format!("client = Slack(\"{slack}\")")),
        ("Slack webhook URL", slack_hook.clone(), format!("url: {slack_hook}")),
        ("secret in an assignment", generic.clone(), format!("api_key = \"{generic}\"")),
        ("secret in an assignment", generic.clone(), format!("\"password\": \"{generic}\",")),
        ("secret in an assignment", generic.clone(), format!("DB_PASSWORD={generic}")),
    ]
}

#[test]
fn detects_each_family_with_line_numbers_and_never_leaks_the_value() {
    for (label, value, line) in fakes() {
        let after = format!("import os\n\n{line}\nprint('done')\n");
        let found = scan(None, &after);
        assert_eq!(found.len(), 1, "{label}: {found:?}");
        let v = &found[0];
        assert_eq!(v.rule, RuleId::Secret);
        assert_eq!(v.line, Some(3), "{label}");
        assert_eq!(v.path.as_deref(), Some("src/config.py"));
        assert!(v.message.contains(label), "{label}: {}", v.message);
        let prefix: String = value.chars().take(4).collect();
        let redacted = format!("`{prefix}…`, {} chars", value.chars().count());
        assert!(v.message.contains(&redacted), "{}", v.message);
        assert!(!v.message.contains(&value), "{label} leaked: {}", v.message);
        let json = serde_json::to_string(&found).unwrap();
        assert!(!json.contains(&value), "{label} leaked in JSON");
        let summary = PolicyBlocked::new(found).to_string();
        assert!(!summary.contains(&value), "{label} leaked in summary");
    }
}

#[test]
fn private_key_with_body_is_detected() {
    let header = format!("-----BEGIN {} KEY-----", "OPENSSH PRIVATE");
    let body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
    let after = format!("{header}\n{body}\n-----END {} KEY-----\n", "OPENSSH PRIVATE");
    let found = scan(None, &after);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, Some(1));
    assert!(found[0].message.contains("private key"));
    assert!(!found[0].message.contains(body));
    // Inline in a string literal with an escaped newline.
    let inline = format!("KEY = \"{header}\\n{body}\"\n");
    assert_eq!(scan(None, &inline).len(), 1);
}

#[test]
fn pem_header_without_body_is_not_a_secret() {
    let header = format!("-----BEGIN {} KEY-----", "RSA PRIVATE");
    let code = format!("if line.starts_with(\"{header}\") {{\n    parse(line)\n}}\n");
    assert!(scan(None, &code).is_empty());
}

#[test]
fn only_added_lines_are_scanned() {
    let (_, value, line) = fakes().remove(0);
    let before = format!("a = 1\n{line}\n");
    // Secret already present: not reported, even when other lines change or move.
    assert!(scan(Some(&before), &format!("{line}\nb = 2\na = 1\n")).is_empty());
    // A second copy is an added line and is reported, at its own line.
    let found = scan(Some(&before), &format!("a = 1\n{line}\nc = 3\n{line}\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, Some(4));
    assert!(!found[0].message.contains(&value));
}

#[test]
fn crlf_files_report_correct_lines_and_lengths() {
    let (_, value, line) = fakes().remove(0);
    let after = format!("one\r\ntwo\r\n{line}\r\n");
    let found = scan(None, &after);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, Some(3));
    assert!(found[0].message.contains(&format!("{} chars", value.len())));
    // Converting an existing file from LF to CRLF adds no lines.
    let before = format!("one\ntwo\n{line}\n");
    assert!(scan(Some(&before), &after).is_empty());
}

#[test]
fn placeholders_and_code_references_are_not_secrets() {
    let samples = [
        format!("TOKEN = \"ghp_{}\"", "x".repeat(36)),
        "password = \"${DB_PASSWORD_FROM_ENV}\"".to_owned(),
        "api_key = \"<your-api-key-goes-here>\"".to_owned(),
        "api_key: \"{{ secrets.API_KEY_VALUE }}\"".to_owned(),
        "token = settings.GITHUB_TOKEN_VALUE".to_owned(),
        "password = get_password_from_vault(name)".to_owned(),
        "secret = \"changeme-changeme-1234\"".to_owned(),
        "password = \"aaaaaaaaaaaaaaaaaaaaaaaa\"".to_owned(),
        "max_tokens = 1234567890123456".to_owned(),
        "token_url = \"https://example.com/oauth/token\"".to_owned(),
        "token_endpoint = \"https://auth.corp.io/oauth2/v1/token\"".to_owned(),
        format!("aws_secret_access_key = {}", "EXAMPLE".repeat(6).get(..40).unwrap_or("")),
        format!("key_id = {}{}", "AKIAIOSFODNN7", "EXAMPLE"),
        "let secret_len = secret.len();".to_owned(),
        "assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);".to_owned(),
        "let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem)?;".to_owned(),
        "    max_output_tokens: Self::DEFAULT_MAX_OUTPUT_TOKENS,".to_owned(),
    ];
    for line in samples {
        let found = scan(None, &format!("{line}\n"));
        assert!(found.is_empty(), "false positive on {line:?}: {found:?}");
    }
}

#[test]
fn overlapping_detectors_report_once() {
    let github = format!("ghp_{}", "Zq8m".repeat(9));
    let found = scan(None, &format!("GITHUB_TOKEN=\"{github}\"\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("GitHub token"));
}

#[test]
fn allowlisted_and_deleted_files_are_not_scanned() {
    let (_, _, line) = fakes().remove(0);
    let cfg = PolicyConfig { secret_allow: Some(vec!["tests/fixtures/**".into()]), ..PolicyConfig::default() };
    let policy = Policy::from_config(&cfg).unwrap();
    let text = format!("{line}\n");
    assert!(scan_with(&policy, "tests/fixtures/creds.txt", None, &text).is_empty());
    assert_eq!(scan_with(&policy, "tests/other/creds.txt", None, &text).len(), 1);
    let deleted = FileDiff::deleted("src/creds.txt", text.as_bytes());
    assert!(evaluate(&[deleted], &policy).is_empty());
}

#[test]
fn findings_per_file_are_capped() {
    let text: String = (0..25).map(|i| format!("t{i} = \"ghp_{}{:04}\"\n", "Zq8m".repeat(8), i)).collect();
    let found = scan(None, &text);
    assert_eq!(found.len(), MAX_PER_FILE + 1);
    let last = found.last().unwrap();
    assert_eq!(last.line, None);
    assert!(last.message.contains("5 more possible secrets"), "{}", last.message);
}

#[test]
fn custom_patterns_are_additive_and_validated() {
    let cfg = PolicyConfig::from_repo_toml("[policy]\nsecret_patterns = ['acme_(?P<value>[0-9a-f]{32})']\n").unwrap();
    let policy = Policy::from_config(&PolicyConfig::merge(&PolicyConfig::default(), &cfg)).unwrap();
    let value = "0123456789abcdef".repeat(2);
    let found = scan_with(&policy, "a.txt", None, &format!("k = acme_{value}\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found[0].message.contains(&value));
    // Built-ins still apply.
    let (_, _, line) = fakes().remove(0);
    assert_eq!(scan_with(&policy, "a.txt", None, &line).len(), 1);

    let bad = PolicyConfig { secret_patterns: Some(vec!["acme_(".into()]), ..PolicyConfig::default() };
    match Policy::from_config(&bad) {
        Err(PolicyError::InvalidRegex { pattern, message }) => {
            assert_eq!(pattern, "acme_(");
            assert!(!message.is_empty());
        }
        other => panic!("expected InvalidRegex, got {other:?}"),
    }
}

#[test]
fn non_utf8_content_is_still_scanned() {
    let (_, _, line) = fakes().remove(0);
    let mut after = vec![0xff, 0xfe, b'\n'];
    after.extend_from_slice(line.as_bytes());
    let diff = FileDiff::added("blob.bin", &after);
    let mut out = Vec::new();
    check(&diff, &Policy::default(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].line, Some(2));
}

#[test]
fn redaction_reveals_at_most_four_characters() {
    assert_eq!(redact(b"abcdefghijklmnop"), "`abcd…`, 16 chars");
    assert_eq!(redact(b"short"), "`…`, 5 chars");
    assert_eq!(redact("a`\u{1}déf-ghijkl".as_bytes()), "`a??d…`, 13 chars");
}
