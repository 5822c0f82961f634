//! A server with a relying party, an enrolled reference device and a browser client
//! (HTTP + WebSocket) for sign-in tests and benchmarks.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::device::client::DeviceClient;
use crate::device::{Device, Push};
use crate::trustenv::FixtureChain;
use crate::{ServerOptions, TestServer, TestToken};

/// The relying party every sign-in test uses.
pub const SERVICE_TOML: &str = r#"
[[services]]
id = "rp1"
name = "Demo Bank"
allowed_scopes = ["name", "birthdate", "age", "nationality", "document"]
allowed_origins = ["https://rp.example"]

[[services]]
id = "rp2"
name = "Age Check"
allowed_scopes = ["age"]
allowed_origins = []
"#;

/// Limits relaxed so that tests exercise one limit at a time.
pub const RELAXED_LIMITS: &str = "[limits]\nenroll_per_ip_per_minute = 100000\ninitiate_per_ip_per_minute = 100000\n\
                                   websocket_per_ip_per_minute = 100000\npoll_per_ip_per_minute = 100000\n\
                                   saml_sso_per_ip_per_minute = 100000\n";

/// A running server with an enrolled device.
pub struct SignIn {
    pub token: TestToken,
    pub chain: FixtureChain,
    pub server: TestServer,
    pub device: Device,
    pub device_client: DeviceClient,
    /// The enrolled token id.
    pub token_id: String,
}

impl SignIn {
    /// Starts a server with `extra` TOML (after the services and relaxed limits) and
    /// enrolls a device with the `valid_full` fixture seal.
    pub async fn start(extra: &str, options: ServerOptions) -> anyhow::Result<Self> {
        let token = TestToken::new()?;
        Self::start_with_token(token, extra, options).await
    }

    /// As [`SignIn::start`] with a token prepared by the caller.
    pub async fn start_with_token(token: TestToken, extra: &str, options: ServerOptions) -> anyhow::Result<Self> {
        Self::start_full(token, extra, options, Push::None).await
    }

    /// As [`SignIn::start_with_token`], enrolling with the given push registration.
    pub async fn start_full(token: TestToken, extra: &str, options: ServerOptions, push: Push) -> anyhow::Result<Self> {
        Self::start_with_chain(token, FixtureChain::new()?, extra, options, push).await
    }

    /// As [`SignIn::start_full`] with a chain prepared by the caller (e.g. with bulk seals).
    pub async fn start_with_chain(
        token: TestToken,
        chain: FixtureChain,
        extra: &str,
        options: ServerOptions,
        push: Push,
    ) -> anyhow::Result<Self> {
        let extra_toml =
            format!("{}\n{SERVICE_TOML}\n{RELAXED_LIMITS}\n{extra}\n{}", chain.trust_toml("1h"), options.extra_toml);
        let server = TestServer::start(&token, ServerOptions { extra_toml, ..options })?;
        let device_client = DeviceClient::new(&server.public_url)?;
        let device = Device::generate();
        let seal = chain.manifest.seal("valid_full").ok_or_else(|| anyhow::anyhow!("no valid_full seal"))?;
        device_client.enroll(&device, &seal.vds, push, "test phone").await?;
        let token_id = seal.tid.clone().unwrap_or_default();
        Ok(Self { token, chain, server, device, device_client, token_id })
    }

    /// As [`SignIn::start`] with push on: the fake FCM's service-account key imported
    /// into a fresh token, `[push]` pointing at `fake`, and the device enrolled with the
    /// FCM registration token `push_token`.
    pub async fn start_with_fcm(
        fake: &crate::fake_fcm::FakeFcm,
        push_token: &str,
        extra: &str,
        options: ServerOptions,
    ) -> anyhow::Result<Self> {
        let token = TestToken::new()?;
        token.use_in_process()?;
        let account = fake.new_service_account("symbolon-test")?;
        let json_path = token.dir.path().join("service-account.json");
        account.write_to(&json_path)?;
        let ctx = symbolon::keys::Module::load(&token.module)?;
        let pin = symbolon::keys::HsmPin::resolve(Some(&token.pin_file))?;
        let pool = symbolon::keys::SessionPool::start(
            ctx,
            Some(token.label.clone()),
            None,
            pin,
            1,
            4,
            Duration::from_secs(5),
        )?;
        let imported = symbolon::push::cli::import_service_account(&pool, &json_path).await;
        pool.shutdown();
        let imported = imported?;
        let push = format!(
            "[push]\nprovider = \"fcm\"\nfcm_base_url = \"{}\"\nproject_id = \"{}\"\nclient_email = \"{}\"\ntoken_uri = \"{}\"\nprivate_key_id = \"{}\"\nkey_label = \"{}\"\n{extra}",
            fake.base_url(),
            imported.project_id,
            imported.client_email,
            imported.token_uri,
            imported.private_key_id,
            imported.label
        );
        Self::start_full(token, &push, options, Push::Fcm { token: push_token.into() }).await
    }

