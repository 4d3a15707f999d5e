//! Authentication of WebSocket upgrades: JWT, Twilio signature, HTTP Basic, IP allow-list.
//!
//! Each route has one [`AuthMode`]. Success inserts [`Admitted`] into the request's
//! extensions; failure answers 401 (no or bad credentials) or 403 (address not allowed),
//! which the admission layer outside counts against the client's IP. Secrets are compared
//! in constant time and never logged.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::future::Either;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Request, StatusCode};
use ipnet::IpNet;
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::client_ip::ClientIp;
use super::limits::Pending;

/// Who the credentials say is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The tenant the call belongs to (caps and settings are per tenant).
    pub tenant: Option<String>,
    /// The subject (the token's `sub`, the Basic user name, ...).
    pub subject: Option<String>,
}

/// What the auth layer decided for an admitted upgrade.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The verified identity (empty when the route has no auth or defers to `start`).
    pub identity: Identity,
    /// The call must still present a token in `start.customParameters`.
    pub start_token: Option<Arc<JwtVerifier>>,
}

/// Why credentials were refused. The message is for logs; clients only see the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were presented.
    #[error("no credentials")]
    Missing,
    /// The token is not a well-formed JWT (this includes `alg: none`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token names a key we do not have.
    #[error("unknown key id")]
    UnknownKid,
    /// The token has no `kid` and several keys are configured.
    #[error("token has no kid")]
    MissingKid,
    /// The token's algorithm is not the one pinned for its key.
    #[error("algorithm not allowed for this key")]
    Algorithm,
    /// Signature, expiry, issuer, audience or a required claim failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A single-use token was presented twice.
    #[error("token already used")]
    Replayed,
    /// The token is bound to another call.
    #[error("token bound to another call")]
    WrongCall,
    /// The Twilio signature or Basic credentials do not match.
    #[error("bad signature or credentials")]
    BadSignature,
    /// The client address is not in the allow-list.
    #[error("address not allowed")]
    Forbidden,
    /// The shared single-use memory cannot be reached and the policy is to fail closed.
    #[error("single-use token memory unavailable")]
    Unavailable,
}

/// Twilio's `X-Twilio-Signature` over the configured public `wss://` URL (never the `Host`
/// header), accepting the URL with and without the default port and trailing slash, signed
/// with the primary or the secondary auth token.
pub struct TwilioSignature {
    tokens: Vec<Vec<u8>>,
    urls: Vec<String>,
}

impl std::fmt::Debug for TwilioSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSignature")
            .field("urls", &self.urls)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TwilioSignature {
    /// Signatures for `public_url` (e.g. `wss://gw.example.com/twilio`) with these tokens.
    pub fn new(public_url: &str, tokens: Vec<String>) -> Self {
        let base = public_url.trim_end_matches('/');
        let mut urls = Vec::new();
        let (scheme, rest) = base.split_once("://").unwrap_or(("wss", base));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let default_port = if scheme == "ws" { ":80" } else { ":443" };
        let bare = authority.strip_suffix(default_port).unwrap_or(authority);
        let authorities = if bare.contains(':') {
            vec![bare.to_owned()]
        } else {
            vec![bare.to_owned(), format!("{bare}{default_port}")]
        };
        for authority in authorities {
            let url = format!("{scheme}://{authority}{path}");
            urls.push(format!("{url}/"));
            urls.push(url);
        }
        Self {
            tokens: tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(String::into_bytes)
                .collect(),
            urls,
        }
    }

    /// True when `signature` (the header's base64) matches any accepted URL and token.
    pub fn verify(&self, signature: &str) -> bool {
        let Ok(signature) = B64.decode(signature.trim()) else {
            return false;
        };
        let mut ok = false;
        for token in &self.tokens {
            for url in &self.urls {
                let mut mac =
                    Hmac::<sha1::Sha1>::new_from_slice(token).expect("HMAC takes any key length");
                mac.update(url.as_bytes());
                // verify_slice compares in constant time; keep going so timing does not
                // reveal which variant matched.
                ok |= mac.verify_slice(&signature).is_ok();
            }
        }
        ok
    }

    /// The signature Twilio would send for `url` with `token` (tests and tools).
    pub fn sign(token: &str, url: &str) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
        mac.update(url.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }
}

/// HTTP Basic credentials (Exotel), compared in constant time.
pub struct BasicAuth {
    expected: Vec<u8>,
    user: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .finish()
    }
}

