//! Single logout across the SAML SPs a person is signed in to (docs/protocol.md §8.1,
//! SAML profiles §4.4). Each assertion the IdP issues leaves an SP session record in
//! the session store, keyed by a digest of the person's token id and sealed under the
//! data key: the SP, the NameID it got (format, `SPNameQualifier`) and the
//! `SessionIndex`, no claim values; it lives until the assertion's
//! `SessionNotOnOrAfter`, at most [`MAX_SP_SESSIONS_PER_PERSON`] per person.
//!
//! A logout (OIDC RP-initiated logout, or one SP's `LogoutRequest`) becomes a logout
//! chain kept server side and bound to the browser by a cookie: one signed
//! `LogoutRequest` per SP with a SingleLogoutService, front-channel on the
//! HTTP-Redirect binding, one SP after another, each `LogoutResponse` collected at
//! `/saml/slo`; then the chain's end (the RP's `post_logout_redirect_uri`, the first
//! SP's `LogoutResponse`, or a signed-out page). Nothing here knows HTTP.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Services;
use super::flow::{BrowserSecret, browser_bound};
use super::saml::SamlFlowError;
use crate::error::ApiError;
use crate::saml::logout::{self, LogoutSubject};
use crate::saml::redirect::{self, RequestError};
use crate::saml::{NameIdFormat, SamlSpConfig, new_saml_id};

/// SP sessions remembered per person; past that the one that ends first is dropped
/// (it will not be logged out by a later single logout).
pub const MAX_SP_SESSIONS_PER_PERSON: usize = 16;
/// How long a logout chain may take from start to end; after that its state is gone
/// and a late `LogoutResponse` gets the error page.
pub const LOGOUT_CHAIN_TTL: Duration = Duration::from_secs(10 * 60);

/// What the IdP remembers of one SAML SP session: enough to send that SP a
/// `LogoutRequest`, nothing about the person but the NameID the SP already has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpSession {
    pub service_id: String,
    pub sp_entity_id: String,
    pub name_id: String,
    pub name_id_format: NameIdFormat,
    pub session_index: String,
}

/// The pseudonymous key of a person's SP sessions: a digest of the token id.
pub fn person_key(token_id: &str) -> String {
    crate::oidc::sha256_hex(&format!("symbolon-person:{token_id}"))
}

fn sessions_key(person: &str) -> String {
    format!("saml-sp-sessions:{person}")
}

fn record_aad(person: &str, member: &str) -> String {
    format!("saml-sp-session:{person}:{member}")
}

/// Where an SP-initiated `LogoutRequest` (its `SessionIndex`) finds the person.
fn index_key(sp_entity_id: &str, session_index: &str) -> String {
    format!("saml-sp-index:{}:{session_index}", crate::oidc::sha256_hex(sp_entity_id))
}

fn chain_key(id: &str) -> String {
    format!("saml-logout-chain:{id}")
}

/// Where a `LogoutResponse` without our `RelayState` finds its chain (`InResponseTo`).
fn request_key(request_id: &str) -> String {
    format!("saml-logout-request:{request_id}")
}

/// Where a logout chain ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum LogoutFinish {
    /// A redirect: the RP's `post_logout_redirect_uri` with `state`, or the signed
    /// `LogoutResponse` to the SP that asked.
    Redirect(String),
    /// A "signed out" page on Symbolon.
    SignedOut,
}

/// The `LogoutRequest` waiting for its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hop {
    member: String,
    service_id: String,
    sp_entity_id: String,
    request_id: String,
    sent_at: i64,
}

/// A logout in progress, kept in the session store under a random id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogoutChain {
    person: String,
    /// SHA-256 of the chain's browser secret (its cookie).
    browser_secret_sha256: String,
    /// SP sessions (members) still to log out, in order.
    pending: Vec<String>,
    current: Option<Hop>,
    total: usize,
    confirmed: u32,
    failed: u32,
    finish: LogoutFinish,
}

