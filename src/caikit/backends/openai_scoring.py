"""How the openai backend scores choices, and the probe that picks the way a server allows.

Methods, the one used recorded in provenance as `scoring`:
- `prompt-logprobs` (exact): the prompt tokenized exactly as the transformers backend does (with
  the `tokenizer` given, or by the server's `/tokenize`, which applies the server's own chat
  template), each choice's tokens appended, and `/v1/completions` with `echo`, `logprobs` and
  `max_tokens: 0` returns the log-probability of every token; a choice scores the sum over its
  tokens. All choices of a prompt go in one request (a list of prompts) where the server takes
  lists. vLLM skips its prefix cache for any request asking for prompt log-probs, so it prefills
  the prompt once per choice; `caikit serve` prefills it once and, told SGLang's
  `logprob_start_len`, computes log-probs of the choice tokens only.
- `first-token`: for choices one token apart (` (A)` / ` (B)`: the same tokens but one), one
  request ending before that token asks for one greedy token with its log-probs; each choice
  scores its token's log-probability there. No prompt log-probs are asked for, so the server's
  prefix cache serves the prompt. vLLM (0.33+) is asked for exactly the choices' token ids
  (`logprob_token_ids`); elsewhere the choices are looked up in the top 20, a choice missing
  from them gets the smallest listed (an upper bound). Tokens after the differing one (the `)`)
  are not scored: an approximation of the exact method, measured in docs/servers.md.
- `top-logprobs` (an approximation, for servers that return only the top log-probabilities of
  generated chat tokens, as hosted APIs and Ollama do): the model answers greedily with
  `top_logprobs=20`; at the first answer token where a choice's distinguishing text (" (A)" vs
  " (B)": "A" vs "B") is among the top tokens, each choice scores that token's log-probability,
  a missing one the smallest listed; if no position shows a choice, all score equal (counted).

`auto` takes the first that works, in that order. Prompts go as token ids; to a server that takes
text only (llama-cpp-python), as the text the client's tokenizer (`tokenizer=`) renders, the
server's own tokens read back by their text offsets. A server's echoed log-probs are used only if
they agree with its own next-token log-probs at the same position (`check_echo`): a server that
shifts its echo by one token (llama-cpp-python 0.3 does) would otherwise give confident nonsense.
"""

from __future__ import annotations

import logging
import os
import threading
from caikit.backends.protocol import Prompt, continues_assistant
from caikit.errors import CaikitError

log = logging.getLogger(__name__)
METHODS = ("auto", "prompt-logprobs", "first-token", "top-logprobs")
TOP_K = 20
PROBE = "One, two, three, four, five, six"  # its last token is near-certain, so in any top 20
ROWS = 64  # rows (prompt + choice) in one exact-scoring request: caikit serve's default --max-items
TOLERANCE = 0.25  # nats between a server's echo and its own next-token log-prob (bf16 noise is far less)


