//! Release versions: the one grammar bundles are built with, installs check, and downgrades are judged by.
//!
//! ```text
//! version  = ["v"] number *3("." number) ["-" pre] ["+" build]
//! number   = 1*20 DIGIT              (compared as numbers: 2026.01.1 < 2026.2.0)
//! pre      = ident *("." ident)       (a pre-release comes before its release: 1.0.0-rc.2 < 1.0.0)
//! build    = ident *("." ident)       (ignored when ordering)
//! ident    = 1*(ALPHA / DIGIT / "-")
//! ```
//!
//! So semantic versions (`1.2.3`, `1.2.3-rc.1+g1a2b`) and dotted calendar versions (`2026.01.1`) are both
//! accepted; names such as `zzz` or `latest` are refused, so no release can sort above every other.

use std::cmp::Ordering;

/// A parsed release version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    numbers: Vec<u64>,
    pre: Vec<String>,
}

/// What a version must look like, for error messages.
pub const GRAMMAR: &str = "1 to 4 dot-separated numbers with an optional -pre-release and +build, e.g. 2.1.0, 2026.01.1 or 3.0.0-rc.1";

const MAX_LEN: usize = 64;

fn idents(s: &str) -> Option<Vec<String>> {
    let ok = |i: &str| !i.is_empty() && i.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let parts: Vec<&str> = s.split('.').collect();
    parts.iter().all(|p| ok(p)).then(|| parts.iter().map(|p| p.to_string()).collect())
}

impl Version {
    /// Parses `text`; the error says what is wrong and what a version looks like.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("version {text:?} is not a release version: use {GRAMMAR}");
        if text.is_empty() || text.len() > MAX_LEN || text.trim() != text {
            return Err(bad());
        }
        let v = text.strip_prefix('v').unwrap_or(text);
        let (v, build) = match v.split_once('+') {
            Some((v, b)) => (v, Some(b)),
            None => (v, None),
        };
        if build.is_some_and(|b| idents(b).is_none()) {
            return Err(bad());
        }
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, idents(p).ok_or_else(bad)?),
            None => (v, Vec::new()),
        };
        let numbers: Vec<u64> = core
            .split('.')
            .map(|n| if !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()) { n.parse().ok() } else { None })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if numbers.is_empty() || numbers.len() > 4 {
            return Err(bad());
        }
        Ok(Self { numbers, pre })
    }
}

/// Numbers compare as numbers (a missing one is 0); pre-release identifiers compare numerically when both
/// are numbers, else as text, and a numeric one comes first (as in semver).
fn cmp_ident(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        let at = |v: &Version, i: usize| v.numbers.get(i).copied().unwrap_or(0);
        (0..n).map(|i| at(self, i).cmp(&at(other, i))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let k = self.pre.len().min(other.pre.len());
                    (0..k).map(|i| cmp_ident(&self.pre[i], &other.pre[i])).find(|o| o.is_ne()).unwrap_or_else(|| self.pre.len().cmp(&other.pre.len()))
                }
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_order() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.2.3", "1.2.3", Equal),
            ("1.10.0", "1.9.9", Greater),
            ("2.0", "2.0.0", Equal),
            ("v1.0.1", "1.0.0", Greater),
            ("1.0.0-rc1", "1.0.0", Less),
            ("1.0.0-rc.2", "1.0.0-rc.10", Less),
            ("1.0.0-1", "1.0.0-alpha", Less),
            ("1.0.0-rc", "1.0.0-rc.1", Less),
            ("0.9.0", "0.10.0", Less),
            ("2026.01.1", "3.0.0", Greater),
            ("2026.01.1", "2026.1.1", Equal),
            ("2026.01.1", "2026.2", Less),
            ("1.2.3+build.7", "1.2.3", Equal),
            ("9", "10", Less),
        ] {
            assert_eq!(v(a).cmp(&v(b)), o, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn only_the_grammar_is_accepted() {
        for good in ["1", "2.0.0", "v3.1", "2026.01.1", "1.2.3.4", "1.0.0-rc.1", "1.0.0-rc.1+g1a2b3c", "0.1.0+20261201"] {
            assert!(Version::parse(good).is_ok(), "{good} refused");
        }
        for bad in ["", "zzz", "latest", "v", "1.", ".1", "1..2", "1.2.3.4.5", "1.x", "1.0 ", " 1.0", "1.0-", "1.0+", "1.0-rc..1", "1.0/../x", "1e3", "-1"] {
            let e = Version::parse(bad).unwrap_err();
            assert!(e.contains("2026.01.1"), "{e}");
        }
        assert!(Version::parse(&"1".repeat(65)).is_err());
    }
}
