"""Prompt tokens of chat and Responses calls counted as OpenAI counts them, and split by part.

The rules follow OpenAI's cookbook "How to count tokens with tiktoken": each message costs its
role, content and name plus 3 framing tokens (1 more with a name), the reply is primed with 3,
and function definitions are counted from their names, descriptions, properties and enums.
Requests arrive as parsed JSON from clients, so odd shapes count as far as they go, never raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tiktoken

from proxy.metering.tokens import CL100K, count_with, encoding_for_model
from proxy.metering.usage import PromptSplit

_PER_MESSAGE = 3  # <|start|>{role}<|message|>...<|end|> around every message
_PER_NAME = 1
_REPLY_PRIMING = 3  # <|start|>assistant<|message|>
_PER_TOOL_CALL = 3  # a call the assistant made, beside its name and arguments
_SYSTEM_ROLES = ("system", "developer")
# A legacy `function` result costs 2 fewer (openai-chat-tokens' data, checked on the API).
_FUNCTION_RESULT_ADJUSTMENT = -2

# No size is known without fetching the image: a low-detail image is 85 tokens on gpt-4o, and
# 765 is gpt-4o's high-detail 1024x1024 image, the figure OpenAI's vision guide works through.
_IMAGE_LOW_DETAIL = 85
_IMAGE_OTHER_DETAIL = 765

# Schemas nest without limit; past this depth nothing more is counted.
_MAX_SCHEMA_DEPTH = 8


@dataclass(frozen=True, slots=True)
class _ToolFraming:
    """The cookbook's per-definition constants, which differ between encodings."""

    function_start: int
    properties_start: int = 3
    per_property: int = 3
    enum_start: int = -3
    per_enum_item: int = 3
    definitions_end: int = 12


_TOOL_FRAMING = {CL100K: _ToolFraming(function_start=10)}
_DEFAULT_TOOL_FRAMING = _ToolFraming(function_start=7)  # o200k models


@dataclass(slots=True)
class _Tally:
    system: int = 0
    tools: int = 0
    history: int = 0
    latest: int = 0

    def total(self) -> int:
        return self.system + self.tools + self.history + self.latest


def count_chat_prompt(model: str, messages: object, tools: object = None) -> int:
    """Estimated prompt tokens of a chat completion: messages, tool definitions, reply priming."""
    return _chat_tally(model, messages, tools).total()


def count_responses_input(
    model: str, instructions: object, input: object, tools: object = None
) -> int:
    """Estimated input tokens of a Responses call: instructions, input items, tool definitions."""
    return _responses_tally(model, instructions, input, tools).total()


def split_prompt(
    model: str, messages: object, tools: object, reported_input_tokens: int | None
) -> PromptSplit:
    """A chat call's input tokens by part, scaled to sum to the reported count (or the estimate).

    `latest` is the last user message and everything after it (tool calls and their results);
    `history` is every other non-system message before it. Without a user message, all of them
    are `latest`: nothing marks an earlier turn.
    """
    return _scaled(_chat_tally(model, messages, tools), reported_input_tokens)


def split_responses_prompt(
    model: str,
    instructions: object,
    input: object,
    tools: object,
    reported_input_tokens: int | None,
) -> PromptSplit:
    """A Responses call's input tokens by part, scaled like `split_prompt`."""
    return _scaled(_responses_tally(model, instructions, input, tools), reported_input_tokens)


def _chat_tally(model: str, messages: object, tools: object) -> _Tally:
    return _tally(model, _as_list(messages), tools)


def _responses_tally(model: str, instructions: object, input: object, tools: object) -> _Tally:
    items: list[object] = []
    if isinstance(instructions, str) and instructions:
        items.append({"role": "developer", "content": instructions})
    if isinstance(input, str):
        items.append({"role": "user", "content": input})
    else:
        items.extend(_as_messages(_as_list(input)))
    return _tally(model, items, tools)


def _tally(model: str, messages: list[object], tools: object) -> _Tally:
    model_encoding = encoding_for_model(model)
    tally = _tally_messages(model_encoding.encoding, messages)
    framing = _TOOL_FRAMING.get(model_encoding.name, _DEFAULT_TOOL_FRAMING)
    tally.tools = _definitions_tokens(model_encoding.encoding, framing, _as_list(tools))
    return tally


