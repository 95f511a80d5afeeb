//! One transcript line: a streaming parser that keeps only what the turn finder needs,
//! and the classification of the result ([`Entry`]) by the skip rules of docs/design.md §6.
//!
//! The parser never builds a `serde_json::Value`. It stops early (by returning a marked
//! error) as soon as a line is known to be uninteresting: a `progress` or
//! `file-history-snapshot` line, a sidechain or meta entry, a `tool_result`, an assistant
//! line when the reply is already known. Large fields it does not keep (tool inputs and
//! results, images, thinking) are skipped without being allocated.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Streaming entry parser
// ---------------------------------------------------------------------------------------

/// The fields of one transcript line that the turn finder looks at.
#[derive(Debug, Default)]
pub struct RawEntry {
    kind: Option<String>,
    uuid: Option<String>,
    timestamp: Option<String>,
    prompt_id: Option<String>,
    content: Option<String>,
    message: Option<RawMessage>,
    attachment: Option<RawAttachment>,
}

#[derive(Debug, Default)]
struct RawMessage {
    id: Option<String>,
    content: Option<RawContent>,
}

#[derive(Debug)]
enum RawContent {
    Text(String),
    Blocks(Vec<RawBlock>),
}

#[derive(Debug, Default)]
struct RawBlock {
    kind: Option<String>,
    text: Option<String>,
}

#[derive(Debug, Default)]
struct RawAttachment {
    kind: Option<String>,
    command_mode: Option<String>,
    origin_kind: Option<String>,
    is_meta: bool,
    prompt: Option<RawContent>,
}

/// The result of parsing one line.
#[derive(Debug)]
pub enum Parsed {
    /// The fields kept.
    Entry(Box<RawEntry>),
    /// A `user` entry carrying a `tool_result` (recognised early, not read further).
    ToolResult,
    /// An assistant line not wanted (the reply is known): recognised early, not read.
    Assistant,
    /// Recognised early as uninteresting, or not JSON.
    Skipped,
}

/// Why a parse stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    Uninteresting,
    ToolResult,
    Assistant,
}

/// Parses one line held in memory.
pub fn parse_entry(line: &[u8], want_assistant: bool) -> Parsed {
    parse_entry_from(
        &mut serde_json::Deserializer::from_slice(line),
        want_assistant,
    )
}

pub(crate) fn parse_entry_from<'de, D>(de: D, want_assistant: bool) -> Parsed
where
    D: Deserializer<'de>,
{
    let stop = Cell::new(Stop::No);
    let seed = EntrySeed {
        want_assistant,
        skipped: &stop,
    };
    match seed.deserialize(de) {
        Ok(e) => Parsed::Entry(Box::new(e)),
        Err(_) if stop.get() == Stop::ToolResult => Parsed::ToolResult,
        Err(_) if stop.get() == Stop::Assistant => Parsed::Assistant,
        Err(_) => Parsed::Skipped,
    }
}

const SKIP: &str = "atocore-capture: entry skipped early";

fn skip<E: de::Error, T>(flag: &Cell<Stop>) -> std::result::Result<T, E> {
    flag.set(Stop::Uninteresting);
    Err(E::custom(SKIP))
}

fn skip_tool_result<E: de::Error, T>(flag: &Cell<Stop>) -> std::result::Result<T, E> {
    flag.set(Stop::ToolResult);
    Err(E::custom(SKIP))
}

fn interesting_type(kind: &str, want_assistant: bool) -> bool {
    match kind {
        "user" | "system" | "attachment" => true,
        "assistant" => want_assistant,
        _ => false,
    }
}

struct EntrySeed<'a> {
    want_assistant: bool,
    skipped: &'a Cell<Stop>,
}

