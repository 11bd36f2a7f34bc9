"""Request bodies of ``sft serve``, validated by pydantic (422 naming the field otherwise).

No ``from __future__ import annotations`` here: FastAPI reads these annotations at run time.
"""

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Union[str, dict[str, str]]] = Field(
        min_length=1, description="Texts, or records of the task's input fields (qa: question and context)")


class _Generation(BaseModel):
    # OpenAI clients send fields this server does not use (user, presence_penalty, ...): ignored
    model_config = ConfigDict(extra="ignore")
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1, le=32768)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=32768)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="one choice per prompt")
    stream: bool = False
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    logprobs: Optional[Union[bool, int]] = Field(None, description="not supported")


class CompletionRequest(_Generation):
    prompt: Union[str, list[str]] = Field(..., min_length=1)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = Field(description="only text parts: this server reads no images or audio")
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="developer is taken as system (newer OpenAI clients send it)")
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        """The content as one text (text parts joined by newlines, as OpenAI-style servers do)."""
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(_Generation):
    messages: list[Message] = Field(..., min_length=1)
