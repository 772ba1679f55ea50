//! Fleet mode against real engines: three replicas on one PostgreSQL (Debian's, a throwaway
//! cluster) and one Garage bucket, in front of the fault server. One upstream GET however many
//! replicas ask; a replica killed mid-fill is taken over; secrets rotate fleet-wide; the bucket
//! or the database going away degrades and recovers by itself.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::fault_server::{Fault, FaultServer};
use crate::support::garage::Garage;
use crate::support::http::http_request;
use crate::support::postgres::Postgres;
use crate::support::proxy::{stream_get, ProxyProcess};
use crate::support::{eventually, metric, run_with_stdin, stderr, Env, CANARY, CANARY_USER};

/// The engines and what every replica shares: the database, the bucket, the master key.
struct Fleet {
    pg: Postgres,
    s3: Garage,
    url: String,
    key_file: PathBuf,
    _keys: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Option<Self> {
        let pg = Postgres::start()?;
        let s3 = Garage::start()?;
        let url = pg.create_database("fleet");
        let keys = tempfile::tempdir().expect("tempdir");
        Some(Self {
            pg,
            s3,
            url,
            key_file: keys.path().join("master.key"),
            _keys: keys,
        })
    }

    /// A replica's private environment, on the shared state and master key.
    fn env(&self) -> Env {
        let mut env = Env::new();
        env.set("PULLSECRET_STATE", &self.url);
        env.set(
            "PULLSECRET_MASTER_KEY_FILE",
            &self.key_file.display().to_string(),
        );
        env.set("PULLSECRET_MASTER_KEY_STORE", "file");
        env.set("FLEET_S3_KEY", self.s3.access_key());
        env.set("FLEET_S3_SECRET", self.s3.secret_key());
        env
    }

    /// `n` replica environments in front of the fault server, its credentials stored once (in
    /// the shared state) through the first; and the `[[upstream]]` table they share.
    fn replicas_for(&self, up: &FaultServer, n: usize) -> (Vec<Env>, String) {
        let envs: Vec<Env> = (0..n).map(|_| self.env()).collect();
        let upstream = up.upstream(&envs[0], "http", "");
        (envs, upstream)
    }

    /// A replica's proxy.toml keys: the shared bucket, credentials by reference.
    fn config(&self) -> String {
        format!(
            "[prefetch]\nenabled = false\n[limits]\nupstream_timeout_secs = 60\nparallel_fetch_connections = 1\n\
             [cache]\nbackend = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n\
             access_key_id = \"env://FLEET_S3_KEY\"\nsecret_access_key = \"env://FLEET_S3_SECRET\"\n",
            self.s3.bucket(),
            self.s3.endpoint(),
            self.s3.region()
        )
    }

    fn object_key(digest: &str) -> String {
        format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
    }
}

