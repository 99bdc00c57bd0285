//! What an operator's access level lets through the guard: a pure decision on a request's
//! method and path, made before anything reaches the engine.
//!
//! Full access passes everything. Read-only passes an allow-list of the Docker API's
//! reads (lists, inspect, logs, events, version, info, ...) and refuses the rest: what
//! changes state, runs code, reads file contents or secrets, or talks to a registry, and
//! every endpoint it does not know (fail closed: a new API endpoint is refused until it is
//! classified here). The README's access-level table is this module's table.
//!
//! The path is read the way dockerd's router reads it: the query is cut, percent-escapes
//! are decoded, an API version prefix (`/v1.47`) is dropped, and an action is recognised
//! by the path's last segments (image and plugin names may hold `/`, as the router's
//! `{name:.*}` allows). Paths with empty, `.` or `..` segments are not read at all: dockerd
//! answers them with a redirect to the cleaned path, which comes back through the guard.

use dtca_pki::access::Access;
use http::Method;

/// Whether `access` allows `method` on `path` (the request target as it reaches the engine,
/// query included).
///
/// # Errors
/// The refusal, one line for the docker CLI to print, e.g. `read-only access: POST
/// /containers/create changes state`.
pub(crate) fn check(access: Access, method: &Method, path: &str) -> Result<(), String> {
    match access {
        Access::Full => Ok(()),
        Access::ReadOnly => match classify(method, path) {
            Class::Read => Ok(()),
            refused => Err(format!(
                "{} access: {method} {} {}",
                access.as_str(),
                shown(path),
                refused.phrase()
            )),
        },
    }
}

/// What a request does, as far as access levels care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Reads the engine's state: lists, inspect, logs, events, version, info.
    Read,
    /// Creates, changes or removes something.
    Changes,
    /// Starts code in a container, a build or a plugin, or attaches to it.
    Runs,
    /// Reads the contents of files, images or configs.
    Contents,
    /// Reads a secret of the engine (swarm join tokens, the unlock key).
    Secret,
    /// Makes the engine talk to a registry on the caller's behalf.
    Registry,
    /// Not an endpoint this table knows.
    Unknown,
}

impl Class {
    /// How a refusal names the class.
    fn phrase(self) -> &'static str {
        match self {
            Class::Read => "reads state",
            Class::Changes => "changes state",
            Class::Runs => "runs code",
            Class::Contents => "reads file contents",
            Class::Secret => "reads the swarm's secrets",
            Class::Registry => "talks to a registry",
            Class::Unknown => "is not a known read-only endpoint",
        }
    }
}

