//! Builds the port-I/O and MMIO buses with the legacy devices, and wires the UART's
//! interrupt to KVM.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use isol_devices::legacy::{
    CMOS_PORT_BASE, CMOS_PORT_LEN, Cmos, EXIT_PORT_BASE, EXIT_PORT_LEN, EXIT_UART_IRQ,
    EXIT_UART_PORT_BASE, ExitChannelWriter, ExitPort, I8042, I8042_PORT_BASE, I8042_PORT_LEN,
    SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_LEN, SerialDevice, Sink,
};
use isol_devices::{Bus, BusError};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::vstate::pause::Pauser;
use crate::vstate::vm::{Vm, VmError};

// virtio.
use std::sync::atomic::Ordering;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use isol_devices::virtio::block::{Block, BlockStats};
use isol_devices::virtio::console::{Console, FdWriter, PortConfig, PortIo};
use isol_devices::virtio::fs::VhostUserFs;
use isol_devices::virtio::mmio::{BATCHABLE_WRITES, MMIO_WINDOW, reg as mmio_reg};
use isol_devices::virtio::net::{Net, NetStats, Tap};
use isol_devices::virtio::subscriber::VirtioSubscriber;
use isol_devices::virtio::{BackendLost, MmioTransport, VirtioDevice};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;

use crate::config::{GuestStdio, Rootfs, VmConfig};

/// Errors building the devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd for {what}: {source}; raise the open-file limit")]
    EventFd {
        /// What for.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A bus rejected a device.
    #[error("Cannot place a device on the bus: {0}")]
    Bus(#[from] BusError),
    /// The UART's irqfd could not be registered.
    #[error("Cannot wire the serial interrupt: {0}")]
    Irq(#[from] VmError),
    /// A virtio device could not be created.
    #[error("Cannot create the virtio {what}: {msg}")]
    Virtio {
        /// Which device.
        what: &'static str,
        /// Why (already says what to do).
        msg: String,
    },
    /// Too many virtio devices for the IOAPIC's pins.
    #[error("Too many virtio devices ({0}); at most {MAX_VIRTIO_DEVICES} fit")]
    TooManyVirtio(usize),
    /// The device thread could not be started.
    #[error("Cannot start the virtio device thread: {0}; raise the thread limit")]
    Thread(std::io::Error),
}

/// The buses plus handles on the devices the event loop talks to.
#[derive(Debug)]
pub struct Devices {
    /// Port-I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus (empty until virtio devices arrive).
    pub mmio: Arc<Bus>,
    /// COM1, for host input.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The exit port, read when the VM ends.
    pub exit_port: Arc<Mutex<ExitPort>>,
    /// The i8042, for its reset count.
    pub i8042: Arc<Mutex<I8042>>,
    /// Signalled when the guest pulses the reset line.
    pub reset_evt: EventFd,
    /// Raised with the reset line; vCPUs stop entering the guest once it is set.
    pub stop_flag: Arc<AtomicBool>,
}

fn evt(what: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|source| DeviceError::EventFd { what, source })
}

fn dup(e: &EventFd, what: &'static str) -> Result<EventFd, DeviceError> {
    e.try_clone()
        .map_err(|source| DeviceError::EventFd { what, source })
}

/// Creates the legacy devices and puts them on a fresh port-I/O bus. With `vm`, the
/// UART's interrupt eventfd is registered as an irqfd on GSI 4.
pub fn create_devices(
    vm: Option<&Vm>,
    serial_out: Box<dyn Write + Send>,
) -> Result<Devices, DeviceError> {
    let mut pio = Bus::new();

    let serial_irq = evt("the serial interrupt")?;
    if let Some(vm) = vm {
        vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
    }
    let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, serial_out)));
    pio.insert(serial.clone(), SERIAL_PORT_BASE, SERIAL_PORT_LEN, "serial")?;

    let reset_evt = evt("the i8042 reset line")?;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let i8042 = Arc::new(Mutex::new(
        I8042::new(dup(&reset_evt, "the i8042 reset line")?).with_stop_flag(stop_flag.clone()),
    ));
    pio.insert(i8042.clone(), I8042_PORT_BASE, I8042_PORT_LEN, "i8042")?;

    pio.insert(
        Arc::new(Mutex::new(Cmos::new())),
        CMOS_PORT_BASE,
        CMOS_PORT_LEN,
        "cmos",
    )?;

    let exit_port = Arc::new(Mutex::new(
        ExitPort::new().with_power_off(dup(&reset_evt, "the power-off line")?, stop_flag.clone()),
    ));
    pio.insert(
        exit_port.clone(),
        EXIT_PORT_BASE,
        EXIT_PORT_LEN,
        "isol-exit",
    )?;

    // The same protocol as a byte stream on COM2, for guests that cannot do port I/O
    // from userspace (kernels without CONFIG_X86_IOPL_IOPERM).
    let exit_uart_irq = evt("the exit UART interrupt")?;
    if let Some(vm) = vm {
        vm.register_irqfd(&exit_uart_irq, EXIT_UART_IRQ)?;
    }
    let exit_uart = Arc::new(Mutex::new(SerialDevice::new(
        exit_uart_irq,
        Box::new(ExitChannelWriter::new(exit_port.clone())),
    )));
    pio.insert(
        exit_uart,
        EXIT_UART_PORT_BASE,
        SERIAL_PORT_LEN,
        "isol-exit-uart",
    )?;

    // POST codes and DMA page registers (0x80-0x8f), and the alternative I/O delay
    // port 0xed: written for timing, never meaningfully read.
    pio.insert(Arc::new(Mutex::new(Sink::new(0))), 0x80, 0x10, "post")?;
    pio.insert(Arc::new(Mutex::new(Sink::new(0))), 0xed, 1, "io-delay")?;

    Ok(Devices {
        pio: Arc::new(pio),
        mmio: Arc::new(Bus::new()),
        serial,
        exit_port,
        i8042,
        reset_evt,
        stop_flag,
    })
}

