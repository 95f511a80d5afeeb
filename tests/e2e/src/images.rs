//! The images under test, built once per test run by `deploy/build-images.sh`.
//!
//! Settings: `ATOCORE_E2E_IMAGE_TAG` (default `e2e`, so a developer's `:local` images
//! are left alone), `ATOCORE_E2E_BUILD_PROFILE` (default `e2e`: release without LTO,
//! much faster to build), `ATOCORE_E2E_SKIP_BUILD=1` (reuse the tagged images as they are).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::docker::{self, Engine};

/// The three images' references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub tag: String,
    pub sidecar: String,
    pub restore_job: String,
    pub standin: String,
}

impl Images {
    fn for_tag(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            sidecar: format!("atocore-sidecar:{tag}"),
            restore_job: format!("atocore-restore-job:{tag}"),
            standin: format!("atocore-standin:{tag}"),
        }
    }

    /// All three references.
    pub fn all(&self) -> [&str; 3] {
        [&self.sidecar, &self.restore_job, &self.standin]
    }
}

/// The tag the tests use.
pub fn tag() -> String {
    std::env::var("ATOCORE_E2E_IMAGE_TAG")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "e2e".to_owned())
}

/// Whether `ATOCORE_E2E_SKIP_BUILD=1`.
pub fn skip_build() -> bool {
    matches!(
        std::env::var("ATOCORE_E2E_SKIP_BUILD").as_deref(),
        Ok("1" | "true")
    )
}

/// Runs `deploy/build-images.sh` with the tests' tag and profile; returns its output
/// (its progress goes to this process's stderr).
pub fn run_build_script() -> Result<String, String> {
    let profile = std::env::var("ATOCORE_E2E_BUILD_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "e2e".to_owned());
    let script = crate::repo_root().join("deploy/build-images.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .env("ATOCORE_IMAGE_TAG", tag())
        .env("ATOCORE_BUILD_PROFILE", &profile)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{} failed ({:?}):\n{stdout}",
            script.display(),
            out.status.code()
        ));
    }
    eprintln!(
        "e2e: images built in {:.1?} (profile {profile}):\n{stdout}",
        started.elapsed()
    );
    Ok(stdout)
}

/// The images, built on the first call of this test run (later calls wait for it and
/// share its result). Panics when they cannot be had.
pub fn ensure(_engine: &Engine) -> Images {
    static BUILT: OnceLock<Result<Images, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let images = Images::for_tag(&tag());
        if !skip_build() {
            run_build_script()?;
        }
        for image in images.all() {
            if docker::inspect(image).is_none() {
                return Err(format!(
                    "image {image} is missing{}",
                    if skip_build() {
                        " (ATOCORE_E2E_SKIP_BUILD=1: build it first with deploy/build-images.sh)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(images)
    });
    match result {
        Ok(images) => images.clone(),
        Err(e) => panic!("the images under test are not available: {e}"),
    }
}
