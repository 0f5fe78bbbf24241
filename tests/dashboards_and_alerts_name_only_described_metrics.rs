//! The Grafana dashboard, the alert rules and the operations guide's metric table name only
//! metrics that Crossfold describes (and so records under that name): a renamed metric cannot
//! leave a panel or an alert silently empty.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

fn described() -> BTreeSet<&'static str> {
    let mut names: BTreeSet<&'static str> = crossfold::core::metrics::COMMAND_METRICS
        .iter()
        .chain(&crossfold::core::metrics::STORE_METRICS)
        .chain(&crossfold::core::metrics::PROJECTION_METRICS)
        .chain(&crossfold::core::metrics::DEADLINE_METRICS)
        .map(|m| m.name)
        .collect();
    names.insert(crossfold::postgres::POOL_CONNECTIONS);
    names.insert(crossfold::postgres::OLDEST_TRANSACTION_AGE_SECONDS);
    names.insert(crossfold::postgres::OLDEST_APPEND_AGE_SECONDS);
    names.insert(crossfold::postgres::GROUP_COMMIT_APPENDS);
    names.insert(crossfold::postgres::REPLAY_LAG_SECONDS);
    names
}

/// Every `crossfold_...` name in `text` but Rust paths (`crossfold_postgres::...`), with the
/// suffixes Prometheus adds to histograms taken off.
fn named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crossfold_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        rest = &tail[end..];
        if !rest.starts_with("::") {
            names.insert(base.to_owned());
        }
    }
    names
}

fn check(file: &str, text: &str) {
    let described = described();
    let unknown: Vec<String> = named_in(text)
        .into_iter()
        .filter(|n| !described.contains(n.as_str()) && !n.ends_with('_'))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file} names metrics nothing records: {unknown:?}"
    );
}

#[test]
fn the_dashboard_names_only_described_metrics() {
    let text = include_str!("../docs/operations/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    assert!(named_in(text).len() >= 10, "the dashboard shows too little");
    check("the dashboard", text);
}

#[test]
fn the_alert_rules_name_only_described_metrics() {
    check("alerts.yml", include_str!("../docs/operations/alerts.yml"));
}

#[test]
fn the_operations_guide_names_only_described_metrics() {
    let guide = include_str!("../docs/operations.md");
    check("docs/operations.md", guide);
    // And its metric table lists every described metric.
    let named = named_in(guide);
    let missing: Vec<&str> = described()
        .into_iter()
        .filter(|n| !named.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not describe {missing:?}"
    );
}

#[test]
fn an_unknown_metric_is_caught() {
    let described = described();
    let named = named_in(
        r#"rate(crossfold_command_duration_seconds_bucket[5m]) + crossfold_renamed_total"#,
    );
    let unknown: Vec<&String> = named
        .iter()
        .filter(|n| !described.contains(n.as_str()))
        .collect();
    assert_eq!(unknown, ["crossfold_renamed_total"]);
}
