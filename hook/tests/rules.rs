//! Synthetic transcripts: one test per skip rule and edge case, through `extract` (the same
//! scan the hook does) and, where the delivery matters, through the hook.

use serde_json::json;

use crate::server::Server;
use crate::util::*;

fn env() -> Env {
    Env::new("http://127.0.0.1:9")
}

fn turn(p: &str, r: &str) -> Option<(String, Option<String>)> {
    Some((p.to_string(), Some(r.to_string())))
}

/// `P`, then the entry under test, then the reply: the entry must not be taken for the prompt.
fn around(entry: String) -> Vec<String> {
    vec![
        user("u-old", "an older prompt"),
        say("a-old", "m-old", "older reply"),
        user("u-p", "the real prompt"),
        tool_use("a-1", "m-1"),
        entry,
        say("a-2", "m-2", "the final reply"),
    ]
}

#[test]
fn entries_that_are_not_typed_prompts_are_skipped() {
    let env = env();
    let mut cases: Vec<(&str, String)> = vec![
        ("tool_result", tool_result("x", "output")),
        (
            "tool_result with text",
            user_with(
                "x",
                json!([{"type": "tool_result", "content": [{"type": "text", "text": "t"}], "tool_use_id": "t1"},
                       {"type": "text", "text": "more"}]),
                json!({}),
            ),
        ),
        (
            "isMeta",
            user_with("x", json!("expanded skill body"), json!({"isMeta": true})),
        ),
        (
            "isCompactSummary",
            user_with(
                "x",
                json!("summary of the chat"),
                json!({"isCompactSummary": true}),
            ),
        ),
        (
            "isVisibleInTranscriptOnly",
            user_with(
                "x",
                json!("shown only"),
                json!({"isVisibleInTranscriptOnly": true}),
            ),
        ),
        (
            "isSidechain",
            user("x", "a subagent's task prompt")
                .replace("\"isSidechain\":false", "\"isSidechain\":true"),
        ),
        (
            "Stop hook feedback",
            user_with(
                "x",
                json!("Stop hook feedback:\n[hook]: keep going"),
                json!({"isMeta": true}),
            ),
        ),
        (
            "interrupt (array)",
            user_with(
                "x",
                json!([{"type": "text", "text": "[Request interrupted by user for tool use]"}]),
                json!({}),
            ),
        ),
        (
            "interrupt (string)",
            user("x", "[Request interrupted by user]"),
        ),
        (
            "continued session",
            user(
                "x",
                "This session is being continued from a previous conversation that ran out of context.",
            ),
        ),
        ("empty", user("x", "   ")),
    ];
    for prefix in [
        "<local-command-stdout>",
        "<local-command-stderr>",
        "<local-command-caveat>",
        "<task-notification>",
        "<system-reminder>",
        "<user-prompt-submit-hook>",
        "<bash-input>",
        "<bash-stdout>",
        "<bash-stderr>",
    ] {
        // Leading whitespace does not hide a wrapper.
        cases.push((prefix, user("x", &format!("\n  {prefix}wrapped text"))));
    }
    for (name, entry) in cases {
        let t = env.write_transcript("t.jsonl", &around(entry));
        assert_eq!(
            env.extract(&t),
            turn("the real prompt", "the final reply"),
            "{name}"
        );
    }
}

#[test]
fn progress_snapshots_system_and_unknown_types_are_skipped() {
    let env = env();
    let t = env.write_transcript(
        "t.jsonl",
        &around(format!(
            "{}\n{}\n{}\n{}\n{}",
            progress("x1", 100),
            r#"{"type":"file-history-snapshot","messageId":"m","snapshot":{}}"#,
            system("x2", "stop_hook_summary", "ok"),
            r#"{"type":"future-kind","message":{"content":"not a prompt"}}"#,
            r#"{"type":"queue-operation","operation":"enqueue","content":"queued text"}"#,
        )),
    );
    assert_eq!(env.extract(&t), turn("the real prompt", "the final reply"));
}

#[test]
fn scanning_continues_across_a_compaction_boundary() {
    let env = env();
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-p", "refactor the parser"),
            tool_use("a-1", "m-1"),
            tool_result("r-1", "ok"),
            system("c-1", "compact_boundary", "Conversation compacted"),
            user_with(
                "c-2",
                json!("This session is being continued from a previous conversation. Summary: ..."),
                json!({"isCompactSummary": true, "isVisibleInTranscriptOnly": true}),
            ),
            say("a-2", "m-2", "Done refactoring."),
        ],
    );
    assert_eq!(
        env.extract(&t),
        turn("refactor the parser", "Done refactoring.")
    );
}

