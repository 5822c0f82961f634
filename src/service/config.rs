//! The domain's sections: relying parties (`[[services]]`), sessions (`[auth]`),
//! device messages (`[device]`), abuse limits (`[limits]`), the audit checkpoints
//! (`[audit]`) and the demo page (`[demo]`); and [`Settings`], the values the domain
//! runs with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigProblem;
use crate::saml::{SamlConfig, SamlSpConfig};

/// A relying party.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `service_id` in the protocol, `aud` of identity tokens.
    pub id: String,
    /// Shown to the user on the phone.
    pub name: String,
    /// Scopes this service may request (docs/protocol.md §7.3).
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Browser origins allowed to start sessions (`Origin` header), e.g. `https://rp.example`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The service is also a SAML service provider (`[services.saml]`).
    #[serde(default)]
    pub saml: Option<SamlSpConfig>,
    /// The `sub` of this service's identity tokens: `public` (the token id) or
    /// `pairwise` (docs/protocol.md §13). Default: `public`.
    #[serde(default)]
    pub subject_type: Option<SubjectType>,
    /// The sector of pairwise subjects: services of one sector see the same `sub` for a
    /// person. Default: the one host of the service's SAML ACS URL, OIDC redirect URIs
    /// or allowed origins.
    #[serde(default)]
    pub sector_identifier: Option<String>,
    /// The service is also an OpenID Connect client (`[services.oidc]`,
    /// docs/protocol.md §14.2); its `id` is the `client_id`.
    #[serde(default)]
    pub oidc: Option<crate::oidc::OidcClientConfig>,
    /// Who may start this service's sign-ins with `POST /v1/auth/initiate`
    /// (docs/protocol.md §5.1): any browser on `allowed_origins` (`browser`, the
    /// default) or only the service's backend, authenticated (`backend`).
    #[serde(default)]
    pub initiate: InitiateMode,
    /// How the backend authenticates its initiate calls (`initiate = "backend"`).
    #[serde(default)]
    pub client_auth: Option<crate::oidc::ClientAuthConfig>,
}

/// Who may call `POST /v1/auth/initiate` for a service (docs/protocol.md §5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitiateMode {
    /// Anyone: the relying party's page calls it from the browser (the `Origin` check
    /// keeps other sites' pages out, not scripts).
    #[default]
    Browser,
    /// Only the service's backend, with client authentication (`[services.client_auth]`).
    Backend,
}

/// What a relying party receives as the person's subject (OIDC Core §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// The token id, the same at every relying party.
    Public,
    /// An HMAC of the sector and the token id made in the HSM (docs/protocol.md §13):
    /// relying parties of different sectors cannot correlate people by `sub`.
    Pairwise,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Public => "public",
            SubjectType::Pairwise => "pairwise",
        }
    }
}

impl ServiceConfig {
    /// The subject type in effect (the configured one, else the default: `pairwise`
    /// for an OpenID Connect client, `public` otherwise).
    pub fn subject_type(&self) -> SubjectType {
        let default = if self.oidc.is_some() { SubjectType::Pairwise } else { SubjectType::Public };
        self.subject_type.unwrap_or(default)
    }

    /// The sector of this service's pairwise subjects: `sector_identifier`, else the
    /// one host its URLs name (SAML ACS URL, allowed origins). An error says why none
    /// can be chosen.
    pub fn sector(&self) -> Result<String, String> {
        if let Some(s) = &self.sector_identifier {
            return Ok(s.clone());
        }
        let urls = self
            .saml
            .iter()
            .map(|sp| sp.acs_url.as_str())
            .chain(self.oidc.iter().flat_map(|c| c.redirect_uris.iter().map(String::as_str)))
            .chain(self.allowed_origins.iter().map(String::as_str));
        let mut hosts: Vec<String> = Vec::new();
        for url in urls {
            let Some(host) = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)) else {
                continue;
            };
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        match hosts.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("no URL of the service names a host: set sector_identifier".into()),
            _ => Err(format!("its URLs name several hosts ({}): set sector_identifier", hosts.join(", "))),
        }
    }
}

/// A sector identifier: a host name (letters, digits, `-`, `.`) or IP literal, lower case.
fn valid_sector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
}

/// The scopes of docs/protocol.md §7.3, in table order.
pub const SCOPES: [&str; 5] = ["name", "birthdate", "age", "nationality", "document"];

