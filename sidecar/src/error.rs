//! The crate's one error type.
//!
//! Rules (as in the snapshot engine): every public function returns [`Error`]; a message
//! names the object it is about and says what to do next. Each variant maps onto one
//! HTTP status ([`Error::status`]) and one stable code ([`Error::code`]); the JSON body
//! is the contract's `{"error": "<code>", "message": "<what to do>"}`.

use hyper::StatusCode;

use atocore_restore_job::{Error as Engine, ErrorBody};

/// The CLI route an operator can always fall back on.
pub const CLI_RESTORE: &str = "docker compose stop atocore && docker compose --profile restore run --rm restore-job restore <STAMP> --confirm-service-stopped && docker compose up -d atocore";

/// Everything that can go wrong in the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot-engine error (mapped onto a status by its kind).
    #[error(transparent)]
    Engine(#[from] Engine),

    /// Bad settings: the sidecar does not start (exit 2).
    #[error("{0}")]
    Config(String),

    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free address with ATOCORE_SIDECAR_ADDR")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// A request the sidecar does not understand.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },

    /// No bearer token, or the wrong one.
    #[error("{0}")]
    Unauthorized(&'static str),

    /// No such route.
    #[error("no route {method} {path}; the endpoints are listed in docs/sidecar.md")]
    NotFound { method: String, path: String },

    /// The route exists, the method does not.
    #[error("{method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },

    /// Another operation holds the sidecar (or the backups lock).
    #[error("{0}")]
    Busy(String),

    /// The request body is larger than the cap.
    #[error(
        "the request body is larger than {limit} bytes; send a small JSON object such as {{\"include_chroma\": false}}"
    )]
    PayloadTooLarge { limit: usize },

    /// The client did not send its body in time.
    #[error("the request body did not arrive within {0} ms; send the whole request at once")]
    BodyTimeout(u128),

    /// The Docker Engine does not answer.
    #[error(
        "the Docker Engine does not answer ({0}); check that the sidecar has the Docker socket, or restore by hand: {CLI_RESTORE}"
    )]
    DockerUnreachable(String),

    /// A Docker call on one of the two named containers failed.
    #[error("Docker could not {op} container `{container}` (HTTP {status}): {message}")]
    Docker {
        op: &'static str,
        container: String,
        status: u16,
        message: String,
    },

    /// A feature that is not available; the message names the CLI route.
    #[error("{0}")]
    Unavailable(String),

    /// The sidecar is shutting down.
    #[error("the sidecar is shutting down; retry once it is back")]
    ShuttingDown,

    /// The orchestrated restore failed (details in the message).
    #[error("{0}")]
    RestoreFailed(String),

    /// A file the sidecar keeps (e.g. drills.jsonl) could not be read or written.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `healthcheck`: the sidecar did not answer as healthy.
    #[error("{url}: {message}")]
    Unhealthy { url: String, message: String },

    /// A bug: a worker thread panicked or similar. The message says where.
    #[error("internal error: {0}; see the sidecar's log")]
    Internal(String),
}

impl Error {
    /// The HTTP status of the contract for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Engine(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Error::Config(_) | Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Busy(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::DockerUnreachable(_) | Error::Unavailable(_) | Error::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Docker { .. } => StatusCode::BAD_GATEWAY,
            Error::RestoreFailed(_)
            | Error::Bind { .. }
            | Error::Io { .. }
            | Error::Unhealthy { .. }
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Engine(e) => e.code(),
            Error::Config(_) => "bad_config",
            Error::Bind { .. } => "bind_failed",
            Error::BadRequest { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::NotFound { .. } => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Busy(_) => "busy",
            Error::PayloadTooLarge { .. } => "body_too_large",
            Error::BodyTimeout(_) => "body_timeout",
            Error::DockerUnreachable(_) => "docker_unreachable",
            Error::Docker { .. } => "docker_error",
            Error::Unavailable(_) => "unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::RestoreFailed(_) => "restore_failed",
            Error::Io { .. } => "io_error",
            Error::Unhealthy { .. } => "unhealthy",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Exit code of the binary: 2 for bad settings, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// The contract's JSON error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
