//! The peer's home directory: everything this peer remembers between runs.
//!
//! ```text
//! identity.json      {peer_id}                         made once
//! session.json       {user, token, expires_at_ms}      mode 0600
//! settings.json      {trackers: [..]}                  saved by register/login
//! tracker_key.json   {public_key}                      the tracker's ticket key (hex), saved
//!                                                      by register/login and by `serve`
//! node.json          {pid, addr, local_addr, peer_id, started_at_ms,
//!                     storage_quota, storage_used, tasks_connected}   while `serve` runs
//! node.lock          empty; `serve` holds an exclusive lock on it while it runs
//! store/<id>.json    one StoreRecord per file this peer shares or holds
//! replicas/<id>/<chunk>.chunk   replica chunks the tracker placed here (kind `replica`)
//! withdrawals/<id>   empty; a withdrawal the tracker has not confirmed (`unindex` during
//!                    an outage), which the node sends when the tracker answers
//! ```
//! Every write goes to a temporary file in the same directory and is renamed into place, so
//! a reader (a `serve` next to a `get`) never sees half a file and a crash never leaves one.
//!
//! Only `register` and `login` make a home ([`Home::open`]); every other command opens an
//! existing one ([`Home::open_existing`]), so a mistyped `--home` is an error instead of a
//! new identity that is not logged in. The directory is always held as an absolute path, so
//! every message that names it says where it is.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use common::hash::DigestParseError;
use common::{Bitfield, FileId, Manifest, ManifestError, PeerId, Sha256Digest};
use serde::{Deserialize, Serialize};

/// Why the home directory, or a file in it, could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No `--home` was given and neither `$XDG_DATA_HOME` nor `$HOME` is set.
    #[error("cannot find a home directory; pass --home DIR")]
    NoHomeDir,
    /// Creating, reading, writing or removing a file or directory of the home failed;
    /// `action` is e.g. "create home", "read", "write".
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file of the home is not the JSON it should be.
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be turned into JSON to be written to `path`.
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The home directory does not exist (a command other than register/login).
    #[error(
        "no peer home at {}; run `peer register` or `peer login` first, or check --home",
        .0.display()
    )]
    Missing(PathBuf),
    /// The home path names something that is not a directory.
    #[error("the peer home {} is not a directory; check --home", .0.display())]
    NotADirectory(PathBuf),
    /// Another node (`peer serve`, or an in-process node) holds this home's node lock.
    #[error("{}", node_running(dir, *pid))]
    NodeRunning { dir: PathBuf, pid: Option<u32> },
    /// identity.json was gone right after this process wrote it.
    #[error("identity.json vanished")]
    IdentityVanished,
    /// A store record's whole-file hash or a chunk hash (`what`) is not a SHA-256 digest.
    #[error("bad {what} in store record: {source}")]
    RecordDigest {
        what: &'static str,
        #[source]
        source: DigestParseError,
    },
    /// A store record's fields do not make a manifest of its file id (a hand-edited or
    /// replica record).
    #[error(transparent)]
    RecordManifest(#[from] ManifestError),
}

fn node_running(dir: &Path, pid: Option<u32>) -> String {
    let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    format!(
        "a node is already serving the peer home {}{pid}; stop it first, or give this one its own --home",
        dir.display()
    )
}

/// A peer's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    /// Absolute.
    dir: PathBuf,
}

/// The exclusive lock on `node.lock` that a running node holds, so a second node on the same
/// home is refused. The kernel releases it when this is dropped or the process dies, so a
/// node killed with SIGKILL leaves no stale lock behind.
#[derive(Debug)]
pub struct NodeLock {
    _file: fs::File,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    peer_id: PeerId,
}

/// A login session with the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    pub user: String,
    pub token: String,
    pub expires_at_ms: i64,
}

/// The tracker's public ticket key, so a restarted node can check tickets before the
/// tracker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrackerKeyFile {
    /// 32 bytes as 64 hex digits.
    public_key: String,
}

/// Settings kept between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The tracker URLs register/login used; the default for later commands.
    #[serde(default)]
    pub trackers: Vec<String>,
}

