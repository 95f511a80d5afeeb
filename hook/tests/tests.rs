//! Integration tests of `atocore-capture`: the real binary, real fixtures, a real HTTP
//! server. One test binary (see Cargo.toml `autotests = false`).

mod server;
mod util;

mod commands;
mod delivery;
mod fixtures;
mod rules;
