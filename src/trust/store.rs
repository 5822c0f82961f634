//! [`TrustStore`]: the current view of the trust chain, its refresh and its on-disk
//! last-good cache, and verification of a credential at enrollment.
//!
//! A refresh fetches top down (governance → schemes → TSLs → CRLs and VRLs of granted
//! services). Each fetched document replaces its cached copy only when it verifies
//! against where it is pinned from and is not a rollback (docs/credentials.md §3.2); otherwise the
//! old copy stays. The new set of documents is then turned into a [`Tree`] and swapped
//! in atomically; readers never block a refresh for long and never see half of one.
//!
//! The periodic loop is [`TrustStore::spawn_refresh_loop`]; the caller runs the first
//! [`TrustStore::refresh`] at start (after [`TrustStore::load`]) and decides what a
//! refresh means for enrolled devices through [`TrustStore::revoked_tokens`] and
//! [`TrustStore::revoked_signers`].

use super::cert::{CaCert, Crl, MAX_CRL_BYTES};
use super::config::TrustConfig;
use super::fetch::{Fetcher, Origin, UrlPolicy};
use super::lists::{ListContext, ListKind, ListMeta, ListPayload, MAX_CLOCK_AHEAD, MAX_LIST_BYTES, verify_list};
use super::seal::{Credential, Seal, parse_vds};
use super::verify::{Anchor, CrlCheck, PathList, Policy, VrlCheck, verify_seal};
use super::{TrustError, b64, sha256_hex};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Most documents one refresh fetches (a bound against a runaway list).
const MAX_DOCUMENTS: usize = 10_000;
/// Fetches in flight at once: a level of slow sources costs one fetch timeout, not one each.
const CONCURRENT_FETCHES: usize = 16;

/// A credential that passed every check of docs/credentials.md §3.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCredential {
    pub credential: Credential,
    pub doc_type: String,
    /// TSL territory of the issuing CA.
    pub territory: String,
    /// TSL service name of the issuing CA.
    pub ca_name: String,
    /// SHA-256 (hex) of the issuing CA certificate: with `signer_serial_hex`, what to
    /// store with an enrollment to match [`TrustStore::revoked_signers`] later.
    pub ca_sha256: String,
    pub signer_serial_hex: String,
}

/// A seal that passed every check, whatever its document type (`vds verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSeal {
    pub doc_type: String,
    pub territory: Option<String>,
    pub ca_name: String,
    pub ca_sha256: String,
    pub signer_serial_hex: String,
    /// The `symbolon.id` profile when the type is an enrollment type.
    pub credential: Option<Credential>,
}

/// Token ids a VRL revokes, with the scope it may suspend enrollments in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedTokens {
    /// The VRL's territory (equal to its TSL's).
    pub territory: String,
    /// SHA-256 (hex) of the CA of the granted service that names the VRL.
    pub ca_sha256: String,
    pub ca_name: String,
    pub token_ids: BTreeSet<String>,
}

/// A signer certificate revoked by a CA's current CRL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RevokedSigner {
    pub ca_sha256: String,
    pub ca_name: String,
    pub serial_hex: String,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    /// Lists, CRLs and VRLs whose content changed.
    pub updated: Vec<String>,
    /// Documents that could not be fetched or were refused; the old copy stays.
    pub failed: Vec<RefreshFailure>,
    /// Whether every document is fresh after the refresh.
    pub fresh: bool,
}

/// One refused or unreachable document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshFailure {
    pub list: String,
    pub url: String,
    pub reason: String,
}

/// Freshness of the whole trust chain (`symbolon trust status`, `/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustStatus {
    pub configured: bool,
    /// Every list, CRL and VRL present and fresh.
    pub fresh: bool,
    /// Seconds since the oldest document was last fetched successfully.
    pub age_s: Option<i64>,
    pub last_refresh: Option<i64>,
    pub entries: Vec<TrustEntryStatus>,
}

