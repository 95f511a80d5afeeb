//! One transcript line: a streaming parser that keeps only what the turn finder needs
//! ([`RawEntry`]); [`crate::classify`] then says what the entry means.
//!
//! The parser never builds a `serde_json::Value`. It stops early (by returning a marked
//! error) as soon as a line is known to be uninteresting: a `progress` or
//! `file-history-snapshot` line, a sidechain or meta entry, a `tool_result`, an assistant
//! line when the reply is already known. Large fields it does not keep (tool inputs and
//! results, images, thinking) are skipped without being allocated.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The fields of one transcript line that the turn finder looks at.
#[derive(Debug, Default)]
pub struct RawEntry {
    pub(crate) kind: Option<String>,
    pub(crate) uuid: Option<String>,
    pub(crate) timestamp: Option<String>,
    pub(crate) prompt_id: Option<String>,
    pub(crate) content: Option<String>,
    pub(crate) message: Option<RawMessage>,
    pub(crate) attachment: Option<RawAttachment>,
}

#[derive(Debug, Default)]
pub(crate) struct RawMessage {
    pub(crate) id: Option<String>,
    pub(crate) content: Option<RawContent>,
}

#[derive(Debug)]
pub(crate) enum RawContent {
    Text(String),
    Blocks(Vec<RawBlock>),
}

#[derive(Debug, Default)]
pub(crate) struct RawBlock {
    pub(crate) kind: Option<String>,
    pub(crate) text: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct RawAttachment {
    pub(crate) kind: Option<String>,
    pub(crate) command_mode: Option<String>,
    pub(crate) origin_kind: Option<String>,
    pub(crate) is_meta: bool,
    pub(crate) prompt: Option<RawContent>,
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
