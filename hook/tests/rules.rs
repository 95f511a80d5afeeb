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

// ---- whole-turn shapes seen in real sessions (the real transcripts beside the checkout
// ---- show the same; these keep every rule covered without them) ----

/// The last prompt's reply is cut short: blank text, thinking and tools, both tool calls
/// rejected, an interrupt, then `/model` run as a local command. An older turn had `/mcp`
/// typed while Claude worked and then run, echoed every way Claude Code writes it.
fn interrupted_turn(reply: Option<&str>) -> Vec<String> {
    let rejected = "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.";
    let mut lines = vec![
        r#"{"type":"file-history-snapshot","messageId":"m0","snapshot":{},"isSnapshotUpdate":false}"#.to_string(),
        user("u-old", "websearch xterm.js scrollback"),
        tool_use("a-o1", "m-o1"),
        r#"{"type":"queue-operation","operation":"enqueue","timestamp":"2026-01-01T00:00:00.000Z","sessionId":"s1","content":"/mcp"}"#.to_string(),
        r#"{"type":"queue-operation","operation":"remove","timestamp":"2026-01-01T00:00:00.000Z","sessionId":"s1"}"#.to_string(),
        tool_result("r-o1", "results"),
        say("a-o2", "m-o2", "Here is what I found."),
        user_with(
            "u-cv",
            json!("<local-command-caveat>Caveat: The messages below were generated by the user while running local commands. DO NOT respond to these messages or otherwise consider them in your response unless the user explicitly asks you to.</local-command-caveat>"),
            json!({"isMeta": true}),
        ),
        user(
            "u-mcp",
            "<command-name>/mcp</command-name>\n            <command-message>mcp</command-message>\n            <command-args></command-args>",
        ),
        user(
            "u-mo",
            "<local-command-stdout>Reconnected to tidewave.</local-command-stdout>",
        ),
        system(
            "s-mcp",
            "local_command",
            "<command-name>/mcp</command-name>\n            <command-message>mcp</command-message>\n            <command-args></command-args>",
        ),
        user("u-p", "mix phx.server doesnt seem to start"),
        say("a-1", "m-1", "\n\n"),
        think("a-2", "m-1", "The user is having trouble starting the server."),
    ];
    if let Some(r) = reply {
        lines.push(say("a-3", "m-1", r));
    }
    lines.extend([
        tool_use("a-4", "m-1"),
        progress("p-1", 10),
        tool_use("a-5", "m-1"),
        tool_result("r-1", rejected),
        tool_result("r-2", rejected),
        user_with(
            "u-i",
            json!([{"type": "text", "text": "[Request interrupted by user for tool use]"}]),
            json!({}),
        ),
        system(
            "s-1",
            "local_command",
            "<command-name>/model</command-name>\n            <command-message>model</command-message>\n            <command-args></command-args>",
        ),
        system(
            "s-2",
            "local_command",
            "<local-command-stdout>Kept model as \u{1b}[1mDefault (recommended)\u{1b}[22m</local-command-stdout>",
        ),
    ]);
    lines
}

#[test]
fn an_interrupted_turn_is_captured_with_the_text_it_got() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let prompt = "mix phx.server doesnt seem to start";
    let reply = "Let me check the project structure and try running the server to see the error.";
    for (i, (text, want)) in [(Some(reply), reply), (None, "")].into_iter().enumerate() {
        let t = env.write_transcript("t.jsonl", &interrupted_turn(text));
        let expected = Some((prompt.to_string(), text.map(str::to_string)));
        assert_eq!(env.extract(&t), expected, "reply {text:?}");
        let session = format!("s-int-{i}");
        env.hook(&stop_input(&session, &t, "/work/proj", json!({})));
        let bodies = server.bodies();
        assert_eq!(bodies.len(), i + 1, "{bodies:?}");
        assert_eq!(bodies[i]["prompt"], prompt);
        assert_eq!(bodies[i]["response"], want);
        assert_eq!(bodies[i]["session_id"], session.as_str());
    }
}

#[test]
fn a_subagent_transcript_captures_nothing() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let t = env.write_transcript(
        "agent-a1.jsonl",
        &[
            user(
                "u-task",
                "Research how xterm.js handles scrollback inside tmux",
            ),
            say("a-1", "m-1", "I'll search for this."),
            tool_use("a-2", "m-1"),
            progress("p-1", 10),
            tool_result("r-1", "search results"),
            say("a-3", "m-2", "Summary: tmux captures the wheel events."),
        ]
        .map(sidechain),
    );
    assert_eq!(env.extract(&t), None);
    env.hook(&stop_input("s-agent", &t, "/work/proj", json!({})));
    assert!(server.bodies().is_empty(), "{:?}", server.bodies());
    assert!(env.outbox().is_empty());
}

