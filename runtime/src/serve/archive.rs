//! `GET`/`HEAD`/`PUT /containers/{id}/archive?path=` (what `docker cp` uses both ways) and
//! `GET /containers/{id}/export`: tar streams out of and into the container through the
//! library's copy ([`crate::api::copy_out`], [`crate::api::copy_in`]), which runs the
//! container's side in its own root. The path's stat (`X-Docker-Container-Path-Stat`,
//! base64 JSON) is read from the archive's first header, so it describes exactly what is
//! sent.

use super::http::{blocking, ApiError, ApiResult, Query};
use super::stream::{channel_body, engine_error, streamed, BodyWriter, IN_FLIGHT};
use super::streams::Slot;
use super::Shared;
use crate::container::cp::{CopyDest, CopySource};
use crate::container::{ContainerError, ContainerStore};
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::io::Write;
use std::path::PathBuf;

/// The header that carries a path's stat.
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/export", get(export))
}

/// What `stat` of a path in the container says (Docker's `PathStat`; `mode` is Go's
/// `os.FileMode`: permissions, plus the type bits).
fn stat_json(header: &tar::Header, path: &str) -> serde_json::Value {
    let mode = header.mode().unwrap_or(0);
    let kind = header.entry_type();
    let mut go_mode = mode & 0o777;
    if mode & 0o4000 != 0 {
        go_mode |= 1 << 23; // setuid
    }
    if mode & 0o2000 != 0 {
        go_mode |= 1 << 22; // setgid
    }
    if mode & 0o1000 != 0 {
        go_mode |= 1 << 20; // sticky
    }
    go_mode |= match kind {
        tar::EntryType::Directory => 1 << 31,
        tar::EntryType::Symlink => 1 << 27,
        tar::EntryType::Char => (1 << 26) | (1 << 21),
        tar::EntryType::Block => 1 << 26,
        tar::EntryType::Fifo => 1 << 25,
        _ => 0,
    };
    let name = std::path::Path::new(path)
        .file_name()
        .map_or("/".to_string(), |n| n.to_string_lossy().into_owned());
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(header.mtime().unwrap_or(0));
    let link = match kind {
        tar::EntryType::Symlink => header
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    serde_json::json!({
        "name": name,
        "size": header.size().unwrap_or(0),
        "mode": go_mode,
        "mtime": crate::timefmt::rfc3339(mtime),
        "linkTarget": link,
    })
}

/// The stat header's value for an archive beginning with `first` (its first 512 bytes).
fn stat_header(first: &[u8], path: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let block: &[u8; 512] = first.get(..512)?.try_into().ok()?;
    if block.iter().all(|b| *b == 0) {
        return None; // the end of an empty archive: the path was not there
    }
    let header = tar::Header::from_byte_slice(block);
    let json = stat_json(header, path).to_string();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json)).ok()
}

/// A copy's error as the API answers it: a path that is not there is 404 in Docker's
/// words.
fn copy_error(e: ContainerError, path: &str, container: &str) -> ApiError {
    let text = e.to_string();
    if matches!(
        e,
        ContainerError::Copy { .. } | ContainerError::CopyTo { .. } | ContainerError::Vm(_)
    ) && (text.contains("No such file or directory") || text.contains("not found"))
    {
        return ApiError::not_found(format!(
            "Could not find the file {path} in container {container}"
        ));
    }
    engine_error(e)
}

/// The `path` parameter (400 when missing).
fn path_param(query: &Query) -> ApiResult<String> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("Bad parameter: path cannot be empty"))
}

/// A writer that keeps the first 512 bytes of an archive, then stops the copy.
struct FirstHeader(Vec<u8>);

