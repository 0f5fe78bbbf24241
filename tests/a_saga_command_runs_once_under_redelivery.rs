//! A process manager's command runs once per triggering event: when the event is delivered
//! again on purpose, when the process dies between the command and the checkpoint (a new
//! process gets the same events again), and when the process manager is reset and replays the
//! log. Its commands carry the triggering event as causation and its correlation id; its
//! deadline is scheduled once. On memory, and on PostgreSQL (with PostgreSQL checkpoints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossfold::core::checkpoint::ProjectionControl;
use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{
    AppendRequest, Codec, EventData, EventStore, Json, LogFilter, Payload, Position, Recorded,
    StreamId, StreamVersion, Timestamp, Upcasters,
};
use crossfold::executor::Executor;
use crossfold::prelude::*;
use crossfold::projections::{
    ApplyContext, HandlerError, Process, ProcessManager, ProcessManagerProjection, Projection,
    ProjectionOptions, ProjectionRunner, RunnerOptions, command_failure,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Signup {
    Registered { user: String },
    Welcomed { user: String },
}

impl DomainEvent for Signup {
    fn event_type(&self) -> &'static str {
        match self {
            Signup::Registered { .. } => "Registered",
            Signup::Welcomed { .. } => "Welcomed",
        }
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// Appends a welcome every time it runs: only the process manager's idempotency key keeps a
/// redelivered event from welcoming twice.
struct SendWelcome {
    user: String,
}

impl Command for SendWelcome {
    type Event = Signup;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        sid(&format!("mailbox-{}", self.user))
    }
    fn apply(_: &mut (), _: &Recorded<Signup>) {}
    fn handle<'x>(
        &self,
        _: &(),
        mailbox: StreamRef<'x>,
        out: &mut Emit<'x, Signup>,
    ) -> Result<(), CommandError> {
        if self.user == "mallory" {
            return Err(CommandError::rejected("blocked", "mallory is not welcome"));
        }
        out.append(
            mailbox,
            Signup::Welcomed {
                user: self.user.clone(),
            },
        );
        Ok(())
    }
}

/// Welcomes every registered user and schedules a reminder; counts its reactions.
#[derive(Clone, Default)]
struct Greeter {
    reactions: Arc<AtomicUsize>,
}

impl ProcessManager for Greeter {
    type Event = Signup;
    type State = usize;

    fn name(&self) -> &str {
        "greeter"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["user"])
    }

    fn state_streams(&self, event: &Recorded<Signup>) -> Vec<StreamId> {
        vec![event.stream_id.clone()]
    }

    fn apply(registrations: &mut usize, event: &Recorded<Signup>) {
        if matches!(event.event, Signup::Registered { .. }) {
            *registrations += 1;
        }
    }

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        registrations: &usize,
        event: &Recorded<Signup>,
        process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        self.reactions.fetch_add(1, Ordering::SeqCst);
        assert_eq!(*registrations, 1, "the state is folded up to the trigger");
        let Signup::Registered { user } = &event.event else {
            return Ok(());
        };
        process
            .execute(SendWelcome { user: user.clone() })
            .await
            .map_err(command_failure)?;
        process
            .schedule(
                "reminder",
                Duration::from_secs(3600),
                serde_json::json!({ "user": user }),
            )
            .await?;
        Ok(())
    }
}

