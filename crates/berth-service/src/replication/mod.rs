//! Replication to other registries: ECR's replication configuration (rules of destinations with
//! `PREFIX_MATCH` repository filters), the peers they name (from the configuration file: another
//! Berth or ECR by region and registry id, or any OCI registry by URL), the status of each image
//! at each destination, and on-demand replication of images already stored.
//!
//! Every manifest stored and every tag moved (by any path but replication itself) is read from
//! the outbox ([`ReplicateOnPush`]) and becomes one job per matching destination, run by
//! [`ReplicationWorker`]s on any node ([`copy`] does the pushing). Jobs of one tag at one
//! destination never overlap and the newest runs last, so a destination ends at the newest tag.
//! Deletes are not replicated (as in ECR).

pub mod copy;
mod worker;

use berth_core::RepoName;
use serde::{Deserialize, Serialize};

pub use crate::model::{Peer, PeerKind};
pub use worker::{ReplicateOnPush, ReplicationWorker};

use crate::access::Access;
use crate::caller::Caller;
use crate::core::domain;
use crate::error::{Error, NotFound, Result};
use crate::model::{ImageId, valid_region, valid_registry_id};

pub(crate) const REPLICATION_QUEUE: &str = "replication";
const CONFIG: &str = "replication_configuration";
/// ECR's limits: 10 rules, 25 distinct destinations over all of them, 100 filters per rule.
const MAX_RULES: usize = 10;
const MAX_DESTINATIONS: usize = 25;
const MAX_FILTERS: usize = 100;

/// ECR's replication configuration (stored as this JSON; ECR's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationConfiguration {
    pub rules: Vec<ReplicationRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    pub destinations: Vec<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_filters: Vec<RepositoryFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub region: String,
    pub registry_id: String,
}

impl Destination {
    pub fn key(&self) -> String {
        format!("{}/{}", self.region, self.registry_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFilter {
    pub filter: String,
    pub filter_type: String,
}

/// ECR's filter pattern: `^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$`, 2 to 256.
fn valid_prefix_filter(f: &str) -> bool {
    let word_ok = |w: &str| {
        let b = w.as_bytes();
        b.first().is_none_or(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
    };
    let parts: Vec<&str> = f.split('/').collect();
    (2..=256).contains(&f.len())
        && word_ok(parts[parts.len() - 1])
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && word_ok(p))
}

impl ReplicationConfiguration {
    /// ECR's rules, and Berth's: every destination is a configured peer and not this registry
    /// in this region.
    pub fn validate(&self, region: &str, registry_id: &str, peers: &[Peer]) -> Result<()> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::validation(format!(
                "replicationConfiguration.rules: at most {MAX_RULES} rules, not {}",
                self.rules.len()
            )));
        }
        let mut all = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.destinations.is_empty() {
                return Err(Error::validation(format!("rules[{i}].destinations: a rule has at least one destination")));
            }
            if r.repository_filters.len() > MAX_FILTERS {
                return Err(Error::validation(format!("rules[{i}].repositoryFilters: at most {MAX_FILTERS} filters")));
            }
            for f in &r.repository_filters {
                if f.filter_type != "PREFIX_MATCH" {
                    return Err(Error::validation(format!(
                        "rules[{i}].repositoryFilters.filterType must be PREFIX_MATCH, not {:?}",
                        f.filter_type
                    )));
                }
                if !valid_prefix_filter(&f.filter) {
                    return Err(Error::validation(format!(
                        "rules[{i}].repositoryFilters.filter {:?}: 2 to 256 characters, a repository name prefix \
                         (lowercase letters, digits, . _ - and /)",
                        f.filter
                    )));
                }
            }
            for d in &r.destinations {
                if !valid_region(&d.region) {
                    return Err(Error::validation(format!(
                        "rules[{i}].destinations.region {:?}: 2 to 25 lowercase letters, digits and '-'",
                        d.region
                    )));
                }
                if !valid_registry_id(&d.registry_id) {
                    return Err(Error::validation(format!(
                        "rules[{i}].destinations.registryId {:?}: 12 digits",
                        d.registry_id
                    )));
                }
                if d.region == region && d.registry_id == registry_id {
                    return Err(Error::parameter(
                        "destinations",
                        format!(
                            "{}/{} is this registry: a destination is another region or another registry",
                            d.region, d.registry_id
                        ),
                    ));
                }
                if !peers.iter().any(|p| p.region == d.region && p.registry_id == d.registry_id) {
                    return Err(Error::parameter(
                        "destinations",
                        format!(
                            "no peer is configured for region {} registry {}: add a [[peers]] table for it to the \
                             configuration file (see docs/REPLICATION.md){}",
                            d.region,
                            d.registry_id,
                            if peers.is_empty() {
                                String::new()
                            } else {
                                format!("; configured: {}", peers.iter().map(Peer::key).collect::<Vec<_>>().join(", "))
                            }
                        ),
                    ));
                }
                if !all.contains(d) {
                    all.push(d.clone());
                }
            }
        }
        if all.len() > MAX_DESTINATIONS {
            return Err(Error::validation(format!(
                "at most {MAX_DESTINATIONS} distinct destinations over all rules, not {}",
                all.len()
            )));
        }
        Ok(())
    }

    /// The destinations of the rules whose filters match repository `name` (a rule without
    /// filters matches every repository), each once.
    pub fn destinations_for(&self, name: &str) -> Vec<Destination> {
        let mut out: Vec<Destination> = Vec::new();
        for r in &self.rules {
            if r.repository_filters.is_empty() || r.repository_filters.iter().any(|f| name.starts_with(&f.filter)) {
                for d in &r.destinations {
                    if !out.contains(d) {
                        out.push(d.clone());
                    }
                }
            }
        }
        out
    }
}