def _as_messages(items: list[object]) -> list[object]:
    """Responses input items as the chat messages they stand for."""
    messages: list[object] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call":
            call = {"function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            messages.append({"role": "assistant", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
        elif kind in (None, "message"):
            messages.append(item)
        # Reasoning items, references to stored items and built-in tool calls carry no text
        # that is visible here, so they count as nothing.
    return messages


def _tally_messages(encoding: tiktoken.Encoding, messages: Sequence[object]) -> _Tally:
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    user_indexes = [index for index, role in enumerate(roles) if role == "user"]
    latest_from = user_indexes[-1] if user_indexes else 0
    tally = _Tally(latest=_REPLY_PRIMING)
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        tokens = _message_tokens(encoding, message)
        if roles[index] in _SYSTEM_ROLES:
            tally.system += tokens
        elif index < latest_from:
            tally.history += tokens
        else:
            tally.latest += tokens
    return tally


def _message_tokens(encoding: tiktoken.Encoding, message: dict[object, object]) -> int:
    role = message.get("role")
    tokens = _PER_MESSAGE + _text_tokens(encoding, role)
    if role == "function":
        tokens += _FUNCTION_RESULT_ADJUSTMENT
    name = message.get("name")
    if isinstance(name, str) and name:
        tokens += count_with(encoding, name) + _PER_NAME
    tokens += _content_tokens(encoding, message.get("content"))
    calls = _as_list(message.get("tool_calls"))
    legacy_call = message.get("function_call")
    if isinstance(legacy_call, dict):
        calls.append({"function": legacy_call})
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tokens += _PER_TOOL_CALL + _text_tokens(encoding, function.get("name"))
            tokens += _text_tokens(encoding, function.get("arguments"))
    return tokens


def _content_tokens(encoding: tiktoken.Encoding, content: object) -> int:
    if isinstance(content, str):
        return count_with(encoding, content)
    return sum(_part_tokens(encoding, part) for part in _as_list(content))


def _part_tokens(encoding: tiktoken.Encoding, part: object) -> int:
    if isinstance(part, str):
        return count_with(encoding, part)
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
        return _IMAGE_LOW_DETAIL if detail == "low" else _IMAGE_OTHER_DETAIL
    if kind == "refusal":
        return _text_tokens(encoding, part.get("refusal"))
    # Audio and file parts are not counted: their size is not visible in the request.
    return _text_tokens(encoding, part.get("text"))


def _definitions_tokens(
    encoding: tiktoken.Encoding, framing: _ToolFraming, tools: list[object]
) -> int:
    functions = [_function_of(tool) for tool in tools]
    defined = [function for function in functions if function is not None]
    if not defined:
        return 0
    tokens = framing.definitions_end
    for function in defined:
        description = _text(function.get("description")).removesuffix(".")
        tokens += framing.function_start
        tokens += count_with(encoding, f"{_text(function.get('name'))}:{description}")
        parameters = function.get("parameters")
        if isinstance(parameters, dict):
            tokens += _properties_tokens(encoding, framing, parameters.get("properties"), 0)
    return tokens


def _function_of(tool: object) -> dict[object, object] | None:
    """The function a tool defines: chat's `{"type": "function", "function": {...}}`, or flat."""
    if not isinstance(tool, dict):
        return None
    nested = tool.get("function")
    function = nested if isinstance(nested, dict) else tool
    # Built-in tools (web search, file search, ...) have no name; what they add is not published.
    return function if isinstance(function.get("name"), str) else None


def _properties_tokens(
    encoding: tiktoken.Encoding, framing: _ToolFraming, properties: object, depth: int
) -> int:
    if not isinstance(properties, dict) or not properties or depth >= _MAX_SCHEMA_DEPTH:
        return 0
    tokens = framing.properties_start
    for key, schema in properties.items():
        spec = schema if isinstance(schema, dict) else {}
        tokens += framing.per_property
        enum = spec.get("enum")
        if isinstance(enum, list):
            tokens += framing.enum_start
            for item in enum:
                tokens += framing.per_enum_item + count_with(encoding, _text(item))
        description = _text(spec.get("description")).removesuffix(".")
        tokens += count_with(encoding, f"{key}:{_type_name(spec.get('type'))}:{description}")
        # The cookbook stops at the top level; nested objects are counted by the same rule
        # rather than not at all (not checked against API counts).
        items = spec.get("items")
        nested = items.get("properties") if isinstance(items, dict) else spec.get("properties")
        tokens += _properties_tokens(encoding, framing, nested, depth + 1)
    return tokens


def _type_name(value: object) -> str:
    if isinstance(value, list):
        return "|".join(_text(item) for item in value)
    return _text(value)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    return str(value) if isinstance(value, int | float) else ""


def _text_tokens(encoding: tiktoken.Encoding, value: object) -> int:
    return count_with(encoding, value) if isinstance(value, str) else 0


def _as_list(value: object) -> list[object]:
    """A JSON array as a list; a lone object as a list of one; anything else as nothing."""
    if isinstance(value, list | tuple):
        return list(value)
    return [value] if isinstance(value, dict) else []


def _scaled(tally: _Tally, reported: int | None) -> PromptSplit:
    """Scale the parts to sum to `reported` exactly, by largest remainder."""
    parts = [tally.system, tally.tools, tally.history, tally.latest]
    estimate = sum(parts)
    usable = isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0
    target = reported if usable and isinstance(reported, int) else estimate
    if estimate == 0:
        return PromptSplit(latest=target)
    shares = [part * target // estimate for part in parts]
    remainders = [part * target % estimate for part in parts]
    for index in sorted(range(4), key=lambda i: remainders[i], reverse=True)[
        : target - sum(shares)
    ]:
        shares[index] += 1
    system, tools, history, latest = shares
    return PromptSplit(system=system, tools=tools, history=history, latest=latest)
