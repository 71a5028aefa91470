//! Who is calling: bearer tokens (API keys or OIDC JWTs) turned into callers and, per
//! organization, into core [`aicd_core::tenancy::Actor`]s.

mod extract;
pub(crate) mod jwt;

pub(crate) use extract::{Auth, Authenticator, Caller, OrgScope};
