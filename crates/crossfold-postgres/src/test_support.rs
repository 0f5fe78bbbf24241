//! What the crate's own unit tests share.

/// A plain connection to the server the tests use (`DATABASE_URL`, or the local one). Fails
/// the test, saying how to point it at a server, when none answers.
pub(crate) async fn connect() -> tokio_postgres::Client {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url} ({e}); set DATABASE_URL to a server")
        });
    tokio::spawn(connection);
    client
}
