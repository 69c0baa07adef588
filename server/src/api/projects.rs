//! `POST /api/v1/projects` (and `GET` to list them, a page at a time): projects kept in
//! memory, announced with `project_created`.
//!
//! Memory is bounded: a name is stored trimmed and has at most [`MAX_NAME_CHARS`] characters,
//! at most `max_projects` are kept (409 `too_many_projects` beyond; nothing deletes them), and
//! a listing copies one page, never the whole list, while it holds the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use ferret_ws_core::{types, Event, EventType, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::body::JsonObject;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// The longest project name, in characters (Unicode scalar values) after trimming.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// Projects per page when the request gives no `limit`.
pub(crate) const DEFAULT_PAGE: usize = 100;

/// The most projects per page; a larger `limit` is capped to this.
pub(crate) const MAX_PAGE: usize = 1000;

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Project {
    id: String,
    name: String,
    created_at: String,
}

/// The projects created since start, oldest first, at most `max` of them.
#[derive(Debug)]
pub(crate) struct Store {
    max: usize,
    /// Projects stored plus creations in flight (between the check and the insert), never
    /// above `max`: the count is reserved before the event is published, so concurrent
    /// requests cannot overshoot the bound.
    taken: AtomicUsize,
    listed: Mutex<Listed>,
}

#[derive(Debug, Default)]
struct Listed {
    projects: Vec<Project>,
    /// Where each project is in `projects`, for `after=ID` cursors.
    positions: HashMap<String, usize>,
}

/// A place for one more project, given back unless [`Reservation::insert`] fills it.
struct Reservation<'a> {
    store: &'a Store,
    filled: bool,
}

/// An `after` cursor that names no project.
#[derive(Debug)]
struct UnknownCursor;

impl Store {
    /// An empty store that keeps at most `max` projects (at least one).
    pub(crate) fn new(max: usize) -> Store {
        Store {
            max: max.max(1),
            taken: AtomicUsize::new(0),
            listed: Mutex::new(Listed::default()),
        }
    }

    /// A place for one more project, or `None` when the store is full.
    fn reserve(&self) -> Option<Reservation<'_>> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Reservation {
                store: self,
                filled: false,
            })
    }

    /// Up to `limit` projects after the one with id `after` (from the first without), and
    /// the cursor of the next page if there are more.
    fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Project>, Option<String>), UnknownCursor> {
        let listed = self.lock();
        let start = match after {
            None => 0,
            Some(id) => listed.positions.get(id).ok_or(UnknownCursor)? + 1,
        };
        let end = start.saturating_add(limit).min(listed.projects.len());
        let page = listed.projects[start..end].to_vec();
        let next = if end < listed.projects.len() {
            page.last().map(|project| project.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listed> {
        // A poisoned lock means a panic while pushing to a Vec or a map; the data is whole.
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reservation<'_> {
    fn insert(mut self, project: Project) {
        let mut listed = self.store.lock();
        let position = listed.projects.len();
        listed.positions.insert(project.id.clone(), position);
        listed.projects.push(project);
        self.filled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.store.taken.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

/// `{"name": str}` → 201 `{"id","name","created_at"}`, after publishing `project_created`
/// `{"project_id","name"}` with the request's correlation id. The name is stored trimmed;
/// 422 unless it then has 1 to [`MAX_NAME_CHARS`] characters, 409 `too_many_projects` when
/// the store is full.
pub(crate) async fn create(
    State(state): State<AppState>,
    cid: CorrelationId,
    body: JsonObject,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let NewProject { name } = body.parse()?;
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("name must have 1 to {MAX_NAME_CHARS} characters besides surrounding spaces"),
        ));
    }
    let store = state.projects();
    let Some(place) = store.reserve() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_projects",
            format!(
                "the server keeps at most {} projects (--max-projects) and has that many",
                store.max
            ),
        ));
    };
    let project = Project {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
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
        .publisher()
        .publish(event, None)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(event_id = %id, project_id = %project.id, correlation_id = %cid, "project created");
    place.insert(project.clone());
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET /api/v1/projects[?limit=N][&after=CURSOR]` → 200 `{"projects": [...], "next":
/// CURSOR|null}`, oldest first, at most `limit` (default [`DEFAULT_PAGE`], capped at
/// [`MAX_PAGE`]) per page. `next` (the id of the page's last project) gives the next page
/// as `after`; it is null on the last page. 400 for a `limit` that is not a positive
/// integer, an `after` that names no project, or either given twice.
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (after, limit) = page_params(query.as_deref().unwrap_or(""))?;
    let (projects, next) =
        state
            .projects()
            .page(after.as_deref(), limit)
            .map_err(|UnknownCursor| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "after must be a `next` value from an earlier page",
                )
            })?;
    Ok(Json(json!({"projects": projects, "next": next})))
}

