//! The deployment files under `deploy/`: the systemd units pass
//! `systemd-analyze verify` without a single diagnostic, the Kubernetes
//! manifests pass `kubernetes-validate --strict` (PyPI, pinned in
//! `scripts/install-deps.sh`) with every resource checked against a schema,
//! and both start `dwell serve` with flags and environment variables this
//! build of dwell knows. Each checker is also shown a deliberately broken
//! file, generated in a temp dir, and must reject it. A missing tool skips
//! its test with the reason printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dwell_testkit::{has_tools, skip};
use serde_json::Value;

/// The Kubernetes versions the manifests are validated against: the oldest
/// and newest schemas of the pinned kubernetes-validate.
const KUBE_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `name` found in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `dwell serve`'s help: every flag and the environment variable each reads.
fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dwell"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dwell serve --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `dwell serve` accepts `args` (clap checks every flag and value
/// before it reaches the trailing `--help`, which stops it from serving).
fn serve_accepts(args: &[String]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_dwell"))
        .arg("serve")
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dwell serve {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// True when `var` is one `dwell serve` reads (shown in its help, or the
/// log filter, which the daemon's logging reads).
fn dwell_reads(help: &str, var: &str) -> bool {
    var == "DWELL_LOG"
        || help.contains(&format!("[env: {var}="))
        || help.contains(&format!("[env: {var}]"))
}

// ---------------------------------------------------------------- systemd

const UNITS: [&str; 2] = ["dwell.service", "dwell-node.service"];

/// The value of every `key=` line of a unit (in order).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

/// `systemd-analyze verify` of `unit` (its text) as `name`, with the
/// ExecStart binary pointed at this build's dwell (verify wants it to
/// exist). Verify exits 0 on unknown keys and unparsable values and only
/// prints them, so any output at all is a failure.
fn verify_unit(name: &str, unit: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/dwell", env!("CARGO_BIN_EXE_dwell")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: {} {said}", out.status))
    }
}

#[test]
fn systemd_units_verify_cleanly() {
    if !has_tools(&["systemd-analyze"]) {
        return;
    }
    for name in UNITS {
        let unit = read(&deploy_dir().join("systemd").join(name));
        verify_unit(name, &unit).unwrap();
    }
}

#[test]
fn systemd_verify_rejects_a_broken_unit() {
    if !has_tools(&["systemd-analyze"]) {
        return;
    }
    let unit = read(&deploy_dir().join("systemd/dwell-node.service"));
    // A misspelt value and a misspelt key: systemd ignores both with a
    // warning, which would silently kill every sandbox on a restart.
    let typo = unit.replace("KillMode=process", "KillMode=proces");
    let err = verify_unit("dwell-node.service", &typo).unwrap_err();
    assert!(err.contains("kill mode"), "{err}");
    let key = unit.replace("Delegate=yes", "Delgate=yes");
    let err = verify_unit("dwell-node.service", &key).unwrap_err();
    assert!(err.contains("Delgate"), "{err}");
    // An ExecStart that does not exist.
    let gone = unit.replace("/usr/local/bin/dwell", "/nonexistent/dwell");
    let err = verify_unit("dwell-node.service", &gone).unwrap_err();
    assert!(err.contains("/nonexistent/dwell"), "{err}");
}

#[test]
fn systemd_units_keep_sandboxes_across_restarts() {
    for name in UNITS {
        let unit = read(&deploy_dir().join("systemd").join(name));
        for (key, want) in [
            ("KillMode", "process"),
            ("Delegate", "yes"),
            ("Restart", "on-failure"),
            ("After", "network-online.target"),
            ("Wants", "network-online.target"),
            ("LimitNOFILE", "1048576"),
        ] {
            assert_eq!(unit_values(&unit, key), [want], "{name}: {key}");
        }
        // A private mount namespace or /tmp would take the daemon's mounts
        // away from the host (and from the daemon after a restart).
        for key in [
            "PrivateTmp",
            "ProtectSystem",
            "PrivateDevices",
            "PrivateMounts",
        ] {
            assert!(unit_values(&unit, key).is_empty(), "{name} sets {key}");
        }
    }
}

