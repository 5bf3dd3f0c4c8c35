//! Kernel and initramfs loading, and the kernel command line.
//!
//! Three ways in, all through linux-loader:
//! * ELF `vmlinux`, 64-bit Linux boot protocol: loaded at its `p_paddr`s, entered at
//!   `e_entry` in long mode with the zero page in `rsi`.
//! * ELF `vmlinux` with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`): entered at the note's
//!   address in 32-bit protected mode with `hvm_start_info` in `ebx`. Chosen
//!   automatically when the note is there, unless the 64-bit protocol is forced.
//! * bzImage: the protected-mode part loaded at `code32_start` (1 MiB), entered at
//!   its 64-bit entry point (+0x200) in long mode, setup header copied into the zero
//!   page.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::bootparam::setup_header;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::arch::x86_64::boot_params::InitrdPlacement;
use crate::arch::x86_64::layout::{
    self, CMDLINE_MAX_SIZE, DEFAULT_INITRD_ADDR_MAX, HIGH_MEMORY_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use crate::arch::x86_64::regs::EntryMode;
use crate::config::BootProtocol;
use crate::initramfs::{Initramfs, Piece, SourceFile};

/// Errors loading the kernel or initramfs, or building the command line.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened or read.
    #[error("Cannot read kernel {path}: {source}; check the path given as the kernel")]
    Open {
        /// Kernel path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither ELF nor bzImage.
    #[error(
        "Kernel {0} is neither an ELF vmlinux nor a bzImage; pass a vmlinux or bzImage built for x86_64"
    )]
    UnknownFormat(PathBuf),
    /// linux-loader rejected the ELF.
    #[error(
        "Cannot load ELF kernel {path}: {source}; the file may be corrupt or not an x86_64 vmlinux"
    )]
    Elf {
        /// Kernel path.
        path: PathBuf,
        /// Why.
        source: linux_loader::loader::Error,
    },
    /// linux-loader rejected the bzImage.
    #[error(
        "Cannot load bzImage {path}: {source}; the file may be corrupt or too large for guest memory"
    )]
    BzImage {
        /// Kernel path.
        path: PathBuf,
        /// Why.
        source: linux_loader::loader::Error,
    },
    /// PVH was asked for but the kernel has no PVH note.
    #[error(
        "Kernel {0} has no PVH entry point (no XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y or use the 64-bit boot protocol"
    )]
    NoPvhEntry(PathBuf),
    /// PVH was asked for a bzImage.
    #[error(
        "Kernel {0} is a bzImage, which cannot be booted through PVH; pass the ELF vmlinux instead"
    )]
    PvhBzImage(PathBuf),
    /// The bzImage has no 64-bit entry point.
    #[error("bzImage {0} has no 64-bit entry point (XLF_KERNEL_64 unset); use a 64-bit kernel")]
    NotKernel64(PathBuf),
    /// Not enough memory below the MMIO gap for the initramfs.
    #[error(
        "The initramfs ({size} bytes) does not fit between the kernel end {kernel_end:#x} and {limit:#x}; give the VM more memory"
    )]
    InitrdTooLarge {
        /// Initramfs size.
        size: u64,
        /// First free byte after the kernel.
        kernel_end: u64,
        /// Highest end address allowed.
        limit: u64,
    },
    /// Writing the initramfs into guest memory failed.
    #[error(
        "Cannot copy the initramfs into guest memory at {addr:#x}: {source}; give the VM more memory"
    )]
    InitrdWrite {
        /// Where.
        addr: u64,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
    /// A file of the initramfs (the guest init, a cached root archive) could not be read
    /// into guest memory.
    #[error("Cannot read {path} into the initramfs: {source}; check that it is not being changed")]
    InitrdRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The command line does not fit or has invalid characters.
    #[error("Invalid kernel command line: {0}; shorten it (at most {max} bytes) and use printable ASCII", max = CMDLINE_MAX_SIZE - 1)]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line failed.
    #[error("Cannot write the kernel command line into guest memory: {0}; give the VM more memory")]
    CmdlineWrite(linux_loader::loader::Error),
}

/// Kernel image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF vmlinux.
    Elf,
    /// bzImage.
    BzImage,
}

