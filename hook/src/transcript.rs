//! The Claude Code transcript: read it backwards, classify its entries, find the last turn.
//!
//! A transcript is JSON Lines. It can be gigabytes, its last line may be half written, and
//! no schema is published. So:
//!
//! - [`BackwardLines`] reads the file from the end in 64 KiB chunks, splits on byte `0x0A`
//!   before any UTF-8 decoding, ignores the bytes after the final newline, and caps the
//!   total bytes read. A line longer than 1 MiB is never held in memory: only its offsets
//!   are kept and it is parsed straight from the file.
//! - Each line is parsed by a streaming deserializer ([`parse_entry`]) that keeps only the
//!   few fields needed, never builds a `serde_json::Value`, and stops early (by returning
//!   a marked error) as soon as the line is known to be uninteresting: a `progress` or
//!   `file-history-snapshot` line, a sidechain or meta entry, a `tool_result`.
//! - [`classify`] turns an entry into what the turn finder needs ([`Entry`]), applying the
//!   skip rules of HOOK-NOTES: tool results, meta, compaction summaries, sidechains, command
//!   wrappers and their output, interrupts, task notifications, system reminders.
//! - [`find_last_turn`] walks back from the end, collects the final assistant reply and any
//!   prompts typed while Claude worked (`queued_command` attachments), and stops at the last
//!   prompt the person typed.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes read from the file per step backwards.
pub const CHUNK: usize = 64 * 1024;
/// A line longer than this is parsed from the file instead of from memory.
pub const MAX_LINE_IN_MEMORY: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Backward line reader
// ---------------------------------------------------------------------------------------

/// One complete line, newest first.
#[derive(Debug)]
pub enum Line<'a> {
    /// The line's bytes (without the newline).
    Mem(&'a [u8]),
    /// A line too long to hold: its offset and length in the file.
    Disk {
        /// Offset of the first byte.
        start: u64,
        /// Length in bytes, newline excluded.
        len: u64,
    },
}

/// Reads the complete lines of a file from the last to the first.
///
/// Invariant: `buf` holds the file bytes `[buf_start, buf_start + buf.len())`, and the byte
/// right after them is the newline that ends the next line to return.
#[derive(Debug)]
pub struct BackwardLines {
    file: File,
    buf: Vec<u8>,
    buf_start: u64,
    pending_truncate: Option<usize>,
    scratch: Vec<u8>,
    done: bool,
    bytes_read: u64,
    cap: u64,
    cap_hit: bool,
}

