//! The sidecar's integration tests, one binary (`autotests = false`): the real server
//! in-process on 127.0.0.1:0 with a real HTTP client, the real binary for signals and
//! settings, and the real Docker engine for pause/unpause.

mod util;

mod api;
mod auth;
mod bad_input;
mod binary;
mod concurrency;
mod docker;
mod offsite;
mod orchestration;
mod schedule;
mod wal;
