//! The parameters of an OAuth request (query or form body), strictly: a name that
//! comes more than once is remembered so the request can be refused (RFC 6749 §3.1).

use std::collections::HashMap;

/// The parameters of a request (query or form), with the names that came more than
/// once (RFC 6749 §3.1: such a request is refused).
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Self {
        let mut p = Params::default();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if p.values.contains_key(k.as_ref()) {
                if !p.repeated.iter().any(|r| r == k.as_ref()) {
                    p.repeated.push(k.into_owned());
                }
            } else {
                p.values.insert(k.into_owned(), v.into_owned());
            }
        }
        p
    }

    /// Parameters given as name/value pairs (absent values are left out), e.g. the
    /// client authentication members of a JSON body.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut p = Params::default();
        for (k, v) in pairs {
            if let Some(v) = v {
                p.values.insert(k.to_string(), v.to_string());
            }
        }
        p
    }

    /// The value of `name` when it came exactly once and is not empty (RFC 6749 §3.1:
    /// an empty parameter is treated as omitted).
    pub fn get(&self, name: &str) -> Option<&str> {
        if self.repeated.iter().any(|r| r == name) {
            return None;
        }
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Whether `name` came more than once.
    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|r| r == name)
    }

    pub fn repeated(&self) -> &[String] {
        &self.repeated
    }
}
