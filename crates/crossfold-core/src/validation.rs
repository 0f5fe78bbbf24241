//! The error of every smart constructor, in a file of its own: ids and versions validate with
//! it, and the other errors (which name ids and versions) build on them.

use std::borrow::Cow;

/// Input that a smart constructor refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// What was being validated (`"stream_id"`, `"amount"`, ...).
    pub field: Cow<'static, str>,
    /// Why it was refused, in words a person can act on.
    pub reason: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