/// The class of a request to the Docker API.
pub(crate) fn classify(method: &Method, path: &str) -> Class {
    let Some(decoded) = route_path(path) else {
        return Class::Unknown;
    };
    let mut segments: Vec<&str> = decoded[1..].split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Class::Unknown;
    }
    if segments.first().is_some_and(|s| is_version(s)) {
        segments.remove(0);
    }
    let m = Verb::of(method);
    use Class::*;
    use Verb::*;
    match (m, segments.as_slice()) {
        // System.
        (Get | Head, ["_ping"]) => Read,
        (Get, ["version"] | ["info"] | ["events"] | ["system", "df"]) => Read,
        (Post, ["auth"]) => Registry,

        // Containers.
        (Get, ["containers", "json"]) => Read,
        (Post, ["containers", "create" | "prune"]) => Changes,
        (_, ["containers", name @ .., "attach", "ws"]) if !name.is_empty() => Runs,
        (m, ["containers", name @ .., action]) if !name.is_empty() => container(m, action),
        (Delete, ["containers", _]) => Changes,
        (Get, ["exec", id @ .., "json"]) if !id.is_empty() => Read,
        (Post, ["exec", id @ .., "start"]) if !id.is_empty() => Runs,
        (Post, ["exec", id @ .., "resize"]) if !id.is_empty() => Changes,

        // Images and builds.
        (Get, ["images", "json"]) => Read,
        (Post, ["images", "create" | "load" | "prune"]) => Changes,
        (Get, ["images", "get"]) => Contents,
        (Get, ["images", "search"]) => Registry,
        (Get, ["images", name @ .., "json" | "history"]) if !name.is_empty() => Read,
        (Get, ["images", name @ .., "get"]) if !name.is_empty() => Contents,
        (Post, ["images", name @ .., "push"]) if !name.is_empty() => Registry,
        (Post, ["images", name @ .., "tag"]) if !name.is_empty() => Changes,
        (Delete, ["images", _, ..]) => Changes,
        (Post, ["build"] | ["session"] | ["grpc"]) => Runs,
        (Post, ["build", "prune" | "cancel"] | ["commit"]) => Changes,
        (Get, ["distribution", name @ .., "json"]) if !name.is_empty() => Registry,

        // Networks and volumes.
        (Get, ["networks"] | ["networks", _]) => Read,
        (Post, ["networks", "create" | "prune"]) => Changes,
        (Post, ["networks", _, "connect" | "disconnect"]) => Changes,
        (Delete, ["networks", _]) => Changes,
        (Get, ["volumes"] | ["volumes", _]) => Read,
        (Post, ["volumes", "create" | "prune"]) => Changes,
        (Put | Delete, ["volumes", _]) => Changes,

        // Plugins.
        (Get, ["plugins"]) => Read,
        (Get, ["plugins", "privileges"]) => Registry,
        (Post, ["plugins", "pull" | "create"]) => Changes,
        (Get, ["plugins", name @ .., "json"]) if !name.is_empty() => Read,
        (Post, ["plugins", name @ .., "enable"]) if !name.is_empty() => Runs,
        (Post, ["plugins", name @ .., "disable" | "upgrade" | "set"]) if !name.is_empty() => {
            Changes
        }
        (Post, ["plugins", name @ .., "push"]) if !name.is_empty() => Registry,
        (Delete, ["plugins", _, ..]) => Changes,

        // Swarm: inspecting the swarm shows its join tokens.
        (Get, ["swarm"] | ["swarm", "unlockkey"]) => Secret,
        (Post, ["swarm", "init" | "join" | "leave" | "update" | "unlock"]) => Changes,
        (Get, ["nodes"] | ["nodes", _]) => Read,
        (Post, ["nodes", _, "update"]) => Changes,
        (Delete, ["nodes", _]) => Changes,
        (Get, ["services"] | ["services", _] | ["services", _, "logs"]) => Read,
        (Post, ["services", "create"] | ["services", _, "update"]) => Runs,
        (Delete, ["services", _]) => Changes,
        (Get, ["tasks"] | ["tasks", _] | ["tasks", _, "logs"]) => Read,
        // Docker never returns a secret's data; a config's data is in every answer.
        (Get, ["secrets"] | ["secrets", _]) => Read,
        (Post, ["secrets", "create"] | ["secrets", _, "update"]) => Changes,
        (Delete, ["secrets", _]) => Changes,
        (Get, ["configs"] | ["configs", _]) => Contents,
        (Post, ["configs", "create"] | ["configs", _, "update"]) => Changes,
        (Delete, ["configs", _]) => Changes,

        _ => Unknown,
    }
}

/// The class of `/containers/{name}/{action}`.
fn container(verb: Verb, action: &str) -> Class {
    use Class::*;
    use Verb::*;
    match (verb, action) {
        (Get, "json" | "top" | "logs" | "changes" | "stats") => Read,
        // Waiting for a container to stop changes nothing.
        (Post, "wait") => Read,
        (Get, "export") | (Get | Head, "archive") => Contents,
        (Put, "archive") => Changes,
        (Post, "start" | "restart" | "unpause" | "exec" | "attach") => Runs,
        (Post, "stop" | "kill" | "pause" | "update" | "rename" | "resize") => Changes,
        _ => Unknown,
    }
}

