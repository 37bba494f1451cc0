//! The credentials Berth hands out to a caller it authenticated: the `docker login` password
//! (ECR's GetAuthorizationToken) and Docker bearer tokens (`/token`). A token says who holds
//! it; what the holder may do is decided on every request, from the policies in force then.

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, Result};
use crate::tokens::Scope;

domain! {
    /// Login passwords and bearer tokens.
    Logins
}

impl Logins<'_> {
    /// GetAuthorizationToken: a `docker login` password for the caller, valid 12 hours (never
    /// beyond the caller's own temporary credentials). Returns it with its expiry (Unix seconds).
    pub async fn authorization_token(&self, caller: &Caller, registry: &str) -> Result<(String, i64)> {
        Access(self.0).check_registry(caller, "ecr:GetAuthorizationToken", registry).await?;
        let p = caller
            .principal
            .as_ref()
            .ok_or_else(|| Error::unauthenticated("a login password is issued to a signed-in caller only".into()))?;
        Ok(self.auth().issue_login(p))
    }

    /// A Docker bearer token for the caller (anonymous too), carrying the parts of `requested`
    /// its policies allow now (for clients that read them; requests are decided afresh all the
    /// same). Repository scopes name repository keys. Returns the token and its lifetime (s).
    pub async fn bearer_token(&self, caller: &Caller, requested: Vec<Scope>, not_after: i64) -> Result<(String, i64)> {
        let mut granted = Vec::new();
        for s in requested {
            if let Some(g) = Access(self.0).grant(caller, s).await? {
                granted.push(g);
            }
        }
        Ok(self.auth().issue_bearer(caller.principal.as_ref(), granted, not_after))
    }
}
