//! The OpenAPI 3.1 document (`/openapi.json`, admin listener) describes the public and
//! management APIs, and the running server answers the public API as documented:
//! schemathesis (PyPI, installed into the test venv by scripts/test) generates
//! requests from the document and checks status codes, content types and bodies.

use std::process::Command;

use serde_json::Value;
use softhsm_tests::signin::{RELAXED_LIMITS, SERVICE_TOML};
use softhsm_tests::{ServerOptions, TestServer, TestToken};

/// The break-glass token of the test server (256 bits, hex).
const BREAK_GLASS: &str = "5c1f6b0e9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29181716151413121110ff";

async fn document(server: &TestServer) -> Value {
    let r = reqwest::get(format!("{}/openapi.json", server.admin_url)).await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_every_route_and_the_server_keeps_to_it() {
    let token = TestToken::new().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let break_glass = secrets.path().join("break-glass");
    std::fs::write(&break_glass, BREAK_GLASS).unwrap();
    let extra = format!(
        "{SERVICE_TOML}\n{RELAXED_LIMITS}\n[management]\nbreak_glass_token_file = \"{}\"\n",
        break_glass.display()
    );
    let server = TestServer::start(&token, ServerOptions { extra_toml: extra, ..Default::default() }).unwrap();
    let doc = document(&server).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/v1/enroll/challenge",
        "/v1/enroll",
        "/v1/auth/initiate",
        "/v1/auth/sessions/{id}",
        "/v1/device/pending",
        "/v1/auth/verify",
        "/jwks",
        "/api/management/v1/users",
        "/api/management/v1/users/{token_id}",
        "/api/management/v1/credentials/{device_id}",
        "/api/management/v1/credentials/{device_id}/suspend",
        "/api/management/v1/credentials/{device_id}/activate",
        "/api/management/v1/credentials/{device_id}/revoke",
        "/api/management/v1/flows",
        "/api/management/v1/audit",
        "/api/management/v1/keys/generate/{purpose}",
        "/api/management/v1/keys/rotate/{purpose}",
        "/api/management/v1/keys/retire/{label}",
    ] {
        assert!(paths.contains_key(path), "{path} documented");
    }
    let rotate = &paths["/api/management/v1/keys/rotate/{purpose}"]["post"];
    assert_eq!(rotate["security"][0]["operator"][0], "management.keys.write");
    let users = &paths["/api/management/v1/users"]["get"];
    assert_eq!(users["security"][0]["operator"][0], "management.users.read");
    for status in ["200", "401", "403", "404", "503"] {
        assert!(users["responses"].get(status).is_some(), "{status} documented");
    }
    let problem = &users["responses"]["403"]["content"]["application/problem+json"]["schema"]["$ref"];
    assert_eq!(problem, "#/components/schemas/Problem", "{users}");
    let verify = &paths["/v1/auth/verify"]["post"];
    for status in ["200", "401", "409", "413", "415", "503"] {
        assert!(verify["responses"].get(status).is_some(), "{status} documented for verify");
    }
    // Served on the admin listener only.
    let r = reqwest::get(format!("{}/openapi.json", server.public_url)).await.unwrap();
    assert_eq!(r.status(), 404);

    let Some(python) = softhsm_tests::python::python_or_skip(&["schemathesis"], "schemathesis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, doc.to_string()).unwrap();
    // Device messages are compact JWS text: send generated strings as they are.
    let hooks = dir.path().join("hooks.py");
    std::fs::write(
        &hooks,
        "import schemathesis\nschemathesis.serializer.alias(\"application/jose\", \"text/plain\")\n",
    )
    .unwrap();
    let cli = python.with_file_name("schemathesis");
    let work = dir.path().to_path_buf();
    // One run: `tags` of the document against `url`, with extra `args` (headers).
    let run = move |url: String, tags: &[&str], args: Vec<String>| {
        let mut cmd = Command::new(&cli);
        // Its cache goes to the working directory: keep it out of the source tree.
        cmd.current_dir(&work).env("SCHEMATHESIS_HOOKS", work.join("hooks.py")).args([
            "run",
            "--no-color",
            "--url",
            &url,
        ]);
        for tag in tags {
            cmd.args(["--include-tag", tag]);
        }
        cmd.args(args)
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--seed", "1", "--workers", "1"])
            .args(["--generation-database", "none", "--report-dir"])
            .arg(work.join("report"))
            .arg(work.join("openapi.json"))
            .output()
            .unwrap()
    };
    let check = |out: std::process::Output, what: &str| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}");
        assert!(
            out.status.success(),
            "schemathesis found {what} responses that differ from the document:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let public = server.public_url.clone();
    let run_public = run.clone();
    let out = tokio::task::spawn_blocking(move || run_public(public, &["public", "health"], Vec::new())).await.unwrap();
    check(out, "public API");
    // The management API too, with the break-glass token (every scope).
    let admin = server.admin_url.clone();
    let header = vec!["-H".to_string(), format!("Authorization: Bearer {BREAK_GLASS}")];
    let out = tokio::task::spawn_blocking(move || run(admin, &["management"], header)).await.unwrap();
    check(out, "management API");
}