// ---- virtio devices (docs/devices.md) ----------------------------------------------

/// First virtio-mmio window: the bottom of the 32-bit MMIO gap; one 4 KiB window each.
pub const VIRTIO_MMIO_BASE: u64 = crate::arch::x86_64::layout::MMIO_START;
/// GSI of the first virtio device; the next ones follow (IOAPIC pins 5..23).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// IOAPIC pins left for virtio devices.
pub const MAX_VIRTIO_DEVICES: usize = 24 - VIRTIO_FIRST_GSI as usize;
/// Names of the console ports carrying the workload's stdio, in port order.
pub const STDIO_PORTS: [&str; 3] = ["isol.stdin", "isol.stdout", "isol.stderr"];
/// Name of the console port carrying terminal control messages (window size) with a tty.
pub const TTY_PORT: &str = "isol.tty";

/// An extra disk for the guest: a raw image file or a block device, attached as
/// virtio-blk after the root disk.
#[derive(Debug, Clone, Default)]
pub struct DiskSpec {
    /// The host file or block device.
    pub path: std::path::PathBuf,
    /// Offer it read-only (`VIRTIO_BLK_F_RO`, opened `O_RDONLY`).
    pub read_only: bool,
    /// Request counters, shared with the caller.
    pub stats: Arc<BlockStats>,
    /// Where the guest init creates a block device node for the disk (`-v` on kvm);
    /// `None`: only `/dev/vdX`.
    pub guest_path: Option<std::ffi::OsString>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A host directory shared with the guest: a virtio-fs device whose queues a vhost-user
/// backend (virtiofsd) serves, on a socket connected to it. The device is the tag and the
/// socket; the guest init mounts it when `guest_path` is set. Any VM with one gets its RAM
/// from a memfd, which the backend maps.
#[derive(Debug, Clone)]
pub struct FsShare {
    /// The connected vhost-user socket, borrowed: it must stay open while the VM is built
    /// (the device works on a duplicate).
    pub socket: std::os::fd::RawFd,
    /// The tag the guest mounts it by (1 to 36 bytes).
    pub tag: String,
    /// Where the guest init mounts it (`mount -t virtiofs TAG PATH`); `None`: not mounted.
    pub guest_path: Option<std::ffi::OsString>,
    /// Mount it read-only in the guest (the backend should refuse writes as well).
    pub read_only: bool,
}

/// `isol.fs=HEXTAG:MODE:HEXPATH`: tells init to mount the virtio-fs device TAG at PATH,
/// `ro` or `rw`.
fn fs_mount_arg(tag: &str, read_only: bool, path: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mode = if read_only { "ro" } else { "rw" };
    format!(
        "isol.fs={}:{mode}:{}",
        hex(tag.as_bytes()),
        hex(path.as_bytes())
    )
}

/// `isol.disk=INDEX:HEXPATH`: tells init to create a node for extra disk INDEX (whose
/// GET_ID serial is `isol-diskINDEX`) at the hex-encoded path (any bytes survive the
/// command line).
fn disk_node_arg(index: usize, path: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!("isol.disk={index}:{}", hex(path.as_bytes()))
}

/// A pseudo-terminal for the workload: the guest init allocates a pty, makes it the
/// workload's controlling terminal and relays it to the stdin/stdout ports.
#[derive(Debug, Clone, Default)]
pub struct GuestTty {
    /// Window sizes, as lines `"ROWS COLS\n"`, read by the VMM and passed to the guest
    /// on the `isol.tty` port (the first one is the initial size). `None`: the guest's
    /// default size, never changed.
    pub control: Option<Arc<std::fs::File>>,
}

/// A network card for the guest: virtio-net on an open tap (`IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`, made by the caller, e.g. on the host side of isol's bridge), its MAC
/// address, and the address the guest init gives `eth0`.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The tap's descriptor, borrowed: it must stay open while the VM is built (the device
    /// works on a duplicate).
    pub tap: std::os::fd::RawFd,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// `eth0`'s configuration (`isol.net=` on the command line); `None`: the guest
    /// init leaves the card down.
    pub ip: Option<GuestIp>,
    /// Traffic counters, shared with the caller.
    pub stats: Arc<NetStats>,
    /// virtio feature bits the card does not offer (`ISOL_NET_WITHOUT`, for measuring
    /// what a feature brings with the same build); 0 normally.
    pub masked_features: u64,
}

