//! `GET /review`: the page inspectors work the queue in. The server renders the frame (the
//! viewer, the prediction panel, the keyboard help); `assets/review.js` claims items
//! through the JSON review API, draws the decoded pixels on a canvas with window/level,
//! zoom, pan and the tile heat-map, and posts verdicts. Also the review store lookup the
//! other pages share.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Html;
use vigil_core::auth::Caller;
use vigil_core::review::Flag;

use super::{Nav, esc, layout, layout_for, notice};
use crate::AppState;
use crate::auth::PageUser;

/// The review store, if the server has one.
pub fn store(state: &AppState) -> Option<Arc<dyn vigil_store::ReviewStore>> {
    state.review().map(|r| Arc::clone(&r.store))
}

/// What a page says where it needs the review store and the server has none.
pub fn no_store_notice() -> String {
    notice(
        "info",
        "Human review is not configured on this server (no review store), so there is no \
         queue to show. Configure <code>[review]</code> and restart <code>vigil serve</code>.",
    )
}

/// The keys of the page, for the help box (the script binds the same ones).
const KEYS: [(&str, &str); 10] = [
    ("1…9", "label"),
    ("S", "skip"),
    ("C", "comment, Esc leaves"),
    ("H", "tile heat-map"),
    ("A", "auto window/level"),
    ("+ −", "zoom (or the wheel)"),
    ("0", "fit the image"),
    ("drag", "pan"),
    ("right-drag", "window ←→, level ↑↓"),
    ("I", "invert grey"),
];

/// `GET /review`
pub async fn review(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    user: Option<Extension<PageUser>>,
) -> Html<String> {
    if store(&state).is_none() {
        let body = format!("<h1>Review</h1>{}", no_store_notice());
        return layout("Review", Nav::Review, &body, "");
    }
    let flags: BTreeMap<&str, &str> = Flag::ALL
        .iter()
        .map(|f| (f.as_str(), f.describe()))
        .collect();
    let flags = serde_json::to_string(&flags).unwrap_or_else(|_| "{}".to_owned());
    let mut keys = String::new();
    for (k, what) in KEYS {
        let _ = write!(keys, "<span><kbd>{}</kbd> {}</span>", esc(k), esc(what));
    }
    let body = format!(
        r#"<div class="review" id="review" data-flags="{flags}" data-signed-in="{signed_in}">
<section class="viewer" id="viewer">
  <canvas id="view" tabindex="-1"></canvas>
  <div class="viewer-msg" id="viewer-msg">Loading…</div>
  <div class="viewer-bar">
    <label>window <input type="range" id="win" min="1" max="65535" value="255"></label>
    <label>level <input type="range" id="lev" min="0" max="65535" value="128"></label>
    <button type="button" id="auto" title="A">auto</button>
    <button type="button" id="heat" title="H" aria-pressed="false">heat-map</button>
    <button type="button" id="fit" title="0">fit</button>
    <span class="muted" id="viewinfo"></span>
  </div>
</section>
<aside class="panel" id="panel">
  <div class="who">Inspector <b id="inspector">–</b> <button type="button" class="link" id="change-who">change</button></div>
  <div id="item" hidden>
    <div class="prediction"><span class="muted">model says</span> <b id="pred-label"></b> <span id="pred-conf"></span></div>
    <div class="why" id="why"></div>
    <table class="probs" id="probs"></table>
    <dl class="meta" id="meta"></dl>
    <div class="labels" id="labels"></div>
    <textarea id="comment" rows="1" placeholder="Comment (optional, C)"></textarea>
    <div class="actions"><button type="button" id="skip">Skip <kbd>S</kbd></button><span class="status" id="status" role="status"></span></div>
  </div>
  <div id="empty" class="queue-empty" hidden>
    <h2>Nothing left for you</h2>
    <p>The queue has no item you have not already seen. It is checked again every 15 seconds.</p>
    <button type="button" id="again">Check now</button> <a href="/review/queue">Open the queue</a>
  </div>
  <div class="session"><span><b id="done-count">0</b> reviewed this session</span><span><b id="avg-time">–</b> per item</span><span><b id="item-time">0 s</b> on this one</span></div>
  <details class="keys" open><summary>Keyboard</summary><div class="keylist">{keys}</div></details>
</aside>
</div>
<div class="overlay" id="who-dialog" hidden>
  <form class="card" id="who-form">
    <h2>Who is reviewing?</h2>
    <p class="muted">Your name goes with every verdict you give. It is kept in this browser.</p>
    <input id="who-name" name="inspector" autocomplete="name" required maxlength="80" placeholder="Your name">
    <button type="submit" class="primary">Start</button>
  </form>
</div>"#,
        flags = esc(&flags),
        // Signed in with a token: verdicts go under its holder's name, which the page shows
        // and does not ask for.
        signed_in = esc(caller.as_ref().map_or("", |c| c.0.name.as_str())),
    );
    layout_for(
        user.as_deref(),
        "Review",
        Nav::Review,
        &body,
        r#"<script src="/assets/review.js" defer></script>"#,
    )
}
