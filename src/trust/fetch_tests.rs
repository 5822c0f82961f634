//! The URL rules of docs/credentials.md §6 rule 11: files, devices, FIFOs, symlinks,
//! sizes, slow and redirecting `https://` servers, private addresses.

use super::fetch::{Fetcher, Origin, UrlPolicy, is_public};
use super::testkit::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

const MAX: usize = 1024;
/// Whatever a fetch does, it must be over long before this.
const HANG: Duration = Duration::from_secs(30);

/// A governance directory `gov/` with the governance list, and a sibling `outside/`.
struct Dirs {
    root: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("gov/crl")).unwrap();
        std::fs::create_dir_all(root.path().join("outside")).unwrap();
        std::fs::write(root.path().join("gov/gl.jws"), b"gl").unwrap();
        std::fs::write(root.path().join("gov/crl/ca.crl"), b"crl").unwrap();
        std::fs::write(root.path().join("outside/secret"), b"secret").unwrap();
        Self { root }
    }

    fn url(&self, rel: &str) -> String {
        format!("file://{}", self.root.path().join(rel).display())
    }

    fn fetcher(&self) -> Fetcher {
        Fetcher::new(UrlPolicy::new(&self.url("gov/gl.jws"), false), Duration::from_secs(1))
    }
}

async fn fetch(f: &Fetcher, url: &str, origin: Origin, max: usize) -> Result<Vec<u8>, String> {
    tokio::time::timeout(HANG, f.fetch(url, origin, max)).await.expect("the fetch must end by itself")
}

