//! The built-in secret detectors and the checks that weed out false positives.
//!
//! Patterns follow gitleaks. Each pattern's named group `value` (or the whole match) is the
//! secret; it is only ever shown redacted.

/// Post-match check applied to a candidate secret value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Validate {
    /// A fixed-format token: reject only obvious placeholders.
    Token,
    /// A PEM header: require a base64 body on the same or one of the next lines.
    PemBody,
    /// An AWS secret access key in an assignment: no placeholder, entropy >= 3.0.
    AwsSecret,
    /// The generic `secret = value` rule: no placeholder, not an identifier or plain URL,
    /// entropy >= 3.5.
    Generic,
    /// A configured pattern: any non-empty match counts.
    Custom,
}

/// A built-in detector: what it finds (for messages), its regex, and its check.
pub(super) struct BuiltinRule {
    pub(super) label: &'static str,
    pub(super) pattern: &'static str,
    pub(super) validate: Validate,
}

/// Built-in detectors; fixed-format ones first so they win over the generic rule on overlap.
pub(super) const BUILTIN_RULES: &[BuiltinRule] = &[
    BuiltinRule {
        label: "private key",
        pattern: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        validate: Validate::PemBody,
    },
    BuiltinRule {
        label: "AWS access key id",
        pattern: r"\b(?P<value>(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "AWS secret access key",
        pattern: r#"(?i)aws[a-z0-9_.\-]{0,30}secret[a-z0-9_.\-]{0,30}["']?\s*(?::=|=>|[:=])\s*["']?(?P<value>[a-z0-9/+]{40})(?:[^a-z0-9/+=]|$)"#,
        validate: Validate::AwsSecret,
    },
    BuiltinRule {
        label: "GitHub token",
        pattern: r"\b(?P<value>gh[pousr]_[A-Za-z0-9]{36,255})\b",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "GitHub fine-grained token",
        pattern: r"\b(?P<value>github_pat_[A-Za-z0-9_]{36,255})\b",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "Stripe secret key",
        pattern: r"\b(?P<value>(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,255})\b",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "Stripe webhook secret",
        pattern: r"\b(?P<value>whsec_[A-Za-z0-9+/=]{24,255})",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "Slack token",
        pattern: r"\b(?P<value>(?:xox[abposre]|xapp)-[A-Za-z0-9-]{10,255})",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "Slack webhook URL",
        pattern: r"(?P<value>https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_-]{20,255})",
        validate: Validate::Token,
    },
    BuiltinRule {
        label: "secret in an assignment",
        pattern: r#"(?i)(?:secret|token|password|passwd|api[_-]?key|access[_-]?key|private[_-]?key)[a-z0-9_.\-]{0,24}["']?\s*(?::=|=>|[:=])\s*["']?(?P<value>[^\s"'`,;(){}\[\]<>]{16,})(?:[\s"'`,;)\]}]|$)"#,
        validate: Validate::Generic,
    },
];

/// Minimum Shannon entropy (bits per byte) for the generic rule.
const GENERIC_MIN_ENTROPY: f64 = 3.5;
/// Minimum Shannon entropy for AWS secret access keys (random base64 is well above this).
const AWS_MIN_ENTROPY: f64 = 3.0;
/// Minimum base64 run that counts as a PEM body.
const PEM_BODY_MIN: usize = 40;
/// How many lines after a PEM header may hold the body (room for `Proc-Type:` headers).
const PEM_LOOKAHEAD: usize = 3;

/// Substrings (lowercase) that mark a value as a placeholder rather than a real secret.
const PLACEHOLDERS: &[&str] = &[
    "xxxx",
    "****",
    "changeme",
    "change_me",
    "change-me",
    "example",
    "placeholder",
    "dummy",
    "redacted",
    "your_",
    "your-",
    "${",
    "{{",
    "<",
    ">",
];

/// Whether `value`, found on `lines[index]` ending at byte `end`, passes the rule's check.
pub(super) fn accept(validate: Validate, value: &[u8], lines: &[&[u8]], index: usize, end: usize) -> bool {
    match validate {
        Validate::Custom => !value.is_empty(),
        Validate::Token => !is_placeholder(value),
        Validate::AwsSecret => !is_placeholder(value) && entropy(value) >= AWS_MIN_ENTROPY,
        Validate::Generic => {
            // `jsonwebtoken::Algorithm::RS256`: the `:` was the first of a path's `::`, not an
            // assignment.
            !value.starts_with(b":")
                && !is_placeholder(value)
                && !is_identifier_like(value)
                && !is_plain_url(value)
                && entropy(value) >= GENERIC_MIN_ENTROPY
        }
        Validate::PemBody => {
            let rest = lines.get(index).and_then(|line| line.get(end..)).unwrap_or_default();
            has_base64_run(rest)
                || lines.iter().skip(index.saturating_add(1)).take(PEM_LOOKAHEAD).any(|l| has_base64_run(l))
        }
    }
}

/// Shannon entropy of `value` in bits per byte (0 for empty input).
pub(super) fn entropy(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in value {
        counts[usize::from(b)] += 1;
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

fn is_placeholder(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDERS.iter().any(|p| contains(&lower, p.as_bytes()))
}

/// Code references such as `settings.SECRET_KEY`, `process.env.API-TOKEN` or
/// `Self::DEFAULT_TOKEN_LIMIT`: no digits and only letters, `_`, `.`, `-` and `:`. (A random 16+
/// character token without digits is rare.)
fn is_identifier_like(value: &[u8]) -> bool {
    value.iter().all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

/// An `http(s)` URL without userinfo (`user:pass@`), e.g. a token endpoint: not a secret itself.
fn is_plain_url(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    (lower.starts_with(b"https://") || lower.starts_with(b"http://")) && !value.contains(&b'@')
}

fn has_base64_run(line: &[u8]) -> bool {
    let mut run = 0usize;
    for &b in line {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
            run += 1;
            if run >= PEM_BODY_MIN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        assert_eq!(entropy(b""), 0.0);
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert!(entropy(b"Zq8mT4vW9pL2xR7nK5") > 4.0);
    }

    #[test]
    fn generic_filters() {
        let ok = |v: &[u8]| accept(Validate::Generic, v, &[], 0, 0);
        assert!(ok(b"Zq8mT4vW9pL2xR7nK5"));
        assert!(!ok(b"${SECRET_FROM_ENVIRONMENT}"));
        assert!(!ok(b"xxxxxxxxxxxxxxxxxxxx"));
        assert!(!ok(b"Zq8mT4vW9-example-pL2"));
        assert!(!ok(b"settings.SECRET_KEY_VALUE"));
        assert!(!ok(b"1234567890123456"));
    }

    #[test]
    fn pem_body_lookahead() {
        let header = format!("-----BEGIN {} KEY-----", "RSA PRIVATE");
        let body = "MIIEow".repeat(10);
        let lines: Vec<&[u8]> = vec![header.as_bytes(), body.as_bytes()];
        assert!(accept(Validate::PemBody, b"", &lines, 0, header.len()));
        let lines: Vec<&[u8]> = vec![header.as_bytes(), b"}"];
        assert!(!accept(Validate::PemBody, b"", &lines, 0, header.len()));
        assert!(!accept(Validate::PemBody, b"", &lines, 7, 99));
    }
}
