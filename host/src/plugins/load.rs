//! Reading one file of the plugins folder into a version ready to serve: a
//! component exporting exactly one known behaviour, whose imports the host
//! provides, with its manifest's grant. Anything else is refused with the
//! reason. Compiled components are kept by content hash, so a version seen
//! before (swapping back and forth) costs no second compilation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{self, download::DownloadPluginPre, index::IndexPluginPre, upload::UploadPluginPre};
use super::error::root_cause;
use super::manifest::{Grant, Manifest};
use super::registry::{Fingerprint, Loaded, Outcome, Refused};
use super::sandbox::Sandbox;
use super::{PluginHost, PluginKind, Pre};
use crate::integrity::Digest;

/// Compiled components kept at most (each holds its machine code): enough
/// for every kind swapped back and forth between two versions.
const COMPILED_KEPT: usize = 8;

/// The linker every store plugin is instantiated with: WASI (filesystem,
/// clocks, streams; no sockets are granted) and the host's `log`.
pub(super) fn linker(engine: &Engine) -> anyhow::Result<Linker<Sandbox>> {
    let mut linker = Linker::<Sandbox>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    bindings::log::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    bounded_sleeps(&mut linker)?;
    Ok(linker)
}

/// The monotonic clock interface wasmtime-wasi defines (its WIT version).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces wasmtime-wasi's clock subscriptions (what `sleep` and `poll`
/// wait on) with ones cut to what is left of the plugin's call
/// ([`Sandbox::sleep_budget`]): a plugin asleep in the host cannot outlast
/// its deadline. The rest of the interface stays wasmtime-wasi's.
fn bounded_sleeps(linker: &mut Linker<Sandbox>) -> anyhow::Result<()> {
    use wasmtime::StoreContextMut;
    use wasmtime::component::Resource;
    use wasmtime_wasi::clocks::WasiClocksView;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host;

    fn subscribe(
        mut store: StoreContextMut<'_, Sandbox>,
        wanted: Duration,
    ) -> wasmtime::Result<(Resource<DynPollable>,)> {
        let nanos = u64::try_from(store.data().sleep_budget(wanted).as_nanos()).unwrap_or(u64::MAX);
        Ok((store.data_mut().clocks().subscribe_duration(nanos)?,))
    }
    // Replacing a definition needs shadowing; the two names must exist
    // already, or wasmtime-wasi moved on and this would add, not replace.
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        if clock.func_wrap(name, |_: StoreContextMut<'_, Sandbox>, (): ()| Ok(())).is_ok() {
            anyhow::bail!("{MONOTONIC_CLOCK} has no {name} to bound: the WASI version changed");
        }
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |store: StoreContextMut<'_, Sandbox>, (nanos,): (u64,)| {
        subscribe(store, Duration::from_nanos(nanos))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, Sandbox>, (when,): (u64,)| {
        let now = store.data_mut().clocks().now()?;
        subscribe(store, Duration::from_nanos(when.saturating_sub(now)))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Compiled components by content hash.
#[derive(Default)]
pub(super) struct Compiled(Mutex<HashMap<Digest, Component>>);

impl Compiled {
    fn get_or_compile(&self, engine: &Engine, version: Digest, bytes: &[u8]) -> Result<Component, String> {
        if let Some(component) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&version) {
            return Ok(component.clone());
        }
        let component = Component::from_binary(engine, bytes)
            .map_err(|e| format!("not a WebAssembly component: {}", root_cause(&e)))?;
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= COMPILED_KEPT {
            kept.clear();
        }
        kept.insert(version, component.clone());
        Ok(component)
    }
}

/// Reads `path` (a `.wasm` file, and its manifest beside it) and loads it,
/// unless it is what was `seen` last time.
pub(super) fn read(host: &PluginHost, path: &Path, seen: Option<Fingerprint>) -> Outcome {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Removed,
        Err(e) => {
            return Outcome::Refused(
                Refused::now(None, format!("cannot read the file: {e}"), None),
                seen_or_zero(seen),
            );
        }
    };
    let version = Digest(*blake3::hash(&bytes).as_bytes());
    let manifest = Manifest::beside(path);
    let manifest_digest = match &manifest {
        Ok(Some((_, text))) => Some(Digest(*blake3::hash(text.as_bytes()).as_bytes())),
        Ok(None) => None,
        Err(reason) => Some(Digest(*blake3::hash(reason.as_bytes()).as_bytes())),
    };
    let fingerprint = (version, manifest_digest);
    if seen == Some(fingerprint) {
        return Outcome::Unchanged;
    }
    let file: Arc<str> = path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()).into();
    let stem = path.file_stem().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    match load(host, &file, &stem, &bytes, version, manifest.map(|m| m.map(|(m, _)| m).unwrap_or_default())) {
        Ok(loaded) => Outcome::Loaded(Arc::new(loaded), fingerprint),
        Err((kind, reason)) => Outcome::Refused(Refused::now(kind, reason, Some(version)), fingerprint),
    }
}

