//! Tokens and roles: every route guarded as the route table says, roles ordered, the
//! token's holder recorded as the actor and the inspector (a token cannot act as someone
//! else), and the browser sign-in.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use vigil_core::auth::{Role, Secret, TokenEntry};
use vigil_core::review::SecondOpinion;
use vigil_server::HttpLimits;
use vigil_server::auth::{Access, Auth, AuthConfig};
use vigil_server::routes::Method;

use crate::common::*;

/// One token per role, and the auth they make.
struct Tokens {
    config: AuthConfig,
    secrets: Vec<(Role, Secret)>,
}

impl Tokens {
    fn new() -> Tokens {
        let secrets: Vec<(Role, Secret)> = Role::ALL
            .into_iter()
            .map(|r| (r, Secret::generate().unwrap()))
            .collect();
        let tokens = secrets
            .iter()
            .map(|(role, s)| TokenEntry {
                name: format!("{role}-1"),
                role: *role,
                sha256: s.digest(),
            })
            .collect();
        Tokens {
            config: AuthConfig {
                enabled: true,
                tokens,
                ..AuthConfig::default()
            },
            secrets,
        }
    }

    fn auth(&self) -> Option<Arc<Auth>> {
        Auth::from_config(&self.config).unwrap()
    }

    fn secret(&self, role: Role) -> &str {
        self.secrets
            .iter()
            .find(|(r, _)| *r == role)
            .unwrap()
            .1
            .expose()
    }
}

/// `req` with the token of `role`.
fn as_role(mut req: Request<Body>, tokens: &Tokens, role: Role) -> Request<Body> {
    let v = format!("Bearer {}", tokens.secret(role));
    req.headers_mut()
        .insert(header::AUTHORIZATION, v.parse().unwrap());
    req
}

/// A request for `route` with its path parameters filled in and an empty JSON body.
fn request_for(method: Method, path: &str) -> Request<Body> {
    let uri = path
        .replace("{name}", "weldnet")
        .replace("{version}", "1")
        .replace("{alias}", "staging")
        .replace("{id}", "1")
        .replace("{request_id}", "r-1")
        .replace("{file}", "vigil.css");
    let b = match method {
        Method::Get => Request::get(uri),
        Method::Post => Request::post(uri),
        Method::Put => Request::put(uri),
    };
    b.header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap()
}