/// IPv4 configuration of the guest's `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestIp {
    /// The guest's address.
    pub address: std::net::Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: std::net::Ipv4Addr,
}

impl GuestIp {
    /// `isol.net=ADDRESS/PREFIX,GATEWAY`, what the guest init reads.
    pub fn cmdline_arg(&self) -> String {
        format!("isol.net={}/{},{}", self.address, self.prefix, self.gateway)
    }
}

/// The virtio devices of a VM and the thread that serves them.
pub struct VirtioDevices {
    transports: Vec<(&'static str, Arc<Mutex<MmioTransport>>)>,
    cmdline: Vec<String>,
    stop: Option<(EventFd, std::thread::JoinHandle<()>)>,
    late: Vec<LateIo>,
    /// The exec channel's thread ([`crate::control`]) and its stop signal.
    control: Option<(EventFd, std::thread::JoinHandle<()>)>,
    /// With the exec channel: how its clients pause the vCPUs (`vstate::pause`).
    pauser: Option<Arc<Pauser>>,
    /// Raised by a device whose backend is gone (a virtiofsd that exited): the event
    /// loop ends the VM with its reason.
    lost: BackendLost,
}

/// A KVM I/O-bus registration of a virtio device that the VM does not need from its
/// first instruction: Linux probes the devices hundreds of milliseconds into its boot.
///
/// Each registration makes KVM wait for an SRCU grace period (`kvm_io_bus_register_dev`),
/// milliseconds apiece where the host is slow — ~80 ms per VM in the lab for one virtio-blk
/// and a three-port console, the largest single cost of isol's setup. [`register_late_io`]
/// makes them on a thread of their own while the guest boots. Correct in either order:
/// until a queue's ioeventfd exists, the notify write exits to the VMM, whose transport
/// signals the same eventfd (`MmioTransport`, `QUEUE_NOTIFY`); until a batching zone
/// exists, its writes exit and are applied at once.
#[derive(Debug)]
pub enum LateIo {
    /// The queue's notification eventfd, as an ioeventfd on `addr` matching `queue`.
    Ioeventfd { evt: EventFd, addr: u64, queue: u32 },
    /// A coalesced-MMIO zone (docs/devices.md, "batched writes").
    Batched { addr: u64, len: u32 },
}

/// Makes the registrations of `late` in order, returning a one-line reason for each one
/// that failed (its accesses keep exiting to the VMM, which handles them the same way).
pub fn register_late_io(vm: &kvm_ioctls::VmFd, late: &[LateIo]) -> Vec<String> {
    late.iter()
        .filter_map(|io| match io {
            LateIo::Ioeventfd { evt, addr, queue } => vm
                .register_ioevent(evt, &IoEventAddress::Mmio(*addr), *queue)
                .err()
                .map(|e| format!("no ioeventfd for queue {queue} at {addr:#x} ({e})")),
            LateIo::Batched { addr, len } => vm
                .register_coalesced_mmio(IoEventAddress::Mmio(*addr), *len)
                .err()
                .map(|e| format!("no batching of {len} bytes at {addr:#x} ({e})")),
        })
        .collect()
}

impl std::fmt::Debug for VirtioDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.transports.iter().map(|(n, _)| *n).collect();
        f.debug_struct("VirtioDevices")
            .field("devices", &names)
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

fn dup_stdio(fd: i32) -> std::io::Result<std::fs::File> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on one of our standard fds; the new fd is owned
    // by the returned File.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd nobody else owns.
    Ok(unsafe { <std::fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(new) })
}

