//! Deployment artefacts, checked without a Docker engine or a cluster (issue 10).
//!
//! Each test runs one part of `scripts/check-deploy.py` (hadolint, helm-python-sdk,
//! kubernetes-validate, systemd-analyze; the Python tools live in `target/deploy-venv`, created on
//! first use) and fails with its report. The configuration tests run the servers' own
//! `--check-config` on every shipped TOML file and on every TOML the Helm chart renders; a server
//! whose binary still prints "not implemented yet" is reported as SKIP in the test output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The servers: binary and package directory.
const SERVERS: [(&str, &str); 4] = [
    ("nameserver", "nameserver"),
    ("turn-server", "turn-server"),
    ("dht-node", "dht-node"),
    ("dht-proxy", "dht-proxy"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn python() -> PathBuf {
    // Any CPython 3.11 with venv support works; the pinned wheels are cp311.
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("python3")
}

/// Newest modification time of the files below `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return t;
    };
    for e in entries.flatten() {
        let p = e.path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        t = t.max(m);
    }
    t
}

/// The directory with the servers' debug binaries (`target/debug`), rebuilding any that is
/// missing or older than its sources (a `cargo nextest run --workspace` has built them already).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable");
        // target/debug/deps/deploy-<hash> -> target/debug
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let root = root();
        let shared = [
            newest(&root.join("net/src")),
            newest(&root.join("protocol/src")),
            newest(&root.join("Cargo.lock")),
        ]
        .into_iter()
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut stale = Vec::new();
        for (bin, pkg_dir) in SERVERS {
            let built = std::fs::metadata(dir.join(bin)).and_then(|m| m.modified());
            let src = newest(&root.join(pkg_dir).join("src"))
                .max(newest(&root.join(pkg_dir).join("Cargo.toml")))
                .max(shared);
            if built.map_or(true, |b| b < src) {
                stale.push(bin);
            }
        }
        // scripts/test.sh sets WAYPOST_BINS_FRESH (its workspace run built every binary): never
        // swap a binary under the tests running in parallel.
        if !stale.is_empty() && std::env::var_os("WAYPOST_BINS_FRESH").is_none() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            // Same features as the test command, so a rebuild never drops the nameserver's `eth`.
            cmd.current_dir(&root).args(["build", "--locked"]);
            if stale.contains(&"nameserver") {
                cmd.args(["--features", "waypost-nameserver/eth"]);
            }
            for bin in &stale {
                let pkg = format!("waypost-{bin}");
                cmd.args(["-p", &pkg, "--bin", bin]);
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build of {stale:?} failed");
        }
        dir
    })
}

