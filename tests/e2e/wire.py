"""The platform's binary wire format, in Python, for tests that speak ZeroMQ to the router directly.

Follows docs/architecture.md ("Wire format") and Sources/XeroCore/Wire/*.swift: little-endian integers,
strings and blobs as u32 length + bytes, `int` as i64, every message starting with a kind byte and a
version byte. The version is read from WireCodec.swift at import time so these tests follow the code
when it is bumped.

The encoders deliberately accept out-of-range values (any Python int that fits the field's width is
written as-is; i64 fields take -2**63..2**64-1, wrapping values ≥ 2**63 the way Swift's
`Int64(bitPattern:)` would) — a hostile peer is what they are for.
"""
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[2]
WIRE_CODEC = ROOT / "Sources/XeroCore/Wire/WireCodec.swift"


def read_wire_version(path=WIRE_CODEC):
    m = re.search(r"\blet\s+wireVersion\s*:\s*UInt8\s*=\s*(0x[0-9A-Fa-f]+|\d+)", Path(path).read_text())
    if not m:
        raise RuntimeError(f"wireVersion not found in {path}")
    return int(m.group(1), 0)


WIRE_VERSION = read_wire_version()

KIND_WORKER = 0x57    # 'W'
KIND_ROUTER = 0x52    # 'R'
KIND_GATEWAY = 0x47   # 'G'
KIND_JOB = 0x4A       # 'J'
KIND_EVENT = 0x45     # 'E'
KIND_NOTICE = 0x4E    # 'N' (router → gateway, on the gateway's own topic)


class WireError(ValueError):
    pass


class Writer:
    def __init__(self):
        self.buf = bytearray()

    def u8(self, v):
        self.buf += struct.pack("<B", v & 0xFF)
        return self

    def bool(self, v):
        return self.u8(1 if v else 0)

    def u32(self, v):
        self.buf += struct.pack("<I", v & 0xFFFFFFFF)
        return self

    def u64(self, v):
        self.buf += struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)
        return self

    def i64(self, v):
        if not -(2 ** 63) <= v < 2 ** 64:
            raise OverflowError(f"{v} does not fit 64 bits")
        return self.u64(v)   # two's complement, like Int64(bitPattern:)

    int = i64

    def blob(self, b):
        b = bytes(b)
        self.u32(len(b))
        self.buf += b
        return self

    def string(self, s):
        return self.blob(s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s)

    def optional_string(self, s):
        if s is None:
            return self.bool(False)
        self.bool(True)
        return self.string(s)

    def strings(self, items):
        self.u32(len(items))
        for s in items:
            self.string(s)
        return self

    def header(self, kind):
        return self.u8(kind).u8(WIRE_VERSION)

    def raw(self, b):
        self.buf += bytes(b)
        return self

    def bytes(self):
        return bytes(self.buf)


class Reader:
    def __init__(self, data, offset=0):
        self.data = bytes(data)
        self.offset = offset

    def take(self, n):
        if n < 0 or len(self.data) - self.offset < n:
            raise WireError(f"truncated at {self.offset} (wanted {n})")
        b = self.data[self.offset:self.offset + n]
        self.offset += n
        return b

    def u8(self):
        return self.take(1)[0]

    def bool(self):
        b = self.u8()
        if b not in (0, 1):
            raise WireError(f"bool byte {b}")
        return b == 1

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self):
        return struct.unpack("<q", self.take(8))[0]

    int = i64

    def blob(self):
        return self.take(self.u32())

    def string(self):
        try:
            return self.blob().decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError("string is not UTF-8") from e

    def optional_string(self):
        return self.string() if self.bool() else None

    def strings(self):
        n = self.u32()
        if n > len(self.data) - self.offset:
            raise WireError(f"string count {n} exceeds frame")
        return [self.string() for _ in range(n)]

    def header(self, kind):
        k = self.u8()
        if k != kind:
            raise WireError(f"message kind {k}, expected {kind}")
        v = self.u8()
        if v != WIRE_VERSION:
            raise WireError(f"wire version {v}, expected {WIRE_VERSION}")

    def end(self, what):
        if self.offset != len(self.data):
            raise WireError(f"trailing bytes after {what}")


# ---------------------------------------------------------------------------------------------
# JobEnvelope

JOB_CHAT, JOB_EMBEDDINGS, JOB_RERANK = 1, 2, 3


