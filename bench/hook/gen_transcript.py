#!/usr/bin/env python3
"""Writes a Claude Code-like transcript for the atocore-capture benchmark.

The file is SIZE bytes of realistic JSONL (user prompts, assistant messages split over
lines, thinking, tool_use, tool_result, progress and file-history-snapshot lines, a base64
image now and then), and the last typed prompt starts about TAIL bytes before the end: the
final turn holds large tool results, progress lines and a long final reply, like a real
busy turn. It also writes the Stop hook's stdin JSON next to it (<out>.stdin.json).

Usage: gen_transcript.py OUT SIZE [--tail BYTES]   (SIZE like 1M, 100M, 1G)
"""
import argparse
import json
import os

SESSION = "bench-0000-4000-8000-000000000000"


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


def entry(kind, uuid, **fields):
    head = {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/me/projects/bench",
        "sessionId": SESSION,
        "version": "2.1.38",
        "gitBranch": "main",
        "type": kind,
    }
    head.update(fields)
    head["uuid"] = uuid
    head["timestamp"] = "2026-02-10T22:58:08.126Z"
    return json.dumps(head, ensure_ascii=False, separators=(",", ":")) + "\n"


def assistant(uuid, msg, block):
    return entry("assistant", uuid, message={"id": msg, "type": "message", "role": "assistant",
                                             "model": "claude-opus", "content": [block],
                                             "stop_reason": None})


def user(uuid, content, **extra):
    return entry("user", uuid, message={"role": "user", "content": content}, **extra)


def tool_result(uuid, size):
    text = ("line of tool output, with some ünïcödé and numbers 0123456789\n" * (size // 62 + 1))[:size]
    return user(uuid, [{"type": "tool_result", "content": text, "tool_use_id": "toolu_x"}],
                toolUseResult={"stdout": text[: size // 2], "stderr": ""})


def progress(uuid, size):
    return entry("progress", uuid, data={"type": "hook_progress", "output": "p" * size},
                 parentToolUseID="toolu_x", toolUseID="toolu_x")


def turn(n, result_size=8000):
    """One ordinary turn (~20-30 KB)."""
    u = f"{n:08d}"
    out = [
        json.dumps({"type": "file-history-snapshot", "messageId": u, "snapshot": {"files": {}}}) + "\n",
        user(f"u-{u}", f"prompt number {n}: please look at module {n % 97} and fix the flaky test"),
        assistant(f"a1-{u}", f"msg-{u}-1", {"type": "thinking", "thinking": "Let me think. " * 40, "signature": "s" * 200}),
        assistant(f"a2-{u}", f"msg-{u}-1", {"type": "text", "text": "Let me look at the module first."}),
        assistant(f"a3-{u}", f"msg-{u}-1", {"type": "tool_use", "id": "toolu_x", "name": "Read", "input": {"file_path": f"/src/m{n}.rs"}}),
        progress(f"p1-{u}", 1500),
        tool_result(f"r1-{u}", result_size),
        assistant(f"a4-{u}", f"msg-{u}-2", {"type": "tool_use", "id": "toolu_y", "name": "Edit", "input": {"old_string": "a" * 2000, "new_string": "b" * 2000}}),
        tool_result(f"r2-{u}", 400),
        assistant(f"a5-{u}", f"msg-{u}-3", {"type": "text", "text": "Fixed: the test waited on a timer it never advanced. " * 20}),
        entry("system", f"s-{u}", subtype="turn_duration", content="", level="info", isMeta=False),
    ]
    if n % 50 == 0:
        img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo" * 30000}}
        out.insert(1, user(f"ui-{u}", [{"type": "text", "text": "see this screenshot"}, img]))
    return "".join(out).encode()


def final_turn(tail):
    """The last turn: the prompt, then about `tail` bytes of work, then the final reply."""
    head = user("u-final-prompt", "Benchmark prompt: why is the nightly build slow? Check the logs and fix it.").encode()
    parts = []
    size = 0
    i = 0
    while size < tail - 40_000:
        u = f"final-{i:05d}"
        chunk = "".join([
            assistant(f"a-{u}", f"msg-final-{i}", {"type": "tool_use", "id": "toolu_z", "name": "Bash", "input": {"command": f"grep -n slow build-{i}.log"}}),
            progress(f"p-{u}", 2000),
            tool_result(f"r-{u}", 60_000 if i % 4 == 0 else 6_000),
        ]).encode()
        parts.append(chunk)
        size += len(chunk)
        i += 1
    reply = "The nightly build spends most of its time relinking; I enabled incremental linking. " * 60
    end = "".join([
        assistant("a-final-1", "msg-final-last", {"type": "thinking", "thinking": "Now summarise. " * 100, "signature": "s" * 200}),
        assistant("a-final-2", "msg-final-last", {"type": "text", "text": reply}),
        entry("system", "s-final", subtype="stop_hook_summary", content="", level="info", isMeta=False),
    ]).encode()
    return head + b"".join(parts) + end


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("size")
    ap.add_argument("--tail", default="1M", help="bytes from the last prompt to the end (default 1M)")
    args = ap.parse_args()
    total = parse_size(args.size)
    tail_bytes = final_turn(min(parse_size(args.tail), total // 2))
    # Ordinary history until the final turn fits; the block is built once and repeated.
    block = b"".join(turn(n) for n in range(1, 41))
    with open(args.out, "wb") as f:
        written = 0
        n = 41
        target = total - len(tail_bytes)
        while written + len(block) <= target:
            f.write(block)
            written += len(block)
        while written < target:
            t = turn(n)
            n += 1
            f.write(t)
            written += len(t)
        f.write(tail_bytes)
        written += len(tail_bytes)
    with open(args.out + ".stdin.json", "w") as f:
        json.dump({"session_id": SESSION, "transcript_path": os.path.abspath(args.out),
                   "cwd": "/home/me/projects/bench", "hook_event_name": "Stop",
                   "stop_hook_active": False, "permission_mode": "default"}, f)
    print(f"{args.out}: {written} bytes, last prompt {len(tail_bytes)} bytes from the end")


if __name__ == "__main__":
    main()
