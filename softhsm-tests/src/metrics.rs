//! Reading a server's `GET /metrics` (admin listener) in tests: the Prometheus text
//! parsed strictly into samples, and sums over series.

use std::collections::HashMap;

use anyhow::{Context, bail};

/// Samples of a Prometheus text exposition: `name{labels}` → value. Fails on a line
/// that is not a comment, blank or `name[{labels}] value`, on an unknown `TYPE` and on
/// a series listed twice.
pub fn parse(text: &str) -> anyhow::Result<HashMap<String, f64>> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split(' ').nth(1).unwrap_or_default();
                if !["counter", "gauge", "histogram"].contains(&kind) {
                    bail!("TYPE line {line:?}");
                }
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').with_context(|| format!("sample line {line:?}"))?;
        let value: f64 = value.parse().with_context(|| format!("value in {line:?}"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            bail!("metric name in {line:?}");
        }
        if name_end < series.len() && !series.ends_with('}') {
            bail!("labels in {line:?}");
        }
        if samples.insert(series.to_string(), value).is_some() {
            bail!("duplicate series {series}");
        }
    }
    Ok(samples)
}

/// Sum of the samples whose series starts with `prefix` and contains every `part`.
pub fn sum(samples: &HashMap<String, f64>, prefix: &str, parts: &[&str]) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix) && parts.iter().all(|p| k.contains(p))).map(|(_, v)| v).sum()
}

/// Scrapes `{admin_url}/metrics`: the text and its samples.
pub async fn scrape(admin_url: &str) -> anyhow::Result<(String, HashMap<String, f64>)> {
    let r = reqwest::get(format!("{admin_url}/metrics")).await?;
    if r.status() != 200 {
        bail!("GET /metrics answered {}", r.status());
    }
    let text = r.text().await?;
    let samples = parse(&text)?;
    Ok((text, samples))
}

/// The value of one series (e.g. `symbolon_websockets_open`); fails when absent.
pub async fn value(admin_url: &str, series: &str) -> anyhow::Result<f64> {
    let (_, samples) = scrape(admin_url).await?;
    samples.get(series).copied().with_context(|| format!("no series {series} in /metrics"))
}

/// HSM operations the server's pool ran so far, by operation label
/// (`symbolon_hsm_operations_total`).
pub async fn hsm_operations(admin_url: &str) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let (_, samples) = scrape(admin_url).await?;
    let mut out = std::collections::BTreeMap::new();
    for (series, value) in samples {
        if let Some(labels) = series.strip_prefix("symbolon_hsm_operations_total{") {
            let op = labels.split('"').nth(1).context("operation label")?;
            out.insert(op.to_string(), value as u64);
        }
    }
    if out.is_empty() {
        bail!("no symbolon_hsm_operations_total in /metrics");
    }
    Ok(out)
}
