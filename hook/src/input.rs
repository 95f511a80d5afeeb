//! The Stop hook's standard input: read with a size cap, parsed leniently.

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::{Error, Result};

/// The fields of the Stop hook JSON that the capture uses. Unknown fields are ignored;
/// a field of an unexpected JSON type counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookInput {
    /// Claude Code's session id.
    pub session_id: Option<String>,
    /// Path of the session transcript (JSONL).
    pub transcript_path: Option<PathBuf>,
    /// The session's working directory.
    pub cwd: Option<String>,
    /// `Stop` for this hook (`SubagentStop` if configured there).
    pub hook_event_name: Option<String>,
    /// True when Claude continues because a Stop hook blocked the stop.
    pub stop_hook_active: bool,
    /// UUID of the current prompt (newer Claude Code versions).
    pub prompt_id: Option<String>,
    /// Text of the final reply (newer versions); preferred over the transcript.
    pub last_assistant_message: Option<String>,
    /// Set when the hook runs inside a subagent.
    pub agent_id: Option<String>,
}

impl HookInput {
    /// Reads at most `cap` bytes of `reader` and parses them.
    pub fn read(reader: impl Read, cap: u64) -> Result<Self> {
        let mut bytes = Vec::new();
        reader
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::BadInput(format!("cannot read stdin: {e}")))?;
        if bytes.len() as u64 > cap {
            return Err(Error::BadInput(format!("more than {cap} bytes on stdin")));
        }
        Self::parse(&bytes)
    }

    /// Parses the hook JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::BadInput("stdin is empty".into()));
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadInput(format!("not JSON ({e})")))?;
        let Value::Object(map) = v else {
            return Err(Error::BadInput("not a JSON object".into()));
        };
        let s = |k: &str| match map.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(HookInput {
            session_id: s("session_id"),
            transcript_path: s("transcript_path").map(PathBuf::from),
            cwd: s("cwd"),
            hook_event_name: s("hook_event_name"),
            stop_hook_active: matches!(map.get("stop_hook_active"), Some(Value::Bool(true))),
            prompt_id: s("prompt_id"),
            last_assistant_message: s("last_assistant_message").filter(|m| !m.trim().is_empty()),
            agent_id: s("agent_id"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_fields_and_ignores_the_rest() {
        let i = HookInput::parse(
            br#"{"session_id":"s","transcript_path":"/t.jsonl","cwd":"/w","hook_event_name":"Stop","stop_hook_active":true,"x":[1],"last_assistant_message":"  "}"#,
        )
        .unwrap();
        assert_eq!(i.session_id.as_deref(), Some("s"));
        assert!(i.stop_hook_active);
        assert_eq!(i.last_assistant_message, None);
    }

    #[test]
    fn refuses_oversized_and_non_objects() {
        assert!(HookInput::read(&b"{\"a\":\"0123456789\"}"[..], 5).is_err());
        assert!(HookInput::parse(b"[1]").is_err());
        assert!(HookInput::parse(b"   ").is_err());
    }
}