fn test_blob(mib: u32) -> Vec<u8> {
    (0..(mib << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn counter(addr: &str, series: &str) -> f64 {
    metric(addr, series).unwrap_or(0.0)
}

#[test]
fn three_replicas_fetch_a_blob_once_and_share_it_through_the_bucket() {
    let Some(fleet) = Fleet::start() else { return };
    let blob = test_blob(8);
    let up = FaultServer::start(blob.clone());
    // Half the blob, a pause, the rest: the other replicas ask while the first one fills.
    up.set(Fault::Pause(Duration::from_secs(3)));
    let (envs, upstream) = fleet.replicas_for(&up, 3);
    let replicas: Vec<ProxyProcess> = envs
        .iter()
        .map(|e| ProxyProcess::start(e, &fleet.config(), &upstream))
        .collect();
    let path = format!("/v2/app/blobs/{}", up.blob_digest);

    let first = {
        let (addr, p) = (replicas[0].addr.clone(), path.clone());
        std::thread::spawn(move || stream_get(&addr, &p, &[]))
    };
    eventually(Duration::from_secs(10), "the first fill to start", || {
        up.blob_gets.load(Ordering::Relaxed) > 0
    });
    let others: Vec<_> = replicas[1..]
        .iter()
        .map(|r| {
            let (addr, p) = (r.addr.clone(), path.clone());
            std::thread::spawn(move || stream_get(&addr, &p, &[]))
        })
        .collect();
    let mut got = vec![first.join().expect("thread").expect("GET on replica 0")];
    for t in others {
        got.push(t.join().expect("thread").expect("GET on a follower"));
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.status, 200, "replica {i}");
        assert_eq!(g.digest, up.blob_digest, "replica {i} served wrong bytes");
    }
    assert_eq!(
        up.blob_gets.load(Ordering::Relaxed),
        1,
        "the upstream saw more than one GET for the blob"
    );
    for r in &replicas[1..] {
        assert_eq!(
            counter(&r.addr, "pullsecret_proxy_peer_fills_total"),
            1.0,
            "a follower did not stream from the filling replica: {}",
            r.log()
        );
    }
    // The leader uploads the verified blob; only its final key appears.
    let key = Fleet::object_key(&up.blob_digest);
    eventually(Duration::from_secs(20), "the blob in the bucket", || {
        fleet.s3.list_keys("") == vec![key.clone()]
    });
    assert_eq!(
        fleet.s3.get_object(&key).map(|b| sha256(&b)),
        Some(up.blob_digest.clone())
    );

    // A replica whose own copy is gone reads the bucket, not the upstream.
    let own = replicas[1].wait_cached(&up.blob_digest);
    std::fs::remove_file(&own).expect("remove local copy");
    let again = stream_get(&replicas[1].addr, &path, &[]).expect("GET after local loss");
    assert_eq!(
        (again.status, again.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    assert_eq!(up.blob_gets.load(Ordering::Relaxed), 1);
    assert_eq!(
        counter(&replicas[1].addr, "pullsecret_proxy_shared_fills_total"),
        1.0
    );

    // The database holds the secret sealed: no form of the password is in a dump.
    let dump = fleet.pg.psql_in(&fleet.url, "select name, key_id, encode(wrapped_key, 'base64'), encode(data, 'base64') from namespaces");
    assert!(dump.contains("default"), "{dump}");
    crate::support::assert_no_canary("the database", &dump);
    let raw = fleet
        .pg
        .psql_in(&fleet.url, "select encode(data, 'escape') from namespaces");
    crate::support::assert_no_canary("the database (raw)", &raw);
    for r in &replicas {
        crate::support::assert_no_canary("a replica's log", &r.log());
    }

    // The peer endpoint answers only replicas of this fleet.
    let peer = format!("/internal/fleet/v1/blobs/{}", up.blob_digest);
    for auth in [
        None,
        Some("PullsecretFleet 00"),
        Some("Basic ZmF1bHQtYm90Og=="),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = http_request("GET", &replicas[0].addr, &peer, &headers, b"").expect("peer GET");
        assert_eq!(r.status, 401, "peer endpoint with {auth:?}");
        assert!(
            r.body.len() < 1024,
            "blob bytes leaked to a client without rights"
        );
    }
}

#[test]
fn a_replica_killed_mid_fill_is_taken_over_and_nothing_partial_is_visible() {
    let Some(fleet) = Fleet::start() else { return };
    let blob = test_blob(8);
    let up = FaultServer::start(blob.clone());
    // The leader gets half the blob, then the upstream goes quiet for a minute.
    up.set(Fault::Stall(Duration::from_secs(60)));
    let (envs, upstream) = fleet.replicas_for(&up, 2);
    let mut leader = ProxyProcess::start(&envs[0], &fleet.config(), &upstream);
    let follower = ProxyProcess::start(&envs[1], &fleet.config(), &upstream);
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let (addr, p) = (leader.addr.clone(), path.clone());
    let _doomed = std::thread::spawn(move || stream_get(&addr, &p, &[]));
    eventually(
        Duration::from_secs(10),
        "the leader's fill to start",
        || {
            counter(&leader.addr, "pullsecret_proxy_upstream_bytes_total")
                >= (blob.len() / 2) as f64
        },
    );
    let (addr, p) = (follower.addr.clone(), path.clone());
    let client = std::thread::spawn(move || stream_get(&addr, &p, &[]));
    eventually(
        Duration::from_secs(10),
        "the follower to stream from the leader",
        || counter(&follower.addr, "pullsecret_proxy_peer_fills_total") >= 1.0,
    );
    leader.kill9();
    let killed = Instant::now();
    let got = client.join().expect("thread").expect("follower GET");
    let took = killed.elapsed();
    assert_eq!(got.status, 200, "{}", follower.log());
    assert_eq!(
        got.digest, up.blob_digest,
        "the follower served wrong bytes"
    );
    assert!(
        follower.log().contains("took over the fill"),
        "{}",
        follower.log()
    );
    assert_eq!(
        up.blob_gets.load(Ordering::Relaxed),
        1,
        "the whole blob was fetched twice"
    );
    assert!(
        up.range_gets.load(Ordering::Relaxed) >= 1,
        "the takeover did not resume by range"
    );
    eprintln!("takeover: the follower's client finished {took:?} after the leader was killed");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Only the complete, verified blob is in the bucket, under its final key.
    let key = Fleet::object_key(&up.blob_digest);
    eventually(Duration::from_secs(20), "the blob in the bucket", || {
        fleet.s3.list_keys("") == vec![key.clone()]
    });
    assert_eq!(
        fleet.s3.get_object(&key).map(|b| sha256(&b)),
        Some(up.blob_digest.clone())
    );
}

#[test]
fn a_rotated_secret_is_used_by_every_replica_within_a_second() {
    let Some(fleet) = Fleet::start() else { return };
    let up = FaultServer::start(test_blob(1));
    let (envs, upstream) = fleet.replicas_for(&up, 3);
    // Start with a wrong password: the upstream refuses every replica.
    let secret = |env: &Env, password: &str| {
        crate::support::store_scoped_secret(
            env,
            "default",
            "fault-canary",
            &up.addr,
            (CANARY_USER, password),
            "namespace",
        )
    };
    secret(&envs[0], "not-the-password");
    let replicas: Vec<ProxyProcess> = envs
        .iter()
        .map(|e| ProxyProcess::start(e, &fleet.config(), &upstream))
        .collect();
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    for r in &replicas {
        let h = http_request("HEAD", &r.addr, &path, &[], b"").expect("HEAD");
        assert_eq!(h.status, 401, "{}", r.log());
    }
    // Rotate on one replica's CLI; every replica uses the new value within a second.
    secret(&envs[2], CANARY);
    let rotated = Instant::now();
    // One deadline for all three: every replica within the same second.
    eventually(
        Duration::from_secs(1),
        "the rotated secret in use everywhere",
        || {
            replicas.iter().all(|r| {
                http_request("HEAD", &r.addr, &path, &[], b"").is_ok_and(|h| h.status == 200)
            })
        },
    );
    eprintln!(
        "rotation: all three replicas used the new secret {:?} after the write",
        rotated.elapsed()
    );
}

#[test]
fn bucket_and_database_outages_degrade_and_recover_by_themselves() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let up = FaultServer::start(test_blob(2));
    let (envs, upstream) = fleet.replicas_for(&up, 2);
    let a = ProxyProcess::start(&envs[0], &fleet.config(), &upstream);
    let b = ProxyProcess::start(&envs[1], &fleet.config(), &upstream);
    let path = format!("/v2/app/blobs/{}", up.blob_digest);

    // The bucket is down: the blob comes straight from the upstream, and /metrics and the log say so.
    fleet.s3.stop();
    let got = stream_get(&a.addr, &path, &[]).expect("GET with the bucket down");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    eventually(Duration::from_secs(10), "the bucket reported down", || {
        metric(&a.addr, "pullsecret_proxy_shared_store_up") == Some(0.0)
    });
    assert!(a.log().contains("object store unreachable"), "{}", a.log());
    // It comes back: the next fill lands in the bucket again, with no operator action.
    fleet.s3.start_again();
    let got = stream_get(&b.addr, &path, &[]).expect("GET with the bucket back");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    let key = Fleet::object_key(&up.blob_digest);
    eventually(Duration::from_secs(20), "the blob in the bucket", || {
        fleet.s3.list_keys("") == vec![key.clone()]
    });
    eventually(Duration::from_secs(10), "the bucket reported up", || {
        metric(&b.addr, "pullsecret_proxy_shared_store_up") == Some(1.0)
    });

    // The database is down: cached content is served; writes fail clearly and change nothing.
    fleet.pg.stop();
    let got = stream_get(&a.addr, &path, &[]).expect("cached GET with the database down");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    let create_later = || {
        run_with_stdin(
            envs[1].pullsecret(&[
                "secret",
                "create",
                "docker-registry",
                "later",
                "--docker-server",
                "reg.example",
                "--docker-username",
                "u",
                "--docker-password-stdin",
            ]),
            b"pw",
        )
    };
    let refused = create_later();
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(why.contains("postgres store unavailable"), "{why}");
    assert_eq!(
        why.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{why}"
    );
    // Recovery is automatic: the replicas reconnect, and the write succeeds now.
    fleet.pg.start_again();
    eventually(Duration::from_secs(15), "replica a listening again", || {
        a.log().matches("listening for changes").count() >= 2
    });
    let ok = create_later();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let listed = envs[0]
        .pullsecret(&["secret", "list", "-o", "name"])
        .output()
        .expect("list");
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        names.contains("later") && names.contains("fault-canary"),
        "{names}"
    );
}

#[test]
fn the_bucket_is_bounded_and_evicts_the_least_recently_used_blob_across_replicas() {
    use crate::support::registry::{Registry, RegistryAuth};
    let Some(fleet) = Fleet::start() else { return };
    let Some(reg) = Registry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let layers: Vec<Vec<u8>> = (0..3u8)
        .map(|n| {
            test_blob(2)
                .into_iter()
                .map(|b| b ^ n.wrapping_mul(97))
                .collect()
        })
        .collect();
    let image = crate::support::images::push_image(reg.addr(), "app", "v1", None, &layers);
    let upstream = crate::support::proxy::plain_upstream("up", reg.addr(), "");
    // Room for two of the three 2 MiB layers; uses written every 200 ms.
    let config = fleet
        .config()
        .replace("[cache]\n", "[cache]\nmax_size = \"5MiB\"\n")
        + "[fleet]\nbookkeeping_interval = \"200ms\"\nevict_grace = \"1s\"\n";
    let (ea, eb) = (fleet.env(), fleet.env());
    let a = ProxyProcess::start(&ea, &config, &upstream);
    let b = ProxyProcess::start(&eb, &config, &upstream);
    let digest = |i: usize| image.layers[i].digest.clone();
    let get = |p: &ProxyProcess, i: usize| {
        let g = stream_get(&p.addr, &format!("/v2/app/blobs/{}", digest(i)), &[]).expect("GET");
        assert_eq!((g.status, g.digest.as_str()), (200, digest(i).as_str()));
    };
    let in_bucket = |i: usize| {
        fleet
            .s3
            .list_keys("")
            .contains(&Fleet::object_key(&digest(i)))
    };
    get(&a, 0);
    get(&b, 1);
    eventually(
        Duration::from_secs(20),
        "layers 0 and 1 in the bucket and recorded",
        // The record's time is what eviction orders by.
        || {
            in_bucket(0)
                && in_bucket(1)
                && fleet
                    .pg
                    .psql_in(&fleet.url, "select count(*) from shared_blobs")
                    .trim()
                    == "2"
        },
    );
    // Layer 0 is used again, on both replicas (a's own copy, b from the bucket): it becomes
    // the most recently used.
    get(&a, 0);
    get(&b, 0);
    get(&a, 2);
    eventually(
        Duration::from_secs(30),
        "the least recently used layer evicted",
        || {
            if in_bucket(1) {
                return Err(format!(
                    "bucket: {:?}, layers {:?}, rows {}",
                    fleet.s3.list_keys(""),
                    (0..3).map(digest).collect::<Vec<_>>(),
                    fleet.pg.psql_in(
                        &fleet.url,
                        "select digest, size, last_used from shared_blobs"
                    )
                ));
            }
            Ok(())
        },
    );
    assert!(in_bucket(0), "the recently used layer was evicted");
    assert!(in_bucket(2), "the newest layer was evicted");
    let rows = fleet
        .pg
        .psql_in(&fleet.url, "select count(*) from shared_blobs");
    assert_eq!(rows.trim(), "2");
}

/// A token from a replica's `/token` endpoint for `user`.
fn client_token(r: &ProxyProcess, user: &str, password: &str) -> String {
    crate::support::proxy::client_token(&r.addr, Some((user, password)), "app")
}

#[test]
fn links_and_client_tokens_are_fleet_wide_and_other_namespaces_still_ask_the_upstream() {
    let Some(fleet) = Fleet::start() else { return };
    let up = FaultServer::start(test_blob(2));
    let (envs, upstream) = fleet.replicas_for(&up, 2);
    crate::support::add_proxy_client(&envs[0], "alice", "default", "alice-pw");
    crate::support::add_proxy_client(&envs[0], "eve", "other", "eve-pw");
    let config = fleet.config() + "[auth]\nenabled = true\n";
    let a = ProxyProcess::start(&envs[0], &config, &upstream);
    let b = ProxyProcess::start(&envs[1], &config, &upstream);
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let alice = format!("Bearer {}", client_token(&a, "alice", "alice-pw"));
    let got = stream_get(&a.addr, &path, &[("Authorization", &alice)]).expect("GET on a");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    eventually(
        Duration::from_secs(20),
        "the blob and its link shared",
        || {
            fleet.s3.list_keys("") == vec![Fleet::object_key(&up.blob_digest)]
                && fleet
                    .pg
                    .psql_in(&fleet.url, "select count(*) from content_links")
                    .trim()
                    != "0"
        },
    );
    // On the other replica, with the token the first one issued: served from the bucket on the
    // strength of the shared link, without a word to the upstream.
    let before = up.request_count();
    let got = stream_get(&b.addr, &path, &[("Authorization", &alice)]).expect("GET on b");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str()),
        "{}",
        b.log()
    );
    assert_eq!(
        up.request_count(),
        before,
        "replica b asked the upstream again"
    );
    // A client of another namespace has no such link: the upstream is asked, and refuses.
    let eve = format!("Bearer {}", client_token(&b, "eve", "eve-pw"));
    let r = http_request("GET", &b.addr, &path, &[("Authorization", &eve)], b"").expect("eve");
    assert_ne!(r.status, 200, "another namespace read the blob");
    assert!(
        r.body.len() < 4096,
        "blob bytes reached a client without rights"
    );
    assert!(
        up.request_count() > before,
        "eve was not checked with the upstream"
    );
    // The shared table names no identity, repository or digest: its keys are bare hashes.
    let links = fleet
        .pg
        .psql_in(&fleet.url, "select key from content_links");
    for key in links.lines() {
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "content_links key is not a hash: {key:?}"
        );
        assert_ne!(key, up.blob_digest.trim_start_matches("sha256:"));
    }
}

