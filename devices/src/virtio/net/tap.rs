//! A tap interface: `/dev/net/tun` opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte
//! virtio-net header in front of every frame (`TUNSETVNETHDRSZ`), non-blocking.
//!
//! The interface lives in the network namespace of whoever called [`Tap::create`] and as long
//! as a descriptor of it is open (it is not made persistent): isol creates it on the host,
//! attaches it to the bridge, and hands the descriptor to the VMM, whose exit — however it
//! comes, SIGKILL included — removes the interface with the last descriptor.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
pub const TUNSETIFF: u64 = 0x4004_54ca;
/// `TUNGETIFF`: `_IOR('T', 210, unsigned int)`.
pub const TUNGETIFF: u64 = 0x8004_54d2;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: u64 = 0x4004_54d0;
/// `TUNSETVNETHDRSZ`: `_IOW('T', 216, int)`.
pub const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;

/// `IFF_TAP`: an Ethernet device.
pub const IFF_TAP: i16 = 0x0002;
/// `IFF_NO_PI`: no packet-information prefix.
pub const IFF_NO_PI: i16 = 0x1000;
/// `IFF_VNET_HDR`: a virtio-net header before each frame.
pub const IFF_VNET_HDR: i16 = 0x4000;

/// `TUN_F_CSUM`: frames to us may carry a partial checksum.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`: frames to us may be TCPv4 segments of up to 64 KiB.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`: the same for TCPv6.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_UFO`: the same for UDP fragmentation.
pub const TUN_F_UFO: u32 = 0x10;

/// The virtio-net header of virtio 1.x (`struct virtio_net_hdr_v1`: flags, gso_type,
/// hdr_len, gso_size, csum_start, csum_offset, num_buffers).
pub const VNET_HDR_LEN: usize = 12;

/// The tun/tap control device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// Creates `/dev/net/tun` (character device 10:200, mode 0600), as udev's static nodes do.
fn make_tun_node() -> io::Result<()> {
    std::fs::create_dir_all("/dev/net")?;
    let path = std::ffi::CString::new(TUN_PATH).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path alive for the call; integer mode and device number.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_NAME: usize = 15;

/// `struct ifreq` as the tun ioctls use it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: i16) -> Self {
        let mut r = IfReq {
            name: [0; 16],
            flags,
            _pad: [0; 22],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }
}

