//! `isol image ls | rm | import`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ImageCommand;

pub fn run(cmd: ImageCommand) -> anyhow::Result<i32> {
    let store = super::open_store()?;
    match cmd {
        ImageCommand::Ls { json } => {
            let images = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
                return Ok(0);
            }
            println!(
                "{:<32} {:<19} {:>10} {:>6}  CREATED",
                "NAME", "DIGEST", "SIZE", "LAYERS"
            );
            for i in images {
                let digest = i.digest.trim_start_matches("sha256:");
                println!(
                    "{:<32} {:<19} {:>10} {:>6}  {}",
                    i.name,
                    &digest[..digest.len().min(12)],
                    human(i.size),
                    i.layers,
                    i.created.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
        ImageCommand::Rm { images, force } => {
            for r in images {
                let (removed, users) = store.remove(&r, force)?;
                println!("Removed {} ({})", removed.name, removed.digest);
                for u in users {
                    eprintln!(
                        "isol: {} {} still runs {}; its files are kept until an `isol image rm` or import after it stops",
                        u.backend, u.id, removed.name
                    );
                }
            }
            Ok(0)
        }
        ImageCommand::Import { file, tag } => {
            let bar = if std::io::stderr().is_terminal() {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} importing [{bar:30}] {bytes}/{total_bytes} ({eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b
            } else {
                ProgressBar::hidden()
            };
            let imported = store.import(&file, tag.as_deref(), &mut |p| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            });
            bar.finish_and_clear();
            for i in imported? {
                println!("Imported {} ({})", i.name, i.digest);
            }
            Ok(0)
        }
    }
}

/// Bytes in a short human form (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
