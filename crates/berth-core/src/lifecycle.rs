//! ECR lifecycle policies: the rule grammar, validated as ECR validates it, and the evaluation
//! that decides which images expire. Pure: the caller supplies the images and the time.
//!
//! Evaluation, as AWS documents it: rules apply by `rulePriority`, lowest first. Each rule
//! selects images by tag status and tag filters; of those, `imageCountMoreThan` marks all but the
//! newest N (by push time), `sinceImagePushed`/`sinceImagePulled` those older than N days. An
//! image selected by a higher-priority rule is never expired by a lower-priority one, but it still
//! counts in that rule's selection. Each image is expired by at most one rule.
//!
//! Beyond ECR (opt-in): a `tagPatternList` entry `regex:<expr>` is a regular expression that must
//! match a whole tag; a selection may carry `keepIfPulledWithinDays`, sparing images pulled
//! within that many days.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Largest policy text ECR accepts (and the smallest).
pub const MAX_POLICY_TEXT: usize = 30_720;
pub const MIN_POLICY_TEXT: usize = 100;
/// Most `*` in one tag pattern.
pub const MAX_WILDCARDS: usize = 4;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LifecycleError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone)]
pub enum Pattern {
    Wildcard(String),
    Regex(regex::Regex),
}

impl Pattern {
    fn matches(&self, tag: &str) -> bool {
        match self {
            Pattern::Wildcard(p) => crate::wildcard::matches(p, tag),
            Pattern::Regex(r) => r.find(tag).is_some_and(|m| m.start() == 0 && m.end() == tag.len()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum TagFilter {
    /// Every prefix must start some tag of the image.
    Prefixes(Vec<String>),
    /// Every pattern must match some tag of the image.
    Patterns(Vec<Pattern>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    MoreThan(u64),
    SincePushedDays(u64),
    SincePulledDays(u64),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub priority: i64,
    pub description: Option<String>,
    pub tag_status: TagStatus,
    pub filter: Option<TagFilter>,
    pub count: Count,
    /// Extension: never expire an image pulled within this many days.
    pub keep_if_pulled_within_days: Option<u64>,
}

/// A validated policy; rules in priority order.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// An image as the evaluation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub digest: String,
    pub tags: Vec<String>,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
}

/// An image a rule expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub digest: String,
    pub rule_priority: i64,
}

fn err<T>(msg: String) -> Result<T, LifecycleError> {
    Err(LifecycleError(msg))
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), LifecycleError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return err(format!("{at}: unknown field '{k}' (allowed: {})", allowed.join(", ")));
        }
    }
    Ok(())
}

fn string_list(v: &Value, at: &str) -> Result<Vec<String>, LifecycleError> {
    let Some(arr) = v.as_array() else { return err(format!("{at} must be a list of strings")) };
    if arr.is_empty() {
        return err(format!("{at} must not be empty"));
    }
    arr.iter()
        .map(|x| match x.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => err(format!("{at} must hold non-empty strings, not {x}")),
        })
        .collect()
}

/// Parses and validates a policy as ECR does; each failure names the rule and field.
pub fn parse(text: &str) -> Result<Policy, LifecycleError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| LifecycleError(format!("the policy is not valid JSON: {e}")))?;
    let Some(root) = v.as_object() else { return err("the policy must be a JSON object with 'rules'".into()) };
    check_keys(root, &["rules"], "policy")?;
    let Some(rules) = root.get("rules").and_then(Value::as_array) else {
        return err("'rules' is required and must be a list".into());
    };
    if rules.is_empty() {
        return err("'rules' must hold at least one rule".into());
    }
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        out.push(parse_rule(r, i)?);
    }
    let mut seen = HashSet::new();
    for r in &out {
        if !seen.insert(r.priority) {
            return err(format!(
                "rulePriority {} is used by more than one rule; priorities must be unique",
                r.priority
            ));
        }
    }
    out.sort_by_key(|r| r.priority);
    let last = out.last().map(|r| r.priority);
    if let Some(any) = out.iter().find(|r| r.tag_status == TagStatus::Any && Some(r.priority) != last) {
        return err(format!(
            "rule with rulePriority {}: a rule with tagStatus 'any' must have the highest rulePriority",
            any.priority
        ));
    }
    if out.iter().filter(|r| r.tag_status == TagStatus::Untagged).count() > 1 {
        return err("only one rule may have tagStatus 'untagged'".into());
    }
    Ok(Policy { rules: out })
}

