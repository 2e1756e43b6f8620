//! Why a client call failed: `ClientError`, with whether retrying can help.

use std::fmt;

use crate::protocol::RequestError;

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientError {
    /// No scheduler answered at `address` within the connect timeout. Retrying may help once a
    /// scheduler runs there.
    Connect { address: String, reason: String },
    /// The scheduler stopped answering while the request was in flight. Retrying may help if
    /// the scheduler comes back.
    SchedulerLost { address: String, silent_ms: u64 },
    /// The scheduler refused or failed the request (task error, bad graph...).
    Request(RequestError),
    /// The request did not finish within its timeout; the scheduler was told to drop it.
    Timeout { after_ms: u64 },
    /// A reply could not be decoded.
    Protocol(String),
    /// The client was closed.
    Closed,
    /// Its access file could not be read or is not a client's (`crate::security::
    /// SecurityError`, kept as its text and whether trying again can help, so this error
    /// stays cloneable and the pure client state needs no security code).
    Security {
        reason: String,
        retry_may_help: bool,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { address, reason } => {
                write!(f, "cannot connect to the scheduler at {address}: {reason}")
            }
            ClientError::SchedulerLost { address, silent_ms } => write!(
                f,
                "lost the scheduler at {address}: no answer for {silent_ms} ms"
            ),
            ClientError::Request(e) => write!(f, "{e}"),
            ClientError::Timeout { after_ms } => {
                write!(f, "the request did not finish within {after_ms} ms")
            }
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Closed => write!(f, "the client is closed"),
            ClientError::Security { reason, .. } => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<RequestError> for ClientError {
    fn from(e: RequestError) -> Self {
        ClientError::Request(e)
    }
}

impl ClientError {
    /// Whether making the same call again can succeed later (see each variant).
    pub fn retry_may_help(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::SchedulerLost { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Request(e) => matches!(
                e,
                RequestError::SchedulerRestarted
                    | RequestError::Restarted
                    | RequestError::RestartIncomplete { .. }
                    | RequestError::RateLimited { .. }
            ),
            ClientError::Protocol(_) | ClientError::Closed => false,
            ClientError::Security { retry_may_help, .. } => *retry_may_help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientRole;

    #[test]
    fn a_forbidden_request_says_who_may_and_is_not_worth_retrying() {
        let e = ClientError::from(RequestError::Forbidden {
            action: "deleting collection \"c\" (owned by another client)".into(),
            needs: ClientRole::Operator,
        });
        assert!(!e.retry_may_help());
        assert_eq!(
            e.to_string(),
            "forbidden: deleting collection \"c\" (owned by another client) needs the operator role"
        );
    }
}
