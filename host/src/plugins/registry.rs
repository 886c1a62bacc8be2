//! Which version of which plugin serves, as the plugins folder changes under
//! a running node. Each file of the folder has at most one current version;
//! a call takes the version current when it starts ([`Call`]) and keeps it
//! to its end, so a replacement serves only calls that start after it. A
//! replacement that fails to load leaves the current version serving. Of
//! several plugins for one slot (a kind, or an HTTP route), the first file
//! by name serves and the others wait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::manifest::{Grant, Manifest};
use super::{PluginKind, Pre};
use crate::integrity::Digest;

/// One loaded version of one plugin file.
pub struct Loaded {
    /// File name within the plugins folder.
    pub file: Arc<str>,
    /// What it provides.
    pub kind: PluginKind,
    /// BLAKE3 of the component's bytes.
    pub version: Digest,
    /// What its manifest asked for (empty without one).
    pub asked: Manifest,
    /// What it was granted.
    pub grant: Grant,
    /// When it was loaded, ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// Ready to instantiate.
    pub pre: Pre,
    calls: AtomicU64,
    in_flight: AtomicU64,
}

impl Loaded {
    /// A version loaded now.
    pub fn new(file: Arc<str>, kind: PluginKind, version: Digest, asked: Manifest, grant: Grant, pre: Pre) -> Self {
        let (calls, in_flight) = (AtomicU64::new(0), AtomicU64::new(0));
        Self { file, kind, version, asked, grant, loaded_at_ms: now_ms(), pre, calls, in_flight }
    }

    /// The slot it competes for: its kind, or for HTTP plugins its route.
    fn slot(&self) -> Slot<'_> {
        match (&self.kind, &self.grant.route) {
            (PluginKind::Http, Some(route)) => Slot::Route(route),
            (kind, _) => Slot::Kind(*kind),
        }
    }
}

/// What a plugin serves: one of the store behaviours, or an HTTP route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// Index, upload or download.
    Kind(PluginKind),
    /// `/x/{route}/...`.
    Route(&'a str),
}

/// One call or session on one version of a plugin: counted in flight until
/// dropped, and keeping that version alive until then.
pub struct Call(Arc<Loaded>);

