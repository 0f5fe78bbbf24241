//! Who executes a command and why: actor, correlation, causation, custom metadata, time limit,
//! idempotency key; and the authorization hook that checks the actor's permissions.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

/// The caller of a command, as the host application authenticated it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// A stable id (a user id, a service name). Recorded in every event's metadata.
    pub id: String,
    /// Permissions granted to the actor; `"*"` grants every permission.
    pub permissions: Vec<String>,
}

impl Actor {
    /// An actor with no permissions.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            permissions: Vec::new(),
        }
    }

    /// Grants a permission.
    pub fn with_permission(mut self, permission: impl Into<String>) -> Self {
        self.permissions.push(permission.into());
        self
    }

    /// Whether the actor holds `permission` (or `"*"`).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission || p == "*")
    }
}

/// Everything about one execution that is not the command itself. Copied into the metadata of
/// every event the command writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionContext {
    /// Ties together everything one request or process caused. A fresh id is used when unset.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command (for example the event a saga reacted to).
    pub causation_id: Option<Uuid>,
    /// The caller; checked against the command's required permission.
    pub actor: Option<Actor>,
    /// Application-defined metadata fields.
    pub custom: BTreeMap<String, serde_json::Value>,
    /// A time limit for this execution, overriding the executor's default.
    pub timeout: Option<Duration>,
    /// Makes this execution idempotent: the first execution with a key records what it wrote
    /// (in the system stream `$idempotency-<key>`, in the same atomic append as its events).
    /// A later one with the same key, in any process, never writes again: where it would
    /// write, it returns the recorded outcome instead
    /// ([`Executed::replayed`](crate::Executed::replayed)); a refusal decided on the current
    /// state is returned as it is. A key must make a valid stream name; otherwise the
    /// execution fails with a validation error and writes nothing.
    pub idempotency_key: Option<String>,
}

impl ExecutionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the actor.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds a custom metadata field.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }

    /// Adds a custom metadata field holding `value`, serialized (a struct of the
    /// application's own, read back with
    /// [`Metadata::custom_as`](crossfold_core::Metadata::custom_as)). Fails when `value` does
    /// not serialize to JSON.
    ///
    /// ```
    /// use crossfold_executor::ExecutionContext;
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// struct Origin { channel: &'static str }
    ///
    /// let context = ExecutionContext::new().with_typed("origin", &Origin { channel: "web" })?;
    /// assert_eq!(context.custom["origin"]["channel"], "web");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn with_typed<T: serde::Serialize + ?Sized>(
        mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        self.custom.insert(key.into(), serde_json::to_value(value)?);
        Ok(self)
    }

    /// Sets a time limit for this execution.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the idempotency key ([`idempotency_key`](Self::idempotency_key)): executing
    /// again with the same key writes nothing and returns the first outcome. Derive it from
    /// what makes the request unique (a payment id, the message being handled), never from the
    /// time or a fresh id.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Why an authorizer refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("permission {permission:?} required")]
pub struct Denied {
    /// The permission that was missing.
    pub permission: String,
}

/// Decides whether an actor may execute a command that requires `permission`.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(())` to allow; `Err` to refuse (nothing is read or written).
    fn authorize(
        &self,
        actor: Option<&Actor>,
        command: &str,
        permission: &str,
    ) -> Result<(), Denied>;
}

/// The default authorizer: the actor must hold the permission (or `"*"`); anonymous callers
/// are refused any command that requires one.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActorPermissions;

impl Authorizer for ActorPermissions {
    fn authorize(
        &self,
        actor: Option<&Actor>,
        _command: &str,
        permission: &str,
    ) -> Result<(), Denied> {
        match actor {
            Some(actor) if actor.has_permission(permission) => Ok(()),
            _ => Err(Denied {
                permission: permission.to_owned(),
            }),
        }
    }
}

impl<F> Authorizer for F
where
    F: Fn(Option<&Actor>, &str, &str) -> Result<(), Denied> + Send + Sync + 'static,
{
    fn authorize(
        &self,
        actor: Option<&Actor>,
        command: &str,
        permission: &str,
    ) -> Result<(), Denied> {
        self(actor, command, permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_permissions() {
        let teller = Actor::new("alice").with_permission("accounts:write");
        assert!(
            ActorPermissions
                .authorize(Some(&teller), "Deposit", "accounts:write")
                .is_ok()
        );
        assert_eq!(
            ActorPermissions.authorize(Some(&teller), "Close", "accounts:close"),
            Err(Denied {
                permission: "accounts:close".into()
            })
        );
        assert!(
            ActorPermissions
                .authorize(None, "Deposit", "accounts:write")
                .is_err()
        );
        let admin = Actor::new("root").with_permission("*");
        assert!(
            ActorPermissions
                .authorize(Some(&admin), "Close", "anything")
                .is_ok()
        );
    }
}
