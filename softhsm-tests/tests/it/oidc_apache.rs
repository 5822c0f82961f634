//! A relying party nobody here wrote: Apache httpd with mod_auth_openidc (Debian's
//! `apache2` and `libapache2-mod-auth-openidc`) protecting a location, configured from
//! Symbolon's discovery URL, driven by headless Chromium through the whole sign-in
//! while the reference device approves; once with `client_secret_basic` and once with
//! `private_key_jwt` (Apache's RSA key in `OIDCPrivateKeyFiles`, its public key in the
//! client's `jwks`). The protected page is a CGI that shows the `OIDC_CLAIM_*`
//! variables Apache received; the test checks them. The configuration is the one
//! docs/integration.md shows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use softhsm_tests::apache::Apache;
use softhsm_tests::device::Decision;
use softhsm_tests::oidc::RsaIssuerKey;
use softhsm_tests::python::{missing_tool, python_or_skip, target_dir};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, free_port};

/// The protected page: the claims Apache passes to the application, as JSON.
const CLAIMS_CGI: &str = r#"#!/usr/bin/python3
import html, json, os
claims = {k: v for k, v in os.environ.items() if k.startswith("OIDC_CLAIM_") or k == "REMOTE_USER"}
print("Content-Type: text/html; charset=utf-8")
print()
print("<!doctype html><title>claims</title><pre id='claims'>" + html.escape(json.dumps(claims)) + "</pre>")
"#;

enum Auth {
    SecretBasic,
    PrivateKeyJwt,
}

/// Python with Selenium, Chromium and its driver, Apache with mod_auth_openidc; a
/// missing one fails the test unless `SYMBOLON_SKIP_INTEROP=1`.
fn tools() -> Option<PathBuf> {
    let py = python_or_skip(&["selenium"], "headless Chromium")?;
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            missing_tool(&format!("{bin} missing (scripts/install-deps --with-test-deps)"));
            return None;
        }
    }
    if let Some(why) = Apache::missing(&["auth_openidc", "alias"]) {
        missing_tool(&why);
        return None;
    }
    Some(py)
}