impl BackwardLines {
    /// Opens `path` and positions the reader at the final newline; the bytes after it (a
    /// line still being written) are ignored.
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut me = BackwardLines {
            file,
            buf: Vec::with_capacity(CHUNK),
            buf_start: len,
            pending_truncate: None,
            scratch: Vec::new(),
            done: false,
            bytes_read: 0,
            cap,
            cap_hit: false,
        };
        loop {
            if me.buf_start == 0 {
                // No newline at all: nothing complete to read.
                me.done = true;
                me.buf.clear();
                break;
            }
            if !me.read_before()? {
                break;
            }
            if let Some(i) = rfind_newline(&me.buf) {
                me.buf.truncate(i);
                break;
            }
            // Still inside the partial last line: drop it, keep looking.
            me.buf.clear();
        }
        Ok(me)
    }

    /// Bytes read from the file so far (scanning and parsing).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// True when reading stopped because the byte cap was reached.
    pub fn cap_hit(&self) -> bool {
        self.cap_hit
    }

    /// The previous complete line, or `None` at the start of the file or at the cap.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if let Some(keep) = self.pending_truncate.take() {
            self.buf.truncate(keep);
        }
        if self.done {
            return Ok(None);
        }
        loop {
            if let Some(i) = rfind_newline(&self.buf) {
                self.pending_truncate = Some(i);
                return Ok(Some(Line::Mem(&self.buf[i + 1..])));
            }
            if self.buf_start == 0 {
                self.done = true;
                return Ok(Some(Line::Mem(&self.buf[..])));
            }
            if self.buf.len() >= MAX_LINE_IN_MEMORY {
                return self.giant_line();
            }
            if !self.read_before()? {
                return Ok(None);
            }
        }
    }

    /// Prepends the chunk before `buf_start` to `buf`. False when the cap stops it.
    fn read_before(&mut self) -> io::Result<bool> {
        let n = (CHUNK as u64).min(self.buf_start) as usize;
        if !self.take_budget(n as u64) {
            return Ok(false);
        }
        let start = self.buf_start - n as u64;
        self.scratch.resize(n, 0);
        self.file.read_exact_at(&mut self.scratch[..n], start)?;
        self.buf.splice(0..0, self.scratch[..n].iter().copied());
        self.buf_start = start;
        Ok(true)
    }

    /// The current line is longer than [`MAX_LINE_IN_MEMORY`]: drop what is held and scan
    /// back (without keeping the bytes) to its start.
    fn giant_line(&mut self) -> io::Result<Option<Line<'static>>> {
        let end = self.buf_start + self.buf.len() as u64;
        self.buf.clear();
        self.buf.shrink_to(2 * CHUNK);
        loop {
            if self.buf_start == 0 {
                self.done = true;
                return Ok(Some(Line::Disk { start: 0, len: end }));
            }
            let n = (CHUNK as u64).min(self.buf_start) as usize;
            if !self.take_budget(n as u64) {
                return Ok(None);
            }
            let start = self.buf_start - n as u64;
            self.scratch.resize(n, 0);
            self.file.read_exact_at(&mut self.scratch[..n], start)?;
            self.buf_start = start;
            if let Some(i) = rfind_newline(&self.scratch[..n]) {
                self.buf.extend_from_slice(&self.scratch[..i]);
                let line_start = start + i as u64 + 1;
                return Ok(Some(Line::Disk {
                    start: line_start,
                    len: end - line_start,
                }));
            }
        }
    }

    fn take_budget(&mut self, n: u64) -> bool {
        if self.bytes_read + n > self.cap {
            self.cap_hit = true;
            self.done = true;
            return false;
        }
        self.bytes_read += n;
        true
    }

    /// Parses a [`Line::Disk`] straight from the file, reading no further than needed.
    fn parse_disk(&mut self, start: u64, len: u64, want_assistant: bool) -> Parsed {
        let budget = self.cap.saturating_sub(self.bytes_read);
        let end = start + len.min(budget);
        let mut reader = AtReader {
            file: &self.file,
            pos: start,
            end,
        };
        let entry = {
            let buffered = BufReader::with_capacity(CHUNK, &mut reader);
            parse_entry_from(
                &mut serde_json::Deserializer::from_reader(buffered),
                want_assistant,
            )
        };
        self.bytes_read += reader.pos - start;
        if matches!(entry, Parsed::Skipped) && len > budget {
            self.cap_hit = true;
            self.done = true;
        }
        entry
    }
}

/// A `Read` over `[pos, end)` of a file, by positioned reads.
struct AtReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = (out.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut out[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// Position of the last `\n` in `bytes`, word at a time.
pub fn rfind_newline(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut end = bytes.len();
    while !end.is_multiple_of(8) {
        end -= 1;
        if bytes[end] == b'\n' {
            return Some(end);
        }
    }
    while end >= 8 {
        let word = u64::from_le_bytes(bytes[end - 8..end].try_into().unwrap_or([0; 8]));
        let x = word ^ NL;
        if (x.wrapping_sub(LO) & !x & HI) != 0 {
            return bytes[end - 8..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| end - 8 + i);
        }
        end -= 8;
    }
    None
}

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

fn parse_entry_from<'de, D>(de: D, want_assistant: bool) -> Parsed
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

// ---------------------------------------------------------------------------------------
// Turn finder
// ---------------------------------------------------------------------------------------

/// Limits of one scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Cap on bytes read from the transcript.
    pub max_read_bytes: u64,
    /// Give up when this instant passes.
    pub deadline: Option<Instant>,
    /// False when the reply is already known (`last_assistant_message`): assistant lines
    /// are then skipped without parsing their content.
    pub want_reply: bool,
}

/// The last turn: what the person typed and what they saw last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Turn {
    /// The pieces of the prompt, oldest first (the typed prompt, then queued ones).
    pub pieces: Vec<PromptPiece>,
    /// The final assistant reply found in the transcript (`None`: no text after the prompt).
    pub reply: Option<String>,
}

