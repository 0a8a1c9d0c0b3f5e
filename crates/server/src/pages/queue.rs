//! `GET /review/queue`: the review queue at a glance, server-rendered from the review
//! store: what is waiting and why (by flag), where items stand (by state), how long the
//! oldest has waited, and the next items in work order, disputed ones highlighted.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Html;
use chrono::Utc;
use serde::Deserialize;
use vigil_core::review::{Flag, ItemState};
use vigil_store::{ReviewItem, ReviewQuery};

use super::{Nav, age, esc, layout_for, notice, url_encode};
use crate::AppState;
use crate::auth::PageUser;

/// Items listed: a shift's next stretch of work; the summary counts all of them.
const LISTED: usize = 50;

/// Query of `GET /review/queue`.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// Only this model.
    pub model: Option<String>,
}

/// `GET /review/queue`
pub async fn queue(
    State(state): State<AppState>,
    user: Option<Extension<PageUser>>,
    Query(q): Query<QueueQuery>,
) -> Html<String> {
    let model = q.model.filter(|m| !m.is_empty());
    let body = match super::review::store(&state) {
        Some(store) => {
            let summary = store.queue_summary(model.as_deref()).await;
            let items = store
                .review_items(&ReviewQuery {
                    model: model.clone(),
                    states: vec![
                        ItemState::Open,
                        ItemState::AwaitingSecond,
                        ItemState::Disputed,
                    ],
                    limit: LISTED,
                })
                .await;
            match (summary, items) {
                (Ok(summary), Ok(items)) => render(model.as_deref(), &summary, &items),
                (Err(e), _) | (_, Err(e)) => notice(
                    "warn",
                    &format!(
                        "The review queue could not be read: {}",
                        esc(&e.to_string())
                    ),
                ),
            }
        }
        None => super::review::no_store_notice(),
    };
    // Refreshed every 30 s: the page is left open on a supervisor's screen.
    layout_for(
        user.as_deref(),
        "Review queue",
        Nav::Queue,
        &format!("<h1>Review queue</h1>{body}"),
        r#"<meta http-equiv="refresh" content="30">"#,
    )
}

fn render(
    model: Option<&str>,
    summary: &vigil_store::QueueSummary,
    items: &[ReviewItem],
) -> String {
    let now = Utc::now();
    let count = |state: ItemState| summary.by_state.get(state.as_str()).copied().unwrap_or(0);
    let waiting: u64 = ItemState::ALL
        .iter()
        .filter(|s| s.needs_inspector())
        .map(|s| count(*s))
        .sum();
    let mut s = String::new();
    if let Some(m) = model {
        let _ = write!(
            s,
            r#"<p class="muted">Model <b>{}</b> only. <a href="/review/queue">All models</a></p>"#,
            esc(m)
        );
    }
    let _ = write!(
        s,
        r#"<div class="stats"><div class="stat big" data-stat="waiting"><span>{waiting}</span>waiting for an inspector</div><div class="stat" data-stat="oldest"><span>{oldest}</span>oldest waiting</div><div class="stat" data-stat="claimed"><span>{claimed}</span>being reviewed now</div><div class="stat" data-stat="done"><span>{done}</span>settled</div><a class="button primary" href="/review{only}">Start reviewing →</a></div>"#,
        only = model.map_or_else(String::new, |m| format!("?model={}", esc(&url_encode(m)))),
        oldest = summary
            .oldest_open_at
            .map_or_else(|| "–".to_owned(), |t| age(t, now)),
        claimed = summary.claimed,
        done = count(ItemState::Done),
    );

    s.push_str(r#"<div class="cols"><section class="card col"><h2>Why they are waiting</h2><table class="grid-table counts" id="by-flag"><tbody>"#);
    for flag in Flag::ALL {
        let n = summary
            .open_by_flag
            .get(flag.as_str())
            .copied()
            .unwrap_or(0);
        let _ = write!(
            s,
            r#"<tr data-flag="{f}"><td><span class="flag flag-{f}">{f}</span></td><td class="muted">{d}</td><td class="num">{n}</td></tr>"#,
            f = flag.as_str(),
            d = esc(flag.describe()),
        );
    }
    s.push_str(r#"</tbody></table></section><section class="card col"><h2>Where they stand</h2><table class="grid-table counts" id="by-state"><tbody>"#);
    for st in ItemState::ALL {
        let _ = write!(
            s,
            r#"<tr data-state="{st}"><td><span class="state state-{st}">{label}</span></td><td class="muted">{d}</td><td class="num">{n}</td></tr>"#,
            st = st.as_str(),
            label = st.as_str().replace('_', " "),
            d = state_words(st),
            n = count(st),
        );
    }
    s.push_str("</tbody></table></section></div>");

    let _ = write!(
        s,
        r#"<section class="card"><header><h2>Next in work order</h2><span class="muted">{} shown, most urgent first</span></header>"#,
        items.len()
    );
    if items.is_empty() {
        s.push_str(&notice("empty", "Nothing is waiting. The queue is empty."));
    } else {
        s.push_str(r#"<table class="grid-table items" id="items"><thead><tr><th class="num">id</th><th>model</th><th>version</th><th>prediction</th><th class="num">confidence</th><th>flags</th><th>state</th><th class="num">age</th><th>claimed by</th></tr></thead><tbody>"#);
        for it in items {
            let flags: String = it
                .flags
                .iter()
                .map(|f| {
                    format!(
                        r#"<span class="flag flag-{f}" title="{d}">{f}</span>"#,
                        f = f.as_str(),
                        d = esc(f.describe())
                    )
                })
                .collect();
            let _ = write!(
                s,
                r#"<tr class="row-{st}" data-id="{id}"><td class="num">{id}</td><td>{m}</td><td>{v}</td><td><b>{l}</b></td><td class="num">{c:.1}%</td><td>{flags}</td><td><span class="state state-{st}">{stw}</span>{nv}</td><td class="num">{a}</td><td>{claim}</td></tr>"#,
                st = it.state.as_str(),
                stw = it.state.as_str().replace('_', " "),
                id = it.id,
                m = esc(&it.model),
                v = esc(&it.version),
                l = esc(&it.label),
                c = f64::from(it.confidence) * 100.0,
                a = age(it.at, now),
                nv = match it.verdicts.len() {
                    0 => String::new(),
                    1 => r#" <small class="muted">1 verdict</small>"#.to_owned(),
                    n => format!(r#" <small class="muted">{n} verdicts</small>"#),
                },
                claim = it
                    .claim
                    .as_ref()
                    .map_or_else(String::new, |c| esc(&c.inspector)),
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");
    s
}

/// What a state means, for the page.
fn state_words(s: ItemState) -> &'static str {
    match s {
        ItemState::Open => "no verdict yet",
        ItemState::AwaitingSecond => "overturned once; needs a second inspector",
        ItemState::Disputed => "inspectors disagree; another decides",
        ItemState::Done => "settled",
    }
}
