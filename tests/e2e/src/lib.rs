//! `atocore-e2e`: helpers for the Docker end-to-end tests of AtoCore Ops (the tests
//! themselves are in `tests/tests.rs`, one test binary).
//!
//! - `docker`: is an engine there (under `CI=true` it must be), which compose command
//!   (`docker compose` if it works, else `docker-compose`), `docker inspect` helpers;
//! - `images`: builds the three images once per test run with `deploy/build-images.sh`
//!   (tag `e2e`, cargo profile `e2e`; `ATOCORE_E2E_SKIP_BUILD=1` reuses existing ones);
//! - `stack`: one compose project (the real `compose/` files, demo override: the
//!   stand-in as atocore) in a temp storage root, with a unique `atoe2e-<pid>-<n>` name
//!   for the project and every container, torn down (`down -v --remove-orphans`) and
//!   deleted on drop, even when the test fails;
//! - `http`: small JSON client helpers and polling;
//! - `admin`: the sidecar's admin API with long timeouts, restore files and leftovers,
//!   container facts, storage fingerprints, a slow client holding atocore's shutdown
//!   (for the orchestrated restore and drill tests in `tests/orchestration.rs`).
//!
//! ```no_run
//! use atocore_e2e::{docker, images, stack::Stack};
//! if let Some(engine) = docker::engine_or_skip("demo") {
//!     let images = images::ensure(&engine);
//!     let stack = Stack::new(&engine, &images); // torn down on drop
//!     stack.up(&[]);
//!     let health = stack.wait_healthy();
//!     assert_eq!(health["service"], "atocore-standin");
//! }
//! ```

pub mod admin;
pub mod docker;
pub mod http;
pub mod images;
pub mod stack;

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .expect("tests/e2e lives two levels below the workspace root")
        .to_path_buf()
}