/// A duplicate of `fd`, a descriptor the caller lends while the VM is built (`what` names
/// it in the error).
///
/// # Safety
///
/// `fd` must be open for the duration of the call.
unsafe fn dup_borrowed(fd: std::os::fd::RawFd, what: &str) -> Result<std::os::fd::OwnedFd, String> {
    // SAFETY: open for the call (the caller's contract); the borrow ends with the duplicate.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate {what} {fd}: {e}"))
}

/// Creates the virtio devices `cfg` asks for — the root disk ([`Rootfs::Disk`], read
/// only) and the stdio console ([`GuestStdio::VirtioConsole`]) — each on its MMIO
/// window with an irqfd and one ioeventfd per queue, and puts them on the MMIO bus.
/// `vm` is `None` in tests (no KVM wiring).
pub fn attach_virtio_devices(
    devices: &mut Devices,
    vm: Option<&Vm>,
    mem: &GuestMemoryMmap,
    cfg: &VmConfig,
    filters: Option<&crate::seccomp::Filters>,
) -> Result<VirtioDevices, DeviceError> {
    let mut list: Vec<(&'static str, Box<dyn VirtioDevice>)> = Vec::new();
    let mut cmdline = Vec::new();
    let mut control = None;
    let mut pauser = None;
    let lost = BackendLost::new().map_err(|e| DeviceError::Virtio {
        what: "device watch",
        msg: format!("cannot create an eventfd: {e}; raise the open-file limit"),
    })?;
    if let Rootfs::Disk(path) = &cfg.rootfs {
        let b = Block::open(path, true, "isol-root").map_err(|e| DeviceError::Virtio {
            what: "root disk",
            msg: e.to_string(),
        })?;
        list.push(("virtio-blk", Box::new(b)));
        cmdline.push("isol.root=/dev/vda".to_string());
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        let b = Block::open(&d.path, d.read_only, &format!("isol-disk{i}")).map_err(|e| {
            DeviceError::Virtio {
                what: "disk",
                msg: e.to_string(),
            }
        })?;
        list.push(("virtio-blk-extra", Box::new(b.with_stats(d.stats.clone()))));
        if let Some(p) = &d.guest_path {
            cmdline.push(disk_node_arg(i, p));
        }
    }
    if let Some(n) = &cfg.net {
        let err = |msg: String| DeviceError::Virtio {
            what: "network card",
            msg,
        };
        // SAFETY: the caller keeps `tap` open while the VM is built (NetConfig's contract).
        let fd = unsafe { dup_borrowed(n.tap, "the tap's descriptor") }.map_err(err)?;
        let tap = Tap::from_fd(fd).map_err(|e| err(e.to_string()))?;
        list.push((
            "virtio-net",
            Box::new(
                Net::new(tap, n.mac)
                    .with_stats(n.stats.clone())
                    .without(n.masked_features),
            ),
        ));
        if let Some(ip) = &n.ip {
            cmdline.push(ip.cmdline_arg());
        }
    }
    for share in &cfg.shares {
        let err = |msg: String| DeviceError::Virtio {
            what: "shared directory",
            msg,
        };
        // SAFETY: the caller keeps `socket` open while the VM is built (FsShare's contract).
        let fd = unsafe { dup_borrowed(share.socket, "the vhost-user socket") }.map_err(err)?;
        let name = share.guest_path.as_ref().map_or_else(
            || share.tag.clone(),
            |p| std::path::Path::new(p).display().to_string(),
        );
        let fs = VhostUserFs::connect(std::os::unix::net::UnixStream::from(fd), &share.tag)
            .map_err(|e| err(e.to_string()))?
            .on_backend_lost(lost.clone(), &name);
        list.push(("virtio-fs", Box::new(fs)));
        if let Some(p) = &share.guest_path {
            cmdline.push(fs_mount_arg(&share.tag, share.read_only, p));
        }
    }
    if cfg.stdio == GuestStdio::VirtioConsole {
        let err = |e: std::io::Error| DeviceError::Virtio {
            what: "console",
            msg: format!("{e}; check the VMM's standard streams"),
        };
        let stdin = if cfg.forward_stdin {
            Some(dup_stdio(libc::STDIN_FILENO).map_err(err)?)
        } else {
            None
        };
        let mut ports = vec![
            PortConfig {
                name: STDIO_PORTS[0].into(),
                io: PortIo::Input(stdin),
            },
            PortConfig {
                name: STDIO_PORTS[1].into(),
                io: PortIo::Output(Box::new(FdWriter::new(
                    dup_stdio(libc::STDOUT_FILENO).map_err(err)?,
                ))),
            },
            PortConfig {
                name: STDIO_PORTS[2].into(),
                io: PortIo::Output(Box::new(FdWriter::new(
                    dup_stdio(libc::STDERR_FILENO).map_err(err)?,
                ))),
            },
        ];
        if let Some(tty) = &cfg.tty {
            let control = match &tty.control {
                Some(f) => Some(f.try_clone().map_err(err)?),
                None => None,
            };
            ports.push(PortConfig {
                name: TTY_PORT.into(),
                io: PortIo::Input(control),
            });
            cmdline.push("isol.tty=1".to_string());
        }
        if let Some(listener) = cfg.control {
            let (port, thread, p) =
                control_channel(listener, filters).map_err(|e| DeviceError::Virtio {
                    what: "exec channel",
                    msg: format!("{e}; raise the open-file or thread limit"),
                })?;
            ports.push(port);
            control = Some(thread);
            pauser = Some(p);
            cmdline.push("isol.control=1".to_string());
        }
        // Its output writers install their seccomp filter first thing.
        let start = filters
            .cloned()
            .map(|f| -> isol_devices::virtio::console::ThreadStart {
                Arc::new(move || f.apply_or_exit(crate::seccomp::ThreadKind::ConsoleOutput))
            });
        let c = Console::with_thread_start(ports, start).map_err(|e| DeviceError::Virtio {
            what: "console",
            msg: e.to_string(),
        })?;
        list.push(("virtio-console", Box::new(c)));
        cmdline.push("isol.stdio=virtio".to_string());
    }
    if list.len() > MAX_VIRTIO_DEVICES {
        return Err(DeviceError::TooManyVirtio(list.len()));
    }

    let mut transports = Vec::new();
    let mut late = Vec::new();
    let mut new_bus = (*devices.mmio).clone();
    for (i, (name, dev)) in list.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW;
        let gsi = VIRTIO_FIRST_GSI + i as u32;
        let t = MmioTransport::new(dev, mem.clone(), evt("a virtio interrupt")?).map_err(|e| {
            DeviceError::Virtio {
                what: name,
                msg: e.to_string(),
            }
        })?;
        if let Some(vm) = vm {
            vm.register_irqfd(t.irq().eventfd(), gsi)?;
            // Queue notifications and batched writes are registered later, off the
            // critical path ([`LateIo`]).
            let addr = base + mmio_reg::QUEUE_NOTIFY;
            for (q, e) in t.queue_evts().iter().enumerate() {
                if t.serve_on_notify(q) {
                    continue;
                }
                let evt = e.try_clone().map_err(|source| DeviceError::EventFd {
                    what: "a queue notification",
                    source,
                })?;
                late.push(LateIo::Ioeventfd {
                    evt,
                    addr,
                    queue: q as u32,
                });
            }
            for (offset, len) in BATCHABLE_WRITES {
                late.push(LateIo::Batched {
                    addr: base + offset,
                    len: len as u32,
                });
            }
            if t.batch_interrupt_ack() {
                late.push(LateIo::Batched {
                    addr: base + mmio_reg::INTERRUPT_ACK,
                    len: 4,
                });
            }
        }
        let t = Arc::new(Mutex::new(t));
        new_bus.insert(t.clone(), base, MMIO_WINDOW, name)?;
        cmdline.push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
        transports.push((name, t));
    }
    devices.mmio = Arc::new(new_bus);
    Ok(VirtioDevices {
        transports,
        cmdline,
        stop: None,
        late,
        control,
        pauser,
        lost,
    })
}

