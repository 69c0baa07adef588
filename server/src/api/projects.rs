//! `POST /api/v1/projects` (and `GET` to list them): projects kept in memory, announced with
//! `project_created`.

use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferret_ws_core::{types, Event, EventType, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::body::JsonObject;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// The longest project name, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 256;

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Project {
    id: String,
    name: String,
    created_at: String,
}

/// The projects created since start, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Store {
    projects: Mutex<Vec<Project>>,
}

impl Store {
    fn insert(&self, project: Project) {
        // A poisoned lock means a panic while pushing to a Vec; the data is still whole.
        self.projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(project);
    }

    fn all(&self) -> Vec<Project> {
        self.projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

/// `{"name": str}` → 201 `{"id","name","created_at"}`, after publishing `project_created`
/// `{"project_id","name"}` with the request's correlation id.
pub(crate) async fn create(
    State(state): State<AppState>,
    cid: CorrelationId,
    body: JsonObject,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let NewProject { name } = body.parse()?;
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("name must have 1 to {MAX_NAME_CHARS} characters besides spaces"),
        ));
    }
    let project = Project {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        created_at: Timestamp::new(time::OffsetDateTime::now_utc()).to_string(),
    };
    let mut payload = Map::new();
    payload.insert("project_id".into(), Value::String(project.id.clone()));
    payload.insert("name".into(), Value::String(project.name.clone()));
    // A well-known name: always valid.
    let event_type =
        EventType::new(types::PROJECT_CREATED).expect("project_created is a valid type");
    let event = Event::new(event_type)
        .with_payload(payload)
        .with_correlation_id(cid.as_str());
    let id = state
        .hub()
        .publish(event)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(event_id = %id, project_id = %project.id, correlation_id = %cid, "project created");
    state.projects().insert(project.clone());
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET /api/v1/projects` → 200 `{"projects": [...]}`, oldest first.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"projects": state.projects().all()}))
}