/// The `after` cursor (an empty one counts as absent) and the page size of a listing query.
/// Other parameters are ignored.
fn page_params(query: &str) -> Result<(Option<String>, usize), ApiError> {
    let (mut after, mut limit) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "after" => &mut after,
            "limit" => &mut limit,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("{key}: given more than once"),
            ));
        }
    }
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(text) => parse_limit(&text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_limit",
                format!("limit must be a whole number from 1 (at most {MAX_PAGE} are given)"),
            )
        })?,
    };
    Ok((after.filter(|a| !a.is_empty()), limit))
}

/// A positive decimal integer, capped at [`MAX_PAGE`] however large.
fn parse_limit(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    match digits.len() {
        0 => None,
        1..=4 => digits.parse::<usize>().ok().map(|n| n.min(MAX_PAGE)),
        _ => Some(MAX_PAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(n: usize) -> Project {
        Project {
            id: format!("id-{n}"),
            name: format!("p{n}"),
            created_at: String::new(),
        }
    }

    #[test]
    fn the_store_is_bounded_and_gives_back_unused_places() {
        let store = Store::new(2);
        let first = store.reserve().expect("room");
        let second = store.reserve().expect("room");
        assert!(store.reserve().is_none(), "full while two are in flight");
        drop(second); // the publish failed: the place is free again
        first.insert(project(1));
        store.reserve().expect("room").insert(project(2));
        assert!(store.reserve().is_none());
        assert_eq!(store.page(None, 10).unwrap().0.len(), 2);
    }

    #[test]
    fn pages_follow_each_other_oldest_first() {
        let store = Store::new(10);
        for n in 0..5 {
            store.reserve().unwrap().insert(project(n));
        }
        let (page, next) = store.page(None, 2).unwrap();
        assert_eq!(page, [project(0), project(1)]);
        assert_eq!(next.as_deref(), Some("id-1"));
        let (page, next) = store.page(next.as_deref(), 2).unwrap();
        assert_eq!(page, [project(2), project(3)]);
        let (page, next) = store.page(next.as_deref(), 2).unwrap();
        assert_eq!((page, next), (vec![project(4)], None));
        // A page that ends exactly at the last project has no next.
        assert_eq!(store.page(Some("id-2"), 2).unwrap().1, None);
        assert!(store.page(Some("id-9"), 2).is_err());
        assert_eq!(store.page(Some("id-4"), 2).unwrap(), (vec![], None));
    }

    #[test]
    fn limits_are_positive_and_capped() {
        assert_eq!(parse_limit("1"), Some(1));
        assert_eq!(parse_limit("0100"), Some(100));
        assert_eq!(parse_limit("1000"), Some(1000));
        assert_eq!(parse_limit("1001"), Some(1000));
        assert_eq!(parse_limit("99999999999999999999999999"), Some(1000));
        for bad in ["", "0", "000", "-1", "1.5", "ten", " 5", "+5"] {
            assert_eq!(parse_limit(bad), None, "{bad:?}");
        }
        assert_eq!(page_params("").unwrap(), (None, DEFAULT_PAGE));
        assert_eq!(
            page_params("after=&limit=5&x=y").unwrap(),
            (None, 5),
            "an empty cursor counts as absent"
        );
        assert_eq!(
            page_params("after=a%20b").unwrap(),
            (Some("a b".into()), DEFAULT_PAGE)
        );
        assert_eq!(page_params("limit=1&limit=2").unwrap_err().status(), 400);
        assert_eq!(page_params("limit=0").unwrap_err().code(), "invalid_limit");
    }
}
