//! Typed errors that cross the plug-in boundary.

use std::fmt;

#[cfg(feature = "native")]
use abi_stable::std_types::RString;

/// What went wrong, as a code every frontend can map to its protocol's status.
///
/// A transparent `u8` rather than an enum so that a later minor version may add codes:
/// an older host or plug-in that meets a code it does not know treats it as
/// [`ErrorCode::INTERNAL`] (see [`ErrorCode::known`]).
#[repr(transparent)]
#[cfg_attr(feature = "native", derive(abi_stable::StableAbi))]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// The key does not exist (REST 404, gRPC NOT_FOUND).
    pub const NOT_FOUND: ErrorCode = ErrorCode(1);
    /// The request is malformed: an empty key, a bad config value (REST 400).
    pub const INVALID_INPUT: ErrorCode = ErrorCode(2);
    /// A key or value is over the host's limit (REST 413/414).
    pub const TOO_LARGE: ErrorCode = ErrorCode(3);
    /// The service cannot take the request now: the logger is down, the host is
    /// starting or stopping (REST 503, gRPC UNAVAILABLE). Retrying later may succeed.
    pub const UNAVAILABLE: ErrorCode = ErrorCode(4);
    /// A bug or an unexpected failure, including a panic caught at the boundary (REST 500).
    pub const INTERNAL: ErrorCode = ErrorCode(5);
    /// The caller must prove who it is: no credentials where they are required, or
    /// credentials the host could not verify (expired, badly signed, for another
    /// audience). REST 401 with `WWW-Authenticate: Bearer`, gRPC UNAUTHENTICATED. Since 1.2;
    /// a 1.0/1.1 plug-in reads it as [`ErrorCode::INTERNAL`].
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(6);
    /// The caller is known but may not do this to this key (REST 403, gRPC
    /// PERMISSION_DENIED). Since 1.2; a 1.0/1.1 plug-in reads it as [`ErrorCode::INTERNAL`].
    pub const PERMISSION_DENIED: ErrorCode = ErrorCode(7);
    /// A conditional append found the log moved on: the key is no longer where the
    /// batch's [`EventKind::EXPECT`](crate::EventKind::EXPECT) said (1.4; shared logs).
    /// The host evaluates the update again; clients never see it.
    pub const CONFLICT: ErrorCode = ErrorCode(8);
    /// The logger's storage is full (a disk out of space or over quota): nothing of the
    /// write was kept; it may succeed once space is freed (REST 507, gRPC
    /// RESOURCE_EXHAUSTED). Since 1.4; an older plug-in reads it as
    /// [`ErrorCode::INTERNAL`].
    pub const STORAGE_FULL: ErrorCode = ErrorCode(9);
    /// The caller is over its rate limit (the host's `[rate_limit]`, per principal or
    /// client address): nothing was done; retry after a moment (REST 429 with
    /// `Retry-After`, gRPC RESOURCE_EXHAUSTED). Since 1.5; the host answers a frontend
    /// of an older minor [`ErrorCode::UNAVAILABLE`] instead.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(10);
    /// The caller's deadline passed before the host could do the request. For a write,
    /// the message says whether it was written: the host's writer drops a write whose
    /// deadline passed while it queued, before the logger sees it ("it was not
    /// written"). REST 504, gRPC DEADLINE_EXCEEDED. Since 1.5; the host answers a
    /// frontend of an older minor [`ErrorCode::UNAVAILABLE`] instead.
    pub const DEADLINE_EXCEEDED: ErrorCode = ErrorCode(11);

    /// This code if this version of the contract knows it, else [`ErrorCode::INTERNAL`].
    pub fn known(self) -> ErrorCode {
        match self {
            Self::NOT_FOUND
            | Self::INVALID_INPUT
            | Self::TOO_LARGE
            | Self::UNAVAILABLE
            | Self::INTERNAL
            | Self::UNAUTHENTICATED
            | Self::PERMISSION_DENIED
            | Self::CONFLICT
            | Self::STORAGE_FULL
            | Self::RATE_LIMITED
            | Self::DEADLINE_EXCEEDED => self,
            _ => Self::INTERNAL,
        }
    }

    /// The contract minor that added this code (0 for 1.0's codes and for codes this
    /// version does not know). A host answers a plug-in of an older minor a code it
    /// knows instead (kvs: [`ErrorCode::UNAVAILABLE`] for 1.4's `storage full` and
    /// 1.5's codes), since the plug-in would read an unknown one as `internal`.
    pub fn since_minor(self) -> u16 {
        match self {
            Self::UNAUTHENTICATED | Self::PERMISSION_DENIED => 2,
            Self::CONFLICT | Self::STORAGE_FULL => 4,
            Self::RATE_LIMITED | Self::DEADLINE_EXCEEDED => 5,
            _ => 0,
        }
    }

    /// A short lower-case name for logs and messages (`"not found"`, ...).
    pub fn name(self) -> &'static str {
        match self.known() {
            Self::NOT_FOUND => "not found",
            Self::INVALID_INPUT => "invalid input",
            Self::TOO_LARGE => "too large",
            Self::UNAVAILABLE => "unavailable",
            Self::UNAUTHENTICATED => "unauthenticated",
            Self::PERMISSION_DENIED => "permission denied",
            Self::CONFLICT => "conflict",
            Self::STORAGE_FULL => "storage full",
            Self::RATE_LIMITED => "rate limited",
            Self::DEADLINE_EXCEEDED => "deadline exceeded",
            _ => "internal",
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error that crosses the boundary: a code callers branch on and a message people read.
///
/// The message should say what went wrong and, where there is one, what to do about it.
#[cfg(feature = "native")]
#[repr(C)]
#[derive(abi_stable::StableAbi, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A one-line human-readable explanation.
    pub message: RString,
}