/// Written by `serve` once it is bound, removed when it stops cleanly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    pub pid: u32,
    /// The advertised address (what other peers dial).
    pub addr: String,
    /// An address this machine can dial to reach the node (loopback when it listens on all
    /// interfaces), used by `peer status`.
    #[serde(default)]
    pub local_addr: String,
    pub peer_id: PeerId,
    pub started_at_ms: i64,
    /// Replica storage offered (`--storage-quota`) and in use, refreshed while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_quota: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_used: Option<u64>,
    /// Whether the tracker's task stream is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_connected: Option<bool>,
}

/// Whether this peer shares a file of its own, fetched it, or keeps copies of some of its
/// chunks for the tracker's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Shared,
    Downloaded,
    /// Chunks placed here by replication, one file per chunk under `replicas/<id>/`. Only
    /// `serve` creates and deletes these; the user's own files are never this kind.
    Replica,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Shared => "shared",
            Kind::Downloaded => "downloaded",
            Kind::Replica => "replica",
        }
    }
}

/// One file this peer shares or holds: its manifest, where its bytes are, which chunks are
/// there.
///
/// A replica record knows only what a replication task carries (name, size, chunk size):
/// `sha256` is empty, `chunk_hashes` is empty, and [`StoreRecord::manifest`] fails for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRecord {
    pub file_id: FileId,
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub sha256: String,
    pub chunk_size: u32,
    /// Hex SHA-256 of every chunk, in order (empty for a replica).
    #[serde(default)]
    pub chunk_hashes: Vec<String>,
    pub kind: Kind,
    /// Absolute path of the file (for a download in progress: its final path; the bytes are
    /// in [`StoreRecord::data_path`]; for a replica: its directory of chunk files).
    pub path: PathBuf,
    pub complete: bool,
    /// Hex bitfield of the chunks held.
    pub have: String,
    /// For shared files: length and mtime (ns since the epoch) when indexed, so a changed
    /// file is noticed (and re-hashed by `index`, refused by `serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<u64>,
    /// Set by `serve` when a shared file changed on disk: it is no longer served.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed: bool,
    /// For a shared collection: the folder it lists (its listing is at `path`, in
    /// `collections/`), so indexing the folder again replaces it and `unindex` finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
}

/// Suffix of a download in progress.
pub const PART_SUFFIX: &str = ".tessera-part";

impl StoreRecord {
    /// A record for `manifest`, holding the chunks in `have`.
    pub fn new(manifest: &Manifest, kind: Kind, path: PathBuf, have: &Bitfield) -> Self {
        Self {
            file_id: manifest.id(),
            name: manifest.name.clone(),
            size: manifest.size,
            sha256: manifest.sha256.to_hex(),
            chunk_size: manifest.chunk_size,
            chunk_hashes: manifest.chunk_hashes.iter().map(|h| h.to_hex()).collect(),
            kind,
            path,
            complete: have.is_complete(),
            have: hex::encode(have.as_bytes()),
            file_len: None,
            mtime_ns: None,
            changed: false,
            folder: None,
        }
    }

    /// The manifest, checked against the record's id (a hand-edited record is refused).
    ///
    /// # Errors
    /// When a hash is not a SHA-256 digest or the fields do not make a manifest of the id
    /// (always for a replica record).
    pub fn manifest(&self) -> Result<Manifest, HomeError> {
        let digest = |what, hex: &str| {
            hex.parse::<Sha256Digest>()
                .map_err(|source| HomeError::RecordDigest { what, source })
        };
        let sha256 = digest("sha256", &self.sha256)?;
        let mut packed = Vec::with_capacity(self.chunk_hashes.len() * 32);
        for h in &self.chunk_hashes {
            packed.extend_from_slice(&digest("chunk hash", h)?.0);
        }
        let m = Manifest::from_parts(
            self.name.clone(),
            self.size,
            sha256,
            self.chunk_size,
            &packed,
        )?;
        Ok(m.verified(&self.file_id)?)
    }

    pub fn chunk_count(&self) -> u32 {
        if self.kind == Kind::Replica {
            common::manifest::chunk_count(self.size, self.chunk_size).min(u32::MAX as u64) as u32
        } else {
            self.chunk_hashes.len() as u32
        }
    }

    /// The chunks held (none if the stored bitfield is malformed).
    pub fn have_bits(&self) -> Bitfield {
        let n = self.chunk_count();
        hex::decode(&self.have)
            .ok()
            .and_then(|b| Bitfield::from_bytes(&b, n).ok())
            .unwrap_or_else(|| Bitfield::new(n))
    }

