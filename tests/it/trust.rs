//! What genv believes from the kernel and what from the shared state
//! folder: every test here runs as real, different uids (`setpriv`), an
//! attacker (mallory) writing into the folder, a victim (alice) with
//! environments and jobs of her own, and root running what root runs.

use crate::common::Sandbox;
use crate::common::users::{ALICE, MALLORY};

#[test]
fn each_user_runs_genv_as_herself() {
    let sb = Sandbox::multi_user();
    sb.run_as(
        ALICE,
        &[
            "envs",
            "activate",
            "--eid",
            "a1",
            "--uid",
            &ALICE.to_string(),
            "--pid",
            "1",
        ],
    )
    .ok();
    let out = sb.run_as(MALLORY, &["envs", "ps", "--format", "csv"]).ok();
    assert!(out.stdout.contains("a1"), "{out:?}");
}