async fn register<S: EventStore>(store: &S, user: &str) {
    let correlation = uuid::Uuid::new_v4();
    let mut data = EventData::new(
        "Registered",
        Payload::json(format!(r#"{{"type":"Registered","user":"{user}"}}"#).into_bytes()),
    );
    data.metadata = Arc::new(crossfold::core::Metadata {
        correlation_id: Some(correlation),
        ..crossfold::core::Metadata::default()
    });
    let appended = store
        .append(AppendRequest::new().stream(
            sid(&format!("user-{user}")),
            crossfold::core::ExpectedVersion::NoStream,
            vec![data],
        ))
        .await
        .unwrap();
    // On PostgreSQL the log shows an append once older transactions have finished.
    store
        .wait_for_position(appended.events[0].position, Duration::from_secs(10))
        .await
        .unwrap();
}

async fn registrations<S: EventStore>(store: &S) -> Vec<Recorded<Signup>> {
    let upcasters = Upcasters::new();
    store
        .read_all(Position::START, 1000, &LogFilter::categories(["user"]))
        .await
        .unwrap()
        .iter()
        .map(|e| upcasters.decode(&Json, e).unwrap())
        .collect()
}

async fn welcomes<S: EventStore>(store: &S, user: &str) -> Vec<crossfold::core::RecordedEvent> {
    store
        .read_stream(
            &sid(&format!("mailbox-{user}")),
            StreamVersion::EMPTY,
            usize::MAX,
        )
        .await
        .unwrap()
        .events
}

/// The scenario, on any stores. `K` is read by the reset; `()` stands for the unit of work,
/// which a process manager does not use.
async fn scenario<S, D, K>(store: S, deadlines: D, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: ProjectionControl + Clone + 'static,
{
    let greeter = Greeter::default();
    let adapter = |greeter: &Greeter| {
        ProcessManagerProjection::<_, _, _, _, _, ()>::new(
            greeter.clone(),
            Executor::new(store.clone()),
            deadlines.clone(),
            checkpoints.clone(),
        )
    };
    let context = ApplyContext::new("greeter", 1, 1);
    register(&store, "ada").await;
    register(&store, "bob").await;
    let events = registrations(&store).await;
    assert_eq!(events.len(), 2);

    // Delivered, then delivered again on purpose.
    let first = adapter(&greeter);
    first.apply(&mut (), &context, &events).await.unwrap();
    first.apply(&mut (), &context, &events).await.unwrap();
    assert_eq!(greeter.reactions.load(Ordering::SeqCst), 4);
    for user in ["ada", "bob"] {
        assert_eq!(
            welcomes(&store, user).await.len(),
            1,
            "{user} welcomed once"
        );
    }

    // The process dies between the commands and the checkpoint: a new one gets the same
    // events again.
    drop(first);
    let second = adapter(&greeter);
    second.apply(&mut (), &context, &events).await.unwrap();
    assert_eq!(greeter.reactions.load(Ordering::SeqCst), 6);
    for user in ["ada", "bob"] {
        assert_eq!(
            welcomes(&store, user).await.len(),
            1,
            "{user} welcomed once"
        );
    }

    // Causation and correlation travel from the registration to the welcome.
    let welcome = &welcomes(&store, "ada").await[0];
    assert_eq!(
        welcome.metadata.causation_id,
        Some(events[0].event_id.as_uuid())
    );
    assert_eq!(
        welcome.metadata.correlation_id,
        events[0].metadata.correlation_id
    );
    assert!(welcome.metadata.correlation_id.is_some());

    // One reminder per registration, however often it was scheduled.
    let counts = deadlines.deadline_counts(Timestamp::now()).await.unwrap();
    assert_eq!(counts.pending, 2);

    // A reset replays the log: no reaction runs again, not even in a restarted process.
    second.reset(&mut (), &context).await.unwrap();
    second.apply(&mut (), &context, &events).await.unwrap();
    drop(second);
    let third = adapter(&greeter);
    third.apply(&mut (), &context, &events).await.unwrap();
    assert_eq!(greeter.reactions.load(Ordering::SeqCst), 6);

    // A new registration after the replay is reacted to.
    register(&store, "cy").await;
    let events = registrations(&store).await;
    third.apply(&mut (), &context, &events).await.unwrap();
    assert_eq!(greeter.reactions.load(Ordering::SeqCst), 7);
    assert_eq!(welcomes(&store, "cy").await.len(), 1);
    assert_eq!(welcomes(&store, "ada").await.len(), 1);
}

/// A command the process manager cannot get past fails the batch as a rejection (the runner
/// then fails the projection or dead-letters the event); a store outage is transient.
#[test]
fn refusals_and_outages_follow_the_projection_error_policy() {
    let refused = crossfold::executor::Error::Command(CommandError::rejected("no", "refused"));
    assert!(!command_failure(refused).is_transient());
    let outage = crossfold::executor::Error::Store {
        source: crossfold::core::StoreError::Unavailable("down".into()),
        attempts: 3,
    };
    assert!(command_failure(outage).is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_command_runs_once_under_redelivery() {
    use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};
    scenario(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
        MemoryCheckpoints::new(),
    )
    .await;
}

/// The same process manager under the projection runner: each registration is welcomed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_drives_a_process_manager() {
    use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let greeter = Greeter::default();
    let mut runner =
        ProjectionRunner::new(store.clone(), checkpoints.clone(), RunnerOptions::default());
    runner.spawn(
        ProcessManagerProjection::new(
            greeter.clone(),
            Executor::new(store.clone()),
            MemoryDeadlineStore::new(),
            checkpoints.clone(),
        ),
        ProjectionOptions::default(),
    );
    for user in ["ada", "bob", "cy"] {
        register(&store, user).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while greeter.reactions.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner did not react"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.shutdown().await;
    for user in ["ada", "bob", "cy"] {
        assert_eq!(welcomes(&store, user).await.len(), 1);
    }
}

/// A reaction whose command is refused fails the process manager at that event (the default
/// policy), or, in dead-letter mode, sets the event aside and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reaction_follows_the_error_policy() {
    use crossfold::core::checkpoint::{ProjectionState, ProjectionStatus};
    use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};
    use crossfold::projections::OnError;

    for on_error in [OnError::Fail, OnError::DeadLetter] {
        let store = MemoryStore::new();
        let checkpoints = MemoryCheckpoints::new();
        let greeter = Greeter::default();
        let mut runner =
            ProjectionRunner::new(store.clone(), checkpoints.clone(), RunnerOptions::default());
        runner.spawn(
            ProcessManagerProjection::new(
                greeter.clone(),
                Executor::new(store.clone()),
                MemoryDeadlineStore::new(),
                checkpoints.clone(),
            ),
            ProjectionOptions::default().on_error(on_error),
        );
        for user in ["ada", "mallory", "bob"] {
            register(&store, user).await;
        }
        let mallory = registrations(&store).await[1].position;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        let status: ProjectionStatus = loop {
            let status = runner.status_of("greeter").map(|s| s.status);
            let done = match on_error {
                OnError::Fail => status
                    .as_ref()
                    .is_some_and(|s| s.state == ProjectionState::Failed),
                _ => welcomes(&store, "bob").await.len() == 1,
            };
            if done {
                break status.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "{on_error:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let dead = checkpoints.dead_letters("greeter").await.unwrap();
        runner.shutdown().await;
        assert_eq!(welcomes(&store, "ada").await.len(), 1);
        assert!(welcomes(&store, "mallory").await.is_empty());
        match on_error {
            OnError::Fail => {
                assert_eq!(status.error_position, Some(mallory));
                assert!(
                    welcomes(&store, "bob").await.is_empty(),
                    "stopped at mallory"
                );
                assert!(dead.is_empty());
            }
            _ => assert_eq!(dead.len(), 1, "mallory's registration set aside"),
        }
    }
}

/// Checkpoints whose commits never finish while `dying` is set: the process dies after its
/// reactions ran and before their checkpoint committed.
#[derive(Clone)]
struct DiesBeforeCommit {
    inner: crossfold::memory::MemoryCheckpoints,
    dying: Arc<std::sync::atomic::AtomicBool>,
}

impl ProjectionControl for DiesBeforeCommit {
    async fn list(
        &self,
    ) -> Result<
        Vec<crossfold::core::checkpoint::ProjectionRecord>,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.list().await
    }
    async fn get(
        &self,
        name: &str,
    ) -> Result<
        Option<crossfold::core::checkpoint::ProjectionRecord>,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.get(name).await
    }
    async fn request(
        &self,
        name: &str,
        request: crossfold::core::checkpoint::ControlRequest,
    ) -> Result<
        crossfold::core::checkpoint::ProjectionRecord,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.request(name, request).await
    }
    async fn dead_letters(
        &self,
        name: &str,
    ) -> Result<
        Vec<crossfold::core::checkpoint::DeadLetter>,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.dead_letters(name).await
    }
}

