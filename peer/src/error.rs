//! Why a command failed, by meaning: the one error type the command layer returns. `main`
//! turns it into the exit code and the one `error: ...` line; nothing else looks inside.

use std::fmt;
use std::path::PathBuf;

use common::FileId;

use crate::download::DownloadError;
use crate::home::HomeError;
use crate::output::safe;
use crate::tracker_client::TrackerError;
use crate::transport::CaError;

/// What a command failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the tracker failed (see [`TrackerError`] for its kinds).
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// `--ca` names an unusable file.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A file term matched nothing.
    #[error("no file{scope} matches '{}'", safe(term))]
    NoSuchFile { term: String, scope: Scope },
    /// A term of hex digits that named no file and has too few or too many digits for a
    /// file id prefix, which the tracker takes only with `min` to `max` digits.
    #[error(
        "no file is named '{}', and {} hex digits are too {} for a file id prefix, which takes {min} to {max}",
        safe(term),
        digits,
        if digits < min { "few" } else { "many" }
    )]
    IdPrefixLength {
        term: String,
        digits: usize,
        min: usize,
        max: usize,
    },
    /// A file term matched several files; `candidates` describe them (already escaped).
    #[error(
        "'{}' matches {} files{scope}: {}",
        safe(term),
        candidates.len(),
        candidates.join(", ")
    )]
    Ambiguous {
        term: String,
        scope: Scope,
        candidates: Vec<String>,
    },
    #[error("user '{}' already exists", safe(user))]
    UserExists { user: String },
    #[error("registration is closed on this tracker; ask its operator for an account")]
    RegistrationClosed,
    /// The tracker refused the user name or password; its reason (already escaped).
    #[error("cannot register: {0}")]
    CannotRegister(String),
    #[error("too many failed logins from this address; wait a minute and try again")]
    TooManyLogins,
    #[error("the passwords do not match")]
    PasswordsDiffer,
    #[error("empty password")]
    EmptyPassword,
    #[error("cannot read the password: {0}")]
    ReadPassword(#[source] std::io::Error),
    /// A path given on the command line cannot be used.
    #[error("cannot {action} {}: {source}", path.display())]
    Path {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `unindex` of a replica, which the node manages for the tracker.
    #[error(
        "{} is a replica kept for the tracker's replication, not a share of this peer; `peer serve` manages it",
        .0.short()
    )]
    IsReplica(FileId),
    /// Telling the tracker about a shared file failed.
    #[error("cannot share {}: {source}", path.display())]
    Share {
        path: PathBuf,
        #[source]
        source: TrackerError,
    },
    /// `index` found a file whose name is not UTF-8 (the tracker takes only UTF-8 names).
    #[error("{}: file name is not UTF-8", .0.display())]
    NameNotUtf8(PathBuf),
    /// `index` saw a file change while it hashed it.
    #[error("{} changed while it was hashed", .0.display())]
    ChangedWhileHashed(PathBuf),
    /// A hashing thread of `index` panicked.
    #[error("hashing task failed: {0}")]
    HashTask(#[source] tokio::task::JoinError),
    /// The home directory, or a file in it, could not be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// One download of a `get` of several files failed; `term` is what named the file.
    #[error("get {}: {source}", safe(term))]
    Get {
        term: String,
        #[source]
        source: DownloadError,
    },
    /// `unindex` of one file of a folder that stays shared.
    #[error("{} is in the shared folder {}, whose node would share it again: unindex the folder (peer unindex {}), or move the file out of it", id.short(), safe(&folder.to_string_lossy()), safe(&folder.to_string_lossy()))]
    InSharedFolder { id: FileId, folder: PathBuf },
    /// `unindex PATH` of a path this home shares nothing from.
    #[error("nothing is shared from {}", safe(&.0.to_string_lossy()))]
    NotShared(PathBuf),
    /// A folder's listing or one of its directories could not be used.
    #[error(transparent)]
    Folder(#[from] crate::folders::FolderError),
    /// One file of a fetched folder failed; `path` is its path in the folder.
    #[error("{}: {source}", safe(path))]
    InFolder {
        path: String,
        #[source]
        source: Box<Error>,
    },
    /// The node could not start or failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// `get --cancel` of something that is not waiting.
    #[error("no waiting get of {}", safe(.0))]
    NotWaiting(String),
    /// A contact could not be added or removed.
    #[error(transparent)]
    Contact(#[from] crate::contacts::ContactError),
    /// A search among peers could not run.
    #[error(transparent)]
    PeerSearch(#[from] crate::flood::origin::SearchError),
    /// `--json` output could not be encoded.
    #[error("cannot encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `n` items failed and each was printed already (one `error: ...` line apiece).
    #[error("{0} item(s) failed")]
    AlreadyReported(usize),
    /// Ctrl-C stopped the command, which has said what it kept: exit 130 (128 + SIGINT),
    /// as a shell reports a process the signal ended.
    #[error("interrupted")]
    Interrupted,
}

/// `Result` with the command layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a file term was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Among the files the tracker knows.
    Tracker,
    /// Among the store records of this home.
    Home,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Tracker => Ok(()),
            Scope::Home => f.write_str(" in this home"),
        }
    }
}