#[test]
fn a_manifest_and_its_tag_are_fetched_upstream_once_for_the_fleet() {
    let Some(fleet) = Fleet::start() else { return };
    let up = FaultServer::start(test_blob(1));
    let (envs, upstream) = fleet.replicas_for(&up, 3);
    let replicas: Vec<ProxyProcess> = envs
        .iter()
        .map(|e| ProxyProcess::start(e, &fleet.config(), &upstream))
        .collect();
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json");
    let first = http_request(
        "GET",
        &replicas[0].addr,
        "/v2/app/manifests/v1",
        &[accept],
        b"",
    )
    .expect("manifest on replica 0");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body, up.manifest);
    let count = |table: &str| {
        fleet
            .pg
            .psql_in(&fleet.url, &format!("select count(*) from {table}"))
            .trim()
            .to_string()
    };
    eventually(
        Duration::from_secs(10),
        "the tag, manifest and link shared",
        || {
            count("shared_tags") == "1"
                && count("shared_manifests") == "1"
                && count("content_links") != "0"
        },
    );
    // The other replicas answer by tag and by digest without asking the upstream.
    let before = up.request_count();
    let by_tag = http_request(
        "GET",
        &replicas[1].addr,
        "/v2/app/manifests/v1",
        &[accept],
        b"",
    )
    .expect("by tag on replica 1");
    assert_eq!(
        (by_tag.status, &by_tag.body),
        (200, &up.manifest),
        "{}",
        replicas[1].log()
    );
    let by_digest = format!("/v2/app/manifests/{}", up.manifest_digest);
    let r = http_request("GET", &replicas[2].addr, &by_digest, &[accept], b"")
        .expect("by digest on replica 2");
    assert_eq!(
        (r.status, &r.body),
        (200, &up.manifest),
        "{}",
        replicas[2].log()
    );
    assert_eq!(
        up.request_count(),
        before,
        "a replica asked the upstream again"
    );
    // A manifest in the table that does not match its digest is not served.
    fleet.pg.psql_in(
        &fleet.url,
        "update shared_manifests set bytes = convert_to('{\"schemaVersion\":2}', 'UTF8')",
    );
    let e = fleet.env();
    let fresh = ProxyProcess::start(&e, &fleet.config(), &upstream);
    let r = http_request("GET", &fresh.addr, &by_digest, &[accept], b"").expect("by digest");
    assert_eq!((r.status, &r.body), (200, &up.manifest));
    assert!(
        up.request_count() > before,
        "the tampered manifest was not refetched upstream"
    );
    assert!(
        fresh.log().contains("does not match its digest"),
        "{}",
        fresh.log()
    );
}

