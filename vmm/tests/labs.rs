//! Lab 12 (docs/labs/12-kvm.md, and its Chinese page) is a test: trycmd runs every `$ ` command
//! of its ```console blocks — the `kvm_hello` example of this crate — and compares the output
//! with the page (the container labs are run by isol's own tests/labs.rs). It needs a usable
//! /dev/kvm, even an emulated one: without one it skips, saying why, unless `ISOL_REQUIRE_KVM`
//! is set (test.sh sets it, and runs this test in the lab too).

use std::path::PathBuf;

/// `kvm_hello`, built beside this test by `cargo test -p isol-vmm` (examples are built with the
/// tests).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("deps/");
    let path = deps
        .parent()
        .expect("the profile's directory")
        .join("examples/kvm_hello");
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p isol-vmm --example kvm_hello` (or the whole `cargo test -p isol-vmm`)",
        path.display()
    );
    // `cargo test -p isol-vmm --test labs` alone does not rebuild examples: a stale one would
    // check an older program against the page.
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kvm_hello.rs");
    let written = std::fs::metadata(source)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(
        built >= written,
        "{} is older than {source}: run `cargo build -p isol-vmm --example kvm_hello`",
        path.display()
    );
    path
}

#[test]
fn lab_12_matches_its_pages() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        let why = format!("lab 12 needs /dev/kvm: {e}");
        assert!(
            std::env::var_os("ISOL_REQUIRE_KVM").is_none(),
            "ISOL_REQUIRE_KVM is set but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    trycmd::TestCases::new()
        // The page names the example by the path a reader types in the repository.
        .register_bin(
            "target/x86_64-unknown-linux-gnu/debug/examples/kvm_hello",
            example(),
        )
        .case(root.join("docs/labs/12-kvm.md"))
        .case(root.join("docs/labs/zh/12-kvm.md"));
}
