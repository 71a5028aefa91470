//! Typed GitHub ids: an [`InstallationId`] can never be passed where a [`GithubRepoId`] is
//! expected, and both are checked positive once, where they enter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

macro_rules! github_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 1))]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            /// The id GitHub gave; [`Error::InvalidInput`] unless it is positive.
            pub fn new(id: i64) -> Result<Self> {
                if id > 0 {
                    Ok(Self(id))
                } else {
                    Err(Error::invalid(concat!($what, " must be a positive GitHub id")))
                }
            }

            /// The id as GitHub's JSON writes it (an unsigned number); [`Error::InvalidInput`]
            /// for 0 or a number too large to store.
            pub fn from_u64(id: u64) -> Result<Self> {
                i64::try_from(id).map_err(|_| Error::invalid(concat!($what, " is out of range"))).and_then(Self::new)
            }

            /// The id as stored.
            pub fn get(self) -> i64 {
                self.0
            }

            /// The id as GitHub's URLs and JSON write it.
            pub fn as_u64(self) -> u64 {
                // Positive by construction.
                self.0.unsigned_abs()
            }
        }

        impl TryFrom<i64> for $name {
            type Error = Error;
            fn try_from(id: i64) -> Result<Self> {
                Self::new(id)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::invalid(concat!($what, " must be a whole number")))
                    .and_then(Self::new)
            }
        }
    };
}

github_id!(
    /// Identifies an installation of the GitHub App (on one organization or user account).
    InstallationId,
    "installation_id"
);
github_id!(
    /// GitHub's numeric id of a repository (stable across renames and transfers).
    GithubRepoId,
    "repository id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_round_trip() {
        assert_eq!(InstallationId::new(42).unwrap().get(), 42);
        assert!(InstallationId::new(0).is_err() && InstallationId::new(-1).is_err());
        assert!(GithubRepoId::from_u64(u64::MAX).is_err());
        assert_eq!("42".parse::<GithubRepoId>().unwrap().as_u64(), 42);
        assert!("x".parse::<GithubRepoId>().is_err());
        let id = InstallationId::new(7).unwrap();
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::json!(7));
        assert_eq!(serde_json::from_value::<InstallationId>(serde_json::json!(7)).unwrap(), id);
        assert!(serde_json::from_value::<InstallationId>(serde_json::json!(0)).is_err());
    }
}