fn is_refused(r: &Response<Body>) -> bool {
    r.status() == StatusCode::UNAUTHORIZED
        || (r.status() == StatusCode::SEE_OTHER
            && r.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/login?next="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_guarded_as_the_route_table_says() {
    let (state, _) = served(HttpLimits::default()).await;
    let tokens = Tokens::new();
    let app = vigil_server::app(state.clone().with_auth(tokens.auth()));
    let mut guarded = 0;
    for r in vigil_server::routes::table() {
        let what = format!("{:?} {}", r.method, r.path);
        let resp = send(&app, request_for(r.method, r.path)).await;
        match r.access {
            Access::Public | Access::Health | Access::Predict => {
                assert!(!is_refused(&resp), "{what} is open: {}", resp.status());
            }
            Access::Api(_) => {
                guarded += 1;
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(
                    resp.headers()[header::WWW_AUTHENTICATE],
                    "Bearer realm=\"vigil\"",
                    "{what}"
                );
                let body = json(resp).await;
                assert_eq!(body["kind"], "unauthenticated", "{what}");
                assert!(body["request_id"].is_string(), "{what}");
            }
            Access::Page(_) => {
                guarded += 1;
                assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{what}");
                let to = resp.headers()[header::LOCATION].to_str().unwrap();
                assert!(to.starts_with("/login?next=%2F"), "{what}: {to}");
            }
        }
        // A wrong token is no better than none.
        let mut req = request_for(r.method, r.path);
        req.headers_mut()
            .insert(header::AUTHORIZATION, "Bearer vgl_wrong".parse().unwrap());
        let resp = send(&app, req).await;
        assert_eq!(
            is_refused(&resp),
            matches!(r.access, Access::Api(_) | Access::Page(_)),
            "{what} with a wrong token: {}",
            resp.status()
        );
    }
    assert!(guarded > 20, "{guarded} guarded routes");

    // Guarding prediction and health: then they need a token too, of any role.
    let config = AuthConfig {
        guard_predictions: true,
        guard_health: true,
        ..tokens.config.clone()
    };
    let app = vigil_server::app(state.clone().with_auth(Auth::from_config(&config).unwrap()));
    for path in ["/healthz", "/v2/health/ready"] {
        assert_eq!(
            send(&app, get(path)).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let r = send(&app, as_role(get(path), &tokens, Role::Viewer)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let predict = || post("/v1/models/weldnet/predict", "image/png", tile());
    assert_eq!(
        send(&app, predict()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = send(&app, as_role(predict(), &tokens, Role::Viewer)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["model"], "weldnet");
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_ordered_and_the_operator_moves_aliases_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::promote::registry(dir.path()).await;
    let (state, _) = crate::promote::served_from(registry.clone()).await;
    let tokens = Tokens::new();
    let app = vigil_server::app(state.clone().with_auth(tokens.auth()));
    let audit_before = registry.audit_log().await.unwrap().len();
    let move_to = |version: &str, actor: Option<&str>| {
        let mut body = serde_json::json!({"version": version, "reason": "canary"});
        if let Some(a) = actor {
            body["actor"] = a.into();
        }
        Request::put("/v1/models/weldnet/aliases/staging")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };

    // Reading needs a viewer; everyone above may read too.
    for role in Role::ALL {
        let r = send(&app, as_role(get("/metrics"), &tokens, role)).await;
        assert_eq!(r.status(), StatusCode::OK, "{role}");
    }
    // Below operator: 403, naming the roles, and nothing moves.
    for role in [Role::Viewer, Role::Inspector] {
        let r = send(&app, as_role(move_to("2.0.0", None), &tokens, role)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{role}");
        let body = json(r).await;
        assert_eq!(body["kind"], "forbidden");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains(role.as_str()) && msg.contains("operator"),
            "{msg}"
        );
    }
    // An operator cannot record the move under another name.
    let r = send(
        &app,
        as_role(move_to("2.0.0", Some("mallory")), &tokens, Role::Operator),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(json(r).await["error"].as_str().unwrap().contains("mallory"));
    assert_eq!(registry.audit_log().await.unwrap().len(), audit_before);

    // Operator and admin move it; the audit log names the token's holder.
    for (role, version) in [(Role::Operator, "2.0.0"), (Role::Admin, "1.0.0")] {
        let r = send(&app, as_role(move_to(version, None), &tokens, role)).await;
        assert_eq!(r.status(), StatusCode::OK, "{role}");
        assert_eq!(json(r).await["to"], version);
        let history = registry
            .alias_history(
                &"weldnet".parse().unwrap(),
                Some(&"staging".parse().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(history.last().unwrap().actor, format!("{role}-1"));
    }
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_is_recorded_under_the_tokens_holder_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = crate::review::reviewing(dir.path(), 1.0, SecondOpinion::Never).await;
    let tokens = Tokens::new();
    let app = vigil_server::app(state.clone().with_auth(tokens.auth()));
    let predict = as_role(
        Request::post("/v1/models/weldnet/predict")
            .header("content-type", "image/png")
            .header("x-request-id", "auth-1")
            .body(Body::from(tile()))
            .unwrap(),
        &tokens,
        Role::Viewer,
    );
    assert_eq!(send(&app, predict).await.status(), StatusCode::OK);
    let claim = |body: serde_json::Value, role: Role| {
        as_role(
            post("/v1/review/claim", "application/json", body.to_string()),
            &tokens,
            role,
        )
    };
    // A viewer sees the queue but cannot claim.
    let mut queued = false;
    for _ in 0..200 {
        let q = json(
            send(
                &app,
                as_role(get("/v1/review/queue"), &tokens, Role::Viewer),
            )
            .await,
        )
        .await;
        if q["items"].as_array().is_some_and(|i| i.len() == 1) {
            queued = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(queued, "the QA sample queued the prediction");
    let r = send(&app, claim(serde_json::json!({}), Role::Viewer)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // An inspector's token cannot claim as someone else; without a name it claims as itself.
    let r = send(
        &app,
        claim(serde_json::json!({"inspector": "bob"}), Role::Inspector),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(&app, claim(serde_json::json!({}), Role::Inspector)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let item = json(r).await;
    assert_eq!(item["claim"]["inspector"], "inspector-1");

    let verdict = |inspector: Option<&str>| {
        let mut body = serde_json::json!({"token": item["claim"]["token"], "label": "crack"});
        if let Some(i) = inspector {
            body["inspector"] = i.into();
        }
        as_role(
            post(
                &format!("/v1/review/items/{}/verdict", item["id"]),
                "application/json",
                body.to_string(),
            ),
            &tokens,
            Role::Inspector,
        )
    };
    let r = send(&app, verdict(Some("bob"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(&app, verdict(None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let uri = format!("/v1/review/items/{}", item["id"]);
    let stored = json(send(&app, as_role(get(&uri), &tokens, Role::Inspector)).await).await;
    let verdicts = stored["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 1, "the refused verdict changed nothing");
    assert_eq!(verdicts[0]["inspector"], "inspector-1");
    state.infer().shutdown().await;
}

/// The `Set-Cookie` value's `name=value` part.
fn cookie_pair(r: &Response<Body>) -> String {
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

fn form(body: &str) -> Request<Body> {
    post(
        "/login",
        "application/x-www-form-urlencoded",
        body.to_owned(),
    )
}

fn with_cookie(mut req: Request<Body>, cookie: &str) -> Request<Body> {
    req.headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    req
}

/// The session's CSRF value, as a page hands it to its script.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"<meta name="csrf-token" content=""#)
        .expect("a signed-in page carries its CSRF value");
    let rest = &html[at + r#"<meta name="csrf-token" content=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_to_a_server_side_session_and_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = crate::review::reviewing(dir.path(), 0.0, SecondOpinion::Never).await;
    let opts = vigil_store::OpenOptions::new(dir.path());
    let access = vigil_store::open_access(&opts).await.unwrap();
    let tokens = Tokens::new();
    let auth = Auth::new(&tokens.config, Some(access.clone()), None).unwrap();
    let app = vigil_server::app(state.clone().with_auth(auth));

    let page = send(&app, get("/login?next=%2Freview%2Fqueue")).await;
    assert_eq!(page.status(), StatusCode::OK);
    for (h, v) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ] {
        assert_eq!(page.headers()[h], v, "{h}");
    }
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    let html = String::from_utf8(bytes(page).await.to_vec()).unwrap();
    assert!(html.contains(r#"name="token""#), "{html}");
    assert!(html.contains(r#"value="/review/queue""#), "{html}");

    // A wrong token: 401, the form again, no cookie.
    let r = send(&app, form("token=vgl_nope&next=%2Freview%2Fqueue")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    // A sign-in posted from another site: refused.
    let mut cross = form(&format!("token={}", tokens.secret(Role::Viewer)));
    cross
        .headers_mut()
        .insert(header::HOST, "vigil.plant".parse().unwrap());
    cross
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    let r = send(&app, cross).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::SET_COOKIE).is_none());

    // The viewer's token: a session id only the server reads, and on to `next` (never
    // off-site).
    let body = format!(
        "token={}&next=%2Freview%2Fqueue",
        tokens.secret(Role::Viewer)
    );
    let r = send(&app, form(&body)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/review/queue");
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "vigil_session="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains(tokens.secret(Role::Viewer)),
        "the cookie holds the token"
    );
    let cookie = cookie_pair(&r);
    let body = format!(
        "token={}&next=https://evil.example/",
        tokens.secret(Role::Viewer)
    );
    let r = send(&app, form(&body)).await;
    assert_eq!(r.headers()[header::LOCATION], "/");

    // With the cookie: the viewer's pages open (with a sign-out form), the inspector's
    // page is refused; a forged session id is no session.
    let r = send(&app, with_cookie(get("/dashboard"), &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = String::from_utf8(bytes(r).await.to_vec()).unwrap();
    assert!(
        html.contains(r#"action="/logout""#) && html.contains("viewer-1"),
        "{html}"
    );
    let viewer_csrf = csrf_of(&html);
    let r = send(&app, with_cookie(get("/review"), &cookie)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let forged = format!("vigil_session={}", "ab".repeat(32));
    let r = send(&app, with_cookie(get("/dashboard"), &forged)).await;
    assert!(is_refused(&r), "{}", r.status());

    // An inspector's session: the review page carries the holder's name and the CSRF value;
    // a state-changing call without that value is refused, with it it goes through.
    let body = format!("token={}&next=%2Freview", tokens.secret(Role::Inspector));
    let inspector = cookie_pair(&send(&app, form(&body)).await);
    let r = send(&app, with_cookie(get("/review"), &inspector)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = String::from_utf8(bytes(r).await.to_vec()).unwrap();
    assert!(html.contains(r#"data-signed-in="inspector-1""#), "{html}");
    let csrf = csrf_of(&html);
    let claim = || {
        with_cookie(
            post("/v1/review/claim", "application/json", "{}"),
            &inspector,
        )
    };
    let r = send(&app, claim()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(json(r).await["error"].as_str().unwrap().contains("CSRF"));
    let mut with_csrf = claim();
    with_csrf
        .headers_mut()
        .insert("x-csrf-token", csrf.parse().unwrap());
    let r = send(&app, with_csrf).await;
    assert!(r.status().is_success(), "{}", r.status());
    let mut wrong = claim();
    wrong
        .headers_mut()
        .insert("x-csrf-token", viewer_csrf.parse().unwrap());
    assert_eq!(send(&app, wrong).await.status(), StatusCode::FORBIDDEN);

    // Signing out without the CSRF value changes nothing; with it, the session is deleted,
    // the cookie cleared, and a copy of the old cookie is refused.
    let signout = |body: String| {
        with_cookie(
            post("/logout", "application/x-www-form-urlencoded", body),
            &cookie,
        )
    };
    let r = send(&app, signout(String::new())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(&app, with_cookie(get("/dashboard"), &cookie)).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a refused sign-out ended the session"
    );
    let r = send(&app, signout(format!("csrf={viewer_csrf}"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(cookie_pair(&r), "vigil_session=");
    let r = send(&app, with_cookie(get("/dashboard"), &cookie)).await;
    assert!(is_refused(&r), "the old cookie still works: {}", r.status());

    // With auth off, the sign-in page says there is nothing to sign in to.
    let open = vigil_server::app(state.clone());
    let html = String::from_utf8(bytes(send(&open, get("/login")).await).await.to_vec()).unwrap();
    assert!(html.contains("does not ask for a sign-in"), "{html}");
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tokens_work_at_once_and_stop_within_a_second_of_revocation_or_expiry() {
    use vigil_store::access::NewToken;
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = crate::review::reviewing(dir.path(), 0.0, SecondOpinion::Never).await;
    let opts = vigil_store::OpenOptions::new(dir.path());
    let stores = vigil_store::open_stores(&opts).await.unwrap();
    let config = AuthConfig {
        enabled: true,
        ..AuthConfig::default()
    };
    // On with no token anywhere: the server has nothing anyone could use.
    let auth = Auth::new(
        &config,
        Some(stores.access.clone()),
        Some(stores.registry.clone()),
    )
    .unwrap()
    .unwrap();
    assert_eq!(auth.usable_tokens().await, 0);
    let app = vigil_server::app(state.clone().with_auth(Some(auth.clone())));
    let bearer = |secret: &str, req: Request<Body>| {
        let mut req = req;
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {secret}").parse().unwrap(),
        );
        req
    };
    let make = |name: &str, role: Role, expires: Option<chrono::DateTime<chrono::Utc>>| {
        let secret = Secret::generate().unwrap();
        let token = NewToken {
            name: name.into(),
            role,
            sha256: secret.digest(),
            expires_at: expires,
            created_by: "admin".into(),
        };
        (secret, token)
    };
    let (alice, t) = make("alice", Role::Viewer, None);
    stores.access.create_token(&t).await.unwrap();
    let (brief, t) = make(
        "brief",
        Role::Viewer,
        Some(chrono::Utc::now() + chrono::Duration::seconds(4)),
    );
    stores.access.create_token(&t).await.unwrap();
    // Made while the server runs: usable within a second.
    tokio::time::sleep(vigil_server::auth::TOKEN_REREAD).await;
    assert_eq!(auth.usable_tokens().await, 2);
    let r = send(&app, bearer(alice.expose(), get("/v1/alerts"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        send(&app, bearer(brief.expose(), get("/v1/alerts")))
            .await
            .status(),
        StatusCode::OK
    );
    // A viewer moving an alias: 403, and an audit entry says who tried.
    let put = Request::put("/v1/models/weldnet/aliases/production")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"version":"1","reason":"r"}"#))
        .unwrap();
    assert_eq!(
        send(&app, bearer(alice.expose(), put)).await.status(),
        StatusCode::FORBIDDEN
    );
    // Without a credential: refused too, but not audited (anyone could grow the chain).
    let anonymous = Request::put("/v1/models/weldnet/aliases/production")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"version":"1","reason":"r"}"#))
        .unwrap();
    assert_eq!(
        send(&app, anonymous).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let log = stores.registry.audit_log().await.unwrap();
    let refusals: Vec<_> = log
        .iter()
        .filter(|e| e.record.action == "auth.refused")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let refused = refusals[0];
    assert_eq!(refused.record.actor, "alice");
    assert!(
        refused.record.subject.contains("/aliases/production"),
        "{refused:?}"
    );

    // Revoked on the running server: refused within a second, without a restart.
    stores
        .access
        .revoke_token("alice", "admin", "test")
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    loop {
        let r = send(&app, bearer(alice.expose(), get("/v1/alerts"))).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            assert!(json(r).await["error"].as_str().unwrap().contains("revoked"));
            break;
        }
        // The server's copy is at most a second old; the poll adds its 50 ms.
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(1250),
            "a revoked token still works after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Expired: refused from its expiry on.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let r = send(&app, bearer(brief.expose(), get("/v1/alerts"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A malformed credential: 401, not a crash.
    let r = send(&app, bearer("", get("/v1/alerts"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    state.infer().shutdown().await;
}
