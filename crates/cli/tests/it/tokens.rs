//! `vigil tokens`: create (secret shown once), list (never secrets), revoke; and read-only
//! commands that never create a store.

use crate::common::Env;

#[test]
fn tokens_are_created_listed_and_revoked_and_only_create_makes_a_store() {
    let env = Env::new();
    // Nothing there yet: listing, revoking and verifying the audit log are errors naming the
    // path, and leave no store behind.
    for args in [
        &["tokens", "list"][..],
        &["tokens", "revoke", "alice"],
        &["audit", "verify"],
    ] {
        env.run(args).code(3).says("no store at");
        assert!(
            !env.data_dir().exists(),
            "{args:?} created {:?}",
            env.data_dir()
        );
    }

    let made = env
        .run(&[
            "tokens",
            "create",
            "--name",
            "alice",
            "--role",
            "inspector",
            "--expires",
            "90d",
            "--json",
        ])
        .ok();
    let made: serde_json::Value = serde_json::from_str(&made.stdout).unwrap();
    let secret = made["secret"].as_str().unwrap();
    assert!(secret.starts_with("vgl_") && secret.len() == 68, "{secret}");
    assert_eq!(made["role"], "inspector");
    assert!(made["expires_at"].is_string());
    assert!(made.get("sha256").is_none(), "the digest is not printed");

    // The same live name twice is a conflict (exit 4); a past expiry is a usage error.
    env.run(&["tokens", "create", "--name", "alice", "--role", "viewer"])
        .code(4)
        .says("already exists");
    env.run(&[
        "tokens",
        "create",
        "--name",
        "bob",
        "--role",
        "viewer",
        "--expires",
        "2001-01-01T00:00:00Z",
    ])
    .code(2)
    .says("in the past");

    let list = env.run(&["tokens", "list"]).ok();
    assert!(
        list.stdout.contains("alice") && list.stdout.contains("active"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains(secret), "a listing shows a secret");

    env.run(&[
        "--actor", "carol", "tokens", "revoke", "alice", "--reason", "left",
    ])
    .ok()
    .says("Revoked token 1");
    env.run(&["tokens", "revoke", "alice"]).code(3);
    env.run(&["tokens", "revoke", "1"])
        .code(4)
        .says("already revoked");
    let list = env.run(&["tokens", "list", "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["status"], "revoked");
    assert_eq!(list[0]["revoked_by"], "carol");
    env.run(&["audit", "verify"]).ok().says("intact: 2 entries");
}