    /// `POST /v1/auth/initiate`; returns (status, body).
    pub async fn initiate(
        &self,
        token_id: &str,
        service: &str,
        scopes: &[&str],
    ) -> anyhow::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/auth/initiate", self.server.public_url))
            .json(&serde_json::json!({"token_id": token_id, "service_id": service, "scopes": scopes}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Ok((status, r.json().await?, headers))
    }

    /// The authorization code flow of a public OIDC client (`token_endpoint_auth_method
    /// = "none"`, PKCE S256) over HTTP as the hosted page runs it, the device approving
    /// `scopes` for this token id: the token response (`id_token`, `access_token`, ...).
    pub async fn oidc_public_sign_in(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[&str],
    ) -> anyhow::Result<Value> {
        use anyhow::Context;
        const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let base = &self.server.public_url;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let scope = std::iter::once("openid").chain(scopes.iter().copied()).collect::<Vec<_>>().join(" ");
        let pairs = [
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", scope.as_str()),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        let page = http.get(reqwest::Url::parse_with_params(&format!("{base}/authorize"), &pairs)?).send().await?;
        anyhow::ensure!(page.status().as_u16() == 200, "authorize: {}", page.status());
        let cookie = page
            .headers()
            .get("set-cookie")
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .context("no flow cookie")?
            .to_string();
        let body = page.text().await?;
        let marker = "name=\"context\" value=\"";
        let start = body.find(marker).context("no context on the page")? + marker.len();
        let context = body[start..].split('"').next().context("context")?.to_string();
        let started: Value = http
            .post(format!("{base}/v1/auth/initiate"))
            .header("Origin", base.as_str())
            .json(&serde_json::json!({"token_id": self.token_id, "service_id": client_id, "scopes": scopes}))
            .send()
            .await?
            .json()
            .await?;
        let sid = started["session_id"].as_str().with_context(|| format!("initiate: {started}"))?.to_string();
        let bt = started["browser_token"].as_str().context("initiate")?.to_string();
        let pending = self.device_client.pending(&self.device).await?;
        let otp = pending.sessions.iter().find(|s| s.session_id == sid).context("not pending")?.otp.clone();
        let granted = scopes.iter().map(|s| s.to_string()).collect();
        self.device_client.verify(&self.device, &sid, &otp, crate::device::Decision::Approve, Some(granted)).await?;
        let done = http
            .post(format!("{base}/authorize/complete"))
            .header("cookie", cookie)
            .form(&[("context", context.as_str()), ("session_id", &sid), ("browser_token", &bt)])
            .send()
            .await?;
        let location = done.headers().get("location").and_then(|l| l.to_str().ok()).context("no redirect")?;
        let code = reqwest::Url::parse(location)?
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .context("no code")?;
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
        ];
        let tokens: Value = http.post(format!("{base}/token")).form(&form).send().await?.json().await?;
        anyhow::ensure!(tokens["id_token"].is_string(), "token response: {tokens}");
        Ok(tokens)
    }

    /// Another node: a server with the same token and configuration (a cluster when
    /// the configuration names shared stores).
    pub fn another_node(&self) -> anyhow::Result<TestServer> {
        TestServer::start(
            &self.token,
            ServerOptions { extra_toml: self.server.extra_toml.clone(), ..Default::default() },
        )
    }

    /// The WebSocket URL of a session.
    pub fn ws_url(&self, session_id: &str) -> String {
        format!("{}/v1/auth/sessions/{session_id}/ws", self.server.public_url.replace("http://", "ws://"))
    }
}

/// A browser's WebSocket to the server.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON, or the close frame's code (`None`: no code, or the
/// connection ended). Panics when nothing arrives within 15 s.
pub async fn next_message(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let Ok(message) = tokio::time::timeout(Duration::from_secs(15), ws.next()).await else {
            panic!("no websocket message within 15 s");
        };
        match message {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                Ok(v) => return Ok(v),
                Err(e) => panic!("websocket message is not JSON ({e}): {t}"),
            },
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(None),
        }
    }
}
