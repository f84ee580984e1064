//! The one place answers and errors become HTTP: Qdrant's envelope around a result, and each
//! failure's HTTP status (from the gRPC status the services answered, or from the REST layer's
//! own reading of the body).

use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tonic::Code;

/// A failed request: its HTTP status and the message (which names the field at fault).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// Bad input at `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {message}"),
        }
    }

    /// The same error, its place prefixed with `place` (`searches[2]`).
    pub fn within(self, place: &str) -> Self {
        Self {
            message: format!("{place}.{}", self.message),
            ..self
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status: http,
            message: status.message().to_string(),
        }
    }
}

impl From<quiver_core::Error> for ApiError {
    fn from(e: quiver_core::Error) -> Self {
        tonic::Status::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": {"error": self.message}, "time": 0.0, "result": null});
        (self.status, Json(body)).into_response()
    }
}

/// A route's answer.
pub type Reply = Result<Json<Value>, ApiError>;

/// `result` in Qdrant's envelope, timed from `started`.
pub fn ok(result: Value, started: Instant) -> Reply {
    Ok(Json(json!({
        "result": result,
        "status": "ok",
        "time": started.elapsed().as_secs_f64(),
    })))
}

/// Any path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route in quiver's REST API (see /openapi.json)")
}

/// The request body as a JSON object (an empty body is `{}`).
pub fn body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("body", "expected a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("not valid JSON: {e}"))),
    }
}
