//! How plugin calls fail, from the caller's point of view: the plugin said
//! no (an error value), or the plugin broke (trap, deadline, memory cap).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use super::PluginKind;
use super::bindings::WitError;
use super::sandbox::Confined;

/// The reasons a plugin may refuse a request, mirrored from the WIT `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such file.
    NotFound,
    /// The name is not acceptable.
    InvalidName,
    /// The file exists and overwriting was not asked for.
    AlreadyExists,
    /// Too large for the plugin.
    TooLarge,
    /// An offset or range outside the file.
    OutOfRange,
    /// The store failed underneath the plugin.
    Io,
    /// Anything else.
    Other,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "not found",
            Refusal::InvalidName => "invalid name",
            Refusal::AlreadyExists => "already exists",
            Refusal::TooLarge => "too large",
            Refusal::OutOfRange => "out of range",
            Refusal::Io => "i/o error",
            Refusal::Other => "error",
        })
    }
}

/// A failed call into a plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// No plugin of this kind is loaded.
    #[error("no {0} plugin is loaded on this node; drop one into the plugins folder")]
    Unavailable(PluginKind),
    /// Every turn for HTTP plugins was taken for as long as the plugin's
    /// deadline.
    #[error("plugin {plugin} is busy: no turn came free in {waited:?}")]
    Busy {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// How long the request waited.
        waited: Duration,
    },
    /// Every plugin instance slot of the node was in use
    /// (`--plugin-instances`).
    #[error("plugin {plugin} cannot run now: all {slots} plugin instance slots of this node are in use")]
    Crowded {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// The node's slots.
        slots: u32,
    },
    /// The plugin answered with an error value.
    #[error("{refusal}: {message}")]
    Refused {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// What kind of refusal.
        refusal: Refusal,
        /// The plugin's words.
        message: String,
    },
    /// The plugin ran past its deadline and was stopped.
    #[error("plugin {plugin} was stopped: it ran longer than its {limit:?} deadline")]
    Timeout {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// The deadline.
        limit: Duration,
    },
    /// The plugin tried to use more memory than its cap.
    #[error("plugin {plugin} was stopped: it exceeded its memory cap of {limit_bytes} bytes")]
    OutOfMemory {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// The cap.
        limit_bytes: usize,
    },
    /// Stored or received bytes do not match their hash: a damaged copy.
    #[error("checksum mismatch: {0}")]
    Corrupt(String),
    /// The host gave up on an upload before finishing it (client gone, body
    /// too large); the plugin discarded what it had.
    #[error("the upload was cancelled before it finished")]
    Cancelled,
    /// The store's disk is full, or an upload would leave it less free
    /// than the node keeps (`--reserve-free-mib`); nothing of it is kept.
    #[error("no room to store it: {0}")]
    NoRoom(String),
    /// The node is stopping: its runtime no longer runs plugin calls.
    #[error("the node is stopping")]
    Stopping,
    /// The plugin trapped (panicked, hit `unreachable`, broke the ABI, ...).
    #[error("plugin {plugin} failed: {detail}")]
    Trapped {
        /// The plugin's file name.
        plugin: Arc<str>,
        /// The trap and whatever the plugin printed to stderr.
        detail: String,
    },
}

impl PluginError {
    /// Whether the plugin itself broke (as opposed to refusing, being absent
    /// or being cancelled): its instance is dead.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(self, PluginError::Timeout { .. } | PluginError::OutOfMemory { .. } | PluginError::Trapped { .. })
    }

    /// Turns what a guarded call returned into the caller's result, logging
    /// every case where the plugin itself broke.
    pub(super) fn from_call<T, S: Confined>(
        store: &Store<S>,
        plugin: &Arc<str>,
        timeout: Duration,
        outcome: wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, PluginError> {
        let trap = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(refused)) => return Err(Self::refused(plugin, refused)),
            Err(trap) => trap,
        };
        let plugin = plugin.clone();
        let error = if store.data().memory_cap_hit() {
            PluginError::OutOfMemory { plugin, limit_bytes: store.data().memory_limit() }
        } else if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            PluginError::Timeout { plugin, limit: timeout }
        } else {
            // The trap itself, without the wasm backtrace wrapped around it.
            let cause = root_cause(&trap);
            let stderr = store.data().stderr_text();
            let stderr: Vec<&str> =
                stderr.lines().filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE")).collect();
            let detail = if stderr.is_empty() { cause } else { format!("{cause}; stderr: {}", stderr.join(" ")) };
            PluginError::Trapped { plugin, detail }
        };
        tracing::error!(error = %error, "plugin call stopped");
        Err(error)
    }

    fn refused(plugin: &Arc<str>, error: WitError) -> Self {
        let (refusal, message) = match error {
            WitError::NotFound(m) => (Refusal::NotFound, m),
            WitError::InvalidName(m) => (Refusal::InvalidName, m),
            WitError::AlreadyExists(m) => (Refusal::AlreadyExists, m),
            WitError::TooLarge(m) => (Refusal::TooLarge, m),
            WitError::OutOfRange(m) => (Refusal::OutOfRange, m),
            WitError::Io(m) => (Refusal::Io, m),
            WitError::Other(m) => (Refusal::Other, m),
        };
        PluginError::Refused { plugin: plugin.clone(), refusal, message }
    }
}

/// The innermost cause of a wasmtime error (a trap without the wasm
/// backtrace wrapped around it, a parse error without its context).
pub(super) fn root_cause(e: &wasmtime::Error) -> String {
    e.chain().last().map_or_else(|| format!("{e:#}"), |c| c.to_string())
}
