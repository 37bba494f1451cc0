//! Image scanning (issue 7, in progress; not yet wired into the registry). So far: reading layers
//! with whiteouts (`layers`), package inventories (`inventory`), the version order of each
//! ecosystem (`version`: dpkg, apk, RPM, PEP 440, semver, Go), OSV range evaluation (`osv`),
//! matching an inventory against OSV records (`matcher`) and CVSS v3 base scores (`cvss`).
//! Matching is only ever done within one ecosystem, with its own order.

pub mod binaries;
pub mod cvss;
pub mod inventory;
pub mod java;
pub mod layers;
pub mod matcher;
pub mod osv;
pub mod rpm;
pub mod sbom;
mod sqlite;
pub mod version;