/// One list, CRL or VRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustEntryStatus {
    /// `governance`, `scheme`, `tsl`, `vrl` or `crl`.
    pub kind: &'static str,
    /// Stable id without spaces (a metric label): `gl`, `sl/<scheme>`,
    /// `tsl/<scheme>/<territory>`, `vrl/<scheme>/<territory>`, `crl/<CA SHA-256 prefix>`.
    pub id: String,
    pub name: String,
    pub source: String,
    pub seq: Option<u64>,
    /// `issued` of a list, `thisUpdate` of a CRL.
    pub issued: Option<i64>,
    pub next_update: Option<i64>,
    pub fresh: bool,
    pub fetched_at: Option<i64>,
    /// Why the document is missing, or why the last fetch was refused.
    pub error: Option<String>,
}

/// The trust chain as verified from the cached documents. Cheap to clone.
#[derive(Clone)]
pub struct TrustStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: TrustConfig,
    policy: UrlPolicy,
    cache_dir: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held while a refresh merges its fetched documents into the current snapshot and
    /// swaps it in: CPU work only, never across I/O.
    commit: std::sync::Mutex<()>,
    /// The documents in the on-disk cache. Held while the cache is written (local writes
    /// to the state directory; readers and fetches never wait for it).
    on_disk: tokio::sync::Mutex<DocMap>,
    fetcher: Fetcher,
}

/// One cached document: the bytes as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct Doc {
    key: String,
    url: String,
    fetched_at: i64,
    #[serde(with = "base64_bytes")]
    body: Vec<u8>,
}

type DocMap = BTreeMap<String, Doc>;

/// What the fetch phase of a refresh produced, before it is merged.
#[derive(Default)]
struct Fetched {
    /// Documents fetched and accepted against the snapshot the refresh started from.
    accepted: Vec<(Wanted, Doc)>,
    /// Last fetch error per document key.
    errors: BTreeMap<String, String>,
    report: RefreshReport,
}

struct Snapshot {
    docs: DocMap,
    tree: Tree,
    /// Last fetch error per document key.
    errors: BTreeMap<String, String>,
    last_refresh: Option<i64>,
}

#[derive(Clone)]
enum Want {
    List(ListContext),
    Crl(Arc<CaCert>),
}

/// A document the tree refers to.
#[derive(Clone)]
struct Wanted {
    key: String,
    url: String,
    label: String,
    want: Want,
    origin: Origin,
}

struct ListNode {
    key: String,
    label: String,
    url: String,
    meta: Option<ListMeta>,
    error: Option<String>,
}

struct SchemeNode {
    node: ListNode,
    doc_types: Vec<String>,
    tsls: Vec<TslNode>,
}

struct TslNode {
    node: ListNode,
    territory: String,
    services: Vec<ServiceNode>,
}

struct ServiceNode {
    name: String,
    granted: bool,
    doc_types: Vec<String>,
    ca: Option<Arc<CaCert>>,
    crls: Vec<CrlNode>,
    vrl: Option<VrlNode>,
}

struct CrlNode {
    key: String,
    label: String,
    url: String,
    crl: Option<Crl>,
    error: Option<String>,
}

struct VrlNode {
    node: ListNode,
    revoked: BTreeSet<String>,
}

#[derive(Default)]
struct Tree {
    governance: Option<ListNode>,
    schemes: Vec<SchemeNode>,
    wanted: Vec<Wanted>,
}

impl Tree {
    /// Verifies the cached documents top down from the configured governance list.
    fn build(config: &TrustConfig, policy: &UrlPolicy, docs: &DocMap) -> Self {
        let mut tree = Self::default();
        if !config.is_configured() {
            return tree;
        }
        let ctx = ListContext {
            kind: ListKind::Governance,
            pins: config.governance_signer_sha256.clone(),
            scheme: None,
            territory: None,
        };
        let key = format!("gl|{}", config.governance_url);
        let (node, payload) =
            tree.list(policy, docs, key, "governance list".into(), &config.governance_url, Origin::Configured, ctx);
        tree.governance = Some(node);
        let Some(ListPayload::Governance(gl)) = payload else {
            return tree;
        };
        for s in gl.schemes {
            let ctx = ListContext {
                kind: ListKind::Scheme,
                pins: s.signer_sha256.clone(),
                scheme: Some(s.id.clone()),
                territory: None,
            };
            let key = format!("sl|{}|{}", s.id, s.url);
            let label = format!("scheme list {}", s.id);
            let (node, payload) = tree.list(policy, docs, key, label, &s.url, Origin::InList, ctx);
            let mut scheme = SchemeNode { node, doc_types: s.doc_types, tsls: Vec::new() };
            if let Some(ListPayload::Scheme(sl)) = payload {
                for t in sl.tsls {
                    let tsl = tree.tsl(policy, docs, &s.id, t);
                    scheme.tsls.push(tsl);
                }
            }
            tree.schemes.push(scheme);
        }
        tree
    }

