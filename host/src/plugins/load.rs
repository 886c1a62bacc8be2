//! Loading the plugins folder: every `*.wasm`, in name order; each is a
//! component exporting exactly one known behaviour, whose imports the host
//! provides, and the first of its kind. Anything else is refused with one log
//! line naming the file and the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{self, download::DownloadPluginPre, index::IndexPluginPre, upload::UploadPluginPre};
use super::sandbox::Sandbox;
use super::{Loaded, PluginHost, PluginKind, PluginStatus};

pub(super) fn load_folder(host: &mut PluginHost, dir: &Path) -> anyhow::Result<()> {
    let mut linker = Linker::<Sandbox>::new(&host.engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    bindings::log::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;

    for path in wasm_files(dir) {
        let file = path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let status = match load_one(host, &linker, &path, &file) {
            Ok(kind) => {
                tracing::info!(plugin = %file, %kind, "plugin loaded");
                PluginStatus { file, kind: Some(kind), loaded: true, reason: None }
            }
            Err((kind, reason)) => {
                tracing::warn!(plugin = %file, "plugin refused: {reason}");
                PluginStatus { file, kind, loaded: false, reason: Some(reason) }
            }
        };
        host.statuses.push(status);
    }
    for kind in PluginKind::ALL {
        if host.serving(kind).is_none() {
            tracing::warn!(%kind, folder = %dir.display(), "no {kind} plugin loaded: its routes answer 503");
        }
    }
    Ok(())
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(folder = %dir.display(), "cannot read the plugins folder: {e}");
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    files
}

type Refused = (Option<PluginKind>, String);

fn load_one(host: &mut PluginHost, linker: &Linker<Sandbox>, path: &Path, file: &str) -> Result<PluginKind, Refused> {
    let bytes = std::fs::read(path).map_err(|e| (None, format!("cannot read the file: {e}")))?;
    let component = Component::from_binary(&host.engine, &bytes)
        .map_err(|e| (None, format!("not a WebAssembly component: {}", root_cause(&e))))?;
    let kind = kind_of(&host.engine, &component).map_err(|reason| (None, reason))?;
    if let Some(other) = host.serving(kind) {
        return Err((Some(kind), format!("a {kind} plugin is already loaded from {other}")));
    }
    let refuse = |e: wasmtime::Error| (Some(kind), format!("does not fit the {kind} world: {e:#}"));
    let pre = linker.instantiate_pre(&component).map_err(refuse)?;
    let name: Arc<str> = file.into();
    match kind {
        PluginKind::Index => host.index = Some(Loaded { name, pre: IndexPluginPre::new(pre).map_err(refuse)? }),
        PluginKind::Upload => host.upload = Some(Loaded { name, pre: UploadPluginPre::new(pre).map_err(refuse)? }),
        PluginKind::Download => {
            host.download = Some(Loaded { name, pre: DownloadPluginPre::new(pre).map_err(refuse)? })
        }
    }
    Ok(kind)
}

/// The plugin contract's package, and the version this host speaks.
const CONTRACT: &str = "ringshare:plugin/";
const CONTRACT_VERSION: &str = "@0.3.0";

/// The one behaviour `component` exports.
fn kind_of(engine: &wasmtime::Engine, component: &Component) -> Result<PluginKind, String> {
    let exports: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect();
    let kinds: Vec<PluginKind> =
        PluginKind::ALL.into_iter().filter(|k| exports.iter().any(|e| e == k.export_name())).collect();
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] if exports.iter().any(|e| e.starts_with(CONTRACT) && !e.ends_with(CONTRACT_VERSION)) => Err(format!(
            "speaks another version of the plugin contract ([{}]); this node loads {CONTRACT}*{CONTRACT_VERSION} only: \
             rebuild it against wit/plugin.wit",
            exports.join(", ")
        )),
        [] => Err(format!(
            "exports none of the plugin interfaces ({}); it exports [{}]",
            PluginKind::ALL.map(PluginKind::export_name).join(", "),
            exports.join(", ")
        )),
        several => Err(format!("exports several plugin interfaces ({several:?}); a plugin provides one")),
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    e.chain().last().map_or_else(|| e.to_string(), |c| c.to_string())
}
