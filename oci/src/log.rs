//! The runtime's log (`--log FILE`, `--log-format text|json`), as runc writes it: containerd
//! reads the last line of the file when a command fails and shows its `msg`.

use std::io::Write;
use std::path::PathBuf;

/// The log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// logrus' text: `time="…" level=error msg="…"`.
    Text,
    /// `{"level":"error","msg":"…","time":"…"}`.
    Json,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!("invalid --log-format {other:?}: use text or json")),
        }
    }
}

/// Where the log goes, and how.
#[derive(Debug, Clone)]
pub struct Log {
    pub file: Option<PathBuf>,
    pub format: Format,
    pub debug: bool,
}

impl Log {
    /// One line at `level`, appended to the log file (or, without one, to stderr).
    pub fn line(&self, level: &str, msg: &str) {
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let line = match self.format {
            Format::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
            }
            Format::Text => format!(
                "time={} level={level} msg={}",
                serde_json::Value::from(time),
                serde_json::Value::from(msg)
            ),
        };
        let written = self.file.as_ref().is_some_and(|f| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .and_then(|mut f| writeln!(f, "{line}"))
                .is_ok()
        });
        if !written {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.line("debug", msg);
        }
    }

    /// A failure: in the log, and (as runc does) on stderr too when the log is a file.
    pub fn error(&self, msg: &str) {
        self.line("error", msg);
        if self.file.is_some() {
            let _ = writeln!(std::io::stderr(), "isol-runc: {msg}");
        }
    }
}