    fn tsl(&mut self, policy: &UrlPolicy, docs: &DocMap, scheme: &str, t: super::lists::TslRef) -> TslNode {
        let ctx = ListContext {
            kind: ListKind::Tsl,
            pins: t.signer_sha256.clone(),
            scheme: Some(scheme.to_owned()),
            territory: Some(t.territory.clone()),
        };
        let key = format!("tsl|{scheme}|{}|{}", t.territory, t.url);
        let label = format!("TSL {scheme}/{}", t.territory);
        let (node, payload) = self.list(policy, docs, key, label, &t.url, Origin::InList, ctx);
        let mut tsl = TslNode { node, territory: t.territory.clone(), services: Vec::new() };
        let Some(ListPayload::Tsl(list)) = payload else {
            return tsl;
        };
        for svc in list.services {
            let granted = svc.status == "granted";
            let ca = b64::decode_std(&svc.ca).and_then(|der| CaCert::parse(&der).ok()).map(Arc::new);
            if ca.is_none() {
                tracing::warn!(service = %svc.name, territory = %t.territory, "TSL service CA certificate does not parse");
            }
            let mut node = ServiceNode {
                name: svc.name.clone(),
                granted,
                doc_types: svc.doc_types.clone(),
                ca: ca.clone(),
                crls: Vec::new(),
                vrl: None,
            };
            if let (true, Some(ca)) = (granted, ca) {
                for url in &svc.crl_urls {
                    node.crls.push(self.crl(policy, docs, &ca, &svc.name, url));
                }
                if let Some(url) = &svc.vrl_url {
                    let ctx = ListContext {
                        kind: ListKind::Vrl,
                        pins: svc.vrl_signer_sha256.clone(),
                        scheme: None,
                        territory: Some(t.territory.clone()),
                    };
                    let key = format!("vrl|{scheme}|{}|{url}", t.territory);
                    let label = format!("VRL {scheme}/{}", t.territory);
                    let (vnode, payload) = self.list(policy, docs, key, label, url, Origin::InList, ctx);
                    let revoked = match payload {
                        Some(ListPayload::Vrl(v)) => v.revoked.into_iter().map(|r| r.tid).collect(),
                        _ => BTreeSet::new(),
                    };
                    node.vrl = Some(VrlNode { node: vnode, revoked });
                }
            }
            tsl.services.push(node);
        }
        tsl
    }

    #[allow(clippy::too_many_arguments)]
    fn list(
        &mut self,
        policy: &UrlPolicy,
        docs: &DocMap,
        key: String,
        label: String,
        url: &str,
        origin: Origin,
        ctx: ListContext,
    ) -> (ListNode, Option<ListPayload>) {
        self.wanted.push(Wanted {
            key: key.clone(),
            url: url.to_owned(),
            label: label.clone(),
            want: Want::List(ctx.clone()),
            origin,
        });
        let mut node = ListNode { key, label, url: url.to_owned(), meta: None, error: None };
        // A URL the rules refuse is never trusted, not even from a copy cached before.
        if let Err(e) = policy.check(url, origin) {
            node.error = Some(e);
            return (node, None);
        }
        let Some(doc) = docs.get(&node.key) else {
            node.error = Some("not fetched yet".into());
            return (node, None);
        };
        match verify_list(&doc.body, &ctx) {
            Ok(v) => {
                node.meta = Some(v.meta);
                (node, Some(v.payload))
            }
            Err(e) => {
                node.error = Some(format!("cached copy refused: {e}"));
                (node, None)
            }
        }
    }

