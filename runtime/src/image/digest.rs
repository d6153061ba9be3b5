//! sha256 digests and chain IDs as validated types, and a reader that computes a digest
//! while bytes stream through it.
//!
//! Every ID that names a file in the store (`blobs/sha256/<hex>`, `layers/<chain hex>/`,
//! `locks/layer-<chain hex>`) is a [`Digest`] or a [`ChainId`], and those are made only by
//! parsing (`sha256:` and exactly 64 lowercase hex digits) or by hashing: a diff ID, a
//! descriptor digest or an `images.json` entry that is anything else (`sha256:<hex>/diff/x`,
//! `sha256:../..`) is refused where it is read and can never become a path.

use oci_spec::image::{Descriptor, ImageConfiguration};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};

/// `sha256:`.
const SHA256_PREFIX: &str = "sha256:";
/// Hex digits of a sha256 digest.
const SHA256_HEX_LEN: usize = 64;
/// How much of a malformed ID an error quotes.
const QUOTED_MAX: usize = 100;

/// A sha256 content digest: `sha256:` and exactly 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// An ID that is not `sha256:<64 lowercase hex>`; shows (the start of) what it was, escaped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{quoted} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
pub struct BadDigest {
    /// The offending text, quoted with control characters escaped and cut at 100 characters.
    pub quoted: String,
}

impl BadDigest {
    fn of(text: &str) -> BadDigest {
        let cut: String = text.chars().take(QUOTED_MAX).collect();
        let ellipsis = if cut.len() < text.len() { "..." } else { "" };
        BadDigest {
            quoted: format!("{cut:?}{ellipsis}"),
        }
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.len() == SHA256_HEX_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Digest, BadDigest> {
        match text.strip_prefix(SHA256_PREFIX) {
            Some(hex) if is_lower_hex(hex) => Ok(Digest(text.to_string())),
            _ => Err(BadDigest::of(text)),
        }
    }

    /// Parses a bare 64-hex name (a file name in the store).
    pub fn from_hex(hex: &str) -> Result<Digest, BadDigest> {
        if is_lower_hex(hex) {
            Ok(Digest(format!("{SHA256_PREFIX}{hex}")))
        } else {
            Err(BadDigest::of(hex))
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(sha256_of(data))
    }

    /// The digest a descriptor names.
    pub fn of_descriptor(desc: &Descriptor) -> Result<Digest, BadDigest> {
        Digest::parse(desc.digest().as_ref())
    }

    /// The 64 hex digits (a file name in the store).
    pub fn hex(&self) -> &str {
        &self.0[SHA256_PREFIX.len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// The chain ID of a stack of layers (OCI image spec), the name of an unpacked layer in the
/// store. Made by [`chain_ids`] from parsed diff IDs, or read back from a store name.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ChainId(Digest);

impl ChainId {
    /// The chain ID a store entry is named by (`layers/<hex>`), if the name is one.
    pub fn from_hex(hex: &str) -> Option<ChainId> {
        Digest::from_hex(hex).ok().map(ChainId)
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }

    /// As a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The chain IDs of a layer stack (OCI image spec): `ChainID(L0) = DiffID(L0)`,
/// `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => Digest::of(format!("{prev} {diff}").as_bytes()),
        };
        out.push(ChainId(next));
    }
    out
}

/// A diff ID of an image config that is not a digest.
#[derive(Debug, thiserror::Error)]
#[error("rootfs.diff_ids[{index}]: {source}")]
pub struct BadDiffId {
    /// Its position in `rootfs.diff_ids`.
    pub index: usize,
    /// What it is instead.
    #[source]
    pub source: BadDigest,
}

/// The diff IDs of an image config, each parsed; the error names the field.
pub fn diff_ids_of(config: &ImageConfiguration) -> Result<Vec<Digest>, BadDiffId> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .enumerate()
        .map(|(index, d)| Digest::parse(d).map_err(|source| BadDiffId { index, source }))
        .collect()
}

/// A reader that hashes and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left (tar archives end before their stream does) and returns the
    /// digest and size.
    pub fn finish(self) -> io::Result<(Digest, u64)> {
        self.finish_into_inner().map(|(d, n, _)| (d, n))
    }

    /// [`finish`](Self::finish), also handing back the wrapped reader.
    pub fn finish_into_inner(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        let digest = Digest(format!(
            "{SHA256_PREFIX}{}",
            hex::encode(self.hasher.finalize())
        ));
        Ok((digest, self.count, self.inner))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_of(data: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_reader_matches_one_shot_digest() {
        let data = b"hello layers".repeat(1000);
        let r = HashingReader::new(&data[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(d, Digest::of(&data));
        assert_eq!(n, data.len() as u64);
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0].digest(), &a);
        assert_eq!(ids[1].digest(), &Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn only_sha256_and_64_lowercase_hex_parse() {
        let good = sha256_of(b"x");
        assert_eq!(Digest::parse(&good).unwrap().as_str(), good);
        let hex = &good[7..];
        for bad in [
            "sha256:abc".to_string(),
            format!("{good}/diff/x"),
            format!("sha256:../../{}", &hex[6..]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha512:{hex}"),
            hex.to_string(),
            format!(" {good}"),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} parsed");
        }
        assert!(ChainId::from_hex("..").is_none());
        assert!(ChainId::from_hex(hex).is_some());
    }

    #[test]
    fn a_bad_digest_is_quoted_escaped_and_short() {
        let err = Digest::parse(&format!("sha256:\n\u{1b}[31m{}", "a".repeat(500))).unwrap_err();
        let text = err.to_string();
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.len() < 250, "{text}");
        assert!(text.contains("\\n"), "{text}");
    }
}
