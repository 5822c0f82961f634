//! The relying parties (`[[services]]`) as the running server sees them. Unlike the
//! rest of the configuration they can change without a restart: SIGHUP re-reads the
//! file and, when it is valid, swaps the whole list at once. A request works with one
//! snapshot of a service from start to end; sessions already started keep the
//! `service_id` they were started with and are judged by the list current at verify.

use std::sync::{Arc, RwLock};

use super::config::ServiceConfig;
use crate::saml::SamlSpConfig;

/// The current list of relying parties, replaced as a whole.
#[derive(Clone, Default)]
pub struct RelyingParties {
    current: Arc<RwLock<Arc<Vec<Arc<ServiceConfig>>>>>,
}

impl std::fmt::Debug for RelyingParties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().iter().map(|s| &s.id)).finish()
    }
}

/// What a replacement changed, by service id (for the log and the audit trail).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelyingPartyChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl RelyingPartyChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl RelyingParties {
    pub fn new(services: Vec<ServiceConfig>) -> Self {
        Self { current: Arc::new(RwLock::new(Arc::new(services.into_iter().map(Arc::new).collect()))) }
    }

    /// The list as it is now. Cheap: one lock and one reference count.
    pub fn snapshot(&self) -> Arc<Vec<Arc<ServiceConfig>>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The relying party with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ServiceConfig>> {
        self.snapshot().iter().find(|s| s.id == id).cloned()
    }

    /// The SAML service providers with their services, in configuration order.
    pub fn saml_sps(&self) -> Vec<(Arc<ServiceConfig>, SamlSpConfig)> {
        self.snapshot().iter().filter_map(|s| s.saml.clone().map(|sp| (s.clone(), sp))).collect()
    }

    /// Whether any relying party lists `origin` among its browser origins (CORS).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.snapshot().iter().any(|s| s.allowed_origins.iter().any(|o| o == origin))
    }

    /// Replaces the list (the new list has been validated with the rest of its file)
    /// and reports what changed.
    pub fn replace(&self, services: Vec<ServiceConfig>) -> RelyingPartyChanges {
        let new: Vec<Arc<ServiceConfig>> = services.into_iter().map(Arc::new).collect();
        let old = self.snapshot();
        let changes = diff(&old, &new);
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        changes
    }
}

fn diff(old: &[Arc<ServiceConfig>], new: &[Arc<ServiceConfig>]) -> RelyingPartyChanges {
    // ServiceConfig is plain data; comparing its JSON form avoids a PartialEq chain
    // through every nested SAML type.
    let json = |s: &ServiceConfig| serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    let mut changes = RelyingPartyChanges::default();
    for n in new {
        match old.iter().find(|o| o.id == n.id) {
            None => changes.added.push(n.id.clone()),
            Some(o) if json(o) != json(n) => changes.changed.push(n.id.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old.iter().filter(|o| !new.iter().any(|n| n.id == o.id)).map(|o| o.id.clone()).collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, origin: &str) -> ServiceConfig {
        ServiceConfig {
            id: id.into(),
            name: format!("Service {id}"),
            allowed_scopes: vec!["name".into()],
            allowed_origins: vec![origin.into()],
            saml: None,
            subject_type: None,
            sector_identifier: None,
            oidc: None,
            initiate: Default::default(),
            client_auth: None,
        }
    }

    #[test]
    fn replace_swaps_and_reports() {
        let rps = RelyingParties::new(vec![service("a", "https://a.example"), service("b", "https://b.example")]);
        let held = rps.get("a");
        assert!(rps.allows_origin("https://b.example"));
        let changes = rps.replace(vec![service("a", "https://a2.example"), service("c", "https://c.example")]);
        assert_eq!(
            changes,
            RelyingPartyChanges { added: vec!["c".into()], removed: vec!["b".into()], changed: vec!["a".into()] }
        );
        assert!(rps.get("b").is_none());
        assert!(!rps.allows_origin("https://b.example"));
        assert!(rps.allows_origin("https://a2.example"));
        // A request that already holds a snapshot keeps it.
        assert_eq!(held.map(|s| s.allowed_origins.clone()), Some(vec!["https://a.example".to_string()]));
        assert!(rps.replace(vec![service("a", "https://a2.example"), service("c", "https://c.example")]).is_empty());
    }
}
