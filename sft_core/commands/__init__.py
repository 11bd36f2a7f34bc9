"""The commands around the engine: the ``sft`` click group (``cli``) and the commands that attach
to it through ``sft_register_commands`` as a third-party command would (``bench``, ``serve``,
``export``, ``tune``, ``report``, ``new_task``). They build on the public Python API and the
engine's entry points, and never on each other."""