fn parse_rule(v: &Value, i: usize) -> Result<Rule, LifecycleError> {
    let at = format!("rules[{i}]");
    let Some(r) = v.as_object() else { return err(format!("{at} must be an object")) };
    check_keys(r, &["rulePriority", "description", "selection", "action"], &at)?;
    let priority = match r.get("rulePriority").and_then(Value::as_i64) {
        Some(p) if p >= 1 => p,
        Some(p) => return err(format!("{at}: rulePriority must be at least 1, not {p}")),
        None => return err(format!("{at}: rulePriority is required and must be an integer")),
    };
    let at = format!("rule with rulePriority {priority}");
    let description = match r.get("description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return err(format!("{at}: description must be a string")),
    };
    let Some(action) = r.get("action").and_then(Value::as_object) else {
        return err(format!("{at}: action is required ({{\"type\": \"expire\"}})"));
    };
    check_keys(action, &["type"], &format!("{at}: action"))?;
    if action.get("type").and_then(Value::as_str) != Some("expire") {
        return err(format!("{at}: action.type must be 'expire'"));
    }
    let Some(sel) = r.get("selection").and_then(Value::as_object) else {
        return err(format!("{at}: selection is required"));
    };
    check_keys(
        sel,
        &[
            "tagStatus",
            "tagPrefixList",
            "tagPatternList",
            "countType",
            "countUnit",
            "countNumber",
            "keepIfPulledWithinDays",
        ],
        &format!("{at}: selection"),
    )?;
    let tag_status = match sel.get("tagStatus").and_then(Value::as_str) {
        Some("tagged") => TagStatus::Tagged,
        Some("untagged") => TagStatus::Untagged,
        Some("any") => TagStatus::Any,
        Some(o) => return err(format!("{at}: selection.tagStatus must be tagged, untagged or any, not '{o}'")),
        None => return err(format!("{at}: selection.tagStatus is required")),
    };
    let prefixes =
        sel.get("tagPrefixList").map(|v| string_list(v, &format!("{at}: selection.tagPrefixList"))).transpose()?;
    let patterns =
        sel.get("tagPatternList").map(|v| string_list(v, &format!("{at}: selection.tagPatternList"))).transpose()?;
    let filter = match (tag_status, prefixes, patterns) {
        (TagStatus::Tagged, Some(_), Some(_)) => {
            return err(format!("{at}: selection may have tagPrefixList or tagPatternList, not both"));
        }
        (TagStatus::Tagged, Some(p), None) => Some(TagFilter::Prefixes(p)),
        (TagStatus::Tagged, None, Some(p)) => {
            Some(TagFilter::Patterns(p.iter().map(|s| parse_pattern(s, &at)).collect::<Result<_, _>>()?))
        }
        (TagStatus::Tagged, None, None) => {
            return err(format!("{at}: tagStatus 'tagged' needs selection.tagPrefixList or selection.tagPatternList"));
        }
        (_, None, None) => None,
        (s, _, _) => {
            let s = if s == TagStatus::Untagged { "untagged" } else { "any" };
            return err(format!("{at}: tagStatus '{s}' takes no tagPrefixList or tagPatternList"));
        }
    };
    let number = match sel.get("countNumber") {
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => return err(format!("{at}: selection.countNumber must be a whole number of at least 1, not {v}")),
        },
        None => return err(format!("{at}: selection.countNumber is required")),
    };
    let unit = sel.get("countUnit").map(|u| u.as_str().unwrap_or_default().to_string());
    let count = match sel.get("countType").and_then(Value::as_str) {
        Some("imageCountMoreThan") => {
            if unit.is_some() {
                return err(format!(
                    "{at}: selection.countUnit is only allowed with sinceImagePushed or sinceImagePulled"
                ));
            }
            Count::MoreThan(number)
        }
        Some(t @ ("sinceImagePushed" | "sinceImagePulled")) => {
            match unit.as_deref() {
                Some("days") => {}
                Some(u) => return err(format!("{at}: selection.countUnit must be 'days', not '{u}'")),
                None => return err(format!("{at}: selection.countUnit ('days') is required with {t}")),
            }
            if t == "sinceImagePushed" { Count::SincePushedDays(number) } else { Count::SincePulledDays(number) }
        }
        Some(o) => {
            return err(format!(
                "{at}: selection.countType must be imageCountMoreThan, sinceImagePushed or sinceImagePulled, not '{o}'"
            ));
        }
        None => return err(format!("{at}: selection.countType is required")),
    };
    let keep_if_pulled_within_days = match sel.get("keepIfPulledWithinDays") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return err(format!("{at}: selection.keepIfPulledWithinDays must be a whole number of at least 1")),
        },
    };
    Ok(Rule { priority, description, tag_status, filter, count, keep_if_pulled_within_days })
}

