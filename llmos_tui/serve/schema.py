"""The OpenAI-compatible request bodies, checked by pydantic before anything reaches the engine.

Unknown fields are ignored (clients send many); the ones we cannot honour (``n`` > 1, ``echo``,
``suffix``, ``logprobs``, tools, functions) are refused with a 400 that names them, never silently dropped.
``response_format`` is honoured as llama-server does: ``json_object`` constrains the reply to JSON,
``json_schema`` to the given schema (llama.cpp's grammar, built in the engine's process);
``logit_bias`` is added to the logits of those token ids, as OpenAI and llama-server do.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stop = Union[str, list[str], None]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: object) -> object:
        """Name the part that is not text (an image, audio, a file): pydantic's own error for the
        union would only say that the content is not a string."""
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ValueError(f"a content part of type {kind!r} is not served: "
                                     "this model takes text parts only")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def wire(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str | None = None
    schema_: dict[str, object] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``; ``json_object`` may carry a ``schema`` too (llama-server's and
    llama-cpp-python's form)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, object] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _has_schema(self) -> "ResponseFormat":
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("type json_schema needs json_schema.schema (a JSON Schema object)")
        return self

    def engine(self) -> dict[str, object] | None:
        """What the engine constrains the reply by (None: free text)."""
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.type == "json_schema" and self.json_schema else self.schema_
        return {"type": self.type, "schema": schema}


class Sampling(BaseModel):
    """What both routes share."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0, le=10.0)
    seed: int | None = None
    stop: Stop = None
    n: int = Field(default=1, ge=1)
    logprobs: bool | int | None = None
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.strip().isdigit():
                raise ValueError(f"a token id must be a non-negative integer, not {token!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"a bias must lie in -100..100, not {bias}")
        if value is not None and len(value) > 1024:
            raise ValueError("at most 1024 biased tokens")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Stop) -> Stop:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> str | None:
        if self.n != 1:
            return "n: only one choice per request is served (n=1)"
        if self.logprobs:
            return "logprobs: not served by this daemon"
        return None

    def engine_sampling(self, max_tokens: int) -> dict[str, float | int | None]:
        out = {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
               "top_k": self.top_k, "min_p": self.min_p, "presence_penalty": self.presence_penalty,
               "frequency_penalty": self.frequency_penalty, "repeat_penalty": self.repeat_penalty,
               "seed": self.seed}
        if self.logit_bias:
            out["logit_bias"] = {str(int(k)): float(v) for k, v in self.logit_bias.items()}  # type: ignore[assignment]
        fmt = self.response_format.engine() if self.response_format is not None else None
        if fmt is not None:
            out["response_format"] = fmt  # type: ignore[assignment]
        return out


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[object] | None = None
    functions: list[object] | None = None
    # an extension (as llama-server has its own): leave out the oldest turns when the conversation is longer
    # than the context, instead of the 400. The attached cockpit sends it; OpenAI clients never do
    fit_context: bool = False

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_sampling(self, max_tokens: int) -> dict[str, float | int | None]:
        out = super().engine_sampling(max_tokens)
        if self.fit_context:
            out["fit_context"] = True
        return out

    def unsupported(self) -> str | None:
        if self.tools:
            return "tools: tool calls are not served by this daemon"
        if self.functions:
            return "functions: function calls are not served by this daemon"
        return super().unsupported()


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompt(cls, value: object) -> object:
        """OpenAI also takes token ids (a list of ints, or lists of them): say that text is served,
        rather than pydantic's "prompt.str: Input should be a valid string"."""
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("token-id prompts are not served; send the prompt as text")
        return value

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else "".join(self.prompt)

    def engine_sampling(self, max_tokens: int) -> dict[str, float | int | None]:
        """A completion continues its prompt as written (OpenAI's and llama-server's /v1/completions):
        the engine applies no chat template to it."""
        return {**super().engine_sampling(max_tokens), "raw_prompt": True}

    def unsupported(self) -> str | None:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            return "prompt: one prompt per request (a list of one string, or a string)"
        if self.echo:
            return "echo: not served by this daemon"
        if self.suffix:
            return "suffix: not served by this daemon"
        if self.best_of not in (None, 1):
            return "best_of: only 1 is served"
        return super().unsupported()
