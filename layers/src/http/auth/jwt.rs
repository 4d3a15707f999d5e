//! JWTs: keys with pinned algorithms, chosen by `kid`; `exp`, `iss` and `aud` required;
//! `nbf` honoured; single-use `jti` remembered until the token expires.

use crate::http::limits::Pending;
use crate::util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity};

/// One verification key, its id and its pinned algorithm.
#[derive(Clone)]
pub struct JwtKey {
    /// `kid` the token must name (any, when it is the only key).
    pub kid: String,
    /// The one algorithm accepted with this key.
    pub algorithm: Algorithm,
    /// The verification key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// The claims callgate reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Claims {
    /// Issuer (required).
    pub iss: String,
    /// Audience (required; a string or an array).
    pub aud: serde_json::Value,
    /// Expiry, Unix seconds (required).
    pub exp: u64,
    /// Subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Binds the token to one call (`start.callSid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    /// Makes the token single-use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Remembers the ids of single-use tokens until they expire.
pub trait ReplayGuard: Send + Sync + std::fmt::Debug {
    /// `Ok` the first time `jti` is presented (remembering it until `exp`),
    /// [`AuthError::Replayed`] after that, [`AuthError::Unavailable`] when the memory
    /// cannot be reached and the policy is to fail closed.
    fn first_use<'a>(&'a self, jti: &'a str, exp: u64) -> Pending<'a, Result<(), AuthError>>;
}

/// Single-use token ids remembered in this process, bounded: past `max_seen` ids, the
/// expired ones are forgotten (after `exp` a token fails anyway).
#[derive(Debug)]
pub struct LocalReplayGuard {
    seen: Mutex<HashMap<String, u64>>,
    max_seen: usize,
    leeway_s: u64,
}

impl LocalReplayGuard {
    /// A guard for tokens verified with `leeway_s` of clock skew.
    pub fn new(leeway_s: u64) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            max_seen: 1_000_000,
            leeway_s,
        }
    }

    /// The check itself, for callers that cannot wait (and for the shared guard's fallback).
    pub fn first_use_now(&self, jti: &str, exp: u64) -> Result<(), AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut seen = lock(&self.seen);
        if seen.len() >= self.max_seen {
            seen.retain(|_, exp| *exp + self.leeway_s >= now);
        }
        if seen.contains_key(jti) {
            return Err(AuthError::Replayed);
        }
        seen.insert(jti.to_owned(), exp);
        Ok(())
    }
}

impl ReplayGuard for LocalReplayGuard {
    fn first_use<'a>(&'a self, jti: &'a str, exp: u64) -> Pending<'a, Result<(), AuthError>> {
        Box::pin(std::future::ready(self.first_use_now(jti, exp)))
    }
}

/// Verifies JWTs: algorithm pinned per key, `kid` selects the key, `exp`, `iss` and `aud`
/// required, small leeway; `jti` tokens are single-use ([`JwtVerifier::spend`]).
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Vec<JwtKey>,
    issuer: String,
    audience: String,
    leeway_s: u64,
    replays: Arc<dyn ReplayGuard>,
}

impl JwtVerifier {
    /// A verifier over `keys` (current and previous).
    pub fn new(
        keys: Vec<JwtKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        leeway_s: u64,
    ) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_s,
            replays: Arc::new(LocalReplayGuard::new(leeway_s)),
        }
    }

    /// Remembers single-use tokens with `guard` (shared by the cluster) instead of in this
    /// process.
    pub fn with_replay_guard(mut self, guard: Arc<dyn ReplayGuard>) -> Self {
        self.replays = guard;
        self
    }

    /// The leeway, in seconds, allowed for clock skew.
    pub fn leeway_s(&self) -> u64 {
        self.leeway_s
    }

    /// Checks signature and claims (CPU only). A single-use token is not spent yet: admit
    /// it with [`JwtVerifier::spend`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid)
                .ok_or(AuthError::UnknownKid)?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(AuthError::MissingKid),
        };
        if header.alg != key.algorithm {
            return Err(AuthError::Algorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token is not valid before its `nbf` (when it has one), with the same leeway.
        validation.validate_nbf = true;
        validation.leeway = self.leeway_s;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        Ok(claims)
    }

    /// Spends a verified token's `jti`, if it has one: refused when seen before.
    pub async fn spend(&self, claims: &Claims) -> Result<(), AuthError> {
        match &claims.jti {
            Some(jti) => self.replays.first_use(jti, claims.exp).await,
            None => Ok(()),
        }
    }

    /// Verifies a token presented in `start`, which may also be bound to the call.
    pub fn verify_for_call(&self, token: &str, call_sid: &str) -> Result<Claims, AuthError> {
        let claims = self.verify(token)?;
        match &claims.call_sid {
            Some(bound) if bound != call_sid => Err(AuthError::WrongCall),
            _ => Ok(claims),
        }
    }
}

impl From<&Claims> for Identity {
    fn from(c: &Claims) -> Self {
        Self {
            tenant: c.tenant.clone(),
            subject: c.sub.clone(),
        }
    }
}
