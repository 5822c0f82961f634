//! A local stand-in for Google's OAuth token endpoint and FCM HTTP v1 `messages:send`,
//! speaking the same wire protocol: the token endpoint takes the RFC 7523 JWT-bearer
//! grant and verifies the RS256 assertion with the service account's public key; the
//! send endpoint checks the bearer token and the message shape, records the message,
//! and can be told to fail the next N sends. Used by tests and the demo.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::extract::{Form, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::oneshot;

/// The OAuth scope FCM requires.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Clock skew the token endpoint tolerates on `iat`.
const SKEW_SECS: i64 = 300;

/// A message the fake accepted.
#[derive(Debug, Clone)]
pub struct RecordedMessage {
    /// `{project}` of the request path.
    pub project_id: String,
    /// The device registration token (`message.token`).
    pub token: String,
    /// `message.data`.
    pub data: BTreeMap<String, String>,
    /// `message.android.priority`.
    pub android_priority: Option<String>,
    /// `message.android.ttl`, e.g. `"118s"`.
    pub android_ttl: Option<String>,
    /// `message.apns.headers`.
    pub apns_headers: BTreeMap<String, String>,
    /// The whole request body.
    pub body: Value,
    /// FCM's answer `name`.
    pub name: String,
    pub received_at: SystemTime,
}

impl RecordedMessage {
    /// `android.ttl` in whole seconds.
    pub fn ttl_secs(&self) -> Option<u64> {
        let ttl = self.android_ttl.as_deref()?.strip_suffix('s')?;
        ttl.split('.').next()?.parse().ok()
    }
}

/// A service account the fake trusts.
#[derive(Debug, Clone)]
struct Account {
    client_email: String,
    project_id: String,
    private_key_id: String,
    public_key: RsaPublicKey,
}

#[derive(Default)]
struct Recorder {
    accounts: Vec<Account>,
    /// Access token -> project it was issued for.
    issued: HashMap<String, String>,
    messages: Vec<RecordedMessage>,
    failures: VecDeque<u16>,
    retry_after: Option<u64>,
    send_times: Vec<Instant>,
}

struct Shared {
    token_uri: String,
    recorder: Mutex<Recorder>,
    token_requests: AtomicUsize,
    tokens_issued: AtomicUsize,
    send_requests: AtomicUsize,
    token_lifetime: AtomicU64,
    print_messages: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panicking test thread must not hide what was recorded.
        self.recorder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running fake FCM on 127.0.0.1. Stops when dropped.
pub struct FakeFcm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeFcm {
    /// Binds 127.0.0.1 on a free port and serves in the current tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), false).await
    }