impl Call {
    /// A call on `plugin`.
    pub fn on(plugin: Arc<Loaded>) -> Self {
        plugin.calls.fetch_add(1, Ordering::Relaxed);
        plugin.in_flight.fetch_add(1, Ordering::SeqCst);
        Call(plugin)
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::ops::Deref for Call {
    type Target = Loaded;
    fn deref(&self) -> &Loaded {
        &self.0
    }
}

/// Why the latest content of a file does not serve.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The kind, when it could be told.
    pub kind: Option<PluginKind>,
    /// Why, in words.
    pub reason: String,
    /// BLAKE3 of the refused bytes, when they could be read.
    pub version: Option<Digest>,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

impl Refused {
    /// A refusal made now.
    pub fn now(kind: Option<PluginKind>, reason: String, version: Option<Digest>) -> Self {
        Self { kind, reason, version, at_ms: now_ms() }
    }
}

/// What became of a file when it was (re)read.
pub enum Outcome {
    /// Gone from the folder.
    Removed,
    /// Same component and manifest as before.
    Unchanged,
    /// A new version, and the fingerprint it was loaded from.
    Loaded(Arc<Loaded>, Fingerprint),
    /// Not loadable; the fingerprint of what was refused.
    Refused(Refused, Fingerprint),
}

/// The component's and the manifest's content, to tell a real change.
pub type Fingerprint = (Digest, Option<Digest>);

#[derive(Default)]
struct Entry {
    current: Option<Arc<Loaded>>,
    seen: Option<Fingerprint>,
    refused: Option<Refused>,
}

/// The plugins of a node, by file.
#[derive(Default)]
pub struct Registry {
    files: BTreeMap<String, Entry>,
    /// The plugins built into the binary: each serves its kind while no
    /// file of the folder does.
    embedded: Vec<Arc<Loaded>>,
    /// Versions replaced or removed while calls were running on them. Only
    /// the calls keep them: each is freed (its instance-pre, and its code
    /// unless the compile cache keeps it) when its last call ends.
    retiring: Vec<Weak<Loaded>>,
}

impl Registry {
    /// The version serving `slot`, taken for one call.
    pub fn call(&self, slot: Slot<'_>) -> Option<Call> {
        self.serving(slot).map(|p| Call::on(p.clone()))
    }

    /// The file serving `slot`.
    pub fn serving_file(&self, slot: Slot<'_>) -> Option<Arc<str>> {
        self.serving(slot).map(|p| p.file.clone())
    }

    /// The version serving `slot` and when it was loaded (a manifest change
    /// loads the same version again).
    pub fn serving_version(&self, slot: Slot<'_>) -> Option<(Digest, u64)> {
        self.serving(slot).map(|p| (p.version, p.loaded_at_ms))
    }

    fn serving(&self, slot: Slot<'_>) -> Option<&Arc<Loaded>> {
        let from_folder = self.files.values().filter_map(|e| e.current.as_ref()).find(|p| p.slot() == slot);
        from_folder.or_else(|| self.embedded.iter().find(|p| p.slot() == slot))
    }

    /// Whether `p` is built into the binary.
    fn is_embedded(&self, p: &Arc<Loaded>) -> bool {
        self.embedded.iter().any(|e| Arc::ptr_eq(e, p))
    }

    /// Whether `new`, applied, would serve its slot.
    pub fn would_serve(&self, new: &Loaded) -> bool {
        match self.serving(new.slot()) {
            None => true,
            Some(current) => self.is_embedded(current) || *current.file >= *new.file,
        }
    }

    /// Sets the plugins built into the binary.
    pub fn set_embedded(&mut self, embedded: Vec<Arc<Loaded>>) {
        self.embedded = embedded;
    }

    /// The fingerprint last read of `file`.
    pub fn seen(&self, file: &str) -> Option<Fingerprint> {
        self.files.get(file).and_then(|e| e.seen)
    }

    /// The files the registry knows.
    pub fn files(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Applies what became of `file`; answers whether anything serving
    /// changed.
    pub fn apply(&mut self, file: &str, outcome: Outcome) -> bool {
        let changed = match outcome {
            // What was seen last, served or refused, stays as it was.
            Outcome::Unchanged => false,
            Outcome::Removed => match self.files.remove(file) {
                Some(Entry { current: Some(old), .. }) => {
                    tracing::info!(plugin = %file, version = %short(&old.version), "plugin removed");
                    self.retiring.push(Arc::downgrade(&old));
                    true
                }
                _ => false,
            },
            Outcome::Loaded(new, seen) => {
                let entry = self.files.entry(file.to_owned()).or_default();
                entry.seen = Some(seen);
                entry.refused = None;
                match entry.current.replace(new.clone()) {
                    Some(old) => {
                        tracing::info!(plugin = %file, kind = %new.kind, from = %short(&old.version),
                            to = %short(&new.version), "plugin replaced: calls already running finish on the old version");
                        self.retiring.push(Arc::downgrade(&old));
                    }
                    None => {
                        tracing::info!(plugin = %file, kind = %new.kind, version = %short(&new.version), "plugin loaded")
                    }
                }
                true
            }
            Outcome::Refused(refused, seen) => {
                let entry = self.files.entry(file.to_owned()).or_default();
                match &entry.current {
                    Some(old) => tracing::warn!(plugin = %file, serving = %short(&old.version),
                        "new version refused, the previous one keeps serving: {}", refused.reason),
                    None => tracing::warn!(plugin = %file, "plugin refused: {}", refused.reason),
                }
                entry.seen = Some(seen);
                entry.refused = Some(refused);
                false
            }
        };
        self.retiring.retain(|p| p.strong_count() > 0);
        changed
    }

    /// The slots among index, upload and download that nothing serves.
    pub fn empty_kinds(&self) -> Vec<PluginKind> {
        PluginKind::ALL.into_iter().filter(|k| self.serving(Slot::Kind(*k)).is_none()).collect()
    }

    /// What every file of the folder is doing, in name order, then the
    /// removed versions still finishing calls.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let retiring = |file: &str| -> Vec<Retiring> {
            self.retiring
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|p| &*p.file == file)
                .filter_map(|p| {
                    let in_flight = p.in_flight.load(Ordering::SeqCst);
                    (in_flight > 0).then(|| Retiring { version: p.version.to_hex(), calls_in_flight: in_flight })
                })
                .collect()
        };
        let mut statuses: Vec<PluginStatus> = self
            .files
            .iter()
            .map(|(file, entry)| {
                let mut status = match &entry.current {
                    Some(p) => {
                        let serving = self.serving(p.slot()).is_some_and(|s| Arc::ptr_eq(s, p));
                        let waiting = (!serving).then(|| match (p.slot(), self.serving(p.slot())) {
                            (Slot::Route(route), Some(other)) => {
                                format!("route /x/{route}/ is already served by {}", other.file)
                            }
                            (_, other) => format!(
                                "a {} plugin is already loaded from {}",
                                p.kind,
                                other.map_or("another file", |o| &o.file)
                            ),
                        });
                        PluginStatus {
                            file: file.clone(),
                            source: Source::Folder,
                            kind: Some(p.kind),
                            loaded: serving,
                            reason: waiting,
                            version: Some(p.version.to_hex()),
                            loaded_at_ms: Some(p.loaded_at_ms),
                            calls: p.calls.load(Ordering::Relaxed),
                            calls_in_flight: p.in_flight.load(Ordering::SeqCst),
                            manifest: (p.asked != Manifest::default()).then(|| p.asked.clone()),
                            grant: Some(p.grant.clone()),
                            refused: None,
                            retiring: Vec::new(),
                        }
                    }
                    None => PluginStatus::bare(file, entry.refused.as_ref()),
                };
                if let (Some(refused), Some(_)) = (&entry.refused, &entry.current) {
                    status.refused = Some(RefusedStatus {
                        version: refused.version.map(|v| v.to_hex()),
                        reason: refused.reason.clone(),
                        at_ms: refused.at_ms,
                    });
                }
                status.retiring = retiring(file);
                status
            })
            .collect();
        let gone: std::collections::BTreeSet<Arc<str>> = self
            .retiring
            .iter()
            .filter_map(|p| p.upgrade().map(|p| p.file.clone()))
            .filter(|f| !self.files.contains_key(&**f))
            .collect();
        for file in gone {
            let mut status = PluginStatus::bare(&file, None);
            status.retiring = retiring(&file);
            if !status.retiring.is_empty() {
                status.reason = Some("removed from the folder: the calls already running finish on it".into());
                statuses.push(status);
            }
        }
        for p in &self.embedded {
            let serving = self.serving(p.slot()).filter(|s| !Arc::ptr_eq(s, p));
            statuses.push(PluginStatus {
                file: p.file.to_string(),
                source: Source::Embedded,
                kind: Some(p.kind),
                loaded: serving.is_none(),
                reason: serving.map(|other| format!("{} in the plugins folder serves instead", other.file)),
                version: Some(p.version.to_hex()),
                loaded_at_ms: Some(p.loaded_at_ms),
                calls: p.calls.load(Ordering::Relaxed),
                calls_in_flight: p.in_flight.load(Ordering::SeqCst),
                manifest: None,
                grant: Some(p.grant.clone()),
                refused: None,
                retiring: Vec::new(),
            });
        }
        statuses
    }
}