impl crossfold::core::checkpoint::Leases for DiesBeforeCommit {
    async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<
        Option<crossfold::core::checkpoint::Lease>,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.acquire(name, owner, ttl).await
    }
    async fn renew(
        &self,
        lease: &crossfold::core::checkpoint::Lease,
        ttl: Duration,
    ) -> Result<
        Option<crossfold::core::checkpoint::ProjectionRecord>,
        crossfold::core::checkpoint::CheckpointError,
    > {
        self.inner.renew(lease, ttl).await
    }
    async fn release(
        &self,
        lease: &crossfold::core::checkpoint::Lease,
    ) -> Result<(), crossfold::core::checkpoint::CheckpointError> {
        self.inner.release(lease).await
    }
    async fn report(
        &self,
        lease: &crossfold::core::checkpoint::Lease,
        status: &crossfold::core::checkpoint::ProjectionStatus,
    ) -> Result<(), crossfold::core::checkpoint::CheckpointError> {
        self.inner.report(lease, status).await
    }
}

impl crossfold::core::checkpoint::UnitOfWork for DiesBeforeCommit {
    type Unit = crossfold::memory::MemoryUnit;
    async fn begin(
        &self,
        lease: &crossfold::core::checkpoint::Lease,
    ) -> Result<crossfold::memory::MemoryUnit, crossfold::core::checkpoint::CheckpointError> {
        self.inner.begin(lease).await
    }
    async fn commit(
        &self,
        lease: &crossfold::core::checkpoint::Lease,
        unit: crossfold::memory::MemoryUnit,
        commit: crossfold::core::checkpoint::CheckpointCommit,
    ) -> Result<(), crossfold::core::checkpoint::CheckpointError> {
        if self.dying.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.commit(lease, unit, commit).await
    }
}

