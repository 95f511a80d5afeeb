//! Every real transcript in shared/fixtures/transcripts, with the prompt and reply the hook
//! must capture from it written down. Each test skips with a note when the folder is
//! absent (a lone clone) and fails then under `CI=true`; rules.rs covers the same rules
//! with synthetic transcripts.

use serde_json::json;

use crate::server::Server;
use crate::util::{Env, real_fixtures, stop_input};

struct Expect {
    file: &'static str,
    /// (prompt, response), or None when nothing may be captured.
    capture: Option<(&'static str, &'static str)>,
}

const CCVIEWER_REPLY: &str = "CLAUDE.mdファイルを最新の状態にアップデートしました。主な更新内容：\n\n**技術スタック更新:**\n- Next.js 15.5.2 (14から更新)\n- React 19.1.0 (新規追加)\n- Tailwind CSS v4 (v3から更新)\n- TypeScript 5\n\n**プロジェクト構造の修正:**\n- 実際のディレクトリ構造に合わせて更新\n- 重複したコンポーネント・型定義の構造を反映\n- AddTodoForm.tsx、TodoApp.tsx等の実際のファイル名に修正\n\n**開発コマンドの更新:**\n- `npm run type-check`を削除（実際には存在しない）\n- `npm run start`を追加\n\n**コンポーネント情報の更新:**\n- useSimpleTodos追加\n- 実際のコンポーネント名に修正\n\n**サーバー情報の更新:**\n- デフォルトポート3000に修正\n- プロジェクトの実際の場所を反映";

const HELLO_PROMPT: &str =
    "Write a shell script called hello.sh that prints \"Hello world\" and run it.";
const HELLO_FIRST_REPLY: &str = "Done. I created `hello.sh` with a shebang and an echo command, made it executable, and ran it successfully.";
const HELLO_CONTINUATION_REPLY: &str = "I have fully completed the task.\n\n**Summary:** Created `/tmp/tmp74wiyiny/hello.sh` - a shell script that prints \"Hello world\" - and executed it successfully. The script outputs `Hello world` as expected.";

const EXPECTED: &[Expect] = &[
    // Plain prompt; the one assistant message is split over lines (blank text, thinking,
    // text, tool_use); tool rejections, an interrupt and /model local-command lines follow.
    Expect {
        file: "spotter-short.jsonl",
        capture: Some((
            "mix phx.server doesnt seem to start",
            "Let me check the project structure and try running the server to see the error.",
        )),
    },
    // The last prompt is line 25; its only assistant text is blank ("\n\n"), then tools and
    // an interrupt: the prompt is captured with an empty response. Older turns, the queued
    // /mcp and its command wrappers are not looked at.
    Expect {
        file: "spotter-tool_heavy.jsonl",
        capture: Some((
            "scrolling back in xterm.js still does not work (maybe because outer web catches it)? websearch xterm.js tmux interactions",
            "",
        )),
    },
    // A subagent's own file: every line is a sidechain, so no prompt of the person's.
    Expect {
        file: "spotter-subagent-agent-aac57f5.jsonl",
        capture: None,
    },
    // The turn was started by the built-in /init without arguments: no words to capture.
    Expect {
        file: "ccviewer-1af7fc5e-init-command.jsonl",
        capture: None,
    },
    // A custom slash command with arguments is the prompt, rendered "/name args"; the inline
    // sidechain (Task subagent) lines are skipped; the reply is the final main-chain text.
    Expect {
        file: "ccviewer-5c0375b4-sidechain-inline.jsonl",
        capture: Some((
            "/orchestrator @CLAUDE.md を最新の状態にアップデートしてください",
            CCVIEWER_REPLY,
        )),
    },
    // Headless session; a Stop hook blocked once (isMeta "Stop hook feedback"), so the final
    // reply is the continuation's.
    Expect {
        file: "reliability-hello-world-stop-feedback.jsonl",
        capture: Some((HELLO_PROMPT, HELLO_CONTINUATION_REPLY)),
    },
];