fn parse_pattern(s: &str, at: &str) -> Result<Pattern, LifecycleError> {
    if let Some(expr) = s.strip_prefix("regex:") {
        return regex::Regex::new(expr).map(Pattern::Regex).map_err(|e| {
            LifecycleError(format!("{at}: selection.tagPatternList: bad regular expression {expr:?}: {e}"))
        });
    }
    let stars = s.matches('*').count();
    if stars > MAX_WILDCARDS {
        return err(format!(
            "{at}: selection.tagPatternList entry '{s}' has {stars} wildcards; the limit is {MAX_WILDCARDS}"
        ));
    }
    Ok(Pattern::Wildcard(s.to_string()))
}

impl Rule {
    fn selects(&self, img: &Image) -> bool {
        let status = match self.tag_status {
            TagStatus::Tagged => !img.tags.is_empty(),
            TagStatus::Untagged => img.tags.is_empty(),
            TagStatus::Any => true,
        };
        status
            && match &self.filter {
                None => true,
                Some(TagFilter::Prefixes(ps)) => ps.iter().all(|p| img.tags.iter().any(|t| t.starts_with(p.as_str()))),
                Some(TagFilter::Patterns(ps)) => ps.iter().all(|p| img.tags.iter().any(|t| p.matches(t))),
            }
    }
}

/// The images the policy expires, each with the rule that expires it, oldest first.
pub fn evaluate(policy: &Policy, images: &[Image], now_ms: i64) -> Vec<Expiry> {
    // Newest first; among equal push times, the later in the input is the newer.
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| images[b].pushed_at.cmp(&images[a].pushed_at).then(b.cmp(&a)));
    let mut claimed: HashSet<usize> = HashSet::new();
    let mut expired: HashMap<usize, i64> = HashMap::new();
    for rule in &policy.rules {
        let selected: Vec<usize> = order.iter().copied().filter(|&i| rule.selects(&images[i])).collect();
        let marked: Vec<usize> = match rule.count {
            Count::MoreThan(n) => selected.iter().copied().skip(n as usize).collect(),
            Count::SincePushedDays(d) => {
                selected.iter().copied().filter(|&i| now_ms - images[i].pushed_at > d as i64 * DAY_MS).collect()
            }
            Count::SincePulledDays(d) => selected
                .iter()
                .copied()
                .filter(|&i| {
                    let last = images[i].last_pulled_at.unwrap_or(images[i].pushed_at).max(images[i].pushed_at);
                    now_ms - last > d as i64 * DAY_MS
                })
                .collect(),
        };
        for i in marked {
            let recently_pulled = rule
                .keep_if_pulled_within_days
                .is_some_and(|d| images[i].last_pulled_at.is_some_and(|p| now_ms - p <= d as i64 * DAY_MS));
            if !claimed.contains(&i) && !recently_pulled {
                expired.entry(i).or_insert(rule.priority);
            }
        }
        claimed.extend(selected);
    }
    let mut out: Vec<(usize, i64)> = expired.into_iter().collect();
    out.sort_by(|a, b| images[a.0].pushed_at.cmp(&images[b.0].pushed_at).then(a.0.cmp(&b.0)));
    out.into_iter().map(|(i, p)| Expiry { digest: images[i].digest.clone(), rule_priority: p }).collect()
}

#[cfg(test)]
mod tests;
