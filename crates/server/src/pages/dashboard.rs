//! `GET /dashboard`: every deployed model at a glance: its version, the live class shares,
//! confidence and out-of-distribution share (from the runtime's monitor, as `GET
//! /v1/models/{name}/monitoring` has them), its drift statistics over time (the monitoring
//! store's drift windows, as one [`chart::line_chart`]), realised against estimated accuracy,
//! the registry's models with their versions and aliases, and the recent alerts.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::State;
use axum::response::Html;
use chrono::Utc;
use vigil_runtime::{Deployment, LiveWindow};

use super::chart::{self, Chart, Series};
use super::{Nav, age, esc, layout_for, notice, pct, url_encode};
use crate::AppState;
use crate::auth::PageUser;

/// Predictions the live figures cover: the monitoring API's default window.
const LIVE_WINDOW: usize = 200;
/// Drift windows drawn per model.
const DRIFT_WINDOWS: usize = 100;
/// Alerts listed.
const ALERTS: usize = 10;

/// `GET /dashboard`
pub async fn dashboard(
    State(state): State<AppState>,
    user: Option<Extension<PageUser>>,
) -> Html<String> {
    let mut body = String::from(r#"<h1>Dashboard</h1>"#);
    let deployments = state.infer().deployments().list();
    if deployments.is_empty() {
        body.push_str(&notice(
            "empty",
            "No model is deployed. Deploy a bundle (<code>vigil serve</code> with a model, or \
             move an alias) and it appears here.",
        ));
    }
    for d in &deployments {
        body.push_str(&model_section(&state, d).await);
    }
    body.push_str(&registry_section(&state).await);
    body.push_str(&alerts_section(&state).await);
    layout_for(user.as_deref(), "Dashboard", Nav::Dashboard, &body, "")
}

/// One model's card: live figures, drift chart, accuracy.
async fn model_section(state: &AppState, d: &Deployment) -> String {
    let name = d.name().to_string();
    let m = d.monitor();
    let live = m.summary(LiveWindow::Count(LIVE_WINDOW));
    let waiting = match super::review::store(state) {
        Some(store) => match store.queue_summary(Some(&name)).await {
            Ok(q) => {
                let n: u64 = vigil_core::review::ItemState::ALL
                    .iter()
                    .filter(|s| s.needs_inspector())
                    .map(|s| q.by_state.get(s.as_str()).copied().unwrap_or(0))
                    .sum();
                format!("{n} waiting for review →")
            }
            Err(_) => "review queue →".to_owned(),
        },
        None => String::new(),
    };
    let mut s = format!(
        r#"<section class="card model"><header><h2>{n}</h2><span class="pill">version {v}</span><span class="muted">{engine}</span><a class="more" href="/review/queue?model={q}">{waiting}</a></header><div class="cols">"#,
        n = esc(&name),
        q = esc(&url_encode(&name)),
        v = esc(d.version().as_str()),
        engine = esc(d.engine()),
    );

    // Live figures.
    let _ = write!(
        s,
        r#"<div class="col"><h3>Live, last {n} predictions</h3><dl class="figures"><div><dt>predictions</dt><dd>{p}</dd></div><div><dt>mean confidence</dt><dd>{c}</dd></div><div><dt>out of distribution</dt><dd>{o}</dd></div><div><dt>flagged for review</dt><dd>{f}</dd></div></dl><h3>Class shares</h3><table class="bars">"#,
        n = LIVE_WINDOW,
        p = live.predictions,
        c = if live.predictions > 0 {
            pct(Some(live.confidence_mean))
        } else {
            "–".into()
        },
        o = pct(Some(live.ood_share).filter(|_| live.predictions > 0)),
        f = pct(Some(live.flagged_share).filter(|_| live.predictions > 0)),
    );
    for (label, share) in &live.class_shares {
        let _ = write!(
            s,
            r#"<tr><th>{l}</th><td><span class="track"><span class="bar" style="width:{w:.1}%"></span></span></td><td class="num">{p}</td></tr>"#,
            l = esc(label),
            w = (share * 100.0).clamp(0.0, 100.0),
            p = pct(Some(*share)),
        );
    }
    s.push_str("</table>");
    if let Some(w) = m.latest_window() {
        let (class, word) = if w.report.drift {
            ("bad", "drift")
        } else {
            ("good", "no drift")
        };
        let _ = write!(
            s,
            r#"<p class="drift-line"><span class="pill {class}">{word}</span> latest window {ago} ago: {summary}</p>"#,
            ago = age(w.ended_at, Utc::now()),
            summary = esc(&w.report.summary),
        );
    }
    s.push_str("</div>");

    // Drift over time.
    s.push_str(r#"<div class="col wide"><h3>Drift over time</h3>"#);
    s.push_str(&drift_chart(state, &name).await);
    s.push_str("</div>");

    // Accuracy.
    s.push_str(r#"<div class="col"><h3>Accuracy</h3>"#);
    s.push_str(&performance_table(state, &name).await);
    s.push_str("</div></div></section>");
    s
}

/// The drift windows of `model` as one line per signal, each divided by its own threshold
/// so that every signal crosses the same reference line at 1.
async fn drift_chart(state: &AppState, model: &str) -> String {
    let Some(store) = state.monitor_store() else {
        return notice(
            "info",
            "This server keeps no monitoring store, so there is no drift history.",
        );
    };
    let rows = match store.drift_windows(model, None, None, DRIFT_WINDOWS).await {
        Ok(rows) => rows,
        Err(e) => {
            return notice(
                "warn",
                &format!(
                    "The drift history could not be read: {}",
                    esc(&e.to_string())
                ),
            );
        }
    };
    let mut series: Vec<Series> = Vec::new();
    for row in &rows {
        let signals = row.report["signals"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        for sig in signals {
            let (Some(name), Some(stat), Some(threshold)) = (
                sig["name"].as_str(),
                sig["statistic"].as_f64(),
                sig["threshold"].as_f64(),
            ) else {
                continue;
            };
            if threshold <= 0.0 {
                continue;
            }
            let point = (row.ended_at, stat / threshold);
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    name: name.to_owned(),
                    points: vec![point],
                }),
            }
        }
    }
    let drifted = rows.iter().filter(|r| r.drift).count();
    let mut out = chart::line_chart(&Chart {
        y_label: "statistic ÷ its threshold".into(),
        reference: Some((1.0, "threshold".into())),
        series,
    });
    if !rows.is_empty() {
        let _ = write!(
            out,
            r#"<p class="muted">{} windows, {} with drift.</p>"#,
            rows.len(),
            drifted
        );
    }
    out
}

/// Active alerts and the latest notifications.
/// The registry's models: versions, the latest, and where each alias points.
async fn registry_section(state: &AppState) -> String {
    let Some(registry) = state.registry() else {
        return String::new();
    };
    let mut s = String::from(r#"<section class="card"><header><h2>Registry</h2></header>"#);
    match registry.list_models().await {
        Ok(models) if models.is_empty() => s.push_str(&notice(
            "info",
            "The registry holds no model yet (<code>vigil models push</code>).",
        )),
        Ok(models) => {
            s.push_str(r#"<table class="grid-table"><thead><tr><th>model</th><th class="num">versions</th><th>latest</th><th>aliases</th><th>last change</th></tr></thead><tbody>"#);
            let now = Utc::now();
            for m in &models {
                let aliases: Vec<String> = m
                    .aliases
                    .iter()
                    .map(|(a, v)| format!("{} → {}", esc(a), esc(v.as_str())))
                    .collect();
                let _ = write!(
                    s,
                    r#"<tr><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    esc(m.name.as_str()),
                    m.versions,
                    m.latest.as_ref().map_or("–".into(), |v| esc(v.as_str())),
                    if aliases.is_empty() {
                        "–".to_owned()
                    } else {
                        aliases.join(", ")
                    },
                    age(m.updated_at, now),
                );
            }
            s.push_str("</tbody></table>");
        }
        Err(e) => s.push_str(&notice(
            "error",
            &format!("The registry cannot be read: {}", esc(&e.to_string())),
        )),
    }
    s.push_str("</section>");
    s
}

async fn alerts_section(state: &AppState) -> String {
    let mut s = String::from(r#"<section class="card"><header><h2>Alerts</h2></header>"#);
    let Some(handle) = state.alerting() else {
        s.push_str(&notice(
            "info",
            "Alerting is off on this server (no rules in <code>[alerts]</code>).",
        ));
        s.push_str("</section>");
        return s;
    };
    let now = Utc::now();
    let active = handle.active();
    if active.is_empty() {
        s.push_str(r#"<p class="ok-line">No alert is pending or firing.</p>"#);
    } else {
        s.push_str(r#"<table class="grid-table"><thead><tr><th>rule</th><th>model</th><th>status</th><th>severity</th><th>since</th><th class="num">value</th></tr></thead><tbody>"#);
        for a in &active {
            let status = serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = write!(
                s,
                r#"<tr class="alert-{status}"><td>{}</td><td>{}</td><td><span class="pill bad">{status}</span></td><td>{}</td><td>{}</td><td class="num">{:.3}</td></tr>"#,
                esc(&a.rule),
                esc(&a.model),
                esc(a.severity.as_str()),
                age(a.since, now),
                a.value,
            );
        }
        s.push_str("</tbody></table>");
    }
    let recent = handle.recent();
    if !recent.is_empty() {
        s.push_str(r#"<h3>Recent notifications</h3><ul class="events">"#);
        for n in recent.iter().rev().take(ALERTS) {
            let _ = write!(
                s,
                r#"<li><span class="pill {cls}">{state}</span> <span class="muted">{ago} ago</span> {msg}</li>"#,
                cls = if n.state.as_str() == "firing" {
                    "bad"
                } else {
                    "good"
                },
                state = n.state.as_str(),
                ago = age(n.at, now),
                msg = esc(&n.message),
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
    s
}

/// Realised against estimated accuracy of `model`, per version, as a table; the estimate
/// is labelled as one.
async fn performance_table(state: &AppState, model: &str) -> String {
    if super::review::store(state).is_none() {
        return r#"<p class="muted">Accuracy needs the review queue (no review store on this server).</p>"#.to_owned();
    }
    let perf = match crate::routes::model_name(model) {
        Ok(name) => crate::review::performance(state, &name, None).await,
        Err(e) => Err(e),
    };
    let perf = match perf {
        Ok(p) => p.versions,
        Err(e) => {
            return notice(
                "warn",
                &format!("Accuracy could not be computed: {}", esc(&e.to_string())),
            );
        }
    };
    if perf.is_empty() {
        return r#"<p class="muted">No verdicts and no logged predictions in the performance window yet.</p>"#.to_owned();
    }
    let mut s = String::new();
    for (v, p) in perf.iter().rev() {
        let (realised, estimated) = (&p.realised, &p.estimated);
        let _ = write!(
            s,
            r#"<div class="perf-version">version {v}</div><dl class="figures perf"><div><dt>realised</dt><dd>{ra}<small>from {rn} verdicts</small></dd></div><div><dt>estimated (from confidence, no verdicts)</dt><dd class="est">{ea}<small>over {en} predictions</small></dd></div></dl>"#,
            v = esc(v),
            ra = pct(realised.accuracy),
            rn = realised.verdicts,
            ea = pct(estimated.accuracy),
            en = estimated.predictions,
        );
    }
    s.push_str(r#"<p class="muted small">The estimate assumes calibrated probabilities (CBPE); an overconfident model looks better than it is. Realised accuracy is what inspectors found.</p>"#);
    s
}