@dataclass
class JobEnvelope:
    request_id: str
    reply_to: str
    attempt: int = 1
    kind: int = JOB_CHAT
    tier: str = "standard"
    project: str = ""
    fleet: int = 3          # 1 project, 2 platform, 3 both
    endpoint: str = ""
    model: str = ""
    accepted_at_ms: int = 0
    queue_deadline_ms: int = 0
    request_deadline_ms: int = 0
    prefix_blocks: tuple = ()   # the prompt's block hashes (PromptBlocks), u64 each
    slo_ttft_ms: int = 0
    slo_tpot_ms: int = 0
    billing: tuple = None   # (key hash, reserved tokens, batch id): gateway -> router only
    payload: bytes = b""
    replay: tuple = None    # (from seq, [token ids]): a migration
    ticket: bytes = b""     # set on jobs a router sent (decode_router_message); never encoded here

    @property
    def topic(self):
        return f"{self.reply_to}/{self.request_id}"

    def encode(self):
        w = Writer().header(KIND_JOB)
        w.string(self.request_id).string(self.reply_to).int(self.attempt).u8(self.kind)
        w.string(self.tier).string(self.project).u8(self.fleet).string(self.endpoint).string(self.model)
        w.i64(self.accepted_at_ms).i64(self.queue_deadline_ms).i64(self.request_deadline_ms)
        w.u32(len(self.prefix_blocks))
        for h in self.prefix_blocks:
            w.u64(h)
        w.int(self.slo_ttft_ms).int(self.slo_tpot_ms)
        if self.billing is None:
            w.u8(0)
        else:
            w.u8(1).string(self.billing[0]).int(self.billing[1]).string(self.billing[2])
        if self.replay is None:
            w.u8(0)
        else:
            w.u8(1).int(self.replay[0]).u32(len(self.replay[1]))
            for t in self.replay[1]:
                w.u32(t & 0xFFFFFFFF)
        w.blob(self.payload)
        return w.bytes()

    @classmethod
    def decode(cls, data):
        r = Reader(data)
        r.header(KIND_JOB)
        request_id, reply_to, attempt = r.string(), r.string(), r.int()
        kind = r.u8()
        if kind not in (JOB_CHAT, JOB_EMBEDDINGS, JOB_RERANK):
            raise WireError("unknown job kind")
        tier, project = r.string(), r.string()
        fleet = r.u8()
        endpoint, model = r.string(), r.string()
        accepted, qd, rd = r.i64(), r.i64(), r.i64()
        blocks = tuple(r.u64() for _ in range(r.u32()))
        ttft, tpot = r.int(), r.int()
        flag = r.u8()
        if flag not in (0, 1):
            raise WireError("billing flag")
        billing = (r.string(), r.int(), r.string()) if flag == 1 else None
        flag = r.u8()
        if flag not in (0, 1):
            raise WireError("replay flag")
        replay = (r.int(), [r.u32() for _ in range(r.u32())]) if flag == 1 else None
        payload = r.blob()
        r.end("job envelope")
        return cls(request_id, reply_to, attempt, kind, tier, project, fleet, endpoint, model, accepted, qd, rd, blocks, ttft, tpot,
                   billing, payload, replay=replay)


# ---------------------------------------------------------------------------------------------
# WorkerMessage (worker DEALER -> router ROUTER)

def hello(id, slots, free_slots, models=("*",), capabilities=("chat",), engine="sim", host="localhost", pid=1, join_key=""):
    w = Writer().header(KIND_WORKER).u8(1)
    w.string(id).int(slots).int(free_slots).strings(list(models)).strings(list(capabilities))
    w.string(engine).string(host).int(pid).string(join_key)
    return w.bytes()


def credit(n):
    return Writer().header(KIND_WORKER).u8(2).int(n).bytes()


def heartbeat(active):
    return Writer().header(KIND_WORKER).u8(3).int(active).bytes()


def started(request_id):
    return Writer().header(KIND_WORKER).u8(4).string(request_id).bytes()


def done(request_id, attempt=1, outcome="done", first_token_at_ms=0, finished_at_ms=0, prompt_tokens=0, completion_tokens=0,
         returns_credit=True):
    w = Writer().header(KIND_WORKER).u8(5)
    w.string(request_id).int(attempt).string(outcome).i64(first_token_at_ms).i64(finished_at_ms)
    w.int(prompt_tokens).int(completion_tokens).bool(returns_credit)
    return w.bytes()


def draining():
    return Writer().header(KIND_WORKER).u8(6).bytes()


