//! The registry service: every use case, independent of any protocol. `berth-api` translates
//! OCI, ECR, IAM and STS requests into these calls and their errors into protocol errors; the
//! console calls the same functions and so gets the same decisions.
//!
//! [`Registry`] is a thin façade over the domains, each a handle over one shared [`Core`] in
//! its own module, calling only domains below it: [`content`] (blobs, uploads, manifests, tags)
//! and [`images`] (ECR's image operations) over [`repositories`] and [`templates`]; [`scanning`]
//! and [`lifecycle`]; [`access`] decides every call for the [`Caller`] it is given, from the
//! identities [`identity`] resolves; [`iam`]; [`gc`]; [`events`] (consumers of the outbox) and
//! [`jobs`] (workers and leases), started by [`background`].

pub mod access;
mod audit;
pub mod background;
mod cache;
mod cache_bus;
pub mod caller;
pub mod content;
pub mod core;
pub mod encryption;
pub mod error;
pub mod events;
mod flight;
pub mod fsck;
pub mod gc;
pub mod health;
pub mod iam;
pub mod identity;
pub mod images;
pub mod jobs;
pub mod kms;
pub mod lifecycle;
pub mod logins;
mod metrics;
pub mod model;
mod peers;
pub mod pull_through;
pub mod replication;
pub mod repo_settings;
pub mod repositories;
pub mod scan_config;
pub mod scan_policy;
pub mod scanning;
mod sealing;
pub mod secrets;
pub mod templates;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;

use berth_blob::BlobStore;
use berth_meta::Meta;

pub use crate::audit::AuditEvent;
pub use crate::background::Background;
pub use crate::caller::{AccessKey, Caller, Principal};
pub use crate::content::{BodyStream, Mount, UploadStatus};
pub use crate::core::{Core, Settings};
pub use crate::error::{Error, Result};
pub use crate::fsck::FsckReport;
pub use crate::jobs::Workers;
pub use crate::metrics::Counters;
pub use crate::model::*;
pub use crate::tokens::{Auth, Scope};

/// The registry service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Registry {
    core: Arc<Core>,
}

impl std::ops::Deref for Registry {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Registry {
    /// Opens the registry service over its stores: loads (or creates, once for all nodes) the
    /// token-signing key, and on first start adds the default creation template.
    pub async fn open(meta: Meta, blobs: Arc<dyn BlobStore>, settings: Settings, keys: Vec<AccessKey>) -> Result<Self> {
        let r = Registry { core: Arc::new(Core::open(meta, blobs, settings, keys).await?) };
        let _ = r.core.me.set(Arc::downgrade(&r.core));
        if r.meta.backend() == berth_meta::Backend::Postgres {
            let _ = r.core.bus.set(cache_bus::start(&r.core));
        }
        if r.meta.setting("templates_seeded").await?.is_none() {
            if r.settings.create_on_push {
                let t = templates::Template {
                    description: Some("Created by Berth: repositories are created on first push".into()),
                    applied_for: vec!["CREATE_ON_PUSH".into()],
                    image_tag_mutability: Some("MUTABLE".into()),
                    ..templates::Template::default()
                };
                let registry = r.settings.registry_id.clone();
                match r.templates().create_template(&Caller::operator(), &registry, "ROOT", t).await {
                    Ok(_) | Err(Error::AlreadyExists(error::Exists::Template { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            r.meta.put_setting("templates_seeded", "1").await?;
        }
        Ok(r)
    }

    pub fn content(&self) -> content::Content<'_> {
        content::Content(&self.core)
    }

    pub fn images(&self) -> images::Images<'_> {
        images::Images(&self.core)
    }

    pub fn repositories(&self) -> repositories::Repositories<'_> {
        repositories::Repositories(&self.core)
    }

    pub fn templates(&self) -> templates::Templates<'_> {
        templates::Templates(&self.core)
    }

    pub fn access(&self) -> access::Access<'_> {
        access::Access(&self.core)
    }

    pub fn identities(&self) -> identity::Identities<'_> {
        identity::Identities(&self.core)
    }

    pub fn logins(&self) -> logins::Logins<'_> {
        logins::Logins(&self.core)
    }

    pub fn iam(&self) -> iam::Iam<'_> {
        iam::Iam(&self.core)
    }

    pub fn scanning(&self) -> scanning::Scanning<'_> {
        scanning::Scanning(&self.core)
    }

    pub fn scan_config(&self) -> scan_config::ScanConfig<'_> {
        scan_config::ScanConfig(&self.core)
    }

    pub fn lifecycle(&self) -> lifecycle::Lifecycle<'_> {
        lifecycle::Lifecycle(&self.core)
    }

    pub fn gc(&self) -> gc::Gc<'_> {
        gc::Gc(&self.core)
    }

    pub fn kms(&self) -> kms::Kms<'_> {
        kms::Kms(&self.core)
    }

    pub fn encryption(&self) -> encryption::Encryption<'_> {
        encryption::Encryption(&self.core)
    }

    pub fn pull_through(&self) -> pull_through::PullThrough<'_> {
        pull_through::PullThrough(&self.core)
    }

    pub fn secrets(&self) -> secrets::Secrets<'_> {
        secrets::Secrets(&self.core)
    }

    pub fn replication(&self) -> replication::Replication<'_> {
        replication::Replication(&self.core)
    }

    pub fn health(&self) -> health::Health<'_> {
        health::Health(&self.core)
    }

    pub fn fsck(&self) -> fsck::Fsck<'_> {
        fsck::Fsck(&self.core)
    }

    /// Starts this node's background workers (see [`background`]).
    pub fn start_workers(&self, bg: &Background) -> Workers {
        background::start(&self.core, bg)
    }
}