/// The exec channel: the `isol.control` port on one end of a socketpair, and the thread
/// (`isol-control`, [`crate::control`]) serving the other end and `listener`'s clients, who
/// may also pause the vCPUs through the pauser returned.
#[allow(clippy::type_complexity)]
fn control_channel(
    listener: std::os::fd::RawFd,
    filters: Option<&crate::seccomp::Filters>,
) -> std::io::Result<(
    PortConfig,
    (EventFd, std::thread::JoinHandle<()>),
    Arc<Pauser>,
)> {
    // SAFETY: the caller keeps `listener` open while the VM is built (VmConfig's contract);
    // the borrow ends with the duplicate made here.
    let listener = unsafe { std::os::fd::BorrowedFd::borrow_raw(listener) }.try_clone_to_owned()?;
    let (ours, device) = crate::control::socketpair()?;
    // The device's end never blocks the device thread (its reads) nor the vCPU (the
    // control queue is served there); its writer thread waits for room (FdWriter).
    crate::control::nonblocking(std::os::fd::AsRawFd::as_raw_fd(&device))?;
    let input = std::fs::File::from(device.try_clone()?);
    let port = PortConfig {
        name: isol_guest_init::control::PORT_NAME.into(),
        io: PortIo::Duplex(input, Box::new(FdWriter::new(std::fs::File::from(device)))),
    };
    let pauser = Arc::new(Pauser::new()?);
    let channel = crate::control::Channel::new(listener, ours)?.with_pauser(pauser.clone());
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let stop2 = stop.try_clone()?;
    let filters = filters.cloned();
    let thread = std::thread::Builder::new()
        .name("isol-control".into())
        .spawn(move || {
            crate::seccomp::enter(filters.as_ref(), crate::seccomp::ThreadKind::Control);
            channel.serve(&stop2);
        })?;
    Ok((port, (stop, thread), pauser))
}

