//! The Docker engine and the compose command.

use std::process::{Command, Output};

use serde_json::Value;

/// How to reach Docker and compose on this machine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The compose command: `["docker", "compose"]` or `["docker-compose"]`.
    pub compose: Vec<String>,
}

/// The engine, or `None` (with a note on stderr) when none answers outside CI.
/// Under `CI=true` a missing engine fails the test: the Docker tests must run there.
pub fn engine_or_skip(test: &str) -> Option<Engine> {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let answered = matches!(&info, Ok(o) if o.status.success());
    if !answered {
        let why = match &info {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if is_ci() {
            panic!("{test}: CI=true but no Docker engine answers `docker info` ({why})");
        }
        eprintln!("note: skipping Docker test {test}: no Docker engine answers ({why})");
        return None;
    }
    Some(Engine {
        compose: compose_command().unwrap_or_else(|| {
            panic!("{test}: neither `docker compose` nor `docker-compose` works")
        }),
    })
}

/// Whether `CI` is set to a true value.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true" | "1" | "TRUE" | "True" | "yes")
    )
}

/// `docker compose` when the plugin works, else `docker-compose`.
pub fn compose_command() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if works(&["docker", "compose"]) {
        Some(vec!["docker".to_owned(), "compose".to_owned()])
    } else if works(&["docker-compose"]) {
        Some(vec!["docker-compose".to_owned()])
    } else {
        None
    }
}

/// Runs `docker <args>` and returns its output (never panics on a non-zero exit).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("cannot run docker")
}

/// `docker inspect <object>` as JSON, or `None` when it does not exist.
pub fn inspect(object: &str) -> Option<Value> {
    let out = docker(&["inspect", object]);
    if !out.status.success() {
        return None;
    }
    let list: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    list.get(0).cloned()
}

/// A container's state: `status` ("running", "exited", ...), exit code and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub status: String,
    pub exit_code: i64,
    pub health: Option<String>,
}

/// The state of a container by name, or `None` when there is none.
pub fn container_state(name: &str) -> Option<ContainerState> {
    let v = inspect(name)?;
    let state = &v["State"];
    Some(ContainerState {
        status: state["Status"].as_str().unwrap_or_default().to_owned(),
        exit_code: state["ExitCode"].as_i64().unwrap_or(-1),
        health: state["Health"]["Status"].as_str().map(str::to_owned),
    })
}

/// Text of an output's stdout and stderr, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