/// `KEY=VALUE` lines of an EnvironmentFile (comments and blanks skipped).
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// An ExecStart line as systemd runs it: words split at spaces, `$NAME` as
/// a word becomes the value's words (none when unset or empty), `${NAME}`
/// the value as one word.
fn systemd_expand(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    assert!(
        !line.contains(['"', '\'', '\\']),
        "the test's expansion knows no quoting: {line}"
    );
    let mut words = Vec::new();
    for w in line.split_whitespace() {
        if let Some(name) = w.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let value = env.get(name).map(String::as_str).unwrap_or("");
            words.extend(value.split_whitespace().map(str::to_string));
            continue;
        }
        let mut out = w.to_string();
        while let Some(start) = out.find("${") {
            let end = start + out[start..].find('}').expect("unclosed ${");
            let name = &out[start + 2..end];
            let value = env
                .get(name)
                .unwrap_or_else(|| panic!("ExecStart uses ${{{name}}}, which nothing sets"))
                .clone();
            out.replace_range(start..=end, &value);
        }
        words.push(out);
    }
    words
}

#[test]
fn systemd_node_unit_starts_a_node_dwell_knows() {
    let help = serve_help();
    let unit = read(&deploy_dir().join("systemd/dwell-node.service"));
    let mut env = env_file(&read(&deploy_dir().join("systemd/dwell-node.env.example")));
    for e in unit_values(&unit, "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        env.insert(k.to_string(), v.to_string());
    }
    assert_eq!(
        unit_values(&unit, "EnvironmentFile"),
        ["/etc/dwell/dwell-node.env"]
    );
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let words = systemd_expand(&exec[0], &env);
    assert_eq!(words[..2], ["/usr/local/bin/dwell", "serve"]);
    serve_accepts(&words[2..]).unwrap();
    // Every setting of the example is read by dwell or put on its command
    // line by the unit: none is silently ignored.
    for var in env.keys() {
        let used = exec[0].contains(&format!("${{{var}}}")) || exec[0].contains(&format!("${var}"));
        assert!(
            used || dwell_reads(&help, var) || var.starts_with("AWS_"),
            "{var} is set for the node but neither dwell nor the unit reads it"
        );
    }
    // The cluster's essentials are all there.
    for var in [
        "DWELL_CLUSTER",
        "DWELL_ADVERTISE",
        "DWELL_CLUSTER_SECRET_FILE",
    ] {
        assert!(env.contains_key(var), "{var} missing");
    }
    assert!(words.iter().any(|w| w == "--object-store"));
    assert!(words.iter().any(|w| w == "--snapshot-key"));
    // The single node's unit starts too.
    let single = read(&deploy_dir().join("systemd/dwell.service"));
    let exec = unit_values(&single, "ExecStart");
    let words = systemd_expand(&exec[0], &BTreeMap::new());
    serve_accepts(&words[2..]).unwrap();
    assert!(!words.iter().any(|w| w.starts_with("--cluster")));
}

#[test]
fn a_flag_dwell_does_not_know_is_caught() {
    let words = systemd_expand(
        "/usr/local/bin/dwell serve --object-store ${S} $F",
        &BTreeMap::from([
            ("S".to_string(), "s3://b/p".to_string()),
            ("F".to_string(), "--s3-endpont http://x".to_string()),
        ]),
    );
    assert_eq!(
        words[2..],
        ["--object-store", "s3://b/p", "--s3-endpont", "http://x"]
    );
    let err = serve_accepts(&words[2..]).unwrap_err();
    assert!(err.contains("--s3-endpont"), "{err}");
}

// ------------------------------------------------------------- Kubernetes

/// The manifests kubectl applies, and the Secret template.
const MANIFESTS: [&str; 5] = [
    "namespace.yaml",
    "configmap.yaml",
    "daemonset.yaml",
    "service.yaml",
    "secret.example.yaml",
];

fn kube(name: &str) -> PathBuf {
    deploy_dir().join("kubernetes").join(name)
}

/// The kubernetes-validate command, or None (skip printed).
fn validator() -> Option<PathBuf> {
    let found = on_path("kubernetes-validate");
    if found.is_none() {
        skip("kubernetes-validate is not on PATH (scripts/install-deps.sh installs it)");
    }
    found
}

