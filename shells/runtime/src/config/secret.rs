//! Secrets, and what tells a real one from a placeholder.

/// A value that must never be printed: a URL that may carry a password, a private key, a shared
/// secret. `Debug` shows `[REDACTED]`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for handing to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret, and of the password inside it if it is a URL
    /// (as written and percent-decoded), replaced by `[REDACTED]`: for error messages of
    /// libraries that were handed the secret.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = if self.0.is_empty() { text.to_owned() } else { text.replace(&self.0, "[REDACTED]") };
        if let Some(password) = url_password(&self.0) {
            text = text.replace(password, "[REDACTED]");
            let decoded = percent_decode(password);
            if !decoded.is_empty() && decoded != password {
                text = text.replace(&decoded, "[REDACTED]");
            }
        }
        text
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The password of `scheme://user:password@host/...`, if there is one (as written).
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password).filter(|p| !p.is_empty())
}

/// `%XX` escapes decoded (invalid ones kept as written; invalid UTF-8 replaced).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            // Two hex digits make at most 255.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a database or Redis password is one that ships in examples: a well-known word, or one
/// character repeated.
pub(crate) fn is_placeholder_password(password: &str) -> bool {
    const WORDS: &[&str] =
        &["password", "changeme", "change-me", "secret", "postgres", "example", "test", "redis", "admin"];
    let lower = password.to_lowercase();
    WORDS.contains(&lower.as_str()) || is_one_repeated_char(&lower)
}

/// Whether a shared secret (the webhook secret) is obviously not random: one character or a short
/// pattern repeated, a counting run, or text from a sample configuration.
pub(crate) fn is_placeholder_secret(secret: &str) -> bool {
    const PARTS: &[&str] = &[
        "changeme",
        "replaceme",
        "placeholder",
        "yoursecret",
        "webhooksecret",
        "mysecret",
        "example",
        "password",
        "notasecret",
        "secretsecret",
        "1234567890",
        "abcdefghij",
        "qwertyuiop",
    ];
    let normalized: String = secret.to_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
    if normalized.is_empty() || is_one_repeated_char(&normalized) || PARTS.iter().any(|p| normalized.contains(p)) {
        return true;
    }
    // A unit of up to four characters repeated (`abababab...`, `testtesttest...`).
    let chars: Vec<char> = normalized.chars().collect();
    (1..=4).any(|unit| chars.len() >= unit * 3 && chars.iter().enumerate().all(|(i, c)| *c == chars[i % unit]))
}

fn is_one_repeated_char(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|first| chars.all(|c| c == first))
}