/// Where a plugin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A file of the plugins folder.
    Folder,
    /// Built into the binary: serves its kind while the folder has none.
    Embedded,
}

/// What `GET /plugins` says of one plugin: a file of the plugins folder, or
/// one built into the binary.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// File name within the plugins folder (or of the embedded plugin).
    pub file: String,
    /// `folder` or `embedded`.
    pub source: Source,
    /// The kind it provides, when that could be told.
    pub kind: Option<PluginKind>,
    /// Whether it serves requests.
    pub loaded: bool,
    /// Why it does not serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// BLAKE3 of the component serving (or waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When that version was loaded, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at_ms: Option<u64>,
    /// Calls and sessions started on that version.
    pub calls: u64,
    /// Of those, the ones still running.
    pub calls_in_flight: u64,
    /// What its manifest asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// What it was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// A newer content of the file that was refused (the version above
    /// keeps serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedStatus>,
    /// Older versions still finishing calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<Retiring>,
}

impl PluginStatus {
    fn bare(file: &str, refused: Option<&Refused>) -> Self {
        Self {
            file: file.to_owned(),
            source: Source::Folder,
            kind: refused.and_then(|r| r.kind),
            loaded: false,
            reason: refused.map(|r| r.reason.clone()),
            version: refused.and_then(|r| r.version.map(|v| v.to_hex())),
            loaded_at_ms: None,
            calls: 0,
            calls_in_flight: 0,
            manifest: None,
            grant: None,
            refused: None,
            retiring: Vec::new(),
        }
    }
}

/// A refused replacement.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedStatus {
    /// BLAKE3 of the refused bytes.
    pub version: Option<String>,
    /// Why.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A replaced version still finishing calls.
#[derive(Debug, Clone, Serialize)]
pub struct Retiring {
    /// BLAKE3 of its component.
    pub version: String,
    /// Its calls still running.
    pub calls_in_flight: u64,
}

fn short(version: &Digest) -> String {
    version.to_hex()[..12].to_owned()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