/// Loads the plugins built into the binary ([`super::embedded`]). One
/// that does not load (it cannot, short of a broken build) is logged and
/// left out.
pub(super) fn embedded(host: &PluginHost) -> Vec<Arc<Loaded>> {
    super::embedded::DEFAULTS
        .iter()
        .filter_map(|(file, bytes)| {
            let version = Digest(*blake3::hash(bytes).as_bytes());
            let stem = file.trim_end_matches(".wasm");
            match load(host, &Arc::from(*file), stem, bytes, version, Ok(Manifest::default())) {
                Ok(loaded) => Some(Arc::new(loaded)),
                Err((_, reason)) => {
                    tracing::error!(plugin = file, "the embedded plugin does not load: {reason}");
                    None
                }
            }
        })
        .collect()
}

fn seen_or_zero(seen: Option<Fingerprint>) -> Fingerprint {
    seen.unwrap_or((Digest([0; 32]), None))
}

type Refusal = (Option<PluginKind>, String);

fn load(
    host: &PluginHost,
    file: &Arc<str>,
    stem: &str,
    bytes: &[u8],
    version: Digest,
    manifest: Result<Manifest, String>,
) -> Result<Loaded, Refusal> {
    let component = host.compiled.get_or_compile(&host.engine, version, bytes).map_err(|r| (None, r))?;
    let kind = kind_of(&host.engine, &component).map_err(|reason| (None, reason))?;
    let asked = manifest.map_err(|reason| (Some(kind), reason))?;
    let grant = Grant::of(kind, stem, &asked, &host.limits).map_err(|reason| (Some(kind), reason))?;
    let refuse = |e: wasmtime::Error| (Some(kind), format!("does not fit the {kind} world: {e:#}"));
    let pre = match kind {
        PluginKind::Index => {
            Pre::Index(IndexPluginPre::new(host.linker.instantiate_pre(&component).map_err(refuse)?).map_err(refuse)?)
        }
        PluginKind::Upload => {
            Pre::Upload(UploadPluginPre::new(host.linker.instantiate_pre(&component).map_err(refuse)?).map_err(refuse)?)
        }
        PluginKind::Download => Pre::Download(
            DownloadPluginPre::new(host.linker.instantiate_pre(&component).map_err(refuse)?).map_err(refuse)?,
        ),
        PluginKind::Http => {
            let pre = host.http_linker.instantiate_pre(&component).map_err(refuse)?;
            Pre::Http(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(refuse)?)
        }
    };
    Ok(Loaded::new(file.clone(), kind, version, asked, grant, pre))
}

/// The plugin contract's package, and the version this host speaks.
const CONTRACT: &str = "ringshare:plugin/";
/// `@` and the version this host speaks.
const AT_VERSION: &str = super::contract!("").split_at(CONTRACT.len()).1;
/// The interface an HTTP plugin exports (any 0.2 release of `wasi:http`).
const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.";

/// The one behaviour `component` exports.
fn kind_of(engine: &Engine, component: &Component) -> Result<PluginKind, String> {
    let exports: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect();
    let mut kinds: Vec<PluginKind> =
        PluginKind::ALL.into_iter().filter(|k| exports.iter().any(|e| e == k.export_name())).collect();
    if exports.iter().any(|e| e.starts_with(HTTP_HANDLER)) {
        kinds.push(PluginKind::Http);
    }
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] if exports.iter().any(|e| e.starts_with(CONTRACT) && !e.ends_with(AT_VERSION)) => Err(format!(
            "speaks another version of the plugin contract ([{}]); this node loads {CONTRACT}*{AT_VERSION} only: \
             rebuild it against wit/plugin.wit",
            exports.join(", ")
        )),
        [] => Err(format!(
            "exports none of the plugin interfaces ({}, or {HTTP_HANDLER}x); it exports [{}]",
            PluginKind::ALL.map(PluginKind::export_name).join(", "),
            exports.join(", ")
        )),
        several => Err(format!("exports several plugin interfaces ({several:?}); a plugin provides one")),
    }
}

/// What a component says of itself, as `ringshare plugin check` reports it.
#[derive(Debug)]
pub struct Description {
    /// The behaviour it provides, or why it provides none the host knows.
    pub kind: Result<PluginKind, String>,
    /// The interfaces it exports.
    pub exports: Vec<String>,
    /// The interfaces it imports (what it needs of the host).
    pub imports: Vec<String>,
}

/// Compiles `bytes` on a fresh engine and describes the component; fails
/// when they are not a WebAssembly component.
pub fn describe(bytes: &[u8]) -> Result<Description, String> {
    let memory = crate::config::DEFAULT_PLUGIN_MEMORY_BYTES;
    let engine = super::engine::new_engine(false, memory, 1).map_err(|e| format!("wasmtime engine: {e:#}"))?;
    let component = Component::from_binary(&engine, bytes)
        .map_err(|e| format!("not a WebAssembly component: {}", root_cause(&e)))?;
    let kind = kind_of(&engine, &component);
    let ty = component.component_type();
    let exports = ty.exports(&engine).map(|(name, _)| name.to_owned()).collect();
    let imports = ty.imports(&engine).map(|(name, _)| name.to_owned()).collect();
    Ok(Description { kind, exports, imports })
}