    /// Where the bytes are now: the final path once complete, the part file before (for a
    /// replica: its directory).
    pub fn data_path(&self) -> PathBuf {
        if self.complete || matches!(self.kind, Kind::Shared | Kind::Replica) {
            self.path.clone()
        } else {
            part_path(&self.path)
        }
    }
}

/// `<final>.tessera-part`, or, when that would pass the 255-byte limit of a file name,
/// the final name cut short plus `~` and 16 hex digits of its SHA-256 (so two long names
/// that share a beginning keep apart) before the suffix.
pub fn part_path(final_path: &Path) -> PathBuf {
    const MAX_NAME: usize = 255;
    let Some(name) = final_path.file_name() else {
        let mut s = final_path.as_os_str().to_owned();
        s.push(PART_SUFFIX);
        return PathBuf::from(s);
    };
    let bytes = name.as_encoded_bytes();
    if bytes.len() + PART_SUFFIX.len() <= MAX_NAME {
        let mut s = name.to_owned();
        s.push(PART_SUFFIX);
        return final_path.with_file_name(s);
    }
    let tag = &hex::encode(Sha256Digest::of(bytes).0)[..16];
    let name = name.to_string_lossy();
    let mut cut = MAX_NAME - PART_SUFFIX.len() - 1 - tag.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    final_path.with_file_name(format!("{}~{tag}{PART_SUFFIX}", &name[..cut]))
}

/// Length and mtime (ns since the epoch) of a file, as recorded for shared files.
pub fn len_and_mtime(meta: &fs::Metadata) -> (u64, u64) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (meta.len(), mtime)
}

