//! The admin API: `PUT /v1/models/{name}/aliases/{alias}` with
//! `{"version": "..", "reason": "..", "actor": ".."}` (actor optional, default `api`; with
//! auth on, the token's holder, and it needs the operator role).
//! The work is [`crate::promote::promote`]; this handler parses and answers.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use vigil_core::ErrorKind;
use vigil_core::auth::Caller;
use vigil_core::types::{AliasName, ModelVersion};

use crate::auth::acting_as;
use crate::promote::{Promotion, promote};
use crate::{ApiError, AppState};

/// The actor recorded when the request names none.
const DEFAULT_ACTOR: &str = "api";

/// The body of an alias move.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAliasRequest {
    /// The version the alias should point at.
    pub version: String,
    /// Why (audit log).
    pub reason: String,
    /// Who (audit log); `api` when absent. With auth on: the token's holder, and may be
    /// left out.
    #[serde(default)]
    pub actor: Option<String>,
}

/// What the move did.
#[derive(Debug, Clone, Serialize)]
pub struct SetAliasResponse {
    /// The model.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// Where it pointed before (`null`: it was new).
    pub from: Option<String>,
    /// Where it points now.
    pub to: String,
    /// Whether the registry changed.
    pub moved: bool,
    /// The version serving now, when the alias is the served one.
    pub deployed: Option<String>,
}

/// `PUT /v1/models/{name}/aliases/{alias}`
pub async fn set_alias(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path((name, alias)): Path<(String, String)>,
    super::ApiJson(req): super::ApiJson<SetAliasRequest>,
) -> Result<Json<SetAliasResponse>, ApiError> {
    let registry = state.registry().cloned().ok_or_else(|| ApiError::Kind {
        kind: ErrorKind::Unavailable,
        message: "this server has no registry, so aliases cannot be moved here; use \
                  `vigil models alias set` against the registry instead"
            .into(),
    })?;
    let name = super::model_name(&name)?;
    let alias: AliasName = alias
        .parse()
        .map_err(|e: vigil_core::types::ParseError| ApiError::invalid(e.to_string()))?;
    let version: ModelVersion = req
        .version
        .parse()
        .map_err(|_| ApiError::not_found(format!("version {:?} of {name}", req.version)))?;
    let actor = acting_as(caller.as_ref().map(|c| &c.0), req.actor, "actor")?
        .unwrap_or_else(|| DEFAULT_ACTOR.to_owned());
    // On its own task: a client that hangs up must not cancel a promotion between the alias
    // move and the install.
    let task = {
        let (name, alias, version) = (name.clone(), alias.clone(), version.clone());
        tokio::spawn(async move {
            promote(
                &state,
                registry.as_ref(),
                Promotion {
                    name: &name,
                    alias: &alias,
                    version: &version,
                    actor: &actor,
                    reason: &req.reason,
                },
            )
            .await
        })
    };
    let done = task.await.map_err(|e| ApiError::Kind {
        kind: ErrorKind::Internal,
        message: format!("the promotion task failed: {e}"),
    })??;
    Ok(Json(SetAliasResponse {
        model: name.to_string(),
        alias: alias.to_string(),
        from: done.from.map(|v| v.to_string()),
        to: version.to_string(),
        moved: done.moved,
        deployed: done.deployed.map(|v| v.to_string()),
    }))
}
