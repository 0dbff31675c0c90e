"""How hard a request is: a pure, deterministic, no-network classifier.

`assess` reads the body a client sent (OpenAI chat/completions, completions, Anthropic
messages, OpenAI responses) and returns a score in [0, 1] with the facts the routing
policy's guards need; `tier_for` maps a score to a tier with the policy's thresholds;
`thresholds_for_share` calibrates those thresholds from observed scores (RouteLLM's way:
choose the share of traffic that goes to the top tier, derive the threshold).

It runs on every routed request, cache hits included, so it is built for speed: the text
is gathered once, lengths are counted exactly but only bounded windows are scanned, and
the scanning is done by C-level bytes operations (one `translate` that lowercases and
blanks punctuation, `split`, frozenset intersections, `count`), not by Python loops or
big regex alternations. Keywords are read from the *instruction* (the first and last
paragraphs of the last user turn, and the system prompt), not from pasted documents,
so a transcript that happens to say "plan" does not make a summary look like planning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson

# Tuned on bench/routing/tuning.jsonl only (bench/routing/README.md has the numbers);
# the routing policy uses them when an organization sets no thresholds of its own.
SIMPLE_BELOW = 0.25
COMPLEX_FROM = 0.45

# How much text is scanned for features; lengths are always counted in full.
_HEAD = 3000
_TAIL = 1000
_INSTRUCTION = 1500
_SYSTEM = 1000
_BASE = 0.1
# What an image costs in prompt tokens: OpenAI's high-detail 1024x1024 tile count.
_IMAGE_TOKENS = 765


class Tier(StrEnum):
    SIMPLE = "simple"
    STANDARD = "standard"
    COMPLEX = "complex"


@dataclass(frozen=True, slots=True)
class Assessment:
    score: float
    tokens_in: int
    tokens_out: int
    tools_required: bool
    strict_schema: bool
    has_images: bool
    signals: tuple[tuple[str, float], ...]


def _words(*names: str) -> frozenset[bytes]:
    return frozenset(n.encode() for n in names)


# Word groups, matched as whole lowercased words of the instruction. Variants are listed
# instead of stemmed: stemming would cost more than the whole budget.
_PROOF = _words(
    "prove", "proof", "proofs", "proving", "lemma", "lemmas", "theorem", "rigorous",
    "rigorously", "induction", "irrational", "counterexample", "countermodel", "pumping",
    "qed", "démontrez", "démontrer", "démontre", "beweisen", "beweise", "beweis",
    "demuestra", "demostrar", "demuestre", "докажите", "доказать", "証明", "证明")
_REASON = _words(
    "analyse", "analyze", "analysis", "assess", "critique", "critically", "evaluate",
    "tradeoffs", "tradeoff", "implications", "steelman", "systematic", "systematically",
    "derive", "derivation", "justify", "confounders", "assumptions", "weigh", "argue",
    "sensitivity", "rigor", "diagnosis", "diagnose", "decisive", "scenario", "scenarios",
    "estimate", "ranked", "recommendation", "recommend", "enforceable", "liability")
_PLAN = _words(
    "roadmap", "strategy", "stratégie", "estrategia", "phased", "phases", "milestones",
    "hitos", "timeline", "rollout", "migration", "migrate", "runbook", "runbooks",
    "curriculum", "architecture", "capacity", "rollback", "sequence", "backfill",
    "failover", "okrs", "kpis", "market", "phase")
_CREATIVE = _words(
    "story", "novel", "novelette", "novella", "chapter", "chapters", "screenplay",
    "stage", "epic", "outline", "worldbuilding", "bible", "nouvelle", "cuento", "roman",
    "geschichte", "lyrics", "toast", "poem", "essay")
_BUILD = _words(
    "implement", "production", "distributed", "concurrent", "concurrency", "consensus",
    "compiler", "interpreter", "parser", "tokenizer",
    "scheduler", "refactor", "benchmarks", "linearizability", "sandboxing", "invariants",
    "crdt", "raft", "simd", "idempotency", "design", "full", "complete")
_DEBUG = _words(
    "deadlock", "deadlocks", "race", "leak", "intermittent", "intermittently",
    "heisenbug", "diverges", "flaky", "crash", "crashes", "regression", "interleaving",
    "root", "reproduce", "slower", "panicking")
_MATH = _words(
    "integral", "derivative", "eigenvalues", "eigenvectors", "probability", "expected",
    "recurrence", "closed", "generating", "asymptotic", "equation", "equations",
    "solve", "matrix", "combinatorics", "hitting", "weighings", "integer", "integers")
_SIMPLE = _words(
    "translate", "traduce", "traduis", "übersetze", "переведи", "hi", "hello", "hey",
    "thanks", "thank", "bye", "capital", "sentiment", "spam", "classify", "label",
    "rephrase", "shorten", "shorter", "typos", "tl", "dr", "tldr", "haiku", "limerick",
    "pun", "joke", "rhyme", "capitalize", "sarcastic", "toxic", "say", "mean")
# A task a small model does less well than a mid-sized one: code, errors, explanations,
# word problems, plans, short creative work, digests of pasted text.
_TASK = _words(
    "function", "script", "query", "sql", "regex", "class", "dockerfile", "workflow",
    "hook", "handler", "unit", "pytest", "bash", "python", "javascript", "js",
    "typescript", "golang", "rust", "java", "kotlin", "c#", "linq", "pandas", "react",
    "django", "css", "html", "yaml", "async", "await", "code", "error", "errors",
    "exception", "traceback", "fix", "bug", "warning", "fails", "failing", "broken",
    "why", "explain", "explique", "erkläre", "difference", "differences", "compare",
    "pros", "cons", "works", "work", "plan", "itinerary", "checklist", "schedule", "routine",
    "story", "poem", "names", "lyrics", "caption", "description", "summarize",
    "summarise", "summary", "gist", "takeaways", "résume", "resume", "zusammenfassung",
    "parse", "table", "json", "continue", "tailored", "causes", "cause", "git", "docker",
    "ssh", "npm", "pourquoi", "warum", "porque", "poème", "poema", "gedicht", "écris",
    "escribe", "schreibe", "organise", "organiza", "planifie",
    "solve", "probability", "derivative", "invest", "interest", "discount", "average",
    "percent", "mpg")
_QUESTION = _words("how", "much", "many", "long", "find", "solve", "calculate", "old", "if",
                   "when", "wie", "combien", "cuánto", "quelle")
_BRIEF = _words("short", "brief", "briefly", "quick", "concise", "line", "sentence")
# Function words of common languages other than English: two of them in the text and
# it is not English, whatever its script.
_FOREIGN = _words(
    "le", "la", "les", "des", "est", "une", "pour", "avec", "dans", "qui", "der", "die",
    "das", "und", "ist", "nicht", "mit", "ich", "ein", "eine", "el", "los", "las", "que",
    "por", "con", "una", "para", "del", "como", "il", "di", "che", "non", "per", "sono",
    "não", "uma", "em", "os", "ser", "het", "een", "niet", "och", "att", "jag")

# Lowercase ASCII letters and blank ASCII punctuation in one C-level pass; the
# characters of c++/c# stay so they survive as words.
_KEEP = b"+#_'"
_TABLE = bytes(
    (c + 32 if 65 <= c <= 90 else 32 if (c < 128 and not chr(c).isalnum()
                                         and bytes([c]) not in _KEEP and c != 32) else c)
    for c in range(256))
_ASKED_LENGTH = re.compile(
    "(\\d[\\d,.]{1,6}) *(words?|mots|palabras|wörter|lines|pages|paragraphs)".encode())
# Words a unit of asked length stands for.
_UNIT_WORDS = {b"lines": 8, b"pages": 400, b"paragraphs": 100}
_ENUMERATED = re.compile("\n\\s*(?:\\d{1,2}[.)]|[-*]|\u2022)\\s".encode())
_MATH_SYMBOLS = re.compile("[∫√≤≥∑π∀∃∈≠→×²³]")
# The start of a number: a digit not inside a word or another number.
_NUMBER = re.compile(rb"(?<![0-9a-z])[0-9]")


def _text_of(part: object, depth: int = 0) -> str:
    """The text of a content part of any of the four shapes ('' when it has none)."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    text = part.get("text")
    if isinstance(text, str):
        return text
    # Anthropic tool_result and Responses function_call_output carry text elsewhere,
    # one level down; deeper nesting is not a real body, and must not recurse forever.
    for key in ("content", "output", "input", "arguments"):
        value = part.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and depth < 2:
            return "\n".join(_text_of(v, depth + 1) for v in value)
    return ""


