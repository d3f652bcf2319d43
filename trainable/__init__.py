"""LoRA train-and-evaluate for speech seq2seq models, scored by WER.

Import-light on purpose: ``trainable.config`` is stdlib only, and the heavy pieces
(torch, transformers, peft) load only when a run starts.
"""
