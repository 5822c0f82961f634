//! What the two hosted sign-in flows (SAML `/saml/sso`, OpenID Connect `/authorize`)
//! share around their stored sign-in contexts: the per-IP limit and the cluster-wide
//! cap on pending contexts, and the binding of a flow to the browser that got its page
//! (a random secret in a per-flow `SameSite=Strict` cookie; the context keeps only its
//! digest). The completion and cancel steps must present the secret, so a page of
//! another site cannot complete a sign-in in the victim's browser (login CSRF).

use std::time::Duration;

use super::Services;
use crate::error::{ApiError, ErrorCode};

/// Which hosted flow a context and its cookie belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    Saml,
    Oidc,
}

impl FlowKind {
    fn as_str(self) -> &'static str {
        match self {
            FlowKind::Saml => "saml",
            FlowKind::Oidc => "oidc",
        }
    }
}

/// A new flow's browser secret: the value for the cookie, and its digest for the
/// stored context.
#[derive(Debug, Clone)]
pub struct BrowserSecret {
    pub secret: String,
    pub digest: String,
}

impl BrowserSecret {
    pub fn generate() -> Self {
        let secret = crate::ids::new_id();
        let digest = crate::service::auth::browser_token_digest(&secret);
        Self { secret, digest }
    }
}

/// Whether `presented` (the flow's cookie, if the browser sent it) is the secret whose
/// digest the context stored, compared in constant time.
pub fn browser_bound(stored_digest: &str, presented: Option<&str>) -> bool {
    let Some(secret) = presented else { return false };
    let given = crate::service::auth::browser_token_digest(secret);
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), stored_digest.as_bytes()).into()
}

/// The name of a flow's cookie: one per flow (two tabs may run two flows), named by the
/// start of the context id; `__Host-` when the issuer is `https://` (the cookie is then
/// `Secure`, host-only, `Path=/`).
pub fn flow_cookie_name(kind: FlowKind, context_id: &str, secure: bool) -> Option<String> {
    let tag =
        context_id.get(..16).filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))?;
    let kind = kind.as_str();
    Some(if secure { format!("__Host-symbolon-{kind}-{tag}") } else { format!("symbolon-{kind}-{tag}") })
}

impl Services {
    /// Admits a new sign-in context of `kind` with time-to-live `ttl`: `cap` contexts
    /// made within the last `ttl` across the cluster bound those pending at once; one
    /// more gets `503 overloaded` with `Retry-After`. Call it only for requests that
    /// passed every other check, so refused requests use up nothing.
    pub(super) async fn admit_sign_in_context(&self, kind: FlowKind, cap: u32, ttl: Duration) -> Result<(), ApiError> {
        let counter = format!("{}-sign-in-contexts", kind.as_str());
        if let Err(wait) = self.sessions.hit(&counter, cap, ttl).await? {
            tracing::warn!(flow = kind.as_str(), cap, "sign-in refused: too many pending sign-in contexts");
            return Err(ApiError::new(ErrorCode::Overloaded, "too many sign-ins are pending, retry shortly")
                .with_retry_after(wait.as_secs().clamp(1, 60)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_flows_own_secret_binds() {
        let a = BrowserSecret::generate();
        let b = BrowserSecret::generate();
        assert!(browser_bound(&a.digest, Some(&a.secret)));
        assert!(!browser_bound(&a.digest, Some(&b.secret)));
        assert!(!browser_bound(&a.digest, None));
        assert!(!browser_bound(&a.digest, Some("")));
        assert!(!browser_bound("", Some(&a.secret)), "a context without a digest binds nothing");
    }

    #[test]
    fn cookie_names_carry_the_flow_and_the_context_tag() {
        let id = "AbCdEfGhIjKlMnOpQrSt";
        assert_eq!(flow_cookie_name(FlowKind::Saml, id, false).as_deref(), Some("symbolon-saml-AbCdEfGhIjKlMnOp"));
        assert_eq!(
            flow_cookie_name(FlowKind::Oidc, id, true).as_deref(),
            Some("__Host-symbolon-oidc-AbCdEfGhIjKlMnOp")
        );
        assert_eq!(flow_cookie_name(FlowKind::Oidc, "short", false), None);
        assert_eq!(flow_cookie_name(FlowKind::Oidc, "abc;def=ghijklmnopq", false), None);
    }
}
