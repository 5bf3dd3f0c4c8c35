//! The exit-port protocol, as seen from the guest (the VMM's side is
//! `isol_devices::legacy::exit_port`; the values must match).

/// Port the workload's exit status (one byte) is written to.
pub const EXIT_STATUS_PORT: u16 = 0x4f0;
/// Port boot phases (one byte each) are written to.
pub const PHASE_PORT: u16 = 0x4f1;
/// Port init writes [`POWER_OFF`] to once the exit status is reported and the disks are
/// synced: the VMM ends the VM there, without the guest kernel's reboot path.
pub const POWER_OFF_PORT: u16 = 0x4f2;
/// The byte written to [`POWER_OFF_PORT`].
pub const POWER_OFF: u8 = 1;
/// Number of ports init asks `ioperm` for, starting at [`EXIT_STATUS_PORT`].
pub const PORT_COUNT: u16 = 4;

/// Phase: PID 1 started.
pub const PHASE_INIT_START: u8 = 1;
/// Phase: filesystems mounted and spec read.
pub const PHASE_SPEC_LOADED: u8 = 2;
/// Phase: the workload's `execve` is next.
pub const PHASE_WORKLOAD_EXEC: u8 = 3;
/// Phase: the workload exited.
pub const PHASE_WORKLOAD_EXIT: u8 = 4;
/// Phase: the workload's `execve` succeeded (`isol-runc start` returns on it).
pub const PHASE_WORKLOAD_RUNNING: u8 = 5;

/// Exit status when the command does not exist (as in POSIX shells).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit status when init itself could not set the workload up (bad spec, bad workdir).
pub const EXIT_SETUP_FAILED: u8 = 125;
