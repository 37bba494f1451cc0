//! The RPM analyzer on a real database: Debian's `rpmbuild` makes 41 packages (one with a 20 KB
//! description, so its header spills into overflow pages; enough rows for interior b-tree pages)
//! and `rpm --justdb` installs them into an `rpmdb.sqlite`, as the synthetic RPM layer.

use std::fmt::Write;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (test.sh installs Debian's rpm)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn packages_of_an_rpmdb_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut spec = String::from(
        "Name: hello\nVersion: 1.2\nRelease: 3.el9\nEpoch: 1\nSummary: test\nLicense: MIT\nBuildArch: noarch\n\
         %description\n",
    );
    spec.push_str(&"A long description line to spill the header into overflow pages.\n".repeat(320));
    for i in 0..40 {
        write!(spec, "%package -n lib{i}\nSummary: lib {i}\n%description -n lib{i}\nlib {i}\n").unwrap();
    }
    spec.push_str("%files\n");
    for i in 0..40 {
        writeln!(spec, "%files -n lib{i}").unwrap();
    }
    std::fs::write(d.join("hello.spec"), spec).unwrap();
    let top = format!("_topdir {}", d.join("top").display());
    run(Command::new("rpmbuild").args(["-bb", "--quiet", "--define", &top]).arg(d.join("hello.spec")));
    let db = d.join("db");
    run(Command::new("rpm").arg("--dbpath").arg(&db).arg("--initdb"));
    let rpms: Vec<_> = std::fs::read_dir(d.join("top/RPMS/noarch")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(rpms.len(), 41);
    run(Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .args(["--justdb", "--nodeps", "--ignorearch", "--ignoreos", "-i"])
        .args(&rpms));

    let bytes = std::fs::read(db.join("rpmdb.sqlite")).unwrap();
    let mut pkgs = berth_scan::rpm::packages(&bytes).expect("a readable rpmdb.sqlite");
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(pkgs.len(), 41);
    let hello = pkgs.iter().find(|p| p.name == "hello").unwrap();
    assert_eq!((hello.evr.as_str(), hello.source.as_deref()), ("1:1.2-3.el9", Some("hello")));
    assert!(pkgs.iter().all(|p| p.evr == "1:1.2-3.el9" && p.source.as_deref() == Some("hello")), "{pkgs:?}");
    assert!(pkgs.iter().any(|p| p.name == "lib39"));
    assert_eq!(berth_scan::rpm::packages(b"SQLite format 3\0garbage"), None);
}
