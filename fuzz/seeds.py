#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/. Run from anywhere: python3 fuzz/seeds.py

Any bytes are a valid input for every harness; these seeds only give the fuzzers a start that
reaches the interesting paths at once. The byte formats are described in
testkit/src/fuzzing.rs and testkit/src/ops.rs (module docs and `Op`).
"""
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


# --- parse_message: raw client text messages -------------------------------------------
write("parse_message", "ping", '{"type":"ping"}')
write("parse_message", "pong_extra_fields", '{"type":"pong","at":1.5,"x":[null,{}]}')
write("parse_message", "subscribe", '{"type":"subscribe","payload":{"types":["scan_started","render_*","preview.*"]}}')
write("parse_message", "subscribe_all", '{"type":"subscribe","payload":{"types":["*"]}}')
write("parse_message", "subscribe_bad_item", '{"type":"subscribe","payload":{"types":["a,,b","A",1]}}')
write("parse_message", "unknown_escaped_type", '{"type":"\\u0070ing\\ud83d\\ude00"}')
write("parse_message", "not_json", b'{"type":"ping"\xff')


# --- handshake: flags, policy, then query / Last-Event-ID / Authorization / Origin / token /
# allowed origins, one per line ----------------------------------------------------------
ROOM, QUERY, LEI, AUTH, ORIGIN, PORT, TOKEN = 1, 2, 4, 8, 16, 32, 64
OWN, ANY, LIST = 0, 1, 2


def handshake(name, flags, policy, *lines):
    write("handshake", name, bytes([flags, policy]) + "\n".join(lines).encode())


handshake("plain", ROOM | QUERY, OWN, "")
handshake("filter_identity_anchor", ROOM | QUERY, OWN,
          "types=render_*%2Cpreview.*,scan_started&subscribe_token=0123456789abcdef0123456789abcdef&last_event_id=5eed0001-6")
handshake("header_anchor_expired", ROOM | LEI, OWN, "", " 5eed0001-4 ")
handshake("query_anchor_wins", ROOM | QUERY | LEI, OWN, "last_event_id=00000000-9", "5eed0001-7")
handshake("bearer_token", ROOM | AUTH | TOKEN, OWN, "", "", "Bearer  s3cret ", "", "s3cret")
handshake("wrong_query_token", ROOM | QUERY | AUTH | TOKEN, OWN, "token=nope", "", "Bearer s3cret", "", "s3cret")
handshake("own_origin", ROOM | ORIGIN | PORT, OWN, "", "", "", "http://LOCALHOST:8765/")
handshake("listed_origin", ROOM | ORIGIN, LIST, "", "", "", "https://app.example", "", "https://App.Example/", "https://other.example")
handshake("full_server", QUERY, ANY, "types=a")
handshake("duplicate_parameter", ROOM | QUERY, OWN, "types=a&types=b")
handshake("bad_types", ROOM | QUERY, OWN, "types=a,,b")


# --- hub_ops: 13 configuration bytes, then operations ----------------------------------
# heartbeat 1 s, liveness 3 s, replay 4 events / 1600 B / 5 s, queue 4 frames / 2048 B,
# 20 msg/s with a burst of 10, messages up to 96 B, close timeout 1 s, grace 1 s, 4 conns.
CONFIG = [9, 19, 4, 15, 9, 3, 15, 19, 9, 40, 9, 9, 3]

(CONNECT, PUBLISH, LOG_JUMP, TEXT, RAW_TEXT, BINARY, ALIVE, VIOLATION, DISCONNECT, FLUSH,
 STALL, RESPONSIVE, ADVANCE, STEP, EARLY_TIMEOUT, STALE_TIMEOUT, STALE_PUBLISH, SHUTDOWN,
 STALE_FLUSH, LOG_REPEAT, CONNECT_FROM, WALL_CLOCK, ANSWER_FETCH) = range(23)
# The last configuration byte's bit 7 turns backfill on (a cluster node).
BACKFILL = CONFIG[:-1] + [CONFIG[-1] | 0x80]


def advance(ms):
    return [ADVANCE, ms & 0xFF, ms >> 8]


def hub_ops(name, ops, config=CONFIG):
    flat = []
    for op in ops:
        flat.extend(op if isinstance(op, list) else [op])
    write("hub_ops", name, bytes(config + flat))


# Two clients, one answers pings; the silent one is closed with 4408 and then disconnects.
hub_ops("liveness", [
    [CONNECT, 0, 0, 0], [CONNECT, 1, 0, 0], [RESPONSIVE, 0, 1],
    advance(2500), advance(2500), [DISCONNECT, 1, 1], STEP, STEP,
])
# Events, then a client resuming two events back, then a live event and a heartbeat.
hub_ops("resume", [
    [PUBLISH, 0, 1], [PUBLISH, 1, 2], [PUBLISH, 2, 0],
    [CONNECT, 3, 1, 2], [PUBLISH, 3, 0], advance(1200),
])
# A stalled reader: the queue fills, partial flushes, a slow-consumer close, a close timeout.
hub_ops("backpressure", [
    [CONNECT, 0, 0, 0], [CONNECT, 0, 0, 0], [STALL, 0, 1],
    [PUBLISH, 0, 10], [PUBLISH, 1, 10], [FLUSH, 0, 1], [PUBLISH, 2, 10], [PUBLISH, 3, 10],
    [PUBLISH, 4, 10], [PUBLISH, 0, 10], advance(1500), [STALL, 0, 0],
])
# Every kind of client message, a raw one, binary, a protocol violation.
hub_ops("client_messages", [
    [CONNECT, 1, 0, 0], [CONNECT, 0, 0, 0],
    [TEXT, 0, 0], [TEXT, 0, 1], [TEXT, 0, 2 + 9 * 2], [TEXT, 0, 3], [TEXT, 0, 4], [TEXT, 0, 5],
    [TEXT, 0, 7], [PUBLISH, 2, 0], [RAW_TEXT, 0, 15] + list(b'{"type":"pong"}'),
    [TEXT, 0, 8], [TEXT, 1, 6], [BINARY, 1], [VIOLATION, 2, 0], [ALIVE, 0],
])
# Shutdown with clients connected, a late connect and publish, the grace deadline.
hub_ops("shutdown", [
    [CONNECT, 0, 0, 0], [CONNECT, 4, 0, 0], [STALL, 1, 1], [PUBLISH, 0, 3],
    SHUTDOWN, [CONNECT, 0, 0, 0], [PUBLISH, 1, 0], [LOG_JUMP, 1, 0], advance(2000),
])
# Time going backwards, stale ids, a wall clock stepped both ways.
hub_ops("stale_inputs", [
    [CONNECT, 0, 0, 0], advance(700), [STALE_TIMEOUT, 50], [STALE_PUBLISH, 30],
    [WALL_CLOCK, 0x80], [PUBLISH, 0, 0], [WALL_CLOCK, 0x7f], [DISCONNECT, 0, 0],
    [STALE_FLUSH, 0, 3, 200], [ALIVE, 0], [TEXT, 1, 0], EARLY_TIMEOUT,
])
# The log misbehaves: a skip, a repeat, a new epoch, while one client catches up and another
# resumes from a frame the first received.
hub_ops("log_rules", [
    [PUBLISH, 0, 0], [PUBLISH, 1, 0], [CONNECT, 0, 0, 0], [STALL, 0, 1], [CONNECT, 0, 1, 3],
    [LOG_JUMP, 2, 0], [LOG_REPEAT, 0], [LOG_JUMP, 0, 1], [STALL, 0, 0], advance(1200),
    [CONNECT_FROM, 0, 1, 0], [PUBLISH, 2, 0], [LOG_REPEAT, 1],
])
# A cluster node: anchors older than the buffer are fetched from the log, trimmed, aged.
hub_ops("backfill", [
    [PUBLISH, 0, 0], [PUBLISH, 1, 0], [PUBLISH, 2, 0], [PUBLISH, 3, 0], [PUBLISH, 4, 0],
    [PUBLISH, 0, 0], [CONNECT, 0, 1, 5], [ANSWER_FETCH, 0, 0], [CONNECT, 0, 1, 5],
    [ANSWER_FETCH, 4, 0], [CONNECT, 0, 1, 5], [ANSWER_FETCH, 0, 80], [PUBLISH, 1, 0],
], config=BACKFILL)
# A one-event replay buffer: anchors evicted, expired, ahead, foreign and invalid.
hub_ops("resync_reasons", [
    [PUBLISH, 0, 0], [PUBLISH, 1, 0], [PUBLISH, 2, 0],
    [CONNECT, 0, 1, 2], [CONNECT, 0, 2, 0], [CONNECT, 0, 3, 0], [CONNECT, 0, 4, 0],
    advance(6000), [CONNECT, 0, 1, 0], [CONNECT, 5, 5, 0], [CONNECT, 0, 0, 0],
], config=[9, 19, 1, 15, 9, 3, 15, 19, 9, 40, 9, 9, 7])

# Regression: an id-shaped anchor whose seq overflows 64 bits is `ahead` or `unknown_epoch`,
# not `invalid` (found by the handshake fuzzer; crash_anchor_seq_overflow is its input).
handshake("anchor_seq_overflow", ROOM | QUERY, OWN, "last_event_id=5eed0001-99999999999999999999999")
handshake("long_anchor_cut", ROOM | LEI, OWN, "", "5eed0001-" + "7" * 150 + "x")
