//! Token validation: HS256 with a shared secret (development) or RS256/ES256 against an
//! OIDC issuer's JWKS (production, e.g. Entra ID).

use std::collections::BTreeSet;
use std::sync::Arc;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::Principal;
use super::jwks::JwksClient;
use super::verified::VerifiedTokens;
use crate::config::{AuthMode, AuthSettings};

/// Claims we read. `scp`/`scope` are space separated (Entra delegated and OAuth style);
/// `roles` is Entra's application permission list.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// What we read back from a validated token; `aud` may be a string or a list.
#[derive(Debug, Deserialize)]
struct ValidatedClaims {
    sub: String,
    /// Checked by `jsonwebtoken`; kept to know how long the token may be remembered.
    exp: u64,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl ValidatedClaims {
    fn into_principal(self) -> Principal {
        let mut scopes = BTreeSet::new();
        for list in [self.scp, self.scope].into_iter().flatten() {
            scopes.extend(list.split_whitespace().map(str::to_owned));
        }
        scopes.extend(self.roles);
        Principal {
            subject: self.sub,
            scopes,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signature key is unknown")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another audience")]
    Audience,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token lacks a required claim: {0}")]
    MissingClaim(String),
    #[error("the signing keys could not be fetched")]
    KeysUnavailable,
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        _ => AuthError::Malformed,
    }
}

enum Keys {
    Shared(DecodingKey),
    Jwks(JwksClient),
}

/// Validates bearer tokens according to the service's auth settings. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<Keys>,
    /// Built once: what a token of each accepted algorithm is checked against.
    validations: Arc<Validations>,
    verified: Arc<VerifiedTokens>,
    leeway_seconds: u64,
}

struct Validations {
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

impl Validations {
    fn new(settings: &AuthSettings) -> Self {
        let build = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = settings.leeway_seconds;
            validation.validate_nbf = true;
            validation.set_audience(&[&settings.audience]);
            validation.set_issuer(&[&settings.issuer]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation
        };
        Self {
            hs256: build(Algorithm::HS256),
            rs256: build(Algorithm::RS256),
            es256: build(Algorithm::ES256),
        }
    }

    fn for_algorithm(&self, algorithm: Algorithm) -> Result<&Validation, AuthError> {
        match algorithm {
            Algorithm::HS256 => Ok(&self.hs256),
            Algorithm::RS256 => Ok(&self.rs256),
            Algorithm::ES256 => Ok(&self.es256),
            _ => Err(AuthError::Algorithm),
        }
    }
}

impl Authenticator {
    /// HS256 with the given secret.
    pub fn hs256(secret: &SecretString, settings: &AuthSettings) -> Self {
        Self {
            keys: Arc::new(Keys::Shared(DecodingKey::from_secret(
                secret.expose_secret().as_bytes(),
            ))),
            validations: Arc::new(Validations::new(settings)),
            verified: Arc::new(VerifiedTokens::new()),
            leeway_seconds: settings.leeway_seconds,
        }
    }

    /// RS256/ES256 against the issuer's JWKS.
    pub fn oidc(jwks: JwksClient, settings: &AuthSettings) -> Self {
        Self {
            keys: Arc::new(Keys::Jwks(jwks)),
            validations: Arc::new(Validations::new(settings)),
            verified: Arc::new(VerifiedTokens::new()),
            leeway_seconds: settings.leeway_seconds,
        }
    }

    /// Builds the authenticator the settings ask for; `dev_secret` is used in HS256 mode
    /// when no secret is configured.
    pub fn from_settings(
        settings: &AuthSettings,
        dev_secret: impl FnOnce() -> Result<SecretString, super::DevSecretError>,
    ) -> Result<Self, super::DevSecretError> {
        match settings.mode {
            AuthMode::Hs256 => {
                let secret = match &settings.hs256_secret {
                    Some(secret) => secret.clone(),
                    None => dev_secret()?,
                };
                Ok(Self::hs256(&secret, settings))
            }
            AuthMode::Oidc => Ok(Self::oidc(JwksClient::for_settings(settings), settings)),
        }
    }

    /// The token's principal: from the tokens verified before while the token is good,
    /// else by checking it (and remembering it until it expires).
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal.as_ref().clone());
        }
        let (principal, exp) = self.verify(token).await?;
        let principal = Arc::new(principal);
        let good_until = exp.saturating_add(self.leeway_seconds);
        self.verified.put(token, principal.clone(), good_until, now);
        Ok(Arc::unwrap_or_clone(principal))
    }

    async fn verify(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        // decode_header refuses `alg: none`: it is not an algorithm jsonwebtoken knows.
        let header = decode_header(token).map_err(map_jwt_error)?;
        let data = match self.keys.as_ref() {
            Keys::Shared(key) => {
                // Only HS256: an asymmetric algorithm here would be algorithm confusion.
                if header.alg != Algorithm::HS256 {
                    return Err(AuthError::Algorithm);
                }
                decode::<ValidatedClaims>(token, key, &self.validations.hs256)
            }
            Keys::Jwks(jwks) => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(AuthError::Algorithm);
                }
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                let key = jwks.key_for(kid, header.alg).await?;
                decode::<ValidatedClaims>(token, &key, self.validations.for_algorithm(header.alg)?)
            }
        }
        .map_err(map_jwt_error)?;
        if data.claims.sub.trim().is_empty() {
            return Err(AuthError::MissingClaim("sub".into()));
        }
        let exp = data.claims.exp;
        Ok((data.claims.into_principal(), exp))
    }
}

/// Signs a development token with the HS256 secret; used by `platform token` and tests.
pub fn mint_dev_token(
    secret: &SecretString,
    settings: &AuthSettings,
    subject: &str,
    scopes: &str,
    ttl_seconds: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: subject.to_owned(),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        exp: now + ttl_seconds,
        nbf: Some(now),
        iat: Some(now),
        scp: Some(scopes.to_owned()),
        scope: None,
        roles: Vec::new(),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}
