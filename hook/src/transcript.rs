//! The Claude Code transcript: read it backwards, classify its entries, find the last turn.
//!
//! A transcript is JSON Lines. It can be gigabytes, its last line may be half written, and
//! no schema is published. So:
//!
//! - [`BackwardLines`] reads the file from the end in 64 KiB chunks, splits on byte `0x0A`
//!   before any UTF-8 decoding, ignores the bytes after the final newline, and caps the
//!   total bytes read. A line longer than 1 MiB is never held in memory: only its offsets
//!   are kept and it is parsed straight from the file.
//! - Each line is parsed and classified by [`crate::entry`] (a streaming parser that keeps
//!   only the fields needed and stops early on uninteresting lines; the skip rules).
//! - [`find_last_turn`] walks back from the end, collects the final assistant reply and any
//!   prompts typed while Claude worked (`queued_command` attachments), and stops at the last
//!   prompt the person typed.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::classify::{Entry, PromptPiece, classify};
use crate::error::{Error, Result};
use crate::line_parser::{Parsed, parse_entry, parse_entry_from};

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
}
