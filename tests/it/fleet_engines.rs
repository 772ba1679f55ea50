//! Proves the fleet-mode test support against the real engines: a throwaway PostgreSQL cluster
//! and a single-node Garage S3 server, both surviving a stop and a start on the same state.

use crate::support::garage::Garage;
use crate::support::postgres::Postgres;

#[test]
fn postgres_starts_and_answers() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    assert_eq!(pg.psql("select 1").trim(), "1");
    let url = pg.create_database("fleet");
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/fleet", pg.port())
    );
    pg.psql_in(
        &url,
        "create table t (v text); insert into t values ('kept')",
    );

    pg.stop();
    pg.start_again();

    assert_eq!(pg.psql("select 1").trim(), "1");
    assert_eq!(pg.psql_in(&url, "select v from t").trim(), "kept");
}

#[test]
fn garage_starts_and_lists_an_empty_bucket() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    assert!(garage.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(garage.region(), "garage");
    assert_eq!(garage.bucket(), "pullsecret-test");
    assert!(
        garage.access_key().starts_with("GK"),
        "{}",
        garage.access_key()
    );
    assert!(!garage.secret_key().is_empty());
    assert!(garage.list_keys("").is_empty());

    garage.put_object("blobs/sha256/ab cd+ef", b"layer bytes");
    assert_eq!(garage.list_keys(""), ["blobs/sha256/ab cd+ef"]);
    assert_eq!(garage.list_keys("blobs/"), ["blobs/sha256/ab cd+ef"]);
    assert!(garage.list_keys("manifests/").is_empty());

    garage.stop();
    garage.start_again();

    assert_eq!(garage.list_keys(""), ["blobs/sha256/ab cd+ef"]);
    assert_eq!(
        garage.get_object("blobs/sha256/ab cd+ef").as_deref(),
        Some(&b"layer bytes"[..])
    );
    garage.delete_all();
    assert!(garage.list_keys("").is_empty());
    assert_eq!(garage.get_object("blobs/sha256/ab cd+ef"), None);
}