class Scoring:
    """What a server allows for scoring (probed once), and scoring by it."""

    def __init__(self, backend):  # an OpenAIBackend: its requests, tokens and counters
        self.b = backend
        self.method: str | None = None
        self.lists = False  # several prompts in one /v1/completions request
        self.by_id: bool | None = None  # takes vLLM's logprob_token_ids and return_tokens_as_token_ids
        self.last_top: dict | None = None  # the top log-probs an echo gave at its last prompt token
        self.text = False  # prompts go as text (rendered by the client's tokenizer): the server takes no token ids
        self.unmatched = 0

    # -- deciding ---------------------------------------------------------------------------------

    def decide(self) -> str:
        """The method to use: the one asked for, or with `auto` the first the server allows; exit 2
        with one line if none works, a warning line saying why when `auto` settles below exact."""
        if self.method:
            return self.method
        wanted, notes, ids = self.b.endpoint.scoring, [], None
        if wanted != "top-logprobs":
            try:
                ids = self.b.encode_text(PROBE, special=True)
            except CaikitError as err:
                notes.append(str(err))
        for self.text in (False, True) if ids and self.b.tokenizer() is not None else (False,) if ids else ():
            how, self.by_id = " over text prompts" if self.text else "", None
            if wanted in ("auto", "prompt-logprobs"):
                self.method = self._try(notes, f"prompt log-probs{how}", lambda: self.check_echo(ids), "prompt-logprobs")
            if not self.method and wanted in ("auto", "first-token"):
                self.method = self._try(notes, f"next-token log-probs{how}", lambda: self.next_token(ids[:-1], [ids[-1]], retries=1),
                                        "first-token")
            if self.method:
                break
        if not self.method and wanted in ("auto", "top-logprobs"):
            self.text = False
            self.method = self._try(notes, "top log-probs", lambda: self.top_logprobs([{"role": "user", "content": "Hi"}], retries=1),
                                    "top-logprobs")
        if not self.method:
            raise CaikitError(f"{self.b.endpoint.base_url}: cannot score choices with this server ({'; '.join(notes)})")
        if self.method != "prompt-logprobs" or notes:
            log.warning("%s: scoring choices by %s%s%s", self.b.endpoint.base_url, self.method,
                        "" if self.method == "prompt-logprobs" else ", an approximation", f" ({'; '.join(notes)})" if notes else "")
        self.b.details["scoring"] = self.method
        if self.method != "top-logprobs":  # how the requests went
            self.b.details["requests"] = ("one per prompt" if self.lists else "one per choice") if self.method == "prompt-logprobs" else (
                "token ids asked for" if self.by_id else f"top {TOP_K}")
            if self.text:
                self.b.details["prompts"] = "text"
        return self.method

    @staticmethod
    def _try(notes: list, what: str, probe, method: str) -> str | None:
        try:
            probe()
            return method
        except CaikitError as err:
            notes.append(f"{what}: {err}")
            return None

    def check_echo(self, ids: list[int]) -> None:
        """Raise unless the echo's log-prob of the probe's last token equals the server's own
        log-prob of that token as a one-token answer after the text before it. Learns on the way
        whether the server takes a list of prompts."""
        try:
            echoed = self.echo([ids, ids[:-1]], retries=1)[0]
            self.lists = True
        except CaikitError:
            echoed = self.echo([ids], retries=1)[0]
        token, logprob, offset = echoed[-1]
        try:
            found, shown = self.next_token(self.wire(ids)[:offset] if self.text else ids[:-1], [ids[-1]], retries=1)
        except CaikitError as err:
            raise CaikitError(f"its echo cannot be checked against a one-token answer ({err})") from None
        theirs = found.get(ids[-1], shown.get(token))
        if theirs is None and self.last_top:  # not among its top 20 (a weak model): compare the likeliest tokens there
            token, logprob = max(self.last_top.items(), key=lambda kv: kv[1])
            theirs = shown[token] if token == max(shown, key=shown.get) else float("-inf")
        if theirs is None:
            raise CaikitError(f"its one-token answer does not show {token!r}, so its echo cannot be checked")
        if abs(logprob - theirs) > TOLERANCE:
            raise CaikitError(f"it echoes log-prob {logprob:.2f} for {token!r} where its own next-token log-prob is {theirs:.2f}: "
                              "its echo is misaligned (shifted by a token?), so it is not used")

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, prompt: Prompt, choices: list[str]) -> list[float]:
        method = self.decide()
        if method == "prompt-logprobs":
            return self.exact([prompt], [choices])[0]
        if method == "first-token":
            ids, tails = self.b.encode(prompt), [self.b.encode_text(c) for c in choices]
            at = one_token_apart(tails)
            if at is not None:
                return self.first_token(ids + tails[0][:at], [t[at] for t in tails], choices)
            if self.b.endpoint.scoring == "first-token":
                raise CaikitError(f"scoring=first-token needs choices one token apart (like ' (A)' / ' (B)'), not {choices!r}: "
                                  "use prompt-logprobs or top-logprobs")
        return self.approximate(prompt, choices)

    def first_token(self, ids: list[int], wanted: list[int], choices: list[str]) -> list[float]:
        found, shown = self.next_token(ids, wanted)
        for t, key in zip(wanted, distinguishing(choices)):  # without token ids or texts: by what tells them apart
            if t not in found and (seen := [lp for tok, lp in shown.items() if shows(tok, key)]):
                found[t] = max(seen)
        if len(found) < len(wanted):
            self.unmatched += 1
        return [found.get(t, min(shown.values())) for t in wanted]

    def score_all(self, prompts: list, per_prompt: list[list[str]]) -> list[list[float]]:
        """Scores of each prompt's choices. Exact scoring on a server that takes prompt lists sends
        several prompts' choices in one request (as many prompts as the backend's batch size, up to
        ROWS rows), so the server batches as the in-process backend does; the rest, one prompt a job."""
        jobs = [[i] for i in range(len(prompts))]
        if self.decide() == "prompt-logprobs" and self.lists:
            size = max(1, min(self.b.batch_size, ROWS // max(map(len, per_prompt), default=1)))
            jobs = [list(range(i, min(i + size, len(prompts)))) for i in range(0, len(prompts), size)]
            if size > 1:
                self.b.details["requests"] = f"up to {size} prompts per request"
        else:
            return self.b._map(lambda i: self.score(prompts[i[0]], per_prompt[i[0]]), jobs)
        # Rows in flight: about two of the server's batches, so it always has the next one while no
        # request waits in its queue long enough to time out (and be sent again, doubling the work).
        gate = threading.Semaphore(max(1, 2 * ROWS // (size * max(map(len, per_prompt), default=1))))

        def job(idx: list[int]) -> list[list[float]]:
            with gate:
                return self.exact([prompts[i] for i in idx], [per_prompt[i] for i in idx])

        done = self.b._map(job, jobs)
        return [scores for part in done for scores in part]

    def exact(self, prompts: list, choices: list[list[str]]) -> list[list[float]]:
        ids = [self.b.encode(p) for p in prompts]
        rows, starts = [], []
        for prompt_ids, theirs in zip(ids, choices):
            for choice in theirs:
                rows.append(prompt_ids + self.b.encode_text(choice))
                starts.append(len(prompt_ids))
                if len(rows[-1]) == len(prompt_ids):
                    raise ValueError("score_choices: a choice is empty after tokenization")
        found = self.echo(rows, starts) if self.lists else [self.echo([r], [s])[0] for r, s in zip(rows, starts)]
        if self.text:  # (the server tokenized the text itself: a choice starts at its prompt text's end)
            starts = [len(self.wire(r[:s])) for r, s in zip(rows, starts)]
            if not all(any(o == s for _, _, o in f) for f, s in zip(found, starts)):
                raise CaikitError(f"{self.b.url('/completions')}: the server's tokens run across the start of a choice; "
                                  "score with token-id prompts or scoring=first-token")
            sums = [sum(lp for _, lp, o in f if o >= s) for f, s in zip(found, starts)]
        else:
            sums = [sum(lp for _, lp, _ in f[s:]) for f, s in zip(found, starts)]
        out, at = [], 0
        for theirs in choices:
            out.append(sums[at : at + len(theirs)])
            at += len(theirs)
        return out

    def echo(self, rows: list[list[int]], starts: list[int] | None = None, retries: int | None = None) -> list[list[tuple[str, float, int]]]:
        """(token, log-prob, text offset) of each prompt token of each row, by echo; the first token's
        log-prob, and those before row i's token `starts[i]` (caikit serve is told not to compute
        them), are 0."""
        starts = starts or [0] * len(rows)
        texts = [self.wire(r) for r in rows]
        body = {"model": self.b.model, "prompt": texts if len(rows) > 1 else texts[0], "echo": True, "logprobs": 1,
                "max_tokens": 1 if self.text else 0, "temperature": 0}  # (llama-cpp-python reads max_tokens 0 as "no limit")
        if any(starts) and self.b.owner == "caikit" and not self.text:  # (SGLang's name; vLLM would not know it)
            body["logprob_start_len"] = starts if len(rows) > 1 else starts[0]
        url = self.b.url("/completions")
        reply = self.b.post("/completions", body, retries=retries)
        self.b.prompt_tokens += sum(len(r) for r in rows)
        try:
            got = [c["logprobs"] for c in sorted(reply["choices"], key=lambda c: c.get("index", 0))]
            entries = [list(zip(g["tokens"], g["token_logprobs"], g.get("text_offset") or [0] * len(g["tokens"]))) for g in got]
            self.last_top = (got[0].get("top_logprobs") or [None])[len(entries[0]) - 1 if self.text else len(rows[0]) - 1]
        except (KeyError, IndexError, TypeError):
            raise CaikitError(f"{url}: echo with logprobs returned no prompt log-probabilities") from None
        if self.text:  # the prompt's tokens are those starting inside its text
            entries = [[e for e in es if e[2] < len(t)] for es, t in zip(entries, texts)]
        else:
            entries = [es[: len(r)] for es, r in zip(entries, rows)]
        if len(entries) != len(rows) or any(len(es) < (2 if self.text else len(r)) for es, r in zip(entries, rows)):
            raise CaikitError(f"{url}: prompt log-probabilities do not cover the prompts' tokens")
        out = []
        for es, r in zip(entries, rows):
            first = 1 if self.text else max(starts[len(out)], 1)
            if any(lp is None for _, lp, _ in es[first:]):
                raise CaikitError(f"{url}: prompt log-probabilities do not cover the prompts' tokens")
            out.append([(t, 0.0, o) for t, _, o in es[:first]] + [(t, float(lp), o) for t, lp, o in es[first:]])
        return out

    def wire(self, ids: list[int]) -> list[int] | str:
        """A prompt as sent: token ids, or for servers that take text only, the text they decode to
        (a leading begin-of-text token left for the server to add)."""
        if not self.text:
            return ids
        tok = self.b.tokenizer()
        if tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id]:
            ids = ids[1:]
        return tok.decode(ids, skip_special_tokens=False)

    def next_token(self, ids: list[int] | str, wanted: list[int], retries: int | None = None) -> tuple[dict[int, float], dict[str, float]]:
        """From one greedy token after `ids` (or a text): the log-probs of the tokens `wanted` that the
        reply shows ({id: logprob}) and everything it shows ({token: logprob})."""
        body = {"model": self.b.model, "prompt": self.wire(ids) if isinstance(ids, list) else ids, "max_tokens": 1, "temperature": 0, "logprobs": TOP_K}
        if self.by_id is not False:  # (None: not yet known)
            body.update(logprobs=1, logprob_token_ids=sorted(set(wanted)), return_tokens_as_token_ids=True)
        try:
            reply = self.b.post("/completions", body, retries=retries)
        except CaikitError:
            if self.by_id is not None:
                raise
            self.by_id = False
            return self.next_token(ids, wanted, retries)
        self.b.prompt_tokens += len(ids) if isinstance(ids, list) else 0
        try:
            shown = {str(k): float(v) for k, v in reply["choices"][0]["logprobs"]["top_logprobs"][0].items()}
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            shown = {}
        if not shown:
            raise CaikitError(f"{self.b.url('/completions')}: a one-token answer came without top log-probs")
        if self.by_id is None:
            self.by_id = all(f"token_id:{t}" in shown for t in wanted)
            if not self.by_id:  # the server does not know vLLM's logprob_token_ids: ask again for the top 20
                return self.next_token(ids, wanted, retries)
        keys = {t: f"token_id:{t}" if self.by_id else self.b.decode(t) for t in wanted}
        return {t: shown[k] for t, k in keys.items() if k in shown}, shown

    def top_logprobs(self, prompt: Prompt, retries: int | None = None) -> list[dict[str, float]]:
        """Top log-probs of each greedy answer token, as [{token text: logprob}]."""
        body = {"model": self.b.model, "max_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": TOP_K}
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        body["messages"] = prompt
        if continues_assistant(prompt):
            body.update(continue_final_message=True, add_generation_prompt=False)
        reply = self.b.post("/chat/completions", body, retries=retries)
        self.b.prompt_tokens += (reply.get("usage") or {}).get("prompt_tokens") or 0
        self.b.generated_tokens += (reply.get("usage") or {}).get("completion_tokens") or 0
        try:
            content = reply["choices"][0]["logprobs"]["content"]
            return [{t["token"]: float(t["logprob"]) for t in step["top_logprobs"]} for step in content]
        except (KeyError, IndexError, TypeError):
            raise CaikitError(f"{self.b.url('/chat/completions')}: the reply has no top_logprobs") from None

    def approximate(self, prompt: Prompt, choices: list[str]) -> list[float]:
        keys = distinguishing(choices)
        for step in self.top_logprobs(prompt):
            found = [max((lp for tok, lp in step.items() if shows(tok, key)), default=None) for key in keys]
            if any(v is not None for v in found):
                floor = min(step.values())
                return [v if v is not None else floor for v in found]
        self.unmatched += 1
        log.warning("%s: no choice among the top log-probs of the answer (%d prompts so far): scored equal", self.b.model, self.unmatched)
        return [0.0] * len(choices)


def one_token_apart(tails: list[list[int]]) -> int | None:
    """Where choices' tokens differ, if they differ in that one position only (else None)."""
    if len(tails) < 2 or len({len(t) for t in tails}) != 1:
        return None
    at = next((k for k in range(len(tails[0])) if len({t[k] for t in tails}) > 1), None)
    if at is None or len({t[at] for t in tails}) != len(tails) or len({tuple(t[at + 1 :]) for t in tails}) != 1:
        return None
    return at


def distinguishing(choices: list[str]) -> list[str]:
    """What tells the choices apart: " (A)" and " (B)" -> "A" and "B"."""
    stripped = [c.strip() for c in choices]
    if len(stripped) < 2:
        return stripped
    head = len(os.path.commonprefix(stripped))
    tail = len(os.path.commonprefix([s[::-1] for s in stripped]))
    return [s[head : len(s) - tail] or s for s in stripped]


def shows(token: str, key: str) -> bool:
    text = token.strip().strip("()[]").strip()
    return bool(text) and (text == key or (len(key) > 1 and key.startswith(text)))