/// Runs `scripts/check-deploy.py` with the given checks; returns (success, report).
fn check_deploy(args: &[&str]) -> (bool, String) {
    let root = root();
    let out = Command::new(python())
        .current_dir(&root)
        .arg(root.join("scripts/check-deploy.py"))
        .args(args)
        .output()
        .expect("run scripts/check-deploy.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::io::stdout().write_all(report.as_bytes());
    (out.status.success(), report)
}

fn assert_check(args: &[&str]) -> String {
    let (ok, report) = check_deploy(args);
    assert!(ok, "scripts/check-deploy.py {args:?} failed:\n{report}");
    assert!(
        report.contains("\n0 failed"),
        "unexpected report:\n{report}"
    );
    report
}

#[test]
fn dockerfile_passes_hadolint_and_builds_with_the_ci_release_command() {
    let r = assert_check(&["dockerfile"]);
    assert!(r.contains("ok: hadolint deploy/Dockerfile"), "{r}");
    assert!(
        r.contains("ok: Dockerfile: build via scripts/build-release.sh"),
        "{r}"
    );
}

#[test]
fn release_script_builds_every_server_binary_locked() {
    let out = Command::new("bash")
        .arg(root().join("scripts/build-release.sh"))
        .arg("--print")
        .output()
        .unwrap();
    assert!(out.status.success());
    let cmd = String::from_utf8(out.stdout).unwrap();
    let args: Vec<&str> = cmd.lines().collect();
    assert_eq!(args[..4], ["cargo", "build", "--release", "--locked"]);
    for (bin, _) in SERVERS {
        let pkg = format!("waypost-{bin}");
        assert!(
            args.windows(4).any(|w| w == ["-p", &pkg, "--bin", bin]),
            "{bin} missing from {args:?}"
        );
    }
    // Its features (if any) are checked against what CI tests by check-deploy.py `dockerfile`.
    assert!(
        !args
            .iter()
            .any(|a| a.contains("all-features") || a.contains("no-default-features")),
        "{args:?}"
    );
}

#[test]
fn compose_file_agrees_with_dockerfile_and_configs() {
    assert_check(&["compose"]);
}

#[test]
fn systemd_units_are_hardened_and_verify() {
    assert_check(&["systemd"]);
}

#[test]
fn helm_chart_renders_and_validates_with_default_and_ci_values() {
    let r = assert_check(&["helm"]);
    assert!(r.contains("ok: helm render with default values"), "{r}");
    assert!(r.contains("ok: helm render with ci/values-"), "{r}");
}

#[test]
fn shipped_and_rendered_configs_pass_check_config() {
    let dir = bin_dir().to_str().unwrap();
    let r = assert_check(&["--bin-dir", dir, "configs"]);
    // Every server either validated its files or is reported as not implemented yet.
    for (bin, _) in SERVERS {
        assert!(
            r.contains(&format!("{bin} --check-config: {bin}: configuration ok"))
                || r.contains(&format!("{bin} is not implemented yet")),
            "{bin}: neither checked nor skipped:\n{r}"
        );
    }
}

/// The check can fail: a shipped config with a key the server does not know is caught by the
/// server's own `--check-config` (exit 64), through the same code path as the real files.
#[test]
fn check_config_catches_an_unknown_key() {
    let dir = bin_dir().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("nameserver.toml");
    std::fs::write(&bad, "listen = \"0.0.0.0:8080\"\nno-such-key = 1\n").unwrap();
    let out = Command::new(bin_dir().join("nameserver"))
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{dir}: {out:?}");
    let (ok, r) = check_deploy(&[
        "--bin-dir",
        dir,
        "--config-dir",
        tmp.path().to_str().unwrap(),
        "configs",
    ]);
    assert!(!ok, "{r}");
    assert!(
        r.contains("FAIL: ") && r.contains("nameserver.toml: nameserver --check-config exited 64"),
        "{r}"
    );
}

/// The chart binds the admin listener publicly (httpGet probes, Prometheus scraping) exactly for
/// the servers that have an `admin-public` key: the table in the chart must match the servers'
/// configuration structs.
#[test]
fn chart_admin_table_matches_the_servers_config_keys() {
    let root = root();
    let helpers =
        std::fs::read_to_string(root.join("helm/waypost/templates/_helpers.tpl")).unwrap();
    let table = helpers
        .lines()
        .find(|l| l.contains("$t := dict"))
        .expect("admin table in _helpers.tpl");
    for (bin, pkg_dir) in SERVERS {
        let mut has_admin_public = false;
        let mut has_config = false;
        for e in std::fs::read_dir(root.join(pkg_dir).join("src"))
            .unwrap()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains("layered_config!") {
                has_config = true;
                has_admin_public |= text.contains("pub admin_public:");
            }
        }
        assert!(
            has_config,
            "{bin}: no layered_config! found under {pkg_dir}/src"
        );
        let chart_public = table.contains(&format!("\"{bin}\" true"));
        assert!(
            table.contains(&format!("\"{bin}\" ")),
            "{bin} missing from the chart's admin table: {table}"
        );
        // Both directions: a public admin listener needs the server's admin-public key, and a
        // server that has the key gets its admin port bound publicly so Prometheus can scrape it
        // (the NetworkPolicy confines it to `networkPolicy.adminFrom`).
        assert_eq!(
            chart_public, has_admin_public,
            "{bin}: chart admin table says public={chart_public}, server has admin-public={has_admin_public}"
        );
    }
}