def bye():
    return Writer().header(KIND_WORKER).u8(7).bytes()


def prefixes(hashes, claimed_count=None):
    """`claimed_count` lets a test lie about how many hashes follow."""
    w = Writer().header(KIND_WORKER).u8(8).int(len(hashes) if claimed_count is None else claimed_count)
    for h in hashes:
        w.u64(h)
    return w.bytes()


def model_request(name, join_key=""):
    return Writer().header(KIND_WORKER).u8(9).string(name).string(join_key).bytes()


def adopt(ticket, started=False):
    return Writer().header(KIND_WORKER).u8(10).blob(ticket).bool(started).bytes()


def moved(request_id):
    return Writer().header(KIND_WORKER).u8(11).string(request_id).bytes()


def reclaim(n):
    return Writer().header(KIND_WORKER).u8(12).int(n).bytes()


@dataclass
class WorkerInfo:
    id: str
    slots: int
    free_slots: int
    models: List[str]
    capabilities: List[str]
    engine: str
    host: str
    pid: int
    join_key: str


def decode_worker_message(data):
    """Returns (name, fields)."""
    r = Reader(data)
    r.header(KIND_WORKER)
    tag = r.u8()
    if tag == 1:
        m = ("hello", WorkerInfo(r.string(), r.int(), r.int(), r.strings(), r.strings(), r.string(), r.string(), r.int(), r.string()))
    elif tag == 2:
        m = ("credit", r.int())
    elif tag == 3:
        m = ("heartbeat", r.int())
    elif tag == 4:
        m = ("started", r.string())
    elif tag == 5:
        m = ("done", dict(request_id=r.string(), attempt=r.int(), outcome=r.string(), first_token_at_ms=r.i64(),
                          finished_at_ms=r.i64(), prompt_tokens=r.int(), completion_tokens=r.int(), returns_credit=r.bool()))
    elif tag == 6:
        m = ("draining", None)
    elif tag == 7:
        m = ("bye", None)
    elif tag == 8:
        n = r.int()
        if not 0 <= n <= 65_536:
            raise WireError(f"prefix hash count {n}")
        m = ("prefixes", [r.u64() for _ in range(n)])
    elif tag == 9:
        m = ("model_request", (r.string(), r.string()))
    elif tag == 10:
        m = ("adopt", (r.blob(), r.bool()))
    elif tag == 11:
        m = ("moved", r.string())
    elif tag == 12:
        m = ("reclaim", r.int())
    else:
        raise WireError(f"unknown worker message {tag}")
    r.end("worker message")
    return m


# ---------------------------------------------------------------------------------------------
# RouterMessage (router -> worker)

def encode_router_job(env, ticket=b""):
    return Writer().header(KIND_ROUTER).u8(1).blob(ticket).bytes() + env.encode()


def encode_router_cancel(request_id):
    return Writer().header(KIND_ROUTER).u8(2).string(request_id).bytes()


def encode_router_identify():
    return bytes([KIND_ROUTER, WIRE_VERSION, 3])


def encode_router_refused(why):
    return Writer().header(KIND_ROUTER).u8(4).string(why).bytes()


def decode_router_message(data):
    """Returns ("job", JobEnvelope) | ("cancel", id) | ("identify", None) | ("refused", reason) |
    ("model_grant", dict) | ("model_refused", (name, reason)) | ("ack", (router_id, demand)) |
    ("returned", n) | ("adopted", id) | ("adopt_refused", id) | ("relocate", [ids]).
    A job's sealed ticket is in the returned envelope's `ticket`."""
    r = Reader(data)
    r.header(KIND_ROUTER)
    tag = r.u8()
    if tag == 1:
        ticket = r.blob()
        env = JobEnvelope.decode(data[r.offset:])
        env.ticket = ticket
        return "job", env
    if tag == 2:
        rid = r.string()
        r.end("cancel")
        return "cancel", rid
    if tag == 3:
        return "identify", None
    if tag == 4:
        return "refused", r.string()
    if tag == 5:
        grant = dict(name=r.string(), token=r.string(), sha256=r.string(), bytes=r.int())
        r.end("model grant")
        return "model_grant", grant
    if tag == 6:
        refused = (r.string(), r.string())
        r.end("model refusal")
        return "model_refused", refused
    if tag == 7:
        return "ack", (r.string(), r.int())
    if tag == 8:
        return "returned", r.int()
    if tag == 9:
        return "adopted", r.string()
    if tag == 10:
        return "adopt_refused", r.string()
    if tag == 11:
        return "relocate", r.strings()
    raise WireError(f"unknown router message {tag}")


