//! Swarm mode: capsa has none, so it answers as a dockerd that is not in a swarm.
//! `GET /swarm`, `POST /swarm/update`, `/swarm/unlock*` and every `/services`, `/tasks`,
//! `/nodes`, `/secrets`, `/configs` route answer 503 "not a swarm manager";
//! `POST /swarm/leave` answers 503 "not part of a swarm" (what clients accept as "already
//! out"); `POST /swarm/init` and `/swarm/join` answer 503 saying capsa has no swarm mode.

use super::http::ApiError;
use axum::http::StatusCode;
use axum::routing::{any, post};
use axum::Router;

use super::Shared;

/// dockerd's answer on a node that is not a manager.
pub const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
/// dockerd's answer to leaving when not in a swarm.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";
/// Why init and join fail.
pub const NO_SWARM_MODE: &str = "capsa has no swarm mode: this node cannot create or join a swarm";

pub fn routes() -> Router<Shared> {
    let mut router = Router::new()
        .route("/swarm", any(not_manager))
        .route("/swarm/update", any(not_manager))
        .route("/swarm/unlock", any(not_manager))
        .route("/swarm/unlockkey", any(not_manager))
        .route("/swarm/leave", post(not_in_swarm))
        .route("/swarm/init", post(no_swarm_mode))
        .route("/swarm/join", post(no_swarm_mode));
    for base in ["/services", "/tasks", "/nodes", "/secrets", "/configs"] {
        router = router
            .route(base, any(not_manager))
            .route(&format!("{base}/{{*rest}}"), any(not_manager));
    }
    router
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

async fn not_manager() -> ApiError {
    unavailable(NOT_MANAGER)
}

async fn not_in_swarm() -> ApiError {
    unavailable(NOT_IN_SWARM)
}

async fn no_swarm_mode() -> ApiError {
    unavailable(NO_SWARM_MODE)
}