struct Stopper {
    evt: EventFd,
    stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for Stopper {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.evt, EventSet::IN));
    }
}

impl VirtioDevices {
    /// Kernel command-line parameters announcing the devices (and telling init about
    /// the root disk and the stdio ports).
    pub fn cmdline(&self) -> &[String] {
        &self.cmdline
    }

    /// How the exec channel's clients pause the vCPUs, when the VM has the channel.
    pub fn pauser(&self) -> Option<&Arc<Pauser>> {
        self.pauser.as_ref()
    }

    /// The notice a device raises when its backend is gone (for the event loop to watch).
    pub fn backend_lost(&self) -> &BackendLost {
        &self.lost
    }

    /// The transports, by name (for tests and tracing).
    pub fn transports(&self) -> impl Iterator<Item = (&'static str, &Arc<Mutex<MmioTransport>>)> {
        self.transports.iter().map(|(n, t)| (*n, t))
    }

    /// Starts the device thread: an event-manager loop serving every device's queue
    /// ioeventfds and host fds, off the vCPU threads.
    /// The registrations to make with [`register_late_io`] (taken: once).
    pub fn take_late_io(&mut self) -> Vec<LateIo> {
        std::mem::take(&mut self.late)
    }

    /// With `filters`, the thread installs its seccomp filter before it serves anything.
    pub fn start(&mut self, filters: Option<&crate::seccomp::Filters>) -> Result<(), DeviceError> {
        if self.transports.is_empty() || self.stop.is_some() {
            return Ok(());
        }
        let stop_evt = evt("the virtio device thread")?;
        let stopper = Stopper {
            evt: dup(&stop_evt, "the virtio device thread")?,
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let stopped = stopper.stopped.clone();
        let subs: Vec<_> = self
            .transports
            .iter()
            .map(|(_, t)| VirtioSubscriber::new(t.clone()))
            .collect();
        let filters = filters.cloned();
        let thread = std::thread::Builder::new()
            .name("isol-virtio".into())
            .spawn(move || {
                let Ok(mut em) = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
                else {
                    return;
                };
                em.add_subscriber(Arc::new(Mutex::new(stopper)));
                for s in subs {
                    em.add_subscriber(Arc::new(Mutex::new(s)));
                }
                // Its epoll set is made: from here on it serves the guest.
                crate::seccomp::enter(filters.as_ref(), crate::seccomp::ThreadKind::Virtio);
                while !stopped.load(Ordering::SeqCst) {
                    if em.run().is_err() {
                        break;
                    }
                }
            })
            .map_err(DeviceError::Thread)?;
        self.stop = Some((stop_evt, thread));
        Ok(())
    }

    /// Stops the device thread, then lets each device finish what the guest already
    /// handed over (console output still in the queues) and joins the writer threads.
    /// Call after every vCPU has stopped.
    pub fn shutdown(&mut self) {
        if let Some((evt, thread)) = self.stop.take() {
            let _ = evt.write(1);
            let _ = thread.join();
        }
        for (_, t) in &self.transports {
            t.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
        }
        self.transports.clear();
        // After the console's writers: what the guest sent on the channel is in its socket.
        if let Some((evt, thread)) = self.control.take() {
            let _ = evt.write(1);
            let _ = thread.join();
        }
    }
}

impl Drop for VirtioDevices {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_node_paths_are_hex_encoded() {
        assert_eq!(
            disk_node_arg(2, std::ffi::OsStr::new("/a b")),
            "isol.disk=2:2f612062"
        );
        assert_eq!(
            fs_mount_arg("fs0", true, std::ffi::OsStr::new("/a b")),
            "isol.fs=667330:ro:2f612062"
        );
    }

