//! Berth's pure domain rules. No I/O, no async: everything here is a function of its inputs.

pub mod digest;
pub mod lifecycle;
pub mod manifest;
pub mod media;
pub mod name;
pub mod policy;
pub mod time;
pub mod wildcard;

pub use digest::{Algorithm, Digest, DigestError};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest, parse_manifest};
pub use name::{NameError, Reference, RepoName, Tag, repo_key, split_repo_key};
