//! The teaching labs (docs/labs/, issue 18) are tests: every `$ ` command in a ```console block of
//! a lab's page is run here and its output (stdout and stderr merged, in the order written) and
//! exit status (`? N`) compared with the page by trycmd. Variable parts are written in the page
//! as `[..]` (any text within a line) and `...` (any lines). The Chinese pages (docs/labs/zh/)
//! run too, and must hold the very same commands and outputs as the English ones. The container
//! labs run on any host (as root); the kvm labs need hardware KVM and the guest kernel, so they
//! run in the lab (test.sh) and skip elsewhere, saying why; lab 12 is checked by isol-vmm's
//! tests/labs.rs (docs/labs/README.md, "How the labs are checked").

mod common;

use std::path::{Path, PathBuf};

/// The labs that run on any Linux host as root.
const CONTAINER_LABS: &[&str] = &[
    "01-prison",
    "02-uts",
    "03-ipc",
    "04-pid",
    "05-net",
    "06-mnt",
    "07-user",
    "08-cgroup",
    "09-cgroups",
    "10-layers",
    "11-network",
    "15-bench",
    "16-defaults",
];

/// The labs checked elsewhere: lab 12 by isol-vmm's tests/labs.rs.
const OTHER_LABS: &[&str] = &["12-kvm"];

/// Every lab page of this repository, by its file name: those with a translation in zh/ too.
fn all_labs() -> impl Iterator<Item = &'static str> {
    CONTAINER_LABS
        .iter()
        .chain(KVM_LABS)
        .chain(LAB_ONLY_LABS)
        .chain(OTHER_LABS)
        .copied()
}

/// The labs that need hardware KVM and the guest kernel: run in the lab by test.sh.
const KVM_LABS: &[&str] = &["13-boot"];

/// The kvm labs that run only inside the lab (`isol lab`), never on a host, even one with
/// hardware KVM: lab 14 panics a guest kernel on purpose and writes `c` to /proc/sysrq-trigger
/// in a container to show that the write is refused. Should the container's read-only
/// /proc/sysrq-trigger ever regress, that write panics the kernel the test runs on, which must
/// be the lab's throwaway VM, not a developer's host.
const LAB_ONLY_LABS: &[&str] = &["14-kernel"];

/// True inside the lab: its kernel's command line names the lab's job (lab/src, `isol.job=`).
fn in_the_lab() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w.starts_with("isol.job=")))
}

#[test]
fn container_labs_match_their_pages() {
    let _host = common::root_test();
    run_pages(CONTAINER_LABS);
}

#[test]
fn kvm_labs_match_their_pages() {
    if !common::kvm_ready() {
        return;
    }
    let _host = common::root_test();
    let mut labs = KVM_LABS.to_vec();
    if !in_the_lab() {
        eprintln!(
            "skipping {LAB_ONLY_LABS:?}: they panic a kernel on purpose and run only in the lab \
             (isol lab -- <this test> --test-threads=1, as test.sh does)"
        );
        run_pages(&labs);
        return;
    }
    labs.extend(LAB_ONLY_LABS);
    // The lab's nested KVM now and then triple-faults a guest at the very start of its boot
    // (docs/lab.md, "Known fault"), most often under `--console`'s serial output, and these
    // pages boot a dozen VMs: in the lab only, each lab whose run failed is tried again, up to
    // four runs; a page that drifts fails every time.
    for lab in labs {
        for attempt in 1..=4 {
            match std::panic::catch_unwind(|| run_pages(&[lab])) {
                Ok(()) => break,
                Err(e) if attempt == 4 => std::panic::resume_unwind(e),
                Err(_) => eprintln!(
                    "kvm lab {lab}: attempt {attempt} failed (above); the lab's nested KVM \
                     faults now and then (docs/lab.md): trying again"
                ),
            }
        }
    }
}

