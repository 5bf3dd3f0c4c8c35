//! The teaching labs (docs/labs/, issue 18) are tests: every `$ ` command in a ```console block of
//! a container lab is run here, on the host, and its output (stdout and stderr merged, in the
//! order written) and exit status (`? N`) compared with the page by trycmd. Variable parts are
//! written in the page as `[..]` (any text within a line) and `...` (any lines). The kvm labs
//! need real KVM and are run in the lab by test.sh (docs/labs/README.md, "How the labs are
//! checked").

mod common;

/// The labs that run on any Linux host as root, in English and in Chinese.
const CONTAINER_LABS: &[&str] = &["09-cgroups", "16-defaults"];

#[test]
fn container_labs_match_their_pages() {
    let _host = common::root_test();
    let cases = trycmd::TestCases::new();
    cases
        .register_bin("isol", std::path::Path::new(common::isol_bin()))
        .env("ISOL_HOME", common::test_home().display().to_string())
        .env("ISOL_LOG", "warn")
        // A lab's longest step (the CPU quota) runs for one second.
        .timeout(std::time::Duration::from_secs(60));
    for lab in CONTAINER_LABS {
        cases.case(format!("docs/labs/{lab}.md"));
        cases.case(format!("docs/labs/zh/{lab}.md"));
    }
    cases.run();
    common::assert_no_leftovers("the container labs");
}
