//! Condition operators: String*, Numeric*, Date*, Bool, IpAddress/NotIpAddress, Arn*, Null, with
//! `...IfExists` and the `ForAnyValue`/`ForAllValues` set qualifiers.

use std::net::IpAddr;

use super::{Condition, Context, SetQualifier, glob, substitute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl Operator {
    pub fn parse(name: &str) -> Option<Operator> {
        use Operator::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "DateEquals" => DateEquals,
            "DateNotEquals" => DateNotEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "Bool" => Bool,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "ArnEquals" => ArnEquals,
            "ArnLike" => ArnLike,
            "ArnNotEquals" => ArnNotEquals,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Negated operators hold when the request value matches none of the policy values.
    fn negated(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }

    /// Whether a policy value is well-formed for this operator (checked when parsing).
    pub fn check_value(self, v: &str) -> Result<(), String> {
        use Operator::*;
        let ok = match self {
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => v.parse::<f64>().is_ok(),
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => parse_date(v).is_some() || v.contains("${"),
            Bool | Null => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
            IpAddress | NotIpAddress => parse_cidr(v).is_some(),
            _ => true,
        };
        if ok { Ok(()) } else { Err(format!("'{v}' is not a valid value for {self:?}")) }
    }
}

/// One value of the request against one value of the policy (non-negated sense).
fn compare(op: Operator, request: &str, policy: &str) -> bool {
    use Operator::*;
    match op {
        StringEquals | StringNotEquals => request == policy,
        StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => request.to_lowercase() == policy.to_lowercase(),
        StringLike | StringNotLike => glob(policy, request),
        NumericEquals
        | NumericNotEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => match (request.parse::<f64>(), policy.parse::<f64>()) {
            (Ok(a), Ok(b)) => ordered(op, a.partial_cmp(&b)),
            _ => false,
        },
        DateEquals | DateNotEquals | DateLessThan | DateLessThanEquals | DateGreaterThan | DateGreaterThanEquals => {
            match (parse_date(request), parse_date(policy)) {
                (Some(a), Some(b)) => ordered(op, a.partial_cmp(&b)),
                _ => false,
            }
        }
        Bool => request.eq_ignore_ascii_case(policy),
        IpAddress | NotIpAddress => match (request.parse::<IpAddr>(), parse_cidr(policy)) {
            (Ok(ip), Some((net, bits))) => in_cidr(ip, net, bits),
            _ => false,
        },
        ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => arn_like(policy, request),
        Null => unreachable!("Null is decided on presence"),
    }
}

fn ordered(op: Operator, ord: Option<std::cmp::Ordering>) -> bool {
    use Operator::*;
    use std::cmp::Ordering::*;
    let Some(o) = ord else { return false };
    match op {
        NumericEquals | NumericNotEquals | DateEquals | DateNotEquals => o == Equal,
        NumericLessThan | DateLessThan => o == Less,
        NumericLessThanEquals | DateLessThanEquals => o != Greater,
        NumericGreaterThan | DateGreaterThan => o == Greater,
        NumericGreaterThanEquals | DateGreaterThanEquals => o != Less,
        _ => false,
    }
}

/// Whether condition `c` holds in `ctx`.
pub fn holds(c: &Condition, ctx: &Context) -> bool {
    let present = ctx.get(&c.key).filter(|v| !v.is_empty());
    if c.operator == Operator::Null {
        let want_absent = c.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
        return want_absent == present.is_none();
    }
    let policy_values: Vec<String> = c.values.iter().filter_map(|v| substitute(v, ctx)).collect();
    let Some(request_values) = present else {
        return match c.set {
            // Every value of an empty set satisfies anything.
            SetQualifier::ForAllValues => true,
            SetQualifier::ForAnyValue => false,
            // A missing key: ...IfExists holds; negated operators hold (nothing matches).
            SetQualifier::Single => c.if_exists || c.operator.negated(),
        };
    };
    let one = |r: &str| {
        let any = policy_values.iter().any(|p| compare(c.operator, r, p));
        if c.operator.negated() { !any } else { any }
    };
    match c.set {
        SetQualifier::ForAllValues => request_values.iter().all(|r| one(r)),
        SetQualifier::ForAnyValue => request_values.iter().any(|r| one(r)),
        SetQualifier::Single => {
            if c.operator.negated() {
                request_values.iter().all(|r| one(r))
            } else {
                request_values.iter().any(|r| one(r))
            }
        }
    }
}

/// ARN patterns compare component by component (`arn:partition:service:region:account:resource`),
/// each with `*`/`?` wildcards.
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    if p.len() != 6 || a.len() != 6 {
        return glob(pattern, arn);
    }
    p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    // An IPv4-mapped IPv6 address is its IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// ISO 8601 (`2026-11-27`, `2026-11-27T08:00:00Z`, with fractions or a `+hh:mm` offset) or epoch
/// seconds → seconds since the epoch.
pub fn parse_date(s: &str) -> Option<f64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = crate::time::days_from_civil(y, mo, d) as f64 * 86400.0;
    if b.len() == 10 {
        return Some(secs);
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if b.get(13) != Some(&b':') || h > 23 || mi > 59 {
        return None;
    }
    let mut i = 16;
    let mut sec = 0.0;
    if b.get(16) == Some(&b':') {
        let start = 17;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
            end += 1;
        }
        sec = s.get(start..end)?.parse::<f64>().ok()?;
        if !(0.0..61.0).contains(&sec) {
            return None;
        }
        i = end;
    }
    secs += (h * 3600 + mi * 60) as f64 + sec;
    match s.get(i..)? {
        "" | "Z" | "z" => Some(secs),
        off if (off.starts_with('+') || off.starts_with('-')) && off.len() == 6 && off.as_bytes()[3] == b':' => {
            let oh: i64 = off.get(1..3)?.parse().ok()?;
            let om: i64 = off.get(4..6)?.parse().ok()?;
            let delta = (oh * 3600 + om * 60) as f64;
            Some(if off.starts_with('+') { secs - delta } else { secs + delta })
        }
        _ => None,
    }
}