impl BasicAuth {
    /// Accept `user` with `password`.
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            expected: format!("{user}:{password}").into_bytes(),
            user: user.to_owned(),
        }
    }

    fn verify(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let encoded = value.strip_prefix("Basic ").ok_or(AuthError::Missing)?;
        let decoded = B64
            .decode(encoded.trim())
            .map_err(|_| AuthError::BadSignature)?;
        if bool::from(decoded.ct_eq(&self.expected)) {
            Ok(Identity {
                tenant: None,
                subject: Some(self.user.clone()),
            })
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Where a route looks for a JWT.
#[derive(Debug, Clone, Default)]
pub struct TokenSources {
    /// Query parameter name (opt-in: query strings end up in proxy logs).
    pub query: Option<String>,
    /// Accept the token in `start.customParameters` when no header carries one.
    pub start: bool,
}

/// A route's authentication.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No authentication.
    None,
    /// A JWT from `Authorization: Bearer`, `Sec-WebSocket-Protocol`, the query (opt-in) or
    /// `start` (opt-in).
    Jwt {
        /// The verifier.
        verifier: Arc<JwtVerifier>,
        /// Extra places to look.
        sources: TokenSources,
    },
    /// `X-Twilio-Signature`; with `call_token`, a JWT in `start` is required too (a
    /// signature is constant per URL, so on its own it can be replayed).
    TwilioSignature {
        /// The signature checker.
        signature: Arc<TwilioSignature>,
        /// The per-call token verifier, when required.
        call_token: Option<Arc<JwtVerifier>>,
    },
    /// HTTP Basic.
    Basic(Arc<BasicAuth>),
    /// Client address in one of these networks.
    IpAllowlist(Arc<Vec<IpNet>>),
}

/// Credentials that checked out; a single-use token among them is spent by
/// [`Checked::spend`] (which may ask the cluster).
#[derive(Debug)]
pub struct Checked {
    /// The decision, once spent.
    pub admitted: Admitted,
    token: Option<(Arc<JwtVerifier>, Claims)>,
}

impl Checked {
    /// Spends the token's `jti` (a replay is refused) and admits.
    pub async fn spend(self) -> Result<Admitted, AuthError> {
        if let Some((verifier, claims)) = &self.token {
            verifier.spend(claims).await?;
        }
        Ok(self.admitted)
    }
}

impl AuthMode {
    /// Checks an upgrade request's credentials (CPU only; see [`Checked::spend`]).
    pub fn authenticate<B>(&self, request: &Request<B>) -> Result<Checked, AuthError> {
        self.check(request)
            .map(|(admitted, token)| Checked { admitted, token })
    }

    #[allow(clippy::type_complexity)]
    fn check<B>(
        &self,
        request: &Request<B>,
    ) -> Result<(Admitted, Option<(Arc<JwtVerifier>, Claims)>), AuthError> {
        let headers = request.headers();
        let admitted = match self {
            Self::None => Admitted {
                identity: Identity::default(),
                start_token: None,
            },
            Self::Jwt { verifier, sources } => {
                match header_token(request, sources.query.as_deref()) {
                    Some(token) => {
                        let claims = verifier.verify(token)?;
                        let admitted = Admitted {
                            identity: Identity::from(&claims),
                            start_token: None,
                        };
                        return Ok((admitted, Some((verifier.clone(), claims))));
                    }
                    None if sources.start => Admitted {
                        identity: Identity::default(),
                        start_token: Some(verifier.clone()),
                    },
                    None => return Err(AuthError::Missing),
                }
            }
            Self::TwilioSignature {
                signature,
                call_token,
            } => {
                let header = headers
                    .get("x-twilio-signature")
                    .and_then(|v| v.to_str().ok())
                    .ok_or(AuthError::Missing)?;
                if !signature.verify(header) {
                    return Err(AuthError::BadSignature);
                }
                Admitted {
                    identity: Identity::default(),
                    start_token: call_token.clone(),
                }
            }
            Self::Basic(basic) => Admitted {
                identity: basic.verify(headers)?,
                start_token: None,
            },
            Self::IpAllowlist(nets) => {
                let ip: Option<IpAddr> = request.extensions().get::<ClientIp>().map(|c| c.0);
                match ip {
                    Some(ip) if nets.iter().any(|n| n.contains(&ip)) => Admitted {
                        identity: Identity::default(),
                        start_token: None,
                    },
                    _ => return Err(AuthError::Forbidden),
                }
            }
        };
        Ok((admitted, None))
    }
}

/// The JWT in `Authorization: Bearer`, in `Sec-WebSocket-Protocol` (an entry that looks like a
/// JWT; only the application protocol name is echoed back), or in the query parameter.
fn header_token<'a, B>(request: &'a Request<B>, query: Option<&str>) -> Option<&'a str> {
    let headers = request.headers();
    if let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(token.trim());
    }
    if let Some(token) = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| p.matches('.').count() == 2)
    {
        return Some(token);
    }
    super::query_param(request.uri().query()?, query?)
}

/// Applies [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    mode: AuthMode,
}

impl AuthLayer {
    /// Authenticate with `mode`.
    pub fn new(mode: AuthMode) -> Self {
        Self { mode }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            mode: self.mode.clone(),
        }
    }
}

/// Admits or refuses each request before the inner service sees it.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    mode: AuthMode,
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    B: Send + 'static,
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Pending<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let checked = match self.mode.authenticate(&request) {
            Ok(checked) => checked,
            Err(error) => return Either::Right(Box::pin(std::future::ready(Ok(refuse(error))))),
        };
        if checked.token.is_none() {
            request.extensions_mut().insert(checked.admitted);
            return Either::Left(self.inner.call(request));
        }
        // A single-use token: spend it (maybe in the cluster) before anything inside runs.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            match checked.spend().await {
                Ok(admitted) => {
                    request.extensions_mut().insert(admitted);
                    inner.call(request).await
                }
                Err(error) => Ok(refuse(error)),
            }
        }))
    }
}

/// 401 for bad credentials, 403 for an address not allowed (both counted against the client
/// address outside), 503 when the single-use memory is unreachable (not the client's fault).
fn refuse(error: AuthError) -> Response {
    let (status, reason, retry_after) = match error {
        AuthError::Forbidden => (StatusCode::FORBIDDEN, "forbidden", None),
        AuthError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            Some(std::time::Duration::from_secs(1)),
        ),
        _ => (StatusCode::UNAUTHORIZED, "unauthorized", None),
    };
    tracing::info!(%error, "credentials refused");
    super::admission::reject(status, reason, retry_after)
}

mod jwt;
pub use jwt::{Claims, JwtKey, JwtVerifier, LocalReplayGuard, ReplayGuard};

#[cfg(test)]
mod tests;