    fn crl(&mut self, policy: &UrlPolicy, docs: &DocMap, ca: &Arc<CaCert>, service: &str, url: &str) -> CrlNode {
        let key = format!("crl|{}|{url}", ca.sha256);
        let label = format!("CRL of {service}");
        self.wanted.push(Wanted {
            key: key.clone(),
            url: url.to_owned(),
            label: label.clone(),
            want: Want::Crl(ca.clone()),
            origin: Origin::InList,
        });
        let mut node = CrlNode { key, label, url: url.to_owned(), crl: None, error: None };
        if let Err(e) = policy.check(url, Origin::InList) {
            node.error = Some(e);
            return node;
        }
        match docs.get(&node.key) {
            None => node.error = Some("not fetched yet".into()),
            Some(doc) => match Crl::parse(&doc.body).and_then(|c| c.verify(ca).map(|()| c)) {
                Ok(c) => node.crl = Some(c),
                Err(e) => node.error = Some(format!("cached copy refused: {e}")),
            },
        }
        node
    }

    /// Labels of governance, scheme and TSL lists that are missing or stale at `now`.
    fn unknown_lists(&self, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |n: &ListNode| {
            if !n.meta.as_ref().is_some_and(|m| m.fresh_at(now)) {
                out.push(n.label.clone());
            }
        };
        if let Some(gl) = &self.governance {
            check(gl);
        }
        for s in &self.schemes {
            check(&s.node);
            for t in &s.tsls {
                check(&t.node);
            }
        }
        out
    }

    /// Every granted service with a usable CA, in list order, as an anchor.
    fn anchors(&self) -> Vec<Anchor<'_>> {
        let mut out = Vec::new();
        let Some(gl) = &self.governance else {
            return out;
        };
        for s in &self.schemes {
            for t in &s.tsls {
                for svc in &t.services {
                    let (true, Some(ca)) = (svc.granted, svc.ca.as_ref()) else {
                        continue;
                    };
                    let path = [gl, &s.node, &t.node]
                        .into_iter()
                        .map(|n| PathList { label: &n.label, meta: n.meta.as_ref() })
                        .collect();
                    out.push(Anchor {
                        ca,
                        ca_name: &svc.name,
                        territory: Some(&t.territory),
                        doc_types: Some((&s.doc_types, &svc.doc_types)),
                        path,
                        crls: svc.crls.iter().map(|c| CrlCheck { label: &c.label, crl: c.crl.as_ref() }).collect(),
                        vrl: svc.vrl.as_ref().map(|v| VrlCheck {
                            label: &v.node.label,
                            meta: v.node.meta.as_ref(),
                            revoked: &v.revoked,
                        }),
                    });
                }
            }
        }
        out
    }

    fn lists(&self) -> impl Iterator<Item = (&'static str, &ListNode)> {
        let gl = self.governance.iter().map(|n| ("governance", n));
        let rest = self.schemes.iter().flat_map(|s| {
            std::iter::once(("scheme", &s.node)).chain(s.tsls.iter().flat_map(|t| {
                std::iter::once(("tsl", &t.node))
                    .chain(t.services.iter().filter_map(|svc| svc.vrl.as_ref().map(|v| ("vrl", &v.node))))
            }))
        });
        gl.chain(rest)
    }

    fn crls(&self) -> impl Iterator<Item = (&ServiceNode, &CrlNode)> {
        self.schemes
            .iter()
            .flat_map(|s| s.tsls.iter())
            .flat_map(|t| t.services.iter())
            .flat_map(|svc| svc.crls.iter().map(move |c| (svc, c)))
    }
}

