//! One virtio-blk request: header, data buffers and the status byte, parsed from a descriptor
//! chain and executed against the disk file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Reader, Writer};

use crate::vstate::memory::GuestMemory;

pub const SECTOR_SIZE: u64 = 512;
const HEADER_LEN: usize = 16;
const CHUNK: usize = 128 << 10;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

pub struct Disk<'a> {
    pub file: &'a File,
    pub sectors: u64,
    pub read_only: bool,
    pub id: &'a [u8; 20],
}

/// Runs the request in `chain`; returns how many bytes were written into guest buffers.
/// A malformed chain (no header, no status byte) is answered with nothing written.
pub fn execute(disk: &Disk, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> u32 {
    let (Ok(mut reader), Ok(mut writer)) =
        (Reader::new(mem, chain.clone()), Writer::new(mem, chain))
    else {
        return 0;
    };
    let mut header = [0u8; HEADER_LEN];
    if writer.available_bytes() == 0 || reader.read_exact(&mut header).is_err() {
        return 0;
    }
    let Ok(mut status_writer) = writer.split_at(writer.available_bytes() - 1) else {
        return 0;
    };
    let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let status = match kind {
        T_IN => read(disk, sector, &mut writer),
        T_OUT if disk.read_only => S_IOERR,
        T_OUT => write(disk, sector, &mut reader),
        T_FLUSH if disk.read_only => S_OK,
        T_FLUSH => status_of(disk.file.sync_data()),
        T_GET_ID => status_of(writer.write_all(&disk.id[..writer.available_bytes().min(20)])),
        _ => S_UNSUPP,
    };
    let _ = status_writer.write_all(&[status]);
    (writer.bytes_written() + status_writer.bytes_written()) as u32
}

fn status_of<T, E>(r: Result<T, E>) -> u8 {
    if r.is_ok() {
        S_OK
    } else {
        S_IOERR
    }
}

/// The byte offset of a transfer of `len` bytes at `sector`, if it lies within the disk.
fn range(disk: &Disk, sector: u64, len: usize) -> Option<u64> {
    let len = len as u64;
    if len % SECTOR_SIZE != 0 {
        return None;
    }
    let end = sector.checked_add(len / SECTOR_SIZE)?;
    (end <= disk.sectors).then_some(sector * SECTOR_SIZE)
}

fn read(disk: &Disk, sector: u64, writer: &mut Writer) -> u8 {
    let len = writer.available_bytes();
    let Some(mut offset) = range(disk, sector, len) else {
        return S_IOERR;
    };
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        if disk.file.read_exact_at(&mut buf[..n], offset).is_err()
            || writer.write_all(&buf[..n]).is_err()
        {
            return S_IOERR;
        }
        offset += n as u64;
        left -= n;
    }
    S_OK
}

fn write(disk: &Disk, sector: u64, reader: &mut Reader) -> u8 {
    let len = reader.available_bytes();
    let Some(mut offset) = range(disk, sector, len) else {
        return S_IOERR;
    };
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        if reader.read_exact(&mut buf[..n]).is_err()
            || disk.file.write_all_at(&buf[..n], offset).is_err()
        {
            return S_IOERR;
        }
        offset += n as u64;
        left -= n;
    }
    S_OK
}
