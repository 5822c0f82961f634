//! SAML with a service provider nobody here wrote: Apache httpd with mod_auth_mellon
//! (Lasso underneath) protects a CGI page. The test makes the SP's key and
//! configuration in a temporary directory, runs `apache2 -X` on a free loopback port,
//! and headless Chromium signs in through Symbolon's page with the reference device
//! approving, reads the `MELLON_*` variables the CGI echoes, and logs out through the
//! SP. The SP uses `signature_algorithm = "rsa-sha256"` (Lasso cannot verify ECDSA),
//! `attribute_name_format = "uri"`, mellon's default transient `NameIDPolicy`, and signs
//! its own requests (RSA-SHA256), which Symbolon verifies.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use softhsm_tests::device::Decision;
use softhsm_tests::python::{missing_tool, python_or_skip, target_dir};
use softhsm_tests::signin::SignIn;
use softhsm_tests::{ServerOptions, free_port};

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";

/// `apache2 -X` with the test's configuration, stopped (by its pid) when dropped.
struct Apache {
    child: Child,
    error_log: PathBuf,
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Apache {
    fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The tools this test exists for; a missing one fails it (see `missing_tool`).
fn tools() -> Option<PathBuf> {
    let py = python_or_skip(&["selenium"], "headless Chromium")?;
    for (path, package) in [
        (APACHE.to_string(), "apache2"),
        (format!("{MODULES}/mod_auth_mellon.so"), "libapache2-mod-auth-mellon"),
        ("/usr/bin/chromium".to_string(), "chromium"),
        ("/usr/bin/chromedriver".to_string(), "chromium-driver"),
    ] {
        if !Path::new(&path).exists() {
            missing_tool(&format!("{path} missing: install {package} (scripts/install-deps --with-test-deps)"));
            return None;
        }
    }
    Some(py)
}

fn running_as_root() -> bool {
    run(Command::new("id").arg("-u")).1.trim() == "0"
}

/// The SP: mod_auth_mellon on `port`, its key and certificate, Symbolon's metadata,
/// a CGI that prints its environment under `/secret/`.
fn start_apache(dir: &Path, port: u16, idp_metadata: &str) -> Apache {
    std::fs::write(dir.join("idp-metadata.xml"), idp_metadata).unwrap();
    let cgi_dir = dir.join("cgi-bin");
    std::fs::create_dir_all(&cgi_dir).unwrap();
    let cgi = cgi_dir.join("env");
    std::fs::write(&cgi, "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv | grep '^MELLON_' | sort\n").unwrap();
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    // As root, httpd serves (and mellon reads its key lazily) as www-data.
    let user = if running_as_root() { "User www-data\nGroup www-data\n" } else { "" };
    for p in [dir.to_path_buf(), cgi_dir.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["sp-key.pem", "sp-cert.pem", "idp-metadata.xml"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        r#"ServerRoot "{d}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{d}/httpd.pid"
DefaultRuntimeDir "{d}"
ErrorLog "{d}/error.log"
LogLevel info auth_mellon:debug
{user}LoadModule mpm_prefork_module {MODULES}/mod_mpm_prefork.so
LoadModule authn_core_module {MODULES}/mod_authn_core.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule authz_user_module {MODULES}/mod_authz_user.so
LoadModule alias_module {MODULES}/mod_alias.so
LoadModule cgi_module {MODULES}/mod_cgi.so
LoadModule auth_mellon_module {MODULES}/mod_auth_mellon.so

ScriptAlias /secret/ "{d}/cgi-bin/"

<Location />
    MellonEndpointPath /mellon
    MellonSPPrivateKeyFile "{d}/sp-key.pem"
    MellonSPCertFile "{d}/sp-cert.pem"
    MellonIdPMetadataFile "{d}/idp-metadata.xml"
    MellonSignatureMethod rsa-sha256
    # mellon's cookies are SameSite=None, which Chromium keeps only when Secure; it
    # accepts Secure cookies from http://127.0.0.1 (a potentially trustworthy origin).
    MellonSecureCookie On
    MellonSetEnv givenName urn:oid:2.5.4.42
    MellonSetEnv sn urn:oid:2.5.4.4
    MellonSetEnv schacDateOfBirth urn:oid:1.3.6.1.4.1.25178.1.2.3
</Location>

<Location /secret/>
    AuthType Mellon
    MellonEnable auth
    Require valid-user
</Location>
"#
    );
    let conf_path = dir.join("httpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let (ok, text) = run(Command::new(APACHE).arg("-t").arg("-f").arg(&conf_path));
    assert!(ok, "apache2 -t: {text}");
    let child = Command::new(APACHE)
        .arg("-X")
        .arg("-f")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let apache = Apache { child, error_log: dir.join("error.log") };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return apache;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("apache2 did not listen on {port}:\n{}", apache.error_log());
}

/// The browser script's "OTP <code>" line, then its end.
struct Browser {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Browser {
    fn start(py: &Path, args: &[&str]) -> Browser {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/browser_signin.py");
        let mut child =
            Command::new(py).arg(script).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, lines }
    }

    fn otp(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            eprintln!("browser: {line}");
            if let Some(otp) = line.strip_prefix("OTP ") {
                return otp.trim().to_string();
            }
        }
        panic!("the browser script ended without showing an OTP");
    }

    fn finish(mut self) -> bool {
        for line in self.lines.by_ref() {
            eprintln!("browser: {}", line.unwrap());
        }
        self.child.wait().unwrap().success()
    }
}

/// The SP (mellon on a free port, its own RSA key) and Symbolon with that SP and a
/// public OIDC client `rp` whose post-logout address is `{sp}/loggedout`.
struct Mellon {
    env: SignIn,
    apache: Apache,
    sp: String,
    idp: String,
    dir: tempfile::TempDir,
}

async fn start_mellon() -> Mellon {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let sp = format!("http://127.0.0.1:{port}");
    let (ok, text) = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mellon-sp", "-keyout"])
        .arg(dir.path().join("sp-key.pem"))
        .arg("-out")
        .arg(dir.path().join("sp-cert.pem")));
    assert!(ok, "{text}");
    let toml = format!(
        r#"
[saml]
enabled = true

[[services]]
id = "mellon"
name = "Apache mod_auth_mellon"
allowed_scopes = ["name", "birthdate", "age"]
[services.saml]
entity_id = "{sp}/mellon/metadata"
acs_url = "{sp}/mellon/postResponse"
slo_url = "{sp}/mellon/logout"
default_scopes = ["name", "birthdate", "age"]
signature_algorithm = "rsa-sha256"
attribute_name_format = "uri"
requests_signed = true
certificate_pem = "{cert}"

[[services]]
id = "rp"
name = "OIDC App"
allowed_scopes = ["name"]
[services.oidc]
redirect_uris = ["https://rp.example/cb"]
post_logout_redirect_uris = ["{sp}/loggedout"]
token_endpoint_auth_method = "none"
"#,
        cert = dir.path().join("sp-cert.pem").display()
    );
    let env = SignIn::start(&toml, ServerOptions::default()).await.unwrap();
    let idp = env.server.public_url.clone();
    let md = reqwest::get(format!("{idp}/saml/metadata")).await.unwrap().text().await.unwrap();
    assert_eq!(md.matches(r#"<md:KeyDescriptor use="signing">"#).count(), 2, "EC and RSA certificates: {md}");
    let apache = start_apache(dir.path(), port, &md);
    Mellon { env, apache, sp, idp, dir }
}

impl Mellon {
    /// Headless Chromium signs in at the protected page (the device approving the code
    /// it shows), then does what `extra` asks (a logout); the script's JSON result.
    async fn browse(&self, py: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
        let shots = target_dir().join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let out = self.dir.path().join(format!("{name}.json"));
        let protected = format!("{}/secret/env", self.sp);
        let otp_shot = shots.join(format!("{name}-otp.png"));
        let result_shot = shots.join(format!("{name}-protected.png"));
        let mut args = vec![
            "mellon",
            "--url",
            &protected,
            "--idp-url",
            &self.idp,
            "--token-id",
            &self.env.token_id,
            "--out",
            out.to_str().unwrap(),
            "--screenshot",
            otp_shot.to_str().unwrap(),
            "--result-screenshot",
            result_shot.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut browser = Browser::start(py, &args);
        let otp = tokio::task::block_in_place(|| browser.otp());
        let pending = self.env.device_client.pending(&self.env.device).await.unwrap();
        let entry = pending.sessions.iter().find(|s| s.otp == otp).expect("the device sees the code the page shows");
        let scopes = vec!["name".to_string(), "birthdate".to_string(), "age".to_string()];
        self.env
            .device_client
            .verify(&self.env.device, &entry.session_id, &otp, Decision::Approve, Some(scopes))
            .await
            .unwrap();
        let finished = tokio::task::block_in_place(|| browser.finish());
        assert!(
            finished,
            "browser script failed; mellon's log:\n{}\nsymbolon's log:\n{}",
            self.apache.error_log(),
            self.env.server.log()
        );
        let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        eprintln!("{result:#}");
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_auth_mellon_signs_in_and_out_with_rsa_sha256() {
    let Some(py) = tools() else { return };
    let m = start_mellon().await;
    let (env, sp, idp) = (&m.env, &m.sp, &m.idp);
    let protected = format!("{sp}/secret/env");
    let logout = format!("{sp}/mellon/logout?ReturnTo={}", urlencode(&protected));
    let result = m.browse(&py, "mellon", &["--logout-url", &logout]).await;

    // What Apache handed the protected CGI: the attributes under their standard OIDs
    // (mapped to names by MellonSetEnv), the basic-named ones as they are, and a
    // transient NameID (mellon asks for transient): a fresh opaque id, not the token id.
    let text = result["protected_text"].as_str().unwrap();
    let vars: std::collections::BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("MELLON_givenName"), Some(&"JANE"), "{text}");
    assert_eq!(vars.get("MELLON_sn"), Some(&"CITIZEN"), "{text}");
    assert_eq!(vars.get("MELLON_schacDateOfBirth"), Some(&"19900401"), "{text}");
    assert_eq!(vars.get("MELLON_age_over_18"), Some(&"true"), "{text}");
    let name_id = vars.get("MELLON_NAME_ID").copied().unwrap_or_default();
    assert!(name_id.starts_with('_') && name_id.len() == 33, "transient NameID: {text}");
    assert!(!text.contains(&env.token_id), "the token id never reaches the SP: {text}");

    // Logout: mellon's signed LogoutRequest was answered with an RSA-signed
    // LogoutResponse that mellon accepted, so it went on to ReturnTo, which (the session
    // gone) sent the browser back to Symbolon's sign-in page.
    assert!(result["after_logout_url"].as_str().unwrap().starts_with(&format!("{idp}/saml/sso?")), "{result}");
    assert_eq!(result["after_logout_has_form"], true);
    let log = env.server.log();
    assert!(log.contains("SAML response issued") && log.contains("SAML logout answered"), "{log}");
    assert!(!log.contains("SAML request refused"), "{log}");
}

/// RP-initiated logout at Symbolon ends the person's mellon session: an OIDC client
/// signs the same token id in, mellon gets its session through Chromium, then the
/// OIDC client's end_session sends the browser through mellon's SingleLogoutService
/// (a LogoutRequest signed RSA-SHA256, which Lasso verifies) and back to Symbolon with
/// mellon's signed LogoutResponse, then to the post-logout address with `state`. The
/// protected page then asks for sign-in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_initiated_logout_at_symbolon_ends_the_mellon_session() {
    let Some(py) = tools() else { return };
    let m = start_mellon().await;
    let tokens = m.env.oidc_public_sign_in("rp", "https://rp.example/cb", &["name"]).await.unwrap();
    let hint = tokens["id_token"].as_str().unwrap();
    let after = format!("{}/loggedout", m.sp);
    let pairs = [("id_token_hint", hint), ("post_logout_redirect_uri", after.as_str()), ("state", "bye-42")];
    let end_session = reqwest::Url::parse_with_params(&format!("{}/end_session", m.idp), &pairs).unwrap();
    let result = m
        .browse(&py, "mellon-rp-logout", &["--end-session-url", end_session.as_str(), "--after-end-session", &after])
        .await;
    let text = result["protected_text"].as_str().unwrap();
    assert!(text.contains("MELLON_NAME_ID="), "signed in at mellon first: {text}");
    assert_eq!(result["after_end_session_url"], format!("{after}?state=bye-42").as_str(), "{result}");
    // The mellon session is gone: the protected page sent the browser to sign in again.
    assert!(result["after_logout_url"].as_str().unwrap().starts_with(&format!("{}/saml/sso?", m.idp)), "{result}");
    assert_eq!(result["after_logout_has_form"], true);
    let log = m.env.server.log();
    assert!(log.contains("SAML LogoutRequest sent"), "{log}");
    assert!(log.contains("SAML LogoutResponse: the SP ended its session"), "mellon confirmed: {log}");
    assert!(log.contains("SAML single logout finished"), "{log}");
    assert!(!log.contains("LogoutResponse refused") && !log.contains("did not answer"), "{log}");
    let mellon_log = m.apache.error_log();
    assert!(!mellon_log.contains("Failed to verify"), "{mellon_log}");
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
