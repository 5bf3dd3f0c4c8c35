//! Running the host's `ip`, `nft` and `nsenter` with explicit arguments.
//!
//! Programs are looked up in the usual system directories first, so a `PATH` without `/usr/sbin`
//! (common under `sudo` or in a minimal service environment) still finds them. The locale is
//! forced to `C` so error texts are stable. stderr is captured into the error.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::NetworkError;

const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The absolute path of `program` in a system directory, or the bare name (resolved through `PATH`).
fn resolve(program: &str) -> PathBuf {
    SYSTEM_DIRS
        .iter()
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The Debian package that ships `program`, for the "install it" hint.
fn package_of(program: &str) -> &'static str {
    match program {
        "ip" => "iproute2",
        "nft" => "nftables",
        "nsenter" => "util-linux",
        _ => "the package that provides it",
    }
}

/// Collapses multi-line tool output into one line.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `program args…`, feeding `stdin` if given, and returns its stdout.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetworkError> {
    let describe = || {
        let mut text = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(script) = stdin {
            text.push_str(&format!(" <<< '{}'", one_line(script)));
        }
        text
    };
    let mut child = Command::new(resolve(program))
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| NetworkError::Spawn {
            program: program.to_owned(),
            package: package_of(program),
            error,
        })?;
    if let Some(script) = stdin {
        // Scripts are a few hundred bytes: far below the pipe buffer, so this cannot block on a
        // child that is itself blocked writing stdout.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        if let Err(error) = pipe.write_all(script.as_bytes()) {
            // A child that exits early closes its end; its stderr says why, so report that.
            if error.kind() != ErrorKind::BrokenPipe {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetworkError::Command {
                    command: describe(),
                    detail: format!("writing its input failed: {error}"),
                });
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|error| NetworkError::Command {
            command: describe(),
            detail: format!("waiting for it failed: {error}"),
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = one_line(&String::from_utf8_lossy(&output.stderr));
    Err(NetworkError::Command {
        command: describe(),
        detail: if stderr.is_empty() {
            output.status.to_string()
        } else {
            format!("{} ({stderr})", output.status)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_errors_are_captured() {
        assert_eq!(run("sh", &["-c", "echo hi"], None).unwrap(), "hi\n");
        assert_eq!(run("cat", &[], Some("a\nb\n")).unwrap(), "a\nb\n");
        let error = run(
            "sh",
            &["-c", "echo 'bad thing' >&2; echo more >&2; exit 3"],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("sh -c"), "{error}");
        assert!(error.contains("bad thing; more"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn missing_program_names_its_package() {
        let error = run("ip-does-not-exist", &[], None).unwrap_err().to_string();
        assert!(error.starts_with("Cannot run ip-does-not-exist"), "{error}");
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n\n  b  \nc\n"), "a; b; c");
    }
}