/// A kernel in guest memory, ready to enter.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Image format.
    pub format: KernelFormat,
    /// How to enter it.
    pub entry: EntryMode,
    /// The bzImage setup header, to copy into the zero page.
    pub setup_header: Option<setup_header>,
    /// First byte past everything the kernel occupies (including, for a bzImage, the
    /// room it decompresses into).
    pub kernel_end: u64,
    /// Highest address the initramfs may end at.
    pub initrd_addr_max: u64,
}

/// Opens `kernel` and tells its format: what the CLIs check before building anything, so that
/// a path that cannot be read or is no kernel is the user's one-line error.
pub fn check_kernel(kernel: &Path) -> Result<KernelFormat, crate::VmmError> {
    let mut file = File::open(kernel).map_err(|source| crate::config::ConfigError::Kernel {
        path: kernel.to_owned(),
        source,
    })?;
    Ok(detect_format(&mut file, kernel)?)
}

/// Looks at the first bytes of `file` to tell ELF from bzImage.
pub fn detect_format(file: &mut File, path: &Path) -> Result<KernelFormat, LoaderError> {
    let open = |source| LoaderError::Open {
        path: path.to_owned(),
        source,
    };
    let mut head = [0u8; 0x206];
    file.seek(SeekFrom::Start(0)).map_err(open)?;
    let n = read_up_to(file, &mut head).map_err(open)?;
    if n >= 4 && &head[..4] == b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(LoaderError::UnknownFormat(path.to_owned()))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// XLF_KERNEL_64: the kernel has the legacy 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// Where a relocatable kernel decompresses to by default (CONFIG_PHYSICAL_START).
const DEFAULT_PHYSICAL_START: u64 = 0x100_0000;

/// The guest-physical range an ELF kernel's `PT_LOAD` segments occupy (bss included),
/// from its program headers; `None` for anything else or anything odd (the loader reports
/// real errors). Lets guest RAM be faulted in ahead of the copy ([`crate::vstate::memory::prefault`]).
pub fn elf_load_range(path: &Path) -> Option<std::ops::Range<u64>> {
    const PT_LOAD: u32 = 1;
    let mut f = File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    // ELF magic, 64-bit, little-endian.
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(&eh, 0x20), u16_at(&eh, 0x36), u16_at(&eh, 0x38));
    if usize::from(phentsize) < 56 || phnum == 0 || phnum > 64 {
        return None;
    }
    let mut ph = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for h in ph.chunks(usize::from(phentsize)) {
        if u32::from_le_bytes(h[..4].try_into().unwrap()) == PT_LOAD {
            let (paddr, memsz) = (u64_at(h, 0x18), u64_at(h, 0x28));
            lo = lo.min(paddr);
            hi = hi.max(paddr.checked_add(memsz)?);
        }
    }
    (lo < hi).then_some(lo..hi)
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    protocol: BootProtocol,
) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(|source| LoaderError::Open {
        path: path.to_owned(),
        source,
    })?;
    let format = detect_format(&mut file, path)?;
    match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START)))
                .map_err(|source| LoaderError::Elf {
                    path: path.to_owned(),
                    source,
                })?;
            let pvh = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(a) => Some(a.raw_value()),
                _ => None,
            };
            let entry = match (protocol, pvh) {
                (BootProtocol::Pvh, None) => return Err(LoaderError::NoPvhEntry(path.to_owned())),
                (BootProtocol::Pvh | BootProtocol::Auto, Some(entry)) => EntryMode::Pvh {
                    entry,
                    start_info: PVH_INFO_START,
                },
                (BootProtocol::Linux64 | BootProtocol::Auto, _) => EntryMode::Long64 {
                    entry: r.kernel_load.raw_value(),
                    zero_page: ZERO_PAGE_START,
                },
            };
            Ok(LoadedKernel {
                format,
                entry,
                setup_header: None,
                kernel_end: r.kernel_end,
                initrd_addr_max: DEFAULT_INITRD_ADDR_MAX,
            })
        }
        KernelFormat::BzImage => {
            if protocol == BootProtocol::Pvh {
                return Err(LoaderError::PvhBzImage(path.to_owned()));
            }
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START)))
                .map_err(|source| LoaderError::BzImage {
                    path: path.to_owned(),
                    source,
                })?;
            // BzImage::load always returns the header it validated.
            let hdr = r.setup_header.unwrap_or_default();
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoaderError::NotKernel64(path.to_owned()));
            }
            let decompressed_end =
                DEFAULT_PHYSICAL_START.max(hdr.pref_address) + u64::from(hdr.init_size);
            let addr_max = match hdr.initrd_addr_max {
                0 => DEFAULT_INITRD_ADDR_MAX,
                m => u64::from(m),
            };
            Ok(LoadedKernel {
                format,
                entry: EntryMode::Long64 {
                    entry: r.kernel_load.raw_value() + 0x200,
                    zero_page: ZERO_PAGE_START,
                },
                setup_header: Some(hdr),
                kernel_end: r.kernel_end.max(decompressed_end),
                initrd_addr_max: addr_max,
            })
        }
    }
}

