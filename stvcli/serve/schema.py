"""The subset of the OpenAI schemas the server speaks (pydantic models): chat
completions, legacy completions, and the tokenizer routes vLLM serves (``/tokenize``,
``/detokenize``, ``/tokenizer_info``) that lm-evaluation-harness asks for.

Requests ignore fields they do not know (clients such as lmms-eval send extras) and
validate every field they read strictly (JSON types as OpenAI documents them, no
strings for numbers, finite floats, bounded integers and lengths), so a bad value is a
400 before anything runs; responses carry exactly the fields the OpenAI clients read.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

FinishReason = Literal["stop", "length"]

MAX_MESSAGES = 1024
MAX_PARTS = 256  # content parts of one message
MAX_STOPS, MAX_STOP_CHARS = 16, 256
MAX_TOKENS = 2**31 - 1
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
MAX_PROMPTS = 256  # prompts of one /v1/completions request (one choice each)
MAX_LOGPROBS = 20  # top alternatives per token (vLLM's default limit; OpenAI allows 5)
MAX_TOKEN_ID = 2**31 - 1  # the tokenizer's own vocabulary size is checked later
_REQUEST = ConfigDict(extra="ignore", strict=True)

TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]


# ---------------------------------------------------------------------- requests
class TextPart(BaseModel):
    model_config = _REQUEST

    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = _REQUEST

    url: str
    detail: str | None = Field(None, max_length=64)


class ImagePart(BaseModel):
    model_config = _REQUEST

    type: Literal["image_url"]
    image_url: ImageUrl

    @field_validator("image_url", mode="before")
    @classmethod
    def _bare_url(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value  # some clients send the URL itself


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = _REQUEST

    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None = None


class StreamOptions(BaseModel):
    model_config = _REQUEST

    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, protected_namespaces=())

    model: str = Field(min_length=1, max_length=512)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    # None or 0: greedy (unlike OpenAI's default of 1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)  # one choice per request

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @property
    def sampling_temperature(self) -> float:
        return self.temperature or 0.0

    @property
    def nucleus(self) -> float:
        return self.top_p or 1.0

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def stop_list(value: str | list[str] | None) -> list[str] | None:
    """``stop`` as a list, or a ValueError (-> 400) for too many, empty or long strings."""
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return None
    if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"stop must be up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters")
    return stops


PROMPT_SHAPES = (f"prompt must be a string, a list of strings, a list of token ids (integers >= 0) or a list of "
                 f"token-id lists, with at most {MAX_PROMPTS} prompts")
PromptField = Annotated[
    str | Annotated[list[str], Field(max_length=MAX_PROMPTS)] | list[TokenId]
    | Annotated[list[list[TokenId]], Field(max_length=MAX_PROMPTS)],
    Field(union_mode="left_to_right"),
]


class CompletionRequest(BaseModel):
    """``POST /v1/completions``: OpenAI's legacy completions, as lm-evaluation-harness's
    ``local-completions`` sends them, plus one stv field (``continuation_start``)."""

    model_config = ConfigDict(extra="ignore", strict=True, protected_namespaces=())

    model: str = Field(min_length=1, max_length=512)
    # a string, a list of strings, a list of token ids, or a list of token-id lists
    prompt: PromptField
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)  # 0: no generation (with echo)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # top alternatives per token
    echo: bool | None = False
    stream: bool | None = False
    n: int | None = Field(None, ge=1, le=1)
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: str | None = None
    # stv: where each prompt's scored continuation starts (a token index; see stvcli.serve.echo)
    continuation_start: int | Annotated[list[int], Field(max_length=MAX_PROMPTS)] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _prompt_shape(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        """One message for every wrong shape (not one per member of the union)."""
        try:
            value = handler(value)
        except ValidationError:
            raise ValueError(PROMPT_SHAPES) from None
        if isinstance(value, list) and (not value or any(isinstance(p, list) and not p for p in value)):
            raise ValueError(f"prompt is empty; {PROMPT_SHAPES}")
        return value

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("streaming is not supported on /v1/completions; send stream: false")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (text insertion) is not supported")
        return value

    @field_validator("continuation_start")
    @classmethod
    def _positive_start(cls, value: int | list[int] | None) -> int | list[int] | None:
        starts = [value] if isinstance(value, int) else value or []
        if any(s < 1 for s in starts):
            raise ValueError("continuation_start must be a token index of at least 1 (the prompt's first token "
                             "is never scored)")
        return value

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """One entry per choice: texts or token-id lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [list(prompt)]  # one prompt of token ids
        return list(prompt)

    @property
    def sampling_temperature(self) -> float:
        return self.temperature or 0.0

    @property
    def nucleus(self) -> float:
        return self.top_p or 1.0

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])

    @property
    def echoes(self) -> bool:
        return bool(self.echo)


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (vLLM's shape, what the harness's remote tokenizer sends)."""

    model_config = ConfigDict(extra="ignore", strict=True, protected_namespaces=())

    prompt: str
    add_special_tokens: bool = True
    model: str | None = Field(None, min_length=1, max_length=512)


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, protected_namespaces=())

    tokens: list[TokenId]
    model: str | None = Field(None, min_length=1, max_length=512)


# ---------------------------------------------------------------------- responses
def new_completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "stv"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionLogprobs(BaseModel):
    """Per token of a choice (the echoed prompt's, then the generated ones): its text, its
    log-probability (None for the first prompt token, which nothing predicts), the top
    alternatives and the token's offset in the concatenation of ``tokens``."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    prompt: str