/// A chain started: its id (the `RelayState` of its requests) and its browser secret
/// for the cookie set with the first step.
#[derive(Debug, Clone)]
pub struct LogoutStart {
    pub chain_id: String,
    pub browser_secret: String,
}

/// The next step of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutStep {
    /// Send the browser to this SP with the signed `LogoutRequest`.
    ToSp { url: String, sp_name: String, position: usize, total: usize },
    /// Every SP had its turn.
    Done(LogoutFinish),
}

impl Services {
    /// Remembers the SP session an assertion starts (see the module docs).
    pub(super) async fn record_sp_session(
        &self,
        token_id: &str,
        session: &SpSession,
        not_on_or_after: i64,
        now: i64,
    ) -> Result<(), ApiError> {
        let person = person_key(token_id);
        // Time first: sessions that end in the same second are logged out in the order
        // they began (the store orders members by expiry, then by name).
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let member = format!("{started:032x}-{}", crate::ids::new_id());
        let json = serde_json::to_vec(session).map_err(|_| ApiError::internal())?;
        let sealed = self.keys.seal(&record_aad(&person, &member), json).await?;
        let ttl = Duration::from_secs(u64::try_from(not_on_or_after - now).unwrap_or(1).max(1));
        self.sessions
            .put_member(&sessions_key(&person), &member, &sealed, not_on_or_after, MAX_SP_SESSIONS_PER_PERSON)
            .await?;
        let index = format!("{person} {member}");
        self.sessions.put_value(&index_key(&session.sp_entity_id, &session.session_index), &index, ttl).await?;
        Ok(())
    }

    /// The live SP sessions of `person`: (member, record).
    async fn sp_sessions(&self, person: &str, now: i64) -> Result<Vec<(String, SpSession)>, ApiError> {
        let mut out = Vec::new();
        for m in self.sessions.members(&sessions_key(person), now).await? {
            match self.keys.open_sealed(&record_aad(person, &m.member), &m.value).await {
                Ok(plain) => match serde_json::from_slice::<SpSession>(&plain) {
                    Ok(s) => out.push((m.member, s)),
                    Err(_) => tracing::warn!("unreadable SAML SP session record skipped"),
                },
                Err(e) => tracing::warn!(error = %e, "SAML SP session record that does not open skipped"),
            }
        }
        Ok(out)
    }

    /// The SP a record names, as configured now, if it still has a SingleLogoutService.
    fn logout_sp(&self, s: &SpSession) -> Option<(String, SamlSpConfig)> {
        let service = self.service(&s.service_id)?;
        let sp = service.saml.clone().filter(|sp| sp.entity_id == s.sp_entity_id && sp.slo_url.is_some())?;
        Some((service.name.clone(), sp))
    }

    /// Starts a logout chain over `person`'s live SP sessions that have a
    /// SingleLogoutService (all but `except`), ending at `finish`; `None` when there is
    /// no such session (nothing to do).
    pub(super) async fn begin_sp_logout(
        &self,
        person: &str,
        except: Option<&str>,
        finish: LogoutFinish,
        now: i64,
    ) -> Result<Option<LogoutStart>, ApiError> {
        if !self.settings.saml.enabled {
            return Ok(None);
        }
        let pending: Vec<String> = self
            .sp_sessions(person, now)
            .await?
            .into_iter()
            .filter(|(m, s)| Some(m.as_str()) != except && self.logout_sp(s).is_some())
            .map(|(m, _)| m)
            .collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let browser = BrowserSecret::generate();
        let chain = LogoutChain {
            person: person.to_string(),
            browser_secret_sha256: browser.digest,
            total: pending.len(),
            pending,
            current: None,
            confirmed: 0,
            failed: 0,
            finish,
        };
        let chain_id = crate::ids::new_id();
        self.put_chain(&chain_id, &chain).await?;
        tracing::info!(service_providers = chain.total, "SAML single logout started");
        Ok(Some(LogoutStart { chain_id, browser_secret: browser.secret }))
    }

