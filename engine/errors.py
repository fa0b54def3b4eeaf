"""Errors the engine raises. Every message names what was wrong, where, and what was expected."""


class EngineError(Exception):
    """Base class: anything the engine rejects on purpose (as opposed to a bug)."""


class ConfigError(EngineError):
    """A config.json (or a setting derived from it) is missing a key or holds a bad value."""


class CheckpointError(EngineError):
    """A checkpoint directory is missing files, tensors, or holds tensors of the wrong shape."""


class TokenizerError(EngineError):
    """tokenizer.json is missing, unreadable, or lacks a special token the family needs."""


class RequestError(EngineError):
    """An infill request cannot be served: empty, canvas out of range, or longer than the context."""


class InfillCancelled(EngineError):
    """The caller's cancel check fired between two denoising steps."""