async fn sign_in_through_apache(auth: Auth) {
    let Some(py) = tools() else { return };
    let port = free_port().unwrap();
    let redirect_uri = format!("http://127.0.0.1:{port}/protected/redirect_uri");
    let (secret, secret_hash) = symbolon::oidc::new_client_secret();
    let rp_key = RsaIssuerKey::generate("apache-rp-1").unwrap();
    let registration = match auth {
        Auth::SecretBasic => {
            format!("token_endpoint_auth_method = \"client_secret_basic\"\nclient_secret_sha256 = \"{secret_hash}\"")
        }
        Auth::PrivateKeyJwt => {
            format!("token_endpoint_auth_method = \"private_key_jwt\"\njwks = '{}'", json!({"keys": [rp_key.jwk()]}))
        }
    };
    let toml = format!(
        r#"
[[services]]
id = "apache"
name = "Apache Intranet"
allowed_scopes = ["name", "age"]
[services.oidc]
redirect_uris = ["{redirect_uri}"]
{registration}
"#
    );
    let env = SignIn::start(&toml, ServerOptions::default()).await.unwrap();
    let issuer = env.server.public_url.clone();

    // The snippet of docs/integration.md, with this test's URLs and secrets.
    let client_auth = match auth {
        Auth::SecretBasic => format!("OIDCClientSecret {secret}\n"),
        // The key files come first: mod_auth_openidc offers private_key_jwt only once
        // it has a private key.
        Auth::PrivateKeyJwt => "OIDCPrivateKeyFiles apache-rp-1#@DIR@/rp-key.pem\n\
                                OIDCPublicKeyFiles apache-rp-1#@DIR@/rp-cert.pem\n\
                                OIDCProviderTokenEndpointAuth private_key_jwt\n"
            .to_string(),
    };
    let passphrase = symbolon::oidc::random_token();
    let site = format!(
        r#"
OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID apache
{client_auth}OIDCRedirectURI {redirect_uri}
OIDCScope "openid name age"
OIDCPKCEMethod S256
OIDCCryptoPassphrase {passphrase}
ScriptAlias /protected/claims @DIR@/claims.cgi
<Location /protected>
    AuthType openid-connect
    Require valid-user
</Location>
"#
    );
    let (key_pem, cert_pem) = rp_key_files(&rp_key);
    let files: [(&str, &[u8], u32); 3] = [
        ("claims.cgi", CLAIMS_CGI.as_bytes(), 0o755),
        ("rp-key.pem", &key_pem, 0o600),
        ("rp-cert.pem", &cert_pem, 0o644),
    ];
    let apache = Apache::start(port, &["auth_openidc", "alias"], &site, &files).unwrap();

    let out = apache.path("result.json");
    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join(match auth {
        Auth::SecretBasic => "apache-oidc-basic-otp.png",
        Auth::PrivateKeyJwt => "apache-oidc-jwt-otp.png",
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/rp_signin.py");
    let protected = format!("{}/protected/claims", apache.url);
    let mut child = Command::new(&py)
        .arg(script)
        .args(["--url", &protected, "--token-id", &env.token_id, "--out"])
        .arg(&out)
        .arg("--screenshot")
        .arg(&shot)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let otp = tokio::task::block_in_place(|| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            eprintln!("browser: {line}");
            if let Some(otp) = line.strip_prefix("OTP ") {
                return otp.trim().to_string();
            }
        }
        panic!("the browser never showed a code; Apache log:\n{}", apache.error_log());
    });
    let pending = env.device_client.pending(&env.device).await.unwrap();
    let entry = pending.sessions.iter().find(|s| s.otp == otp).expect("the phone sees the code the page shows");
    assert_eq!(entry.service_id, "apache");
    assert_eq!(entry.service_name, "Apache Intranet");
    let grant = vec!["name".to_string(), "age".to_string()];
    env.device_client.verify(&env.device, &entry.session_id, &otp, Decision::Approve, Some(grant)).await.unwrap();
    let status = tokio::task::block_in_place(|| {
        for line in lines.by_ref() {
            eprintln!("browser: {}", line.unwrap());
        }
        child.wait().unwrap()
    });
    assert!(
        status.success(),
        "browser: {status}\nApache log:\n{}\nSymbolon log:\n{}",
        apache.error_log(),
        env.server.log()
    );

    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(result["final_url"], protected.as_str(), "back on the protected page");
    let claims = &result["claims"];
    assert_eq!(claims["OIDC_CLAIM_iss"], issuer.as_str(), "{claims}");
    assert_eq!(claims["OIDC_CLAIM_aud"], "apache", "{claims}");
    assert_eq!(claims["OIDC_CLAIM_amr"], "pop", "{claims}");
    let sub = claims["OIDC_CLAIM_sub"].as_str().unwrap();
    assert_eq!(sub.len(), 43, "a pairwise subject: {claims}");
    assert_ne!(sub, env.token_id);
    assert!(claims["REMOTE_USER"].as_str().unwrap_or_default().starts_with(sub), "{claims}");
    // The enrolled seal (valid_full) is JANE CITIZEN's, born 1990; mod_auth_openidc
    // passes JSON booleans as "1".
    assert_eq!(claims["OIDC_CLAIM_given_name"], "JANE", "{claims}");
    assert_eq!(claims["OIDC_CLAIM_family_name"], "CITIZEN", "{claims}");
    assert_eq!(claims["OIDC_CLAIM_age_over_18"], "1", "age was granted: {claims}");
    assert!(claims.get("OIDC_CLAIM_birthdate").is_none(), "birthdate was not asked for: {claims}");

    let (_, samples) = softhsm_tests::metrics::scrape(&env.server.admin_url).await.unwrap();
    let event = |e: &str| samples.get(&format!("symbolon_oidc_events_total{{event=\"{e}\"}}")).copied();
    assert_eq!(event("token_issued"), Some(1.0));
    assert_eq!(event("client_auth_failed").unwrap_or(0.0), 0.0);
    let log = env.server.log();
    assert!(!log.contains(&secret), "no secret in the log");
}

/// Apache's private key (PKCS#8 PEM) and a self-signed certificate of it: mod_auth_openidc
/// reads keys from PEM files and its `OIDCPublicKeyFiles` accepts certificates.
fn rp_key_files(key: &RsaIssuerKey) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, key.pkcs8_pem().unwrap()).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-new", "-subj", "/CN=apache-rp", "-days", "2", "-key"])
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (std::fs::read(&key_path).unwrap(), std::fs::read(&cert_path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_auth_openidc_signs_in_with_client_secret_basic() {
    sign_in_through_apache(Auth::SecretBasic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_auth_openidc_signs_in_with_private_key_jwt() {
    sign_in_through_apache(Auth::PrivateKeyJwt).await;
}