/// The process running the saga dies — its runtime and every task on it are dropped — after
/// the reactions executed their commands and before the checkpoint committed. A new process
/// gets the same events again; the commands are not applied twice.
#[test]
fn a_saga_command_runs_once_when_the_process_dies_before_its_checkpoint() {
    use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};

    let store = MemoryStore::new();
    let deadlines = MemoryDeadlineStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let greeter = Greeter::default();
    let options = RunnerOptions::default()
        .lease_ttl(Duration::from_millis(200))
        .control_interval(Duration::from_millis(20));
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let wait_for = |what: &'static str, done: &dyn Fn() -> bool| {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < give_up, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let first = runtime();
    let dying = DiesBeforeCommit {
        inner: checkpoints.clone(),
        dying: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let runner = first.block_on(async {
        // Both registrations before the runner starts: they come in one batch, whose commit
        // never finishes.
        for user in ["ada", "bob"] {
            register(&store, user).await;
        }
        let mut runner = ProjectionRunner::new(store.clone(), dying.clone(), options.clone());
        runner.spawn(
            ProcessManagerProjection::new(
                greeter.clone(),
                Executor::new(store.clone()),
                deadlines.clone(),
                dying,
            ),
            ProjectionOptions::default(),
        );
        runner
    });
    wait_for("the first process reacted", &|| {
        greeter.reactions.load(Ordering::SeqCst) >= 2
    });
    let checkpoint = first
        .block_on(checkpoints.get("greeter"))
        .unwrap()
        .map(|r| r.position)
        .unwrap_or_default();
    assert_eq!(checkpoint, Position::START, "nothing committed");
    // The process dies.
    std::mem::forget(runner);
    drop(first);

    let second = runtime();
    let reacted_before = greeter.reactions.load(Ordering::SeqCst);
    let runner = second.block_on(async {
        let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options);
        runner.spawn(
            ProcessManagerProjection::new(
                greeter.clone(),
                Executor::new(store.clone()),
                deadlines.clone(),
                checkpoints.clone(),
            ),
            ProjectionOptions::default(),
        );
        runner
    });
    wait_for("the second process got the events again", &|| {
        greeter.reactions.load(Ordering::SeqCst) >= reacted_before + 2
    });
    second.block_on(async {
        let head = store.head_position().await.unwrap();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while runner
            .status_of("greeter")
            .is_none_or(|s| s.position < head)
        {
            assert!(tokio::time::Instant::now() < give_up, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runner.shutdown().await;
        for user in ["ada", "bob"] {
            assert_eq!(
                welcomes(&store, user).await.len(),
                1,
                "{user} welcomed once"
            );
        }
        let pending = deadlines.deadline_counts(Timestamp::now()).await.unwrap();
        assert_eq!(pending.pending, 2, "one reminder each");
    });
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_command_runs_once_under_redelivery_on_postgres() {
    use crossfold::postgres::{PgCheckpoints, PgConfig, PgDeadlineStore, PgEventStore};
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!(
        "cf_test_{}_{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        fastrand::u32(..)
    );
    let store = PgEventStore::connect(
        PgConfig::from_url(&url)
            .unwrap()
            .schema(&schema)
            .pool_size(4),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    store.migrate().await.unwrap();
    let deadlines = PgDeadlineStore::new(&store);
    let checkpoints = PgCheckpoints::new(&store);
    scenario(store.clone(), deadlines, checkpoints).await;
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