/// Where an initramfs of `size` bytes goes: as high as possible below the MMIO gap and
/// `addr_max`, page aligned, above `kernel_end`.
pub fn initrd_placement(
    size: u64,
    kernel_end: u64,
    addr_max: u64,
    mem_size: u64,
) -> Result<InitrdPlacement, LoaderError> {
    let limit = layout::low_memory_end(mem_size).min(addr_max.saturating_add(1));
    let too_large = LoaderError::InitrdTooLarge {
        size,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or(too_large)? & !0xfff;
    let kernel_end_aligned = (kernel_end + 0xfff) & !0xfff;
    if start < kernel_end_aligned {
        return Err(LoaderError::InitrdTooLarge {
            size,
            kernel_end,
            limit,
        });
    }
    Ok(InitrdPlacement { addr: start, size })
}

/// Writes the initramfs into guest memory: what was built in memory is copied, the
/// files it names are read straight into guest RAM.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    image: &mut Initramfs,
    kernel: &LoadedKernel,
    mem_size: u64,
) -> Result<InitrdPlacement, LoaderError> {
    let p = initrd_placement(
        image.len(),
        kernel.kernel_end,
        kernel.initrd_addr_max,
        mem_size,
    )?;
    let mut addr = p.addr;
    for piece in image.pieces_mut() {
        let written = match piece {
            Piece::Bytes(b) => mem
                .write_slice(b, GuestAddress(addr))
                .map(|()| b.len() as u64),
            Piece::File(SourceFile { path, file, len }) => {
                let n = usize::try_from(*len).map_err(|_| LoaderError::InitrdRead {
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "too large"),
                })?;
                let read = |source| LoaderError::InitrdRead {
                    path: path.clone(),
                    source,
                };
                match mem.read_exact_volatile_from(GuestAddress(addr), file, n) {
                    Err(GuestMemoryError::IOError(e)) => return Err(read(e)),
                    Err(GuestMemoryError::PartialBuffer { .. }) => {
                        return Err(read(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "it is shorter than when the VM was prepared",
                        )));
                    }
                    r => r.map(|()| *len),
                }
            }
        };
        addr += written.map_err(|source| LoaderError::InitrdWrite { addr, source })?;
    }
    Ok(p)
}

/// Parameters every isol guest gets: serial console on ttyS0, reboot through the i8042
/// (which the VMM turns into "VM exited"), reboot at once on panic, no PCI or modules,
/// two UARTs (ttyS0 console, ttyS1 the exit-port stream), an i8042 driver that does not probe for a mouse or a multiplexer.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off nomodule \
8250.nr_uarts=2 i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp";
/// Added unless the console was asked for.
pub const QUIET_CMDLINE: &str = "quiet loglevel=0";
/// Added when the console was asked for: early boot messages too.
pub const CONSOLE_CMDLINE: &str = "earlyprintk=ttyS0";

/// Builds the kernel command line.
pub fn build_cmdline(console: bool, extra: &[String]) -> Result<Cmdline, LoaderError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    c.insert_str(BASE_CMDLINE).map_err(LoaderError::Cmdline)?;
    c.insert_str(if console {
        CONSOLE_CMDLINE
    } else {
        QUIET_CMDLINE
    })
    .map_err(LoaderError::Cmdline)?;
    for e in extra {
        c.insert_str(e).map_err(LoaderError::Cmdline)?;
    }
    Ok(c)
}