_IMAGE_TYPES = frozenset({"image_url", "image", "input_image"})


def _content(content: object) -> tuple[str, int]:
    """(text, how many images) of a message's content: a string or a list of parts."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts = []
    images = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") in _IMAGE_TYPES:
            images += 1
        else:
            texts.append(_text_of(part))
    return "\n".join(texts), images


class _Gathered:
    __slots__ = ("system", "turns", "last_user", "images", "extra_tokens")

    def __init__(self) -> None:
        self.system: list[str] = []
        self.turns: list[str] = []       # every non-system message, last user turn included
        self.last_user = ""
        self.images = 0
        self.extra_tokens = 0            # token-id prompts: counted, nothing to scan

    def message(self, role: object, content: object) -> None:
        text, images = _content(content)
        self.images += images
        if role in ("system", "developer"):
            self.system.append(text)
            return
        self.turns.append(text)
        if role == "user" or role is None:
            self.last_user = text


def _gather(endpoint: str, body: dict) -> _Gathered:
    found = _Gathered()
    if endpoint.endswith("completions") and not endpoint.endswith("chat/completions"):
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        for p in prompts:
            if isinstance(p, str):
                found.message("user", p)
            elif isinstance(p, list):      # token ids, or a batch of them
                found.extra_tokens += sum(len(x) if isinstance(x, list) else 1 for x in p)
            elif isinstance(p, int):
                found.extra_tokens += 1
        return found
    if endpoint.endswith("responses"):
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            found.system.append(instructions)
        items = body.get("input")
        if isinstance(items, str):
            found.message("user", items)
        elif isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "role" in item:
                    found.message(item.get("role"), item.get("content"))
                elif isinstance(item, dict) and item.get("type") in _IMAGE_TYPES:
                    found.images += 1
                else:
                    found.message("tool", [item])
        return found
    # chat/completions and Anthropic messages share the messages list.
    system = body.get("system")
    if system is not None:
        found.message("system", system)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                found.message(message.get("role"), message.get("content"))
    return found


def _instruction(text: str) -> str:
    """What the user asks, without what they pasted: a short first line followed by a
    lot more text is the ask; otherwise the first paragraph (up to a code fence), and
    the last one too when the first is long enough to be pasted itself."""
    line, newline, after = text.partition("\n")
    if newline and len(line) < 300 and len(after) > 400:
        return line
    head, sep, rest = text.partition("\n\n")
    fence = head.find("```")
    if fence > 0:
        head = head[:fence]
    if sep and len(head) > 400:
        tail = rest.rpartition("\n\n")[2]
        if len(tail) < 400 and "```" not in tail:
            return head[:_INSTRUCTION] + "\n" + tail
    return head[:_INSTRUCTION]


def _json_tokens(value: object) -> int:
    """Tool definitions and schemas reach the model as text: about their JSON's length."""
    if not value:
        return 0
    try:
        return len(orjson.dumps(value)) // 4
    except TypeError:      # not JSON (orjson.JSONEncodeError is a TypeError)
        return 0


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _tools(body: dict) -> tuple[int, bool]:
    """(how many tools, whether the client forces a call)."""
    tools = body.get("tools")
    count = len(tools) if isinstance(tools, list) else 0
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        forced = choice in ("required", "any")
    elif isinstance(choice, dict):
        # {"type": "function", ...} (OpenAI), {"type": "any" | "tool", ...} (Anthropic).
        forced = choice.get("type") in ("function", "any", "tool")
    else:
        forced = False
    return count, forced and count > 0


