//! Client authentication at the token endpoint (RFC 6749 §2.3, OIDC Core §9,
//! RFC 7523): what credentials a request presents, secret comparison in constant
//! time, and the checks of a `private_key_jwt` client assertion. The single use of an
//! assertion's `jti` is recorded by the caller in the session store (cluster-wide).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Validation;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::config::AuthMethod;
use super::jwk::assertion_key;
use super::params::Params;
use super::{ASSERTION_MAX_LIFETIME, ASSERTION_SKEW, OAuthError};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The credentials a token request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Basic`.
    Basic { client_id: String, secret: String },
    /// `client_id` and `client_secret` form fields.
    Post { client_id: String, secret: String },
    /// `client_assertion` (the client id is its `sub`, or the `client_id` field).
    Assertion { client_id: String, assertion: String },
    /// Only `client_id`: a public client.
    Public { client_id: String },
}

impl Credentials {
    pub fn client_id(&self) -> &str {
        match self {
            Credentials::Basic { client_id, .. }
            | Credentials::Post { client_id, .. }
            | Credentials::Assertion { client_id, .. }
            | Credentials::Public { client_id } => client_id,
        }
    }

    /// The method these credentials use.
    pub fn method(&self) -> AuthMethod {
        match self {
            Credentials::Basic { .. } => AuthMethod::ClientSecretBasic,
            Credentials::Post { .. } => AuthMethod::ClientSecretPost,
            Credentials::Assertion { .. } => AuthMethod::PrivateKeyJwt,
            Credentials::Public { .. } => AuthMethod::None,
        }
    }
}

fn form_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8().ok().map(|c| c.into_owned())
}

/// The claims of a JWT read without verifying it (only to find the client).
fn unverified_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// What credentials a request presents: exactly one method (RFC 6749 §2.3: a client
/// must not use more than one), `invalid_request` for a malformed one and
/// `invalid_client` when none names a client.
pub fn presented(authorization: Option<&str>, params: &Params) -> Result<Credentials, OAuthError> {
    let basic = match authorization {
        Some(h) => {
            let (scheme, value) = h.split_once(' ').unwrap_or((h, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(
                    "only Basic client authentication is accepted in Authorization",
                ));
            }
            let raw = STANDARD.decode(value.trim()).ok().and_then(|b| String::from_utf8(b).ok());
            let (id, secret) = raw
                .as_deref()
                .and_then(|r| r.split_once(':'))
                .and_then(|(i, s)| Some((form_decode(i)?, form_decode(s)?)))
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            Some((id, secret))
        }
        None => None,
    };
    for name in ["client_id", "client_secret", "client_assertion", "client_assertion_type"] {
        if params.is_repeated(name) {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
    }
    let form_id = params.get("client_id");
    let form_secret = params.get("client_secret");
    let assertion = params.get("client_assertion");
    let used = usize::from(basic.is_some()) + usize::from(form_secret.is_some()) + usize::from(assertion.is_some());
    if used > 1 {
        return Err(OAuthError::invalid_request("more than one client authentication method used"));
    }
    if let Some((client_id, secret)) = basic {
        if form_id.is_some_and(|f| f != client_id) {
            return Err(OAuthError::invalid_request("client_id differs from the authenticated client"));
        }
        return Ok(Credentials::Basic { client_id, secret });
    }
    if let Some(secret) = form_secret {
        let client_id = form_id.ok_or_else(|| OAuthError::invalid_request("client_secret without client_id"))?;
        return Ok(Credentials::Post { client_id: client_id.to_string(), secret: secret.to_string() });
    }
    if let Some(assertion) = assertion {
        if params.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER}")));
        }
        let sub = unverified_claims(assertion)
            .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| OAuthError::invalid_client("the client assertion is not a JWT with a sub"))?;
        if form_id.is_some_and(|f| f != sub) {
            return Err(OAuthError::invalid_client("client_id differs from the assertion's sub"));
        }
        return Ok(Credentials::Assertion { client_id: sub, assertion: assertion.to_string() });
    }
    match form_id {
        Some(id) => Ok(Credentials::Public { client_id: id.to_string() }),
        None => Err(OAuthError::invalid_client("no client authentication")),
    }
}

/// As [`presented`], but `Authorization: Bearer <assertion>` also carries a
/// `private_key_jwt` assertion (RFC 7523 §2.2 form fields in a header, for the JSON
/// body of `POST /v1/auth/initiate`, docs/protocol.md §5.1). A Bearer assertion and
/// any credential field together are `invalid_request` (one method at a time).
pub fn presented_with_bearer(authorization: Option<&str>, params: &Params) -> Result<Credentials, OAuthError> {
    let bearer = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(assertion) = bearer else {
        return presented(authorization, params);
    };
    if ["client_secret", "client_assertion", "client_assertion_type"].iter().any(|n| params.get(n).is_some()) {
        return Err(OAuthError::invalid_request("more than one client authentication method used"));
    }
    let sub = unverified_claims(assertion)
        .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| OAuthError::invalid_client("the Bearer client assertion is not a JWT with a sub"))?;
    if params.get("client_id").is_some_and(|f| f != sub) {
        return Err(OAuthError::invalid_client("client_id differs from the assertion's sub"));
    }
    Ok(Credentials::Assertion { client_id: sub, assertion: assertion.to_string() })
}

/// Whether `secret` hashes to the registered SHA-256 hex, compared in constant time.
pub fn secret_matches(secret: &str, sha256_hex: &str) -> bool {
    let given = super::sha256_hex(secret);
    given.as_bytes().ct_eq(sha256_hex.to_ascii_lowercase().as_bytes()).into()
}

/// The `kid` of an assertion's header, if it names one (to find its key in a fetched set).
pub fn assertion_kid(assertion: &str) -> Option<String> {
    jsonwebtoken::decode_header(assertion).ok()?.kid
}

/// A verified client assertion: its `jti` and `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub jti: String,
    pub exp: i64,
}