#[test]
fn reply_is_the_last_message_with_text_joined_across_its_lines() {
    let env = env();
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-p", "do it"),
            say("a-1", "m-1", "Let me look first."),
            tool_use("a-2", "m-1"),
            tool_result("r-1", "files"),
            say("a-3", "m-2", "\n\n"),
            think("a-4", "m-2", "hidden thoughts"),
            say("a-5", "m-2", "Part one."),
            tool_use("a-6", "m-2"),
            progress("p-1", 10),
            say("a-7", "m-2", "Part two."),
            tool_use("a-8", "m-3"),
            tool_result("r-2", "done"),
        ],
    );
    // The final message m-3 has no text; m-2 is the last one the person saw text from.
    assert_eq!(env.extract(&t), turn("do it", "Part one.\n\nPart two."));
}

#[test]
fn array_prompt_keeps_text_and_drops_images() {
    let env = env();
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD".repeat(1000)}});
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user_with(
                "u-p",
                json!([image, {"type": "text", "text": "what is in this picture?"}, {"type": "text", "text": "and this?"}]),
                json!({}),
            ),
            say("a-1", "m-1", "A cat."),
        ],
    );
    assert_eq!(
        env.extract(&t),
        turn("what is in this picture?\n\nand this?", "A cat.")
    );
    // An image alone: no words, nothing captured (and no older prompt picked instead).
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-old", "older"),
            say("a-0", "m-0", "old reply"),
            user_with("u-p", json!([image]), json!({})),
            say("a-1", "m-1", "A cat."),
        ],
    );
    assert_eq!(env.extract(&t), None);
}

#[test]
fn slash_command_policy() {
    let env = env();
    let cmd = |name: &str, args: &str| {
        format!(
            "<command-message>{name} is running…</command-message>\n<command-name>/{name}</command-name>\n<command-args>{args}</command-args>"
        )
    };
    // A custom command with arguments: the prompt is "/name args".
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-old", "older"),
            say("a-0", "m-0", "old reply"),
            user("u-c", &cmd("review", "  the parser module ")),
            user_with(
                "u-m",
                json!([{"type": "text", "text": "Review the code..."}]),
                json!({"isMeta": true}),
            ),
            say("a-1", "m-1", "Reviewed."),
        ],
    );
    assert_eq!(
        env.extract(&t),
        turn("/review the parser module", "Reviewed.")
    );
    // Without arguments: nothing captured, and the older prompt is not paired with its reply.
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-old", "older"),
            say("a-0", "m-0", "old reply"),
            user("u-c", &cmd("init", "")),
            user_with(
                "u-m",
                json!("Please analyze this codebase"),
                json!({"isMeta": true}),
            ),
            say("a-1", "m-1", "Created CLAUDE.md."),
        ],
    );
    assert_eq!(env.extract(&t), None);
    // A local command with arguments (its output follows it) is not a prompt either.
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-old", "older"),
            say("a-0", "m-0", "old reply"),
            user("u-c", &cmd("model", "opus")),
            system(
                "s-1",
                "local_command",
                "<local-command-stdout>Set model to opus</local-command-stdout>",
            ),
            user(
                "u-w",
                "<task-notification>background job done</task-notification>",
            ),
            say("a-1", "m-1", "The job finished."),
        ],
    );
    assert_eq!(env.extract(&t), None);
}

#[test]
fn prompts_queued_while_claude_worked_join_the_prompt() {
    let env = env();
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-p", "fix the tests"),
            tool_use("a-1", "m-1"),
            queued("q-1", "and update the changelog"),
            r#"{"type":"queue-operation","operation":"remove","content":"and update the changelog"}"#.to_string(),
            tool_result("r-1", "ok"),
            say("a-2", "m-2", "Tests fixed, changelog updated."),
        ],
    );
    assert_eq!(
        env.extract(&t),
        turn(
            "fix the tests\n\nand update the changelog",
            "Tests fixed, changelog updated."
        )
    );
}

