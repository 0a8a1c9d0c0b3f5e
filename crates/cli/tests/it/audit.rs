//! `vigil audit verify` finds edited, deleted and reordered entries in the real database.

use crate::common::Env;

fn populated() -> Env {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    env.create("c", "1.1.0", &[]).ok();
    env.run(&["models", "push", env.path("b").to_str().unwrap()])
        .ok();
    env.run(&["models", "push", env.path("c").to_str().unwrap()])
        .ok();
    for v in ["1.0.0", "1.1.0", "1.0.0"] {
        env.run(&[
            "models",
            "alias",
            "set",
            "weldnet",
            "production",
            v,
            "--reason",
            "r",
        ])
        .ok();
    }
    env.run(&["audit", "verify"]).ok().says("intact: 5 entries");
    env
}

/// Runs SQL on the registry database the way an attacker with file access would: the
/// append-only triggers are dropped first.
fn tamper(env: &Env, sql: &str) {
    let url = format!("sqlite://{}", env.data_dir().join("vigil.db").display());
    let sql = sql.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let triggers: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for (t,) in triggers {
                sqlx::query(&format!("DROP TRIGGER \"{t}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        });
}

#[test]
fn an_edited_entry_is_found() {
    let env = populated();
    tamper(
        &env,
        "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 3",
    );
    env.run(&["audit", "verify"])
        .code(1)
        .says("entry 3 was edited");
}

#[test]
fn a_deleted_entry_is_found() {
    let env = populated();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 2");
    env.run(&["audit", "verify"])
        .code(1)
        .says("entry 2 was deleted");
}

#[test]
fn reordered_entries_are_found() {
    let env = populated();
    // Swap the contents of entries 3 and 4, keeping every row internally consistent.
    tamper(
        &env,
        "UPDATE audit_log SET seq = -3 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -3;",
    );
    let run = env.run(&["audit", "verify"]).code(1);
    assert!(
        run.stdout.contains("entry 3") || run.stdout.contains("entry 4"),
        "{run:?}"
    );
}

#[test]
fn a_truncated_log_is_found_against_the_head() {
    let env = populated();
    let head = env.run(&["audit", "log", "--json"]).ok().stdout;
    let entries: serde_json::Value = serde_json::from_str(&head).unwrap();
    let head = entries[4]["hash"].as_str().unwrap().to_owned();
    env.run(&["audit", "verify", "--expect-head", &head]).ok();
    tamper(&env, "DELETE FROM audit_log WHERE seq = 5");
    env.run(&["audit", "verify"]).ok();
    env.run(&["audit", "verify", "--expect-head", &head])
        .code(1)
        .says("removed from the end");
}
