//! `--cgroup-parent` names a place below the cgroup hierarchies: one that would leave them
//! (a `..` component) or that holds a control character is refused at create, and nothing
//! is made outside cgroupfs, in either isolation.

use capsa_tests::{text, TestEnv};

#[test]
fn a_parent_that_leaves_the_cgroup_hierarchy_is_refused_and_nothing_is_made() {
    let env = TestEnv::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("cgx");
    let escape = format!("/../../../../..{}", target.display());
    for isolation in ["container", "vm"] {
        for parent in [escape.as_str(), "/ok/../../..", "/a\nb"] {
            let out = env.capsa(&[
                "run",
                "--rm",
                "--isolation",
                isolation,
                "--cgroup-parent",
                parent,
                "busybox",
                "true",
            ]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{parent:?}: {err}");
            assert!(err.contains("--cgroup-parent"), "{parent:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    assert!(!target.exists(), "made {}", target.display());
    env.assert_clean();
}