/// Validate one file strictly against every version in [`KUBE_VERSIONS`].
/// kubernetes-validate exits 0 for a resource it has no schema for (a
/// misspelt apiVersion or kind) and only warns: anything but an INFO line
/// that a resource passed is a failure here.
fn validate(tool: &Path, file: &Path) -> Result<(), String> {
    let mut cmd = Command::new(tool);
    cmd.arg("--strict");
    for v in KUBE_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = cmd.arg(file).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let all_passed = !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.starts_with("INFO ") && l.contains(" passed for resource "));
    if out.status.success() && all_passed {
        Ok(())
    } else {
        Err(format!("{}: {} {said}", file.display(), out.status))
    }
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let Some(tool) = validator() else {
        return;
    };
    for name in MANIFESTS {
        validate(&tool, &kube(name)).unwrap();
    }
}

#[test]
fn kubernetes_validate_rejects_broken_manifests() {
    let Some(tool) = validator() else {
        return;
    };
    let ds = read(&kube("daemonset.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let broken = |what: &str, text: String| -> String {
        assert_ne!(text, ds, "{what}: the replacement did not apply");
        let path = dir.path().join(format!("{what}.yaml"));
        std::fs::write(&path, text).unwrap();
        validate(&tool, &path).unwrap_err()
    };
    // A wrong type.
    let err = broken(
        "type",
        ds.replace("privileged: true", "privileged: \"yes\""),
    );
    assert!(err.contains("ERROR") && err.contains("privileged"), "{err}");
    // An unknown field, which only --strict rejects (and Kubernetes drops).
    let err = broken(
        "field",
        ds.replace("hostPID: true", "hostPID: true\n      hostPIDs: true"),
    );
    assert!(err.contains("ERROR") && err.contains("hostPIDs"), "{err}");
    // A misspelt apiVersion: no schema, only a warning from the tool.
    let err = broken(
        "api",
        ds.replace("apiVersion: apps/v1", "apiVersion: app/v1"),
    );
    assert!(err.contains("WARN"), "{err}");
}

/// A YAML file's documents as JSON (PyYAML, which kubernetes-validate
/// brings), or None (skip printed) without it.
fn yaml(path: &Path) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            skip("python3 has no yaml module (PyYAML; scripts/install-deps.sh installs it with kubernetes-validate)");
            None
        }
        Ok(o) => panic!("{}: {}", path.display(), String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            skip(&format!("python3 cannot run: {e}"));
            None
        }
    }
}

fn one(path: &Path) -> Option<Value> {
    let mut docs = yaml(path)?;
    assert_eq!(docs.len(), 1, "{}: one resource per file", path.display());
    docs.pop()
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr}"))
}

#[test]
fn kustomization_lists_every_manifest_but_the_secret_template() {
    let Some(k) = one(&kube("kustomization.yaml")) else {
        return;
    };
    assert_eq!(str_of(&k, "/kind"), "Kustomization");
    assert_eq!(str_of(&k, "/namespace"), "dwell");
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let want: Vec<&str> = MANIFESTS
        .into_iter()
        .filter(|m| *m != "secret.example.yaml")
        .collect();
    assert_eq!(listed, want);
    // Nothing in the directory is forgotten by both lists.
    for entry in std::fs::read_dir(deploy_dir().join("kubernetes")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "kustomization.yaml" || MANIFESTS.contains(&name.as_str()),
            "{name} is in deploy/kubernetes but neither applied nor validated"
        );
    }
    // Every resource is in the namespace the kustomization names.
    for m in MANIFESTS.into_iter().filter(|m| *m != "namespace.yaml") {
        let Some(r) = one(&kube(m)) else { return };
        assert_eq!(str_of(&r, "/metadata/namespace"), "dwell", "{m}");
    }
}

