//! What the append and read paths share, below the store type that calls them: the pool and
//! the statements of one schema. [`PgEventStore`](crate::PgEventStore) owns one and hands it
//! down; nothing here knows the store type.

use crossfold_core::StoreError;
use deadpool_postgres::{Object, Pool};

use crate::archive::{PartitionWatch, PgArchivedReads};
use crate::error::classify_pool;
use crate::read::Horizon;
use crate::read_index::KnownReadIndexes;
use crate::sql::Sql;

/// A store's connections and statements.
pub(crate) struct Db {
    pub(crate) pool: Pool,
    /// The schema holding the store's tables, as configured (unquoted).
    pub(crate) schema: String,
    pub(crate) sql: Sql,
    /// The open transactions known to be foreign to the store, which every read of the log
    /// passes (see `read::horizon`).
    pub(crate) horizon: Horizon,
    /// The optional read indexes found at the last look (see `read_index`).
    pub(crate) read_indexes: KnownReadIndexes,
    /// What a read of an archived stream returns.
    pub(crate) archived_reads: PgArchivedReads,
    /// Where the partitions of a partitioned log end, to create more ahead of appends.
    pub(crate) partitions: PartitionWatch,
}

impl Db {
    pub(crate) fn new(pool: Pool, schema: String, archived_reads: PgArchivedReads) -> Self {
        let sql = Sql::new(&schema);
        Self {
            pool,
            schema,
            sql,
            horizon: Horizon::default(),
            read_indexes: KnownReadIndexes::default(),
            archived_reads,
            partitions: PartitionWatch::default(),
        }
    }

    /// A pooled connection; its statements stay prepared for the next caller.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(classify_pool)
    }
}
