//! Configuration: built-in defaults, then a TOML file, then `BERTH_*` environment variables,
//! then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding blobs, uploads and (by default) the SQLite database.
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://PATH` or `postgres://USER@HOST/DB`.
    /// Default: SQLite at `<data_dir>/berth.db`.
    pub database_url: Option<String>,
    /// Log filter, as in `RUST_LOG` (`info`, `debug`, `berth_api=debug`, ...).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid default address"),
            data_dir: PathBuf::from("berth-data"),
            database_url: None,
            log: "info".into(),
        }
    }
}

/// Values given on the command line; unset ones do not override.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

pub const ENV_KEYS: [&str; 4] = ["listen", "data_dir", "database_url", "log"];

pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, String> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(f) = file {
        if !f.exists() {
            return Err(format!("config file {} does not exist", f.display()));
        }
        fig = fig.merge(Toml::file(f));
    }
    fig.merge(Env::prefixed("BERTH_").only(&ENV_KEYS))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| format!("invalid configuration: {e}"))
}

impl Config {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("berth.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.toml", "listen = \"127.0.0.1:6000\"\ndata_dir = \"/from-file\"\nlog = \"debug\"")?;
            jail.set_env("BERTH_DATA_DIR", "/from-env");
            let c =
                load(Some(Path::new("b.toml")), Overrides { log: Some("warn".into()), ..Default::default() }).unwrap();
            assert_eq!(c.listen.port(), 6000);
            assert_eq!(c.data_dir, PathBuf::from("/from-env"));
            assert_eq!(c.log, "warn");
            assert_eq!(c.database_url(), "sqlite:///from-env/berth.db");
            jail.create_file("bad.toml", "listne = \"x\"")?;
            assert!(load(Some(Path::new("bad.toml")), Overrides::default()).unwrap_err().contains("listne"));
            assert!(load(Some(Path::new("missing.toml")), Overrides::default()).is_err());
            Ok(())
        });
    }
}
