//! `isol-init`: PID 1 of every container (`isol_container::init`), as a small binary of its own.
//!
//! isol execs the container's init from a sealed in-memory copy of a binary (CVE-2019-5736, see
//! `isol_container::security::exe`). Copying this one instead of all of isol makes the copy and
//! the exec cheaper; without it beside isol, isol copies itself and runs that in its init mode.

fn main() {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(marker) if marker == isol_container::INIT_MARKER => {
            isol_container::init::main(args.collect())
        }
        _ => {
            eprintln!(
                "isol-init: this is the container init isol starts; it is not meant to be run by hand"
            );
            std::process::exit(125)
        }
    }
}