#[cfg(feature = "native")]
impl PluginError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: RString::from(message.into()),
        }
    }

    /// Shorthand for [`ErrorCode::NOT_FOUND`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NOT_FOUND, message)
    }

    /// Shorthand for [`ErrorCode::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_INPUT, message)
    }

    /// Shorthand for [`ErrorCode::TOO_LARGE`].
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TOO_LARGE, message)
    }

    /// Shorthand for [`ErrorCode::UNAVAILABLE`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAVAILABLE, message)
    }

    /// Shorthand for [`ErrorCode::INTERNAL`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INTERNAL, message)
    }

    /// Shorthand for [`ErrorCode::UNAUTHENTICATED`] (1.2).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAUTHENTICATED, message)
    }

    /// Shorthand for [`ErrorCode::STORAGE_FULL`] (1.4).
    pub fn storage_full(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::STORAGE_FULL, message)
    }

    /// Shorthand for [`ErrorCode::PERMISSION_DENIED`] (1.2).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PERMISSION_DENIED, message)
    }

    /// Shorthand for [`ErrorCode::RATE_LIMITED`] (1.5).
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RATE_LIMITED, message)
    }

    /// Shorthand for [`ErrorCode::DEADLINE_EXCEEDED`] (1.5).
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DEADLINE_EXCEEDED, message)
    }

    /// The error's code, mapped to one this version of the contract knows.
    pub fn code(&self) -> ErrorCode {
        self.code.known()
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

#[cfg(feature = "native")]
impl fmt::Debug for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginError({:?}: {})", self.code, self.message)
    }
}

#[cfg(feature = "native")]
impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(feature = "native")]
impl std::error::Error for PluginError {}

#[cfg(feature = "native")]
impl From<std::io::Error> for PluginError {
    fn from(err: std::io::Error) -> Self {
        PluginError::internal(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_know_their_minor_and_unknown_ones_read_as_internal() {
        assert_eq!(ErrorCode::RATE_LIMITED.known(), ErrorCode::RATE_LIMITED);
        assert_eq!(
            ErrorCode::DEADLINE_EXCEEDED.known(),
            ErrorCode::DEADLINE_EXCEEDED
        );
        assert_eq!(ErrorCode(12).known(), ErrorCode::INTERNAL);
        assert_eq!(ErrorCode::RATE_LIMITED.name(), "rate limited");
        assert_eq!(ErrorCode::DEADLINE_EXCEEDED.name(), "deadline exceeded");
        let since: Vec<u16> = (1..=11).map(|c| ErrorCode(c).since_minor()).collect();
        assert_eq!(since, [0, 0, 0, 0, 0, 2, 2, 4, 4, 5, 5]);
        assert_eq!(ErrorCode(200).since_minor(), 0);
    }
}
