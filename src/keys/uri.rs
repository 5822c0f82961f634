//! RFC 7512 PKCS#11 URIs: which module to load, which token to use, where the PIN is.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// The parts of a PKCS#11 URI that Symbolon uses. The token is found by label or
/// serial, never by slot number (slot numbers change between boots on some HSMs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `object=`: an object label (used by the operator tooling, not by the server).
    pub object: Option<String>,
    /// `module-path=`: absolute path of the PKCS#11 module.
    pub module_path: PathBuf,
    /// `pin-source=file:/path` or `pin-source=/path`.
    pub pin_source: Option<PathBuf>,
}

/// Why a URI was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    #[error("not a PKCS#11 URI (must start with \"pkcs11:\")")]
    Scheme,
    #[error("attribute {0:?} is not percent-encoded UTF-8")]
    Encoding(String),
    #[error("unsupported attribute {0:?}")]
    Unsupported(String),
    #[error("attribute {0:?} given twice")]
    Duplicate(String),
    #[error("pin-value is refused: keep the PIN in a file, a systemd credential or SYMBOLON_HSM_PIN")]
    PinValue,
    #[error("pin-source must be file:/absolute/path")]
    PinSource,
    #[error("module-path is required and must be an absolute path")]
    ModulePath,
    #[error("token= or serial= is required to find the token")]
    NoToken,
}

impl Pkcs11Uri {
    /// Parses and validates a URI.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri.trim().strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut out =
            Pkcs11Uri { token: None, serial: None, object: None, module_path: PathBuf::new(), pin_source: None };
        let mut module_path = None;
        let path_attrs = path.split(';').filter(|s| !s.is_empty()).map(|a| (a, true));
        let query_attrs = query.split('&').filter(|s| !s.is_empty()).map(|a| (a, false));
        for (attr, in_path) in path_attrs.chain(query_attrs) {
            let (name, raw) = attr.split_once('=').unwrap_or((attr, ""));
            let value =
                percent_decode_str(raw).decode_utf8().map_err(|_| UriError::Encoding(name.to_string()))?.into_owned();
            let slot = match (name, in_path) {
                ("token", true) => &mut out.token,
                ("serial", true) => &mut out.serial,
                ("object", true) => &mut out.object,
                // Accepted and ignored: they narrow object searches, which the server does by label.
                (
                    "type"
                    | "id"
                    | "manufacturer"
                    | "model"
                    | "library-manufacturer"
                    | "library-description"
                    | "library-version",
                    true,
                ) => continue,
                ("module-path", false) => &mut module_path,
                ("pin-source", false) => {
                    if out.pin_source.is_some() {
                        return Err(UriError::Duplicate(name.into()));
                    }
                    let path = value.strip_prefix("file:").unwrap_or(&value);
                    let path = path.strip_prefix("//").unwrap_or(path);
                    if !path.starts_with('/') {
                        return Err(UriError::PinSource);
                    }
                    out.pin_source = Some(PathBuf::from(path));
                    continue;
                }
                ("pin-value", false) => return Err(UriError::PinValue),
                _ => return Err(UriError::Unsupported(name.to_string())),
            };
            if slot.is_some() {
                return Err(UriError::Duplicate(name.into()));
            }
            *slot = Some(value);
        }
        match module_path {
            Some(p) if p.starts_with('/') => out.module_path = PathBuf::from(p),
            _ => return Err(UriError::ModulePath),
        }
        if out.token.is_none() && out.serial.is_none() {
            return Err(UriError::NoToken);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_uri() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=sym%20bolon;serial=abc?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("sym bolon"));
        assert_eq!(u.serial.as_deref(), Some("abc"));
        assert_eq!(u.module_path, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(u.pin_source, Some(PathBuf::from("/run/pin")));
    }

    #[test]
    fn refuses_bad_uris() {
        assert_eq!(Pkcs11Uri::parse("pkcs12:token=a"), Err(UriError::Scheme));
        assert_eq!(Pkcs11Uri::parse("pkcs11:token=a"), Err(UriError::ModulePath));
        assert_eq!(Pkcs11Uri::parse("pkcs11:token=a?module-path=rel.so"), Err(UriError::ModulePath));
        assert_eq!(Pkcs11Uri::parse("pkcs11:?module-path=/m.so"), Err(UriError::NoToken));
        assert_eq!(Pkcs11Uri::parse("pkcs11:token=a?module-path=/m.so&pin-value=1234"), Err(UriError::PinValue));
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=a;token=b?module-path=/m.so"),
            Err(UriError::Duplicate("token".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:slot-id=1;token=a?module-path=/m.so"),
            Err(UriError::Unsupported("slot-id".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=a?module-path=/m.so&pin-source=file:relative"),
            Err(UriError::PinSource)
        );
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token=%ff?module-path=/m.so"), Err(UriError::Encoding(_))));
    }
}
