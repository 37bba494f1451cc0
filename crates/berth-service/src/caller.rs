//! Who is asking: the argument every service entry point decides by. A [`Caller`] is what the
//! API layer established about a request (an authenticated principal or nobody, where from,
//! over what); what it may do is decided by [`crate::access`] on each call, from the policies
//! in force then.

use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    /// The principal's ARN, e.g. `arn:aws:iam::000000000000:root`.
    pub principal: String,
}

impl AccessKey {
    /// A new random key pair shaped like AWS's (`AKIA` + 16, 40-character secret).
    pub fn generate(principal: String) -> AccessKey {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        AccessKey {
            id: format!("AKIA{}", berth_crypto::random_string(UPPER, 16)),
            secret: berth_crypto::random_string(SECRET, 40),
            principal,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub arn: String,
    pub access_key_id: String,
    /// When temporary credentials end (Unix seconds); tokens issued to them end no later.
    pub expires: Option<i64>,
}

/// The ARN of an account's root principal.
pub fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

impl Principal {
    pub fn is_root(&self) -> bool {
        self.arn.ends_with(":root")
    }
}

/// Who is asking, and from where.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None`: anonymous.
    pub principal: Option<Principal>,
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS (`aws:SecureTransport`).
    pub secure: bool,
    /// Tags the request sets (`aws:RequestTag/<key>`, and their keys as `aws:TagKeys`).
    pub request_tags: Vec<(String, String)>,
    /// Tag keys the request names without values (UntagResource: `aws:TagKeys`).
    pub tag_keys: Vec<String>,
    /// The registry this request replicates from (`region/registry_id`, from the
    /// [`REPLICATION_HEADER`]): what it stores counts as replicated, and a repository it pushes
    /// to is created through the `REPLICATION` creation templates.
    pub replication_from: Option<String>,
    /// The registry's operator: the command line on the server, and its own background work.
    operator: bool,
}

/// The header a Berth source sends with every replication request.
pub const REPLICATION_HEADER: &str = "x-berth-replication";

impl Caller {
    /// An authenticated principal.
    pub fn principal(p: Principal) -> Caller {
        Caller { principal: Some(p), ..Default::default() }
    }

    /// The caller credentials named (`None`: none came).
    pub fn new(principal: Option<Principal>) -> Caller {
        Caller { principal, ..Default::default() }
    }

    /// Nobody in particular.
    pub fn anonymous() -> Caller {
        Caller::default()
    }

    /// The server's operator (`berth` subcommands run on the server, and the registry's own
    /// jobs): every action is allowed, as it is to whoever holds the data directory.
    pub fn operator() -> Caller {
        Caller { operator: true, ..Default::default() }
    }

    pub fn is_operator(&self) -> bool {
        self.operator
    }

    pub fn is_anonymous(&self) -> bool {
        self.principal.is_none() && !self.operator
    }

    /// Where the request came from and over what.
    pub fn from(mut self, source_ip: Option<IpAddr>, secure: bool) -> Caller {
        self.source_ip = source_ip;
        self.secure = secure;
        self
    }

    /// Refuses anyone but the operator: `what` is done on the server's command line only.
    pub fn require_operator(&self, what: &str) -> crate::error::Result<()> {
        if self.operator {
            Ok(())
        } else {
            Err(crate::error::Error::Denied(crate::error::Denied::OperatorOnly { what: what.to_string() }))
        }
    }

    /// The ARN shown for this caller in messages and the audit log.
    pub fn arn(&self) -> &str {
        match &self.principal {
            Some(p) => &p.arn,
            None if self.operator => "berth:operator",
            None => "anonymous",
        }
    }
}

/// Who a principal is, for the policy evaluator: its ARN, account and ids, and the identity
/// policies that apply to it.
#[derive(Debug)]
pub struct Identity {
    pub caller: berth_core::policy::Caller,
    pub policies: Vec<berth_core::policy::Policy>,
    /// Whether a policy tests resource tags (then a decision reads the repository's tags).
    pub uses_resource_tags: bool,
}

/// What an access key id resolves to.
#[derive(Clone)]
pub(crate) struct ResolvedKey {
    pub secret: String,
    pub principal: Principal,
}
