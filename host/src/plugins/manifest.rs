//! A plugin's optional manifest, `NAME.toml` beside `NAME.wasm`: what the
//! plugin asks for. The host grants the smaller of what is asked, what the
//! plugin's kind allows and what the node's configuration allows.
//!
//! ```toml
//! store = "read"        # "none", "read" or "read-write"
//! memory-mib = 32       # linear memory cap of one instance
//! timeout-ms = 5000     # deadline of one call
//! route = "gallery"     # HTTP plugins: served at /x/gallery/...
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PluginKind;
use crate::config::PluginLimits;

/// Access to the node's store, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreAccess {
    /// No store at all.
    None,
    /// Read-only.
    Read,
    /// Read and write.
    ReadWrite,
}

impl fmt::Display for StoreAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreAccess::None => "none",
            StoreAccess::Read => "read",
            StoreAccess::ReadWrite => "read-write",
        })
    }
}

/// What a manifest asks for; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
// Written in TOML with kebab-case keys; shown in JSON with the API's
// snake_case ones.
#[serde(deny_unknown_fields, rename_all(deserialize = "kebab-case"))]
pub struct Manifest {
    /// Store access wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreAccess>,
    /// Memory cap wanted, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Call deadline wanted, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// HTTP plugins: the route name (`/x/{route}/...`); default: the file's
    /// stem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

impl Manifest {
    /// Parses a manifest's text, refusing unknown keys and empty values.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| format!("manifest: {}", e.message()))?;
        if manifest.memory_mib.is_some_and(|mib| mib == 0 || mib > 1 << 20) {
            return Err("manifest: memory-mib must be 1 to 1048576".into());
        }
        if manifest.timeout_ms == Some(0) {
            return Err("manifest: timeout-ms must be at least 1".into());
        }
        if let Some(route) = &manifest.route {
            check_route(route).map_err(|why| format!("manifest: route {route:?} {why}"))?;
        }
        Ok(manifest)
    }

    /// The manifest beside `wasm` (`NAME.toml`), if there is one.
    pub fn beside(wasm: &Path) -> Result<Option<(Self, String)>, String> {
        let path = wasm.with_extension("toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map(|m| Some((m, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// A route name: one segment of lowercase letters, digits, `-` and `_`.
pub fn check_route(route: &str) -> Result<(), &'static str> {
    let ok = !route.is_empty()
        && route.len() <= 64
        && route.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err("is not a route name (1 to 64 of a-z, 0-9, '-', '_')") }
}

/// What a plugin is granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Store access.
    pub store: StoreAccess,
    /// Memory cap of one instance, bytes.
    pub memory_bytes: usize,
    /// Deadline of one call.
    #[serde(rename = "timeout_ms", serialize_with = "as_millis")]
    pub call_timeout: Duration,
    /// HTTP plugins: the route name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl PluginKind {
    /// The most store access a plugin of this kind may have.
    pub fn store_ceiling(self) -> StoreAccess {
        match self {
            PluginKind::Upload => StoreAccess::ReadWrite,
            PluginKind::Index | PluginKind::Download | PluginKind::Http => StoreAccess::Read,
        }
    }
}

