//! Hop-by-hop headers: what a proxy must not pass on (RFC 9110 section
//! 7.6.1), except the `Connection: upgrade` and `Upgrade` pair of an
//! upgrade, which the next hop needs to make the same switch.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only concern one connection, whether or not `Connection`
/// lists them. `Expect` is here too: the first hop answered it (hyper
/// sends `100 Continue` when the forwarder starts reading the body).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The prefix of the headers nodes set for each other
/// (`dwell_api::forward`): never hop-by-hop.
const NODE_HEADER_PREFIX: &str = "x-dwell-";

/// Whether `headers` ask to switch protocols (`Connection: upgrade` and
/// an `Upgrade` header).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop headers of `headers`: the fixed ones, those
/// `Connection` names, and `Expect` when `request`; with `keep_upgrade`
/// (an upgrade request, or a `101` answer to one) `Upgrade` stays and
/// `Connection` becomes `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, request: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        // A node's own marks (the caller, the plane, the credential) are
        // set by the forwarding node, after the client's `Connection` was
        // written: a client that names them there must not strip them (a
        // request without its plane mark would reach the owner's REST API
        // with the client's own caller headers).
        .filter(|n| !n.as_str().starts_with(NODE_HEADER_PREFIX))
        .collect();
    let upgrade = if keep_upgrade {
        headers.get_all(header::UPGRADE).iter().cloned().collect()
    } else {
        Vec::new()
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if request {
        headers.remove(header::EXPECT);
    }
    if keep_upgrade && !upgrade.is_empty() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        for v in upgrade {
            headers.append(header::UPGRADE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_clients_connection_header_cannot_strip_a_nodes_marks() {
        let mut h = map(&[
            (
                "connection",
                "keep-alive, x-dwell-plane, x-dwell-forwarded-tenant, x-other",
            ),
            ("x-dwell-plane", "envd"),
            ("x-dwell-forwarded-tenant", "t"),
            ("x-other", "1"),
        ]);
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(names(&h), ["x-dwell-forwarded-tenant", "x-dwell-plane"]);
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Private"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("expect", "100-continue"),
            ("host", "a.example"),
            ("content-length", "3"),
            ("x-keep", "yes"),
        ]);
        assert!(!is_upgrade(&h), "Connection does not list upgrade");
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(names(&h), ["content-length", "host", "x-keep"]);
    }

    #[test]
    fn an_upgrade_keeps_its_pair() {
        let mut h = map(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
            ("keep-alive", "timeout=5"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true, true);
        assert_eq!(names(&h), ["connection", "sec-websocket-key", "upgrade"]);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(is_upgrade(&h));

        // A response keeps its Expect-like headers (none), and without
        // keep_upgrade the pair goes.
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "test")]);
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.is_empty());
    }
}