# ---------------------------------------------------------------------------------------------
# GatewayMessage (gateway PUSH -> router PULL)

def encode_gateway_submit(env):
    return bytes([KIND_GATEWAY, WIRE_VERSION, 1]) + env.encode()


def encode_gateway_cancel(request_id):
    return Writer().header(KIND_GATEWAY).u8(2).string(request_id).bytes()


# ---------------------------------------------------------------------------------------------
# StreamEvent (worker XPUB -> router XSUB/XPUB -> gateway SUB), topic `<gateway>/<request>`

def _event(request_id, attempt, seq):
    return Writer().header(KIND_EVENT).string(request_id).int(attempt).int(seq)


def ev_delta(request_id, attempt, seq, index, text, logprobs=None, tokens=()):
    w = _event(request_id, attempt, seq).u8(1).int(index).string(text).optional_string(logprobs).u32(len(tokens))
    for t in tokens:
        w.u32(t & 0xFFFFFFFF)
    return w.bytes()


def ev_finish(request_id, attempt, seq, index, reason):
    return _event(request_id, attempt, seq).u8(2).int(index).string(reason).bytes()


def ev_done(request_id, attempt, seq, prompt_tokens=0, completion_tokens=0, cached_tokens=0):
    return _event(request_id, attempt, seq).u8(3).int(prompt_tokens).int(completion_tokens).int(cached_tokens).bytes()


def ev_error(request_id, attempt, seq, status, message="error", type="server_error", param=None, code=None):
    w = _event(request_id, attempt, seq).u8(4).int(status).string(message).string(type)
    return w.optional_string(param).optional_string(code).bytes()


def ev_tool_call(request_id, attempt, seq, index, tool_index, id="", name="", arguments=""):
    return _event(request_id, attempt, seq).u8(5).int(index).int(tool_index).string(id).string(name).string(arguments).bytes()


def ev_vectors(request_id, attempt, seq, dim, data):
    return _event(request_id, attempt, seq).u8(6).int(dim).blob(data).bytes()


@dataclass
class StreamEvent:
    request_id: str
    attempt: int
    seq: int
    body: str            # delta | finish | done | error | tool_call | vectors
    fields: dict = field(default_factory=dict)

    @property
    def terminal(self):
        return self.body in ("done", "error")


def decode_event(data):
    r = Reader(data)
    r.header(KIND_EVENT)
    rid, attempt, seq = r.string(), r.int(), r.int()
    tag = r.u8()
    if tag == 1:
        fields = dict(index=r.int(), text=r.string(), logprobs=r.optional_string())
        fields["tokens"] = [r.u32() for _ in range(r.u32())]
        ev = StreamEvent(rid, attempt, seq, "delta", fields)
    elif tag == 2:
        ev = StreamEvent(rid, attempt, seq, "finish", dict(index=r.int(), reason=r.string()))
    elif tag == 3:
        ev = StreamEvent(rid, attempt, seq, "done", dict(prompt_tokens=r.int(), completion_tokens=r.int(), cached_tokens=r.int()))
    elif tag == 4:
        ev = StreamEvent(rid, attempt, seq, "error", dict(status=r.int(), message=r.string(), type=r.string(),
                                                          param=r.optional_string(), code=r.optional_string()))
    elif tag == 5:
        ev = StreamEvent(rid, attempt, seq, "tool_call", dict(index=r.int(), tool_index=r.int(), id=r.string(), name=r.string(),
                                                              arguments=r.string()))
    elif tag == 6:
        ev = StreamEvent(rid, attempt, seq, "vectors", dict(dim=r.int(), data=r.blob()))
    elif tag == 7:
        ev = StreamEvent(rid, attempt, seq, "lost", dict(status=r.int(), message=r.string(), type=r.string(),
                                                         param=r.optional_string(), code=r.optional_string()))
    elif tag == 8:
        ev = StreamEvent(rid, attempt, seq, "placed", dict(predicted_ttft_ms=r.int(), predicted_tpot_ms=r.int()))
    else:
        raise WireError(f"unknown event body {tag}")
    r.end("stream event")
    return ev


def notice_alive(router_id):
    return Writer().header(KIND_NOTICE).u8(2).string(router_id).bytes()


def notice_accepted(request_id, router_id):
    return Writer().header(KIND_NOTICE).u8(1).string(request_id).string(router_id).bytes()
