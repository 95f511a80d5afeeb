//! What one parsed transcript line means to the turn finder ([`Entry`]): the skip rules
//! of docs/design.md §6 (which `user` entries are not a typed prompt), slash commands,
//! queued prompts, and each prompt piece's stable identity for dedup.

use sha2::{Digest, Sha256};

use crate::line_parser::{RawBlock, RawContent, RawEntry};

/// Text that starts a `user` entry which is not a typed prompt (checked after leading
/// whitespace). Command wrappers are handled separately.
pub const NOT_A_PROMPT_PREFIXES: &[&str] = &[
    "<local-command-caveat>",
    "<task-notification>",
    "<system-reminder>",
    "<user-prompt-submit-hook>",
    "[Request interrupted by user",
    "This session is being continued from a previous conversation",
    "<bash-input>",
    "<bash-stdout>",
    "<bash-stderr>",
];

/// Output of a local slash command (`/model`, `/mcp`, ...).
pub const LOCAL_OUTPUT_PREFIXES: &[&str] = &["<local-command-stdout>", "<local-command-stderr>"];

/// A slash command invocation.
pub const COMMAND_PREFIXES: &[&str] = &["<command-name>", "<command-message>", "<command-args>"];

/// Where a piece of the captured prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceKind {
    /// A `user` entry with the person's text.
    Typed,
    /// A custom slash command with arguments, rendered `/name args`.
    Command,
    /// A prompt typed while Claude worked, folded into the running turn.
    Queued,
}

/// One piece of what the person typed in a turn, with a stable identity for dedup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromptPiece {
    /// `uuid:<entry uuid>`, else `promptId:<id>`, else `sha256:<hash of timestamp+text>`.
    pub identity: String,
    /// The text.
    pub text: String,
    /// Its origin.
    pub kind: PieceKind,
}

/// What one transcript line means to the turn finder.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not relevant (or not parsable).
    Skip,
    /// An assistant line with visible text.
    AssistantText {
        /// `message.id`, shared by the lines of one API message.
        id: Option<String>,
        /// Its text blocks, trimmed, joined by a blank line.
        text: String,
    },
    /// An assistant line without visible text (tool_use, thinking, blank text).
    AssistantOther {
        /// `message.id`.
        id: Option<String>,
    },
    /// Output of a local slash command.
    LocalOutput,
    /// A `system` echo of a local slash command (`<command-name>/model...`): the output
    /// after it is its own.
    LocalCommandEcho,
    /// A `tool_result` user entry (the turn is still going on after it).
    ToolResult,
    /// `[Request interrupted by user...]`: the turn ended without a reply.
    Interrupt,
    /// A typed prompt.
    Prompt(PromptPiece),
    /// A slash command with arguments (a prompt unless it turns out to be local).
    Command(PromptPiece),
    /// A turn started without words: a slash command without arguments, an image alone.
    Wordless(String),
    /// A prompt typed while Claude worked (`queued_command` attachment).
    Queued(PromptPiece),
}

/// Classifies a parsed entry.
pub fn classify(e: RawEntry) -> Entry {
    match e.kind.as_deref() {
        Some("assistant") => {
            let Some(msg) = e.message else {
                return Entry::Skip;
            };
            let text = match msg.content {
                Some(RawContent::Text(t)) => t.trim().to_string(),
                Some(RawContent::Blocks(blocks)) => join_text_blocks(&blocks),
                None => String::new(),
            };
            if text.is_empty() {
                Entry::AssistantOther { id: msg.id }
            } else {
                Entry::AssistantText { id: msg.id, text }
            }
        }
        Some("user") => {
            let Some(content) = e.message.and_then(|m| m.content) else {
                return Entry::Skip;
            };
            let text = match content {
                RawContent::Text(t) => t,
                RawContent::Blocks(blocks) => {
                    let text = join_text_blocks(&blocks);
                    if text.is_empty() {
                        let images = blocks.iter().any(|b| b.kind.as_deref() == Some("image"));
                        return if images {
                            Entry::Wordless("the prompt holds images but no text".into())
                        } else {
                            Entry::Skip
                        };
                    }
                    text
                }
            };
            classify_user_text(text, &e.uuid, &e.prompt_id, &e.timestamp)
        }
        Some("system") => match e.content.as_deref().map(str::trim_start) {
            Some(c) if LOCAL_OUTPUT_PREFIXES.iter().any(|p| c.starts_with(p)) => Entry::LocalOutput,
            Some(c) if COMMAND_PREFIXES.iter().any(|p| c.starts_with(p)) => Entry::LocalCommandEcho,
            _ => Entry::Skip,
        },
        Some("attachment") => {
            let Some(a) = e.attachment else {
                return Entry::Skip;
            };
            let prompt_mode = matches!(a.command_mode.as_deref(), None | Some("prompt"));
            let human = matches!(a.origin_kind.as_deref(), None | Some("human"));
            if a.kind.as_deref() != Some("queued_command") || a.is_meta || !prompt_mode || !human {
                return Entry::Skip;
            }
            let text = match a.prompt {
                Some(RawContent::Text(t)) => t.trim().to_string(),
                Some(RawContent::Blocks(b)) => join_text_blocks(&b),
                None => String::new(),
            };
            let starts = |ps: &[&str]| ps.iter().any(|p| text.starts_with(p));
            if text.is_empty()
                || starts(NOT_A_PROMPT_PREFIXES)
                || starts(LOCAL_OUTPUT_PREFIXES)
                || starts(COMMAND_PREFIXES)
            {
                return Entry::Skip;
            }
            Entry::Queued(PromptPiece {
                identity: identity(&e.uuid, &None, &text, &e.timestamp),
                text,
                kind: PieceKind::Queued,
            })
        }
        _ => Entry::Skip,
    }
}

