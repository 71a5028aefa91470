//! Reading variables and collecting every problem on the way.

use std::net::SocketAddr;

/// Reads variables through a lookup and collects problems, each starting with its variable's name.
pub(crate) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup, problems: Vec::new() }
    }

    /// The variable's value; empty or blank values count as unset.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        debug_assert!(
            super::variables().iter().any(|v| v.name == name),
            "{name} is read but not listed in config::variables()"
        );
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    /// A whole number in `min..=max`, or `default` when unset.
    pub(crate) fn number(&mut self, name: &str, default: u64, min: u64, max: u64, unit: &str) -> u64 {
        let Some(raw) = self.get(name) else { return default };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(format!(
                    "{name} must be a whole number of {unit} from {min} to {max} (got `{}`)",
                    shorten(&raw)
                ));
                default
            }
        }
    }

    /// `true`/`false`, `1`/`0` or `yes`/`no` (any case), or `default` when unset.
    pub(crate) fn boolean(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.get(name) else { return default };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                self.problem(format!("{name} must be true or false (or 1/0, yes/no) (got `{}`)", shorten(&raw)));
                default
            }
        }
    }

    /// An `ip:port` address (port 0 picks a free port), or `default` when unset.
    pub(crate) fn socket_addr(&mut self, name: &str, default: SocketAddr) -> SocketAddr {
        let Some(raw) = self.get(name) else { return default };
        match raw.trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.problem(format!(
                    "{name} must be an IP address and port, such as 127.0.0.1:8080 or [::]:8080 (got `{}`)",
                    shorten(&raw)
                ));
                default
            }
        }
    }

    /// An `http://` or `https://` URL with a host (only `https://` if `https_only`), as written
    /// but for its scheme, lowercased; `None` when unset or wrong (a problem is recorded).
    pub(crate) fn http_url(&mut self, name: &str, https_only: bool, why_https: &str) -> Option<String> {
        let raw = self.get(name)?;
        self.check_http_url(name, raw.trim(), https_only, why_https)
    }

    /// Checks a URL that came from `name` (or was derived for it).
    pub(crate) fn check_http_url(
        &mut self,
        name: &str,
        url: &str,
        https_only: bool,
        why_https: &str,
    ) -> Option<String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            self.problem(format!("{name} must be an http:// or https:// URL (got `{}`)", shorten(url)));
            return None;
        };
        let scheme = scheme.to_ascii_lowercase();
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if !(scheme == "http" || scheme == "https") || host.is_empty() || url.chars().any(char::is_whitespace) {
            self.problem(format!("{name} must be an http:// or https:// URL with a host (got `{}`)", shorten(url)));
            return None;
        }
        if https_only && scheme != "https" {
            self.problem(format!("{name} must be an https:// URL {why_https} (got `{}`)", shorten(url)));
            return None;
        }
        Some(format!("{scheme}://{rest}"))
    }
}

/// A value quoted back in a message, cut short.
pub(crate) fn shorten(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        format!("{}...", value.chars().take(MAX).collect::<String>())
    }
}
