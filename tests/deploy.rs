//! The deployment kit in `deploy/` against the real tools and the real binary: the alerting
//! rules pass `promtool check rules` and their unit tests (promtool 2.42 and 3.x), the Prometheus configuration in the
//! Kubernetes manifest passes `promtool check config`, the dashboard's queries parse, and every
//! `cairn_*`/`process_*` name the dashboard and the rules use is served by a live `/metrics`
//! (and every `cairn_*` family served is on the dashboard). The flags the systemd unit, the
//! Dockerfile and the manifest pass to cairn are flags `cairn --help` lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::tsdb::head::now_ms;
use common::peer::Peer;
use common::proto::{LabelMatcher, MatchType, Query, ReadRequest, ResponseType, WriteRequest};
use common::server::TestServer;
use regex::Regex;

const RULES: &str = "deploy/alerts/cairn-rules.yml";
const RULES_TEST: &str = "deploy/alerts/cairn-rules.test.yml";
const K8S: &str = "deploy/kubernetes/prometheus-with-cairn.yaml";
const DASHBOARD: &str = "deploy/grafana/cairn-dashboard.json";
const SYSTEMD: &str = "deploy/systemd/cairn.service";
const DOCKERFILE: &str = "deploy/Dockerfile";

/// `cairn_*` families served by `/metrics` that the dashboard deliberately leaves out (none
/// today). A new metric fails `dashboard_covers_every_cairn_metric` until it gets a panel or
/// an entry here.
const NOT_ON_DASHBOARD: &[&str] = &[];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Run the peer's promtool with `args`; panic with its output unless it succeeds. Returns stdout.
fn promtool(peer: Peer, args: &[&str]) -> String {
    let out = Command::new(peer.promtool())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("run promtool {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{peer}: promtool {args:?} failed ({:?}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

peer_tests!(alert_rules_pass_promtool_check_and_unit_tests);

fn alert_rules_pass_promtool_check_and_unit_tests(peer: Peer) {
    let out = promtool(peer, &["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(peer, &["test", "rules", RULES_TEST]);
    assert!(out.contains("SUCCESS"), "{out}");

    // The alerts the kit promises, each with a severity and both annotations.
    let rules = read(RULES);
    for alert in [
        "CairnDown",
        "CairnWALWritesFailing",
        "CairnWALCorruptionRepaired",
        "CairnSamplesRejected",
        "CairnRemoteWriteErrors",
        "CairnRemoteWriteSlow",
    ] {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "{RULES} lacks {alert}"
        );
    }
    let n = rules.matches("- alert: ").count();
    assert_eq!(
        rules.matches("\n        for: ").count(),
        n,
        "every alert has `for`"
    );
    assert_eq!(
        rules.matches("severity: ").count(),
        n,
        "every alert has a severity"
    );
    assert_eq!(
        rules.matches("summary: ").count(),
        n,
        "every alert has a summary"
    );
    assert_eq!(rules.matches("description: ").count(), n);
}

/// The block scalar under `key: |` in a YAML text: the following lines indented deeper than
/// the key, with their common indentation removed.
fn yaml_block_scalar(text: &str, key: &str) -> String {
    let mut lines = text.lines();
    let head = format!("{key}: |");
    let key_indent = loop {
        let l = lines
            .next()
            .unwrap_or_else(|| panic!("no `{head}` block in the manifest"));
        if l.trim_end().trim_start() == head {
            break l.len() - l.trim_start().len();
        }
    };
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("empty block scalar");
    let mut out = String::new();
    for l in body {
        out.push_str(l.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

peer_tests!(kubernetes_prometheus_config_passes_promtool);

fn kubernetes_prometheus_config_passes_promtool(peer: Peer) {
    let manifest = read(K8S);
    let cfg = yaml_block_scalar(&manifest, "prometheus.yml");
    for want in [
        "url: http://localhost:9201/api/v1/write",
        "url: http://localhost:9201/api/v1/read",
        "job_name: cairn",
        "targets: [\"localhost:9201\"]",
    ] {
        assert!(cfg.contains(want), "prometheus.yml lacks {want:?}:\n{cfg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, &cfg).unwrap();
    let out = promtool(peer, &["check", "config", path.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");

    // The shape the kit promises: cairn as a native sidecar, probes, a grace period that
    // covers Prometheus's flush and cairn's 30 s drain, and the hardening.
    for want in [
        "initContainers:",
        "restartPolicy: Always",
        "volumeClaimTemplates:",
        "path: /-/healthy",
        "path: /-/ready",
        "startupProbe:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
        "kind: Service\n",
    ] {
        assert!(manifest.contains(want), "{K8S} lacks {want:?}");
    }
    let grace: u64 = Regex::new(r"terminationGracePeriodSeconds: (\d+)")
        .unwrap()
        .captures(&manifest)
        .expect("terminationGracePeriodSeconds")[1]
        .parse()
        .unwrap();
    assert!(grace >= 60, "terminationGracePeriodSeconds {grace} < 60");
}

peer_tests!(example_prometheus_config_passes_promtool);

/// `examples/prometheus.yml`, the snippet the README's quickstart runs, is a valid Prometheus
/// configuration for both peers, and keeps what cairn cannot store yet switched off.
fn example_prometheus_config_passes_promtool(peer: Peer) {
    let out = promtool(peer, &["check", "config", "examples/prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let cfg = read("examples/prometheus.yml");
    for want in ["send_native_histograms: false", "send_exemplars: false"] {
        assert!(cfg.contains(want), "examples/prometheus.yml lacks {want:?}");
    }
    let k8s = read(K8S);
    for want in ["send_native_histograms: false", "send_exemplars: false"] {
        assert!(k8s.contains(want), "{K8S} lacks {want:?}");
    }
}

/// Every string under an `expr` key.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON")
}

peer_tests!(dashboard_is_well_formed_and_its_queries_parse);

fn dashboard_is_well_formed_and_its_queries_parse(peer: Peer) {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("job")["type"], "query");

    // Panels (and their targets) query through the $datasource variable.
    let panels = d["panels"].as_array().unwrap();
    let mut queried = 0;
    for p in panels {
        if let Some(targets) = p["targets"].as_array() {
            queried += 1;
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
        }
    }
    assert!(queried >= 15, "only {queried} panels query anything");
    assert!(
        panels
            .iter()
            .any(|p| p["title"] == "Head compaction" && p["type"] == "timeseries"),
        "the Storage row's compaction panel is missing"
    );

    // PromQL syntax: every query, Grafana's variables substituted, as a recording rule.
    let mut qs = Vec::new();
    exprs(&d, &mut qs);
    assert!(qs.len() >= 20, "{} queries", qs.len());
    let mut yml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in qs.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$job", "cairn")
            .replace("$instance", ".+");
        assert!(!q.contains('$'), "unknown variable in {q}");
        yml.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: '{}'\n",
            q.replace('\'', "''")
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, yml).unwrap();
    let out = promtool(peer, &["check", "rules", path.to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", qs.len())),
        "{out}"
    );
}

/// Metric names (`cairn_*`, `process_*`) mentioned anywhere in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    Regex::new(r"\b(?:cairn|process)_[a-zA-Z0-9_]+")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// A scrape of a live server that has taken a write (a 204 and a 400) and both kinds of read,
/// so every labelled series exists.
fn live_scrape() -> String {
    let srv = TestServer::start();
    let t = now_ms();
    let ts = |name: &str, samples: &[(i64, f64)]| {
        common::proto::series(&[("__name__", name), ("job", "deploy")], samples)
    };
    let write = |series| {
        srv.write(&WriteRequest {
            timeseries: series,
            ..WriteRequest::default()
        })
        .status
    };
    assert_eq!(write(vec![ts("a", &[(t, 1.0), (t + 1, 2.0)])]), 204);
    assert_eq!(write(vec![ts("a", &[(t - 5, 0.5)])]), 400);
    let q = Query {
        start_timestamp_ms: t - 10,
        end_timestamp_ms: t + 10,
        matchers: vec![LabelMatcher::new(MatchType::Eq, "__name__", "a")],
        hints: None,
    };
    for types in [vec![], vec![ResponseType::StreamedXorChunks as i32]] {
        let r = srv.read(&ReadRequest {
            queries: vec![q.clone()],
            accepted_response_types: types,
        });
        assert_eq!(r.status, 200);
    }
    let r = srv.client().get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

/// Names of the samples in a classic-text exposition (`_bucket`, `_sum`, `_count` included).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_rules_use_is_served() {
    let served = sample_names(&live_scrape());
    assert!(
        served.contains("cairn_remote_write_samples_total"),
        "{served:?}"
    );

    let dashboard_names = names_in(&read(DASHBOARD));
    let rules_names = names_in(&read(RULES));
    assert!(dashboard_names.len() >= 20, "{dashboard_names:?}");
    assert!(rules_names.len() >= 6, "{rules_names:?}");
    for (file, names) in [
        (DASHBOARD, dashboard_names),
        (RULES, rules_names),
        (RULES_TEST, names_in(&read(RULES_TEST))),
    ] {
        // A histogram may be named by its family (in prose) as well as by its series.
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !served.contains(*n) && !served.contains(&format!("{n}_bucket")))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses metric names /metrics does not serve: {missing:?}\nserved: {served:?}"
        );
    }
}

#[test]
fn dashboard_covers_every_cairn_metric() {
    let scrape = live_scrape();
    // Family names from `# TYPE` lines (counters already carry `_total` in the classic format).
    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .filter(|n| n.starts_with("cairn_"))
        .collect();
    assert!(families.len() >= 20, "{families:?}");
    let used = names_in(&read(DASHBOARD));
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !NOT_ON_DASHBOARD.contains(f))
        .filter(|f| {
            !["", "_bucket", "_sum", "_count"]
                .iter()
                .any(|s| used.contains(&format!("{f}{s}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "exported but on no panel of {DASHBOARD} (add a panel, or list in NOT_ON_DASHBOARD): {missing:?}"
    );
}

#[test]
fn deploy_files_pass_only_flags_cairn_knows() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flag = Regex::new(r"--[a-z][a-z0-9.\-]*").unwrap();
    let flags = |text: &str| -> Vec<String> {
        flag.find_iter(text)
            .map(|m| m.as_str().to_string())
            .collect()
    };

    let unit = read(SYSTEMD);
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    assert!(exec.starts_with("/usr/local/bin/cairn "), "{exec}");
    let docker = read(DOCKERFILE);
    let cmd = docker
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/cairn\"]"));
    // The cairn container's args in the manifest: the lines after `- name: cairn` up to `ports:`.
    let manifest = read(K8S);
    let start = manifest.find("- name: cairn\n").expect("cairn container");
    let end = start + manifest[start..].find("ports:").expect("ports:");
    let args = &manifest[start..end];

    for (file, text) in [(SYSTEMD, exec), (DOCKERFILE, cmd), (K8S, args)] {
        let used = flags(text);
        assert!(
            used.iter().any(|f| f == "--storage.tsdb.path"),
            "{file}: {text}"
        );
        for f in used {
            assert!(
                help.contains(&format!("{f}=")),
                "{file} passes {f}, which `cairn --help` does not list"
            );
        }
    }
}