impl Write for FirstHeader {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = (512 - self.0.len()).min(data.len());
        self.0.extend_from_slice(&data[..take]);
        if self.0.len() >= 512 {
            return Err(std::io::Error::other("enough"));
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The stat header of `path` in the container (resolved first); 404 when it is not there.
async fn stat(engine: &Shared, name: String, path: String) -> ApiResult<(String, HeaderValue)> {
    let root = engine.root.clone();
    blocking(move || {
        let store = ContainerStore::new(&root);
        let id = store.resolve(&name).map_err(engine_error)?;
        let mut first = FirstHeader(Vec::with_capacity(512));
        let copied = crate::api::copy_out(
            &store,
            &id,
            std::path::Path::new(&path),
            CopyDest::Tar(&mut first),
            false,
        );
        match stat_header(&first.0, &path) {
            Some(value) => Ok((id, value)),
            None => Err(match copied {
                Err(e) => copy_error(e, &path, &name),
                Ok(()) => ApiError::internal(format!("{path}: an empty archive")),
            }),
        }
    })
    .await
}

async fn archive_head(
    State(engine): State<Shared>,
    UrlPath(name): UrlPath<String>,
    query: Query,
) -> ApiResult<Response> {
    let path = path_param(&query)?;
    let (_, value) = stat(&engine, name, path).await?;
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(STAT_HEADER, value);
    Ok(response)
}

async fn archive_get(
    State(engine): State<Shared>,
    UrlPath(name): UrlPath<String>,
    query: Query,
) -> ApiResult<Response> {
    let path = path_param(&query)?;
    let (id, value) = stat(&engine, name, path.clone()).await?;
    let slot = engine.streams.take()?;
    let mut response = stream_copy(&engine, slot, id, PathBuf::from(&path), "application/x-tar");
    response.headers_mut().insert(STAT_HEADER, value);
    Ok(response)
}

/// A response streaming the archive of `src` in container `id`.
fn stream_copy(
    engine: &Shared,
    slot: Slot,
    id: String,
    src: PathBuf,
    content_type: &'static str,
) -> Response {
    let (tx, body) = channel_body();
    let root = engine.root.clone();
    super::streams::spawn(slot, move || {
        let store = ContainerStore::new(&root);
        let mut out = BodyWriter::new(tx);
        let copied = crate::api::copy_out(&store, &id, &src, CopyDest::Tar(&mut out), false);
        match copied
            .map_err(|e| e.to_string())
            .and_then(|()| out.flush().map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            // The client sees a broken stream, not a short archive that looks whole.
            Err(e) if !out.closed() => out.fail(e),
            Err(_) => {}
        }
    });
    streamed(content_type, body)
}

async fn export(
    State(engine): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Response> {
    let slot = engine.streams.take()?;
    let root = engine.root.clone();
    let id = blocking(move || {
        ContainerStore::new(&root)
            .resolve(&name)
            .map_err(engine_error)
    })
    .await?;
    // The library's copy of `/` is the container's files, complete, without the kernel's
    // views mounted in a running one.
    Ok(stream_copy(
        &engine,
        slot,
        id,
        PathBuf::from("/"),
        "application/x-tar",
    ))
}

/// The request body as a blocking reader, fed through a bounded channel.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

async fn archive_put(
    State(engine): State<Shared>,
    UrlPath(name): UrlPath<String>,
    query: Query,
    request: Request,
) -> ApiResult<Response> {
    use http_body_util::BodyExt;
    let path = path_param(&query)?;
    // `docker cp -a`: the files keep the uid and gid of the archive.
    let keep_owners = super::http::flag(&query, "copyUIDGID");
    let (id, value) = stat(&engine, name.clone(), path.clone()).await?;
    let is_dir = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .ok()
            .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok())
            .and_then(|v| v["mode"].as_u64())
            .is_some_and(|m| m & (1 << 31) != 0)
    };
    if !is_dir {
        return Err(ApiError::bad_request(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let slot = engine.streams.take()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    let root = engine.root.clone();
    let dest = PathBuf::from(&path);
    let copier = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let store = ContainerStore::new(&root);
        let mut reader = BodyReader {
            rx,
            chunk: Bytes::new(),
        };
        crate::api::copy_in(
            &store,
            &id,
            CopySource::Tar(&mut reader),
            &dest,
            keep_owners,
        )
    });
    let mut body: Body = request.into_body();
    let mut broken = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if tx.send(data).await.is_err() {
                        break; // the copy stopped: its error says why
                    }
                }
            }
            Err(e) => {
                broken = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let copied = copier
        .await
        .map_err(|e| ApiError::internal(format!("copy failed: {e}")))?;
    if let Some(e) = broken {
        return Err(ApiError::bad_request(format!("reading the archive: {e}")));
    }
    copied.map_err(|e| copy_error(e, &path, &name))?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(86400);
        h
    }

    #[test]
    fn the_stat_mode_is_gos_file_mode() {
        let dir = stat_json(&header(tar::EntryType::Directory, 0o755), "/etc");
        assert_eq!(dir["mode"], (1u64 << 31) | 0o755);
        assert_eq!(dir["name"], "etc");
        assert_eq!(dir["mtime"], "1970-01-02T00:00:00.000000000Z");
        let mut link = header(tar::EntryType::Symlink, 0o777);
        link.set_link_name("/bin/busybox").unwrap();
        let link = stat_json(&link, "/bin/sh");
        assert_eq!(link["mode"], (1u64 << 27) | 0o777);
        assert_eq!(link["linkTarget"], "/bin/busybox");
        let suid = stat_json(&header(tar::EntryType::Regular, 0o4755), "/x");
        assert_eq!(suid["mode"], (1u64 << 23) | 0o755);
        assert_eq!(
            stat_json(&header(tar::EntryType::Regular, 0o644), "/")["name"],
            "/"
        );
    }

    #[test]
    fn the_end_of_an_empty_archive_is_no_stat() {
        assert!(stat_header(&[0u8; 512], "/x").is_none());
        assert!(stat_header(&[1u8; 100], "/x").is_none());
    }
}
