//! `/api/v1/files` (search), `/api/v1/files/{id}` (one file with its chunk map) and
//! `/api/v1/files/{id}/listing` (a collection's listing).

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use common::FileType;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorJson;
use super::{ApiError, rfc3339};
use crate::Error;
use crate::app::{
    ChunkPage, DEFAULT_CHUNK_PAGE, FileDetail, FileView, MAX_CHUNK_PAGE, SearchQuery,
    TrackerService,
};

/// A file's kind: guessed from its name, or `collection` (described only; the JSON carries
/// the string).
#[derive(Serialize, ToSchema)]
#[schema(as = FileType)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum FileTypeDoc {
    Video,
    Audio,
    Image,
    Document,
    Archive,
    Other,
    /// A shared folder: its content is a listing of the files in it (paths, file ids and
    /// sizes), which `GET /api/v1/files/{id}/listing` answers.
    Collection,
}

/// A file object.
#[derive(Serialize, ToSchema)]
#[schema(as = File)]
pub struct FileJson {
    /// SHA-256 (hex) of the file's manifest.
    #[schema(example = "3f9a1c0d2b7e55aa3f9a1c0d2b7e55aa3f9a1c0d2b7e55aa3f9a1c0d2b7e55aa")]
    id: String,
    /// The name shown here: in search results the one that matched, else the one most of
    /// its sharers use. Each sharer names its own listing; the id does not cover names.
    name: String,
    /// Every name its sharers give it, most used first (the last known one when only
    /// replicas or downloads are left).
    names: Vec<String>,
    /// Bytes.
    size: u64,
    /// SHA-256 (hex) of the whole content, what `sha256sum` prints.
    sha256: String,
    #[serde(rename = "type")]
    #[schema(value_type = FileTypeDoc)]
    file_type: &'static str,
    /// Number of chunks.
    chunks: u32,
    /// Bytes per chunk (the last may be shorter).
    chunk_size: u32,
    /// Up peers that can serve every chunk, alone or together (0 when some chunk has none).
    holders: u32,
    /// The fewest up holders of any one chunk.
    min_copies: u32,
    /// When it was first announced (RFC 3339).
    created_at: Option<String>,
}

impl From<FileView> for FileJson {
    fn from(f: FileView) -> Self {
        Self {
            id: f.id.to_string(),
            name: f.name,
            names: f.names,
            size: f.size,
            sha256: f.sha256.to_hex(),
            file_type: f.file_type.as_str(),
            chunks: f.chunks,
            chunk_size: f.chunk_size,
            holders: f.holders,
            min_copies: f.min_copies.unwrap_or(0),
            created_at: rfc3339(f.created_at_ms),
        }
    }
}

/// A page of search results.
#[derive(Serialize, ToSchema)]
#[schema(as = FileList)]
pub struct FileListJson {
    items: Vec<FileJson>,
    /// Matches in all pages.
    total: u64,
}

/// Query of `GET /api/v1/files`; numbers are parsed by hand for clear messages.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words that must all appear in one of the file's names (case-insensitive); for a
    /// collection, a word of three bytes or more may appear in the path of one of its
    /// entries instead. Empty lists every file.
    q: Option<String>,
    /// Only files of this kind.
    #[serde(rename = "type")]
    #[param(value_type = Option<FileTypeDoc>)]
    file_type: Option<String>,
    /// Page size (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Matches to skip.
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    offset: Option<String>,
}

/// A parameter that must be decimal digits when given (no sign, space or empty value, so
/// the API takes exactly what its OpenAPI document says).
pub(super) fn number(name: &str, v: Option<&str>) -> Result<Option<u32>, Error> {
    match v {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("{name} must be at most {}", u32::MAX))),
        Some(_) => Err(Error::invalid(format!(
            "{name} must be a non-negative integer"
        ))),
    }
}

/// A kind exactly as the API spells it (lowercase).
fn file_type(v: Option<&str>) -> Result<Option<FileType>, Error> {
    let Some(s) = v else { return Ok(None) };
    FileType::ALL
        .into_iter()
        .find(|t| t.as_str() == s)
        .map(Some)
        .ok_or_else(|| {
            let kinds: Vec<&str> = FileType::ALL.iter().map(|t| t.as_str()).collect();
            Error::invalid(format!(
                "type {:?} is not one of {}",
                common::names::printable(s, 40),
                kinds.join(", ")
            ))
        })
}

/// Searches file names.
#[utoipa::path(
    get,
    path = "/api/v1/files",
    tag = "files",
    params(SearchParams),
    responses(
        (status = 200, description = "One page of matching files", body = FileListJson,
         links(("first_file" = (
             operation_id = "h_file_get",
             parameters(("id" = "$response.body#/items/0/id")),
             description = "The chunk map of the first file listed",
         )))),
        (status = 400, description = "A parameter is not valid", body = ErrorJson),
    ),
)]
pub async fn h_files_search(
    State(svc): State<TrackerService>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<FileListJson>, ApiError> {
    let Query(p) = params?;
    let file_type = file_type(p.file_type.as_deref())?;
    let limit = number("limit", p.limit.as_deref())?;
    if limit == Some(0) {
        return Err(Error::invalid("limit must be between 1 and 1000").into());
    }
    let page = svc.search(&SearchQuery {
        query: p.q.unwrap_or_default(),
        file_type,
        limit,
        offset: number("offset", p.offset.as_deref())?.unwrap_or(0),
    })?;
    Ok(Json(FileListJson {
        items: page.items.into_iter().map(FileJson::from).collect(),
        total: page.total,
    }))
}

/// Whether a holder is up (`up`/`down`), described only.
#[derive(Serialize, ToSchema)]
#[schema(as = PeerState)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(super) enum PeerStateDoc {
    Up,
    Down,
}

