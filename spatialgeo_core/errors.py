"""Exception classes of spatialgeo_core.

The ROS layer and the CLIs map these to status codes / exit messages; nothing else should be raised
on purpose for bad user input.
"""


class SpatialGeoError(Exception):
    """Base class of every error spatialgeo_core raises on purpose."""


class ConfigError(SpatialGeoError, ValueError):
    """A config field has an invalid value (the message names the field)."""


class CheckpointError(SpatialGeoError):
    """A checkpoint is missing, corrupt, of an unsupported kind, or does not match the model."""


class KeyMismatchError(CheckpointError):
    """A strict load found missing or unexpected keys, or shape mismatches; all are named in the
    message.
    """

    def __init__(self, what: str, missing=(), unexpected=(), mismatched=()):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        parts = [f"strict load of {what} failed:"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape mismatch", self.mismatched)):
            if keys:
                shown = ", ".join(str(k) for k in keys[:20])
                more = f" (+{len(keys) - 20} more)" if len(keys) > 20 else ""
                parts.append(f"{len(keys)} {name} key(s): {shown}{more}")
        super().__init__(" ".join(parts))


class InvalidImageError(SpatialGeoError, ValueError):
    """An image is empty, of an unsupported layout or dtype, or cannot be decoded."""


class InvalidRegionError(SpatialGeoError, ValueError):
    """A region (box or mask) is malformed or lies outside the image."""


class InvalidRequestError(SpatialGeoError, ValueError):
    """A question or generation option is invalid (empty, too long, out of range)."""


class MissingDependencyError(SpatialGeoError, ImportError):
    """An optional dependency was asked for but is not installed; the message names the pip
    extra.
    """


class EvalRunError(SpatialGeoError):
    """An evaluation's output directory cannot be used, or a run could not finish (the message
    says what was kept)."""


class InterruptedRun(SpatialGeoError):
    """A long command was interrupted (Ctrl-C); the message says what it kept and how to continue.
    The CLI ends with exit code 130, as for any Ctrl-C."""
