//! `/api/v1/files` (search) and `/api/v1/files/{id}` (one file with its chunk map).

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, rfc3339};
use crate::Error;
use crate::app::{FileDetail, FileView, SearchQuery, TrackerService};

/// A file object.
#[derive(Serialize)]
pub struct FileJson {
    id: String,
    name: String,
    size: u64,
    sha256: String,
    #[serde(rename = "type")]
    file_type: &'static str,
    chunks: u32,
    chunk_size: u32,
    holders: u32,
    created_at: Option<String>,
}

impl From<FileView> for FileJson {
    fn from(f: FileView) -> Self {
        Self {
            id: f.id.to_string(),
            name: f.name,
            size: f.size,
            sha256: f.sha256.to_hex(),
            file_type: f.file_type.as_str(),
            chunks: f.chunks,
            chunk_size: f.chunk_size,
            holders: f.holders,
            created_at: rfc3339(f.created_at_ms),
        }
    }
}

#[derive(Serialize)]
pub struct FileListJson {
    items: Vec<FileJson>,
    total: u64,
}

/// Query of `GET /api/v1/files`; numbers are parsed by hand for clear messages.
#[derive(Deserialize)]
pub struct SearchParams {
    q: Option<String>,
    #[serde(rename = "type")]
    file_type: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn number(name: &str, v: Option<&str>) -> Result<Option<u32>, Error> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("{name} must be a non-negative integer"))),
    }
}

pub async fn h_files_search(
    State(svc): State<TrackerService>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<FileListJson>, ApiError> {
    let Query(p) = params?;
    let file_type = match p
        .file_type
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(t) => Some(
            t.parse()
                .map_err(|e: common::filetype::FileTypeParseError| Error::invalid(e.to_string()))?,
        ),
    };
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

#[derive(Serialize)]
pub struct ChunkPeerJson {
    id: String,
    state: &'static str,
    /// `shared`, `downloaded` or `replica`.
    kind: &'static str,
}

#[derive(Serialize)]
pub struct ChunkJson {
    index: u32,
    offset: u64,
    size: u64,
    sha256: String,
    copies: u32,
    peers: Vec<ChunkPeerJson>,
}

#[derive(Serialize)]
pub struct FileDetailJson {
    #[serde(flatten)]
    file: FileJson,
    chunk_map: Vec<ChunkJson>,
}

impl From<FileDetail> for FileDetailJson {
    fn from(d: FileDetail) -> Self {
        Self {
            file: d.file.into(),
            chunk_map: d
                .chunks
                .into_iter()
                .map(|c| ChunkJson {
                    index: c.index,
                    offset: c.offset,
                    size: c.size,
                    sha256: c.sha256.to_hex(),
                    copies: c.copies,
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

pub async fn h_file_get(
    State(svc): State<TrackerService>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<FileDetailJson>, ApiError> {
    let Path(id) = id?;
    Ok(Json(svc.file_detail(&id)?.into()))
}
