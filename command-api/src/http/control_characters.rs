//! Control characters are refused at the edge, naming where they were.
//!
//! PostgreSQL stores no NUL, in `text` or in `jsonb`, so a NUL that reached a
//! statement answered 500; other control characters (escape, backspace, C1 codes)
//! have no place in a name, a selector or a filter and only make logs and pages lie.
//! So every request is checked before its handler runs:
//!
//! - JSON bodies, by `problem::decode_json`: any string (or key) holding a control
//!   character other than tab, line feed and carriage return is a 422 naming the
//!   field by its JSON path;
//! - path parameters and query parameters, by the [`refuse_control_characters`]
//!   middleware, after percent-decoding: any control character at all is a 422
//!   naming the parameter.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde_json::Value;

use crate::problem::ApiError;

/// Whether text may not hold this character anywhere: the Unicode controls (C0,
/// DEL, C1).
fn is_control(character: char) -> bool {
    character.is_control()
}

/// Whether a JSON string may not hold this character: controls other than the
/// white space of multi-line text.
fn is_refused_in_json(character: char) -> bool {
    is_control(character) && !matches!(character, '\t' | '\n' | '\r')
}

fn describe(character: char) -> String {
    format!(
        "must not contain control characters (found U+{:04X})",
        u32::from(character)
    )
}

/// Whether a JSON document could hold a refused control character in a string:
/// only as an escape (`\u00..`, `\b`, `\f`) or as raw DEL or C1 bytes, since JSON
/// forbids raw C0 bytes inside strings. A cheap scan, so that the common body is
/// never decoded twice; it may say yes for text that turns out harmless.
fn may_hold_control_characters(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|pair| match pair {
        [b'\\', b'u' | b'b' | b'f'] | [0xC2, 0x80..=0x9F] => true,
        [first, _] => *first == 0x7F,
        _ => false,
    }) || bytes.last() == Some(&0x7F)
}

/// The JSON path (as `serde_path_to_error` writes them: `items[0].name`) and the
/// character of the first string or key in `bytes` holding a refused control
/// character, if any. `bytes` must be a JSON document that already decoded.
pub(crate) fn first_control_character_in_json(bytes: &[u8]) -> Option<ApiError> {
    if !may_hold_control_characters(bytes) {
        return None;
    }
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let (path, character) = find_in_value(&value, String::new())?;
    let field = if path.is_empty() {
        ".".to_owned()
    } else {
        path
    };
    Some(ApiError::invalid_field(field, describe(character)))
}

fn find_in_value(value: &Value, path: String) -> Option<(String, char)> {
    match value {
        Value::String(text) => text
            .chars()
            .find(|character| is_refused_in_json(*character))
            .map(|character| (path, character)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_in_value(item, format!("{path}[{index}]"))),
        Value::Object(members) => members.iter().find_map(|(key, member)| {
            let member_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if let Some(character) = key.chars().find(|character| is_refused_in_json(*character)) {
                return Some((member_path, character));
            }
            find_in_value(member, member_path)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Refuses a request whose path or query parameters hold a control character,
/// with a 422 naming the parameter, before its handler runs. (A route layer: it
/// sees the parameters of the route that matched.)
pub async fn refuse_control_characters(
    path_parameters: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    // Parameters that do not decode (bad percent-encoding) are left to the
    // handler's own extractor, which answers for them.
    if let Some(error) = control_character_in_parameters(path_parameters.ok().as_ref(), &request) {
        return error.into_response();
    }
    next.run(request).await
}

fn control_character_in_parameters(
    path_parameters: Option<&RawPathParams>,
    request: &Request,
) -> Option<ApiError> {
    if let Some(parameters) = path_parameters {
        for (name, value) in parameters {
            if let Some(character) = value.chars().find(|character| is_control(*character)) {
                return Some(ApiError::invalid_field(name, describe(character)));
            }
        }
    }
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find_map(|(name, value)| {
        let character = name.chars().chain(value.chars()).find(|c| is_control(*c))?;
        Some(ApiError::invalid_field(name, describe(character)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        match first_control_character_in_json(body.as_bytes()) {
            Some(ApiError::InvalidField { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn a_control_character_in_a_json_string_is_named_by_its_path() {
        assert_eq!(
            field_of(r#"{"display_name": "a\u0000b"}"#).as_deref(),
            Some("display_name")
        );
        assert_eq!(
            field_of(r#"{"items": [{"q": "x"}, {"name": "\u001b[31m"}]}"#).as_deref(),
            Some("items[1].name")
        );
        assert_eq!(field_of(r#"{"a": {"b": "\b"}}"#).as_deref(), Some("a.b"));
        assert_eq!(field_of("{\"a\": \"\u{7f}\"}").as_deref(), Some("a"));
        assert_eq!(field_of("{\"a\": \"\u{85}\"}").as_deref(), Some("a"));
        assert_eq!(field_of(r#"{"k\u0001": 1}"#).as_deref(), Some("k\u{1}"));
    }

    #[test]
    fn multi_line_text_and_escapes_that_are_not_controls_pass() {
        assert_eq!(
            field_of(r#"{"description": "two\nlines\r\n\ttabbed"}"#),
            None
        );
        assert_eq!(field_of(r#"{"a": "\u0041 \u00e9 \\u0000 \\b"}"#), None);
        assert_eq!(
            field_of(r#"{"a": "plain", "n": 1, "b": [true, null]}"#),
            None
        );
    }
}
