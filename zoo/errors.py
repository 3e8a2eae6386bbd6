"""Typed errors. Every failure a user can cause is a ZooError; the CLI prints it on one line.

This module imports nothing, so the leaf packages (zoo.format, zoo.kernels) can raise these
errors without depending on the rest of zoo.
"""


class ZooError(Exception):
    """Base of every error zoo reports to a user as one line."""

    exit_code = 1


class FormatError(ZooError):
    """An artifact breaks the zoo format: names the tensor (or file) and the broken check."""


class VersionError(FormatError):
    """An artifact was written by a newer, incompatible major format version."""


class CardError(ZooError):
    """A model card (zoo.yaml) is missing, malformed or fails the schema."""


class ChecksumError(ZooError):
    """A file's sha256 or size does not match what its manifest or card promises."""


class KernelError(ZooError):
    """A kernel was called with arrays of the wrong dtype, shape or layout."""


class RegistryError(ZooError):
    """A registry or the local store cannot do what was asked (missing name, bad URL, I/O)."""


class NotFoundError(RegistryError):
    """A model name or tag does not exist where it was looked up."""


class ServerUnreachableError(ZooError):
    """No zoo server answers at the address, or it refuses the request (zoo ps)."""


class ConvertError(ZooError):
    """A checkpoint cannot be imported: unknown architecture, missing tensor, bad shape."""


class RuntimeModelError(ZooError):
    """The runtime cannot run this model or request (e.g. the context length is exceeded)."""


class ChatTemplateLimitError(RuntimeModelError):
    """A model's chat template went past a render limit (time, output size, range, format width)."""


class CompressError(ZooError):
    """Compression cannot proceed with the given model and options."""


class ConfigError(ZooError):
    """The user config file (~/.config/zoo/config.yaml or ZOO_CONFIG) is unreadable or malformed."""


class EvaluationError(ZooError):
    """A model cannot be evaluated as asked: text too short or unreadable, no tokenizer, bad protocol options."""


class BuildError(ZooError):
    """A card's recipe cannot be built: no recipe, an unavailable base, or options zoo cannot apply."""


class DiskFullError(ZooError):
    """A write found no space left (ENOSPC, EDQUOT): the message names the file; nothing half-written is kept."""