impl TrustStore {
    /// Loads the last good documents from `<state_dir>/trust/`. Never fetches: call
    /// [`TrustStore::refresh`] next. A missing or unreadable cache file is logged and
    /// skipped; only an unusable cache directory is an error.
    pub fn load(config: &TrustConfig, state_dir: &Path) -> Result<Self, TrustError> {
        let cache_dir = state_dir.join("trust");
        std::fs::create_dir_all(&cache_dir).map_err(|e| TrustError::Cache(format!("{}: {e}", cache_dir.display())))?;
        let on_disk = read_cache(&cache_dir)?;
        let policy = UrlPolicy::new(&config.governance_url, config.allow_private_networks);
        let tree = Tree::build(config, &policy, &on_disk);
        let docs = tree.wanted.iter().filter_map(|w| on_disk.get(&w.key).map(|d| (w.key.clone(), d.clone()))).collect();
        let snapshot = Snapshot { docs, tree, errors: BTreeMap::new(), last_refresh: None };
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                fetcher: Fetcher::new(policy.clone(), config.fetch_timeout),
                policy,
                cache_dir,
                snapshot: RwLock::new(Arc::new(snapshot)),
                commit: std::sync::Mutex::new(()),
                on_disk: tokio::sync::Mutex::new(on_disk),
            }),
        })
    }

    /// The configuration the store was loaded with.
    pub fn config(&self) -> &TrustConfig {
        &self.inner.config
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.inner.snapshot.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Fetches every list, CRL and VRL. A document that fails keeps its old copy and is
    /// reported; the result is an error only when trust is not configured. The cache on
    /// disk is updated (atomically per file).
    ///
    /// No lock is held while fetching: the documents are fetched first (each fetch
    /// bounded in size and time, docs/credentials.md §6 rule 11), then merged into the
    /// snapshot current at that moment and swapped in under a short lock, so a
    /// concurrent refresh cannot roll a list back and a slow source delays nobody else.
    pub async fn refresh(&self, now: i64) -> Result<RefreshReport, TrustError> {
        let config = &self.inner.config;
        if !config.is_configured() {
            return Err(TrustError::NotConfigured);
        }
        let base = self.snapshot();
        let fetched = self.fetch_all(&base, now).await;
        let mut report = fetched.report;
        {
            let _commit = match self.inner.commit.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let current = self.snapshot();
            let mut docs = current.docs.clone();
            for (w, doc) in fetched.accepted {
                // Another refresh may have committed a newer copy meanwhile.
                if accept(&w, doc.body.clone(), docs.get(&w.key), now).is_ok() {
                    docs.insert(w.key.clone(), doc);
                }
            }
            let tree = Tree::build(config, &self.inner.policy, &docs);
            let docs: DocMap = tree.wanted.iter().filter_map(|w| docs.remove_entry(&w.key)).collect();
            self.swap(Snapshot { docs, tree, errors: fetched.errors, last_refresh: Some(now) });
        }
        if let Err(e) = self.write_cache().await {
            tracing::error!(error = %e, "trust cache not written");
            report.failed.push(RefreshFailure {
                list: "cache".into(),
                url: self.inner.cache_dir.display().to_string(),
                reason: e.to_string(),
            });
        }
        report.fresh = self.status(now).fresh;
        Ok(report)
    }

    /// Fetches the chain top down from the configured governance list, each level's
    /// documents concurrently. `base` provides the copies a fetched document must
    /// succeed (rollback checks) and the fallbacks for failed fetches.
    async fn fetch_all(&self, base: &Snapshot, now: i64) -> Fetched {
        use futures_util::StreamExt as _;
        let config = &self.inner.config;
        let mut out = Fetched::default();
        let mut docs = DocMap::new();
        let mut attempted = BTreeSet::new();
        loop {
            let tree = Tree::build(config, &self.inner.policy, &docs);
            // Each document once per refresh, even when several services share it.
            let todo: Vec<Wanted> = tree.wanted.into_iter().filter(|w| attempted.insert(w.key.clone())).collect();
            if todo.is_empty() || attempted.len() > MAX_DOCUMENTS {
                break;
            }
            let results: Vec<(Wanted, Result<Vec<u8>, String>)> = futures_util::stream::iter(todo)
                .map(|w| async move {
                    let max = match w.want {
                        Want::List(_) => MAX_LIST_BYTES,
                        Want::Crl(_) => MAX_CRL_BYTES,
                    };
                    let body = self.inner.fetcher.fetch(&w.url, w.origin, max).await;
                    (w, body)
                })
                .buffered(CONCURRENT_FETCHES)
                .collect()
                .await;
            for (w, body) in results {
                let previous = base.docs.get(&w.key);
                match body.and_then(|body| accept(&w, body, previous, now)) {
                    Ok(doc) => {
                        if previous.is_none_or(|p| p.body != doc.body) {
                            out.report.updated.push(w.label.clone());
                        }
                        docs.insert(w.key.clone(), doc.clone());
                        out.accepted.push((w, doc));
                    }
                    Err(reason) => {
                        tracing::warn!(list = %w.label, url = %w.url, %reason, "trust document refused; keeping the previous copy");
                        out.report.failed.push(RefreshFailure {
                            list: w.label.clone(),
                            url: w.url.clone(),
                            reason: reason.clone(),
                        });
                        out.errors.insert(w.key.clone(), reason);
                        if let Some(p) = previous {
                            docs.insert(w.key.clone(), p.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// Brings the on-disk cache to the current snapshot. Whoever writes last writes the
    /// newest snapshot, so concurrent refreshes cannot leave an older copy on disk.
    async fn write_cache(&self) -> Result<(), TrustError> {
        let mut on_disk = self.inner.on_disk.lock().await;
        let docs = self.snapshot().docs.clone();
        write_cache(&self.inner.cache_dir, &on_disk, &docs).await?;
        *on_disk = docs;
        Ok(())
    }

    /// Runs [`TrustStore::refresh`] every `trust.refresh`, calling `on_refresh` after
    /// each one (to suspend enrollments, audit, count metrics). Abort the handle to stop.
    pub fn spawn_refresh_loop<F>(&self, on_refresh: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(&RefreshReport) + Send + Sync + 'static,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let period = store.inner.config.refresh;
            loop {
                tokio::time::sleep(period).await;
                match store.refresh(unix_now()).await {
                    Ok(report) => on_refresh(&report),
                    Err(e) => tracing::warn!(error = %e, "trust refresh failed"),
                }
            }
        })
    }

    /// Verifies the enrollment `vds` member (docs/credentials.md §3.3, steps 1–6 in order).
    pub fn verify_credential(&self, vds: &str, now: i64) -> Result<VerifiedCredential, TrustError> {
        if !self.inner.config.is_configured() {
            return Err(TrustError::NotConfigured);
        }
        let seal = parse_vds(vds)?;
        // Structure first (docs/credentials.md §6 rule 1): an enrollment needs the profile's `tid`
        // and well-formed dates whatever the document type, so a seal without them is
        // `400 invalid_request` before any signature or type check.
        Credential::from_msg(&seal.msg)?;
        let v = self.verify_seal(&seal, now)?;
        let credential =
            v.credential.ok_or_else(|| TrustError::Untrusted("document type is not accepted for enrollment".into()))?;
        Ok(VerifiedCredential {
            credential,
            doc_type: v.doc_type,
            territory: v.territory.unwrap_or_default(),
            ca_name: v.ca_name,
            ca_sha256: v.ca_sha256,
            signer_serial_hex: v.signer_serial_hex,
        })
    }

    /// Verifies a parsed seal against the configured lists and types. The profile is
    /// read (structure, `400`) when the type is accepted for enrollment.
    pub fn verify_seal(&self, seal: &Seal, now: i64) -> Result<VerifiedSeal, TrustError> {
        let config = &self.inner.config;
        if !config.is_configured() {
            return Err(TrustError::NotConfigured);
        }
        let credential = if config.accepted_doc_types.contains(&seal.header.doc_type) {
            Some(Credential::from_msg(&seal.msg)?)
        } else {
            None
        };
        let snapshot = self.snapshot();
        let anchors = snapshot.tree.anchors();
        let policy = Policy {
            accepted: Some(&config.accepted_doc_types),
            config,
            unknown_lists: snapshot.tree.unknown_lists(now),
        };
        let verdict = verify_seal(seal, credential.as_ref(), &anchors, &policy, now)?;
        let anchor = &anchors[verdict.anchor];
        Ok(VerifiedSeal {
            doc_type: seal.header.doc_type.clone(),
            territory: anchor.territory.map(str::to_owned),
            ca_name: anchor.ca_name.to_owned(),
            ca_sha256: anchor.ca.sha256.clone(),
            signer_serial_hex: verdict.signer.serial_hex.clone(),
            credential,
        })
    }

    /// Every list, CRL and VRL with its freshness at `now`.
    pub fn status(&self, now: i64) -> TrustStatus {
        let snapshot = self.snapshot();
        let tree = &snapshot.tree;
        let fetched = |key: &str| snapshot.docs.get(key).map(|d| d.fetched_at);
        let mut entries = Vec::new();
        for (kind, n) in tree.lists() {
            entries.push(TrustEntryStatus {
                kind,
                id: entry_id(&n.key),
                name: n.label.clone(),
                source: n.url.clone(),
                seq: n.meta.as_ref().map(|m| m.seq),
                issued: n.meta.as_ref().map(|m| m.issued),
                next_update: n.meta.as_ref().map(|m| m.next_update),
                fresh: n.meta.as_ref().is_some_and(|m| m.fresh_at(now)),
                fetched_at: fetched(&n.key),
                error: snapshot.errors.get(&n.key).cloned().or_else(|| n.error.clone()),
            });
        }
        for (_, c) in tree.crls() {
            entries.push(TrustEntryStatus {
                kind: "crl",
                id: entry_id(&c.key),
                name: c.label.clone(),
                source: c.url.clone(),
                seq: None,
                issued: c.crl.as_ref().map(|x| x.this_update),
                next_update: c.crl.as_ref().and_then(|x| x.next_update),
                fresh: c.crl.as_ref().is_some_and(|x| x.current_at(now)),
                fetched_at: fetched(&c.key),
                error: snapshot.errors.get(&c.key).cloned().or_else(|| c.error.clone()),
            });
        }
        let configured = self.inner.config.is_configured();
        let oldest = entries.iter().filter_map(|e| e.fetched_at).min();
        TrustStatus {
            configured,
            fresh: configured && !entries.is_empty() && entries.iter().all(|e| e.fresh),
            age_s: oldest.map(|t| now.saturating_sub(t).max(0)),
            last_refresh: snapshot.last_refresh,
            entries,
        }
    }

    /// Token ids on the cached VRLs, each with its scope: a VRL suspends only the
    /// enrollments of its territory made with a credential of a CA whose granted service
    /// names that VRL (docs/credentials.md §6 rule 10), never another territory's.
    pub fn revoked_tokens(&self) -> Vec<RevokedTokens> {
        let snapshot = self.snapshot();
        let mut out: BTreeMap<(String, String), RevokedTokens> = BTreeMap::new();
        for s in &snapshot.tree.schemes {
            for t in &s.tsls {
                for svc in &t.services {
                    let (Some(vrl), Some(ca)) = (&svc.vrl, &svc.ca) else {
                        continue;
                    };
                    if vrl.revoked.is_empty() {
                        continue;
                    }
                    let entry = out.entry((t.territory.clone(), ca.sha256.clone())).or_insert_with(|| RevokedTokens {
                        territory: t.territory.clone(),
                        ca_sha256: ca.sha256.clone(),
                        ca_name: svc.name.clone(),
                        token_ids: BTreeSet::new(),
                    });
                    entry.token_ids.extend(vrl.revoked.iter().cloned());
                }
            }
        }
        out.into_values().collect()
    }

    /// Signer certificates listed on the cached CRLs, by CA SHA-256 and serial (hex, as
    /// in [`VerifiedCredential`]): enrollments made with these are to be suspended.
    pub fn revoked_signers(&self) -> Vec<RevokedSigner> {
        let snapshot = self.snapshot();
        let mut out = BTreeSet::new();
        for (svc, c) in snapshot.tree.crls() {
            let (Some(crl), Some(ca)) = (&c.crl, &svc.ca) else {
                continue;
            };
            for serial_hex in crl.revoked_serials_hex() {
                out.insert(RevokedSigner { ca_sha256: ca.sha256.clone(), ca_name: svc.name.clone(), serial_hex });
            }
        }
        out.into_iter().collect()
    }
}

/// Decides whether a fetched document replaces `previous` (docs/credentials.md §3.2, §6 rules 5, 7).
fn accept(w: &Wanted, body: Vec<u8>, previous: Option<&Doc>, now: i64) -> Result<Doc, String> {
    match &w.want {
        Want::List(ctx) => {
            let new = verify_list(&body, ctx).map_err(|e| e.to_string())?;
            let m = &new.meta;
            if !(m.signer_not_before <= now && now <= m.signer_not_after) {
                return Err("list signer certificate is not within its validity".into());
            }
            if m.issued > now + MAX_CLOCK_AHEAD {
                return Err("list is issued in the future".into());
            }
            if let Some(old) = previous.and_then(|p| verify_list(&p.body, ctx).ok()) {
                if m.seq < old.meta.seq {
                    return Err(format!("seq {} is older than the cached seq {}", m.seq, old.meta.seq));
                }
                if m.seq == old.meta.seq && new.payload_bytes != old.payload_bytes {
                    return Err(format!("seq {} repeated with a different payload", m.seq));
                }
            }
        }
        Want::Crl(ca) => {
            let crl = Crl::parse(&body).map_err(|e| e.to_string())?;
            crl.verify(ca).map_err(|e| format!("CRL: {e}"))?;
            if crl.next_update.is_none() {
                return Err("CRL has no nextUpdate".into());
            }
            if crl.this_update > now + MAX_CLOCK_AHEAD {
                return Err("CRL is issued in the future".into());
            }
            if let Some(old) = previous.and_then(|p| Crl::parse(&p.body).ok())
                && crl.this_update < old.this_update
            {
                return Err("CRL is older than the cached one".into());
            }
        }
    }
    Ok(Doc { key: w.key.clone(), url: w.url.clone(), fetched_at: now, body })
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The id of a cached document from its key (`kind|part|...|url`): the parts before
/// the URL joined by `/`, a CA's SHA-256 shortened to 16 hex digits, and every byte
/// outside `[A-Za-z0-9._-]` replaced by `_`.
fn entry_id(key: &str) -> String {
    let parts = match key.split('|').next() {
        Some("gl") => 1,
        Some("sl" | "crl") => 2,
        _ => 3,
    };
    key.splitn(parts + 1, '|')
        .take(parts)
        .enumerate()
        .map(|(i, p)| {
            let p = if key.starts_with("crl|") && i == 1 { &p[..p.len().min(16)] } else { p };
            p.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn cache_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.json", sha256_hex(key.as_bytes())))
}

fn read_cache(dir: &Path) -> Result<DocMap, TrustError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrustError::Cache(format!("{}: {e}", dir.display())))?;
    let mut docs = DocMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let doc = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Doc>(&b).map_err(|e| e.to_string()));
        match doc {
            Ok(doc) if cache_file(dir, &doc.key) == path => {
                docs.insert(doc.key.clone(), doc);
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "trust cache file under the wrong name; ignored")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable trust cache file; ignored")
            }
        }
    }
    Ok(docs)
}

/// Writes changed documents (temp file + fsync + rename) and removes dropped ones.
async fn write_cache(dir: &Path, old: &DocMap, new: &DocMap) -> Result<(), TrustError> {
    let dir = dir.to_owned();
    let changed: Vec<Doc> = new.values().filter(|d| old.get(&d.key) != Some(*d)).cloned().collect();
    let dropped: Vec<String> = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    tokio::task::spawn_blocking(move || -> Result<(), TrustError> {
        let io = |e: std::io::Error| TrustError::Cache(e.to_string());
        for doc in changed {
            let path = cache_file(&dir, &doc.key);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let bytes = serde_json::to_vec(&doc).map_err(|e| TrustError::Cache(e.to_string()))?;
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        for key in dropped {
            match std::fs::remove_file(cache_file(&dir, &key)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })
    .await
    .map_err(|e| TrustError::Cache(e.to_string()))?
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
