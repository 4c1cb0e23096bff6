//! `scripts/install-deps.sh --print-backports-source`: the bookworm-backports
//! source the install step writes comes from the machine's own apt sources
//! (its mirror and keyring), never from a hard-coded host. Runs the script
//! against fixture apt directories (`DWELL_APT_DIR`); no apt call is made.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dwell_testkit::skip;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps.sh")
}

/// An apt dir with `files` (path relative to it, content).
fn apt_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
    for (path, content) in files {
        std::fs::write(dir.path().join(path), content).unwrap();
    }
    dir
}

fn print_source(apt: &Path) -> Output {
    Command::new("bash")
        .arg(script())
        .arg("--print-backports-source")
        .env("DWELL_APT_DIR", apt)
        .output()
        .unwrap()
}

fn source_of(files: &[(&str, &str)]) -> String {
    let dir = apt_dir(files);
    let out = print_source(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn deb822_mirror_and_keyring_are_kept() {
    let got = source_of(&[(
        "sources.list.d/debian.sources",
        "Types: deb\n# a comment\nURIs: http://mirror.corp.example/debian\nSuites: bookworm bookworm-updates\n\
         Components: main\nSigned-By: /usr/share/keyrings/corp.gpg\n\n\
         Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
    )]);
    assert_eq!(
        got,
        "Types: deb\nURIs: http://mirror.corp.example/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By: /usr/share/keyrings/corp.gpg\n"
    );
}

#[test]
fn one_line_sources_list_with_options() {
    let got = source_of(&[(
        "sources.list",
        "deb-src http://src.example/debian bookworm main\n\
         deb http://old.example/debian bullseye main\n\
         deb [arch=amd64 signed-by=/etc/apt/keys/local.gpg] http://local.example/debian bookworm main contrib # mirror\n",
    )]);
    assert_eq!(
        got,
        "Types: deb\nURIs: http://local.example/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By: /etc/apt/keys/local.gpg\n"
    );
}

#[test]
fn third_party_and_disabled_sources_are_skipped_and_an_embedded_key_is_kept() {
    let got = source_of(&[
        (
            "sources.list.d/a-docker.sources",
            "Types: deb\nURIs: https://download.docker.com/linux/debian\nSuites: bookworm\nComponents: stable\n",
        ),
        (
            "sources.list.d/b-debian.sources",
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n\
             Types: deb deb-src\nURIs: http://m1.example/debian http://m2.example/debian\nSuites: bookworm\n\
             Components: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n",
        ),
    ]);
    assert_eq!(
        got,
        "Types: deb\nURIs: http://m1.example/debian http://m2.example/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n"
    );
}

#[test]
fn no_debian_source_fails_with_the_fix() {
    for files in [
        vec![],
        vec![(
            "sources.list",
            "deb http://deb.debian.org/debian bullseye main\n",
        )],
    ] {
        let dir = apt_dir(&files);
        let out = print_source(dir.path());
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no Debian bookworm source"), "{err}");
        assert!(err.contains("add your Debian mirror"), "{err}");
    }
}

#[test]
fn this_machine_has_a_source() {
    // The host's own sources (this machine is bookworm; elsewhere skip).
    let bookworm = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .contains("bookworm");
    if !bookworm {
        skip("not a bookworm host");
        return;
    }
    let out = print_source(Path::new("/etc/apt"));
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert!(got.contains("Suites: bookworm-backports\n"), "{got}");
}
