//! The binary analyzers on real executables (module lines are covered by the unit tests): Debian's `fzf` (a Go program, installed by test.sh)
//! and a copy of `/bin/true` given a `cargo auditable` section with binutils' `objcopy`.

use std::io::Write;
use std::process::Command;

use berth_scan::binaries::analyze;

#[test]
fn go_build_info_of_debian_fzf() {
    let b = std::fs::read("/usr/bin/fzf").expect("/usr/bin/fzf (Debian's fzf, a Go program: test.sh installs it)");
    let info = analyze(&b).expect("fzf has Go build info");
    let v = info.go_version.expect("toolchain version");
    assert!(v.starts_with("1.") && v.split('.').count() >= 2, "{v}");
    // Debian builds Go programs from packaged sources, not modules: no module lines to read.
    assert!(info.go_modules.iter().all(|(p, v)| p.contains('.') && v.starts_with('v')), "{:?}", info.go_modules);
}

#[test]
fn cargo_auditable_section() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"packages":[
        {"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1,2]},
        {"name":"smallvec","version":"1.6.0","source":"crates.io"},
        {"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(json.as_bytes()).unwrap();
    let section = dir.path().join("deps");
    std::fs::write(&section, z.finish().unwrap()).unwrap();
    let out = dir.path().join("app");
    let ok = Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".dep-v0={}", section.display()))
        .args(["/bin/true", out.to_str().unwrap()])
        .status()
        .expect("objcopy (binutils)");
    assert!(ok.success());
    let info = analyze(&std::fs::read(&out).unwrap()).expect("the section is found");
    assert_eq!(info.crates, [("smallvec".to_string(), "1.6.0".to_string())], "runtime crates.io dependencies only");
    assert_eq!(info.go_version, None);
    assert_eq!(analyze(&std::fs::read("/bin/true").unwrap()), None, "a plain C binary records nothing");
}
