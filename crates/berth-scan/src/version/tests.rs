//! Known orderings per ecosystem, and property tests against the ecosystems' own tools: Debian's
//! `dpkg --compare-versions` and Python's `packaging` (installed by ./test.sh). A missing tool
//! fails the test with instructions; nothing is skipped.

use std::cmp::Ordering::{self, *};
use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

fn check(name: &str, f: impl Fn(&str, &str) -> Option<Ordering>, cases: &[(&str, &str, Ordering)]) {
    let mut bad = Vec::new();
    for (a, b, want) in cases {
        let got = f(a, b);
        let back = f(b, a);
        if got != Some(*want) || back != Some(want.reverse()) {
            bad.push(format!("{a} vs {b}: got {got:?}/{back:?}, want {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{name}:\n{}", bad.join("\n"));
}

#[test]
fn debian() {
    check(
        "dpkg",
        dpkg,
        &[
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+deb12u1", Less),
            ("1:0.9", "2.0", Greater),
            ("2.36.1-8+deb12u1", "2.36.1-8", Greater),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("1.2.10", "1.2.9", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0-1", "1.0-1.1", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
            ("0.0.0", "0", Greater),
        ],
    );
    assert_eq!(dpkg("", "1"), None);
    assert_eq!(dpkg("x:1", "1"), None);
}

#[test]
fn alpine() {
    check(
        "apk",
        apk,
        &[
            ("1.2.3-r0", "1.2.3-r1", Less),
            ("1.2.3_rc1", "1.2.3", Less),
            ("1.2.3_alpha", "1.2.3_beta", Less),
            ("1.2.3_p1", "1.2.3", Greater),
            ("1.2.3a", "1.2.3", Greater),
            ("1.2.10", "1.2.9", Greater),
            ("1.2", "1.2.1", Less),
            ("1.01", "1.1", Less),
            ("3.0.12-r1", "3.0.12-r1", Equal),
            ("1.36.1-r15", "1.36.1-r2", Greater),
        ],
    );
    assert_eq!(apk("1.x", "1"), None);
}

#[test]
fn rpm_order() {
    let f = |a: &str, b: &str| Some(rpm(a, b));
    check(
        "rpm",
        f,
        &[
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0^20230101", "1.0", Greater),
            ("1.0^20230101", "1.0.1", Less),
            ("2.0-1.el9", "2.0-2.el9", Less),
            ("1:1.0-1", "2.0-1", Greater),
            ("1.10", "1.9", Greater),
            ("1.001", "1.1", Equal),
            ("a", "1", Less),
            ("1.0-1", "1.0", Equal),
        ],
    );
}

#[test]
fn python() {
    check(
        "pep440",
        pep440,
        &[
            ("1.0", "1.0.0", Equal),
            ("1.0.dev1", "1.0a1", Less),
            ("1.0a1", "1.0b1", Less),
            ("1.0b2", "1.0rc1", Less),
            ("1.0rc1", "1.0", Less),
            ("1.0", "1.0.post1", Less),
            ("1.0.post1.dev1", "1.0.post1", Less),
            ("1.0a1.post1", "1.0a2", Less),
            ("1!0.1", "2.0", Greater),
            ("1.0+local.1", "1.0", Greater),
            ("1.0+abc", "1.0+1", Less),
            ("1.0-1", "1.0.post1", Equal),
            ("V1.0ALPHA2", "1.0a2", Equal),
            ("2.31.0", "2.4", Greater),
        ],
    );
    assert_eq!(pep440("1.0-foo", "1.0"), None);
}

#[test]
fn semantic_and_go() {
    check(
        "semver",
        semver,
        &[
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0+build", "1.0.0", Equal),
            ("4.17.21", "4.17.3", Greater),
        ],
    );
    check(
        "go",
        go,
        &[
            ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.1", Less),
            ("v1.2.3", "v1.2.4", Less),
            ("v2.0.0+incompatible", "v2.0.0", Equal),
            ("v0.3.8", "v0.10.0", Less),
        ],
    );
    assert_eq!(go("1.2.3", "v1.2.3"), Some(Equal), "OSV writes Go versions without the v");
    assert_eq!(semver("1.2", "1.2.0"), None);
}

#[test]
fn ecosystems_by_osv_name() {
    assert_eq!(Ecosystem::from_osv("Debian:12"), Some(Ecosystem::Debian));
    assert_eq!(Ecosystem::from_osv("PyPI"), Some(Ecosystem::PyPI));
    assert_eq!(Ecosystem::from_osv("Hex"), None);
    assert_eq!(Ecosystem::Debian.compare("1.0~b1", "1.0"), Some(Less));
}

fn debian_version() -> impl Strategy<Value = String> {
    let part = "[0-9][0-9a-z.+~]{0,6}";
    (prop::option::of(0u8..3), part, prop::option::of("[0-9a-z+.~]{1,5}")).prop_map(|(e, u, r)| {
        let mut v = String::new();
        if let Some(e) = e {
            v.push_str(&format!("{e}:"));
        }
        v.push_str(&u);
        if let Some(r) = r {
            v.push('-');
            v.push_str(&r);
        }
        v
    })
}

fn dpkg_says(a: &str, b: &str) -> Ordering {
    let run = |op: &str| {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .unwrap_or_else(|e| panic!("dpkg is needed for this test (apt-get install dpkg): {e}"))
            .success()
    };
    if run("lt") {
        Less
    } else if run("eq") {
        Equal
    } else {
        Greater
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn dpkg_agrees_with_dpkg(a in debian_version(), b in debian_version()) {
        prop_assert_eq!(dpkg(&a, &b), Some(dpkg_says(&a, &b)), "{} vs {}", a, b);
    }
}

#[test]
fn pep440_agrees_with_packaging() {
    // Random versions in PEP 440's normal form and common spellings, compared in one batch.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = (
        prop::option::of(0u8..2),
        prop::collection::vec(0u8..12, 1..4),
        prop::option::of((prop::sample::select(vec!["a", "b", "rc", "alpha", "c"]), 0u8..3)),
        prop::option::of(0u8..3),
        prop::option::of(0u8..3),
        prop::option::of(prop::sample::select(vec!["ubuntu1", "1", "abc.2"])),
    )
        .prop_map(|(e, rel, pre, post, dev, local)| {
            let mut v = String::new();
            if let Some(e) = e {
                v.push_str(&format!("{e}!"));
            }
            v.push_str(&rel.iter().map(u8::to_string).collect::<Vec<_>>().join("."));
            if let Some((k, n)) = pre {
                v.push_str(&format!("{k}{n}"));
            }
            if let Some(p) = post {
                v.push_str(&format!(".post{p}"));
            }
            if let Some(d) = dev {
                v.push_str(&format!(".dev{d}"));
            }
            if let Some(l) = local {
                v.push_str(&format!("+{l}"));
            }
            v
        });
    let pairs: Vec<(String, String)> = (0..400)
        .map(|_| {
            let a = strat.new_tree(&mut runner).unwrap().current();
            let b = strat.new_tree(&mut runner).unwrap().current();
            (a, b)
        })
        .collect();
    let script = "import sys\nfrom packaging.version import Version\nfor line in sys.stdin:\n    a, b = line.split()\n    x, y = Version(a), Version(b)\n    print(-1 if x < y else (0 if x == y else 1))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let input: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python's packaging is needed for this test (pip install packaging; ./test.sh installs it)"
    );
    let answers: Vec<i32> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(answers.len(), pairs.len());
    let mut bad = Vec::new();
    for ((a, b), want) in pairs.iter().zip(answers) {
        let got = pep440(a, b).map(|o| o as i32);
        if got != Some(want) {
            bad.push(format!("{a} vs {b}: ours {got:?}, packaging {want}"));
        }
    }
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}
