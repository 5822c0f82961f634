//! The reference device: key store, thumbprint, JWS construction, faults, CLI.

use std::collections::BTreeMap;

use p256::ecdsa::signature::Verifier as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use softhsm_tests::device::{
    Decision, Device, EnrollPayload, JwsFault, PendingPayload, Push, VerifyPayload, jwk_thumbprint,
    vds_from_file_contents,
};
use softhsm_tests::jose;

fn payload() -> EnrollPayload {
    EnrollPayload {
        vds: jose::b64u(br#"{"data":{},"sig":{}}"#),
        push: Push::Fcm { token: "fcm-token-1".into() },
        device_name: "Pixel 9".into(),
        iat: 1_763_800_000,
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<_> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[test]
fn enrollment_jws_is_exactly_as_specified() {
    let device = Device::generate();
    let jws = device.enrollment_jws("nonce-123", &payload());
    assert!(!jws.contains('='));
    let decoded = jose::verify_es256(&jws, device.verifying_key()).unwrap();
    assert_eq!(keys(&decoded.header), ["alg", "jwk", "nonce", "typ"]);
    assert_eq!(decoded.header["alg"], "ES256");
    assert_eq!(decoded.header["typ"], "symbolon-enroll+jws");
    assert_eq!(decoded.header["nonce"], "nonce-123");
    assert_eq!(keys(&decoded.header["jwk"]), ["crv", "kty", "x", "y"]);
    assert_eq!(decoded.header["jwk"]["kty"], "EC");
    assert_eq!(decoded.header["jwk"]["crv"], "P-256");
    assert_eq!(decoded.signature.len(), 64);
    // The jwk in the header is the signing key (proof of possession).
    let x = jose::b64u_decode(decoded.header["jwk"]["x"].as_str().unwrap()).unwrap();
    let y = jose::b64u_decode(decoded.header["jwk"]["y"].as_str().unwrap()).unwrap();
    let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
    let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point).unwrap();
    assert_eq!(&key, device.verifying_key());
    assert_eq!(
        decoded.payload,
        json!({"vds": payload().vds, "push": {"provider": "fcm", "token": "fcm-token-1"},
               "device_name": "Pixel 9", "iat": 1_763_800_000})
    );
}

#[test]
fn push_none_serialises_as_provider_none() {
    let p = EnrollPayload { push: Push::None, ..payload() };
    assert_eq!(serde_json::to_value(&p).unwrap()["push"], json!({"provider": "none"}));
}

#[test]
fn device_jws_has_kid_and_verifies() {
    let device = Device::generate();
    let jws = device.device_jws(&PendingPayload { iat: 42 });
    let decoded = jose::verify_es256(&jws, device.verifying_key()).unwrap();
    assert_eq!(decoded.header, json!({"alg": "ES256", "typ": "symbolon-device+jws", "kid": device.device_id()}));
    assert_eq!(decoded.payload, json!({"iat": 42}));
    // Raw header order is alg, typ, kid.
    let header = jose::b64u_decode(jws.split('.').next().unwrap()).unwrap();
    assert!(String::from_utf8(header).unwrap().starts_with(r#"{"alg":"ES256","typ":"#));
}

#[test]
fn verify_payloads_for_approve_and_reject() {
    let approve = VerifyPayload {
        session_id: "s1".into(),
        otp: "123456".into(),
        decision: Decision::Approve,
        scopes: Some(vec![]),
        iat: 7,
    };
    assert_eq!(
        serde_json::to_value(&approve).unwrap(),
        json!({"session_id": "s1", "otp": "123456", "decision": "approve", "scopes": [], "iat": 7})
    );
    let reject = VerifyPayload { decision: Decision::Reject, scopes: None, ..approve };
    assert_eq!(
        serde_json::to_value(&reject).unwrap(),
        json!({"session_id": "s1", "otp": "123456", "decision": "reject", "iat": 7})
    );
}

#[test]
fn device_id_is_the_rfc7638_thumbprint() {
    let device = Device::generate();
    let jwk = device.public_jwk();
    // Independent computation: serde_json sorts object keys, which for an EC
    // key is exactly RFC 7638's lexicographic member order crv, kty, x, y.
    let members: BTreeMap<&str, &str> =
        [("kty", jwk.kty.as_str()), ("crv", jwk.crv.as_str()), ("x", jwk.x.as_str()), ("y", jwk.y.as_str())].into();
    let canonical = serde_json::to_string(&members).unwrap();
    assert!(canonical.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
    let expected = jose::b64u(&Sha256::digest(canonical.as_bytes()));
    assert_eq!(device.device_id(), expected);
    assert_eq!(device.device_id().len(), 43);
    assert_eq!(device.device_id(), jwk_thumbprint(&jwk));
    assert_eq!(device.device_id(), device.device_id());
    assert_ne!(device.device_id(), Device::generate().device_id());
}

#[test]
fn key_file_round_trip_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/key.json");
    let device = Device::load_or_create(&path).unwrap();
    let again = Device::load_or_create(&path).unwrap();
    assert_eq!(device.device_id(), again.device_id());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let jwk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(keys(&jwk), ["crv", "d", "kty", "x", "y"]);
    std::fs::write(&path, "{}").unwrap();
    assert!(Device::load(&path).is_err());
}

#[test]
fn faults_break_exactly_what_they_name() {
    let device = Device::generate();
    for fault in JwsFault::ALL {
        let jws = device.enrollment_jws_with("n", &payload(), fault);
        let decoded = jose::decode_compact(&jws).unwrap();
        let verifies = jose::verify_es256(&jws, device.verifying_key()).is_ok();
        let h = &decoded.header;
        match fault {
            JwsFault::AlgNone => {
                assert_eq!(h["alg"], "none");
                assert!(decoded.signature.is_empty());
            }
            JwsFault::AlgHs256 => {
                assert_eq!(h["alg"], "HS256");
                assert_eq!(decoded.signature.len(), 32);
            }
            JwsFault::AlgRs256 => {
                assert_eq!(h["alg"], "RS256");
                assert_eq!(decoded.signature.len(), 256);
            }
            JwsFault::JwkWithPrivate => {
                assert!(h["jwk"]["d"].is_string());
                assert!(verifies);
            }
            JwsFault::InvalidPoint => {
                let x = jose::b64u_decode(h["jwk"]["x"].as_str().unwrap()).unwrap();
                let y = jose::b64u_decode(h["jwk"]["y"].as_str().unwrap()).unwrap();
                let point =
                    p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
                assert!(p256::ecdsa::VerifyingKey::from_encoded_point(&point).is_err());
            }
            JwsFault::OtherKey => {
                assert_eq!(decoded.signature.len(), 64);
                assert!(!verifies);
                assert_eq!(h["jwk"], serde_json::to_value(device.public_jwk()).unwrap());
            }
            JwsFault::ExtraHeaderMember => {
                assert_eq!(keys(h).len(), 5);
                assert!(verifies);
            }
            JwsFault::WrongTyp => {
                assert_eq!(h["typ"], "JWT");
                assert!(verifies);
            }
            JwsFault::DerSignature => {
                assert_ne!(decoded.signature.len(), 64);
                let sig = p256::ecdsa::Signature::from_der(&decoded.signature).unwrap();
                assert!(device.verifying_key().verify(decoded.signing_input.as_bytes(), &sig).is_ok());
            }
            JwsFault::UnknownPayloadField => {
                assert_eq!(decoded.payload["unexpected"], true);
                assert!(verifies);
            }
            JwsFault::MissingIat => {
                assert!(decoded.payload.get("iat").is_none());
                assert!(verifies);
            }
            JwsFault::SkewedIat => {
                assert_eq!(decoded.payload["iat"], payload().iat - 600);
                assert!(verifies);
            }
        }
        assert!(!fault.expected_code().is_empty());
    }
    // Device JWS faults keep kid.
    let jws = device.device_jws_with(&PendingPayload { iat: 1 }, JwsFault::WrongTyp);
    let decoded = jose::decode_compact(&jws).unwrap();
    assert_eq!(decoded.header["kid"], device.device_id());
    assert_eq!(decoded.header["typ"], "JWT");
}

#[test]
fn vds_file_may_hold_json_or_base64() {
    let seal = br#"{"data":{"hdr":{"t":"symbolon.id","v":1,"is":"AUS"}},"sig":{}}"#;
    let expected = jose::b64u(seal);
    assert_eq!(vds_from_file_contents(seal).unwrap(), expected);
    assert_eq!(vds_from_file_contents(format!("{expected}\n").as_bytes()).unwrap(), expected);
    assert_eq!(vds_from_file_contents(jose::b64u_padded(seal).as_bytes()).unwrap(), expected);
    assert_eq!(vds_from_file_contents(jose::b64_std(seal).as_bytes()).unwrap(), expected);
    assert!(vds_from_file_contents(b"not a seal").is_err());
}

mod cli {
    //! The CLI against a stand-in for the two enrollment endpoints that checks
    //! what the real server checks first (content type, JWS, nonce). Replace with
    //! the real server once `/v1/enroll` lands.

    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{Value, json};
    use softhsm_tests::jose;

    #[derive(Default)]
    struct Seen {
        challenge_body: Option<String>,
        enroll: Option<(String, Value, Value)>,
    }

    async fn serve() -> (String, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s1, s2) = (seen.clone(), seen.clone());
        let app = Router::new()
            .route(
                "/v1/enroll/challenge",
                post(move |body: String| async move {
                    s1.lock().unwrap().challenge_body = Some(body);
                    Json(json!({"nonce": "fixed-nonce", "expires_at": 4_000_000_000i64}))
                }),
            )
            .route(
                "/v1/enroll",
                post(move |headers: HeaderMap, body: String| async move {
                    let content_type = headers["content-type"].to_str().unwrap().to_owned();
                    let decoded = jose::decode_compact(&body).unwrap();
                    let jwk: p256::elliptic_curve::JwkEcKey =
                        serde_json::from_value(decoded.header["jwk"].clone()).unwrap();
                    let key = p256::ecdsa::VerifyingKey::from(p256::PublicKey::from_jwk(&jwk).unwrap());
                    jose::verify_es256(&body, &key).unwrap();
                    let vds = decoded.payload["vds"].as_str().unwrap().to_owned();
                    let seal: Value = serde_json::from_slice(&jose::b64u_decode(&vds).unwrap()).unwrap();
                    s2.lock().unwrap().enroll = Some((content_type, decoded.header.clone(), decoded.payload.clone()));
                    match seal["data"]["msg"]["tid"].as_str() {
                        Some(tid) => {
                            (StatusCode::CREATED, Json(json!({"token_id": tid, "device_id": "d", "claims": []})))
                                .into_response()
                        }
                        None => (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "application/problem+json")],
                            json!({"type": "about:blank", "title": "Bad Request", "status": 400,
                                   "code": "invalid_request", "detail": "msg.tid missing"})
                            .to_string(),
                        )
                            .into_response(),
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    async fn run(args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_symbolon-device")).args(args).output().await.unwrap()
    }

    #[tokio::test]
    async fn enroll_posts_challenge_then_jose() {
        let (url, seen) = serve().await;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        let vds = dir.path().join("seal.json");
        let seal = r#"{"data":{"hdr":{"t":"symbolon.id","v":1,"is":"AUS"},"msg":{"tid":"AUS-OK000001"}},"sig":{}}"#;
        std::fs::write(&vds, seal).unwrap();
        let key_arg = key.to_str().unwrap();
        let out = run(&[
            "--key",
            key_arg,
            "enroll",
            "--server",
            &url,
            "--vds",
            vds.to_str().unwrap(),
            "--push-token",
            "tok",
            "--device-name",
            "Test Phone",
        ])
        .await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["token_id"], "AUS-OK000001");

        let id = run(&["--key", key_arg, "id"]).await;
        let device_id = String::from_utf8(id.stdout).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.challenge_body.as_deref(), Some("{}"));
        let (content_type, header, payload) = seen.enroll.clone().unwrap();
        assert_eq!(content_type, "application/jose");
        assert_eq!(header["nonce"], "fixed-nonce");
        let jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        assert_eq!(softhsm_tests::device::jwk_thumbprint(&jwk), device_id.trim());
        assert_eq!(payload["vds"], jose::b64u(seal.as_bytes()));
        assert_eq!(payload["push"], json!({"provider": "fcm", "token": "tok"}));
        assert_eq!(payload["device_name"], "Test Phone");
        let iat = payload["iat"].as_i64().unwrap();
        assert!((iat - softhsm_tests::device::unix_now()).abs() < 60);
    }

    #[tokio::test]
    async fn enroll_error_prints_problem_and_fails() {
        let (url, _) = serve().await;
        let dir = tempfile::tempdir().unwrap();
        let vds = dir.path().join("seal.b64u");
        std::fs::write(&vds, jose::b64u(br#"{"data":{"msg":{}},"sig":{}}"#)).unwrap();
        let out = run(&[
            "--key",
            dir.path().join("k.json").to_str().unwrap(),
            "enroll",
            "--server",
            &url,
            "--vds",
            vds.to_str().unwrap(),
        ])
        .await;
        assert!(!out.status.success());
        let problem: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(problem["code"], "invalid_request");
    }
}