/// One image at one destination (DescribeImageReplicationStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub region: String,
    pub registry_id: String,
    /// `IN_PROGRESS`, `COMPLETE` or `FAILED`.
    pub status: String,
    pub failure_code: Option<String>,
}

/// Which images of a repository to replicate on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Images {
    Tag(String),
    Digest(String),
    All,
}

/// A replication queued on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub digest: String,
    pub tag: Option<String>,
    pub destination: Destination,
}

/// A job's payload: the image (by tag, or by digest alone) and the destination's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Job {
    pub dest: String,
    pub repo: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Job {
    /// One job per tag (a later move replaces an earlier one not yet run) or per untagged image.
    fn unique_key(&self) -> String {
        match &self.tag {
            Some(t) => format!("replicate:{}:{}:{t}", self.dest, self.repo),
            None => format!("replicate:{}:{}@{}", self.dest, self.repo, self.digest),
        }
    }
}

domain! {
    /// Replication: its configuration, the statuses, and replication on demand.
    Replication
}

impl<'a> Replication<'a> {
    fn access(&self) -> Access<'a> {
        Access(self.0)
    }

    pub(crate) fn peer(&self, key: &str) -> Option<&'a Peer> {
        self.0.settings.peers.iter().find(|p| p.key() == key)
    }

    pub(crate) async fn stored(&self) -> Result<ReplicationConfiguration> {
        match self.meta.setting(CONFIG).await? {
            Some(s) => {
                serde_json::from_str(&s).map_err(|e| Error::Internal(format!("stored replication configuration: {e}")))
            }
            None => Ok(ReplicationConfiguration::default()),
        }
    }

    /// PutReplicationConfiguration.
    pub async fn put_configuration(
        &self,
        caller: &Caller,
        registry: &str,
        config: ReplicationConfiguration,
    ) -> Result<ReplicationConfiguration> {
        self.access().check_registry(caller, "ecr:PutReplicationConfiguration", registry).await?;
        let s = &self.settings;
        config.validate(&s.region, &s.registry_id, &s.peers)?;
        let json = serde_json::to_string(&config).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta.put_setting(CONFIG, &json).await?;
        Ok(config)
    }

    /// The replication configuration (DescribeRegistry shows it).
    pub async fn configuration(&self, caller: &Caller, registry: &str) -> Result<ReplicationConfiguration> {
        self.access().check_registry(caller, "ecr:DescribeRegistry", registry).await?;
        self.stored().await
    }

    /// The destinations repository `name` replicates to now. Read from the database each time:
    /// only background work and on-demand requests ask, never a client's request path.
    pub(crate) async fn destinations_for(&self, name: &str) -> Result<Vec<Destination>> {
        Ok(self.stored().await?.destinations_for(name))
    }

    /// DescribeImageReplicationStatus: the image's digest and its status at each destination
    /// it was queued for.
    pub async fn image_statuses(
        &self,
        caller: &Caller,
        repo: &RepoName,
        id: &ImageId,
    ) -> Result<(String, Vec<ReplicationStatus>)> {
        self.access().check(caller, "ecr:DescribeImageReplicationStatus", repo.as_str()).await?;
        let digest = crate::content::Content(self.0).image_digest(repo.as_str(), id).await?;
        let rows = self.meta.replication_statuses(repo.as_str(), &digest).await?;
        let statuses = rows
            .into_iter()
            .map(|r| ReplicationStatus {
                region: r.region,
                registry_id: r.registry_id,
                status: r.status,
                failure_code: r.failure_code,
            })
            .collect();
        Ok((digest, statuses))
    }

    /// Queues replication of image `digest` (by `tag`, when given) to `dest`, due after `delay_ms`.
    pub(crate) async fn queue(
        &self,
        dest: &Destination,
        repo: &RepoName,
        digest: &str,
        tag: Option<&str>,
        delay_ms: i64,
    ) -> Result<()> {
        let job = Job {
            dest: dest.key(),
            repo: repo.as_str().to_string(),
            digest: digest.to_string(),
            tag: tag.map(str::to_string),
        };
        let payload = serde_json::to_string(&job).map_err(|e| Error::Internal(e.to_string()))?;
        self.meta
            .set_replication_status(repo.as_str(), digest, &dest.region, &dest.registry_id, "IN_PROGRESS", None)
            .await?;
        self.meta
            .enqueue_behind(REPLICATION_QUEUE, &job.unique_key(), &payload, berth_meta::now_ms() + delay_ms)
            .await?;
        self.replication_wake.notify_waiters();
        Ok(())
    }

    /// Replication on demand (`berth replicate`, and the ECR endpoint's StartImageReplication):
    /// queues the same jobs a push would for images already stored: to `destination` (a region,
    /// any configured peer there), else to every destination the rules give the repository.
    pub async fn start(
        &self,
        caller: &Caller,
        repo: &RepoName,
        images: &Images,
        destination: Option<&str>,
    ) -> Result<Vec<Queued>> {
        self.access().check(caller, "ecr:ReplicateImage", repo.as_str()).await?;
        let row =
            self.meta.get_repo(repo.as_str()).await?.ok_or_else(|| NotFound::Repository { key: repo.to_string() })?;
        let dests: Vec<Destination> = match destination {
            Some(region) => {
                let found: Vec<Destination> = self
                    .settings
                    .peers
                    .iter()
                    .filter(|p| p.region == region)
                    .map(|p| Destination { region: p.region.clone(), registry_id: p.registry_id.clone() })
                    .collect();
                if found.is_empty() {
                    return Err(Error::parameter(
                        "destination",
                        format!("no peer is configured for region {region} (see docs/REPLICATION.md)"),
                    ));
                }
                found
            }
            None => {
                let d = self.destinations_for(repo.name()).await?;
                if d.is_empty() {
                    return Err(Error::parameter(
                        "destination",
                        format!(
                            "no replication rule matches repository {}: add one (aws ecr put-replication-configuration) \
                             or name a destination",
                            repo.name()
                        ),
                    ));
                }
                d
            }
        };
        // (digest, tag): a tagged image once per tag, an untagged one by digest.
        let mut ids: Vec<(String, Option<String>)> = Vec::new();
        match images {
            Images::Tag(t) => {
                let d = self.meta.tag_digest(row.id, t).await?.ok_or_else(|| NotFound::Image {
                    key: repo.to_string(),
                    digest: None,
                    tag: Some(t.clone()),
                    reason: "no such tag".into(),
                })?;
                ids.push((d, Some(t.clone())));
            }
            Images::Digest(d) => {
                let img = self.meta.image(row.id, d).await?.ok_or_else(|| NotFound::Image {
                    key: repo.to_string(),
                    digest: Some(d.clone()),
                    tag: None,
                    reason: "no such image".into(),
                })?;
                if img.tags.is_empty() {
                    ids.push((img.digest, None));
                }
                for t in img.tags {
                    ids.push((d.clone(), Some(t)));
                }
            }
            Images::All => {
                let mut after: Option<(String, String)> = None;
                loop {
                    let page = self
                        .meta
                        .list_image_ids(
                            row.id,
                            berth_meta::TagStatus::Any,
                            after.as_ref().map(|(d, t)| (d.as_str(), t.as_str())),
                            1000,
                        )
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some((last.0.clone(), last.1.clone().unwrap_or_default()));
                    for (d, t) in page {
                        // Children of an index and referrers travel with what they belong to.
                        if t.is_none() && self.meta.is_child_manifest(row.id, &d).await? {
                            continue;
                        }
                        ids.push((d, t));
                    }
                }
            }
        }
        let mut queued = Vec::new();
        for dest in &dests {
            for (digest, tag) in &ids {
                self.queue(dest, repo, digest, tag.as_deref(), 0).await?;
                queued.push(Queued { digest: digest.clone(), tag: tag.clone(), destination: dest.clone() });
            }
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(region: &str) -> Peer {
        Peer {
            region: region.into(),
            registry_id: "111111111111".into(),
            url: "http://127.0.0.1:1".into(),
            kind: PeerKind::Ecr,
            credentials_file: None,
            username_file: None,
            password_file: None,
        }
    }

    fn rule(dests: &[&str], filters: &[&str]) -> ReplicationRule {
        ReplicationRule {
            destinations: dests
                .iter()
                .map(|r| Destination { region: r.to_string(), registry_id: "111111111111".into() })
                .collect(),
            repository_filters: filters
                .iter()
                .map(|f| RepositoryFilter { filter: f.to_string(), filter_type: "PREFIX_MATCH".into() })
                .collect(),
        }
    }

    #[test]
    fn destinations_by_prefix_each_once() {
        let c = ReplicationConfiguration {
            rules: vec![
                rule(&["eu-west-1"], &["team/"]),
                rule(&["eu-west-1", "ap-south-1"], &["team/app"]),
                rule(&["us-west-2"], &[]),
            ],
        };
        let keys = |n: &str| c.destinations_for(n).iter().map(|d| d.region.clone()).collect::<Vec<_>>();
        assert_eq!(keys("team/app"), ["eu-west-1", "ap-south-1", "us-west-2"]);
        assert_eq!(keys("team/web"), ["eu-west-1", "us-west-2"]);
        assert_eq!(keys("other"), ["us-west-2"], "a rule without filters matches everything");
    }

    #[test]
    fn validation_follows_ecr_and_names_the_peer_to_add() {
        let peers = [peer("eu-west-1")];
        let ok = ReplicationConfiguration { rules: vec![rule(&["eu-west-1"], &["team"])] };
        ok.validate("us-east-1", "111111111111", &peers).unwrap();
        let e = ReplicationConfiguration { rules: vec![rule(&["ap-south-1"], &[])] }
            .validate("us-east-1", "111111111111", &peers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no peer is configured for region ap-south-1") && e.contains("eu-west-1/111111111111"),
            "{e}"
        );
        let e = ok.validate("eu-west-1", "111111111111", &peers).unwrap_err().to_string();
        assert!(e.contains("is this registry"), "{e}");
        let mut bad = ok.clone();
        bad.rules[0].repository_filters[0].filter_type = "WILDCARD".into();
        assert!(bad.validate("us-east-1", "1", &peers).unwrap_err().to_string().contains("PREFIX_MATCH"));
        let too_many = ReplicationConfiguration { rules: vec![rule(&["eu-west-1"], &[]); 11] };
        assert!(too_many.validate("us-east-1", "1", &peers).unwrap_err().to_string().contains("at most 10 rules"));
        let empty = ReplicationConfiguration { rules: vec![rule(&[], &[])] };
        assert!(empty.validate("us-east-1", "1", &peers).is_err());
        for f in ["a", "Team", "team//x", "-x", "/x"] {
            assert!(!valid_prefix_filter(f), "{f}");
        }
        for f in ["te", "team/", "team/app", "a.b-c_d/x"] {
            assert!(valid_prefix_filter(f), "{f}");
        }
        // ECR's empty configuration (how Terraform deletes one) is valid.
        ReplicationConfiguration::default().validate("us-east-1", "1", &[]).unwrap();
    }

    #[test]
    fn peers_check_their_description() {
        let mut p = peer("eu-west-1");
        p.check().unwrap();
        p.registry_id = "12".into();
        assert!(p.check().unwrap_err().contains("12 digits"));
        let mut p = peer("EU");
        assert!(p.check().unwrap_err().contains("region"));
        p = peer("eu-west-1");
        p.url = "127.0.0.1:5000".into();
        assert!(p.check().unwrap_err().contains("url"));
        p = peer("eu-west-1");
        p.credentials_file = Some("/nonexistent/creds".into());
        assert!(p.check().unwrap_err().contains("does not exist"));
        p = peer("eu-west-1");
        p.kind = PeerKind::Oci;
        p.username_file = Some("/etc/hostname".into());
        assert!(p.check().unwrap_err().contains("both"));
    }

    #[test]
    fn one_job_per_tag_and_per_untagged_image() {
        let j = Job { dest: "eu-west-1/1".into(), repo: "a".into(), digest: "sha256:1".into(), tag: Some("v1".into()) };
        let j2 = Job { digest: "sha256:2".into(), ..j.clone() };
        assert_eq!(j.unique_key(), j2.unique_key(), "a later move of the tag replaces the earlier job");
        let u = Job { tag: None, ..j.clone() };
        assert_ne!(u.unique_key(), Job { tag: None, ..j2 }.unique_key());
    }
}
