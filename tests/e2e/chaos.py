"""Faults under load, counted the same way everywhere (docs/failures.md): n concurrent streams of
the same seeded prompt, each compared with the answer the deployment gave before the fault.

- completed: the whole answer, exactly;
- error: the client saw an error (which ones a fault may cause is in docs/failures.md);
- lost: the request never ended (its thread gave no outcome);
- hung: the client's own timeout fired;
- duplicated: it ended without an error but its text differs (a token repeated or missing).

Simulated engine (`sim`): these tests are about the platform."""
import threading

import openai

from conftest import client_for

PROMPT = [{"role": "user", "content": "across hosts"}]
TOKENS = 100  # at 20 ms a token: a stream lasts about 2 s, several times the spread of its starts


# Each of a project's job records (`xero:job:*`) with the fields asked for, in one round trip: a
# session's Redis holds every test's records.
JOBS_OF_PROJECT = """
local out = {}
for _, k in ipairs(redis.call('KEYS', 'xero:job:*')) do
  if redis.call('HGET', k, 'project') == ARGV[1] then
    table.insert(out, k)
    for i = 2, #ARGV do table.insert(out, redis.call('HGET', k, ARGV[i]) or '') end
  end
end
return out
"""


def jobs_of(p, project_id, *fields):
    """A project's jobs → the tuple of `fields` of each (docs/redis-keys.md, `xero:job:<id>`)."""
    flat = p.redis.cli("EVAL", JOBS_OF_PROJECT, "0", project_id, *fields).split("\n")
    if flat == [""]:
        return {}
    width = len(fields) + 1
    return {flat[i]: tuple(flat[i + 1:i + width]) for i in range(0, len(flat), width)}


def logged(p, names, text):
    """How often `text` appears in these processes' logs so far (a fault test compares the count
    before and after, to show its fault hit streams in flight)."""
    return sum(p.log(n).count(text) for n in names)


def expected_answer(gateway, demo, tokens=TOKENS):
    c = client_for(gateway, demo)
    return c.chat.completions.create(model="x", messages=PROMPT, max_tokens=tokens, seed=7).choices[0].message.content


def storm(p, n=64, during=None, timeout=40, gateway=None, tokens=TOKENS):
    """n concurrent streams through `gateway` (default: the first); `during()` runs once they are all
    streaming. `p` has `demo` and `expected` (expected_answer). Returns the counts and the errors.

    The streams start within a few hundred milliseconds of each other (longer on a loaded
    machine), so by the time the last one streams, the first is that far along. A fault that must
    hit streams mid-flight whatever the machine asks for longer ones (`tokens`)."""
    gateway = gateway or p.gateways[0]
    expected = p.expected if tokens == TOKENS else expected_answer(gateway, p.demo, tokens)
    outcomes = [None] * n
    streaming = threading.Barrier(n + 1, timeout=60)

    # Made before any thread starts: building 64 SDK clients takes about a second of CPU, which
    # would otherwise spread the streams' starts over more than a stream lasts.
    clients = [client_for(gateway, p.demo, timeout=timeout) for _ in range(n)]

    def one(i):
        c = clients[i]
        text, seen_first = "", False
        try:
            for chunk in c.chat.completions.create(model="x", messages=PROMPT, max_tokens=tokens, seed=7, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                    if not seen_first:
                        seen_first = True
                        streaming.wait()
            outcomes[i] = ("completed", None) if text == expected else ("duplicated", text)
        except openai.APITimeoutError:
            outcomes[i] = ("hung", None)
        except openai.APIStatusError as e:
            outcomes[i] = ("error", e.status_code)
        except openai.APIError as e:   # a mid-stream error event
            outcomes[i] = ("error", getattr(e, "code", None) or str(e)[:60])
        finally:
            if not seen_first:
                try:
                    streaming.wait()
                except threading.BrokenBarrierError:
                    pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    streaming.wait()
    if during:
        during()
    for t in threads:
        t.join(timeout + 20)
    counts = {"completed": 0, "error": 0, "lost": 0, "hung": 0, "duplicated": 0}
    errors = []
    for o in outcomes:
        kind = "lost" if o is None else o[0]
        counts[kind] += 1
        if kind == "error":
            errors.append(o[1])
        if kind == "duplicated":
            print("duplicated/garbled text:", o[1][:200])
    return counts, errors


def report(name, counts, errors):
    print(f"{name}: {counts}; errors: {sorted(set(map(str, errors)))}")
    assert counts["lost"] == 0 and counts["hung"] == 0 and counts["duplicated"] == 0, counts