#[test]
fn a_shared_directory_serves_as_the_bucket_and_the_master_key_comes_by_reference() {
    let Some(fleet) = Fleet::start() else { return };
    let up = FaultServer::start(test_blob(2));
    let shared = tempfile::tempdir().expect("shared dir");
    let bucket = shared.path().join("blobs-bucket");
    // The master key from a reference, not a file: every replica and the CLI resolve it.
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    let env = || {
        let mut e = Env::new();
        e.set("PULLSECRET_STATE", &fleet.url);
        e.set("PULLSECRET_MASTER_KEY_REF", "env://FLEET_MASTER");
        e.set("FLEET_MASTER", &key);
        e
    };
    let (ea, eb) = (env(), env());
    let upstream = up.upstream(&ea, "http", "");
    let config = format!(
        "[prefetch]\nenabled = false\n[cache]\nbackend = \"directory\"\nbucket = \"{}\"\n",
        bucket.display()
    );
    let a = ProxyProcess::start(&ea, &config, &upstream);
    let b = ProxyProcess::start(&eb, &config, &upstream);
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let got = stream_get(&a.addr, &path, &[]).expect("GET on a");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str()),
        "{}",
        a.log()
    );
    let object = bucket.join(Fleet::object_key(&up.blob_digest));
    eventually(
        Duration::from_secs(20),
        "the blob in the shared directory",
        || object.exists(),
    );
    let bytes = std::fs::read(&object).expect("read shared blob");
    assert_eq!(sha256(&bytes), up.blob_digest);
    // Only the final file: the upload was staged and renamed into place.
    let mut files = Vec::new();
    let mut dirs = vec![bucket.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert_eq!(files, vec![object.clone()]);
    let got = stream_get(&b.addr, &path, &[]).expect("GET on b");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    assert_eq!(up.blob_gets.load(Ordering::Relaxed), 1);
    assert_eq!(counter(&b.addr, "pullsecret_proxy_shared_fills_total"), 1.0);
    // A process holding another key cannot open the namespaces, and says so.
    let mut wrong = env();
    wrong.set("FLEET_MASTER", &{
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([8u8; 32])
    });
    let out = wrong
        .pullsecret(&["secret", "list"])
        .output()
        .expect("list");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));
    // Nor start a namespace of its own, sealed apart from the rest.
    let before = fleet.pg.psql_in(
        &fleet.url,
        "select name, key_id from namespaces order by name",
    );
    let out = run_with_stdin(
        wrong.pullsecret(&[
            "secret",
            "create",
            "docker-registry",
            "x",
            "-n",
            "elsewhere",
            "--docker-server",
            "reg.example",
            "--docker-username",
            "u",
            "--docker-password-stdin",
        ]),
        b"pw",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));
    // A process with no key at all makes none up while the database holds namespaces.
    let mut keyless = Env::new();
    keyless.set("PULLSECRET_STATE", &fleet.url);
    keyless.set("PULLSECRET_MASTER_KEY_STORE", "file");
    let out = keyless
        .pullsecret(&["secret", "list"])
        .output()
        .expect("list");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));
    assert!(
        !keyless.path("config/pullsecret/master.key").exists(),
        "a key was created"
    );
    let after = fleet.pg.psql_in(
        &fleet.url,
        "select name, key_id from namespaces order by name",
    );
    assert_eq!(before, after, "the database changed");
}