impl Grant {
    /// The grant of a plugin of `kind` called `stem` asking for `asked`
    /// on a node whose limits are `limits`: the smaller of each. A route
    /// asked by a plugin that serves none is an error.
    pub fn of(kind: PluginKind, stem: &str, asked: &Manifest, limits: &PluginLimits) -> Result<Self, String> {
        let store = asked.store.unwrap_or(kind.store_ceiling()).min(kind.store_ceiling());
        let memory_bytes = asked.memory_mib.map_or(limits.memory_bytes, |mib| {
            usize::try_from(mib << 20).unwrap_or(usize::MAX).min(limits.memory_bytes)
        });
        let call_timeout =
            asked.timeout_ms.map_or(limits.call_timeout, |ms| Duration::from_millis(ms).min(limits.call_timeout));
        let route = match (kind, &asked.route) {
            (PluginKind::Http, Some(route)) => Some(route.clone()),
            (PluginKind::Http, None) => {
                let route = stem.to_ascii_lowercase();
                check_route(&route).map_err(|why| {
                    format!("its file name {stem:?} {why}; name a route in its manifest (route = \"...\")")
                })?;
                Some(route)
            }
            (_, Some(_)) => return Err(format!("manifest: route is for HTTP plugins; a {kind} plugin has none")),
            (_, None) => None,
        };
        Ok(Grant { store, memory_bytes, call_timeout, route })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PluginLimits {
        PluginLimits { call_timeout: Duration::from_secs(30), memory_bytes: 64 << 20, ..PluginLimits::default() }
    }

    #[test]
    fn a_plugin_gets_the_smaller_of_what_it_asks_and_what_is_allowed() {
        let greedy = Manifest::parse("store = \"read-write\"\nmemory-mib = 4096\ntimeout-ms = 600000").unwrap();
        let grant = Grant::of(PluginKind::Index, "index", &greedy, &limits()).unwrap();
        assert_eq!(grant.store, StoreAccess::Read);
        assert_eq!(grant.memory_bytes, 64 << 20);
        assert_eq!(grant.call_timeout, Duration::from_secs(30));

        let modest = Manifest::parse("store = \"none\"\nmemory-mib = 8\ntimeout-ms = 250").unwrap();
        let grant = Grant::of(PluginKind::Upload, "upload", &modest, &limits()).unwrap();
        assert_eq!(grant.store, StoreAccess::None);
        assert_eq!(grant.memory_bytes, 8 << 20);
        assert_eq!(grant.call_timeout, Duration::from_millis(250));

        let silent = Grant::of(PluginKind::Upload, "upload", &Manifest::default(), &limits()).unwrap();
        assert_eq!(silent.store, StoreAccess::ReadWrite);
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        assert!(Manifest::parse("stor = \"read\"").unwrap_err().contains("unknown field"));
        assert!(Manifest::parse("store = \"everything\"").unwrap_err().contains("unknown variant"));
        assert!(Manifest::parse("memory-mib = 0").unwrap_err().contains("1 to 1048576"));
        assert!(Manifest::parse("memory-mib = 17592186044416").unwrap_err().contains("1 to 1048576"));
        assert!(Manifest::parse("memory-mib = -3").is_err());
        assert!(Manifest::parse("route = \"../etc\"").unwrap_err().contains("not a route name"));
        let routed = Manifest::parse("route = \"gallery\"").unwrap();
        assert!(Grant::of(PluginKind::Index, "index", &routed, &limits()).unwrap_err().contains("HTTP plugins"));
    }

    #[test]
    fn an_http_plugin_is_routed_by_its_file_name_unless_it_names_a_route() {
        let grant = Grant::of(PluginKind::Http, "Gallery", &Manifest::default(), &limits()).unwrap();
        assert_eq!(grant.route.as_deref(), Some("gallery"));
        let named = Manifest::parse("route = \"pics\"").unwrap();
        assert_eq!(Grant::of(PluginKind::Http, "gallery", &named, &limits()).unwrap().route.as_deref(), Some("pics"));
        assert!(Grant::of(PluginKind::Http, "my plugin", &Manifest::default(), &limits()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Fuzzed: a manifest of any text, and of lines that look right with
        /// values of any kind, is refused or grants no more than the node
        /// allows.
        #[test]
        fn fuzzed_manifests_are_refused_or_bounded(
            text in "\\PC{0,80}",
            key in "store|memory-mib|timeout-ms|route|[a-z-]{1,8}",
            value in "\"[a-z-]{0,12}\"|-?[0-9]{1,22}|\\PC{0,10}|\\[\\]|\\{\\}",
            kind in proptest::sample::select(vec![PluginKind::Index, PluginKind::Upload, PluginKind::Download, PluginKind::Http]),
        ) {
            let _ = Manifest::parse(&text);
            if let Ok(asked) = Manifest::parse(&format!("{key} = {value}")) {
                proptest::prop_assert!(asked.memory_mib.is_none_or(|m| (1..=1 << 20).contains(&m)));
                proptest::prop_assert!(asked.timeout_ms != Some(0));
                proptest::prop_assert!(asked.route.as_deref().is_none_or(|r| check_route(r).is_ok()));
                if let Ok(grant) = Grant::of(kind, "fuzzed", &asked, &limits()) {
                    proptest::prop_assert!(grant.memory_bytes <= limits().memory_bytes);
                    proptest::prop_assert!(grant.call_timeout <= limits().call_timeout);
                    proptest::prop_assert!(grant.store <= kind.store_ceiling());
                }
            }
        }
    }
}