#[tokio::test]
async fn file_urls_in_lists_stay_under_the_governance_directory() {
    let d = Dirs::new();
    let f = d.fetcher();
    assert_eq!(fetch(&f, &d.url("gov/crl/ca.crl"), Origin::InList, MAX).await.unwrap(), b"crl");
    assert_eq!(fetch(&f, &d.url("gov/gl.jws"), Origin::Configured, MAX).await.unwrap(), b"gl");
    let err = fetch(&f, &d.url("outside/secret"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("outside the governance list's directory"), "{err}");
    // `..` is resolved by the URL parser before the check; it stays refused.
    let err = fetch(&f, &d.url("gov/../outside/secret"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("outside the governance list's directory"), "{err}");
    let err = fetch(&f, "file:///etc/hostname", Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("outside the governance list's directory"), "{err}");
    // With an https:// governance list, no file:// URL inside lists at all.
    let https = Fetcher::new(UrlPolicy::new("https://trust.example/gl.jws", false), Duration::from_secs(1));
    let err = fetch(&https, &d.url("gov/crl/ca.crl"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("need a file:// governance URL"), "{err}");
    for url in ["http://trust.example/x.jws", "ftp://trust.example/x", "data:,x"] {
        let err = fetch(&f, url, Origin::InList, MAX).await.unwrap_err();
        assert!(err.contains("must be https://"), "{url}: {err}");
    }
}

#[tokio::test]
async fn devices_are_refused() {
    let d = Dirs::new();
    let f = d.fetcher();
    // In a list: outside the directory anyway.
    let err = fetch(&f, "file:///dev/zero", Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("outside the governance list's directory"), "{err}");
    // A symlink in the directory to a device resolves outside it.
    std::os::unix::fs::symlink("/dev/zero", d.root.path().join("gov/zero")).unwrap();
    let err = fetch(&f, &d.url("gov/zero"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("leaves the governance list's directory"), "{err}");
    // Even the configured governance URL must be a regular file (its size says 0).
    let err = fetch(&f, "file:///dev/zero", Origin::Configured, MAX).await.unwrap_err();
    assert_eq!(err, "not a regular file");
}

#[tokio::test]
async fn fifos_are_refused_without_blocking() {
    let d = Dirs::new();
    let f = d.fetcher();
    let fifo = d.root.path().join("gov/crl/fifo.crl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = fetch(&f, &d.url("gov/crl/fifo.crl"), Origin::InList, MAX).await.unwrap_err();
    assert_eq!(err, "not a regular file");
    let err = fetch(&f, &d.url("gov/crl/fifo.crl"), Origin::Configured, MAX).await.unwrap_err();
    assert_eq!(err, "not a regular file");
}

#[tokio::test]
async fn symlinks_may_not_leave_the_directory() {
    let d = Dirs::new();
    let f = d.fetcher();
    std::os::unix::fs::symlink(d.root.path().join("outside/secret"), d.root.path().join("gov/crl/out.crl")).unwrap();
    let err = fetch(&f, &d.url("gov/crl/out.crl"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("leaves the governance list's directory"), "{err}");
    // A directory symlink leaving it too.
    std::os::unix::fs::symlink(d.root.path().join("outside"), d.root.path().join("gov/out")).unwrap();
    let err = fetch(&f, &d.url("gov/out/secret"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("leaves the governance list's directory"), "{err}");
    // A symlink that stays inside is a regular file under the directory.
    std::os::unix::fs::symlink(d.root.path().join("gov/crl/ca.crl"), d.root.path().join("gov/alias.crl")).unwrap();
    assert_eq!(fetch(&f, &d.url("gov/alias.crl"), Origin::InList, MAX).await.unwrap(), b"crl");
}

#[tokio::test]
async fn oversized_files_are_refused() {
    let d = Dirs::new();
    let f = d.fetcher();
    std::fs::write(d.root.path().join("gov/big.jws"), vec![b'A'; MAX + 1]).unwrap();
    std::fs::write(d.root.path().join("gov/fits.jws"), vec![b'A'; MAX]).unwrap();
    let err = fetch(&f, &d.url("gov/big.jws"), Origin::InList, MAX).await.unwrap_err();
    assert_eq!(err, "document too large");
    assert_eq!(fetch(&f, &d.url("gov/fits.jws"), Origin::InList, MAX).await.unwrap().len(), MAX);
}

#[test]
fn address_classes() {
    let private = [
        "0.0.0.0",
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.168.1.1",
        "198.18.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:c0a8:0101::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
    ];
    for ip in private {
        assert!(!is_public(ip.parse::<IpAddr>().unwrap()), "{ip} must not count as public");
    }
    let public =
        ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"];
    for ip in public {
        assert!(is_public(ip.parse::<IpAddr>().unwrap()), "{ip} is public");
    }
}

/// What the test server answers to one request.
#[derive(Clone)]
enum Reply {
    Body(&'static [u8]),
    /// `302` to this location (`{port}` is replaced by the server's port).
    Redirect(&'static str),
    /// A body announced large and sent one byte at a time, forever.
    Drip,
    /// A chunked body longer than [`MAX`].
    Endless,
}

/// An `https://` server on 127.0.0.1 with its own CA, answering by path.
struct TlsServer {
    addr: SocketAddr,
    ca: reqwest::Certificate,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    async fn start(routes: Vec<(&'static str, Reply)>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = TestCa::new(TestKey::P256(p256_key()), "CN=Fetch Test CA");
        let key = p256_key();
        let san = {
            use der::Encode as _;
            use x509_cert::ext::pkix::SubjectAltName;
            use x509_cert::ext::pkix::name::GeneralName;
            let names = vec![
                GeneralName::DnsName(der::asn1::Ia5String::new("localhost").unwrap()),
                GeneralName::IpAddress(der::asn1::OctetString::new([127, 0, 0, 1]).unwrap()),
            ];
            ext("2.5.29.17", false, SubjectAltName(names).to_der().unwrap())
        };
        let now = crate::trust::store::unix_now();
        let leaf = ca.issue(
            CertSpec::new("CN=localhost", 7)
                .validity(now - DAY, now + DAY)
                .ext(san)
                .ext(eku(false, &["1.3.6.1.5.5.7.3.1"])),
            &key,
        );
        let key_der = {
            use p256::pkcs8::EncodePrivateKey as _;
            key.to_pkcs8_der().unwrap().as_bytes().to_vec()
        };
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key_der)),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let reply = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone());
                    let _ = serve(&mut tls, reply, addr.port()).await;
                });
            }
        });
        let ca = reqwest::Certificate::from_der(&ca.der).unwrap();
        Self { addr, ca, connections, task }
    }

    fn fetcher(&self, allow_private_networks: bool) -> Fetcher {
        let policy = UrlPolicy::new("https://trust.example/gl.jws", allow_private_networks);
        Fetcher::with_roots(policy, Duration::from_secs(1), vec![self.ca.clone()])
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }
}

async fn serve<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, reply: Option<Reply>, port: u16) -> std::io::Result<()> {
    match reply {
        None => s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await,
        Some(Reply::Body(b)) => {
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", b.len()).as_bytes()).await?;
            s.write_all(b).await
        }
        Some(Reply::Redirect(to)) => {
            let to = to.replace("{port}", &port.to_string());
            s.write_all(format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await
        }
        Some(Reply::Drip) => {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n").await?;
            loop {
                s.write_all(b"A").await?;
                s.flush().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(Reply::Endless) => {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await?;
            loop {
                s.write_all(b"100\r\n").await?;
                s.write_all(&[b'A'; 0x100]).await?;
                s.write_all(b"\r\n").await?;
            }
        }
    }
}

#[tokio::test]
async fn https_private_addresses_are_refused_unless_allowed() {
    let server = TlsServer::start(vec![("/doc", Reply::Body(b"hello"))]).await;
    let strict = server.fetcher(false);
    // An IP literal never reaches the resolver: checked on the URL.
    let err = fetch(&strict, &server.url("127.0.0.1", "/doc"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("loopback, private or link-local"), "{err}");
    let err = fetch(&strict, &server.url("[::ffff:127.0.0.1]", "/doc"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("loopback, private or link-local"), "{err}");
    // A name that resolves to loopback is refused by the resolver, before connecting.
    let err = fetch(&strict, &server.url("localhost", "/doc"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("loopback, private or link-local"), "{err}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0, "no connection may be made");
    // The same server is reachable once private networks are allowed.
    let open = server.fetcher(true);
    assert_eq!(fetch(&open, &server.url("localhost", "/doc"), Origin::InList, MAX).await.unwrap(), b"hello");
    assert_eq!(fetch(&open, &server.url("127.0.0.1", "/doc"), Origin::InList, MAX).await.unwrap(), b"hello");
}

#[tokio::test]
async fn https_redirects_stay_on_https() {
    let server = TlsServer::start(vec![
        ("/doc", Reply::Body(b"hello")),
        ("/same", Reply::Redirect("https://localhost:{port}/doc")),
        ("/http", Reply::Redirect("http://localhost:{port}/doc")),
        ("/file", Reply::Redirect("file:///etc/hostname")),
        ("/private", Reply::Redirect("https://127.0.0.1:{port}/doc")),
        ("/loop", Reply::Redirect("https://localhost:{port}/loop")),
    ])
    .await;
    let open = server.fetcher(true);
    assert_eq!(fetch(&open, &server.url("localhost", "/same"), Origin::InList, MAX).await.unwrap(), b"hello");
    let err = fetch(&open, &server.url("localhost", "/http"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("redirect to another scheme (http:)"), "{err}");
    // reqwest does not follow a location it cannot fetch; the 302 itself is the failure.
    let err = fetch(&open, &server.url("localhost", "/file"), Origin::InList, MAX).await.unwrap_err();
    assert_eq!(err, "HTTP status 302");
    let err = fetch(&open, &server.url("localhost", "/loop"), Origin::InList, MAX).await.unwrap_err();
    assert!(err.contains("too many redirects"), "{err}");
}

#[tokio::test]
async fn https_bodies_are_bounded_in_size_and_time() {
    let server = TlsServer::start(vec![
        ("/drip", Reply::Drip),
        ("/endless", Reply::Endless),
        ("/big", Reply::Body(&[b'A'; MAX + 1])),
    ])
    .await;
    let open = server.fetcher(true);
    let err = fetch(&open, &server.url("localhost", "/big"), Origin::InList, MAX).await.unwrap_err();
    assert_eq!(err, "document too large");
    let err = fetch(&open, &server.url("localhost", "/endless"), Origin::InList, MAX).await.unwrap_err();
    assert_eq!(err, "document too large");
    // One byte every 100 ms: the 1 s fetch timeout ends it, whatever reqwest does per read.
    let err = fetch(&open, &server.url("localhost", "/drip"), Origin::InList, 100_000).await.unwrap_err();
    assert!(err.contains("timed out") || err.contains("took longer than"), "{err}");
}
