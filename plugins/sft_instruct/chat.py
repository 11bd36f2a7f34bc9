"""``sft chat``: a multi-turn conversation with a model in the terminal, tokens streamed as generated.

The conversation goes through the chat template saved with the model and the same generation
settings as evaluation (``InstructTask.generate``). Imports no torch until the command runs.
"""

from __future__ import annotations

import sys
from typing import Callable

import click

HELP = "/reset starts a new conversation, Ctrl-C stops an answer, /exit (or Ctrl-D) quits"


def chat_session(model: str, host, read: Callable[[str], str], write: Callable[[str], None],
                 system: str | None = None, max_new_tokens: int = 256, layers=()) -> list[dict]:
    """Run a chat until ``read`` raises EOFError or returns ``/exit``; returns the last conversation."""
    from transformers import TextStreamer

    from sft_core.engine import prepare_for_inference

    task, tokenizer, model_obj = prepare_for_inference(model, host, "instruct", list(layers))
    if not hasattr(task, "generate"):
        raise click.ClickException(f"{model} is a model of task {task.config.task!r}; sft chat talks to causal LMs")
    from sft_core.kit import chat_template

    prompt_ids = chat_template.prompt_ids

    class Streamer(TextStreamer):
        shown = ""  # the answer so far, as streamed

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.shown += text
            write(text + ("\n" if stream_end else ""))

    def fresh() -> list[dict]:
        return [{"role": "system", "content": system}] if system else []

    import torch

    messages = fresh()
    write(f"chatting with {model} ({HELP})\n")
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C at the prompt: leave quietly
            write("\n")
            break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            messages = fresh()
            write("(new conversation)\n")
            continue
        messages.append({"role": "user", "content": text})
        streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        try:
            ids = torch.tensor([prompt_ids(tokenizer, messages)])
            with torch.inference_mode():
                answer = task.generate(model_obj, ids, torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                       streamer=streamer)[0]
            content = tokenizer.decode(answer, skip_special_tokens=True).strip()
        except KeyboardInterrupt:  # Ctrl-C during an answer stops that answer; the conversation goes on
            write("\n(answer stopped)\n")
            content = streamer.shown.strip()
        messages.append({"role": "assistant", "content": content})
    return messages


def line_editing() -> None:
    """Arrow keys, line editing and the history of this session's lines at the prompt (GNU readline
    where Python has it; elsewhere input() as it is)."""
    try:
        import readline  # noqa: F401  (importing it is what turns editing on for input())
    except ImportError:
        pass


@click.command("chat")
@click.option("--model", "model", required=True, help="Model folder written by `sft run --task instruct`, or a model alias (smollm2).")
@click.option("--system", help="A system message that starts every conversation.")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_context
def chat_command(ctx, model, system, max_new_tokens, overrides):
    """Chat with a causal language model in the terminal, the answer streamed token by token."""
    from sft_core.api import config_layers

    host = ctx.find_root().obj
    line_editing()
    chat_session(model, host, read=input, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()),
                 system=system, max_new_tokens=max_new_tokens, layers=config_layers((), list(overrides)))