/// Verifies a `private_key_jwt` assertion (RFC 7523 §3, OIDC Core §9): signed by one
/// of `keys` with an accepted algorithm, `iss` = `sub` = `client_id`, `aud` one of
/// `audiences` (the token endpoint URL or the issuer), `exp` not passed and at most
/// five minutes ahead, a `jti`. Every failure is `invalid_client`.
pub fn verify_assertion(
    assertion: &str,
    keys: &[Value],
    client_id: &str,
    audiences: &[&str],
    now: i64,
) -> Result<Assertion, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client(format!("client assertion refused: {why}"));
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| bad("not a JWS"))?;
    let candidates: Vec<_> = keys
        .iter()
        .filter_map(assertion_key)
        .filter(|(kid, algs, _)| {
            algs.contains(&header.alg) && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        })
        .collect();
    if candidates.is_empty() {
        return Err(bad("no registered key for its alg and kid"));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[client_id]);
    validation.set_audience(audiences);
    validation.sub = Some(client_id.to_string());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = ASSERTION_SKEW as u64;
    validation.validate_nbf = true;
    let mut last = bad("bad signature");
    for (_, _, key) in &candidates {
        match jsonwebtoken::decode::<Value>(assertion, key, &validation) {
            Ok(data) => {
                let claims = data.claims;
                let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| bad("exp is not a number"))?;
                if exp > now + ASSERTION_MAX_LIFETIME + ASSERTION_SKEW {
                    return Err(bad("exp is more than five minutes ahead"));
                }
                let jti = claims
                    .get("jti")
                    .and_then(Value::as_str)
                    .filter(|j| !j.is_empty() && j.len() <= 256)
                    .ok_or_else(|| bad("jti is missing"))?;
                return Ok(Assertion { jti: jti.to_string(), exp });
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::InvalidSignature => bad("bad signature"),
                    ErrorKind::ExpiredSignature => return Err(bad("expired")),
                    ErrorKind::ImmatureSignature => return Err(bad("not valid yet")),
                    ErrorKind::InvalidAudience => return Err(bad("aud is neither the token endpoint nor the issuer")),
                    ErrorKind::InvalidIssuer => return Err(bad("iss is not the client id")),
                    ErrorKind::InvalidSubject => return Err(bad("sub is not the client id")),
                    ErrorKind::MissingRequiredClaim(_) => return Err(bad("a required claim is missing")),
                    _ => bad("not valid"),
                };
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(q.as_bytes())
    }

    #[test]
    fn one_method_at_a_time() {
        let basic = format!("Basic {}", STANDARD.encode("my%3Aclient:s%2Bcret+x"));
        let c = presented(Some(&basic), &params("grant_type=authorization_code")).unwrap();
        assert_eq!(c, Credentials::Basic { client_id: "my:client".into(), secret: "s+cret x".into() });
        assert_eq!(
            presented(None, &params("client_id=a&client_secret=b")).unwrap(),
            Credentials::Post { client_id: "a".into(), secret: "b".into() }
        );
        assert_eq!(presented(None, &params("client_id=a")).unwrap(), Credentials::Public { client_id: "a".into() });
        assert_eq!(presented(Some(&basic), &params("client_secret=b")).map_err(|e| e.error), Err("invalid_request"));
        assert_eq!(presented(None, &params("code=x")).map_err(|e| e.error), Err("invalid_client"));
        assert_eq!(presented(Some("Bearer x"), &params("")).map_err(|e| e.error), Err("invalid_client"));
        assert_eq!(presented(Some("Basic %%%"), &params("")).map_err(|e| e.error), Err("invalid_client"));
        assert_eq!(presented(None, &params("client_id=a&client_id=b")).map_err(|e| e.error), Err("invalid_request"));
        let jwt = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(br#"{"sub":"c1"}"#));
        let q = format!("client_assertion_type={}&client_assertion={jwt}", JWT_BEARER.replace(':', "%3A"));
        assert_eq!(
            presented(None, &params(&q)).unwrap(),
            Credentials::Assertion { client_id: "c1".into(), assertion: jwt.clone() }
        );
        assert_eq!(
            presented(None, &params(&format!("client_assertion_type=x&client_assertion={jwt}"))).map_err(|e| e.error),
            Err("invalid_request")
        );
        assert_eq!(presented(None, &params(&format!("{q}&client_id=c2"))).map_err(|e| e.error), Err("invalid_client"));
    }

    #[test]
    fn bearer_carries_an_assertion() {
        let jwt = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(br#"{"sub":"c1"}"#));
        let bearer = format!("Bearer {jwt}");
        assert_eq!(
            presented_with_bearer(Some(&bearer), &params("")).unwrap(),
            Credentials::Assertion { client_id: "c1".into(), assertion: jwt.clone() }
        );
        assert_eq!(
            presented_with_bearer(Some(&bearer), &params("client_secret=x")).map_err(|e| e.error),
            Err("invalid_request")
        );
        assert_eq!(
            presented_with_bearer(Some(&bearer), &params("client_id=c2")).map_err(|e| e.error),
            Err("invalid_client")
        );
        assert_eq!(presented_with_bearer(Some("Bearer x"), &params("")).map_err(|e| e.error), Err("invalid_client"));
        // Without Bearer it is `presented`.
        assert_eq!(
            presented_with_bearer(None, &params("client_id=a&client_secret=b")).unwrap(),
            Credentials::Post { client_id: "a".into(), secret: "b".into() }
        );
        // The token endpoint keeps refusing Bearer.
        assert_eq!(presented(Some(&bearer), &params("")).map_err(|e| e.error), Err("invalid_client"));
    }

    #[test]
    fn secrets_compare_by_hash() {
        let (secret, hash) = super::super::new_client_secret();
        assert!(secret_matches(&secret, &hash));
        assert!(secret_matches(&secret, &hash.to_ascii_uppercase()));
        assert!(!secret_matches(&format!("{secret}x"), &hash));
        assert!(!secret_matches("", &hash));
    }

    #[test]
    fn garbage_assertions_are_invalid_client() {
        let keys = vec![serde_json::json!({"kty": "EC", "crv": "P-256", "x": "", "y": ""})];
        for a in ["", "x", "a.b.c", "e30.e30.e30"] {
            assert_eq!(verify_assertion(a, &keys, "c", &["aud"], 0).map_err(|e| e.error), Err("invalid_client"), "{a}");
        }
    }
}