#[test]
fn daemonset_runs_a_cluster_node() {
    let (Some(ds), Some(secret), Some(config), Some(svc)) = (
        one(&kube("daemonset.yaml")),
        one(&kube("secret.example.yaml")),
        one(&kube("configmap.yaml")),
        one(&kube("service.yaml")),
    ) else {
        return;
    };
    let help = serve_help();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "sandboxes would die with the daemon");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);

    // Environment: what the downward API, the Secret and the ConfigMap give.
    let mut env = BTreeMap::new();
    for (k, v) in config["data"].as_object().unwrap() {
        env.insert(k.clone(), v.as_str().unwrap().to_string());
    }
    assert_eq!(
        str_of(c, "/envFrom/0/configMapRef/name"),
        str_of(&config, "/metadata/name")
    );
    let secret_keys = secret["stringData"].as_object().unwrap();
    let secret_name = str_of(&secret, "/metadata/name");
    for e in c["env"].as_array().unwrap() {
        let name = str_of(e, "/name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            // $(VAR) refers to a variable defined before it.
            expand_kube(v, &env).unwrap()
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            assert_eq!(str_of(r, "/name"), secret_name);
            let key = str_of(r, "/key");
            assert!(secret_keys.contains_key(key), "{key} not in the Secret");
            format!("secret:{key}")
        } else {
            let field = str_of(e, "/valueFrom/fieldRef/fieldPath");
            format!("field:{field}")
        };
        env.insert(name, value);
    }
    assert_eq!(env["DWELL_NODE_NAME"], "field:spec.nodeName");
    assert_eq!(env["POD_IP"], "field:status.podIP");
    assert_eq!(env["DWELL_ADVERTISE"], "field:status.podIP:7071");
    assert_eq!(env["DWELL_CLUSTER"], "secret:postgres-url");
    for var in env.keys() {
        assert!(
            dwell_reads(&help, var)
                || var.starts_with("AWS_")
                || var == "POD_IP"
                || c["args"].to_string().contains(&format!("$({var})")),
            "{var} is set for the node but nothing reads it"
        );
    }

    // The command line: the wrapper, then flags dwell knows.
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[command.len() - 2..],
        ["/usr/local/bin/dwell", "serve"]
    );
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| expand_kube(a.as_str().unwrap(), &env).unwrap())
        .collect();
    serve_accepts(&args).unwrap();
    assert!(args.contains(&"--listen=0.0.0.0:7070".to_string()));

    // Key files: one regular file each from the Secret, at the paths given.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    for (path, key) in [
        (env["DWELL_CLUSTER_SECRET_FILE"].as_str(), "cluster-secret"),
        ("/etc/dwell/snapshot.key", "snapshot-key"),
    ] {
        let m = mount_of(path);
        assert_eq!(m["subPath"], key, "{path}: a subPath mount, not a symlink");
        assert!(secret_keys.contains_key(key));
    }
    // Host paths: the data dir (mounts propagate back to the host) and /dev.
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    for path in ["/var/lib/dwell", "/dev", "/sys/fs/cgroup"] {
        let m = mount_of(path);
        let v = volume(m["name"].as_str().unwrap());
        assert_eq!(str_of(&v, "/hostPath/path"), path);
    }
    assert_eq!(
        mount_of("/var/lib/dwell")["mountPropagation"],
        "Bidirectional"
    );
    assert_eq!(
        str_of(&volume("secrets"), "/secret/secretName"),
        secret_name
    );

    // Probes: GET /healthz on the API port, the one --listen serves.
    let api = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "api")
        .unwrap();
    assert_eq!(api["containerPort"], 7070);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "api", "{probe}");
    }
    assert!(c["resources"]["requests"].is_object());

    // The Service reaches these pods' API port.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects {k}={v}");
    }
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "api");
    assert_eq!(ds["spec"]["selector"]["matchLabels"], *labels);
}

/// Kubernetes' `$(VAR)` expansion of an env value or argument; an unknown
/// variable is an error here (Kubernetes would leave it as it is).
fn expand_kube(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = s.to_string();
    while let Some(start) = out.find("$(") {
        let end = start
            + out[start..]
                .find(')')
                .ok_or_else(|| format!("unclosed $( in {s}"))?;
        let name = &out[start + 2..end];
        let value = env
            .get(name)
            .ok_or_else(|| format!("{s} uses $({name}), which is not defined before it"))?
            .clone();
        out.replace_range(start..=end, &value);
    }
    Ok(out)
}

#[test]
fn an_undefined_kubernetes_variable_is_caught() {
    let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
    assert_eq!(expand_kube("x$(A):7071", &env).unwrap(), "x1:7071");
    let err = expand_kube("--s3-endpoint=$(DWELL_S3_ENDPONT)", &env).unwrap_err();
    assert!(err.contains("DWELL_S3_ENDPONT"), "{err}");
}
