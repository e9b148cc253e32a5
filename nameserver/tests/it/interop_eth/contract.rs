//! The committed contract artifacts (`nameserver/contract/Registrar.{abi.json,bin}`) are what
//! the pinned solc-js builds from `Registrar.sol`.

use std::process::Command;

use super::{npm_ci_hint, repo_root};

#[test]
fn committed_abi_and_bytecode_match_a_fresh_build() {
    let root = repo_root();
    assert!(
        root.join("node_modules/solc/package.json").is_file(),
        "{}",
        npm_ci_hint("solc")
    );
    let out = Command::new("node")
        .arg(root.join("nameserver/contract/build.mjs"))
        .arg("--check")
        .output()
        .expect("run node (is Node.js installed?)");
    assert!(
        out.status.success(),
        "contract artifacts are stale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
