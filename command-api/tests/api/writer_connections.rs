//! The command path's connections: reused when released, closed when a statement may
//! have been interrupted.

use orders_store::writer_connections::WriterConnections;

use crate::helpers::fresh_database;

async fn backend_pid(
    writers: &WriterConnections,
) -> (i32, orders_store::writer_connections::WriterConnection<'_>) {
    let mut connection = writers.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(connection.connection())
        .await
        .unwrap();
    (pid, connection)
}

#[tokio::test]
async fn a_released_connection_is_reused_and_an_abandoned_one_is_closed() {
    let pool = fresh_database().await;
    let writers = WriterConnections::new((*pool.connect_options()).clone(), 4);

    let (first, connection) = backend_pid(&writers).await;
    connection.release();
    let (again, connection) = backend_pid(&writers).await;
    assert_eq!(again, first, "a released connection is handed out again");

    // Dropped without release, as when a request is cancelled mid-statement.
    drop(connection);
    let (fresh, connection) = backend_pid(&writers).await;
    assert_ne!(fresh, first, "an abandoned connection is never reused");
    connection.release();

    // The abandoned backend goes away.
    let mut gone = false;
    for _ in 0..50 {
        let alive: bool =
            sqlx::query_scalar("SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1")
                .bind(first)
                .fetch_one(&pool)
                .await
                .unwrap();
        if !alive {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the abandoned connection's backend is still there");
}

#[tokio::test]
async fn no_more_than_the_maximum_are_open_at_once() {
    let pool = fresh_database().await;
    let writers = WriterConnections::new((*pool.connect_options()).clone(), 2);
    let a = writers.acquire().await.unwrap();
    let b = writers.acquire().await.unwrap();
    let third =
        tokio::time::timeout(std::time::Duration::from_millis(200), writers.acquire()).await;
    assert!(third.is_err(), "a third connection was handed out");
    a.release();
    let c = tokio::time::timeout(std::time::Duration::from_secs(5), writers.acquire())
        .await
        .expect("a connection once one is released")
        .unwrap();
    b.release();
    c.release();
}
