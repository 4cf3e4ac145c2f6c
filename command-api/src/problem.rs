//! The API's one error type, rendered as RFC 9457 problem documents
//! (`application/problem+json`), and the JSON body extractor that reports malformed
//! bodies in the same format.
//!
//! A client mistake is always a 4xx naming what was wrong; anything else is an
//! opaque 500 whose cause is logged once, here, with its chain.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or not the shape the route takes.
    #[error("{0}")]
    MalformedBody(String),
    /// 400: a token or parameter that cannot be what it claims (forged, garbled).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, bad credentials, or an account that may no longer act.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, but without the role the route needs.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403: buying needs a verified e-mail address (type `/problems/email-not-verified`).
    #[error("verify your e-mail address before buying: follow the link in the verification mail, or ask for another one (POST /auth/verify/resend)")]
    EmailNotVerified,
    /// 404: nothing there, or nothing the caller may see (another user's order).
    #[error("{0}")]
    NotFound(&'static str),
    /// 405: the route exists, not with this method.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// 409: the command does not fit the current state.
    #[error("{0}")]
    Conflict(String),
    /// 410: a link or token that has expired.
    #[error("{0}")]
    Gone(&'static str),
    /// 413: body over the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: a body that does not say it is JSON.
    #[error("expected a body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: a field breaks a rule; names the field.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// 429: too many attempts; retry after this many seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: a dependency (the database) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 500: our fault. The cause is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// The one mapping of an application command's failure: a refusal as
    /// `refused` says (usually 409 or 422 naming a field), nothing there 404, a
    /// conflict 409, a store failure an opaque 500 logged with `doing`.
    pub fn from_command<E: std::error::Error + Send + Sync + 'static>(
        error: orders_application::CommandError<E>,
        not_found: &'static str,
        doing: &'static str,
        refused: impl FnOnce(E) -> ApiError,
    ) -> Self {
        use orders_application::CommandError;
        match error {
            CommandError::Refused(refusal) => refused(refusal),
            CommandError::NotFound => Self::NotFound(not_found),
            CommandError::Conflict => {
                Self::Conflict("changed by another request at the same time; retry".to_owned())
            }
            CommandError::Store(failure) => {
                Self::Internal(anyhow::Error::new(failure).context(doing))
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::MalformedBody(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::EmailNotVerified => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable kind: the last segment of the problem `type`.
    fn kind(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "malformed-body",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::EmailNotVerified => "email-not-verified",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::InvalidField { .. } => "invalid-field",
            Self::TooManyRequests { .. } => "too-many-requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/invalid-field`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For 422: the request field that broke a rule (a JSON path, e.g. `target_price`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(error) => {
                // Logged once, here, with the whole cause chain; the client sees none of it.
                tracing::error!(error = format!("{error:#}"), "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            Self::InvalidField { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let problem = Problem {
            problem_type: format!("/problems/{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            field: match &self {
                Self::InvalidField { field, .. } => Some(field.clone()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, Self::Unauthorized(_)) {
            // RFC 6750: tell the client which scheme to authenticate with.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// A JSON body, like axum's `Json`, whose every failure is a problem document:
/// not JSON or an empty body → 400, an unknown field or a malformed value → 422
/// naming the field, over the body limit → 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type_is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let essence = value.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
                    || essence.to_ascii_lowercase().ends_with("+json")
            });
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::MalformedBody(
                "the request body is empty; expected a JSON object".to_owned(),
            ));
        }
        if content_type_is_json == Some(false) {
            return Err(ApiError::UnsupportedMediaType);
        }
        decode_json(&bytes).map(AppJson)
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: crate::MAX_BODY_BYTES,
        }
    } else {
        ApiError::MalformedBody(rejection.body_text())
    }
}

/// Decodes a JSON document, telling syntax errors (400) from values that break the
/// expected shape (422, with the path of the offending field). A string holding a
/// control character (other than tab and line breaks) is a 422 naming its field.
///
/// Every body the API takes is a JSON object; anything else is malformed (400).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::MalformedBody(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    // The common case pays for plain decoding only; a body that fails is decoded
    // again, tracking the path, to name the field.
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        if let Some(refused) =
            crate::http::control_characters::first_control_character_in_json(bytes)
        {
            return Err(refused);
        }
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let decoded = serde_path_to_error::deserialize::<_, T>(&mut deserializer);
    if decoded.is_ok() {
        if let Err(trailing) = deserializer.end() {
            return Err(ApiError::MalformedBody(format!(
                "the request body is not valid JSON: {trailing}"
            )));
        }
    }
    match decoded {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => Err(
                    ApiError::MalformedBody(format!("the request body is not valid JSON: {inner}")),
                ),
                serde_json::error::Category::Data | serde_json::error::Category::Io => {
                    let message = inner.to_string();
                    // serde_path_to_error's path already ends with an unknown field's
                    // name; for a missing field it names the parent object.
                    let field = if unknown_field_name(&message).is_some() {
                        path.clone()
                    } else if let Some(name) = missing_field_name(&message) {
                        join_path(&path, name)
                    } else {
                        path.clone()
                    };
                    if field == "." || field.is_empty() {
                        return Err(ApiError::MalformedBody(format!(
                            "the request body does not have the expected shape: {message}"
                        )));
                    }
                    Err(ApiError::invalid_field(field, strip_position(&message)))
                }
            }
        }
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "." {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// serde's message for `deny_unknown_fields`: "unknown field `x`, expected ...".
fn unknown_field_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

/// serde's message for a missing field: "missing field `x`".
fn missing_field_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// serde_json appends " at line 1 column 20"; the field name says more to a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields are only read by the deserializer under test
    struct Body {
        name: String,
        count: u32,
    }

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    #[test]
    fn syntax_errors_are_malformed_bodies() {
        assert!(matches!(
            decode_json::<Body>(b"{\"name\": "),
            Err(ApiError::MalformedBody(_))
        ));
        assert!(matches!(
            decode_json::<Body>(b"not json"),
            Err(ApiError::MalformedBody(_))
        ));
    }

    #[test]
    fn shape_errors_name_the_field() {
        let unknown = decode_json::<Body>(br#"{"name": "a", "count": 1, "colour": "red"}"#);
        assert_eq!(field_of(unknown.unwrap_err()).as_deref(), Some("colour"));
        let wrong_type = decode_json::<Body>(br#"{"name": "a", "count": "many"}"#);
        assert_eq!(field_of(wrong_type.unwrap_err()).as_deref(), Some("count"));
        let missing = decode_json::<Body>(br#"{"name": "a"}"#);
        assert_eq!(field_of(missing.unwrap_err()).as_deref(), Some("count"));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_malformed() {
        assert!(matches!(
            decode_json::<Body>(b"[1, 2]"),
            Err(ApiError::MalformedBody(_))
        ));
    }
}
