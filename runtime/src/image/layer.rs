//! One layer blob in, one unpacked layer tree and its stored blob out, in a single pass.
//!
//! `import`, `pull` and `load` all take layers through here: the stream is hashed as stored
//! (the blob digest), copied into a staged blob file, decompressed (gzip, zstd or none),
//! hashed again (the diff ID) and unpacked into a staged tree. Nothing reaches the store's
//! content-addressed places until the caller has checked both digests and commits, so a bad
//! or interrupted layer leaves nothing a later pull trips over. Memory stays flat: the
//! stream is never held whole.

use super::digest::{ChainId, Digest, HashingReader};
use super::unpack::unpack_layer;
use super::ImageError;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (the common case).
    Gzip,
    /// zstd (`+zstd` media types).
    Zstd,
}

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd's frame magic, little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why a layer blob could not be taken in; each says what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A media type that names no layer compression capsa knows.
    #[error("unknown layer media type {0:?}")]
    MediaType(String),
    /// The zstd decoder could not start.
    #[error("zstd stream: {0}")]
    Zstd(#[source] std::io::Error),
    /// Fewer bytes than the descriptor says.
    #[error("truncated blob: received {size} of {want} bytes")]
    Truncated {
        /// Bytes received.
        size: u64,
        /// Bytes expected.
        want: u64,
    },
    /// Other bytes than the descriptor says.
    #[error("digest mismatch: received {size} bytes with digest {digest}, the manifest says {want_size} bytes with {want}")]
    Mismatch {
        /// Bytes received.
        size: u64,
        /// Their digest.
        digest: Digest,
        /// Bytes expected.
        want_size: u64,
        /// The digest expected.
        want: Digest,
    },
    /// The decompressed stream broke.
    #[error("decompressing the layer: {0}")]
    Decompress(#[source] std::io::Error),
    /// The blob could not be read.
    #[error("reading the blob: {0}")]
    ReadBlob(#[source] std::io::Error),
    /// The first bytes could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The tar stream could not be unpacked.
    #[error("{0}")]
    Unpack(#[from] super::unpack::UnpackError),
}

impl Compression {
    /// The compression a layer media type declares; `Err` names an unknown media type.
    pub fn of_media_type(media_type: &str) -> Result<Compression, LayerError> {
        let base = media_type
            .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
            .map(|rest| format!("application/vnd.oci.image.layer.v1.{rest}"));
        match base.as_deref().unwrap_or(media_type) {
            "application/vnd.oci.image.layer.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(LayerError::MediaType(other.into())),
        }
    }

    /// Guesses from the first bytes (archives written by `docker save` do not say).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type for a layer compressed this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// What the blob must be, from its descriptor.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The blob's digest.
    pub digest: Digest,
    /// Bytes.
    pub size: u64,
}

impl Expected {
    fn check(&self, digest: &Digest, size: u64) -> Result<(), LayerError> {
        if size < self.size {
            return Err(LayerError::Truncated {
                size,
                want: self.size,
            });
        }
        if size != self.size || *digest != self.digest {
            return Err(LayerError::Mismatch {
                size,
                digest: digest.clone(),
                want_size: self.size,
                want: self.digest.clone(),
            });
        }
        Ok(())
    }
}

/// A layer taken in but not yet committed: its files live in a staging directory that is
/// deleted with this value unless [`StagedLayer::commit`] moves them into the store.
#[derive(Debug)]
pub struct StagedLayer {
    /// Digest of the blob as stored.
    pub blob_digest: Digest,
    /// Bytes of the blob as stored.
    pub blob_size: u64,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// How the blob is compressed.
    pub compression: Compression,
    blob: PathBuf,
    tree: PathBuf,
}

/// A reader that copies every byte it yields into a writer (the blob being stored).
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Streams one layer blob into `staging` (a private directory in the store's tmp): the
/// blob is stored and unpacked at once. `compression` is the declared one, or `None` to
/// sniff it from the first bytes. `label` names the layer in errors.
pub fn take_in(
    input: impl Read,
    staging: &Path,
    compression: Option<Compression>,
    label: &str,
    expected: Option<&Expected>,
) -> Result<StagedLayer, ImageError> {
    let layer_err = |source: LayerError| ImageError::Layer {
        layer: label.to_string(),
        source,
    };
    let blob = staging.join("blob");
    let tree = staging.join("layer");
    std::fs::create_dir_all(tree.join("diff")).map_err(|e| ImageError::io(&tree, e))?;
    let blob_file = File::create(&blob).map_err(|e| ImageError::io(&blob, e))?;
    let mut stored = BufReader::with_capacity(
        256 * 1024,
        HashingReader::new(Tee {
            inner: input,
            copy: BufWriter::with_capacity(256 * 1024, blob_file),
        }),
    );
    let compression = match compression {
        Some(c) => c,
        None => Compression::sniff(
            stored
                .fill_buf()
                .map_err(|e| layer_err(LayerError::Read(e)))?,
        ),
    };
    let diff = tree.join("diff");
    let unpacked =
        decompress(&mut stored, compression).and_then(|plain| unpack_hashed(plain, &diff));
    let unpacked = match (unpacked, expected) {
        (Err(e), None) => return Err(layer_err(e)),
        (unpacked, _) => unpacked,
    };
    // After a failed unpack the rest of the blob is still read: a blob that is short or
    // altered is reported as that, the root cause, rather than as the tar error it led to.
    let (blob_digest, blob_size, tee) = stored
        .into_inner()
        .finish_into_inner()
        .map_err(|e| layer_err(LayerError::ReadBlob(e)))?;
    if let Some(exp) = expected {
        exp.check(&blob_digest, blob_size).map_err(layer_err)?;
    }
    let (diff_id, _) = unpacked.map_err(layer_err)?;
    // The stored copy must be whole on disk before anything names it by its digest.
    let file = tee
        .copy
        .into_inner()
        .map_err(|e| ImageError::io(&blob, e.into_error()))?;
    file.sync_all().map_err(|e| ImageError::io(&blob, e))?;
    Ok(StagedLayer {
        blob_digest,
        blob_size,
        diff_id,
        compression,
        blob,
        tree,
    })
}

/// The decompressed stream of `input`.
pub fn decompress<'a>(
    input: impl BufRead + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(LayerError::Zstd)?)
        }
    })
}