/// Runs the pages of `labs`, English then Chinese, with a store of their own, and checks that
/// they left nothing behind.
fn run_pages(labs: &[&str]) {
    // The labs' own image store, on a tmpfs: lab 10 imports an image with a whiteout, which
    // unpacks to a 0:0 character device, and overlayfs (the lab's root, where the shared test
    // store lives) refuses to create one. /run is a tmpfs on the host and in the lab alike.
    let home = tempfile::Builder::new()
        .prefix("isol-labs-")
        .tempdir_in("/run")
        .expect("a directory in /run for the labs' image store");
    // Searchable by others: lab 7's containers have a root of their own (uid 100000 on the host),
    // which must reach its run directory below the store (docs/cli.md, `--userns`).
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .expect("the labs' image store made searchable");
    // One language at a time: a page and its translation run the same commands, which share
    // names on the host (lab 10's work directory and image), while trycmd runs pages in parallel.
    // A page that fails half-way may leave detached runs (labs 3, 4): stopped here, whatever
    // happened, so that the leftovers check below names the real problem.
    let _stop = StopRuns(home.path().to_path_buf());
    for dir in ["", "zh/"] {
        let cases = trycmd::TestCases::new();
        cases
            .register_bin("isol", Path::new(common::isol_bin()))
            // The host's view, for the namespace labs (1–8): readlink of /proc/self/ns/*.
            .register_bin("readlink", Path::new("/usr/bin/readlink"))
            // The host's nftables, for lab 11: isol's NAT table as the host sees it.
            .register_bin("nft", Path::new("/usr/sbin/nft"))
            .env("ISOL_HOME", home.path().display().to_string())
            .env("ISOL_LOG", "warn")
            // A container lab's longest step (the CPU quota) runs for one second; a VM's boot in
            // the lab takes 2-6 s.
            .timeout(std::time::Duration::from_secs(120));
        for lab in labs {
            if *lab == "07-user" && !idmapped_layers(home.path()) {
                continue;
            }
            cases.case(docs().join(format!("{dir}{lab}.md")));
        }
        cases.run();
    }
    common::assert_no_leftovers("the labs");
    let runs: Vec<_> = std::fs::read_dir(home.path().join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != "net")
                .collect()
        })
        .unwrap_or_default();
    assert!(runs.is_empty(), "the labs left run directories: {runs:?}");
}

/// Whether `--userns private` works with the store at `home`: its layers must be mounted
/// idmapped, which the lab's kernel (6.1) cannot do on its tmpfs /run (tmpfs has idmapped
/// mounts from Linux 6.3), and isol must not run in a chroot, where the kernel refuses new
/// user namespaces (inside `isol lab`). Where it cannot, lab 7 is skipped, saying why.
fn idmapped_layers(home: &Path) -> bool {
    let o = std::process::Command::new(common::isol_bin())
        .args(["run", "--userns", "private", "busybox", "true"])
        .env("ISOL_HOME", home)
        .output()
        .expect("isol runs");
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && (err.contains("idmapped") || err.contains("a process in a chroot")) {
        eprintln!("skipping lab 7 here: {}", err.trim());
        return false;
    }
    true
}

/// Stops every live run of the labs' store when dropped.
struct StopRuns(PathBuf);

impl Drop for StopRuns {
    fn drop(&mut self) {
        let isol = |args: &[&str]| {
            std::process::Command::new(common::isol_bin())
                .args(args)
                .env("ISOL_HOME", &self.0)
                .output()
        };
        let Ok(out) = isol(&["ps", "--json"]) else {
            return;
        };
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for r in runs {
            if let Some(id) = r["id"].as_str() {
                let _ = isol(&["stop", "-t", "1", id]);
            }
        }
    }
}

/// docs/labs/, wherever the test runs from (test.sh runs it in the lab too).
fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/labs")
}

/// The ```console blocks of a page, in order: what trycmd runs and compares.
fn console_blocks(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", page.display()));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.starts_with("```console") => current = Some(String::new()),
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "{}: a console block is not closed",
        page.display()
    );
    blocks
}

#[test]
fn chinese_pages_run_the_same_commands_with_the_same_outputs() {
    for lab in all_labs() {
        let en = console_blocks(&docs().join(format!("{lab}.md")));
        let zh = console_blocks(&docs().join(format!("zh/{lab}.md")));
        assert!(!en.is_empty(), "docs/labs/{lab}.md has no console block");
        assert_eq!(
            en, zh,
            "docs/labs/zh/{lab}.md must hold the same console blocks as docs/labs/{lab}.md"
        );
    }
}

#[test]
fn every_page_is_listed_in_the_index_and_here() {
    let index = std::fs::read_to_string(docs().join("README.md")).expect("docs/labs/README.md");
    for dir in ["docs/labs", "docs/labs/zh"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for e in std::fs::read_dir(&path).expect("docs/labs") {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(lab) = name.strip_suffix(".md") else {
                continue;
            };
            if lab == "README" {
                continue;
            }
            assert!(
                all_labs().any(|l| l == lab),
                "{dir}/{name} is not in tests/labs.rs: add it to CONTAINER_LABS (it runs on the host), \
                 KVM_LABS (in the lab) or OTHER_LABS"
            );
            assert!(
                index.contains(&format!("{name})")),
                "{dir}/{name} is not linked from docs/labs/README.md"
            );
        }
    }
}