def _schema(body: dict) -> tuple[bool, bool]:
    """(asks for a JSON schema, a strict one)."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        return True, isinstance(spec, dict) and spec.get("strict") is True
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return True, fmt.get("strict") is True
    return False, False


def _asked_out(body: dict) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = _int(body.get(key))
        if value is not None:
            return value
    return None


def _clip(x: float, low: float = 0.0, high: float = 1.0) -> float:
    return low if x < low else high if x > high else x


# (signal, words, weight per distinct word, cap). One frozenset intersection finds the
# hits of every group at once; a word may belong to more than one group.
_GROUPS: tuple[tuple[str, frozenset[bytes], float, float], ...] = (
    ("task", _TASK, 0.12, 0.16),
    ("proof", _PROOF, 0.45, 0.5),
    ("reasoning", _REASON, 0.1, 0.25),
    ("planning", _PLAN, 0.1, 0.25),
    ("creative", _CREATIVE, 0.06, 0.12),
    ("building", _BUILD, 0.08, 0.24),
    ("hard_debugging", _DEBUG, 0.08, 0.16),
    ("math", _MATH, 0.06, 0.18),
    ("simple_ask", _SIMPLE, -0.08, -0.16),
    ("brief_ask", _BRIEF, -0.05, -0.1),
    ("", _QUESTION, 0.0, 0.0),       # counted, not scored: read by the word problem rule
    ("", _FOREIGN, 0.0, 0.0),        # counted, not scored: read by the language rule
)
_SIMPLE_GROUP, _QUESTION_GROUP, _FOREIGN_GROUP = 8, 10, 11
_GROUPS_OF: dict[bytes, tuple[int, ...]] = {}
for _index, (_, _members, _, _) in enumerate(_GROUPS):
    for _word in _members:
        _GROUPS_OF[_word] = (*_GROUPS_OF.get(_word, ()), _index)
_KEYWORDS = frozenset(_GROUPS_OF)


def assess(*, endpoint: str, body: object) -> Assessment:
    """The request's difficulty and the facts routing guards need. Never raises:
    a body of the wrong shape is assessed as far as it can be read."""
    if not isinstance(body, dict):
        body = {}
    endpoint = endpoint if isinstance(endpoint, str) else ""
    found = _gather(endpoint.rstrip("/"), body)
    signals: list[tuple[str, float]] = []
    add = signals.append

    system = "\n".join(found.system)
    total_bytes = sum(map(_utf8_length, found.turns)) + _utf8_length(system)
    # ~4 bytes a token for English; CJK (3 bytes a character) comes out near 1 token a
    # character, as tokenizers give. The constant is the per-message framing.
    text_tokens = (total_bytes + 3) // 4 + found.extra_tokens
    tokens_in = (text_tokens + 4 * (len(found.turns) + bool(system)) + _IMAGE_TOKENS * found.images
                 + _json_tokens(body.get("tools")) + _json_tokens(body.get("response_format")))

    last = found.last_user
    window = last if len(last) <= _HEAD + _TAIL else last[:_HEAD] + "\n" + last[-_TAIL:]
    ask = _instruction(last)
    if system:
        ask = system[:_SYSTEM] + "\n" + ask
    ask_bytes = ask.encode("utf-8", "replace").translate(_TABLE)
    ask_split = ask_bytes.split()
    window_bytes = window.encode("utf-8", "replace")

    # How much is asked: long, many-claused instructions are the complex ones.
    ask_words = len(ask_split)
    if ask_words > 6:
        add(("ask_length", 0.3 * min(math.log2(ask_words / 6) / 4, 1.0)))
    clauses = ask.count(",") + ask.count(";") + ask.count("?") + ask.count(" and ")
    if clauses:
        add(("clauses", min(0.02 * clauses, 0.12)))
    if b"\n" in window_bytes:
        requirements = len(_ENUMERATED.findall(window_bytes))
        if requirements:
            add(("enumerated", min(0.01 * requirements, 0.06)))

    # Pasted text makes a task heavier; tool schemas and images have their own signals.
    if text_tokens > 100:
        add(("context_length", 0.12 * min(math.log2(text_tokens / 100) / 3, 1.0)))
    if len(found.turns) > 1:
        add(("depth", 0.02 * min(len(found.turns) - 1, 6)))
    if len(system) > 600:
        add(("system_prompt", 0.03))

    if b"```" in window_bytes:
        add(("code_block", 0.08))
    elif window_bytes.count(b"(") + window_bytes.count(b"{") + window_bytes.count(b";") >= 2 \
            and b"\n" in window_bytes:
        add(("code_syntax", 0.06))      # code pasted or to complete, without a fence
    math_marks = window.count("^")
    if not window.isascii():
        math_marks += len(_MATH_SYMBOLS.findall(window))
    if math_marks:
        add(("math_notation", min(0.03 * math_marks, 0.09)))

    counts = [0] * len(_GROUPS)
    for word in _KEYWORDS.intersection(ask_split):
        for index in _GROUPS_OF[word]:
            counts[index] += 1
    if text_tokens >= 60:     # "translate" a sentence is simple, a paragraph is not
        counts[_SIMPLE_GROUP] = 0
    for (name, _, each, cap), hits in zip(_GROUPS, counts, strict=True):
        if hits and name:
            add((name, max(hits * each, cap) if each < 0 else min(hits * each, cap)))
    if ask_words >= 10 and counts[_QUESTION_GROUP] and len(_NUMBER.findall(ask_bytes)) >= 2:
        add(("word_problem", 0.08))
    if b"step by step" in ask_bytes or b"trade off" in ask_bytes:
        add(("step_by_step", 0.08))

    asked_words = 0
    match = _ASKED_LENGTH.search(ask_bytes) if b" " in ask_bytes else None
    if match:
        digits = match.group(1).replace(b",", b"").replace(b".", b"")
        if digits.isdigit():
            asked_words = int(digits) * _UNIT_WORDS.get(match.group(2), 1)
    if asked_words >= 1000:
        add(("long_output_asked", 0.35))
    elif asked_words >= 400:
        add(("long_output_asked", 0.15))

    asked_out = _asked_out(body)
    if asked_out is not None and asked_out <= 64:
        add(("short_output_cap", -0.15))
    elif asked_out is not None and asked_out >= 4000:
        add(("long_output_cap", 0.1))

    tool_count, tools_required = _tools(body)
    if tool_count:
        add(("tools", 0.03 + 0.02 * min(tool_count - 1, 3)))
    if tools_required:
        add(("tool_choice_forced", 0.04))
    json_schema, strict_schema = _schema(body)
    if json_schema:
        add(("json_schema", 0.05))
    if found.images:
        add(("images", 0.05))

    non_ascii = len(window_bytes) - len(window)
    if non_ascii * 4 > len(window) or counts[_FOREIGN_GROUP] >= 2:
        add(("non_english", 0.03))

    score = _clip(_BASE + sum(value for _, value in signals))
    estimate = int(120 + 1400 * score * score)
    if asked_words:
        estimate = max(estimate, int(asked_words * 1.4))
    tokens_out = min(asked_out, estimate) if asked_out is not None else estimate
    return Assessment(
        score=round(score, 4), tokens_in=tokens_in, tokens_out=tokens_out,
        tools_required=tools_required, strict_schema=strict_schema,
        has_images=found.images > 0, signals=tuple(signals))


def tier_for(*, score: float, simple_below: float = SIMPLE_BELOW,
             complex_from: float = COMPLEX_FROM) -> Tier:
    """The tier for a score: below `simple_below` simple, from `complex_from` complex."""
    if score >= complex_from:
        return Tier.COMPLEX
    if score < simple_below:
        return Tier.SIMPLE
    return Tier.STANDARD


def _quantile_threshold(ordered: Sequence[float], share_above: float) -> float:
    """The threshold t with about `share_above` of `ordered` (ascending) at or above t."""
    n = len(ordered)
    above = round(_clip(share_above) * n)
    if above <= 0:
        return 1.0      # nothing routed up but a score of exactly 1
    if above >= n:
        return 0.0
    # Half way between neighbours, so a score equal to a seen one lands on its side.
    low, high = ordered[n - above - 1], ordered[n - above]
    return (low + high) / 2 if low < high else high


def thresholds_for_share(*, scores: Sequence[float], complex_share: float,
                         simple_share: float | None = None) -> tuple[float, float]:
    """(simple_below, complex_from) calibrated on observed `scores`, RouteLLM's way:
    about `complex_share` of them score at or above complex_from and, when given,
    about `simple_share` below simple_below (otherwise the default SIMPLE_BELOW,
    never above complex_from). Ties can make the shares coarser than asked."""
    ordered = sorted(_clip(float(s)) for s in scores if isinstance(s, int | float)
                     and math.isfinite(s))
    if not ordered:
        return min(SIMPLE_BELOW, COMPLEX_FROM), COMPLEX_FROM
    complex_from = _quantile_threshold(ordered, complex_share)
    if simple_share is None:
        simple_below = SIMPLE_BELOW
    else:
        simple_below = _quantile_threshold(ordered, 1 - _clip(simple_share))
    return min(simple_below, complex_from), complex_from
