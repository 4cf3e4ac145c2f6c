//! The skeleton of a view that keeps one row per key (a user, an order) by folding
//! the log over it: load the rows a batch touches with one statement, fold each
//! record over its row in log order, write the touched rows back with one
//! statement. Each such view says only how to find a record's key, how to read a
//! row, how one record changes it, and how rows are written.

use std::collections::{BTreeSet, HashMap};

use sqlx::postgres::PgRow;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkpoint::Generation;
use crate::record::LogRecord;
use crate::views::OutOfOrder;

/// A view of one row per key, kept by [`apply`].
pub(crate) trait FoldedView {
    type Row;
    /// The table (the live generation's name), its key column and its select list.
    const TABLE: &'static str;
    const KEY: &'static str;
    const COLUMNS: &'static str;

    /// The row a record concerns, if any.
    fn key_of(record: &LogRecord) -> Option<Uuid>;
    fn key(row: &Self::Row) -> Uuid;
    fn from_row(row: &PgRow) -> sqlx::Result<Self::Row>;
    /// The row after the record (`row` is `None` before the first event that makes
    /// one). `Ok(None)` leaves no row: the record has nothing to show yet.
    fn fold(row: Option<Self::Row>, record: &LogRecord) -> Result<Option<Self::Row>, OutOfOrder>;
    /// Inserts or replaces `rows` in `table` (a generation of [`Self::TABLE`]).
    async fn upsert(
        connection: &mut PgConnection,
        table: &str,
        rows: &[&Self::Row],
    ) -> sqlx::Result<()>;
}

/// Loads the rows of `keys` from `table`, by key.
pub(crate) async fn load<V: FoldedView>(
    connection: &mut PgConnection,
    table: &str,
    keys: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, V::Row>> {
    let statement = format!(
        "SELECT {} FROM {table} WHERE {} = ANY($1)",
        V::COLUMNS,
        V::KEY
    );
    let rows = sqlx::query(&statement)
        .bind(keys)
        .fetch_all(&mut *connection)
        .await?;
    rows.iter()
        .map(|row| V::from_row(row).map(|row| (V::key(&row), row)))
        .collect()
}

/// Applies a batch of records, in order, to one generation of the view `V`.
pub(crate) async fn apply<V: FoldedView>(
    connection: &mut PgConnection,
    generation: Generation,
    records: &[LogRecord],
) -> anyhow::Result<()> {
    let keys: Vec<Uuid> = records
        .iter()
        .filter_map(V::key_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let table = generation.table(V::TABLE);
    let mut rows = load::<V>(connection, &table, &keys).await?;
    let mut touched = BTreeSet::new();
    for record in records {
        let Some(key) = V::key_of(record) else {
            continue;
        };
        if let Some(next) = V::fold(rows.remove(&key), record)? {
            rows.insert(key, next);
            touched.insert(key);
        }
    }
    let written: Vec<&V::Row> = touched.iter().filter_map(|key| rows.get(key)).collect();
    if !written.is_empty() {
        V::upsert(connection, &table, &written).await?;
    }
    Ok(())
}

/// One column of `rows`, as the array an `UNNEST` insert binds.
pub(crate) fn column<R, T>(rows: &[&R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(|row| value(row)).collect()
}
