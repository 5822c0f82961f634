//! Fetching lists, CRLs and VRLs under the URL rules of docs/credentials.md §6 rule 11.
//!
//! - URLs found inside signed lists must be `https://`; `file://` is accepted only when
//!   the configured governance URL is `file://` too and the path lies under the
//!   governance list's directory, and then only for regular files.
//! - Every fetch is bounded in size (read with a cap, whatever a file system or a
//!   `Content-Length` says) and in time (connect, headers and body together).
//! - An `https://` host must not be (or resolve to) a loopback, private, link-local or
//!   otherwise non-public address unless `trust.allow_private_networks` is set. The
//!   check runs in the client's DNS resolver, on the addresses actually connected to, so
//!   a rebinding DNS server cannot answer a public address to the check and a private
//!   one to the connection; IP literals (which skip the resolver) are checked here and at
//!   every redirect. Redirects must stay on `https://`.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Most redirects one fetch follows.
const MAX_REDIRECTS: usize = 5;

/// Where a URL came from: the operator's configuration or a signed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `trust.governance_url`: trusted like the rest of the configuration.
    Configured,
    /// A scheme, TSL, CRL or VRL URL read from a signed list.
    InList,
}

/// What a URL that passed [`UrlPolicy::check`] points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Https(url::Url),
    /// A local file; `confined` is the directory it must stay in (`None` for the
    /// configured governance file itself).
    File {
        path: PathBuf,
        confined: Option<PathBuf>,
    },
}

/// The URL rules, fixed by the configuration.
#[derive(Debug, Clone)]
pub(crate) struct UrlPolicy {
    /// The directory of the governance list when its URL is `file://`.
    file_root: Option<PathBuf>,
    allow_private_networks: bool,
}

impl UrlPolicy {
    pub(crate) fn new(governance_url: &str, allow_private_networks: bool) -> Self {
        let file_root = url::Url::parse(governance_url)
            .ok()
            .filter(|u| u.scheme() == "file")
            .and_then(|u| u.to_file_path().ok())
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Self { file_root, allow_private_networks }
    }

    /// Checks a URL without touching the network or the file system.
    pub(crate) fn check(&self, url: &str, origin: Origin) -> Result<Target, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        match parsed.scheme() {
            "https" => {
                if let Some(ip) = literal_ip(&parsed) {
                    self.check_ip(ip)?;
                }
                Ok(Target::Https(parsed))
            }
            "file" => {
                if !parsed.host_str().is_none_or(|h| h.is_empty() || h == "localhost") {
                    return Err("file:// URLs name no host".into());
                }
                let path = parsed.to_file_path().map_err(|_| "bad file URL".to_owned())?;
                if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
                    return Err("file:// URL has '.' or '..' in its path".into());
                }
                match origin {
                    Origin::Configured => Ok(Target::File { path, confined: None }),
                    Origin::InList => {
                        let Some(root) = &self.file_root else {
                            return Err("file:// URLs inside lists need a file:// governance URL".into());
                        };
                        if path == *root || !path.starts_with(root) {
                            return Err("file:// URL is outside the governance list's directory".into());
                        }
                        Ok(Target::File { path, confined: Some(root.clone()) })
                    }
                }
            }
            _ => Err(match origin {
                Origin::Configured => "only https:// and file:// URLs are fetched".into(),
                Origin::InList => "URLs inside lists must be https://".into(),
            }),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allow_private_networks && !is_public(ip) {
            return Err(format!(
                "{ip} is a loopback, private or link-local address (trust.allow_private_networks is off)"
            ));
        }
        Ok(())
    }
}

/// The host of an `https://` URL when it is an IP literal (the resolver never sees it).
fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Whether an address is a public unicast one: not unspecified, loopback, private
/// (RFC 1918, ULA), shared (CGNAT 100.64/10), link-local, multicast, reserved or
/// broadcast. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by that address.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: usize| {
        let o = ip.octets();
        Ipv4Addr::new(o[hi], o[hi + 1], o[hi + 2], o[hi + 3])
    };
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return is_public_v4(embedded(12));
    }
    // NAT64 64:ff9b::/96 and 64:ff9b:1::/48 reach the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return is_public_v4(embedded(12));
    }
    // 6to4 2002::/16 carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return is_public_v4(embedded(2));
    }
    !((s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00) // multicast
}