fn classify_user_text(
    text: String,
    uuid: &Option<String>,
    prompt_id: &Option<String>,
    timestamp: &Option<String>,
) -> Entry {
    let t = text.trim();
    if t.starts_with("[Request interrupted by user") {
        return Entry::Interrupt;
    }
    if t.is_empty() || NOT_A_PROMPT_PREFIXES.iter().any(|p| t.starts_with(p)) {
        return Entry::Skip;
    }
    if LOCAL_OUTPUT_PREFIXES.iter().any(|p| t.starts_with(p)) {
        return Entry::LocalOutput;
    }
    if COMMAND_PREFIXES.iter().any(|p| t.starts_with(p)) {
        let name = tag(t, "command-name")
            .or_else(|| tag(t, "command-message").and_then(|m| m.split_whitespace().next()))
            .unwrap_or("")
            .trim();
        let name = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/{name}")
        };
        let args = tag(t, "command-args").unwrap_or("").trim();
        if args.is_empty() {
            return Entry::Wordless(format!(
                "the turn was started by `{name}` without arguments"
            ));
        }
        let rendered = format!("{name} {args}");
        return Entry::Command(PromptPiece {
            identity: identity(uuid, prompt_id, &rendered, timestamp),
            text: rendered,
            kind: PieceKind::Command,
        });
    }
    let text = t.to_string();
    Entry::Prompt(PromptPiece {
        identity: identity(uuid, prompt_id, &text, timestamp),
        text,
        kind: PieceKind::Typed,
    })
}

fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let from = s.find(&open)? + open.len();
    let to = s[from..].find(&close)? + from;
    Some(&s[from..to])
}

fn join_text_blocks(blocks: &[RawBlock]) -> String {
    let mut out = String::new();
    for b in blocks {
        if b.kind.as_deref() != Some("text") {
            continue;
        }
        let Some(t) = b.text.as_deref().map(str::trim) else {
            continue;
        };
        if t.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(t);
    }
    out
}

fn identity(
    uuid: &Option<String>,
    prompt_id: &Option<String>,
    text: &str,
    timestamp: &Option<String>,
) -> String {
    if let Some(u) = uuid.as_deref().filter(|u| !u.is_empty()) {
        return format!("uuid:{u}");
    }
    if let Some(p) = prompt_id.as_deref().filter(|p| !p.is_empty()) {
        return format!("promptId:{p}");
    }
    let mut h = Sha256::new();
    h.update(timestamp.as_deref().unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_parser::{Parsed, parse_entry};

    #[test]
    fn early_skip_and_lenient_fields() {
        let skipped = |line: &[u8], want| matches!(parse_entry(line, want), Parsed::Skipped);
        assert!(skipped(br#"{"type":"progress","data":{"x":1}}"#, true));
        assert!(skipped(br#"{"isSidechain":true,"type":"user"}"#, true));
        assert!(matches!(
            parse_entry(br#"{"type":"assistant","message":{}}"#, false),
            Parsed::Assistant
        ));
        assert!(skipped(
            br#"{"type":"user","message":{"content":"hi"}"#,
            true
        ));
        assert!(matches!(
            parse_entry(
                br#"{"type":"user","message":{"content":[{"type":"tool_result","content":"x"}]}}"#,
                true
            ),
            Parsed::ToolResult
        ));
        let Parsed::Entry(e) = parse_entry(
            br#"{"type":"user","isMeta":"odd","uuid":5,"message":{"content":"hi"}}"#,
            true,
        ) else {
            panic!("not parsed")
        };
        assert!(
            matches!(classify(*e), Entry::Prompt(p) if p.text == "hi" && p.identity.starts_with("sha256:"))
        );
    }
}