    /// Binds `addr`; with `print_messages`, prints each accepted message (demo).
    pub async fn start_on(addr: SocketAddr, print_messages: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token_uri: format!("http://{addr}/token"),
            recorder: Mutex::new(Recorder::default()),
            token_requests: AtomicUsize::new(0),
            tokens_issued: AtomicUsize::new(0),
            send_requests: AtomicUsize::new(0),
            token_lifetime: AtomicU64::new(3599),
            print_messages,
        });
        let app = Router::new()
            .route("/token", post(token_endpoint))
            .route("/v1/projects/{project}/{method}", post(send_endpoint))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("fake FCM stopped: {e}");
            }
        });
        Ok(Self { addr, shared, stop: Some(stop) })
    }

    /// `fcm_base_url` for Symbolon's `[push]`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OAuth token endpoint (`token_uri`, the assertion's `aud`).
    pub fn token_uri(&self) -> String {
        self.shared.token_uri.clone()
    }

    /// Trusts a service account: assertions with `iss = client_email` must verify with
    /// `public_key`; tokens issued to it may send to `project_id` only.
    pub fn trust(&self, account: &ServiceAccountFixture) {
        self.shared.lock().accounts.push(Account {
            client_email: account.client_email.clone(),
            project_id: account.project_id.clone(),
            private_key_id: account.private_key_id.clone(),
            public_key: account.public_key.clone(),
        });
    }

    /// Generates a throwaway service account whose `token_uri` is this fake, and trusts it.
    pub fn new_service_account(&self, project_id: &str) -> anyhow::Result<ServiceAccountFixture> {
        let account = ServiceAccountFixture::generate(project_id, &self.token_uri())?;
        self.trust(&account);
        Ok(account)
    }

    /// Messages accepted so far, in order.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        self.shared.lock().messages.clone()
    }

    /// Waits until at least `n` messages were accepted, or `timeout` passes.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<RecordedMessage> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() >= end {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next `n` sends (after authentication) answer `status` with an FCM error body.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut r = self.shared.lock();
        r.failures.extend(std::iter::repeat_n(status, n));
    }

    /// Injected failures carry `Retry-After: secs`.
    pub fn set_retry_after(&self, secs: Option<u64>) {
        self.shared.lock().retry_after = secs;
    }

    /// Forgets every issued access token: the next send with one answers `401`.
    pub fn revoke_tokens(&self) {
        self.shared.lock().issued.clear();
    }

    /// `expires_in` of tokens issued from now on (default 3599 s).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.token_lifetime.store(secs, Ordering::Relaxed);
    }

    /// Requests to the token endpoint, good or bad.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// Access tokens issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.tokens_issued.load(Ordering::Relaxed)
    }

    /// Requests to `messages:send`, good or bad.
    pub fn send_requests(&self) -> usize {
        self.shared.send_requests.load(Ordering::Relaxed)
    }

    /// When each authenticated send arrived (accepted or failed on purpose).
    pub fn send_times(&self) -> Vec<Instant> {
        self.shared.lock().send_times.clone()
    }
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A throwaway Google service account (RSA-2048) for tests and the demo.
#[derive(Clone)]
pub struct ServiceAccountFixture {
    /// The service-account JSON file content, private key included.
    pub json: String,
    pub public_key: RsaPublicKey,
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountFixture")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountFixture {
    /// A new RSA-2048 key in Google's service-account JSON layout.
    pub fn generate(project_id: &str, token_uri: &str) -> anyhow::Result<Self> {
        let key = RsaPrivateKey::new(&mut OsRng, 2048).context("generating an RSA key")?;
        Self::from_key(&key, project_id, token_uri)
    }

    /// Reads a service-account JSON written by [`Self::write_to`] (the demo reuses one
    /// across restarts of `fake-fcm`).
    pub fn from_json(json: &str) -> anyhow::Result<Self> {
        use rsa::pkcs8::DecodePrivateKey;
        let v: Value = serde_json::from_str(json).context("service-account JSON")?;
        let field =
            |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("service-account JSON has no {k}"));
        let key =
            RsaPrivateKey::from_pkcs8_pem(&field("private_key")?).context("private_key is not a PKCS#8 RSA key")?;
        Ok(Self {
            json: json.to_owned(),
            public_key: key.to_public_key(),
            project_id: field("project_id")?,
            client_email: field("client_email")?,
            private_key_id: field("private_key_id")?,
            token_uri: field("token_uri")?,
        })
    }

    /// The JSON for an existing key.
    pub fn from_key(key: &RsaPrivateKey, project_id: &str, token_uri: &str) -> anyhow::Result<Self> {
        let pem = key.to_pkcs8_pem(LineEnding::LF).context("encoding the RSA key as PKCS#8")?;
        let mut id = [0u8; 20];
        OsRng.fill_bytes(&mut id);
        let private_key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let client_email = format!("symbolon-push@{project_id}.iam.gserviceaccount.com");
        let json = serde_json::to_string_pretty(&json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": pem.as_str(),
            "client_email": client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/symbolon-push%40{project_id}.iam.gserviceaccount.com"),
            "universe_domain": "googleapis.com"
        }))?;
        Ok(Self {
            json,
            public_key: key.to_public_key(),
            project_id: project_id.to_owned(),
            client_email,
            private_key_id,
            token_uri: token_uri.to_owned(),
        })
    }

    /// Writes the JSON to `path`, readable by the owner only.
    pub fn write_to(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(self.json.as_bytes())?;
        Ok(())
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn oauth_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": description}))).into_response()
}