/// Authentication sessions (docs/protocol.md §5, §6, §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Life of a session and its OTP.
    #[serde(with = "humantime_serde")]
    pub otp_ttl: Duration,
    /// OTP length, 6 to 8.
    pub otp_digits: u8,
    /// Pending sessions allowed per token id.
    pub max_pending: u32,
    /// Failed verifies that lock a session.
    pub session_max_failures: u32,
    /// Life of identity tokens.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long after `expires_at` the browser token still reads the outcome.
    #[serde(with = "humantime_serde")]
    pub browser_grace: Duration,
    /// Life of OpenID Connect access tokens (`/userinfo`, docs/protocol.md §14).
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Time the browser has to send `hello` on the WebSocket.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// How long keys fetched from a client's `jwks_uri` are used.
    #[serde(with = "humantime_serde")]
    pub client_jwks_cache: Duration,
    /// Least time between two fetches of one `jwks_uri` (an unknown `kid`).
    #[serde(with = "humantime_serde")]
    pub client_jwks_refetch_interval: Duration,
    /// Enrollments kept in memory for the sign-in path, by device id and by token id
    /// each (0: none, every sign-in reads the database).
    pub enrollment_cache_entries: usize,
    /// Longest time an enrollment is kept in memory. Changes made through any node are
    /// heard at once; this bounds only those no node announces (a `symbolon users`
    /// command against SQLite while the server runs).
    #[serde(with = "humantime_serde")]
    pub enrollment_cache_ttl: Duration,
    /// Live sessions whose OTP this process keeps in memory (past it, codes are
    /// computed again when needed).
    pub otp_cache_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            otp_ttl: Duration::from_secs(120),
            otp_digits: 6,
            max_pending: 3,
            session_max_failures: 5,
            token_ttl: Duration::from_secs(300),
            browser_grace: Duration::from_secs(60),
            access_token_ttl: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(5),
            client_jwks_cache: Duration::from_secs(600),
            client_jwks_refetch_interval: Duration::from_secs(30),
            enrollment_cache_entries: 100_000,
            enrollment_cache_ttl: Duration::from_secs(10),
            otp_cache_entries: super::otp::DEFAULT_OTP_CACHE_ENTRIES,
        }
    }
}

/// Device message rules (docs/protocol.md §3, §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Accepted `|now - iat|` of device JWS payloads.
    #[serde(with = "humantime_serde")]
    pub iat_skew: Duration,
    /// Life of an enrollment nonce.
    #[serde(with = "humantime_serde")]
    pub enroll_nonce_ttl: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self { iat_skew: Duration::from_secs(120), enroll_nonce_ttl: Duration::from_secs(300) }
    }
}

/// Abuse limits (docs/protocol.md §9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body.
    pub body_max_bytes: usize,
    /// Requests per client IP per minute to `/v1/enroll*`.
    pub enroll_per_ip_per_minute: u32,
    /// Requests per client IP per minute to `/v1/auth/initiate`.
    pub initiate_per_ip_per_minute: u32,
    /// Initiates per token id per minute (push-bombing guard).
    pub initiate_per_token_per_minute: u32,
    /// Failure units per token id within `failure_window` that lock it out.
    pub failure_units: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Units a failed verify costs.
    pub verify_failure_cost: u32,
    /// How long a token id stays locked out.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// WebSocket upgrades (`/v1/auth/sessions/{id}/ws`) per client IP per minute;
    /// more get `429 rate_limited` before the upgrade.
    pub websocket_per_ip_per_minute: u32,
    /// Browser WebSockets open at once on this node (and session event channels held);
    /// more upgrades get `503 overloaded`.
    pub websocket_max_open: usize,
    /// Polls per client IP per minute, counted separately for the browser's session
    /// status (`GET /v1/auth/sessions/{id}`) and the device's `POST /v1/device/pending`;
    /// more get `429 rate_limited`.
    pub poll_per_ip_per_minute: u32,
    /// `GET /saml/sso` requests per client IP per minute; more get `429`.
    pub saml_sso_per_ip_per_minute: u32,
    /// SAML sign-in contexts created within their lifetime (15 minutes) across the
    /// cluster, which bounds the contexts pending at once; more `/saml/sso` requests
    /// get `503 overloaded` with `Retry-After`.
    pub saml_max_pending_contexts: u32,
    /// OpenID Connect authorization requests (`/authorize`) per client IP per minute,
    /// and separately the hosted page's completion and cancel posts; more get `429`.
    pub oidc_authorize_per_ip_per_minute: u32,
    /// OpenID Connect sign-in contexts created within their lifetime (15 minutes)
    /// across the cluster; more authorization requests get `503 overloaded` with
    /// `Retry-After`.
    pub oidc_max_pending_contexts: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            body_max_bytes: 64 * 1024,
            enroll_per_ip_per_minute: 30,
            initiate_per_ip_per_minute: 60,
            initiate_per_token_per_minute: 5,
            failure_units: 10,
            failure_window: Duration::from_secs(60),
            verify_failure_cost: 2,
            lockout: Duration::from_secs(300),
            // A browser opens one channel per sign-in and may reconnect a few times;
            // many browsers can share an IP behind NAT.
            websocket_per_ip_per_minute: 120,
            websocket_max_open: crate::store::DEFAULT_MAX_CHANNELS,
            // A browser polls about once a second while it waits, a device every few
            // seconds; browsers behind one NAT and phones behind carrier NAT share an IP.
            poll_per_ip_per_minute: 600,
            saml_sso_per_ip_per_minute: 60,
            saml_max_pending_contexts: 20_000,
            oidc_authorize_per_ip_per_minute: 60,
            oidc_max_pending_contexts: 20_000,
        }
    }
}

