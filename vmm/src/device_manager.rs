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

use crate::vstate::vm::{Vm, VmError};

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

    let exit_port = Arc::new(Mutex::new(ExitPort::new()));
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

#[cfg(test)]
mod tests {
    use super::*;

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
