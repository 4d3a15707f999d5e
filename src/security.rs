//! Builds the admission machinery from [`SecurityConfig`]: per-route [`AuthMode`]s, the
//! shared [`Admission`] policy, [`CallCaps`], and the `start`-token check for carriers that
//! cannot send headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::caps::{CallCaps, CapExceeded};
use crate::cluster::limits::{Rates, SharedLimits, SharedReplayGuard};
use crate::cluster::Cluster;
use anyhow::{bail, Context};
use callgate_handlers::call_state::CallIdentity;
use callgate_handlers::event::Start;
use callgate_handlers::{StartAdmission, StartAuth, StartRejected};
use callgate_layers::http::admission::Admission;
use callgate_layers::http::auth::{
    AuthMode, BasicAuth, JwtKey, JwtVerifier, TokenSources, TwilioSignature,
};
use callgate_layers::http::limit::{
    quota, quota_per_minute, FailureBlocklist, GlobalLimiter, KeyedLimiter,
};
use callgate_layers::http::limits::{Limits, LocalLimits, Pending};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::config::{AuthKind, JwtKeyConfig, RouteConfig, SecurityConfig};

/// Everything admission needs, built once at startup.
#[derive(Debug)]
pub struct Security {
    /// Origin, rate limits, failed-auth blocking.
    pub admission: Arc<Admission>,
    /// Concurrent-call caps.
    pub caps: Arc<CallCaps>,
    /// The JWT verifier (when keys are configured).
    pub jwt: Option<Arc<JwtVerifier>>,
    config: SecurityConfig,
}

impl Security {
    /// Builds from configuration (reads key files; installs the JWT crypto backend). With a
    /// `cluster`, limits, single-use tokens and caps are shared through it.
    pub fn new(config: &SecurityConfig, cluster: Option<Arc<Cluster>>) -> anyhow::Result<Self> {
        callgate_layers::install_crypto();
        let jwt = if config.jwt.keys.is_empty() {
            None
        } else {
            let keys = config
                .jwt
                .keys
                .iter()
                .map(decoding_key)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let verifier = JwtVerifier::new(
                keys,
                &config.jwt.issuer,
                &config.jwt.audience,
                config.jwt.leeway_s,
            );
            Some(Arc::new(match &cluster {
                None => verifier,
                Some(cluster) => verifier.with_replay_guard(Arc::new(SharedReplayGuard::new(
                    cluster.clone(),
                    config.jwt.leeway_s,
                ))),
            }))
        };
        let per_ip = quota(
            config.upgrades_per_ip_per_second,
            config.upgrade_burst_per_ip,
        );
        let failures = quota_per_minute(
            config.failed_auth_per_ip_per_minute,
            config.failed_auth_burst,
        );
        let probation = quota_per_minute(
            config.blocked_attempts_per_minute,
            config.blocked_attempts_per_minute.div_ceil(12),
        );
        let block_for = Duration::from_secs(config.failed_auth_block_s);
        let global = quota(config.upgrades_per_second, config.upgrade_burst);
        let local = LocalLimits {
            per_ip: KeyedLimiter::new(per_ip, config.max_tracked_ips),
            failures: FailureBlocklist::new(failures, probation, block_for, config.max_tracked_ips),
            global: GlobalLimiter::new(global),
        };
        let limits: Arc<dyn Limits> = match &cluster {
            None => Arc::new(local),
            Some(cluster) => {
                let rates = Rates {
                    per_ip: per_ip.into(),
                    global: global.into(),
                    failures: failures.into(),
                    probation: probation.into(),
                    block_for,
                };
                Arc::new(SharedLimits::new(cluster.clone(), rates, local))
            }
        };
        let tenants: HashMap<String, usize> = config
            .tenants
            .iter()
            .map(|(k, v)| (k.clone(), v.max_calls))
            .collect();
        let caps = CallCaps::new(config.max_calls, config.max_calls_per_tenant, tenants);
        let caps = match cluster {
            None => caps,
            Some(cluster) => caps.shared(cluster),
        };
        Ok(Self {
            admission: Arc::new(Admission {
                allowed_origins: config.allowed_origins.clone(),
                limits,
            }),
            caps: Arc::new(caps),
            jwt,
            config: config.clone(),
        })
    }

    /// The `[security]` section it was built from.
    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// The auth of one route.
    pub fn auth_mode(&self, route: &RouteConfig) -> anyhow::Result<AuthMode> {
        let sec = &self.config;
        Ok(match route.auth.unwrap_or(sec.default_auth) {
            AuthKind::None => AuthMode::None,
            AuthKind::Jwt => AuthMode::Jwt {
                verifier: self
                    .jwt
                    .clone()
                    .context("auth = \"jwt\" needs [[security.jwt.keys]]")?,
                sources: TokenSources {
                    query: route.query_token.then(|| sec.jwt.query_param.clone()),
                    start: route.token_in_start,
                },
            },
            AuthKind::TwilioSignature => {
                let url = format!(
                    "{}{}",
                    sec.twilio.public_base_url.trim_end_matches('/'),
                    route.path
                );
                let tokens = vec![
                    sec.twilio.auth_token.expose().to_owned(),
                    sec.twilio.secondary_auth_token.expose().to_owned(),
                ];
                let call_token = if route.require_call_token {
                    Some(
                        self.jwt
                            .clone()
                            .context("require_call_token needs [[security.jwt.keys]]")?,
                    )
                } else {
                    None
                };
                AuthMode::TwilioSignature {
                    signature: Arc::new(TwilioSignature::new(&url, tokens)),
                    call_token,
                }
            }
            AuthKind::Basic => AuthMode::Basic(Arc::new(BasicAuth::new(
                &sec.basic.username,
                sec.basic.password.expose(),
            ))),
            AuthKind::IpAllowlist => AuthMode::IpAllowlist(Arc::new(sec.allowed_ips.clone())),
        })
    }