/// The diff ID of a layer blob that is not unpacked (its layer is in the store already):
/// the blob is checked against `expected` and its decompressed stream hashed.
pub fn diff_id_of(
    input: impl Read,
    compression: Compression,
    expected: &Expected,
) -> Result<Digest, LayerError> {
    let mut blob = BufReader::with_capacity(256 * 1024, HashingReader::new(input));
    let plain = decompress(&mut blob, compression).and_then(|plain| {
        HashingReader::new(plain)
            .finish()
            .map_err(LayerError::Decompress)
    });
    let (blob_digest, blob_size) = blob.into_inner().finish().map_err(LayerError::ReadBlob)?;
    expected.check(&blob_digest, blob_size)?;
    Ok(plain?.0)
}

/// Unpacks a decompressed tar stream into `dest` and returns its digest and size.
fn unpack_hashed(plain: impl Read, dest: &Path) -> Result<(Digest, u64), LayerError> {
    let mut hashed = HashingReader::new(plain);
    unpack_layer(&mut hashed, dest)?;
    hashed.finish().map_err(LayerError::Decompress)
}

impl StagedLayer {
    /// Moves the tree to `layers/<chain>/` and the blob to `blobs/sha256/<digest>`; when
    /// another writer got there first, the staged copies are dropped.
    pub fn commit(self, store: &super::ImageStore, chain_id: &ChainId) -> Result<(), ImageError> {
        store.commit_staged(&self.tree, &store.layer_dir(chain_id))?;
        store.commit_staged(&self.blob, &store.blob_path(&self.blob_digest))
    }
}

/// A reader that fails once more than `limit` bytes arrive (a registry that sends more than
/// the descriptor's size is not trusted to stop).
pub struct Limited<R> {
    inner: R,
    left: u64,
    label: String,
}

impl<R: Read> Limited<R> {
    /// Allows at most `limit` bytes from `inner`; `label` names the blob in the error.
    pub fn new(inner: R, limit: u64, label: &str) -> Self {
        Limited {
            inner,
            left: limit,
            label: label.to_string(),
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // Probe one byte: the end of the stream is fine, anything else is too much.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "{} is longer than its descriptor says",
                    self.label
                ))),
            };
        }
        let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        b.append_data(&mut h, "etc/motd", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn every_compression_yields_the_same_diff_id() {
        let plain = one_file_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let mut ids = Vec::new();
        for (blob, declared) in [
            (&plain, Some(Compression::None)),
            (&gz, None),
            (&zst, Some(Compression::Zstd)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let staged = take_in(&blob[..], dir.path(), declared, "test", None).unwrap();
            assert_eq!(staged.blob_size, blob.len() as u64);
            assert_eq!(staged.blob_digest, Digest::of(blob));
            assert_eq!(
                std::fs::read(dir.path().join("layer/diff/etc/motd")).unwrap(),
                b"hello"
            );
            ids.push(staged.diff_id);
        }
        assert!(ids.iter().all(|d| *d == ids[0]));
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&one_file_tar()).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = take_in(&gz[..gz.len() / 2], dir.path(), None, "sha256:abc", None)
            .unwrap_err()
            .to_string();
        assert!(err.to_string().contains("sha256:abc"), "{err}");
        let expected = Expected {
            digest: Digest::of(&gz),
            size: gz.len() as u64,
        };
        let dir = tempfile::tempdir().unwrap();
        let half = &gz[..gz.len() / 2];
        let err = take_in(half, dir.path(), None, "sha256:abc", Some(&expected))
            .unwrap_err()
            .to_string();
        assert!(err.to_string().contains("truncated blob"), "{err}");
        assert!(err.to_string().contains("sha256:abc"), "{err}");
    }

    #[test]
    fn media_types_are_recognised_or_named() {
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").ok(),
            Some(Compression::Gzip)
        );
        let err = Compression::of_media_type("application/x-bogus")
            .unwrap_err()
            .to_string();
        assert!(err.contains("application/x-bogus"));
    }

    #[test]
    fn limited_refuses_extra_bytes() {
        let mut out = Vec::new();
        let err = Limited::new(&b"abcdef"[..], 3, "blob x")
            .read_to_end(&mut out)
            .unwrap_err()
            .to_string();
        assert!(err.to_string().contains("blob x"));
        let mut out = Vec::new();
        Limited::new(&b"abc"[..], 3, "blob x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
    }
}
