//! The PostgreSQL server `ci/with-services` started, for the tests that need it.

use postgres::{Client, NoTls};

use super::{service, Event};

pub fn url() -> String {
    service("VINEQUEUE_TEST_POSTGRES_URL")
}

pub fn db() -> Client {
    Client::connect(&url(), NoTls).unwrap()
}

/// A table name of this test's own, dropped first if an earlier run left it.
pub fn table(name: &str) -> String {
    db().batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
        .unwrap();
    name.to_owned()
}

/// The events in the default table, as many times as each is stored.
pub fn stored(table: &str) -> Vec<Event> {
    db().query(&format!("SELECT item::text FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|row| serde_json::from_str(row.get(0)).unwrap())
        .collect()
}
