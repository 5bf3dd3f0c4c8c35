//! `isol inspect`: a live run in detail, as `docker inspect` shows a container: a JSON array
//! of one object per run named, from its record (`super::runs`), the runtime's state (a
//! container's init) and the bridge's allocation table (address, gateway, MAC, ports).
//!
//! Only live runs: a record goes when its run ends, so an ended run's exit code is not kept
//! (it is the exit code of the `isol run` that ran it, and a detached run's log says how it
//! ended until the next `isol ps` sweeps it).

use serde_json::{Value, json};

use super::runs::{self, Record};
use crate::cli::InspectArgs;

/// `isol inspect NAME|ID...`: the runs found, as a JSON array (or `--format`ted), and one
/// line on stderr for each that is not a live run; exit 125 if any was not.
pub fn inspect(args: InspectArgs) -> anyhow::Result<i32> {
    let store = super::open_store()?;
    let dir = runs::dir(store.root());
    let state_root = store.root().join("containers");
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for what in &args.runs {
        match runs::find(&dir, what) {
            Ok(rec) => found.push(describe(&rec, &state_root)),
            Err(e) => missing.push(e),
        }
    }
    match &args.format {
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(found))?),
        Some(template) => {
            // All rendered before any is printed: a bad template prints nothing.
            let lines = found
                .iter()
                .map(|run| render(template, run))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for line in lines {
                println!("{line}");
            }
        }
    }
    for e in &missing {
        eprintln!("isol: {e:#}");
    }
    Ok(if missing.is_empty() {
        0
    } else {
        i32::from(crate::EXIT_ISOL)
    })
}

/// One run's object.
fn describe(rec: &Record, state_root: &std::path::Path) -> Value {
    let init = runs::container_info(rec).ok();
    let net = isol_container::network::lookup(state_root, &rec.id);
    // A container's address as its runtime recorded it, else the bridge's table (a VM's).
    let address = init
        .as_ref()
        .and_then(|(_, a)| a.clone())
        .or_else(|| net.as_ref().map(|n| n.address.to_string()));
    json!({
        "id": rec.id,
        "name": rec.name,
        "backend": rec.backend,
        "image": rec.image,
        "command": rec.command,
        "env": rec.env,
        "workdir": rec.workdir,
        "state": {
            "status": runs::status(rec),
            // The supervisor: the isol that runs a container, or a microVM's VMM.
            "pid": runs::pid_of(&rec.owner).map(|p| p.as_raw()),
            // A container's init, as the host numbers it.
            "init_pid": init.as_ref().map(|(pid, _)| *pid),
            "started_at": runs::started_rfc3339(rec),
        },
        "network": {
            "mode": rec.network,
            "address": address,
            "prefix": net.as_ref().and_then(|n| n.prefix),
            "gateway": net.as_ref().and_then(|n| n.gateway).map(|g| g.to_string()),
            "mac": net.as_ref().map(|n| isol_container::network::format_mac(n.mac)),
            "link": net.as_ref().map(|n| n.link.clone()),
            "ports": net
                .as_ref()
                .map(|n| n.ports.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap_or_default(),
        },
        "limits": rec.limits,
        "vm": rec.vm,
        "ipc": rec.ipc,
        "seccomp": if !rec.seccomp {
            "unconfined".to_owned()
        } else {
            rec.seccomp_profile.clone().unwrap_or_else(|| "default".to_owned())
        },
    })
}

/// `template` with each `{{.a.b}}` replaced by that field of `run`: a string as it is, null
/// as `<no value>` (as Go's templates print it), anything else as JSON; `{{.}}` is the whole.
fn render(template: &str, run: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            anyhow::anyhow!("--format {template:?} has a {{{{ without its }}}}; close it")
        })?;
        let path = after[..end].trim();
        let fields = path.strip_prefix('.').ok_or_else(|| {
            anyhow::anyhow!(
                "--format {template:?}: {{{{{path}}}}} is not supported: only field paths such as {{{{.network.address}}}} are (no functions, pipes or ranges)"
            )
        })?;
        let mut value = run;
        for field in fields.split('.').filter(|f| !f.is_empty()) {
            value = value.get(field).ok_or_else(|| {
                anyhow::anyhow!(
                    "--format {template:?}: a run has no field {path}; `isol inspect NAME` shows the fields"
                )
            })?;
        }
        match value {
            Value::String(s) => out.push_str(s),
            Value::Null => out.push_str("<no value>"),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_replaces_field_paths() {
        let run = json!({
            "name": "web",
            "network": {"address": "10.88.0.2", "ports": ["8080:80/tcp"], "gateway": null},
            "vm": {"vcpus": 2},
        });
        let r = |t: &str| render(t, &run);
        assert_eq!(r("{{.network.address}}").unwrap(), "10.88.0.2");
        assert_eq!(
            r("{{ .name }} at {{.network.address}}:{{.vm.vcpus}}").unwrap(),
            "web at 10.88.0.2:2"
        );
        assert_eq!(r("{{.network.ports}}").unwrap(), r#"["8080:80/tcp"]"#);
        assert_eq!(r("{{.network.gateway}}").unwrap(), "<no value>");
        assert_eq!(r("plain").unwrap(), "plain");
        assert_eq!(r("{{.}}").unwrap(), run.to_string());
        for bad in [
            "{{.network.addr}}",
            "{{json .network}}",
            "{{.name",
            "{{range .x}}{{end}}",
        ] {
            let e = r(bad).unwrap_err().to_string();
            assert!(e.starts_with("--format"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