/// What can go wrong opening a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long, or has characters an interface name cannot have.
    #[error(
        "Tap name {0:?} is not a valid interface name; use 1 to 15 ASCII letters, digits, '-' or '_'"
    )]
    Name(String),
    /// `/dev/net/tun` cannot be opened.
    #[error(
        "Cannot open /dev/net/tun: {0}; load the tun module (`modprobe tun`) and run isol as root"
    )]
    Open(io::Error),
    /// An ioctl on the tap failed.
    #[error(
        "{what} on tap {name} failed: {source}; check that the host kernel has tun with vnet headers"
    )]
    Ioctl {
        /// The request.
        what: &'static str,
        /// The interface.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates (or attaches to, if it exists and is ours) the tap `name`, with a 12-byte
    /// vnet header and no offloads yet; non-blocking and close-on-exec.
    pub fn create(name: &str) -> Result<Tap, TapError> {
        let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(valid) {
            return Err(TapError::Name(name.to_owned()));
        }
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(TUN_PATH)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // devtmpfs has the node only once the tun module is loaded (a host without
                // udev's static nodes, the lab): the node's first open loads the module.
                make_tun_node().map_err(TapError::Open)?;
                open()
            }
            other => other,
        }
        .map_err(TapError::Open)?;
        let mut req = IfReq::new(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (40 bytes,
        // the name NUL-terminated: at most 15 bytes copied into 16), alive for the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            return Err(TapError::Ioctl {
                what: "TUNSETIFF",
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// Takes over an open tap descriptor (inherited from isol); reads its name back and sets
    /// the header length and non-blocking mode again, so any tap fd works.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let mut req = IfReq::new("", 0);
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, alive for the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF as _, &mut req) };
        let raw = fd.as_raw_fd();
        let name_of = || {
            let end = req.name.iter().position(|b| *b == 0).unwrap_or(16);
            String::from_utf8_lossy(&req.name[..end]).into_owned()
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                what: "TUNGETIFF",
                name: format!("fd {raw}"),
                source: io::Error::last_os_error(),
            });
        }
        if req.flags & (IFF_TAP | IFF_VNET_HDR) != IFF_TAP | IFF_VNET_HDR {
            return Err(TapError::Ioctl {
                what: "TUNGETIFF (a tap with IFF_VNET_HDR)",
                name: name_of(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        // SAFETY: F_GETFL on a descriptor we own; integer arguments only.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above, F_SETFL.
        unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) };
        let tap = Tap {
            file: File::from(fd),
            name: name_of(),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        let len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, alive for the call.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETVNETHDRSZ as _, &len) } < 0 {
            return Err(TapError::Ioctl {
                what: "TUNSETVNETHDRSZ",
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Which offloads frames *to us* may use (`TUN_F_*`): what the guest driver accepted.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is touched.
        if unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its vnet header) into `iovs`; `WouldBlock` when none waits.
    ///
    /// # Safety
    /// Each iovec must describe memory writable for its whole length for the call.
    pub unsafe fn readv(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller guarantees the buffers; the count is the slice's.
        let n = unsafe { libc::readv(self.file.as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (with its vnet header) gathered from `iovs`.
    ///
    /// # Safety
    /// Each iovec must describe memory readable for its whole length for the call.
    pub unsafe fn writev(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: as for readv.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The descriptor, for the caller to hand over (e.g. across exec).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }

    /// Wraps a raw descriptor the caller owns.
    ///
    /// # Safety
    /// `fd` must be open and owned by nobody else.
    pub unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
        // SAFETY: the caller's promise.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Tap {
    /// A stand-in for a tap, for the fuzz harnesses and tests: any descriptor that keeps frame
    /// boundaries (one end of a `SOCK_DGRAM` socketpair), non-blocking. The tap ioctls fail on
    /// it (`set_offload`: the device carries on without offloads, as on a host without them).
    pub fn fake(fd: OwnedFd) -> Tap {
        Tap {
            file: File::from(fd),
            name: "fake".to_owned(),
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernel_s() {
        assert_eq!(TUNSETIFF, libc::TUNSETIFF);
        assert_eq!(TUNGETIFF, libc::TUNGETIFF);
        assert_eq!(TUNSETOFFLOAD, libc::TUNSETOFFLOAD);
        assert_eq!(TUNSETVNETHDRSZ, libc::TUNSETVNETHDRSZ);
        assert_eq!(IFF_VNET_HDR as i32, libc::IFF_VNET_HDR);
        assert_eq!(TUN_F_UFO, libc::TUN_F_UFO);
    }

    #[test]
    fn names_are_checked_before_anything_is_opened() {
        for bad in ["", "a-very-long-name-x", "a b", "x/y", "é"] {
            let e = Tap::create(bad).unwrap_err();
            assert!(matches!(e, TapError::Name(_)), "{bad}: {e}");
            assert!(e.to_string().starts_with("Tap name"), "{e}");
        }
    }

    #[test]
    fn a_descriptor_that_is_no_tap_is_refused() {
        let f = File::open("/dev/null").unwrap();
        let e = Tap::from_fd(OwnedFd::from(f)).unwrap_err();
        assert!(
            matches!(
                e,
                TapError::Ioctl {
                    what: "TUNGETIFF",
                    ..
                }
            ),
            "{e}"
        );
    }

    /// On a host with /dev/net/tun and root (the lab, the CI host): a real tap, its name read
    /// back through the descriptor, offloads set, nothing to read.
    #[test]
    fn a_real_tap_round_trips_its_descriptor() {
        if !nix_root() || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let name = format!("vnettap{}", std::process::id() % 100_000);
        let tap = match Tap::create(&name) {
            Ok(t) => t,
            Err(TapError::Open(e)) => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .unwrap();
        let tap = Tap::from_fd(tap.into_fd()).unwrap();
        assert_eq!(tap.name(), name);
        let mut buf = [0u8; 2048];
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        // SAFETY: `buf` is writable and outlives the call.
        let r = unsafe { tap.readv(&iov) };
        assert!(r.is_err(), "a fresh tap that is down has nothing to read");
        drop(tap);
        let gone = std::fs::metadata(format!("/sys/class/net/{name}")).is_err();
        assert!(gone, "a non-persistent tap goes with its last descriptor");
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no failure mode and touches no memory.
        unsafe { libc::geteuid() == 0 }
    }
}
