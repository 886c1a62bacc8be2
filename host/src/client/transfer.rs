//! `put` and `get`: files streamed from and to disk with a progress bar
//! (bytes, throughput, time left) on a terminal, nothing otherwise. A
//! download goes to `NAME.part` beside its target and is renamed into place
//! only once its BLAKE3 matches the file's (the node's `ETag`); interrupted,
//! `--resume` continues it with `Range` and `If-Range` (the version it
//! started on, kept in `NAME.part.etag`), and the whole file is verified at
//! the end.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, ETAG, IF_RANGE, RANGE};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Client, ClientError, checked, encode, pretty};

/// What `put` is asked.
pub struct PutOptions {
    /// The files to upload.
    pub files: Vec<PathBuf>,
    /// The name to store one file under (default: its file name).
    pub name: Option<String>,
    /// Replace a file of the same name.
    pub overwrite: bool,
}

/// What `get` is asked.
pub struct GetOptions {
    /// The file's name in the network.
    pub name: String,
    /// Where to write it (default: its name in the current folder; `-`:
    /// standard output).
    pub output: Option<PathBuf>,
    /// Continue a download that was interrupted.
    pub resume: bool,
}

fn bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}

fn local(path: &Path, what: &str, e: std::io::Error) -> ClientError {
    ClientError::Local(format!("cannot {what} {}: {e}", path.display()))
}