/// Writes the command line at [`layout::CMDLINE_START`]; returns its length without NUL.
pub fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, LoaderError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), cmdline)
        .map_err(LoaderError::CmdlineWrite)?;
    Ok(cmdline
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .as_bytes()
        .len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_images::{tiny_bzimage, tiny_elf};
    use std::io::Write;

    const MIB: u64 = 1 << 20;

    pub(crate) fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        t
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (64 * MIB) as usize)]).unwrap()
    }

    #[test]
    fn the_load_range_is_what_the_elf_loader_fills() {
        let k = write_temp(&tiny_elf(&[0xf4; 100], 0x100_0000, true));
        let m = mem();
        let l = load_kernel(&m, k.path(), BootProtocol::Auto).unwrap();
        // The note segment is not PT_LOAD and does not count.
        assert_eq!(elf_load_range(k.path()), Some(0x100_0000..l.kernel_end));
        assert_eq!(l.kernel_end, 0x100_0000 + 100);
        // Not an ELF, a truncated one, a missing file.
        assert_eq!(elf_load_range(write_temp(b"MZ not elf").path()), None);
        let elf = tiny_elf(&[0xf4], 0x100_0000, false);
        assert_eq!(elf_load_range(write_temp(&elf[..70]).path()), None);
        assert_eq!(elf_load_range(Path::new("/nonexistent/vmlinux")), None);
    }

    #[test]
    fn elf_64bit_entry() {
        let k = write_temp(&tiny_elf(&[0xf4], 0x100_0000, false));
        let m = mem();
        let l = load_kernel(&m, k.path(), BootProtocol::Auto).unwrap();
        assert_eq!(l.format, KernelFormat::Elf);
        assert_eq!(
            l.entry,
            EntryMode::Long64 {
                entry: 0x100_0000,
                zero_page: ZERO_PAGE_START
            }
        );
        let b: u8 = m.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(b, 0xf4);
        assert!(matches!(
            load_kernel(&m, k.path(), BootProtocol::Pvh),
            Err(LoaderError::NoPvhEntry(_))
        ));
    }

    #[test]
    fn elf_pvh_note_is_used_unless_64bit_is_forced() {
        let k = write_temp(&tiny_elf(&[0xf4], 0x100_0000, true));
        let m = mem();
        let l = load_kernel(&m, k.path(), BootProtocol::Auto).unwrap();
        assert_eq!(
            l.entry,
            EntryMode::Pvh {
                entry: 0x100_0000,
                start_info: PVH_INFO_START
            }
        );
        let l = load_kernel(&m, k.path(), BootProtocol::Linux64).unwrap();
        assert!(matches!(l.entry, EntryMode::Long64 { .. }));
    }

    #[test]
    fn bzimage_64bit_entry() {
        let k = write_temp(&tiny_bzimage(&[0xf4], 1));
        let m = mem();
        let l = load_kernel(&m, k.path(), BootProtocol::Auto).unwrap();
        assert_eq!(l.format, KernelFormat::BzImage);
        assert_eq!(
            l.entry,
            EntryMode::Long64 {
                entry: 0x10_0200,
                zero_page: ZERO_PAGE_START
            }
        );
        let b: u8 = m.read_obj(GuestAddress(0x10_0200)).unwrap();
        assert_eq!(b, 0xf4);
        let version = l.setup_header.unwrap().version;
        assert_eq!(version, 0x20f);
        assert!(l.kernel_end >= 0x100_0000 + 0x10_0000);
        assert!(matches!(
            load_kernel(&m, k.path(), BootProtocol::Pvh),
            Err(LoaderError::PvhBzImage(_))
        ));
        let k32 = write_temp(&tiny_bzimage(&[0xf4], 0));
        assert!(matches!(
            load_kernel(&m, k32.path(), BootProtocol::Auto),
            Err(LoaderError::NotKernel64(_))
        ));
    }

    #[test]
    fn garbage_and_missing_kernels_are_rejected() {
        let m = mem();
        let k = write_temp(b"not a kernel at all");
        let e = load_kernel(&m, k.path(), BootProtocol::Auto).unwrap_err();
        assert!(matches!(e, LoaderError::UnknownFormat(_)), "{e}");
        let mut bad = tiny_elf(&[0xf4], 0x100_0000, false);
        bad[0x36] = 3; // e_phentsize
        let k = write_temp(&bad);
        assert!(matches!(
            load_kernel(&m, k.path(), BootProtocol::Auto),
            Err(LoaderError::Elf { .. })
        ));
        let e = load_kernel(&m, Path::new("/nonexistent/vmlinux"), BootProtocol::Auto).unwrap_err();
        assert!(matches!(e, LoaderError::Open { .. }));
        assert!(e.to_string().starts_with("Cannot read kernel"));
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let p = initrd_placement(10_000, 0x200_0000, DEFAULT_INITRD_ADDR_MAX, 256 * MIB).unwrap();
        assert_eq!(p.addr % 4096, 0);
        assert!(p.addr + p.size <= 256 * MIB);
        assert!(256 * MIB - (p.addr + p.size) < 4096);
        // Capped by initrd_addr_max on a big VM.
        let p = initrd_placement(4096, 0x200_0000, DEFAULT_INITRD_ADDR_MAX, 2048 * MIB).unwrap();
        assert!(p.addr + p.size <= DEFAULT_INITRD_ADDR_MAX + 1);
        // Does not fit above the kernel.
        assert!(matches!(
            initrd_placement(40 * MIB, 0x200_0000, DEFAULT_INITRD_ADDR_MAX, 64 * MIB),
            Err(LoaderError::InitrdTooLarge { .. })
        ));
        assert!(initrd_placement(u64::MAX, 0, u64::MAX, 64 * MIB).is_err());
    }

    #[test]
    fn initrd_in_guest_memory_is_the_archive_byte_for_byte() {
        use crate::config::{Rootfs, RunSpec};
        use crate::initramfs::{build_initramfs, plan_initramfs};
        // A cached root archive (an odd length, so padding follows it) and a guest
        // init: both are files, read straight into guest memory.
        let root = write_temp(&[7u8; 5001]);
        let init = write_temp(&[9u8; 70_000]);
        let rootfs = Rootfs::Cpio(root.path().to_owned());
        let spec = RunSpec {
            args: vec!["true".into()],
            ..Default::default()
        };
        let want = build_initramfs(&rootfs, Some(init.path()), &spec)
            .unwrap()
            .unwrap();
        let mut plan = plan_initramfs(&rootfs, Some(init.path()), &spec)
            .unwrap()
            .unwrap();
        assert_eq!(plan.len(), want.len() as u64);
        let m = mem();
        let k = LoadedKernel {
            format: KernelFormat::Elf,
            entry: EntryMode::Long64 {
                entry: 0x100_0000,
                zero_page: 0x7000,
            },
            setup_header: None,
            kernel_end: 0x200_0000,
            initrd_addr_max: DEFAULT_INITRD_ADDR_MAX,
        };
        let p = load_initrd(&m, &mut plan, &k, 64 * MIB).unwrap();
        assert_eq!(p.size, want.len() as u64);
        let mut got = vec![0u8; want.len()];
        m.read_slice(&mut got, GuestAddress(p.addr)).unwrap();
        assert!(
            got == want,
            "the initramfs in guest memory differs from the archive"
        );

        // A file that shrank after it was planned is an error naming it, not a short
        // archive.
        let init = write_temp(&[9u8; 70_000]);
        let mut plan = plan_initramfs(&rootfs, Some(init.path()), &spec)
            .unwrap()
            .unwrap();
        init.as_file().set_len(100).unwrap();
        let e = load_initrd(&m, &mut plan, &k, 64 * MIB).unwrap_err();
        assert!(
            e.to_string().contains(&init.path().display().to_string()),
            "{e}"
        );
    }
    #[test]
    fn cmdline_quiet_or_console() {
        let q = build_cmdline(false, &[]).unwrap().as_cstring().unwrap();
        let q = q.to_str().unwrap();
        assert!(q.starts_with("console=ttyS0 reboot=k panic=-1"));
        assert!(q.contains("quiet loglevel=0") && !q.contains("earlyprintk"));
        let c = build_cmdline(true, &["rdinit=/x".into()])
            .unwrap()
            .as_cstring()
            .unwrap();
        let c = c.to_str().unwrap();
        assert!(!c.contains("quiet") && c.contains("earlyprintk=ttyS0"));
        assert!(c.ends_with(" rdinit=/x"));
        let long = vec!["x".repeat(CMDLINE_MAX_SIZE)];
        assert!(matches!(
            build_cmdline(false, &long),
            Err(LoaderError::Cmdline(_))
        ));
    }

    #[test]
    fn cmdline_in_memory() {
        let m = mem();
        let c = build_cmdline(false, &[]).unwrap();
        let n = load_cmdline(&m, &c).unwrap();
        let mut buf = vec![0u8; n + 1];
        m.read_slice(&mut buf, GuestAddress(layout::CMDLINE_START))
            .unwrap();
        assert_eq!(buf[n], 0);
        assert!(buf.starts_with(b"console=ttyS0"));
    }
}
