//! Integration tests: the real `atocore-restore-job` binary on real files.

mod util;

mod backup;
mod chroma_integrity;
mod crash;
mod legacy;
mod messages;
mod mounts;
mod offsite;
mod offsite_pitr;
mod pitr;
mod pitr_truth;
mod prune;
mod prune_pitr;
mod restore;
mod safety;
mod validate;
