//! Tag lists: `GET /v2/<name>/tags/list` with the requester's upstream credentials, cached per upstream, repository and credential identity for `tag_ttl`, paged by `n`/`last` with `Link`, stale when the upstream is unwell.

use bytes::Bytes;
use http::{header, Response, StatusCode};

use super::response::{bytes_response, error_response, hv, Body};
use super::route::Page;
use super::server::Proxy;
use super::upstream::{Picked, Requester};

/// `kind` of cached tag lists in the blob store.
const TAGS: &str = "tags";
/// RFC 9111 warn-code 110: the answer is stale.
pub(super) const STALE_WARNING: &str = "110 - \"Response is Stale\"";

impl Proxy {
    /// `name` is the repository as the client wrote it (for the body and `Link`), `repo` as the
    /// upstream knows it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn tags(
        &self,
        ui: usize,
        repo: &str,
        name: &str,
        page: &Page,
        ns: Option<&str>,
        who: &Requester,
    ) -> Response<Body> {
        let up = self.upstreams[ui].clone();
        let picked = match self.credentials(&up, who, repo).await {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        };
        let identity = cache_identity(picked.as_ref());
        let key = [up.cfg.name.as_str(), repo, identity.as_str()];
        let fetch = async {
            let mut tags = up
                .client
                .list_tags(repo, picked.as_ref().map(|p| &p.creds))
                .await?;
            tags.sort();
            tags.dedup();
            Ok(tags)
        };
        self.cached_list(
            &up,
            repo,
            TAGS,
            &key,
            fetch,
            |tags| tag_page(name, tags, page, ns),
            "NAME_UNKNOWN",
        )
        .await
    }
}

/// What a cached list is keyed by besides upstream and repository: the credential's stable
/// grant and its username (a requester without credentials shares the anonymous answer).
pub(super) fn cache_identity(picked: Option<&Picked>) -> String {
    picked.map_or_else(
        || "anonymous".to_string(),
        |p| format!("{}|{}", p.grant, p.creds.username),
    )
}

/// One page of `tags` (sorted) after `page.last`, at most `page.n`, with `Link` to the next page
/// when more remain (distribution spec: content discovery).
fn tag_page(name: &str, tags: &[String], page: &Page, ns: Option<&str>) -> Response<Body> {
    let after: Vec<&String> = match &page.last {
        Some(last) => tags.iter().filter(|t| t.as_str() > last.as_str()).collect(),
        None => tags.iter().collect(),
    };
    let (shown, more) = match page.n {
        Some(n) if n < after.len() => (&after[..n], true),
        _ => (&after[..], false),
    };
    let body = serde_json::json!({ "name": name, "tags": shown }).to_string();
    let mut r = bytes_response(StatusCode::OK, Bytes::from(body), "application/json", false);
    if let (true, Some(n), Some(last)) = (more, page.n, shown.last()) {
        let ns = ns.map_or(String::new(), |ns| format!("&ns={}", percent_encode(ns)));
        r.headers_mut().insert(
            header::LINK,
            hv(&format!(
                "</v2/{name}/tags/list?n={n}&last={}{ns}>; rel=\"next\"",
                percent_encode(last)
            )),
        );
    }
    r
}

/// Percent-encodes all but RFC 3986 unreserved characters.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: Option<usize>, last: Option<&str>) -> Page {
        Page {
            n,
            last: last.map(str::to_string),
        }
    }

    #[test]
    fn pages_follow_the_spec() {
        let tags: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let r = tag_page("loc/x", &tags, &page(Some(2), None), Some("h:5000"));
        assert_eq!(
            r.headers().get("link").and_then(|v| v.to_str().ok()),
            Some("</v2/loc/x/tags/list?n=2&last=b&ns=h%3A5000>; rel=\"next\"")
        );
        let r = tag_page("x", &tags, &page(Some(2), Some("b")), None);
        assert!(r.headers().get("link").is_none(), "no page after the last");
        let r = tag_page("x", &tags, &page(Some(0), None), None);
        assert!(r.headers().get("link").is_none());
        let r = tag_page("x", &tags, &page(None, Some("a")), None);
        assert!(r.headers().get("link").is_none());
    }
}