#[test]
fn every_fixture_file_has_an_expectation() {
    let Some(dir) = real_fixtures("every_fixture_file_has_an_expectation") else {
        return;
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    files.sort();
    let mut expected: Vec<String> = EXPECTED.iter().map(|e| e.file.to_string()).collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[test]
fn extract_finds_the_expected_turn_in_each_fixture() {
    let Some(dir) = real_fixtures("extract_finds_the_expected_turn_in_each_fixture") else {
        return;
    };
    let env = Env::new("http://127.0.0.1:9");
    for e in EXPECTED {
        let got = env.extract(&dir.join(e.file));
        let want = e
            .capture
            .map(|(p, r)| (p.to_string(), (!r.is_empty()).then(|| r.to_string())));
        assert_eq!(got, want, "{}", e.file);
    }
}

#[test]
fn hook_posts_the_expected_body_for_each_fixture() {
    let Some(dir) = real_fixtures("hook_posts_the_expected_body_for_each_fixture") else {
        return;
    };
    let server = Server::start();
    for (i, e) in EXPECTED.iter().enumerate() {
        let mut env = Env::new(&server.url());
        env.set("ATOCORE_PROJECT", "fixtures");
        let before = server.requests().len();
        let session = format!("fixture-session-{i}");
        env.hook(&stop_input(
            &session,
            &dir.join(e.file),
            "/work/proj",
            json!({}),
        ));
        let new: Vec<_> = server.requests()[before..].to_vec();
        match e.capture {
            None => assert!(new.is_empty(), "{}: {new:?}", e.file),
            Some((prompt, response)) => {
                assert_eq!(new.len(), 1, "{}", e.file);
                let r = &new[0];
                assert_eq!(r.method, "POST");
                assert_eq!(r.path, "/interactions");
                assert_eq!(r.content_type.as_deref(), Some("application/json"));
                assert_eq!(
                    r.body,
                    json!({"prompt": prompt, "response": response, "client": "claude-code",
                        "session_id": session, "project": "fixtures", "reinforce": false}),
                    "{}",
                    e.file
                );
                assert!(env.outbox().is_empty(), "{}", e.file);
            }
        }
    }
}

/// The reliability session as two Stop events: the first after the first reply, the second
/// (stop_hook_active) after the continuation. One capture, with the first reply.
#[test]
fn stop_hook_continuation_is_not_captured_twice() {
    let Some(dir) = real_fixtures("stop_hook_continuation_is_not_captured_twice") else {
        return;
    };
    let server = Server::start();
    let env = Env::new(&server.url());
    let full =
        std::fs::read_to_string(dir.join("reliability-hello-world-stop-feedback.jsonl")).unwrap();
    let lines: Vec<String> = full.lines().map(str::to_string).collect();
    let first = env.write_transcript("t.jsonl", &lines[..7]);
    env.hook(&stop_input("s-hello", &first, "/work/proj", json!({})));
    env.write_transcript("t.jsonl", &lines);
    env.hook(&stop_input(
        "s-hello",
        &first,
        "/work/proj",
        json!({"stop_hook_active": true}),
    ));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["prompt"], HELLO_PROMPT);
    assert_eq!(bodies[0]["response"], HELLO_FIRST_REPLY);
}

/// Same, with AtoCore down at the first Stop: the capture still waits in the outbox when the
/// continuation comes, so it takes the newer reply (what the person saw last) and is sent
/// once.
#[test]
fn continuation_updates_a_capture_still_in_the_outbox() {
    let Some(dir) = real_fixtures("continuation_updates_a_capture_still_in_the_outbox") else {
        return;
    };
    let server = Server::start();
    let mut env = Env::new(&crate::server::dead_url());
    let full =
        std::fs::read_to_string(dir.join("reliability-hello-world-stop-feedback.jsonl")).unwrap();
    let lines: Vec<String> = full.lines().map(str::to_string).collect();
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
    assert_eq!(bodies[0]["response"], HELLO_CONTINUATION_REPLY);
}
