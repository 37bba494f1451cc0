//! ECR's documented examples (the rule sets and images its lifecycle documentation shows, with
//! the expiries it states), the validation rules, and properties of the evaluation.

use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000_000;

fn img(name: &str, tags: &[&str], days_ago: f64) -> Image {
    Image {
        digest: name.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        pushed_at: NOW - (days_ago * DAY_MS as f64) as i64,
        last_pulled_at: None,
    }
}

fn rule(priority: i64, selection: &str) -> String {
    format!(
        r#"{{"rulePriority": {priority}, "description": "Rule {priority}", "selection": {selection}, "action": {{"type": "expire"}}}}"#
    )
}

fn policy(rules: &[String]) -> Policy {
    let text = format!(r#"{{"rules": [{}]}}"#, rules.join(","));
    parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn expired(p: &Policy, images: &[Image]) -> Vec<String> {
    evaluate(p, images, NOW).into_iter().map(|e| e.digest).collect()
}

struct Case {
    name: &'static str,
    rules: Vec<String>,
    images: Vec<Image>,
    want: Vec<&'static str>,
}

fn cases() -> Vec<Case> {
    let count = |status: &str, filter: &str, n: u64| {
        format!(r#"{{"tagStatus": "{status}"{filter}, "countType": "imageCountMoreThan", "countNumber": {n}}}"#)
    };
    let age = |status: &str, filter: &str, days: u64| {
        format!(
            r#"{{"tagStatus": "{status}"{filter}, "countType": "sinceImagePushed", "countUnit": "days", "countNumber": {days}}}"#
        )
    };
    let abc = || {
        vec![img("A", &["beta-1", "prod-1"], 10.0), img("B", &["beta-2", "prod-2"], 9.0), img("C", &["beta-3"], 8.0)]
    };
    vec![
        Case {
            name: "filtering on image age: untagged images older than 14 days",
            rules: vec![rule(1, &age("untagged", "", 14))],
            images: vec![img("old", &[], 15.0), img("new", &[], 13.0), img("tagged", &["v1"], 30.0)],
            want: vec!["old"],
        },
        Case {
            name: "filtering on image age: prod* pattern older than 14 days",
            rules: vec![rule(1, &age("tagged", r#", "tagPatternList": ["prod*"]"#, 14))],
            images: vec![
                img("p-old", &["prod-1"], 20.0),
                img("p-new", &["prod-2"], 2.0),
                img("d-old", &["dev-1"], 20.0),
            ],
            want: vec!["p-old"],
        },
        Case {
            name: "filtering on image count: keep one untagged image",
            rules: vec![rule(1, &count("untagged", "", 1))],
            images: vec![img("u1", &[], 3.0), img("u2", &[], 2.0), img("u3", &[], 1.0), img("t", &["x"], 5.0)],
            want: vec!["u1", "u2"],
        },
        Case {
            name: "multiple rules, example A: prod first, then beta",
            rules: vec![
                rule(1, &count("tagged", r#", "tagPrefixList": ["prod"]"#, 1)),
                rule(2, &count("tagged", r#", "tagPrefixList": ["beta"]"#, 1)),
            ],
            images: abc(),
            want: vec!["A"],
        },
        Case {
            name: "multiple rules, example B: beta first, then prod",
            rules: vec![
                rule(1, &count("tagged", r#", "tagPrefixList": ["beta"]"#, 1)),
                rule(2, &count("tagged", r#", "tagPrefixList": ["prod"]"#, 1)),
            ],
            images: abc(),
            want: vec!["A", "B"],
        },
        Case {
            name: "multiple rules, example A with tagPatternList",
            rules: vec![
                rule(1, &count("tagged", r#", "tagPatternList": ["prod*"]"#, 1)),
                rule(2, &count("tagged", r#", "tagPatternList": ["beta*"]"#, 1)),
            ],
            images: abc(),
            want: vec!["A"],
        },
        Case {
            name: "multiple tags in one rule, example A: alpha and beta, older than 5 days",
            rules: vec![rule(
                1,
                r#"{"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "sinceImagePushed", "countNumber": 5, "countUnit": "days"}"#,
            )],
            images: vec![
                img("A", &["alpha-1"], 12.0),
                img("B", &["beta-1"], 11.0),
                img("C", &["alpha-2", "beta-2"], 10.0),
                img("D", &["alpha-3"], 4.0),
                img("E", &["beta-3"], 3.0),
                img("F", &["alpha-4", "beta-4"], 2.0),
            ],
            want: vec!["C"],
        },
        Case {
            name: "multiple tags in one rule, example B: tags are not exclusive",
            rules: vec![rule(1, &count("tagged", r#", "tagPrefixList": ["alpha", "beta"]"#, 1))],
            images: vec![
                img("A", &["alpha-1", "beta-1", "gamma-1"], 10.0),
                img("B", &["alpha-2", "beta-2"], 9.0),
                img("C", &["alpha-3", "beta-3", "gamma-2"], 8.0),
            ],
            want: vec!["A", "B"],
        },
        Case {
            name: "all images, example A: keep one",
            rules: vec![rule(1, &count("any", "", 1))],
            images: vec![
                img("A", &["alpha-1"], 4.0),
                img("B", &["beta-1"], 3.0),
                img("C", &[], 2.0),
                img("D", &["alpha-2"], 1.0),
            ],
            want: vec!["A", "B", "C"],
        },
        Case {
            name: "all images, example B: every rule type together",
            rules: vec![
                rule(1, &count("tagged", r#", "tagPrefixList": ["alpha"]"#, 1)),
                rule(2, &age("untagged", "", 1)),
                rule(3, &count("any", "", 1)),
            ],
            images: vec![
                img("A", &["alpha-1", "beta-1"], 4.0),
                img("B", &[], 3.0),
                img("C", &["alpha-2"], 2.0),
                img("D", &["git hash"], 1.0),
                img("E", &[], 0.99),
            ],
            want: vec!["A", "B", "D"],
        },
        Case {
            name: "a lower rule's count includes images a higher rule kept",
            rules: vec![
                rule(1, &count("tagged", r#", "tagPrefixList": ["release"]"#, 5)),
                rule(2, &count("any", "", 2)),
            ],
            images: vec![
                img("r1", &["release-1"], 5.0),
                img("d1", &["dev-1"], 4.0),
                img("r2", &["release-2"], 3.0),
                img("d2", &["dev-2"], 2.0),
                img("r3", &["release-3"], 1.0),
            ],
            // Rule 2 keeps the two newest (r3, d2); of the rest only d1 is not release-*.
            want: vec!["d1"],
        },
        Case {
            name: "nothing matches",
            rules: vec![rule(1, &count("tagged", r#", "tagPrefixList": ["none"]"#, 1))],
            images: abc(),
            want: vec![],
        },
        Case {
            name: "regex extension: whole-tag match",
            rules: vec![rule(1, &age("tagged", r#", "tagPatternList": ["regex:v[0-9]+\\.[0-9]+"]"#, 1))],
            images: vec![
                img("semver", &["v1.2"], 3.0),
                img("suffix", &["v1.2-rc"], 3.0),
                img("other", &["latest"], 3.0),
            ],
            want: vec!["semver"],
        },
    ]
}

#[test]
fn documented_examples() {
    let mut failed = Vec::new();
    for c in cases() {
        let got = expired(&policy(&c.rules), &c.images);
        if got != c.want {
            failed.push(format!("{}: got {got:?}, want {:?}", c.name, c.want));
        }
    }
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), cases().len(), failed.join("\n"));
}

#[test]
fn each_expiry_names_its_rule() {
    let p = policy(&[
        rule(
            1,
            r#"{"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 1}"#,
        ),
        rule(5, r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}"#),
    ]);
    let images = [img("p1", &["prod-1"], 3.0), img("p2", &["prod-2"], 2.0), img("u1", &[], 5.0), img("u2", &[], 1.0)];
    let got = evaluate(&p, &images, NOW);
    assert_eq!(
        got,
        vec![Expiry { digest: "u1".into(), rule_priority: 5 }, Expiry { digest: "p1".into(), rule_priority: 1 }]
    );
}

#[test]
fn pulls_and_the_keep_extension() {
    let pulled = |name: &str, pushed: f64, pulled: Option<f64>| Image {
        last_pulled_at: pulled.map(|d| NOW - (d * DAY_MS as f64) as i64),
        ..img(name, &["v"], pushed)
    };
    let images = [pulled("never", 30.0, None), pulled("stale", 30.0, Some(20.0)), pulled("fresh", 30.0, Some(1.0))];
    let since_pulled = policy(&[rule(
        1,
        r#"{"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 7}"#,
    )]);
    assert_eq!(expired(&since_pulled, &images), ["never", "stale"]);
    let keep = policy(&[rule(
        1,
        r#"{"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7, "keepIfPulledWithinDays": 3}"#,
    )]);
    assert_eq!(expired(&keep, &images), ["never", "stale"]);
}

#[test]
fn validation_names_the_rule_and_field() {
    let ok_sel = r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}"#;
    let bad = [
        ("not json", "valid JSON"),
        (r#"{"rules": []}"#, "at least one rule"),
        (r#"{"rules": [], "extra": 1}"#, "unknown field 'extra'"),
        (
            &format!(r#"{{"rules": [{}, {}]}}"#, rule(1, ok_sel), rule(1, ok_sel)),
            "rulePriority 1 is used by more than one rule",
        ),
        (&format!(r#"{{"rules": [{}]}}"#, rule(0, ok_sel)), "at least 1"),
        (
            &format!(
                r#"{{"rules": [{}, {}]}}"#,
                rule(2, r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}"#),
                rule(
                    3,
                    r#"{"tagStatus": "tagged", "tagPrefixList": ["a"], "countType": "imageCountMoreThan", "countNumber": 1}"#
                )
            ),
            "rulePriority 2: a rule with tagStatus 'any' must have the highest rulePriority",
        ),
        (
            &format!(r#"{{"rules": [{}, {}]}}"#, rule(1, ok_sel), rule(2, ok_sel)),
            "only one rule may have tagStatus 'untagged'",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(4, r#"{"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}"#)
            ),
            "rulePriority 4: tagStatus 'tagged' needs selection.tagPrefixList or selection.tagPatternList",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "untagged", "tagPrefixList": ["a"], "countType": "imageCountMoreThan", "countNumber": 1}"#
                )
            ),
            "tagStatus 'untagged' takes no tagPrefixList",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["b"], "countType": "imageCountMoreThan", "countNumber": 1}"#
                )
            ),
            "not both",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "tagged", "tagPatternList": ["*a*b*c*d*e"], "countType": "imageCountMoreThan", "countNumber": 1}"#
                )
            ),
            "5 wildcards; the limit is 4",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1}"#
                )
            ),
            "countUnit is only allowed with sinceImagePushed",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(1, r#"{"tagStatus": "any", "countType": "sinceImagePushed", "countNumber": 1}"#)
            ),
            "countUnit ('days') is required",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "hours", "countNumber": 1}"#
                )
            ),
            "must be 'days', not 'hours'",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(1, r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 0}"#)
            ),
            "countNumber must be a whole number of at least 1",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(1, r#"{"tagStatus": "some", "countType": "imageCountMoreThan", "countNumber": 1}"#)
            ),
            "tagged, untagged or any, not 'some'",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(1, r#"{"tagStatus": "any", "countType": "sinceForever", "countNumber": 1}"#)
            ),
            "countType must be",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1, "colour": "red"}"#
                )
            ),
            "unknown field 'colour'",
        ),
        (
            r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "delete"}}]}"#,
            "action.type must be 'expire'",
        ),
        (
            &format!(
                r#"{{"rules": [{}]}}"#,
                rule(
                    1,
                    r#"{"tagStatus": "tagged", "tagPatternList": ["regex:("], "countType": "imageCountMoreThan", "countNumber": 1}"#
                )
            ),
            "bad regular expression",
        ),
    ];
    for (text, want) in bad {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.0.contains(want), "{text}\n  error {:?} lacks {want:?}", e.0),
        }
    }
}

fn arb_image() -> impl Strategy<Value = Image> {
    (
        "[a-f]{4}",
        prop::collection::vec(prop::sample::select(vec!["prod-1", "prod-2", "beta-1", "dev", "v1.0", "latest"]), 0..3),
        0i64..40,
        prop::option::of(0i64..40),
    )
        .prop_map(|(d, tags, pushed, pulled)| Image {
            digest: d,
            tags: tags.into_iter().map(str::to_string).collect(),
            pushed_at: NOW - pushed * DAY_MS,
            last_pulled_at: pulled.map(|p| NOW - p * DAY_MS),
        })
}

fn arb_rule(priority: i64) -> impl Strategy<Value = String> {
    let status = prop::sample::select(vec![
        r#""tagStatus": "tagged", "tagPrefixList": ["prod"]"#,
        r#""tagStatus": "tagged", "tagPatternList": ["*1*"]"#,
        r#""tagStatus": "untagged""#,
    ]);
    let count = prop_oneof![
        (1u64..5).prop_map(|n| format!(r#""countType": "imageCountMoreThan", "countNumber": {n}"#)),
        (1u64..30).prop_map(|n| format!(r#""countType": "sinceImagePushed", "countUnit": "days", "countNumber": {n}"#)),
        (1u64..30).prop_map(|n| format!(r#""countType": "sinceImagePulled", "countUnit": "days", "countNumber": {n}"#)),
    ];
    (status, count).prop_map(move |(s, c)| rule(priority, &format!("{{{s}, {c}}}")))
}

proptest! {
    #[test]
    fn evaluation_properties(images in prop::collection::vec(arb_image(), 0..12), r1 in arb_rule(1), r2 in arb_rule(2), n in 1u64..4) {
        let images: Vec<Image> =
            images.into_iter().enumerate().map(|(i, im)| Image { digest: format!("img{i}"), ..im }).collect();
        let any = rule(9, &format!(r#"{{"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": {n}}}"#));
        let Ok(p) = parse(&format!(r#"{{"rules": [{r1}, {r2}, {any}]}}"#)) else { return Ok(()) };
        let out = evaluate(&p, &images, NOW);
        // At most once each, and only images that exist.
        let mut seen = HashSet::new();
        for e in &out {
            prop_assert!(seen.insert(e.digest.clone()));
        }
        // An image is expired only by the first rule that selects it.
        for e in &out {
            let img = images.iter().find(|i| i.digest == e.digest).unwrap();
            let first = p.rules.iter().find(|r| r.selects(img)).map(|r| r.priority);
            prop_assert_eq!(first, Some(e.rule_priority));
        }
        // The catch-all alone keeps the newest n.
        let alone = parse(&format!(r#"{{"rules": [{any}]}}"#)).unwrap();
        prop_assert_eq!(evaluate(&alone, &images, NOW).len(), images.len().saturating_sub(n as usize));
        // Deterministic: same input, same answer.
        prop_assert_eq!(out, evaluate(&p, &images, NOW));
    }

    #[test]
    fn parse_never_panics(text in ".{0,200}") {
        let _ = parse(&text);
    }
}