/// Why a peer holds a file, described only.
#[derive(Serialize, ToSchema)]
#[schema(as = HoldingKind)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum HoldingKindDoc {
    Shared,
    Downloaded,
    Replica,
}

/// A peer holding a chunk.
#[derive(Serialize, ToSchema)]
#[schema(as = ChunkPeer)]
pub struct ChunkPeerJson {
    id: String,
    #[schema(value_type = PeerStateDoc)]
    state: &'static str,
    #[schema(value_type = HoldingKindDoc)]
    kind: &'static str,
}

/// One chunk of a file and who holds it.
#[derive(Serialize, ToSchema)]
#[schema(as = Chunk)]
pub struct ChunkJson {
    index: u32,
    /// Byte offset in the file.
    offset: u64,
    /// Bytes.
    size: u64,
    sha256: String,
    /// Up peers holding it.
    copies: u32,
    /// Peers holding it, up or down: up ones first, at most 8.
    peers: Vec<ChunkPeerJson>,
    /// Every peer holding it, listed or not.
    peers_total: u32,
}

/// A file with one page of its chunk map.
#[derive(Serialize, ToSchema)]
#[schema(as = FileDetail)]
pub struct FileDetailJson {
    #[serde(flatten)]
    file: FileJson,
    /// The index of the first chunk in `chunk_map`.
    chunk_offset: u32,
    /// The `chunk_offset` of the next page; `null` after the last chunk.
    next_chunk_offset: Option<u32>,
    /// Chunks `chunk_offset` onwards, at most `chunk_limit` of them.
    chunk_map: Vec<ChunkJson>,
}

impl FileDetailJson {
    fn new(d: FileDetail, page: ChunkPage) -> Self {
        let count = d.file.chunks;
        let end = page.end(count);
        Self {
            file: d.file.into(),
            chunk_offset: page.offset,
            next_chunk_offset: (end < count).then_some(end),
            chunk_map: d
                .chunks
                .into_iter()
                .map(|c| ChunkJson {
                    index: c.index,
                    offset: c.offset,
                    size: c.size,
                    sha256: c.sha256.to_hex(),
                    copies: c.copies,
                    peers_total: c.holders,
                    peers: c
                        .peers
                        .into_iter()
                        .map(|(id, up, kind)| ChunkPeerJson {
                            id: id.to_string(),
                            state: if up { "up" } else { "down" },
                            kind: kind.as_str(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Query of `GET /api/v1/files/{id}`: which page of the chunk map.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChunkParams {
    /// The first chunk to list (default 0); past the last chunk the page is empty.
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    chunk_offset: Option<String>,
    /// Chunks to list (default 256).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1024)]
    chunk_limit: Option<String>,
}

/// One file by id or unique id prefix, with one page of its chunk map.
#[utoipa::path(
    get,
    path = "/api/v1/files/{id}",
    tag = "files",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{6,64}$",
            description = "The file id, or a unique prefix of 6 to 64 hex digits"),
           ChunkParams),
    responses(
        (status = 200, description = "The file and, for one page of its chunks, the peers that hold each", body = FileDetailJson),
        (status = 400, description = "The id is not 6 to 64 hex digits, or a parameter is not valid", body = ErrorJson),
        (status = 404, description = "No file, or several, match", body = ErrorJson),
    ),
)]
pub async fn h_file_get(
    State(svc): State<TrackerService>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ChunkParams>, QueryRejection>,
) -> Result<Json<FileDetailJson>, ApiError> {
    let Path(id) = id?;
    let Query(p) = params?;
    let limit = number("chunk_limit", p.chunk_limit.as_deref())?.unwrap_or(DEFAULT_CHUNK_PAGE);
    if !(1..=MAX_CHUNK_PAGE).contains(&limit) {
        return Err(Error::invalid(format!(
            "chunk_limit must be between 1 and {MAX_CHUNK_PAGE}"
        ))
        .into());
    }
    let page = ChunkPage {
        offset: number("chunk_offset", p.chunk_offset.as_deref())?.unwrap_or(0),
        limit,
    };
    Ok(Json(FileDetailJson::new(svc.file_detail(&id, page)?, page)))
}

/// A collection's listing: the file's whole content, exactly as its sharer announced it
/// (`tessera-collection/1`, then one line per directory and file, sorted by path).
#[utoipa::path(
    get,
    path = "/api/v1/files/{id}/listing",
    tag = "files",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{6,64}$",
            description = "The collection's file id, or a unique prefix of 6 to 64 hex digits")),
    responses(
        (status = 200, description = "The listing", content_type = "text/plain; charset=utf-8", body = String),
        (status = 400, description = "The id is not 6 to 64 hex digits", body = ErrorJson),
        (status = 404, description = "No file, or several, match, or the file is not a collection", body = ErrorJson),
    ),
)]
pub async fn h_file_listing(
    State(svc): State<TrackerService>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let listing = svc.collection_listing(&id).await?;
    // Paths from other machines, on the dashboard's origin: never to be read as markup.
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    Ok((headers, listing).into_response())
}