    /// The `start` check for a call admitted with a deferred token.
    pub fn start_auth(&self, verifier: Arc<JwtVerifier>) -> Arc<dyn StartAuth> {
        Arc::new(StartToken {
            verifier,
            caps: self.caps.clone(),
            parameter: self.config.jwt.start_parameter.clone(),
        })
    }

    /// Time a deferred call has to present its token.
    pub fn start_deadline(&self) -> Duration {
        Duration::from_millis(self.config.start_token_deadline_ms)
    }
}

/// A configured key's material, by algorithm family.
enum Material {
    Hmac(String),
    Rsa(Vec<u8>),
    Ec(Vec<u8>),
    Ed(Vec<u8>),
}

/// Reads a key's secret (HMAC) or its PEM file (`public` or private).
fn material(key: &JwtKeyConfig, public: bool) -> anyhow::Result<(Algorithm, Material)> {
    let algorithm: Algorithm = key
        .algorithm
        .parse()
        .with_context(|| format!("key {}: unknown algorithm {}", key.kid, key.algorithm))?;
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Ok((algorithm, Material::Hmac(hmac_secret(key)?)));
    }
    let (field, file) = if public {
        ("public_key_file", &key.public_key_file)
    } else {
        ("private_key_file", &key.private_key_file)
    };
    let pem = std::fs::read(file)
        .with_context(|| format!("key {}: reading {field} {file:?}", key.kid))?;
    Ok(match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => (algorithm, Material::Ec(pem)),
        Algorithm::EdDSA => (algorithm, Material::Ed(pem)),
        _ => (algorithm, Material::Rsa(pem)),
    })
}

/// Reads one configured verification key.
fn decoding_key(key: &JwtKeyConfig) -> anyhow::Result<JwtKey> {
    let (algorithm, material) = material(key, true)?;
    let decoding = match material {
        Material::Hmac(secret) => Ok(DecodingKey::from_secret(secret.as_bytes())),
        Material::Rsa(pem) => DecodingKey::from_rsa_pem(&pem),
        Material::Ec(pem) => DecodingKey::from_ec_pem(&pem),
        Material::Ed(pem) => DecodingKey::from_ed_pem(&pem),
    }
    .with_context(|| format!("key {}: bad public key", key.kid))?;
    Ok(JwtKey {
        kid: key.kid.clone(),
        algorithm,
        key: decoding,
    })
}

fn hmac_secret(key: &JwtKeyConfig) -> anyhow::Result<String> {
    if !key.secret.is_empty() {
        return Ok(key.secret.expose().to_owned());
    }
    if !key.secret_env.is_empty() {
        return std::env::var(&key.secret_env)
            .with_context(|| format!("key {}: env {} is not set", key.kid, key.secret_env));
    }
    bail!("key {}: HMAC keys need secret or secret_env", key.kid)
}

/// The signing key for `callgate token`, and its algorithm.
pub fn encoding_key(key: &JwtKeyConfig) -> anyhow::Result<(EncodingKey, Algorithm)> {
    let (algorithm, material) = material(key, false)?;
    let encoding = match material {
        Material::Hmac(secret) => Ok(EncodingKey::from_secret(secret.as_bytes())),
        Material::Rsa(pem) => EncodingKey::from_rsa_pem(&pem),
        Material::Ec(pem) => EncodingKey::from_ec_pem(&pem),
        Material::Ed(pem) => EncodingKey::from_ed_pem(&pem),
    }
    .with_context(|| format!("key {}: bad private key", key.kid))?;
    Ok((encoding, algorithm))
}

/// A JWT in `start.customParameters`, checked (and bound to the call) before the upstream
/// opens; the call's cap permit is taken here, once the tenant is known.
#[derive(Debug)]
struct StartToken {
    verifier: Arc<JwtVerifier>,
    caps: Arc<CallCaps>,
    parameter: String,
}

impl StartAuth for StartToken {
    fn admit<'a>(&'a self, start: &'a Start) -> Pending<'a, Result<StartAdmission, StartRejected>> {
        Box::pin(async move {
            let token = start
                .custom_parameters
                .get(&self.parameter)
                .ok_or(StartRejected::Unauthorized)?;
            let refused = |error: callgate_layers::http::auth::AuthError| {
                tracing::info!(%error, "start token refused");
                match error {
                    callgate_layers::http::auth::AuthError::Unavailable => {
                        StartRejected::Overloaded
                    }
                    _ => StartRejected::Unauthorized,
                }
            };
            let claims = self
                .verifier
                .verify_for_call(token, &start.call_sid)
                .map_err(refused)?;
            self.verifier.spend(&claims).await.map_err(refused)?;
            let permit =
                self.caps
                    .acquire(claims.tenant.as_deref())
                    .await
                    .map_err(|cap: CapExceeded| {
                        tracing::warn!(%cap, "call refused");
                        StartRejected::Overloaded
                    })?;
            Ok(StartAdmission {
                identity: CallIdentity {
                    tenant: claims.tenant,
                    subject: claims.sub,
                },
                hold: Some(Box::new(permit)),
            })
        })
    }

    fn parameter(&self) -> &str {
        &self.parameter
    }
}
