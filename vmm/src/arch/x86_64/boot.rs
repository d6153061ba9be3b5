//! Putting a kernel into guest memory: the image (ELF `vmlinux`, by PVH when it has the note,
//! else by the 64-bit Linux protocol; bzImage as a fallback), the initramfs, the command line,
//! the memory map, and the boot structure each protocol hands the kernel.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{self, BzImage, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, ReadVolatile};

use super::layout::{
    CMDLINE, CMDLINE_MAX, EBDA, HIMEM, MMIO_GAP_END, MMIO_GAP_START, PVH_INFO, PVH_MEMMAP,
    PVH_MODLIST, ZERO_PAGE,
};
use super::regs::BootProtocol;
use crate::vstate::memory::GuestMemory;

const E820_RAM: u32 = 1;
const PVH_MAGIC: u32 = 0x336e_c578;
/// The bzImage 64-bit entry point sits 0x200 bytes into the protected-mode code.
const BZIMAGE_64BIT_ENTRY: u64 = 0x200;
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path} is neither an x86-64 ELF vmlinux nor a bzImage: {elf}; as bzImage: {bzimage}")]
    UnknownKernel {
        path: PathBuf,
        elf: loader::Error,
        bzimage: loader::Error,
    },
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel {
        path: PathBuf,
        source: loader::Error,
    },
    #[error("cannot read initramfs {path}: {source}")]
    Initrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "initramfs {path} ({size} bytes) does not fit in guest memory below the kernel's limit"
    )]
    InitrdTooLarge { path: PathBuf, size: u64 },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("cannot write the {what} into guest memory: {detail}")]
    Configure { what: &'static str, detail: String },
}

/// Where and how the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelEntry {
    pub entry: GuestAddress,
    pub protocol: BootProtocol,
    /// The bzImage's setup header, copied into the zero page for the 64-bit protocol.
    setup_header: Option<setup_header>,
}

/// Where the initramfs was put.
#[derive(Clone, Copy, Debug)]
pub struct Initrd {
    pub addr: GuestAddress,
    pub size: u64,
}

/// Loads an ELF vmlinux (PVH entry if it has the note) or, failing that, a bzImage.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<KernelEntry, BootError> {
    let open = || {
        File::open(path).map_err(|source| BootError::OpenKernel {
            path: path.into(),
            source,
        })
    };
    let mut file = open()?;
    let himem = Some(GuestAddress(HIMEM));
    match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => Ok(match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => KernelEntry {
                entry,
                protocol: BootProtocol::Pvh,
                setup_header: None,
            },
            _ => KernelEntry {
                entry: r.kernel_load,
                protocol: BootProtocol::Linux64,
                setup_header: None,
            },
        }),
        Err(loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber)) => {
            let elf = loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber);
            let mut file = open()?;
            let r = BzImage::load(mem, None, &mut file, himem).map_err(|bzimage| {
                BootError::UnknownKernel {
                    path: path.into(),
                    elf,
                    bzimage,
                }
            })?;
            Ok(KernelEntry {
                entry: r.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY),
                protocol: BootProtocol::Linux64,
                setup_header: r.setup_header,
            })
        }
        Err(source) => Err(BootError::LoadKernel {
            path: path.into(),
            source,
        }),
    }
}

/// The end of RAM below the MMIO gap.
fn low_ram_end(mem: &GuestMemory) -> u64 {
    (mem.last_addr().raw_value() + 1).min(MMIO_GAP_START)
}

/// Copies the initramfs to the top of low RAM (below 2 GiB, the 64-bit protocol's default limit).
pub fn load_initrd(mem: &GuestMemory, path: &Path, kernel_end: u64) -> Result<Initrd, BootError> {
    let err = |source| BootError::Initrd {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let top = low_ram_end(mem).min(0x8000_0000);
    let addr = top.checked_sub(size).map(|a| a & !(PAGE - 1));
    let addr = match addr {
        Some(a) if a >= kernel_end && size > 0 => a,
        _ => {
            return Err(BootError::InitrdTooLarge {
                path: path.into(),
                size,
            })
        }
    };
    let slice = mem
        .get_slice(GuestAddress(addr), size as usize)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let mut done = 0usize;
    while done < size as usize {
        let rest = slice
            .subslice(done, size as usize - done)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        match file.read_volatile(&mut rest.clone()) {
            Ok(0) => return Err(err(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => done += n,
            Err(e) => return Err(err(std::io::Error::other(e.to_string()))),
        }
    }
    Ok(Initrd {
        addr: GuestAddress(addr),
        size,
    })
}

/// Parses and writes the command line; returns its length including the NUL.
pub fn write_cmdline(mem: &GuestMemory, text: &str) -> Result<usize, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cmdline.insert_str(text).map_err(|e| {
        BootError::Cmdline(format!(
            "{e} ({} bytes, at most {})",
            text.len(),
            CMDLINE_MAX - 1
        ))
    })?;
    loader::load_cmdline(mem, GuestAddress(CMDLINE), &cmdline).map_err(|e| {
        BootError::Configure {
            what: "command line",
            detail: e.to_string(),
        }
    })?;
    Ok(text.len() + 1)
}

/// The RAM ranges as (start, length): below the EBDA, from 1 MiB to the gap, and above 4 GiB.
pub fn memory_map(mem: &GuestMemory) -> Vec<(u64, u64)> {
    let end = mem.last_addr().raw_value() + 1;
    let mut map = vec![(0, EBDA), (HIMEM, low_ram_end(mem) - HIMEM)];
    if end > MMIO_GAP_END {
        map.push((MMIO_GAP_END, end - MMIO_GAP_END));
    }
    map
}

/// Writes the boot structure of `protocol`: `hvm_start_info` for PVH, the zero page otherwise.
pub fn configure(
    mem: &GuestMemory,
    kernel: &KernelEntry,
    cmdline_len: usize,
    initrd: Option<Initrd>,
) -> Result<(), BootError> {
    match kernel.protocol {
        BootProtocol::Pvh => configure_pvh(mem, cmdline_len, initrd),
        BootProtocol::Linux64 => configure_zero_page(mem, kernel.setup_header, cmdline_len, initrd),
    }
}

fn configure_pvh(
    mem: &GuestMemory,
    _cmdline_len: usize,
    initrd: Option<Initrd>,
) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut modules = Vec::new();
    if let Some(rd) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST;
        modules.push(hvm_modlist_entry {
            paddr: rd.addr.raw_value(),
            size: rd.size,
            ..Default::default()
        });
    }
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|e| BootError::Configure {
        what: "PVH start info",
        detail: e.to_string(),
    })
}

