//! Version ordering per ecosystem, as each ecosystem's own tools order versions. A vulnerability
//! range (`introduced`, `fixed`, `last_affected`) is only meaningful under the order of the
//! ecosystem it was written for, so every comparison names its ecosystem.

use std::cmp::Ordering;

mod apk;
mod dpkg;
mod maven;
mod pep440;
mod rpm;
mod semver;

pub use apk::compare as apk;
pub use dpkg::compare as dpkg;
pub use maven::compare as maven;
pub use pep440::compare as pep440;
pub use rpm::compare as rpm;
pub use semver::{compare as semver, compare_go as go};

/// The ecosystems Berth can order versions in (OSV's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    Debian,
    Ubuntu,
    Alpine,
    Rpm,
    PyPI,
    Npm,
    CratesIo,
    Go,
    Maven,
}

impl Ecosystem {
    /// From an OSV ecosystem name (`Debian:12` → Debian; the release is matched separately).
    pub fn from_osv(name: &str) -> Option<Ecosystem> {
        let base = name.split(':').next().unwrap_or(name);
        Some(match base {
            "Debian" => Ecosystem::Debian,
            "Ubuntu" => Ecosystem::Ubuntu,
            "Alpine" => Ecosystem::Alpine,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "openSUSE" | "SUSE" | "Mageia" => Ecosystem::Rpm,
            "PyPI" => Ecosystem::PyPI,
            "npm" => Ecosystem::Npm,
            "crates.io" => Ecosystem::CratesIo,
            "Go" => Ecosystem::Go,
            "Maven" => Ecosystem::Maven,
            _ => return None,
        })
    }

    /// Orders two versions; `None` if either is not a version of this ecosystem.
    pub fn compare(self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            Ecosystem::Debian | Ecosystem::Ubuntu => dpkg(a, b),
            Ecosystem::Alpine => apk(a, b),
            Ecosystem::Rpm => Some(rpm(a, b)),
            Ecosystem::PyPI => pep440(a, b),
            Ecosystem::Npm | Ecosystem::CratesIo => semver(a, b),
            Ecosystem::Go => go(a, b),
            Ecosystem::Maven => maven(a, b),
        }
    }
}

#[cfg(test)]
mod tests;
