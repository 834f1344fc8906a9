//! The `type` of a file (`video`, `audio`, `image`, `document`, `archive`, `other`), from its
//! extension: cheap, predictable, and what users filter by; or `collection`, a shared
//! folder, known from its checked listing.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FileType {
    Video,
    Audio,
    Image,
    Document,
    Archive,
    Other,
    /// A shared folder ([`crate::collection`]): never from a name, only from a listing.
    Collection,
}

impl FileType {
    pub const ALL: [FileType; 7] = [
        FileType::Video,
        FileType::Audio,
        FileType::Image,
        FileType::Document,
        FileType::Archive,
        FileType::Other,
        FileType::Collection,
    ];

    /// Classifies a file name by its extension, case-insensitively.
    pub fn from_name(name: &str) -> Self {
        let ext = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
            _ => return FileType::Other,
        };
        match ext.as_str() {
            "mp4" | "mkv" | "avi" | "mov" | "webm" | "m4v" | "mpg" | "mpeg" | "wmv" | "flv"
            | "ts" | "3gp" => FileType::Video,
            "mp3" | "flac" | "ogg" | "opus" | "wav" | "m4a" | "aac" | "wma" | "aiff" | "alac" => {
                FileType::Audio
            }
            "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff" | "svg" | "heic"
            | "avif" | "ico" | "raw" => FileType::Image,
            "pdf" | "txt" | "md" | "doc" | "docx" | "odt" | "rtf" | "epub" | "xls" | "xlsx"
            | "ods" | "ppt" | "pptx" | "odp" | "csv" | "html" | "htm" | "tex" | "mobi" => {
                FileType::Document
            }
            "zip" | "tar" | "gz" | "tgz" | "bz2" | "xz" | "zst" | "7z" | "rar" | "iso" | "dmg"
            | "deb" | "rpm" => FileType::Archive,
            _ => FileType::Other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FileType::Video => "video",
            FileType::Audio => "audio",
            FileType::Image => "image",
            FileType::Document => "document",
            FileType::Archive => "archive",
            FileType::Other => "other",
            FileType::Collection => "collection",
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of the seven kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown file type {0:?} (expected video, audio, image, document, archive, other or collection)"
)]
pub struct FileTypeParseError(pub String);

impl FromStr for FileType {
    type Err = FileTypeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| FileTypeParseError(crate::names::printable(s, 40)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_extension() {
        assert_eq!(FileType::from_name("Abbey Road.FLAC"), FileType::Audio);
        assert_eq!(FileType::from_name("movie.mkv"), FileType::Video);
        assert_eq!(FileType::from_name("a.tar.gz"), FileType::Archive);
        assert_eq!(FileType::from_name(".bashrc"), FileType::Other);
        assert_eq!(FileType::from_name("README"), FileType::Other);
        assert_eq!("Video".parse::<FileType>().unwrap(), FileType::Video);
        assert!("movies".parse::<FileType>().is_err());
    }
}