#[test]
fn proxy_warm_fills_the_shared_bucket_for_the_whole_fleet() {
    let Some(fleet) = Fleet::start() else { return };
    let up = FaultServer::start(test_blob(2));
    let (envs, upstream) = fleet.replicas_for(&up, 2);
    let config = envs[0].path("warm.toml");
    std::fs::write(
        &config,
        format!(
            "cache_dir = \"{}\"\n{}\n{upstream}",
            envs[0].path("warm-cache").display(),
            fleet.config()
        ),
    )
    .expect("write warm config");
    let config = config.display().to_string();
    let out = envs[0]
        .pullsecret(&["proxy", "--config", &config, "warm", "f/app:v1"])
        .output()
        .expect("warm");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("warmed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // When warm returns, its uploads are done.
    let key = Fleet::object_key(&up.blob_digest);
    assert!(
        fleet.s3.list_keys("").contains(&key),
        "{:?}",
        fleet.s3.list_keys("")
    );
    assert_eq!(up.blob_gets.load(Ordering::Relaxed), 1);
    // A replica that starts afterwards serves the blob from the bucket.
    let r = ProxyProcess::start(&envs[1], &fleet.config(), &upstream);
    let got = stream_get(&r.addr, &format!("/v2/app/blobs/{}", up.blob_digest), &[]).expect("GET");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    assert_eq!(
        up.blob_gets.load(Ordering::Relaxed),
        1,
        "the upstream was asked again"
    );
    assert_eq!(counter(&r.addr, "pullsecret_proxy_shared_fills_total"), 1.0);
}

#[test]
fn a_range_of_a_blob_in_the_bucket_is_read_from_the_bucket() {
    let Some(fleet) = Fleet::start() else { return };
    let blob = test_blob(64);
    let up = FaultServer::start(blob.clone());
    let (envs, upstream) = fleet.replicas_for(&up, 2);
    let a = ProxyProcess::start(&envs[0], &fleet.config(), &upstream);
    let b = ProxyProcess::start(&envs[1], &fleet.config(), &upstream);
    let path = format!("/v2/app/blobs/{}", up.blob_digest);
    let got = stream_get(&a.addr, &path, &[]).expect("GET on a");
    assert_eq!(
        (got.status, got.digest.as_str()),
        (200, up.blob_digest.as_str())
    );
    let key = Fleet::object_key(&up.blob_digest);
    eventually(Duration::from_secs(30), "the blob in the bucket", || {
        fleet.s3.list_keys("").contains(&key)
    });
    // A lazy-pull client on b reads the last MiB first: it comes from the bucket at once, not
    // from the upstream, while b's own copy fills from the bucket.
    let total = blob.len();
    let last = format!("bytes={}-{}", total - (1 << 20), total - 1);
    let r = http_request("GET", &b.addr, &path, &[("Range", &last)], b"").expect("range on b");
    assert_eq!(r.status, 206, "{}", b.log());
    assert_eq!(r.body, blob[total - (1 << 20)..].to_vec());
    assert_eq!(
        counter(&b.addr, "pullsecret_proxy_shared_ranges_total"),
        1.0
    );
    assert_eq!(
        up.range_gets.load(Ordering::Relaxed),
        0,
        "the upstream was asked for the range"
    );
    assert_eq!(up.blob_gets.load(Ordering::Relaxed), 1);
}