fn configure_zero_page(
    mem: &GuestMemory,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<Initrd>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = 0xff; // "undefined" loader
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.kernel_alignment = 0x0100_0000;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(rd) = initrd {
        params.hdr.ramdisk_image = rd.addr.raw_value() as u32;
        params.hdr.ramdisk_size = rd.size as u32;
    }
    let map = memory_map(mem);
    for (slot, (addr, size)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams(&BootParams::new(&params, GuestAddress(ZERO_PAGE)), mem)
        .map_err(|e| BootError::Configure {
            what: "zero page",
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::Bytes;

    fn memory(size: u64) -> GuestMemory {
        crate::vstate::memory::create(size).unwrap()
    }

    #[test]
    fn garbage_is_named_as_not_a_kernel() {
        let mem = memory(64 << 20);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0x42; 8192]).unwrap();
        let e = load_kernel(&mem, f.path()).unwrap_err().to_string();
        assert!(
            e.contains("neither an x86-64 ELF vmlinux nor a bzImage"),
            "{e}"
        );
        let e = load_kernel(&mem, Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot open kernel /nonexistent/vmlinux"), "{e}");
    }

    /// A minimal bzImage: one setup sector after the boot sector, the "HdrS" header of boot
    /// protocol 2.15 with LOADED_HIGH, and a payload that is the protected-mode code.
    fn tiny_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512];
        img[0x1f1] = 1; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 0x01; // LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&(HIMEM as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn a_bzimage_is_loaded_for_the_64_bit_protocol() {
        let mem = memory(64 << 20);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&tiny_bzimage(&[0x90; 4096])).unwrap();
        let k = load_kernel(&mem, f.path()).unwrap();
        assert_eq!(k.protocol, BootProtocol::Linux64);
        assert_eq!(k.entry.raw_value(), HIMEM + BZIMAGE_64BIT_ENTRY);
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(HIMEM)).unwrap();
        assert_eq!(code, [0x90; 4]);
        // The zero page carries the image's setup header plus what the VMM fills in.
        configure(&mem, &k, 14, None).unwrap();
        let mut magic = [0u8; 4];
        mem.read_slice(&mut magic, GuestAddress(ZERO_PAGE + 0x202))
            .unwrap();
        assert_eq!(&magic, b"HdrS");
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let mem = memory(64 << 20);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"initramfs bytes").unwrap();
        let rd = load_initrd(&mem, f.path(), 16 << 20).unwrap();
        assert_eq!(rd.size, 15);
        assert_eq!(rd.addr.raw_value() % PAGE, 0);
        assert!(rd.addr.raw_value() + rd.size <= 64 << 20);
        let mut back = [0u8; 15];
        mem.read_slice(&mut back, rd.addr).unwrap();
        assert_eq!(&back, b"initramfs bytes");
        let big = tempfile::NamedTempFile::new().unwrap();
        big.as_file().set_len(60 << 20).unwrap();
        assert!(matches!(
            load_initrd(&mem, big.path(), 16 << 20),
            Err(BootError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn memory_map_skips_the_legacy_hole_and_the_mmio_gap() {
        assert_eq!(
            memory_map(&memory(128 << 20)),
            vec![(0, EBDA), (HIMEM, (128 << 20) - HIMEM)]
        );
        let map = memory_map(&memory(4 << 30));
        assert_eq!(map[2], (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START));
    }

    #[test]
    fn long_command_lines_are_refused() {
        let mem = memory(32 << 20);
        assert_eq!(write_cmdline(&mem, "console=ttyS0").unwrap(), 14);
        assert!(write_cmdline(&mem, &"x".repeat(CMDLINE_MAX)).is_err());
    }
}
