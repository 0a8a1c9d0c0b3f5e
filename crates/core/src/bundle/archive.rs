//! One-file transport for bundles: a tar archive, optionally gzip-compressed.
//!
//! Packing is deterministic (sorted entries, zero times and owners, fixed modes, a gzip header
//! without a time stamp), so the same bundle always packs to the same bytes. Unpacking trusts
//! nothing: absolute paths, `..`, links, devices, duplicate entries and oversized archives are
//! refused before anything escapes the destination.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;

use super::{Error, MAX_FILE_BYTES, Result, check_relative_path, io_err, list_files};

/// Most entries an archive may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Most bytes an archive may unpack to (4 GiB).
pub const MAX_ARCHIVE_BYTES: u64 = 4 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the file starts like a gzip stream or a tar archive.
pub fn is_archive(path: &Path) -> Result<bool> {
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..]).map_err(io_err(path))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok((n >= 2 && head[..2] == GZIP_MAGIC) || (n >= 262 && &head[257..262] == b"ustar"))
}

/// Packs the bundle folder `dir` into `out` (gzip-compressed when `out` ends in `.gz` or
/// `.tgz`). Refuses to overwrite `out`; writes a temporary file and renames it into place.
pub fn pack(dir: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::Exists {
            path: out.to_owned(),
        });
    }
    let files = list_files(dir)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(io_err(parent))?;
    let name = out.to_string_lossy();
    let gz = name.ends_with(".gz") || name.ends_with(".tgz");
    {
        let file = tmp.as_file().try_clone().map_err(io_err(tmp.path()))?;
        let writer: Box<dyn Write> = if gz {
            Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(file, Compression::default()),
            )
        } else {
            Box::new(file)
        };
        let mut builder = tar::Builder::new(writer);
        for rel in &files {
            let bytes = fs::read(dir.join(rel)).map_err(io_err(dir.join(rel)))?;
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, rel, bytes.as_slice())
                .map_err(io_err(out))?;
        }
        let writer = builder.into_inner().map_err(io_err(out))?;
        drop(writer); // finishes the gzip stream
    }
    tmp.as_file().sync_all().map_err(io_err(out))?;
    tmp.persist_noclobber(out)
        .map_err(|e| io_err(out)(e.error))?;
    Ok(())
}

/// Unpacks a bundle archive into the empty folder `dest`, refusing anything unsafe.
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(archive).map_err(io_err(archive))?;
    let reader: Box<dyn Read> = if is_gzip(archive)? {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    let mut total: u64 = 0;
    let entries = tar.entries().map_err(|e| Error::Archive(e.to_string()))?;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ARCHIVE_ENTRIES {
            return Err(Error::Archive(format!(
                "more than {MAX_ARCHIVE_ENTRIES} entries"
            )));
        }
        let mut entry =
            entry.map_err(|e| Error::Archive(format!("corrupt or truncated archive: {e}")))?;
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| Error::Archive("an entry's path is not UTF-8".into()))?;
        let rel = raw.strip_prefix("./").unwrap_or(&raw);
        let ty = entry.header().entry_type();
        if ty.is_dir() {
            let trimmed = rel.trim_end_matches('/');
            if !trimmed.is_empty() && trimmed != "." {
                check_relative_path(trimmed)?;
            }
            continue;
        }
        if !(ty.is_file() || ty == tar::EntryType::Continuous) {
            return Err(Error::UnsafePath {
                path: raw.clone(),
                reason: "only regular files and folders may be in a bundle archive (no links or devices)",
            });
        }
        check_relative_path(rel)?;
        let size = entry
            .header()
            .size()
            .map_err(|e| Error::Archive(e.to_string()))?;
        total = total.saturating_add(size);
        if size > MAX_FILE_BYTES || total > MAX_ARCHIVE_BYTES {
            return Err(Error::Archive(format!(
                "{rel}: the archive exceeds the size limits"
            )));
        }
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Archive(format!("{rel}: appears twice in the archive"))
                } else {
                    io_err(&target)(e)
                }
            })?;
        let copied =
            std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(io_err(&target))?;
        if copied != size {
            return Err(Error::Archive(format!("{rel}: truncated archive")));
        }
    }
    Ok(())
}

fn is_gzip(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    Ok(f.read_exact(&mut head).is_ok() && head == GZIP_MAGIC)
}
