//! The default index, upload and download plugins, built into the binary
//! (`host/build.rs` finds them in `target/plugins/default/`): each serves
//! when the plugins folder has no plugin of its kind, so `ringshare` works
//! from any folder. A plugin of that kind dropped into the folder replaces
//! it, and removing that plugin hands its routes back.

use std::path::Path;

/// The embedded components, by file name.
pub const DEFAULTS: [(&str, &[u8]); 3] = [
    ("index.wasm", include_bytes!(concat!(env!("RINGSHARE_DEFAULT_PLUGINS"), "/index.wasm"))),
    ("upload.wasm", include_bytes!(concat!(env!("RINGSHARE_DEFAULT_PLUGINS"), "/upload.wasm"))),
    ("download.wasm", include_bytes!(concat!(env!("RINGSHARE_DEFAULT_PLUGINS"), "/download.wasm"))),
];

/// Writes the embedded plugins into `dir` (created if missing), for someone
/// who wants to start from them; refuses to replace a file already there.
/// Answers the paths written.
pub fn export(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some((file, _)) = DEFAULTS.iter().find(|(file, _)| dir.join(file).exists()) {
        return Err(format!("{} exists: nothing was written", dir.join(file).display()));
    }
    DEFAULTS
        .iter()
        .map(|(file, bytes)| {
            let path = dir.join(file);
            std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path.display().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_export_as_components_and_are_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let written = export(&dir.path().join("mine")).unwrap();
        assert_eq!(written.len(), 3);
        for (file, bytes) in DEFAULTS {
            assert!(!bytes.is_empty());
            assert_eq!(std::fs::read(dir.path().join("mine").join(file)).unwrap(), bytes);
            // A component, not a core module: the binary's own check.
            assert!(crate::plugins::describe(bytes).is_ok(), "{file} is a plugin component");
        }
        let again = export(&dir.path().join("mine")).unwrap_err();
        assert!(again.contains("exists"), "{again}");
    }
}
