//! A bound on the tar headers that the `tar` crate reads whole into memory.
//!
//! The crate (0.4) buffers a GNU long name (`L`), a GNU long link name (`K`) and a PAX
//! extended header (`x`) entirely before the entry they describe, and a PAX global header
//! (`g`) when it unpacks one, with no limit of its own: a 99 KB zstd layer can hold a 3 GiB
//! long name. It also keeps one record per GNU sparse extension block.
//!
//! [`HeaderGuard`] sits between the stream and the crate. It follows the archive's block
//! structure exactly as the crate does (a 512-byte header; for a GNU sparse header its
//! extension blocks; the entry's data rounded up to 512 bytes, its size taken from a PAX
//! `size` record when one precedes it; an all-zero block, where the crate stops, is followed
//! by blocks still checked as headers, as the crate reads them when it ignores zeros) and
//! fails the read that would hand the crate a header announcing more than
//! [`MAX_EXTENSION`] bytes of name or records, or more than [`MAX_SPARSE_BLOCKS`] sparse
//! extension blocks. The crate never receives such a header, so it never buffers what
//! follows it. A header the crate would reject (bad checksum or size) is refused here with
//! a short message, so the crate's own, which quotes the raw header bytes, never shows.

use std::io::{self, Read};

/// Most bytes an `L`, `K`, `x` or `g` entry may hold (a path is at most 4 KiB on Linux; a
/// PAX header with a few xattrs is well under this).
pub const MAX_EXTENSION: u64 = 64 * 1024;
/// Most extension blocks after one GNU sparse header (21 extents each).
pub const MAX_SPARSE_BLOCKS: u32 = 2048;
/// A tar block.
const BLOCK: usize = 512;
/// Where the checksum field sits in a header.
const CKSUM: std::ops::Range<usize> = 148..156;

/// What the next bytes of the archive are.
enum State {
    /// A header block.
    Header,
    /// Extension blocks of a GNU sparse header (`seen` so far), then `data` bytes.
    SparseExtension { data: u64, seen: u32 },
    /// `left` bytes of entry data and padding; a PAX header's records are kept (`records`,
    /// up to `record_bytes` of them) to read its `size`.
    Data {
        left: u64,
        records: Option<Vec<u8>>,
        record_bytes: u64,
    },
    /// The crate stops at the block just handed out (a short or malformed one): the rest
    /// passes unchecked.
    Through,
}

/// A reader that refuses oversized tar extension headers before the `tar` crate reads them.
pub struct HeaderGuard<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    /// Bytes of `block` read from `inner`, and handed out.
    block_len: usize,
    block_out: usize,
    /// Archive offset of the next byte handed out (for errors).
    offset: u64,
    /// The `size` record of a PAX header that applies to the next entry.
    pax_size: Option<u64>,
    /// A PAX header is pending for the next entry (the crate forgets it after that entry).
    pax_pending: bool,
}

impl<R: Read> HeaderGuard<R> {
    /// Guards the tar stream `inner`.
    pub fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            block_len: 0,
            block_out: 0,
            offset: 0,
            pax_size: None,
            pax_pending: false,
        }
    }

    /// Reads one block into `self.block`; fewer than 512 bytes only at the end of input.
    fn fill_block(&mut self) -> io::Result<usize> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut self.block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.block_len = got;
        self.block_out = 0;
        Ok(got)
    }

    /// Decides what follows the header now in `self.block`, or refuses it.
    fn inspect_header(&mut self) -> io::Result<State> {
        if self.block.iter().all(|&b| b == 0) {
            // The end of the archive: the crate stops here (or, ignoring zeros, reads the
            // next block as a header, which is then checked as one).
            return Ok(State::Header);
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&self.block);
        let sum: u32 = self.block[..CKSUM.start]
            .iter()
            .chain(&self.block[CKSUM.end..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        // The crate stops at a header with a bad checksum or size too; saying so here keeps
        // its message (which quotes the raw header bytes) out of the error.
        let (Ok(cksum), Ok(mut size)) = (header.cksum(), header.entry_size()) else {
            return Err(self.malformed("unreadable checksum or size field"));
        };
        if cksum != sum {
            return Err(self.malformed("checksum mismatch"));
        }
        let kind = header.entry_type();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let what = match kind.as_byte() {
            b'L' => Some("a GNU long name"),
            b'K' => Some("a GNU long link name"),
            b'x' => Some("a PAX extended header"),
            b'g' => Some("a PAX global header"),
            _ => None,
        };
        if let Some(what) = what {
            if size > MAX_EXTENSION {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tar header at byte {}: {what} of {size} bytes, more than the {MAX_EXTENSION} allowed",
                        self.offset
                    ),
                ));
            }
        } else if self.pax_pending {
            // As the crate does: a PAX `size` record overrides the header of the next entry
            // that is not itself an extension header.
            if let Some(pax) = self.pax_size {
                size = pax;
            }
        }
        // The crate keeps a PAX header across L/K/x headers it recognises, and drops it with
        // the first other entry it returns.
        if !(recognized && matches!(kind.as_byte(), b'L' | b'K' | b'x')) {
            self.pax_pending = false;
            self.pax_size = None;
        }
        let Some(data) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            return Ok(State::Through);
        };
        let extended = kind.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended());
        if extended {
            return Ok(State::SparseExtension { data, seen: 0 });
        }
        let keeps_records = recognized && kind.is_pax_local_extensions();
        Ok(State::Data {
            left: data,
            records: keeps_records.then(Vec::new),
            record_bytes: if keeps_records { size } else { 0 },
        })
    }

    fn malformed(&self, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "tar header at byte {}: not a valid header ({why})",
                self.offset
            ),
        )
    }

    /// Decides what follows the GNU sparse extension block now in `self.block`.
    fn inspect_sparse(&mut self, data: u64, seen: u32) -> io::Result<State> {
        let seen = seen + 1;
        if seen > MAX_SPARSE_BLOCKS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "tar header at byte {}: a GNU sparse file with more than {MAX_SPARSE_BLOCKS} extension blocks",
                    self.offset
                ),
            ));
        }
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.as_mut_bytes().copy_from_slice(&self.block);
        Ok(if ext.is_extended() {
            State::SparseExtension { data, seen }
        } else {
            State::Data {
                left: data,
                records: None,
                record_bytes: 0,
            }
        })
    }

    /// A PAX header's data is complete: remember its `size` for the next entry.
    fn end_of_records(&mut self, records: &[u8]) {
        self.pax_pending = true;
        self.pax_size = pax_size(records);
    }

    /// Hands out what is left of `self.block`.
    fn give_block(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.block_len - self.block_out).min(buf.len());
        buf[..n].copy_from_slice(&self.block[self.block_out..self.block_out + n]);
        self.block_out += n;
        self.offset += n as u64;
        n
    }
}

