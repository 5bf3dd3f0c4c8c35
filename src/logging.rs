//! The one `tracing` subscriber of isol's binaries (`isol`, `isol-vmm`): the libraries only
//! emit events, these set up where they go.
//!
//! The filter is `--log-level` (error|warn|info|debug|trace) when given, else `$ISOL_LOG` (an
//! `EnvFilter` directive: `debug`, `isol_vmm=trace,warn`, …), else `warn`. Events go to stderr,
//! one line each:
//!
//! - warn and error: `isol: warning: MESSAGE k=v` / `isol: error: MESSAGE k=v`, the form
//!   isol's warnings always had (users and tests read them);
//! - info, debug, trace: `isol: debug: 0.004s isol_container::cgroups: MESSAGE k=v`, with the
//!   time since the process started and where the event comes from.
//!
//! ANSI colour only when stderr is a terminal.

use std::fmt;
use std::io::IsTerminal;
use std::time::Instant;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// The environment variable read when `--log-level` is not given.
pub const ENV: &str = "ISOL_LOG";

/// The filter when neither `--log-level` nor `$ISOL_LOG` says otherwise.
pub const DEFAULT: &str = "warn";

/// Sets up the process's subscriber on stderr; `flag` (a level or directive, e.g. from
/// `--log-level`) wins over `$ISOL_LOG`. Returns the directive in force, to hand on to a
/// process isol starts (isol-vmm). A second call changes nothing.
pub fn init(flag: Option<&str>) -> String {
    let env = std::env::var(ENV).ok();
    let (filter, directive, rejected) = choose(flag, env.as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(Format::new())
        // A closed stderr (`2>&1 | head`) must not stop isol mid-run: the layer's report of
        // a failed write is an eprintln!, which panics there.
        .log_internal_errors(false);
    let subscriber = tracing_subscriber::registry().with(filter).with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_ok()
        && let Some((value, why)) = rejected
    {
        tracing::warn!("ignoring {ENV}={value:?} ({why}); logging at {DEFAULT}");
    }
    directive
}

/// The filter for `flag` (wins) or `env`, its directive, and the rejected `$ISOL_LOG` value with
/// the reason when that one did not parse.
fn choose(flag: Option<&str>, env: Option<&str>) -> (EnvFilter, String, Option<(String, String)>) {
    if let Some(flag) = flag
        && let Ok(f) = EnvFilter::try_new(flag)
    {
        return (f, flag.to_owned(), None);
    }
    match env.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => match EnvFilter::try_new(e) {
            Ok(f) => (f, e.to_owned(), None),
            Err(why) => (
                EnvFilter::new(DEFAULT),
                DEFAULT.to_owned(),
                Some((e.to_owned(), why.to_string())),
            ),
        },
        None => (EnvFilter::new(DEFAULT), DEFAULT.to_owned(), None),
    }
}

/// isol's line format (see the module's documentation).
struct Format {
    start: Instant,
}

impl Format {
    fn new() -> Format {
        Format {
            start: Instant::now(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let level = *meta.level();
        let (name, colour) = match level {
            Level::ERROR => ("error", "31"),
            Level::WARN => ("warning", "33"),
            Level::INFO => ("info", "32"),
            Level::DEBUG => ("debug", "34"),
            Level::TRACE => ("trace", "35"),
        };
        if w.has_ansi_escapes() {
            write!(w, "isol: \x1b[{colour}m{name}\x1b[0m: ")?;
        } else {
            write!(w, "isol: {name}: ")?;
        }
        // More verbose than warn: when and where, for the reader of a debug log.
        if level > Level::WARN {
            let t = self.start.elapsed();
            write!(
                w,
                "{}.{:03}s {}: ",
                t.as_secs(),
                t.subsec_millis(),
                meta.target()
            )?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `f`'s events print under the filter `flag`/`env` would choose.
    fn printed(flag: Option<&str>, env: Option<&str>, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(choose(flag, env).0)
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(Format::new())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn warnings_keep_their_form_and_debug_says_where() {
        let out = printed(None, Some("debug"), || {
            tracing::warn!("releasing the network of abc: gone");
            tracing::debug!(path = "/sys/fs/cgroup/x", "cgroup created");
            tracing::trace!("not shown");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "isol: warning: releasing the network of abc: gone"
        );
        assert!(lines[1].starts_with("isol: debug: "), "{out}");
        assert!(
            lines[1].ends_with(&format!(
                "s {}: cgroup created path=\"/sys/fs/cgroup/x\"",
                module_path!()
            )),
            "{out}"
        );
        assert_eq!(lines.len(), 2, "{out}");
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_warn_is_the_default() {
        assert_eq!(choose(Some("error"), Some("trace")).1, "error");
        assert_eq!(choose(None, Some("isol_vmm=trace")).1, "isol_vmm=trace");
        assert_eq!(choose(None, None).1, DEFAULT);
        assert_eq!(choose(None, Some(" ")).1, DEFAULT);
        let (_, d, rejected) = choose(None, Some("isol=loud"));
        assert_eq!(d, DEFAULT);
        assert_eq!(rejected.unwrap().0, "isol=loud");
        let out = printed(Some("error"), Some("debug"), || {
            tracing::warn!("hidden");
            tracing::error!("shown");
        });
        assert_eq!(out, "isol: error: shown\n");
        let out = printed(None, None, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        assert_eq!(out, "isol: warning: shown\n");
    }
}