#[test]
fn inline_subagent_lines_are_neither_the_prompt_nor_the_reply() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let reply = "CLAUDE.mdファイルを最新の状態にアップデートしました。";
    let t = env.write_transcript(
        "t.jsonl",
        &[
            user(
                "u-c",
                "<command-message>orchestrator is running…</command-message>\n<command-name>/orchestrator</command-name>\n<command-args>@CLAUDE.md を最新の状態にアップデートしてください</command-args>",
            ),
            user_with(
                "u-m",
                json!([{"type": "text", "text": "You are the orchestrator. Update the file named in the arguments."}]),
                json!({"isMeta": true}),
            ),
            say("a-1", "m-1", "サブエージェントに依頼します。"),
            tool_use("a-2", "m-1"),
            // The Task subagent, stored inline: its own prompt, work and reply.
            sidechain(user("s-u", "Read CLAUDE.md and list what is out of date")),
            sidechain(say("s-a1", "s-m1", "Reading the file.")),
            sidechain(tool_use("s-a2", "s-m1")),
            sidechain(tool_result("s-r1", "<tool_use_error>File does not exist.</tool_use_error>")),
            sidechain(say("s-a3", "s-m2", "The tech stack section is out of date.")),
            tool_result(
                "r-1",
                "[{'type': 'text', 'text': 'The tech stack section is out of date.'}]",
            ),
            say("a-3", "m-2", reply),
            // A subagent line written after the main reply is not the reply either.
            sidechain(say("s-a4", "s-m3", "Subagent done.")),
        ],
    );
    let prompt = "/orchestrator @CLAUDE.md を最新の状態にアップデートしてください";
    assert_eq!(env.extract(&t), turn(prompt, reply));
    env.hook(&stop_input("s-inline", &t, "/work/proj", json!({})));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["prompt"], prompt);
    assert_eq!(bodies[0]["response"], reply);
}

const HELLO_PROMPT: &str =
    "Write a shell script called hello.sh that prints \"Hello world\" and run it.";
const HELLO_FIRST: &str = "Done. I created `hello.sh` and ran it.";
const HELLO_CONTINUATION: &str =
    "I have fully completed the task: `hello.sh` prints `Hello world`.";

/// A headless session whose Stop hook blocked once: lines 0..7 end with the first reply,
/// line 7 is the hook's feedback (isMeta), line 8 the continuation's reply.
fn stop_feedback_session() -> Vec<String> {
    vec![
        r#"{"type":"queue-operation","operation":"dequeue","timestamp":"2026-01-01T00:00:00.000Z","sessionId":"s1"}"#.to_string(),
        user("u-p", HELLO_PROMPT),
        tool_use("a-1", "m-1"),
        tool_result("r-1", "File created successfully at: /tmp/hello.sh"),
        tool_use("a-2", "m-2"),
        tool_result("r-2", "Hello world"),
        say("a-3", "m-3", HELLO_FIRST),
        user_with(
            "u-f",
            json!("Stop hook feedback:\n[${CLAUDE_PLUGIN_ROOT}/scripts/hooks/stop.sh]: Please confirm the task is complete."),
            json!({"isMeta": true}),
        ),
        say("a-4", "m-4", HELLO_CONTINUATION),
    ]
}

#[test]
fn after_stop_hook_feedback_the_reply_is_the_continuation() {
    let env = env();
    let t = env.write_transcript("t.jsonl", &stop_feedback_session());
    assert_eq!(env.extract(&t), turn(HELLO_PROMPT, HELLO_CONTINUATION));
}

/// Two Stop events: after the first reply, then (stop_hook_active) after the continuation.
/// One capture, with the first reply.
#[test]
fn a_stop_hook_continuation_is_not_captured_twice() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let lines = stop_feedback_session();
    let t = env.write_transcript("t.jsonl", &lines[..7]);
    env.hook(&stop_input("s-hello", &t, "/work/proj", json!({})));
    env.write_transcript("t.jsonl", &lines);
    env.hook(&stop_input(
        "s-hello",
        &t,
        "/work/proj",
        json!({"stop_hook_active": true}),
    ));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["prompt"], HELLO_PROMPT);
    assert_eq!(bodies[0]["response"], HELLO_FIRST);
}

/// Same, with AtoCore down at the first Stop: the capture still waits in the outbox when
/// the continuation comes, so it takes the newer reply and is sent once.
#[test]
fn a_continuation_updates_a_capture_still_in_the_outbox() {
    let server = Server::start();
    let mut env = Env::new(&crate::server::dead_url());
    let lines = stop_feedback_session();
    let t = env.write_transcript("t.jsonl", &lines[..7]);
    env.hook(&stop_input("s-hello", &t, "/work/proj", json!({})));
    assert_eq!(env.outbox().len(), 1);
    env.write_transcript("t.jsonl", &lines);
    env.hook(&stop_input(
        "s-hello",
        &t,
        "/work/proj",
        json!({"stop_hook_active": true}),
    ));
    assert_eq!(env.outbox().len(), 1);
    env.set("ATOCORE_URL", &server.url());
    let (code, v) = env.json(&["flush"]);
    assert_eq!((code, v["delivered"].as_u64()), (0, Some(1)), "{v}");
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["prompt"], HELLO_PROMPT);
    assert_eq!(bodies[0]["response"], HELLO_CONTINUATION);
}