#[test]
fn partial_last_line_and_garbage_lines_are_ignored() {
    let env = env();
    let lines = vec![
        user("u-p", "the prompt"),
        "{not json at all".to_string(),
        "\u{0}\u{1}binary".to_string(),
        String::new(),
        say("a-1", "m-1", "the reply"),
    ];
    let t = env.write_transcript("t.jsonl", &lines);
    // Half a line being written: a user entry that would otherwise be the prompt.
    let mut text = std::fs::read(&t).unwrap();
    text.extend_from_slice(br#"{"type":"user","message":{"content":"half writ"#);
    std::fs::write(&t, &text).unwrap();
    assert_eq!(env.extract(&t), turn("the prompt", "the reply"));
    // Invalid UTF-8 inside a line: that line is skipped, the rest still works.
    let t = env.write_transcript("t.jsonl", &lines);
    let mut bytes = std::fs::read(&t).unwrap();
    bytes.extend_from_slice(b"{\"type\":\"user\",\"message\":{\"content\":\"\xff\xfe\"}}\n");
    std::fs::write(&t, &bytes).unwrap();
    assert_eq!(env.extract(&t), turn("the prompt", "the reply"));
}

#[test]
fn utf8_split_across_chunk_boundaries() {
    let env = env();
    // A long multi-byte reply and prompt; pad so a 64 KiB chunk boundary (counted from the
    // end of the file) falls inside a multi-byte character of each.
    let reply: String = "é日本語🙂".repeat(12_000);
    let prompt: String = "プロンプト🙂".repeat(9_000);
    for pad in 0..4 {
        let lines = vec![
            user("u-p", &prompt),
            say("a-1", "m-1", &reply),
            progress("p-1", 10 + pad),
        ];
        let t = env.write_transcript("t.jsonl", &lines);
        let bytes = std::fs::read(&t).unwrap();
        let len = bytes.len();
        let split_inside = (1..6).any(|k| {
            let b = len.checked_sub(k * 65536).map(|i| bytes[i]);
            b.is_some_and(|b| (0x80..0xc0).contains(&b))
        });
        assert_eq!(env.extract(&t), turn(&prompt, &reply), "pad {pad}");
        if split_inside {
            return;
        }
    }
    panic!("no padding put a chunk boundary inside a character");
}

#[test]
fn huge_lines_are_read_without_holding_them() {
    let env = env();
    let big = "x".repeat(3 << 20);
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": big}});
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-old", "older"),
            user_with(
                "u-p",
                json!([{"type": "text", "text": "describe"}, image]),
                json!({}),
            ),
            tool_use("a-1", "m-1"),
            tool_result("r-1", &big),
            say("a-2", "m-2", "A big picture."),
            progress("p-1", 3 << 20),
            user_with(
                "u-w",
                json!(format!("<system-reminder>{big}")),
                json!({"isMeta": true}),
            ),
        ],
    );
    assert_eq!(env.extract(&t), turn("describe", "A big picture."));
}

#[test]
fn byte_cap_stops_the_scan() {
    let mut env = env();
    let mut lines = vec![user("u-p", "far away prompt")];
    for i in 0..400 {
        lines.push(progress(&format!("p-{i}"), 1000));
    }
    lines.push(say("a-1", "m-1", "reply"));
    let t = env.write_transcript("t.jsonl", &lines);
    assert_eq!(env.extract(&t), turn("far away prompt", "reply"));
    env.set("ATOCORE_CAPTURE_MAX_READ_BYTES", "131072");
    let (_, v) = env.json(&["extract", t.to_str().unwrap()]);
    assert_eq!(v["found"], "not_found", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("ATOCORE_CAPTURE_MAX_READ_BYTES")
    );
    assert!(v["bytes_read"].as_u64().unwrap() <= 131072);
}

#[test]
fn last_assistant_message_wins_over_a_lagging_transcript() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user("u-p", "summarise the log"),
            say("a-1", "m-1", "Reading it."),
            tool_use("a-2", "m-1"),
            tool_result("r-1", "log lines"),
        ],
    );
    let started = std::time::Instant::now();
    env.hook(&stop_input(
        "s1",
        &t,
        "/work/proj",
        json!({"last_assistant_message": "The log shows three restarts."}),
    ));
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["prompt"], "summarise the log");
    assert_eq!(bodies[0]["response"], "The log shows three restarts.");
}

#[test]
fn lagging_transcript_without_last_assistant_message_is_read_again() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let lines = vec![
        user("u-p", "summarise the log"),
        say("a-1", "m-1", "Reading it."),
        tool_use("a-2", "m-1"),
        tool_result("r-1", "log lines"),
    ];
    let t = env.write_transcript("t.jsonl", &lines);
    let path = t.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(60));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(
            &mut f,
            format!("{}\n", say("a-3", "m-2", "Three restarts.")).as_bytes(),
        )
        .unwrap();
    });
    env.hook(&stop_input("s1", &t, "/work/proj", json!({})));
    writer.join().unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["response"], "Three restarts.");
}

/// A custom command with arguments, then (after its reply) a local command echoed only as
/// `system` lines, then a wake-up: the output of the later local command must not make the
/// custom command look local, also when the reply comes from stdin (assistant lines unread).
#[test]
fn a_later_local_command_does_not_hide_an_earlier_custom_command() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user(
                "u-c",
                "<command-name>/review</command-name>\n<command-args>the parser</command-args>",
            ),
            say("a-1", "m-1", "Reviewed."),
            system(
                "s-1",
                "local_command",
                "<command-name>/model</command-name>\n<command-args></command-args>",
            ),
            system(
                "s-2",
                "local_command",
                "<local-command-stdout>Kept model</local-command-stdout>",
            ),
            user("u-n", "<task-notification>job done</task-notification>"),
            say("a-2", "m-2", "The job is done."),
        ],
    );
    assert_eq!(
        env.extract(&t),
        turn("/review the parser", "The job is done.")
    );
    env.hook(&stop_input(
        "s1",
        &t,
        "/work/proj",
        json!({"last_assistant_message": "The job is done."}),
    ));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["prompt"], "/review the parser");
}
