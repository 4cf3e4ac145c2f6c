//! `GET /live`: the caller's events as they reach the log, as server-sent events
//! (`orders_projectors::live` does the reading and the exactness), for a bearer
//! token or a console session.
//!
//! Each message: `id:` the event's log position (the `Orders-Position` token),
//! `event:` its type, `data:` JSON (event id, aggregate type and id, sequence,
//! recorded time, actor, correlation id, payload). `Last-Event-ID` (or `?after=`
//! on a first connect) resumes with the next event after that position. A user gets
//! the events that belong to them; an administrator or auditor gets all. A comment
//! every 15 s keeps proxies from closing an idle stream. A client that falls too
//! far behind gets a last `event: dropped` (no id) and the stream ends; it
//! reconnects, and resumes from its last id.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use orders_domain::user::Role;
use orders_projectors::live::{Audience, LiveEvent};
use orders_store::event_store::LogPosition;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::CurrentUser;
use crate::http::accounts::inactive_account;
use crate::problem::ApiError;
use crate::AppState;

/// How often an idle stream carries a comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// What a client is told to wait before it reconnects.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/live", get(live))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveParams {
    /// On a first connect: the events after this `Orders-Position` (a reconnect
    /// sends `Last-Event-ID`, which wins).
    pub after: Option<String>,
}

/// The caller's events, live, from after `Last-Event-ID` (or `after`) or from now.
#[utoipa::path(get, path = "/live", tag = "live", security(("bearer" = [])),
    params(LiveParams, ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received")),
    responses((status = 200, content_type = "text/event-stream"),
              (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
              (status = 503, body = crate::problem::Problem)))]
pub async fn live(
    State(state): State<Arc<AppState>>,
    bearer: Result<CurrentUser, ApiError>,
    headers: HeaderMap,
    Query(params): Query<LiveParams>,
) -> Result<Response, ApiError> {
    let caller = match bearer {
        Ok(caller) => caller,
        Err(no_token) => console_caller(&state, &headers).await?.ok_or(no_token)?,
    };
    let after = resume_point(&state, &headers, params.after.as_deref()).await?;
    let audience = audience_of(&state, caller).await?;
    let hub = state.config.live.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the live feed is not available on this instance".to_owned())
    })?;
    let receiver = hub.follow(audience, after);
    let events = futures::stream::unfold((receiver, false), |(mut receiver, ended)| async move {
        if ended {
            return None;
        }
        match receiver.recv().await? {
            Ok(event) => Some((Ok::<_, Infallible>(sse_event(&event)), (receiver, false))),
            Err(dropped) => {
                let last = Event::default().event("dropped").data(dropped.to_string());
                Some((Ok(last), (receiver, true)))
            }
        }
    });
    let first = futures::stream::once(async { Ok(Event::default().retry(RECONNECT_AFTER)) });
    Ok(Sse::new(futures::StreamExt::chain(first, events))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response())
}

fn sse_event(event: &LiveEvent) -> Event {
    Event::default()
        .id(event.position.to_string())
        .event(&event.event_type)
        .data(&event.data)
}

/// The caller of a console page's `EventSource`: its session cookie's user. (A
/// read: no CSRF token is needed, and without CORS headers no other site's page
/// can read the stream.)
async fn console_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<CurrentUser>, ApiError> {
    let Some(token) =
        crate::console::session::cookie(headers, crate::console::session::SESSION_COOKIE)
    else {
        return Ok(None);
    };
    let session = crate::console::session::find(state.pool(), token)
        .await
        .map_err(|error| {
            ApiError::internal(anyhow::Error::new(error).context("reading a session"))
        })?;
    Ok(session.map(|session| CurrentUser {
        user_id: session.user_id,
        credentials_version: None,
    }))
}

/// The position to resume after: `Last-Event-ID`, else `after`. One that is not a
/// position token, or names no stored event, is a 400.
async fn resume_point(
    state: &AppState,
    headers: &HeaderMap,
    after: Option<&str>,
) -> Result<Option<LogPosition>, ApiError> {
    let (given, name) = match headers.get("last-event-id") {
        Some(value) => (Some(value.to_str().unwrap_or("\u{0}")), "Last-Event-ID"),
        None => (after, "after"),
    };
    let Some(given) = given.filter(|given| !given.is_empty()) else {
        return Ok(None);
    };
    let position: LogPosition = given.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} is not an event id of this feed (an Orders-Position token)"
        ))
    })?;
    let known = state
        .events
        .names_stored_event(position)
        .await
        .map_err(|error| {
            ApiError::internal(anyhow::Error::new(error).context("reading the log"))
        })?;
    if !known {
        return Err(ApiError::BadRequest(format!(
            "{name} names no event in the log"
        )));
    }
    Ok(Some(position))
}

/// What the caller may see: everything for an administrator or auditor, else their
/// own events. A caller whose account is gone or deactivated is refused (401).
async fn audience_of(state: &AppState, caller: CurrentUser) -> Result<Audience, ApiError> {
    let user = orders_application::accounts::active_user(&state.events, caller.user_id)
        .await
        .map_err(inactive_account)?;
    crate::auth::require_current_credentials(caller, user.credentials_version())?;
    Ok(
        if user.has_role(Role::Admin) || user.has_role(Role::Auditor) {
            Audience::Everything
        } else {
            Audience::User(caller.user_id.as_uuid())
        },
    )
}