impl Turn {
    /// The prompt text: every piece, separated by a blank line.
    pub fn prompt(&self) -> String {
        self.pieces
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A turn to capture.
    Turn(Turn),
    /// The last turn has no words to capture (the reason says why).
    Wordless(String),
    /// No prompt found (the reason says why).
    NotFound(String),
}

/// The result of [`find_last_turn`].
#[derive(Debug, Clone)]
pub struct Scan {
    /// What was found.
    pub found: Found,
    /// Transcript bytes read.
    pub bytes_read: u64,
    /// Complete lines looked at.
    pub lines: u64,
    /// True when the newest conversation entry is assistant text or an interrupt, i.e. the
    /// transcript has been written up to the end of the turn. False suggests it lags.
    pub settled: bool,
}

/// Walks the transcript back from its end to the last typed prompt.
///
/// The reply is the last assistant API message (lines sharing `message.id`) that has
/// visible text, its text blocks joined: what the person saw last.
pub fn find_last_turn(path: &Path, limits: ScanLimits) -> Result<Scan> {
    let mut lines = BackwardLines::open(path, limits.max_read_bytes)
        .map_err(|e| Error::io("cannot read transcript", path, e))?;
    let mut reply_id: Option<Option<String>> = None;
    let mut reply_parts: Vec<String> = Vec::new();
    let mut reply_closed = !limits.want_reply;
    let mut queued: Vec<PromptPiece> = Vec::new();
    let mut next_is_local_output = false;
    let mut count = 0u64;

    // The newest conversation entry: Some(true) for assistant text or an interrupt.
    let mut tail: Option<bool> = None;
    let finish = |found: Found, lines: &BackwardLines, count: u64, tail: Option<bool>| Scan {
        found,
        bytes_read: lines.bytes_read(),
        lines: count,
        settled: tail.unwrap_or(false),
    };

    loop {
        if let Some(deadline) = limits.deadline
            && Instant::now() >= deadline
        {
            return Ok(finish(
                Found::NotFound(format!(
                    "time budget ran out after reading {} bytes",
                    lines.bytes_read()
                )),
                &lines,
                count,
                tail,
            ));
        }
        let want_assistant = !reply_closed;
        let raw = match lines
            .next_line()
            .map_err(|e| Error::io("cannot read transcript", path, e))?
        {
            None => break,
            Some(Line::Mem(bytes)) => parse_entry(bytes, want_assistant),
            Some(Line::Disk { start, len }) => lines.parse_disk(start, len, want_assistant),
        };
        count += 1;
        let entry = match raw {
            Parsed::Entry(e) => classify(*e),
            Parsed::ToolResult => Entry::ToolResult,
            Parsed::Assistant => Entry::AssistantOther { id: None },
            Parsed::Skipped => Entry::Skip,
        };
        if tail.is_none() {
            tail = match &entry {
                Entry::AssistantText { .. } | Entry::Interrupt => Some(true),
                Entry::Skip | Entry::LocalOutput | Entry::LocalCommandEcho | Entry::Queued(_) => {
                    None
                }
                _ => Some(false),
            };
        }
        match entry {
            Entry::Skip => {}
            Entry::Interrupt | Entry::ToolResult | Entry::LocalCommandEcho => {
                next_is_local_output = false
            }
            Entry::LocalOutput => next_is_local_output = true,
            Entry::AssistantText { id, text } => {
                next_is_local_output = false;
                if reply_closed {
                    continue;
                }
                match &reply_id {
                    None => {
                        reply_id = Some(id);
                        reply_parts.push(text);
                    }
                    Some(current) if current.is_some() && *current == id => reply_parts.push(text),
                    Some(_) => reply_closed = true,
                }
            }
            Entry::AssistantOther { id } => {
                next_is_local_output = false;
                if let Some(current) = &reply_id
                    && (current.is_none() || *current != id)
                {
                    reply_closed = true;
                }
            }
            Entry::Queued(piece) => queued.push(piece),
            Entry::Prompt(piece) => {
                return Ok(finish(
                    turn(Some(piece), queued, reply_parts),
                    &lines,
                    count,
                    tail,
                ));
            }
            Entry::Command(piece) => {
                if next_is_local_output {
                    let reason = format!("`{}` is a local command", piece.text);
                    return Ok(finish(
                        wordless(reason, queued, reply_parts),
                        &lines,
                        count,
                        tail,
                    ));
                }
                return Ok(finish(
                    turn(Some(piece), queued, reply_parts),
                    &lines,
                    count,
                    tail,
                ));
            }
            Entry::Wordless(reason) => {
                return Ok(finish(
                    wordless(reason, queued, reply_parts),
                    &lines,
                    count,
                    tail,
                ));
            }
        }
    }
    let reason = if lines.cap_hit() {
        format!(
            "no prompt in the last {} bytes (ATOCORE_CAPTURE_MAX_READ_BYTES)",
            lines.bytes_read()
        )
    } else {
        "no prompt typed by a person in the transcript".to_string()
    };
    Ok(finish(
        wordless(reason, queued, reply_parts),
        &lines,
        count,
        tail,
    ))
}

fn turn(first: Option<PromptPiece>, mut queued: Vec<PromptPiece>, mut parts: Vec<String>) -> Found {
    queued.reverse();
    parts.reverse();
    let pieces: Vec<PromptPiece> = first.into_iter().chain(queued).collect();
    let reply = if parts.is_empty() {
        None
    } else {
        Some(parts.join("\n\n"))
    };
    Found::Turn(Turn { pieces, reply })
}

/// A turn without a typed prompt still captures the prompts queued into it.
fn wordless(reason: String, queued: Vec<PromptPiece>, parts: Vec<String>) -> Found {
    if queued.is_empty() {
        if reason.starts_with("no prompt") {
            Found::NotFound(reason)
        } else {
            Found::Wordless(reason)
        }
    } else {
        turn(None, queued, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines_of(content: &[u8]) -> Vec<Vec<u8>> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        let mut r = BackwardLines::open(f.path(), u64::MAX).unwrap();
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            match l {
                Line::Mem(b) => out.push(b.to_vec()),
                Line::Disk { start, len } => {
                    let mut v = vec![0; len as usize];
                    f.as_file().read_exact_at(&mut v, start).unwrap();
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn backward_lines_ignore_partial_last_line() {
        assert_eq!(lines_of(b"a\nbb\nccc"), vec![b"bb".to_vec(), b"a".to_vec()]);
        assert_eq!(lines_of(b"a\nbb\n"), vec![b"bb".to_vec(), b"a".to_vec()]);
        assert!(lines_of(b"no newline").is_empty());
        assert!(lines_of(b"").is_empty());
    }

    #[test]
    fn backward_lines_across_chunks_and_giant_lines() {
        let mut content = Vec::new();
        let mut expected = Vec::new();
        for (i, size) in [
            10,
            CHUNK - 3,
            5,
            CHUNK * 3,
            MAX_LINE_IN_MEMORY * 2 + 17,
            1,
            0,
            7,
        ]
        .into_iter()
        .enumerate()
        {
            let line: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            content.extend_from_slice(&line);
            content.push(b'\n');
            expected.push(line);
        }
        expected.reverse();
        assert_eq!(lines_of(&content), expected);
    }

    #[test]
    fn rfind_newline_matches_naive() {
        let mut v = [b'x'; 100];
        for pos in [0usize, 1, 7, 8, 9, 63, 64, 99] {
            v.iter_mut().for_each(|b| *b = b'x');
            v[pos] = b'\n';
            for len in 0..=100 {
                let naive = v[..len].iter().rposition(|&b| b == b'\n');
                assert_eq!(rfind_newline(&v[..len]), naive, "pos {pos} len {len}");
            }
        }
    }

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