/// The HTTP methods the Docker API uses; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Verb {
    fn of(method: &Method) -> Verb {
        match *method {
            Method::GET => Verb::Get,
            Method::HEAD => Verb::Head,
            Method::POST => Verb::Post,
            Method::PUT => Verb::Put,
            Method::DELETE => Verb::Delete,
            _ => Verb::Other,
        }
    }
}

/// dockerd's version prefix: `v` and digits and dots (`/v{version:[0-9.]+}`).
fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// The path the router matches: the query cut, percent-escapes decoded. `None` for a path
/// that does not start with `/`, a broken escape, or one that decodes to a NUL or to bytes
/// that are not UTF-8.
fn route_path(target: &str) -> Option<String> {
    let raw = target.split_once('?').map_or(target, |(p, _)| p);
    if !raw.starts_with('/') {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The path as a refusal shows it: no query, no version prefix.
fn shown(target: &str) -> &str {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path.get(1..).and_then(|rest| rest.split_once('/')) {
        Some((first, _)) if is_version(first) => &path[first.len() + 1..],
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: &str, path: &str) -> Class {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        classify(&method, path)
    }

    fn assert_all(expected: Class, cases: &[(&str, &str)]) {
        for (method, path) in cases {
            assert_eq!(class(method, path), expected, "{method} {path}");
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let read_only = check(Access::ReadOnly, &method, path);
            assert_eq!(
                read_only.is_ok(),
                expected == Class::Read,
                "{method} {path}"
            );
            assert_eq!(
                check(Access::Full, &method, path),
                Ok(()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn read_only_allows_reading_state() {
        assert_all(
            Class::Read,
            &[
                ("HEAD", "/_ping"),
                ("GET", "/_ping"),
                ("GET", "/v1.47/version"),
                ("GET", "/v1.41/info"),
                ("GET", "/v1.47/events?filters=%7B%7D"),
                ("GET", "/v1.47/system/df"),
                ("GET", "/v1.47/containers/json?all=1"),
                ("GET", "/v1.47/containers/web/json"),
                ("GET", "/v1.47/containers/web/top?ps_args=-ef"),
                ("GET", "/v1.47/containers/web/logs?follow=1&stdout=1"),
                ("GET", "/v1.47/containers/web/changes"),
                ("GET", "/v1.47/containers/web/stats?stream=0"),
                ("POST", "/v1.47/containers/web/wait?condition=not-running"),
                ("GET", "/v1.47/exec/0123abcd/json"),
                ("GET", "/v1.47/images/json"),
                ("GET", "/v1.47/images/busybox:latest/json"),
                ("GET", "/v1.47/images/registry.example:5000/team/app:1/json"),
                (
                    "GET",
                    "/v1.47/images/registry.example%3A5000%2Fteam%2Fapp/history",
                ),
                ("GET", "/v1.47/networks"),
                ("GET", "/v1.47/networks/bridge"),
                ("GET", "/v1.47/volumes"),
                ("GET", "/v1.47/volumes/data"),
                ("GET", "/v1.47/plugins"),
                ("GET", "/v1.47/plugins/vieux/sshfs:latest/json"),
                ("GET", "/v1.47/nodes"),
                ("GET", "/v1.47/nodes/n1"),
                ("GET", "/v1.47/services"),
                ("GET", "/v1.47/services/s1"),
                ("GET", "/v1.47/services/s1/logs"),
                ("GET", "/v1.47/tasks"),
                ("GET", "/v1.47/tasks/t1"),
                ("GET", "/v1.47/tasks/t1/logs"),
                ("GET", "/v1.47/secrets"),
                ("GET", "/v1.47/secrets/s1"),
            ],
        );
    }

    #[test]
    fn read_only_refuses_what_changes_state() {
        assert_all(
            Class::Changes,
            &[
                ("POST", "/v1.47/containers/create?name=web"),
                ("POST", "/v1.47/containers/prune"),
                ("POST", "/v1.47/containers/web/stop"),
                ("POST", "/v1.47/containers/web/kill?signal=KILL"),
                ("POST", "/v1.47/containers/web/pause"),
                ("POST", "/v1.47/containers/web/update"),
                ("POST", "/v1.47/containers/web/rename?name=x"),
                ("POST", "/v1.47/containers/web/resize?h=1&w=1"),
                ("DELETE", "/v1.47/containers/web?force=1"),
                ("PUT", "/v1.47/containers/web/archive?path=/tmp"),
                ("POST", "/v1.47/exec/0123/resize"),
                ("POST", "/v1.47/images/create?fromImage=busybox"),
                ("POST", "/v1.47/images/load"),
                ("POST", "/v1.47/images/prune"),
                ("POST", "/v1.47/images/busybox/tag?repo=x"),
                ("DELETE", "/v1.47/images/busybox:latest"),
                ("POST", "/v1.47/commit?container=web"),
                ("POST", "/v1.47/build/prune"),
                ("POST", "/v1.47/networks/create"),
                ("POST", "/v1.47/networks/n1/connect"),
                ("POST", "/v1.47/networks/n1/disconnect"),
                ("POST", "/v1.47/networks/prune"),
                ("DELETE", "/v1.47/networks/n1"),
                ("POST", "/v1.47/volumes/create"),
                ("POST", "/v1.47/volumes/prune"),
                ("PUT", "/v1.47/volumes/data"),
                ("DELETE", "/v1.47/volumes/data"),
                ("POST", "/v1.47/plugins/pull?remote=x"),
                ("POST", "/v1.47/plugins/create?name=x"),
                ("POST", "/v1.47/plugins/vieux/sshfs/disable"),
                ("POST", "/v1.47/plugins/vieux/sshfs/set"),
                ("POST", "/v1.47/plugins/vieux/sshfs/upgrade"),
                ("DELETE", "/v1.47/plugins/vieux/sshfs"),
                ("POST", "/v1.47/swarm/init"),
                ("POST", "/v1.47/swarm/join"),
                ("POST", "/v1.47/swarm/leave"),
                ("POST", "/v1.47/swarm/update"),
                ("POST", "/v1.47/swarm/unlock"),
                ("POST", "/v1.47/nodes/n1/update"),
                ("DELETE", "/v1.47/nodes/n1"),
                ("DELETE", "/v1.47/services/s1"),
                ("POST", "/v1.47/secrets/create"),
                ("POST", "/v1.47/secrets/s1/update"),
                ("DELETE", "/v1.47/secrets/s1"),
                ("POST", "/v1.47/configs/create"),
                ("DELETE", "/v1.47/configs/c1"),
            ],
        );
    }

    #[test]
    fn read_only_refuses_what_runs_code() {
        assert_all(
            Class::Runs,
            &[
                ("POST", "/v1.47/containers/web/start"),
                ("POST", "/v1.47/containers/web/restart"),
                ("POST", "/v1.47/containers/web/unpause"),
                ("POST", "/v1.47/containers/web/exec"),
                ("POST", "/v1.47/exec/0123abcd/start"),
                ("POST", "/v1.47/containers/web/attach?stream=1&stdin=1"),
                ("GET", "/v1.47/containers/web/attach/ws"),
                ("POST", "/v1.47/build?t=x"),
                ("POST", "/session"),
                ("POST", "/grpc"),
                ("POST", "/v1.47/plugins/vieux/sshfs/enable"),
                ("POST", "/v1.47/services/create"),
                ("POST", "/v1.47/services/s1/update"),
            ],
        );
    }

    #[test]
    fn read_only_refuses_reading_file_contents() {
        assert_all(
            Class::Contents,
            &[
                ("GET", "/v1.47/containers/web/archive?path=/etc/passwd"),
                ("HEAD", "/v1.47/containers/web/archive?path=/etc"),
                ("GET", "/v1.47/containers/web/export"),
                ("GET", "/v1.47/images/get?names=busybox"),
                ("GET", "/v1.47/images/busybox/get"),
                ("GET", "/v1.47/configs"),
                ("GET", "/v1.47/configs/c1"),
            ],
        );
    }

    #[test]
    fn read_only_refuses_swarm_secrets_and_registries() {
        assert_all(
            Class::Secret,
            &[("GET", "/v1.47/swarm"), ("GET", "/v1.47/swarm/unlockkey")],
        );
        assert_all(
            Class::Registry,
            &[
                ("POST", "/v1.47/auth"),
                ("GET", "/v1.47/images/search?term=x"),
                ("POST", "/v1.47/images/busybox/push"),
                ("GET", "/v1.47/distribution/busybox/json"),
                ("GET", "/v1.47/plugins/privileges?remote=x"),
            ],
        );
    }

    #[test]
    fn read_only_refuses_unknown_and_unclean_paths() {
        assert_all(
            Class::Unknown,
            &[
                ("GET", "/v1.47/containers/web"),
                ("GET", "/v1.99/something/new"),
                ("OPTIONS", "/_ping"),
                ("HEAD", "/v1.47/containers/json"),
                ("GET", "/v1.47/containers/web/json/"),
                ("GET", "//containers/json"),
                ("GET", "/v1.47/containers/../images/busybox/get/../json"),
                ("GET", "/v1.47/containers/./json"),
                ("GET", "/v1.47/containers/web/%2e%2e/json"),
                ("GET", "/v1.47/images/bad%zz/json"),
                ("GET", "/v1.47/images/nul%00/json"),
                ("GET", "containers/json"),
                ("GET", ""),
                ("PATCH", "/v1.47/containers/web/json"),
            ],
        );
    }

    #[test]
    fn a_decoded_slash_is_read_as_the_router_reads_it() {
        // dockerd's router sees `/containers/x/archive` here: a copy, not a list.
        assert_eq!(class("GET", "/containers/x%2Farchive"), Class::Contents);
        assert_eq!(class("GET", "/v1.47/images/a%2Fget"), Class::Contents);
    }

    #[test]
    fn the_version_prefix_is_optional_and_only_a_version() {
        assert_eq!(class("GET", "/containers/json"), Class::Read);
        assert_eq!(class("GET", "/v1.24/containers/json"), Class::Read);
        assert_eq!(class("GET", "/vx/containers/json"), Class::Unknown);
        assert_eq!(class("GET", "/v/containers/json"), Class::Unknown);
    }

    #[test]
    fn refusals_name_the_method_the_path_and_why() {
        let post = Method::POST;
        assert_eq!(
            check(Access::ReadOnly, &post, "/v1.47/containers/create?name=x"),
            Err("read-only access: POST /containers/create changes state".into())
        );
        assert_eq!(
            check(Access::ReadOnly, &post, "/v1.47/containers/web/exec"),
            Err("read-only access: POST /containers/web/exec runs code".into())
        );
        assert_eq!(
            check(
                Access::ReadOnly,
                &Method::GET,
                "/containers/web/archive?path=/x"
            ),
            Err("read-only access: GET /containers/web/archive reads file contents".into())
        );
        assert_eq!(
            check(Access::ReadOnly, &post, "/v1.47/build"),
            Err("read-only access: POST /build runs code".into())
        );
    }

    #[test]
    fn full_access_allows_everything_even_the_unknown() {
        for (method, path) in [
            (Method::POST, "/v1.47/containers/create"),
            (Method::GET, "/v1.47/swarm"),
            (Method::PATCH, "/something/new"),
            (Method::GET, "not even a path"),
        ] {
            assert_eq!(check(Access::Full, &method, path), Ok(()));
        }
    }
}