    #[test]
    fn port_map() {
        let d = create_devices(None, Box::new(std::io::sink())).unwrap();
        let name = |p| d.pio.lookup(p).map(|h| h.name.to_string());
        assert_eq!(name(0x3f8).as_deref(), Some("serial"));
        assert_eq!(name(0x3ff).as_deref(), Some("serial"));
        assert_eq!(name(0x64).as_deref(), Some("i8042"));
        assert_eq!(name(0x71).as_deref(), Some("cmos"));
        assert_eq!(name(0x4f0).as_deref(), Some("isol-exit"));
        assert_eq!(name(0x2f8).as_deref(), Some("isol-exit-uart"));
        assert_eq!(name(0x80).as_deref(), Some("post"));
        assert_eq!(name(0xed).as_deref(), Some("io-delay"));
        // KVM's own: PIC, PIT, speaker, ELCR; and unmapped COM3.
        // (0x61 falls in the i8042 range, but KVM's PIT answers it before us.)
        for p in [0x20, 0x21, 0x40, 0x43, 0xa0, 0x4d0, 0x3e8] {
            assert_eq!(name(p), None, "{p:#x}");
        }
    }

    #[test]
    fn guest_reset_and_exit_status_reach_the_vmm() {
        let d = create_devices(None, Box::new(std::io::sink())).unwrap();
        d.pio.write(0x4f0, &[7]).unwrap();
        d.pio.write(0x64, &[0xfe]).unwrap();
        assert_eq!(d.reset_evt.read().unwrap(), 1);
        assert_eq!(d.exit_port.lock().unwrap().exit_status(), Some(7));
        assert_eq!(d.i8042.lock().unwrap().resets(), 1);
    }
}