async fn token_endpoint(State(shared): State<Arc<Shared>>, Form(form): Form<HashMap<String, String>>) -> Response {
    shared.token_requests.fetch_add(1, Ordering::Relaxed);
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let project = match verify_assertion(&shared, assertion) {
        Ok(p) => p,
        Err(why) => return oauth_error("invalid_grant", why),
    };
    let mut raw = [0u8; 24];
    OsRng.fill_bytes(&mut raw);
    let access_token = format!("ya29.fake-{}", URL_SAFE_NO_PAD.encode(raw));
    shared.lock().issued.insert(access_token.clone(), project);
    shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "access_token": access_token,
        "expires_in": shared.token_lifetime.load(Ordering::Relaxed),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Verifies the RFC 7523 assertion; returns the account's project.
fn verify_assertion(shared: &Shared, assertion: &str) -> Result<String, &'static str> {
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("Invalid JWT: not a compact JWS.");
    };
    let decode = |p: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| "Invalid JWT: bad base64url.")?;
        serde_json::from_slice(&bytes).map_err(|_| "Invalid JWT: not JSON.")
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    if header["alg"] != "RS256" {
        return Err("Invalid JWT: alg must be RS256.");
    }
    if !header["typ"].is_null() && header["typ"] != "JWT" {
        return Err("Invalid JWT: typ must be JWT.");
    }
    let iss = claims["iss"].as_str().ok_or("Invalid JWT: no iss.")?;
    let account = shared
        .lock()
        .accounts
        .iter()
        .find(|a| a.client_email == iss)
        .cloned()
        .ok_or("Invalid JWT: unknown service account.")?;
    if let Some(kid) = header["kid"].as_str()
        && kid != account.private_key_id
    {
        return Err("Invalid JWT: unknown kid.");
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "Invalid JWT Signature.")?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| "Invalid JWT Signature.")?;
    let signing_input = &assertion[..h.len() + 1 + c.len()];
    VerifyingKey::<Sha256>::new(account.public_key)
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| "Invalid JWT Signature.")?;
    if claims["aud"].as_str() != Some(shared.token_uri.as_str()) {
        return Err("Invalid JWT: Failed audience check.");
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == FCM_SCOPE) {
        return Err("Invalid JWT: scope does not include firebase.messaging.");
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err("Invalid JWT: iat and exp are required.");
    };
    let now = now_unix();
    if iat > now + SKEW_SECS || exp <= now {
        return Err("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.");
    }
    if exp - iat > 3600 {
        return Err("Invalid JWT: exp is more than one hour after iat.");
    }
    Ok(account.project_id)
}

