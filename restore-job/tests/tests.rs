//! Integration tests: the real `atocore-restore-job` binary on real files.

mod util;

mod backup;
mod crash;
mod mounts;
mod offsite;
mod prune;
mod restore;
mod validate;