impl LimitsConfig {
    /// What is wrong with `[limits]`: limits that would refuse every request (zero) are
    /// configuration mistakes.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.body_max_bytes < 1024 {
            p.push(ConfigProblem::new("limits.body_max_bytes", "must be at least 1024"));
        }
        let per_minute = [
            ("websocket_per_ip_per_minute", self.websocket_per_ip_per_minute),
            ("poll_per_ip_per_minute", self.poll_per_ip_per_minute),
            ("saml_sso_per_ip_per_minute", self.saml_sso_per_ip_per_minute),
            ("saml_max_pending_contexts", self.saml_max_pending_contexts),
            ("oidc_authorize_per_ip_per_minute", self.oidc_authorize_per_ip_per_minute),
            ("oidc_max_pending_contexts", self.oidc_max_pending_contexts),
        ];
        for (name, value) in per_minute {
            if value == 0 {
                p.push(ConfigProblem::new(format!("limits.{name}"), "must be at least 1"));
            }
        }
        if self.websocket_max_open == 0 {
            p.push(ConfigProblem::new("limits.websocket_max_open", "must be at least 1"));
        }
        p
    }
}

/// The audit trail's signed checkpoints (docs/architecture.md, the store room).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint after this many new events...
    pub checkpoint_every: u32,
    /// ...or this long after the last one when events were added since.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Months of audit records kept in the database besides the current one, once
    /// archived (`symbolon audit maintain`); 0 keeps everything.
    pub retention_months: u32,
    /// PostgreSQL: how often a server whose database role owns the audit table keeps
    /// its monthly partitions (the current and the next three), on the node holding
    /// the key schedule's lease. Also run at start.
    #[serde(with = "humantime_serde")]
    pub partition_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(60),
            retention_months: 0,
            partition_interval: Duration::from_secs(3600),
        }
    }
}

/// The demo relying-party page `GET /demo`: enter a token id, see the OTP, see the
/// identity token after approval. Off by default; meant for trying Symbolon out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve `/demo`.
    pub enabled: bool,
    /// The `[[services]]` entry the page signs in to; its allowed scopes are requested.
    pub service_id: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: false, service_id: "demo".into() }
    }
}

impl AuthConfig {
    /// What is wrong with `[auth]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !(6..=8).contains(&self.otp_digits) {
            p.push(ConfigProblem::new("auth.otp_digits", "must be 6, 7 or 8"));
        }
        if self.otp_ttl < Duration::from_secs(1) {
            p.push(ConfigProblem::new("auth.otp_ttl", "must be at least 1s"));
        }
        if self.max_pending == 0 || self.session_max_failures == 0 {
            p.push(ConfigProblem::new("auth.max_pending", "max_pending and session_max_failures must be at least 1"));
        }
        if self.token_ttl < Duration::from_secs(10) {
            p.push(ConfigProblem::new("auth.token_ttl", "must be at least 10s"));
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&self.access_token_ttl) {
            p.push(ConfigProblem::new("auth.access_token_ttl", "must be between 5s and 1h"));
        }
        if self.client_jwks_cache.is_zero() {
            p.push(ConfigProblem::new("auth.client_jwks_cache", "must be greater than zero"));
        }
        p
    }
}

impl DeviceConfig {
    /// What is wrong with `[device]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.iat_skew.is_zero() {
            p.push(ConfigProblem::new("device.iat_skew", "must be greater than zero"));
        }
        p
    }
}

impl AuditConfig {
    /// What is wrong with `[audit]`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.checkpoint_every == 0 || self.checkpoint_interval < Duration::from_secs(1) {
            p.push(ConfigProblem::new("audit.checkpoint_every", "checkpoint_every ≥ 1 and checkpoint_interval ≥ 1s"));
        }
        if self.partition_interval < Duration::from_secs(1) {
            p.push(ConfigProblem::new("audit.partition_interval", "at least 1s"));
        }
        p
    }
}

