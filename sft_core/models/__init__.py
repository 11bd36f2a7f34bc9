"""Models: what the engine trains and how it is held.

Model aliases (``minilm``, ``smollm2``), backbones (pad tokens, heads, gradient checkpointing),
adapters (LoRA and its relatives), sharding (FSDP), the last-layer shortcut, model wrappers, the
ONNX runtime model of an exported folder, and tiny random models for tests. Imports no engine code.
"""