impl Home {
    /// The home at `dir`, or the platform default; created (mode 0700) if missing. For
    /// `register` and `login`, and for tests and in-process nodes.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: Option<PathBuf>) -> Result<Self, HomeError> {
        Self::create(absolute_dir(dir)?)
    }

    /// The home at `dir`, or the platform default, which must exist already.
    ///
    /// # Errors
    /// [`HomeError::Missing`] when there is nothing at the path, [`HomeError::NotADirectory`]
    /// when it is a file, or when its `store/` cannot be created.
    pub fn open_existing(dir: Option<PathBuf>) -> Result<Self, HomeError> {
        let dir = absolute_dir(dir)?;
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Self::create(dir),
            Ok(_) => Err(HomeError::NotADirectory(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(HomeError::Missing(dir)),
            Err(source) => Err(io_error("read", &dir, source)),
        }
    }

    /// Makes `dir` and `dir/store` (mode 0700) where missing.
    fn create(dir: PathBuf) -> Result<Self, HomeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("store"))
            .map_err(|source| HomeError::Io {
                action: "create home",
                path: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    /// The home's absolute path.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the node lock (`node.lock`), which a node holds for as long as it runs.
    ///
    /// # Errors
    /// [`HomeError::NodeRunning`] (with the pid from node.json when there is one) while
    /// another node holds it, or when the lock file cannot be opened.
    pub fn lock_node(&self) -> Result<NodeLock, HomeError> {
        let path = self.dir.join("node.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| io_error("open", &path, source))?;
        match file.try_lock() {
            Ok(()) => Ok(NodeLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(HomeError::NodeRunning {
                dir: self.dir.clone(),
                pid: self.node().ok().flatten().map(|n| n.pid),
            }),
            Err(fs::TryLockError::Error(source)) => Err(io_error("lock", &path, source)),
        }
    }

    /// node.json, when there is one and its process is alive (a node killed with SIGKILL
    /// leaves node.json behind).
    pub fn live_node(&self) -> Option<NodeFile> {
        self.node().ok().flatten().filter(|n| pid_alive(n.pid))
    }

    /// This peer's id, made (16 random bytes) on first use.
    pub fn peer_id(&self) -> Result<PeerId, HomeError> {
        let path = self.dir.join("identity.json");
        if let Some(id) = read_json::<Identity>(&path)? {
            return Ok(id.peer_id);
        }
        let peer_id = PeerId::from_random(rand::random::<[u8; 16]>());
        write_json(&path, &Identity { peer_id }, 0o600)?;
        // Re-read so two processes racing to create it agree on the id that won.
        Ok(read_json::<Identity>(&path)?
            .ok_or(HomeError::IdentityVanished)?
            .peer_id)
    }

    pub fn session(&self) -> Result<Option<SessionFile>, HomeError> {
        read_json(&self.dir.join("session.json"))
    }

    pub fn save_session(&self, s: &SessionFile) -> Result<(), HomeError> {
        write_json(&self.dir.join("session.json"), s, 0o600)
    }

    /// Deletes the session; true if there was one.
    pub fn delete_session(&self) -> Result<bool, HomeError> {
        remove_if_exists(&self.dir.join("session.json"))
    }

    pub fn settings(&self) -> Result<Settings, HomeError> {
        Ok(read_json(&self.dir.join("settings.json"))?.unwrap_or_default())
    }

    pub fn save_settings(&self, s: &Settings) -> Result<(), HomeError> {
        write_json(&self.dir.join("settings.json"), s, 0o600)
    }

    /// The tracker's ticket key as last learnt (`None` if never, or unreadable).
    pub fn tracker_key(&self) -> Result<Option<Vec<u8>>, HomeError> {
        let f: Option<TrackerKeyFile> = read_json(&self.dir.join("tracker_key.json"))?;
        Ok(f.and_then(|f| hex::decode(f.public_key).ok()))
    }

    pub fn save_tracker_key(&self, key: &[u8]) -> Result<(), HomeError> {
        let f = TrackerKeyFile {
            public_key: hex::encode(key),
        };
        write_json(&self.dir.join("tracker_key.json"), &f, 0o600)
    }

    pub fn node(&self) -> Result<Option<NodeFile>, HomeError> {
        read_json(&self.dir.join("node.json"))
    }

    pub fn save_node(&self, n: &NodeFile) -> Result<(), HomeError> {
        write_json(&self.dir.join("node.json"), n, 0o600)
    }

    pub fn delete_node(&self) -> Result<bool, HomeError> {
        remove_if_exists(&self.dir.join("node.json"))
    }

    /// `collections/`: the listings of the collections this home shares or has fetched,
    /// each named by its file id.
    pub fn collections_dir(&self) -> PathBuf {
        self.dir.join("collections")
    }

    /// `replicas/`: one directory per file this node keeps replica chunks of.
    pub fn replicas_dir(&self) -> PathBuf {
        self.dir.join("replicas")
    }

    /// `replicas/<id>/`.
    pub fn replica_dir(&self, id: &FileId) -> PathBuf {
        self.replicas_dir().join(id.to_string())
    }

    /// `replicas/<id>/<chunk>.chunk`: the bytes of one replica chunk, exactly.
    pub fn replica_chunk_path(&self, id: &FileId, chunk: u32) -> PathBuf {
        self.replica_dir(id).join(format!("{chunk}.chunk"))
    }

    fn record_path(&self, id: &FileId) -> PathBuf {
        self.dir.join("store").join(format!("{id}.json"))
    }

    pub fn record(&self, id: &FileId) -> Result<Option<StoreRecord>, HomeError> {
        read_json(&self.record_path(id))
    }

    pub fn save_record(&self, r: &StoreRecord) -> Result<(), HomeError> {
        write_json(&self.record_path(&r.file_id), r, 0o600)
    }

    pub fn delete_record(&self, id: &FileId) -> Result<bool, HomeError> {
        remove_if_exists(&self.record_path(id))
    }

    fn withdrawal_path(&self, id: &FileId) -> PathBuf {
        self.dir.join("withdrawals").join(id.to_string())
    }

    /// Notes that the tracker still has to be told this peer no longer holds `id`.
    pub fn add_withdrawal(&self, id: &FileId) -> Result<(), HomeError> {
        let path = self.withdrawal_path(id);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_error("create", dir, source))?;
        write_atomic(&path, b"", 0o600).map_err(|source| io_error("write", &path, source))
    }

    /// The withdrawals the tracker has not confirmed yet.
    pub fn withdrawals(&self) -> Result<Vec<FileId>, HomeError> {
        let dir = self.dir.join("withdrawals");
        match fs::read_dir(&dir) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(io_error("read", &dir, source)),
        }
    }

    /// The tracker confirmed the withdrawal of `id` (or it is moot).
    pub fn delete_withdrawal(&self, id: &FileId) -> Result<bool, HomeError> {
        remove_if_exists(&self.withdrawal_path(id))
    }

    /// Every store record, ordered by name. Unreadable records are skipped with a warning.
    pub fn records(&self) -> Result<Vec<StoreRecord>, HomeError> {
        let dir = self.dir.join("store");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(io_error("read", &dir, source)),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| io_error("read", &dir, source))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_json::<StoreRecord>(&path) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(path = %path.display(), "skipping store record: {e}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.file_id.cmp(&b.file_id)));
        Ok(out)
    }
}

/// `dir`, or the platform default, made absolute against the working directory.
fn absolute_dir(dir: Option<PathBuf>) -> Result<PathBuf, HomeError> {
    let dir = match dir {
        Some(d) => d,
        None => default_dir().ok_or(HomeError::NoHomeDir)?,
    };
    std::path::absolute(&dir).map_err(|source| io_error("find", &dir, source))
}

/// Whether a process with this pid exists, by its `/proc` entry. Where there is no `/proc`
/// (not Linux) every pid counts as alive, so nothing is claimed that was not seen.
fn pid_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// `$XDG_DATA_HOME/tessera`, else `~/.local/share/tessera`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("tessera"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/share/tessera"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, HomeError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| HomeError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("read", path, source)),
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> HomeError {
    HomeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` as JSON to `path` atomically (temp file with `mode`, fsync, rename).
///
/// # Errors
/// When `value` cannot be encoded or the file cannot be written.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<(), HomeError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| HomeError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes, mode).map_err(|source| io_error("write", path, source))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp_beside(path, bytes, mode)?;
    let renamed = fs::rename(&tmp, path);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// Writes `bytes` to a new, synced temporary file in `path`'s directory (`.NAME.PID.SEQ.tmp`,
/// unique per process and call) and returns its path, for the caller to rename over `path`.
/// Nothing is left behind on error.
pub fn write_temp_beside(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes a file; whether it was there.
///
/// # Errors
/// When it is there and cannot be removed.
pub fn remove_if_exists(path: &Path) -> Result<bool, HomeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io_error("remove", path, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn should_keep_withdrawals_until_they_are_confirmed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        assert!(home.withdrawals().unwrap().is_empty());
        let id = FileId(Sha256Digest::of(b"w"));
        home.add_withdrawal(&id).unwrap();
        home.add_withdrawal(&id).unwrap();
        assert_eq!(home.withdrawals().unwrap(), [id]);
        assert!(home.delete_withdrawal(&id).unwrap());
        assert!(home.withdrawals().unwrap().is_empty());
    }

    fn manifest() -> Manifest {
        let d = Sha256Digest::of(b"x");
        Manifest::from_parts("a.txt".into(), 3, d, 1 << 20, &d.0).unwrap()
    }

    #[test]
    fn part_names_stay_within_255_bytes_and_apart() {
        let dir = Path::new("/out");
        assert_eq!(
            part_path(&dir.join("a.bin")),
            Path::new("/out/a.bin.tessera-part")
        );
        let long_a = format!("{}a.bin", "é".repeat(125));
        let long_b = format!("{}b.bin", "é".repeat(125));
        let (pa, pb) = (part_path(&dir.join(&long_a)), part_path(&dir.join(&long_b)));
        for p in [&pa, &pb] {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(name.len() <= 255 && name.ends_with(PART_SUFFIX), "{name}");
            assert_eq!(p.parent(), Some(dir));
        }
        assert_ne!(pa, pb);
        assert_eq!(pa, part_path(&dir.join(&long_a)), "the same name each time");
    }

    #[test]
    fn session_is_private_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let mode = fs::metadata(home.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(home.session().unwrap(), None);
        let s = SessionFile {
            user: "ann".into(),
            token: "secret".into(),
            expires_at_ms: 5,
        };
        home.save_session(&s).unwrap();
        let mode = fs::metadata(home.dir().join("session.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(home.session().unwrap(), Some(s));
        assert!(home.delete_session().unwrap());
        assert!(!home.delete_session().unwrap());
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f.json");
        write_atomic(&p, b"first version, longer", 0o600).unwrap();
        write_atomic(&p, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind");
    }

    #[test]
    fn only_open_makes_a_home_and_both_hold_it_absolute() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("typo");
        let err = Home::open_existing(Some(missing.clone())).unwrap_err();
        assert!(
            matches!(&err, HomeError::Missing(p) if *p == missing),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "no peer home at {}; run `peer register` or `peer login` first, or check --home",
                missing.display()
            )
        );
        assert!(!missing.exists(), "open_existing creates nothing");

        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = Home::open_existing(Some(file)).unwrap_err();
        assert!(matches!(err, HomeError::NotADirectory(_)), "{err}");

        let made = Home::open(Some(missing.clone())).unwrap();
        assert_eq!(made.dir(), missing);
        let again = Home::open_existing(Some(missing.clone())).unwrap();
        assert!(again.dir().join("store").is_dir());

        // A relative home is held absolute (worked out only: nothing is made here).
        let rel = absolute_dir(Some(PathBuf::from("rel"))).unwrap();
        assert!(rel.is_absolute(), "{}", rel.display());
        assert_eq!(rel, std::env::current_dir().unwrap().join("rel"));
    }

    #[test]
    fn one_node_lock_per_home_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let first = home.lock_node().unwrap();
        let err = home.lock_node().unwrap_err();
        assert!(
            matches!(err, HomeError::NodeRunning { pid: None, .. }),
            "{err}"
        );
        home.save_node(&NodeFile {
            pid: 4242,
            addr: "127.0.0.1:1".into(),
            local_addr: String::new(),
            peer_id: home.peer_id().unwrap(),
            started_at_ms: 0,
            storage_quota: None,
            storage_used: None,
            tasks_connected: None,
        })
        .unwrap();
        let err = home.lock_node().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "a node is already serving the peer home {} (pid 4242); stop it first, or give this one its own --home",
                home.dir().display()
            )
        );
        drop(first);
        let _second = home.lock_node().expect("a dropped lock is free again");
    }

    #[test]
    fn a_node_file_counts_only_while_its_process_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().to_path_buf())).unwrap();
        assert!(home.live_node().is_none());
        let mut n = NodeFile {
            pid: std::process::id(),
            addr: "127.0.0.1:1".into(),
            local_addr: String::new(),
            peer_id: home.peer_id().unwrap(),
            started_at_ms: 0,
            storage_quota: None,
            storage_used: None,
            tasks_connected: None,
        };
        home.save_node(&n).unwrap();
        assert!(home.live_node().is_some(), "this process is alive");
        if Path::new("/proc/self").exists() {
            // Above the kernel's pid_max (at most 2^22), so no process has it.
            n.pid = u32::MAX;
            home.save_node(&n).unwrap();
            assert!(home.live_node().is_none(), "a dead pid is no node");
        }
    }

    #[test]
    fn identity_is_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().to_path_buf())).unwrap();
        let a = home.peer_id().unwrap();
        assert_eq!(home.peer_id().unwrap(), a);
    }

    #[test]
    fn records_round_trip_and_check_their_id() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().to_path_buf())).unwrap();
        let m = manifest();
        let mut r = StoreRecord::new(&m, Kind::Downloaded, "/x/a.txt".into(), &Bitfield::new(1));
        home.save_record(&r).unwrap();
        let back = home.record(&m.id()).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(back.manifest().unwrap(), m);
        assert!(!back.complete);
        assert_eq!(back.data_path(), PathBuf::from("/x/a.txt.tessera-part"));
        assert_eq!(home.records().unwrap().len(), 1);
        r.size = 4;
        assert!(r.manifest().is_err());
        assert!(home.delete_record(&m.id()).unwrap());
        assert!(home.records().unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_file_and_the_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        let err = Home::open(Some(file.clone())).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot create home {}: Not a directory (os error 20)",
                file.display()
            )
        );
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        fs::write(home.dir().join("settings.json"), b"{").unwrap();
        let err = home.settings().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} is corrupt: EOF",
                home.dir().join("settings.json").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn settings_default_to_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().to_path_buf())).unwrap();
        assert_eq!(home.settings().unwrap(), Settings::default());
        let s = Settings {
            trackers: vec!["http://t:1".into()],
        };
        home.save_settings(&s).unwrap();
        assert_eq!(home.settings().unwrap(), s);
    }
}