/// The `size` record of PAX records, read as the `tar` crate reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.block_out < self.block_len {
                return Ok(self.give_block(buf));
            }
            match &mut self.state {
                State::Through => return self.inner.read(buf),
                State::Header => {
                    if self.fill_block()? < BLOCK {
                        // A short last block: the crate reports it.
                        self.state = State::Through;
                    } else {
                        self.state = self.inspect_header()?;
                    }
                }
                State::SparseExtension { data, seen } => {
                    let (data, seen) = (*data, *seen);
                    if self.fill_block()? < BLOCK {
                        self.state = State::Through;
                    } else {
                        self.state = self.inspect_sparse(data, seen)?;
                    }
                }
                State::Data {
                    left: 0, records, ..
                } => {
                    let records = records.take();
                    if let Some(r) = records {
                        self.end_of_records(&r);
                    }
                    self.state = State::Header;
                }
                State::Data {
                    left,
                    records,
                    record_bytes,
                } => {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(0); // truncated: the crate reports it
                    }
                    if let Some(r) = records {
                        let keep = n.min(usize::try_from(*record_bytes).unwrap_or(usize::MAX));
                        r.extend_from_slice(&buf[..keep]);
                        *record_bytes -= keep as u64;
                    }
                    *left -= n as u64;
                    self.offset += n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of `kind` announcing `size` bytes, checksummed.
    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        h
    }

    /// A stream that announces a huge extension and then never ends (as a zstd bomb does).
    fn bomb(kind: tar::EntryType, size: u64) -> impl Read {
        let h = header("././@LongLink", kind, size);
        std::io::Cursor::new(h.as_bytes().to_vec()).chain(std::io::repeat(b'A'))
    }

    #[test]
    fn huge_extension_headers_are_refused_before_the_crate_reads_them() {
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long name"),
            (tar::EntryType::GNULongLink, "GNU long link name"),
            (tar::EntryType::XHeader, "PAX extended header"),
            (tar::EntryType::XGlobalHeader, "PAX global header"),
        ] {
            let mut archive = tar::Archive::new(HeaderGuard::new(bomb(kind, 3 << 30)));
            let mut entries = archive.entries().unwrap();
            let Some(Err(err)) = entries.next() else {
                panic!("{what}: not refused");
            };
            let err = err.to_string();
            assert!(err.contains(what) && err.contains("3221225472"), "{err}");
        }
    }

    /// Builds an archive with a PAX header whose `size` record overrides the next header's,
    /// hiding a long-name header inside what the header alone says is data.
    #[test]
    fn a_pax_size_record_moves_the_next_header_as_the_crate_sees_it() {
        let hidden = header("././@LongLink", tar::EntryType::GNULongName, 1 << 40);
        let mut records = Vec::new();
        let rec = "size=512\n";
        records.extend_from_slice(format!("{} {rec}", rec.len() + 3).as_bytes());
        let mut out = Vec::new();
        out.extend_from_slice(
            header("pax", tar::EntryType::XHeader, records.len() as u64).as_bytes(),
        );
        records.resize(BLOCK, 0);
        out.extend_from_slice(&records);
        // The file header says 0 bytes; PAX says 512: the long-name header is its data.
        out.extend_from_slice(header("f", tar::EntryType::Regular, 0).as_bytes());
        out.extend_from_slice(hidden.as_bytes());
        out.extend_from_slice(header("g", tar::EntryType::Regular, 0).as_bytes());
        out.extend_from_slice(&[0; 1024]);
        let mut archive = tar::Archive::new(HeaderGuard::new(&out[..]));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["f", "g"]);
        // Without the PAX header, the same block is a header: refused.
        let mut plain = Vec::new();
        plain.extend_from_slice(header("f", tar::EntryType::Regular, 0).as_bytes());
        plain.extend_from_slice(hidden.as_bytes());
        let mut archive = tar::Archive::new(HeaderGuard::new(&plain[..]));
        let errors: Vec<String> = archive
            .entries()
            .unwrap()
            .filter_map(|e| e.err().map(|e| e.to_string()))
            .collect();
        assert!(errors[0].contains("GNU long name"), "{errors:?}");
    }

    #[test]
    fn ordinary_archives_pass_unchanged() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "short", &b"hi"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut through = Vec::new();
        HeaderGuard::new(&bytes[..])
            .read_to_end(&mut through)
            .unwrap();
        assert_eq!(through, bytes);
        let mut archive = tar::Archive::new(HeaderGuard::new(&bytes[..]));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [long, "short".to_string()]);
    }
}