/// An error in the Google API format FCM uses.
fn fcm_error(status: u16, retry_after: Option<u64>) -> Response {
    let (api_status, error_code, message) = match status {
        400 => ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Request had invalid authentication credentials."),
        403 => ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
        404 => ("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
        429 => ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded."),
        500 => ("INTERNAL", "INTERNAL", "Internal error encountered."),
        _ => ("UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (
        code,
        Json(json!({
            "error": {
                "code": status,
                "message": message,
                "status": api_status,
                "details": [{
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": error_code,
                }],
            }
        })),
    )
        .into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn send_endpoint(
    State(shared): State<Arc<Shared>>,
    UrlPath((project, method)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    shared.send_requests.fetch_add(1, Ordering::Relaxed);
    if method != "messages:send" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let granted = {
        let r = shared.lock();
        bearer.and_then(|b| r.issued.get(b).cloned())
    };
    let Some(granted) = granted else {
        return fcm_error(401, None);
    };
    if granted != project {
        return fcm_error(403, None);
    }
    let injected = {
        let mut r = shared.lock();
        r.send_times.push(Instant::now());
        r.failures.pop_front().map(|s| (s, r.retry_after))
    };
    if let Some((status, retry_after)) = injected {
        return fcm_error(status, retry_after);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fcm_error(400, None);
    };
    let mut recorded = match check_message(&body) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("fake FCM: rejected message: {why}");
            return fcm_error(400, None);
        }
    };
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    let name = format!("projects/{project}/messages/{}", u64::from_be_bytes(id));
    recorded.project_id = project;
    recorded.name = name.clone();
    if shared.print_messages {
        println!(
            "push to device token {}…: {}",
            recorded.token.chars().take(12).collect::<String>(),
            serde_json::to_string(&recorded.data).unwrap_or_default()
        );
    }
    shared.lock().messages.push(recorded);
    Json(json!({ "name": name })).into_response()
}

/// Checks a `messages:send` body the way FCM does for the parts Symbolon uses.
fn check_message(body: &Value) -> Result<RecordedMessage, String> {
    let top = body.as_object().ok_or("body is not an object")?;
    if let Some(k) = top.keys().find(|k| *k != "message" && *k != "validate_only") {
        return Err(format!("unknown field {k:?}"));
    }
    let message = top.get("message").and_then(Value::as_object).ok_or("message is missing")?;
    const MESSAGE_FIELDS: &[&str] =
        &["name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic", "condition"];
    if let Some(k) = message.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field message.{k}"));
    }
    let token = message
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("message.token must be a non-empty string")?;
    if message.contains_key("topic") || message.contains_key("condition") {
        return Err("exactly one of token, topic, condition".into());
    }
    let mut data = BTreeMap::new();
    if let Some(d) = message.get("data") {
        let d = d.as_object().ok_or("message.data must be an object")?;
        for (k, v) in d {
            let v = v.as_str().ok_or_else(|| format!("message.data.{k} is not a string"))?;
            if k == "from" || k == "message_type" || k.starts_with("google") || k.starts_with("gcm") {
                return Err(format!("message.data.{k} is a reserved key"));
            }
            data.insert(k.clone(), v.to_owned());
        }
    }
    let (mut android_priority, mut android_ttl) = (None, None);
    if let Some(a) = message.get("android") {
        let a = a.as_object().ok_or("message.android must be an object")?;
        if let Some(p) = a.get("priority") {
            let p = p.as_str().ok_or("android.priority must be a string")?;
            if !p.eq_ignore_ascii_case("high") && !p.eq_ignore_ascii_case("normal") {
                return Err(format!("android.priority {p:?}"));
            }
            android_priority = Some(p.to_owned());
        }
        if let Some(t) = a.get("ttl") {
            let t = t.as_str().ok_or("android.ttl must be a string")?;
            if !is_duration(t) {
                return Err(format!("android.ttl {t:?} is not a duration like \"3.5s\""));
            }
            android_ttl = Some(t.to_owned());
        }
    }
    let mut apns_headers = BTreeMap::new();
    if let Some(h) = message.get("apns").and_then(|a| a.get("headers")) {
        let h = h.as_object().ok_or("apns.headers must be an object")?;
        for (k, v) in h {
            let v = v.as_str().ok_or_else(|| format!("apns.headers.{k} is not a string"))?;
            apns_headers.insert(k.clone(), v.to_owned());
        }
    }
    Ok(RecordedMessage {
        project_id: String::new(),
        token: token.to_owned(),
        data,
        android_priority,
        android_ttl,
        apns_headers,
        body: body.clone(),
        name: String::new(),
        received_at: SystemTime::now(),
    })
}

/// protobuf JSON Duration: seconds with up to 9 fractional digits and an `s`.
fn is_duration(t: &str) -> bool {
    let Some(num) = t.strip_suffix('s') else {
        return false;
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(num.contains('.') && frac.is_empty())
}
