//! Image scanning (issue 7). So far: the version order of each ecosystem a finding is matched in
//! (`version`): Debian's dpkg, Alpine's apk, RPM, Python's PEP 440, semver (npm, crates) and Go
//! module versions. Matching is only ever done within one ecosystem, with its own order.

pub mod osv;
pub mod version;