/// Resolves host names and refuses those with a non-public address, so the addresses
/// checked are the ones the connection uses.
struct GuardedResolver {
    policy: UrlPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for a in &addrs {
                policy.check_ip(a.ip()).map_err(|e| format!("{}: {e}", name.as_str()))?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Fetches documents for a refresh.
pub(crate) struct Fetcher {
    policy: UrlPolicy,
    timeout: Duration,
    client: Result<reqwest::Client, String>,
}

impl Fetcher {
    pub(crate) fn new(policy: UrlPolicy, timeout: Duration) -> Self {
        Self::with_roots(policy, timeout, Vec::new())
    }

    /// Like [`Fetcher::new`], also trusting `roots` for `https://` (tests serve lists
    /// over TLS with their own CA).
    pub(crate) fn with_roots(policy: UrlPolicy, timeout: Duration, roots: Vec<reqwest::Certificate>) -> Self {
        let redirect_policy = policy.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            if attempt.url().scheme() != "https" {
                let msg = format!("redirect to another scheme ({}:)", attempt.url().scheme());
                return attempt.error(msg);
            }
            if let Some(ip) = literal_ip(attempt.url())
                && let Err(e) = redirect_policy.check_ip(ip)
            {
                return attempt.error(format!("redirect refused: {e}"));
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .https_only(true)
            // A proxy would resolve the host itself, past the address check.
            .no_proxy()
            .redirect(redirect)
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }));
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder.build().map_err(|e| format!("HTTP client: {e}"));
        Self { policy, timeout, client }
    }

    /// The bytes at `url`, at most `max` of them, within the fetch timeout.
    pub(crate) async fn fetch(&self, url: &str, origin: Origin, max: usize) -> Result<Vec<u8>, String> {
        let target = self.policy.check(url, origin)?;
        let work = async {
            match target {
                Target::File { path, confined } => {
                    tokio::task::spawn_blocking(move || read_regular_file(&path, confined.as_deref(), max))
                        .await
                        .map_err(|e| format!("read: {e}"))?
                }
                Target::Https(url) => self.fetch_https(url, max).await,
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("fetch took longer than {}s", self.timeout.as_secs_f64())),
        }
    }

    async fn fetch_https(&self, url: url::Url, max: usize) -> Result<Vec<u8>, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut resp = client.get(url).send().await.map_err(|e| format!("fetch: {}", error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err("document too large".into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("fetch: {}", error_chain(&e)))? {
            if body.len() + chunk.len() > max {
                return Err("document too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error with its sources (reqwest hides the resolver's and the redirect's reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads at most `max` bytes of a regular file. With `confined`, the file must lie
/// under that directory after symlinks are resolved, checked on the opened file itself
/// (device and inode), so swapping a path component during the open does not help.
/// Devices and FIFOs are refused without blocking (`O_NONBLOCK`).
pub(crate) fn read_regular_file(path: &Path, confined: Option<&Path>, max: usize) -> Result<Vec<u8>, String> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let io = |e: std::io::Error| format!("read: {e}");
    let (target, root) = match confined {
        Some(root) => {
            let root = std::fs::canonicalize(root).map_err(io)?;
            let target = std::fs::canonicalize(path).map_err(io)?;
            if !target.starts_with(&root) {
                return Err("file leaves the governance list's directory".into());
            }
            (target, Some(root))
        }
        None => (path.to_path_buf(), None),
    };
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if root.is_some() {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(&target).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if let Some(root) = root {
        // The opened inode must still be the one at a path under the directory.
        let again = std::fs::canonicalize(&target).map_err(io)?;
        let there = std::fs::symlink_metadata(&again).map_err(io)?;
        if !again.starts_with(&root) || (there.dev(), there.ino()) != (meta.dev(), meta.ino()) {
            return Err("file changed while it was opened".into());
        }
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > max {
        return Err("document too large".into());
    }
    Ok(bytes)
}
