//! The web console in real headless Chromium (over WebDriver) against the real proxy and a
//! token-auth distribution: sign in (a wrong token fails), add a registry secret to a namespace
//! in the page, pull through the proxy as that namespace's client (200), rotate its value in the
//! page (a wrong value is refused upstream, the right one pulls again), watch a pull appear live
//! on the recent-pulls page, delete it in the page, pull again (401); the cache page shows the
//! API's figures, the hour's chart, the pulled images, and pins, unpins and purges a tag; the
//! canary password never appears in a page. Plain HTTP checks: security headers, cookie flags, redirects without a session,
//! POSTs without the CSRF token refused, wrong sign-ins throttled. Screenshots of the sign-in,
//! namespace, pulls and cache pages land in docs/screenshots/ with PULLSECRET_SCREENSHOTS=1.

use std::path::PathBuf;

use crate::support::http::{basic_auth, http_request, HttpResponse};
use crate::support::proxy::free_port;
use crate::support::webdriver::Browser;
use crate::support::{assert_no_canary, eventually, stderr, stdout, Env, Scenario, CANARY};

const OCI: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Where screenshots go: the README's `docs/screenshots/` only when asked
/// (`PULLSECRET_SCREENSHOTS=1`), so a test run leaves the work tree as it was.
fn screenshot_path(name: &str) -> PathBuf {
    let dir = if std::env::var_os("PULLSECRET_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        std::env::temp_dir().join("pullsecret-screenshots")
    };
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

fn pull(proxy_addr: &str) -> HttpResponse {
    pull_repo(proxy_addr, "private/app")
}

fn pull_repo(proxy_addr: &str, repo: &str) -> HttpResponse {
    let auth = basic_auth("ci", "ci-pw");
    http_request(
        "GET",
        proxy_addr,
        &format!("/v2/{repo}/manifests/v1"),
        &[OCI, ("Authorization", &auth)],
        b"",
    )
    .expect("pull")
}

/// The value of cookie `name` set by `r`, with its attributes.
fn set_cookie<'r>(r: &'r HttpResponse, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn cookie_value(set: &str) -> String {
    set.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// The first hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

/// Signs in over plain HTTP: the sign-in answer, and the session cookie when it worked.
fn sign_in(addr: &str, token: &str) -> (HttpResponse, Option<String>) {
    let form = http_request("GET", addr, "/console/signin", &[], b"").expect("sign-in page");
    assert_eq!(form.status, 200);
    let pre = cookie_value(set_cookie(&form, "ps_signin").expect("sign-in cookie"));
    let body = format!("csrf={}&token={token}", csrf_of(&form.text()));
    let cookie = format!("ps_signin={pre}");
    let r = http_request(
        "POST",
        addr,
        "/console/signin",
        &[FORM, ("Cookie", &cookie)],
        body.as_bytes(),
    )
    .expect("sign in");
    let session = set_cookie(&r, "ps_session").map(cookie_value);
    (r, session)
}

#[test]
fn console_manages_a_namespace_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let env = Env::new();
    let Some(sc) = Scenario::token_registry(&env, &[("robot", CANARY, "private/*")]) else {
        return;
    };
    sc.push("private/app", "v1", &[vec![7u8; 6000]]);
    sc.push("private/other", "v1", &[vec![8u8; 3000]]);
    let admin = format!("127.0.0.1:{}", free_port());
    let reg_addr = sc.registry().addr().to_string();
    let (_reg, proxy) = sc
        .client("ci", "team-a", "ci-pw")
        .config(&format!(
            "[auth]\nenabled = true\n[admin]\nlisten = \"{admin}\""
        ))
        .start();
    let out = env
        .pullsecret(&["admin", "token", "create", "root"])
        .output()
        .expect("admin token");
    assert!(out.status.success(), "{}", stderr(&out));
    let root = stdout(&out).trim().to_string();

    // Without a session every page sends the browser to the sign-in page; every page carries
    // the security headers.
    for page in [
        "/",
        "/console/ns/team-a",
        "/console/cache",
        "/console/pulls",
        "/console/pulls/events",
    ] {
        let r = http_request("GET", &admin, page, &[], b"").expect("GET without a session");
        assert_eq!(r.status, 303, "{page}");
        assert_eq!(r.header("location"), Some("/console/signin"), "{page}");
    }
    let before = env.store_snapshot();
    for action in [
        "/console/namespaces",
        "/console/ns/team-a/secrets",
        "/console/ns/team-a/secrets/x/rotate",
        "/console/ns/team-a/secrets/x/delete",
        "/console/cache/pin",
        "/console/cache/unpin",
        "/console/cache/purge",
    ] {
        let r = http_request("POST", &admin, action, &[FORM], b"name=x&value=y")
            .expect("POST without a session");
        assert_eq!(r.status, 303, "{action}");
    }
    assert_eq!(
        env.store_snapshot(),
        before,
        "a POST without a session changed the store"
    );
    let r = http_request("GET", &admin, "/console/signin", &[], b"").expect("sign-in page");
    for (h, want) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'",
        ),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert!(
            r.header(h).is_some_and(|v| v.contains(want)),
            "{h}: {:?}",
            r.header(h)
        );
    }
    assert!(!r.text().contains("<script>"), "inline script on the page");

    // In the browser: a wrong token is refused, the right one signs in.
    let base = format!("http://{admin}");
    browser.goto(&format!("{base}/"));
    browser.wait_for_path("/console/signin");
    browser.screenshot(&screenshot_path("console-signin.png"));
    browser.find("#token").send_keys("psa_not-a-token");
    browser.find("#signin").click();
    let error = browser.text_of("#error");
    assert!(error.contains("not a valid admin token"), "{error}");
    browser.find("#token").send_keys(&root);
    browser.find("#signin").click();
    browser.find("#namespaces");
    assert!(
        !browser.source().contains(&root),
        "the admin token is in the page"
    );

    // A namespace, and a registry secret added in the page; the page shows its server and
    // username and the namespace's client, never the password.
    browser.find("#ns-name").send_keys("team-a");
    browser.find("#ns-create").click();
    browser.wait_for_path("/console/ns/team-a");
    browser.find("#secret-name").send_keys("regcred-a");
    browser.find("#secret-server").send_keys(&reg_addr);
    browser.find("#secret-username").send_keys("robot");
    browser.find("#secret-password").send_keys(CANARY);
    browser.find("#secret-add").click();
    let row = browser.text_of("tr[data-secret=\"regcred-a\"]");
    assert!(
        row.contains(&reg_addr) && row.contains("robot"),
        "secret row: {row}"
    );
    assert!(browser.text_of("#clients").contains("ci"));
    assert_no_canary("the namespace page", &browser.source());
    browser.screenshot(&screenshot_path("console-namespace.png"));
    // Twice: the second answer comes from the cache, which the cache page shows.
    for _ in 0..2 {
        let r = pull(&proxy.addr);
        assert_eq!(r.status, 200, "{}", proxy.log());
    }

    // Rotated in the page to a wrong value: an image the cache does not hold is refused; rotated
    // back to the right one, it is pulled (200). The page never shows either value.
    let bearer = format!("Bearer {root}");
    let secret_api = || {
        http_request(
            "GET",
            &admin,
            "/api/v1/namespaces/team-a/secrets/regcred-a",
            &[("Authorization", &bearer)],
            b"",
        )
        .expect("secret API")
        .json()
    };
    let created_before = secret_api()["created"].as_u64().expect("created");
    let wrong = "not-the-pw-4e1d";
    browser.find("#rotate-regcred-a").send_keys(wrong);
    browser.find("#rotate-btn-regcred-a").click();
    // An earlier action's notice may still be on screen until the rotate's page loads.
    eventually(
        std::time::Duration::from_secs(20),
        "the rotate notice",
        || {
            let notice = browser.text_of("#notice");
            if notice.contains("Rotated regcred-a") {
                Ok(())
            } else {
                Err(notice)
            }
        },
    );
    assert!(
        !browser.source().contains(wrong),
        "the rotated value is in the page"
    );
    let created_after = secret_api()["created"].as_u64().expect("created");
    // `created` is in seconds: a rotation in the same second as the create keeps it equal.
    assert!(
        created_after >= created_before,
        "created {created_before} → {created_after}"
    );
    let r = pull_repo(&proxy.addr, "private/other");
    assert_ne!(r.status, 200, "pulled with the wrong value: {}", r.text());
    println!("pull after rotating to a wrong value: {}", r.status);
    browser.find("#rotate-regcred-a").send_keys(CANARY);
    browser.find("#rotate-btn-regcred-a").click();
    browser.find("#notice");
    assert_no_canary("the namespace page after rotate", &browser.source());
    // The notice may still be the first rotation's until the page reloads: wait for the pull.
    let r = eventually(
        std::time::Duration::from_secs(20),
        "a pull with the value rotated back",
        || {
            let r = pull_repo(&proxy.addr, "private/other");
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{}", r.status))
            }
        },
    );
    println!("pull after rotating back: {}", r.status);

    // The recent-pulls view: the page lists the last pulls and a new one appears without a
    // reload (Server-Sent Events from /console/pulls/events).
    browser.find("#nav-pulls").click();
    browser.wait_for_path("/console/pulls");
    assert!(browser.text_of("#pulls-body").contains("private/other"));
    eventually(
        std::time::Duration::from_secs(15),
        "the live view to connect",
        || {
            browser
                .try_find("#pulls-body[data-state=\"open\"]")
                .is_some()
        },
    );
    assert!(browser.try_find("tr.live").is_none());
    let r = pull(&proxy.addr);
    assert_eq!(r.status, 200);
    eventually(
        std::time::Duration::from_secs(15),
        "the pull to appear live",
        || {
            browser
                .try_find("tr.live")
                .is_some_and(|row| row.text().contains("private/app"))
        },
    );
    println!("live pull row: {}", browser.text_of("tr.live"));
    assert_no_canary("the pulls page", &browser.source());
    browser.screenshot(&screenshot_path("console-pulls.png"));
    browser.goto(&format!("{base}/console/ns/team-a"));

    // Deleted in the page: the next pull has no credentials, and its answer names nothing.
    browser.find("#delete-regcred-a").click();
    eventually(
        std::time::Duration::from_secs(15),
        "the secret row to go",
        || {
            browser.try_find("tr[data-secret=\"regcred-a\"]").is_none()
                && browser.try_find("#secret-add").is_some()
        },
    );
    assert_no_canary("the namespace page after delete", &browser.source());
    let r = pull(&proxy.addr);
    assert_eq!(r.status, 401, "{}", r.text());
    for secret_word in ["robot", "regcred-a", CANARY] {
        assert!(
            !r.text().contains(secret_word),
            "the 401 names {secret_word}"
        );
    }
    println!("401 after delete: {}", r.text().trim());

    // The cache page shows the API's figures; app.js ran under the CSP.
    browser.find("#nav-cache").click();
    browser.wait_for_path("/console/cache");
    let api = http_request(
        "GET",
        &admin,
        "/api/v1/cache",
        &[("Authorization", &format!("Bearer {root}"))],
        b"",
    )
    .expect("cache API")
    .json();
    for (id, key) in [
        ("#cache-blobs", "blobs"),
        ("#cache-hits", "hits"),
        ("#cache-misses", "misses"),
    ] {
        assert_eq!(browser.text_of(id), api[key].to_string(), "{id} vs the API");
    }
    browser.find("html[data-js=\"on\"]");
    let upstreams = browser.text_of("#upstreams");
    assert!(
        upstreams.contains("up") && upstreams.contains("ok"),
        "{upstreams}"
    );
    // The last hour's chart (inline SVG): this test's hits are in it.
    browser.find("#hit-chart");
    browser.find("#bytes-chart");
    browser.find("#hit-chart rect.good");
    assert!(browser.text_of("#images").contains("private/app"));
    browser.screenshot(&screenshot_path("console-cache.png"));
    // Pin the cached tag (then unpin it), and purge it.
    browser.find("tr[data-tag] button[id^=\"pin-\"]").click();
    browser.find("tr[data-tag] button[id^=\"unpin-\"]");
    let pins = http_request(
        "GET",
        &admin,
        "/api/v1/cache/pins",
        &[("Authorization", &bearer)],
        b"",
    )
    .expect("pins")
    .json();
    assert_eq!(pins["pins"].as_array().map(Vec::len), Some(1), "{pins}");
    browser.find("tr[data-tag] button[id^=\"unpin-\"]").click();
    browser.find("tr[data-tag] button[id^=\"pin-\"]");
    let tags_before = browser.text_of("#tags");
    assert!(tags_before.contains("private/other"), "{tags_before}");
    browser
        .find("tr[data-tag*=\"privateother\"] button[id^=\"purge-\"]")
        .click();
    eventually(
        std::time::Duration::from_secs(15),
        "the purged tag to go",
        || !browser.text_of("#tags").contains("private/other"),
    );
    println!(
        "cache page: size {}, blobs {}, hit ratio {}",
        browser.text_of("#cache-size"),
        browser.text_of("#cache-blobs"),
        browser.text_of("#cache-hit-ratio")
    );

    // Plain HTTP: the cookie's flags; a POST without (or with a wrong) CSRF token is refused
    // and changes nothing; without a session, a POST only gets the sign-in redirect.
    let (r, session) = sign_in(&admin, &root);
    assert_eq!(r.status, 303);
    let set = set_cookie(&r, "ps_session").expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = format!("ps_session={}", session.expect("session"));
    let page = http_request(
        "GET",
        &admin,
        "/console/ns/team-a",
        &[("Cookie", &session)],
        b"",
    )
    .expect("namespace page");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.text());
    let before = env.store_snapshot();
    let add = "name=forged&server=example.com&username=x&password=y";
    for body in [add.to_string(), format!("csrf=wrong{csrf}&{add}")] {
        let r = http_request(
            "POST",
            &admin,
            "/console/ns/team-a/secrets",
            &[FORM, ("Cookie", &session)],
            body.as_bytes(),
        )
        .expect("forged POST");
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let r = http_request(
        "POST",
        &admin,
        "/console/ns/team-a/secrets",
        &[FORM],
        format!("csrf={csrf}&{add}").as_bytes(),
    )
    .expect("POST without a session");
    assert_eq!(r.status, 303);
    assert_eq!(
        env.store_snapshot(),
        before,
        "a refused POST changed the store"
    );

    // Every change was audited under the token's name.
    let audit = http_request(
        "GET",
        &admin,
        "/api/v1/audit",
        &[("Authorization", &format!("Bearer {root}"))],
        b"",
    )
    .expect("audit")
    .json();
    for action in [
        "namespace.create",
        "secret.create",
        "secret.rotate",
        "secret.delete",
        "cache.pin",
        "cache.unpin",
        "cache.purge",
    ] {
        assert!(
            audit["entries"].as_array().is_some_and(|a| a
                .iter()
                .any(|e| e["action"] == action && e["token"] == "root")),
            "{action} not audited: {audit}"
        );
    }

    // Revoking the token ends its sessions at once.
    let out = env
        .pullsecret(&["admin", "token", "revoke", "root"])
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = http_request("GET", &admin, "/", &[("Cookie", &session)], b"").expect("GET /");
    assert_eq!(r.status, 303, "a revoked token's session still works");
    assert_no_canary("the proxy log", &proxy.log());

    // Wrong sign-ins count towards the listener's failed-attempt limit (bounded here).
    let throttled = (0..40).find(|_| sign_in(&admin, "psa_guess").0.status == 429);
    assert!(
        throttled.is_some(),
        "40 wrong sign-ins were never throttled"
    );
    println!("screenshots: {}", screenshot_path("").display());
}