/// What is wrong with the `[[services]]` list: each entry's fields, and ids unique.
pub fn services_problems(services: &[ServiceConfig]) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, s) in services.iter().enumerate() {
        let at = |f: &str| format!("services[{i}].{f}");
        if s.id.is_empty() || s.id.len() > 128 {
            p.push(ConfigProblem::new(at("id"), "must be 1..128 characters"));
        }
        if !seen.insert(s.id.as_str()) {
            p.push(ConfigProblem::new(at("id"), format!("duplicate service id {:?}", s.id)));
        }
        if s.name.is_empty() {
            p.push(ConfigProblem::new(at("name"), "must not be empty"));
        }
        for scope in &s.allowed_scopes {
            if !SCOPES.contains(&scope.as_str()) {
                p.push(ConfigProblem::new(
                    at("allowed_scopes"),
                    format!("unknown scope {scope:?} (known: {SCOPES:?})"),
                ));
            }
        }
        if let Some(sector) = &s.sector_identifier
            && !valid_sector(sector)
        {
            p.push(ConfigProblem::new(
                at("sector_identifier"),
                format!("{sector:?} is not a host name like rp.example (lower case, no scheme or path)"),
            ));
        }
        if let Some(oidc) = &s.oidc {
            p.extend(oidc.problems(&at("oidc")));
        }
        match (s.initiate, &s.client_auth) {
            (InitiateMode::Backend, None) => p.push(ConfigProblem::new(
                at("client_auth"),
                "initiate = \"backend\" needs the service's credentials in [services.client_auth]",
            )),
            (InitiateMode::Browser, Some(_)) => p.push(ConfigProblem::new(
                at("client_auth"),
                "client authentication is used only with initiate = \"backend\"",
            )),
            (_, Some(auth)) => p.extend(auth.problems(&at("client_auth"))),
            (InitiateMode::Browser, None) => {}
        }
        if s.initiate == InitiateMode::Backend && (s.oidc.is_some() || s.saml.is_some()) {
            p.push(ConfigProblem::new(
                at("initiate"),
                "an OpenID Connect client or SAML service provider signs in on Symbolon's own page, \
                 which starts the session from the browser: initiate = \"backend\" is for raw-API services",
            ));
        }
        if s.subject_type() == SubjectType::Pairwise
            && let Err(e) = s.sector()
        {
            p.push(ConfigProblem::new(at("subject_type"), format!("pairwise subjects need a sector: {e}")));
        }
        for origin in &s.allowed_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin.matches('/').count() == 2;
            if !ok {
                p.push(ConfigProblem::new(
                    at("allowed_origins"),
                    format!("{origin:?} is not an origin like https://rp.example"),
                ));
            }
        }
    }
    p
}

/// What is wrong with the services' SAML service provider entries: each entry, entity
/// ids unique, default scopes among the service's allowed ones.
pub fn saml_sp_problems(services: &[ServiceConfig]) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    let mut entities = std::collections::HashSet::new();
    for (i, s) in services.iter().enumerate() {
        let Some(sp) = &s.saml else { continue };
        let at = format!("services[{i}].saml");
        p.extend(sp.problems(&at));
        if !entities.insert(sp.entity_id.as_str()) {
            p.push(ConfigProblem::new(format!("{at}.entity_id"), format!("duplicate SP entity id {:?}", sp.entity_id)));
        }
        for scope in &sp.default_scopes {
            if !s.allowed_scopes.contains(scope) {
                p.push(ConfigProblem::new(
                    format!("{at}.default_scopes"),
                    format!("{scope:?} is not among the service's allowed_scopes"),
                ));
            }
        }
    }
    p
}

/// What the domain runs with: its own sections, the IdP's `[saml]` and the issuer
/// (`server.issuer`), passed in at start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The `iss` of identity tokens and the base of SAML entity ids.
    pub issuer: String,
    pub auth: AuthConfig,
    pub device: DeviceConfig,
    pub limits: LimitsConfig,
    pub saml: SamlConfig,
    pub demo: DemoConfig,
}

impl Settings {
    /// The origin of the issuer (`https://idp.example`), where the IdP's own pages
    /// (SAML sign-in, demo) run.
    pub fn issuer_origin(&self) -> Option<String> {
        issuer_origin(&self.issuer)
    }

    /// Whether the IdP's own pages start sessions for this service: a SAML SP (when
    /// SAML is enabled), an OpenID Connect client, or the demo service (when the demo
    /// is enabled). For such a
    /// service the issuer origin is accepted as an `Origin` besides `allowed_origins`.
    pub fn served_by_idp_pages(&self, service: &ServiceConfig) -> bool {
        served_by_idp_pages(&self.saml, &self.demo, service)
    }
}

/// The origin of an issuer URL (`https://idp.example`).
pub fn issuer_origin(issuer: &str) -> Option<String> {
    url::Url::parse(issuer).ok().map(|u| u.origin()).filter(|o| o.is_tuple()).map(|o| o.ascii_serialization())
}

/// See [`Settings::served_by_idp_pages`].
pub fn served_by_idp_pages(saml: &SamlConfig, demo: &DemoConfig, service: &ServiceConfig) -> bool {
    (saml.enabled && service.saml.is_some())
        || (demo.enabled && service.id == demo.service_id)
        || service.oidc.is_some()
}