    async fn put_chain(&self, id: &str, chain: &LogoutChain) -> Result<(), ApiError> {
        let value = serde_json::to_string(chain).map_err(|_| ApiError::internal())?;
        Ok(self.sessions.put_value(&chain_key(id), &value, LOGOUT_CHAIN_TTL).await?)
    }

    /// The chain `id`, if this browser (`browser_secret`, the chain's cookie) owns it.
    async fn bound_chain(&self, id: &str, browser_secret: Option<&str>) -> Result<LogoutChain, SamlFlowError> {
        let raw = self.sessions.get_value(&chain_key(id)).await?.ok_or(SamlFlowError::LogoutGone)?;
        let chain: LogoutChain = serde_json::from_str(&raw).map_err(|_| SamlFlowError::LogoutGone)?;
        if !browser_bound(&chain.browser_secret_sha256, browser_secret) {
            return Err(SamlFlowError::OtherBrowser);
        }
        Ok(chain)
    }

    /// `GET /saml/logout`: the chain's next step. A request still waiting for its answer
    /// when the browser comes here again (the SP did not send it back: the user went
    /// back, or followed the page's link) is given up on; the next SP with a live
    /// session gets its signed `LogoutRequest`; when none is left, the chain ends.
    pub async fn saml_logout_step(
        &self,
        chain_id: &str,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<LogoutStep, SamlFlowError> {
        let mut chain = self.bound_chain(chain_id, browser_secret).await?;
        if let Some(hop) = chain.current.take() {
            chain.failed += 1;
            tracing::warn!(sp = %hop.sp_entity_id, request_id = %hop.request_id, waited = now - hop.sent_at, "SAML single logout: the SP did not answer; going on");
        }
        let live = self.sp_sessions(&chain.person, now).await?;
        while !chain.pending.is_empty() {
            let member = chain.pending.remove(0);
            let Some((_, session)) = live.iter().find(|(m, _)| *m == member) else { continue };
            let Some((sp_name, sp)) = self.logout_sp(session) else { continue };
            let Some(slo_url) = sp.slo_url.as_deref() else { continue };
            let request_id = new_saml_id();
            let subject = LogoutSubject {
                name_id: &session.name_id,
                name_id_format: session.name_id_format,
                sp_name_qualifier: &sp.entity_id,
                session_index: &session.session_index,
            };
            let not_after = now + i64::try_from(self.settings.saml.request_max_age.as_secs()).unwrap_or(300);
            let xml = logout::logout_request_xml(&self.settings.issuer, slo_url, &request_id, &subject, now, not_after);
            let url = redirect::signed_redirect_url(
                &self.keys,
                sp.signature_algorithm,
                slo_url,
                "SAMLRequest",
                &xml,
                Some(chain_id),
            )
            .await?;
            chain.current = Some(Hop {
                member,
                service_id: session.service_id.clone(),
                sp_entity_id: sp.entity_id.clone(),
                request_id: request_id.clone(),
                sent_at: now,
            });
            let position = chain.total - chain.pending.len();
            self.sessions.put_value(&request_key(&request_id), chain_id, LOGOUT_CHAIN_TTL).await?;
            self.put_chain(chain_id, &chain).await?;
            tracing::info!(sp = %sp.entity_id, request_id = %request_id, position, total = chain.total, "SAML LogoutRequest sent");
            return Ok(LogoutStep::ToSp { url, sp_name, position, total: chain.total });
        }
        if self.sessions.take_value(&chain_key(chain_id)).await?.is_none() {
            return Err(SamlFlowError::LogoutGone);
        }
        tracing::info!(
            total = chain.total,
            confirmed = chain.confirmed,
            failed = chain.failed,
            "SAML single logout finished"
        );
        Ok(LogoutStep::Done(chain.finish))
    }

    /// `GET /saml/slo?SAMLResponse=…`: an SP's answer to the chain's current request.
    /// The chain is found by `RelayState` or `InResponseTo` and must belong to this
    /// browser. A checked `Success` ends that SP session record; a response that fails
    /// any check (forged, wrong `InResponseTo`, stale) or reports an error is logged and
    /// the SP counted as failed; either way the chain goes on. Returns the chain id for
    /// the next step.
    pub async fn saml_logout_answer(
        &self,
        query: &str,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<String, SamlFlowError> {
        let cfg = &self.settings.saml;
        if !cfg.enabled {
            return Err(SamlFlowError::Disabled);
        }
        let received = logout::read_logout_response(query)?;
        let by_request = match received.response.in_response_to.as_deref() {
            Some(irt) => self.sessions.get_value(&request_key(irt)).await?,
            None => None,
        };
        let chain_id = by_request.or_else(|| received.message.relay_state.clone()).ok_or(SamlFlowError::LogoutGone)?;
        let mut chain = self.bound_chain(&chain_id, browser_secret).await?;
        let Some(hop) = chain.current.take() else {
            tracing::warn!("SAML LogoutResponse while no request of the chain is waiting: ignored");
            return Ok(chain_id);
        };
        let sp =
            self.service(&hop.service_id).and_then(|s| s.saml.clone()).filter(|sp| sp.entity_id == hop.sp_entity_id);
        let checked = match &sp {
            Some(sp) => logout::check_logout_response(
                &received,
                sp,
                &format!("{}/saml/slo", self.settings.issuer.trim_end_matches('/')),
                &hop.request_id,
                cfg,
                now,
            ),
            None => Err(RequestError::UnknownSp(hop.sp_entity_id.clone())),
        };
        match checked {
            Ok(()) if received.response.is_success() => {
                self.sessions.take_member(&sessions_key(&chain.person), &hop.member, now).await?;
                self.sessions.take_value(&request_key(&hop.request_id)).await?;
                chain.confirmed += 1;
                tracing::info!(sp = %hop.sp_entity_id, request_id = %hop.request_id, "SAML LogoutResponse: the SP ended its session");
            }
            Ok(()) => {
                chain.failed += 1;
                tracing::warn!(sp = %hop.sp_entity_id, request_id = %hop.request_id, status = %received.response.status, "SAML LogoutResponse reports an error; going on");
            }
            Err(e) => {
                chain.failed += 1;
                tracing::warn!(sp = %hop.sp_entity_id, request_id = %hop.request_id, reason = %e, "SAML LogoutResponse refused; the SP session is kept; going on");
            }
        }
        self.put_chain(&chain_id, &chain).await?;
        Ok(chain_id)
    }

    /// An SP's own `LogoutRequest`: its SP session record (found by `SessionIndex` and
    /// NameID) is ended, and the person's other SP sessions are logged out by a chain
    /// that ends at `finish`. `None` when the session is unknown or none is left.
    pub(super) async fn propagate_sp_logout(
        &self,
        sp_entity_id: &str,
        name_id: &str,
        session_indexes: &[String],
        finish: LogoutFinish,
        now: i64,
    ) -> Result<Option<LogoutStart>, ApiError> {
        for si in session_indexes {
            let Some(found) = self.sessions.get_value(&index_key(sp_entity_id, si)).await? else { continue };
            let Some((person, member)) = found.split_once(' ') else { continue };
            let Some((_, own)) = self.sp_sessions(person, now).await?.into_iter().find(|(m, _)| m == member) else {
                continue;
            };
            if own.name_id != name_id || own.sp_entity_id != sp_entity_id {
                tracing::warn!(sp = %sp_entity_id, "SAML LogoutRequest names another subject than its session: not propagated");
                continue;
            }
            self.sessions.take_member(&sessions_key(person), member, now).await?;
            self.sessions.take_value(&index_key(sp_entity_id, si)).await?;
            return self.begin_sp_logout(person, Some(member), finish, now).await;
        }
        Ok(None)
    }
}