impl Client {
    /// `put FILE…`: uploads each file; answers a line (or JSON) per file.
    pub async fn put(&self, options: PutOptions) -> Result<String, ClientError> {
        if options.name.is_some() && options.files.len() != 1 {
            return Err(ClientError::Usage("--name names one file; several were given".into()));
        }
        let mut lines = Vec::new();
        for path in &options.files {
            let name = match &options.name {
                Some(name) => name.clone(),
                None => path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
                    ClientError::Invalid(format!("{} has no file name: give one with --name", path.display()))
                })?,
            };
            let entry = self.put_one(path, checked(&name)?, options.overwrite).await?;
            lines.push(if self.json {
                pretty(&entry)
            } else {
                let holders = entry["holders"].as_array().map_or(0, Vec::len);
                format!(
                    "stored {name}: {} bytes, blake3 {}, {holders} {}",
                    entry["size"],
                    entry["blake3"].as_str().unwrap_or("?"),
                    if holders == 1 { "copy" } else { "copies" }
                )
            });
        }
        Ok(lines.join("\n"))
    }

    async fn put_one(&self, path: &Path, name: &str, overwrite: bool) -> Result<Value, ClientError> {
        let file = tokio::fs::File::open(path).await.map_err(|e| local(path, "read", e))?;
        if !overwrite {
            // Asked first: a node refuses an upload of an existing name before
            // reading its body, and a client still sending a large one can see
            // the connection closed instead of that answer.
            let head = self.http.head(self.url(&format!("/files/{}", encode(name)))).send().await;
            if head.map_err(|e| self.unreachable(&e))?.status().is_success() {
                return Err(ClientError::Conflict(format!("{name} already exists: give --overwrite to replace it")));
            }
        }
        let size = file.metadata().await.map_err(|e| local(path, "read", e))?.len();
        let progress = bar(size, name);
        let counted = progress.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.inc(chunk.len() as u64);
            }
        });
        let query = if overwrite { "?overwrite=true" } else { "" };
        let request = self
            .http
            .put(self.url(&format!("/files/{}{query}", encode(name))))
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        let answer = self.send(request).await;
        progress.finish_and_clear();
        let answer = answer?;
        answer.json().await.map_err(|e| ClientError::Node(format!("node {} sent a bad answer: {e}", self.node())))
    }

    /// `get NAME`: downloads a file, verified against its hash; answers a
    /// line saying where it went (nothing when it went to standard output).
    pub async fn get(&self, options: GetOptions) -> Result<String, ClientError> {
        checked(&options.name)?;
        let to_stdout = options.output.as_deref() == Some(Path::new("-"));
        if to_stdout {
            if options.resume {
                return Err(ClientError::Usage("--resume needs a file to continue (-o PATH)".into()));
            }
            return self.get_to_stdout(&options.name).await.map(|()| String::new());
        }
        let target = options.output.clone().unwrap_or_else(|| PathBuf::from(&options.name));
        let part = with_suffix(&target, ".part");
        let validator = with_suffix(&target, ".part.etag");
        // What an earlier attempt left, if asked to go on from it.
        let resumed = match (options.resume, std::fs::metadata(&part), std::fs::read_to_string(&validator)) {
            (true, Ok(meta), Ok(etag)) if meta.len() > 0 => Some((meta.len(), etag.trim().to_owned())),
            _ => None,
        };
        let mut request = self.http.get(self.url(&format!("/files/{}", encode(&options.name))));
        if let Some((offset, etag)) = &resumed {
            request = request.header(RANGE, format!("bytes={offset}-")).header(IF_RANGE, etag);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let (offset, response) = match (status, &resumed) {
            (StatusCode::PARTIAL_CONTENT, Some((offset, _))) => (*offset, response),
            // The file changed since (If-Range did not match), or the part
            // was already whole: start over.
            (StatusCode::RANGE_NOT_SATISFIABLE, Some(_)) => {
                let fresh = self.http.get(self.url(&format!("/files/{}", encode(&options.name))));
                (0, self.send(fresh).await.map_err(|e| no_such_file(e, &options.name))?)
            }
            (s, _) if s.is_success() => (0, response),
            _ => return Err(no_such_file(self.refusal(response).await, &options.name)),
        };
        let etag = etag_of(&response)
            .ok_or_else(|| ClientError::Node(format!("node {} did not say the file's hash (no ETag)", self.node())))?;
        std::fs::write(&validator, format!("\"{etag}\"")).map_err(|e| local(&validator, "write", e))?;
        let mut hasher = blake3::Hasher::new();
        let mut file = if offset > 0 {
            // The bytes already here count towards the hash.
            std::fs::File::open(&part)
                .and_then(|f| hasher.update_reader(f).map(|_| ()))
                .map_err(|e| local(&part, "read", e))?;
            tokio::fs::OpenOptions::new().append(true).open(&part).await.map_err(|e| local(&part, "write", e))?
        } else {
            tokio::fs::File::create(&part).await.map_err(|e| local(&part, "write", e))?
        };
        let total = offset + response.content_length().unwrap_or(0);
        let progress = bar(total, &options.name);
        progress.set_position(offset);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    progress.abandon();
                    return Err(ClientError::Unreachable(format!(
                        "node {} stopped sending {} ({}); run the same command with --resume to go on",
                        self.node(),
                        options.name,
                        super::root_cause(&e)
                    )));
                }
            };
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| local(&part, "write", e))?;
            progress.inc(chunk.len() as u64);
        }
        file.flush().await.map_err(|e| local(&part, "write", e))?;
        file.sync_all().await.map_err(|e| local(&part, "write", e))?;
        drop(file);
        progress.finish_and_clear();
        let got = hasher.finalize().to_hex().to_string();
        if got != etag {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&validator);
            return Err(ClientError::Corrupt(format!(
                "{} does not match its hash: expected {etag}, got {got}; the download was discarded",
                options.name
            )));
        }
        std::fs::rename(&part, &target).map_err(|e| local(&target, "write", e))?;
        let _ = std::fs::remove_file(&validator);
        let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(total);
        Ok(if self.json {
            pretty(
                &serde_json::json!({"name": options.name, "path": target, "size": size, "blake3": got, "resumed_at": offset}),
            )
        } else {
            let resumed = if offset > 0 { format!(", resumed at byte {offset}") } else { String::new() };
            format!("{} -> {} ({size} bytes, blake3 verified{resumed})", options.name, target.display())
        })
    }

    async fn get_to_stdout(&self, name: &str) -> Result<(), ClientError> {
        let response = self
            .send(self.http.get(self.url(&format!("/files/{}", encode(name)))))
            .await
            .map_err(|e| no_such_file(e, name))?;
        let etag = etag_of(&response);
        let progress = bar(response.content_length().unwrap_or(0), name);
        let mut hasher = blake3::Hasher::new();
        let mut out = std::io::stdout().lock();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ClientError::Unreachable(format!(
                    "node {} stopped sending {name} ({})",
                    self.node(),
                    super::root_cause(&e)
                ))
            })?;
            hasher.update(&chunk);
            if let Err(e) = out.write_all(&chunk) {
                // The reader went away (`| head`): not a failure of ours.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(ClientError::Local(format!("cannot write to standard output: {e}")));
            }
            progress.inc(chunk.len() as u64);
        }
        out.flush().map_err(|e| ClientError::Local(format!("cannot write to standard output: {e}")))?;
        progress.finish_and_clear();
        let got = hasher.finalize().to_hex().to_string();
        match etag {
            Some(etag) if etag != got => {
                Err(ClientError::Corrupt(format!("{name} does not match its hash: expected {etag}, got {got}")))
            }
            _ => Ok(()),
        }
    }
}

/// A 404 for a file, said plainly.
fn no_such_file(e: ClientError, name: &str) -> ClientError {
    match e {
        ClientError::NotFound(_) => ClientError::NotFound(format!("no such file: {name}")),
        other => other,
    }
}

/// The file's BLAKE3, from its `ETag` (`"hex"`).
fn etag_of(response: &reqwest::Response) -> Option<String> {
    let etag = response.headers().get(ETAG)?.to_str().ok()?;
    let etag = etag.trim_start_matches("W/").trim_matches('"');
    (etag.len() == 64).then(|| etag.to_owned())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