enum Field {
    Type,
    Uuid,
    Timestamp,
    PromptId,
    Content,
    Message,
    Attachment,
    SkipIfTrue,
    Other,
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Field, E> {
                Ok(match v {
                    "type" => Field::Type,
                    "uuid" => Field::Uuid,
                    "timestamp" => Field::Timestamp,
                    "promptId" => Field::PromptId,
                    "content" => Field::Content,
                    "message" => Field::Message,
                    "attachment" => Field::Attachment,
                    "isSidechain" | "isMeta" | "isCompactSummary" | "isVisibleInTranscriptOnly" => {
                        Field::SkipIfTrue
                    }
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<RawEntry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a transcript entry object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawEntry, A::Error> {
        let mut e = RawEntry::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Type => {
                    e.kind = map.next_value::<LStr>()?.0;
                    match e.kind.as_deref() {
                        Some("assistant") if !self.want_assistant => {
                            self.skipped.set(Stop::Assistant);
                            return Err(de::Error::custom(SKIP));
                        }
                        Some(k) if interesting_type(k, self.want_assistant) => {}
                        _ => return skip(self.skipped),
                    }
                }
                Field::SkipIfTrue => {
                    if map.next_value::<LBool>()?.0 {
                        return skip(self.skipped);
                    }
                }
                Field::Uuid => e.uuid = map.next_value::<LStr>()?.0,
                Field::Timestamp => e.timestamp = map.next_value::<LStr>()?.0,
                Field::PromptId => e.prompt_id = map.next_value::<LStr>()?.0,
                Field::Content => e.content = map.next_value::<LStr>()?.0,
                Field::Message => {
                    e.message = Some(map.next_value_seed(MessageSeed {
                        skipped: self.skipped,
                    })?)
                }
                Field::Attachment => {
                    e.attachment = Some(map.next_value_seed(AttachmentSeed {
                        skipped: self.skipped,
                    })?)
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(e)
    }
}

/// A string, or `None` for any other JSON value (which is skipped without allocating).
struct LStr(Option<String>);

impl<'de> de::Deserialize<'de> for LStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<LStr, E> {
                Ok(LStr(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<LStr, E> {
                Ok(LStr(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<LStr, E> {
                Ok(LStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<LStr, E> {
                Ok(LStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<LStr, E> {
                Ok(LStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<LStr, E> {
                Ok(LStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<LStr, E> {
                Ok(LStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<LStr, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<LStr, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `true` only for JSON `true`; anything else is `false`.
struct LBool(bool);

impl<'de> de::Deserialize<'de> for LBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<LBool, E> {
                Ok(LBool(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<LBool, E> {
                Ok(LBool(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<LBool, E> {
                Ok(LBool(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<LBool, E> {
                Ok(LBool(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<LBool, E> {
                Ok(LBool(false))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<LBool, E> {
                Ok(LBool(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> std::result::Result<LBool, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LBool(false))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<LBool, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LBool(false))
            }
        }
        d.deserialize_any(V)
    }
}

struct MessageSeed<'a> {
    skipped: &'a Cell<Stop>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = RawMessage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<RawMessage, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = RawMessage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawMessage, A::Error> {
        let mut m = RawMessage::default();
        while let Some(key) = map.next_key::<LStr>()? {
            match key.0.as_deref() {
                Some("id") => m.id = map.next_value::<LStr>()?.0,
                Some("content") => {
                    m.content = map.next_value_seed(ContentSeed {
                        skipped: self.skipped,
                    })?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<RawMessage, E> {
        Ok(RawMessage::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<RawMessage, E> {
        Ok(RawMessage::default())
    }
}

/// `message.content` or `attachment.prompt`: a string or an array of blocks.
struct ContentSeed<'a> {
    skipped: &'a Cell<Stop>,
}

impl<'de> DeserializeSeed<'de> for ContentSeed<'_> {
    type Value = Option<RawContent>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ContentSeed<'_> {
    type Value = Option<RawContent>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of content blocks")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Some(RawContent::Text(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Some(RawContent::Text(v)))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut blocks = Vec::new();
        while let Some(b) = seq.next_element_seed(BlockSeed {
            skipped: self.skipped,
        })? {
            blocks.push(b);
        }
        Ok(Some(RawContent::Blocks(blocks)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// One content block; a `tool_result` block ends the parse at once (never a prompt, never
/// reply text, and often huge).
struct BlockSeed<'a> {
    skipped: &'a Cell<Stop>,
}

impl<'de> DeserializeSeed<'de> for BlockSeed<'_> {
    type Value = RawBlock;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<RawBlock, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BlockSeed<'_> {
    type Value = RawBlock;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content block")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawBlock, A::Error> {
        let mut b = RawBlock::default();
        while let Some(key) = map.next_key::<LStr>()? {
            match key.0.as_deref() {
                Some("type") => {
                    b.kind = map.next_value::<LStr>()?.0;
                    if b.kind.as_deref() == Some("tool_result") {
                        return skip_tool_result(self.skipped);
                    }
                }
                Some("text") => b.text = map.next_value::<LStr>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(b)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock {
            kind: Some("text".into()),
            text: Some(v.to_owned()),
        })
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<RawBlock, E> {
        Ok(RawBlock::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<RawBlock, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawBlock::default())
    }
}

struct AttachmentSeed<'a> {
    skipped: &'a Cell<Stop>,
}

impl<'de> DeserializeSeed<'de> for AttachmentSeed<'_> {
    type Value = RawAttachment;
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<RawAttachment, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttachmentSeed<'_> {
    type Value = RawAttachment;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attachment object")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<RawAttachment, A::Error> {
        let mut a = RawAttachment::default();
        while let Some(key) = map.next_key::<LStr>()? {
            match key.0.as_deref() {
                Some("type") => {
                    a.kind = map.next_value::<LStr>()?.0;
                    if a.kind.as_deref() != Some("queued_command") {
                        // Other attachments (files, memories, hook output) can be large and
                        // are never the person's words.
                        return skip(self.skipped);
                    }
                }
                Some("commandMode") => a.command_mode = map.next_value::<LStr>()?.0,
                Some("isMeta") => a.is_meta = map.next_value::<LBool>()?.0,
                Some("origin") => a.origin_kind = map.next_value::<OriginKind>()?.0,
                Some("prompt") => {
                    a.prompt = map.next_value_seed(ContentSeed {
                        skipped: self.skipped,
                    })?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(a)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<RawAttachment, E> {
        Ok(RawAttachment::default())
    }
}

/// `origin.kind` of a queued command.
struct OriginKind(Option<String>);

impl<'de> de::Deserialize<'de> for OriginKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OriginKind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an origin object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<OriginKind, A::Error> {
                let mut kind = None;
                while let Some(key) = m.next_key::<LStr>()? {
                    if key.0.as_deref() == Some("kind") {
                        kind = m.next_value::<LStr>()?.0;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(OriginKind(kind))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<OriginKind, E> {
                Ok(OriginKind(Some(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<OriginKind, E> {
                Ok(OriginKind(None))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

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
