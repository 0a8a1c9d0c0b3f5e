//! `vigil auth` and `[auth]` in the real binary: a token made by the CLI, configured through
//! the environment, guards a real server; bad `[auth]` settings stop every command.

use crate::common::*;
use crate::http::{request, start_ready, stop};

/// `vigil auth token --json`: (secret, sha256).
fn make_token(env: &Env, name: &str, role: &str) -> (String, String) {
    let out = env
        .run(&["auth", "token", "--name", name, "--role", role, "--json"])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["role"], role);
    (
        v["secret"].as_str().unwrap().to_owned(),
        v["sha256"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_token_made_by_the_cli_guards_a_real_server() {
    let env = Env::new();
    let (secret, sha256) = make_token(&env, "ops-night", "operator");
    assert!(secret.starts_with("vgl_") && sha256.len() == 64);
    assert!(!sha256.contains(&secret[4..]));
    // The text form prints the entry to paste.
    env.run(&["auth", "token", "--name", "alice", "--role", "inspector"])
        .ok()
        .says("[[auth.tokens]]")
        .says("name = \"alice\"")
        .says("role = \"inspector\"");
    env.run(&["auth", "token", "--name", "x", "--role", "root"])
        .code(2)
        .says("unknown role");

    let tokens = format!(r#"[{{name="ops-night",role="operator",sha256="{sha256}"}}]"#);
    let vars = [
        ("VIGIL__AUTH__ENABLED", "true"),
        ("VIGIL__AUTH__TOKENS", tokens.as_str()),
    ];
    env.run_cmd(env.cmd().envs(vars).args(["auth", "list"]))
        .ok()
        .says("auth is on")
        .says("ops-night")
        .says(&sha256[..12]);
    // A second token of the same name is refused before anyone gets it.
    env.run_cmd(env.cmd().envs(vars).args([
        "auth",
        "token",
        "--name",
        "ops-night",
        "--role",
        "viewer",
    ]))
    .code(5)
    .says("the name is used by another token");

    let (server, addr) = start_ready(&env, &vars);
    let bearer = format!("Bearer {secret}");
    let (status, body) = request(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthenticated"), "{body}");
    let (status, body) = request(&addr, "GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!(status, 200);
    assert!(body.contains("vigil_inference_requests_total") || body.contains("# TYPE"));
    // Prediction stays open unless guard_predictions says otherwise.
    let tile = std::fs::read(testdata().join("weld/RRT-106R_x0000_y0035.png")).unwrap();
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/models/weldnet/predict",
        &[("Content-Type", "image/png")],
        &tile,
    );
    assert_eq!(status, 200, "{body}");
    stop(server, &env);
}

#[test]
fn a_bad_auth_section_stops_every_command() {
    let env = Env::new();
    // Auth on with no token in the config is fine for other commands (tokens may be in the
    // store), but a server with no usable token anywhere refuses to start.
    env.run_cmd(
        env.cmd()
            .env("VIGIL__AUTH__ENABLED", "true")
            .args(["models", "list"]),
    )
    .ok();
    env.run_cmd(
        env.cmd()
            .env("VIGIL__AUTH__ENABLED", "true")
            .env("VIGIL__SERVER__PORT", "0")
            .args(["serve"]),
    )
    .code(5)
    .says("no token can be used");
    env.run_cmd(
        env.cmd()
            .env(
                "VIGIL__AUTH__TOKENS",
                r#"[{name="a",role="admin",sha256="vgl_not_a_digest"}]"#,
            )
            .args(["config"]),
    )
    .code(5)
    .says("not the secret itself");
}
