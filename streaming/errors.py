"""One exception root for everything streammon raises on purpose.

Third-party exceptions are translated at the edge (``raise ... from exc``) so callers
only need to catch :class:`StreammonError` or one of its groups.
"""

from __future__ import annotations


class StreammonError(Exception):
    """Root of every error streammon raises on purpose."""


class ConfigError(StreammonError):
    """A setting is missing or invalid; the message names the field."""


class SerializationError(StreammonError):
    """Bytes could not be encoded or decoded with an Avro contract."""


class UnknownSchemaError(SerializationError):
    """The bytes name a schema (fingerprint or registry id) that this reader does not know."""


class ContractError(StreammonError):
    """A decoded event breaks the contract (e.g. no prediction id, NaN label)."""


class StateError(StreammonError):
    """A state blob cannot be trusted or read (bad signature, unknown format or version)."""


class FencedError(StateError):
    """Another owner took over a partition; this process must drop it and stop writing."""


class TopicError(StreammonError):
    """Topics are missing or laid out against the invariants (e.g. not co-partitioned)."""


class ServiceUnavailableError(StreammonError):
    """Kafka or Redis did not answer within the configured retry budget."""


class ArtifactIntegrityError(StateError):
    """A model artifact is not the one recorded (SHA-256 mismatch) or is not a skops file."""


class UntrustedArtifactError(ArtifactIntegrityError):
    """A model artifact needs types outside the allowlist; it is refused, never loaded."""


class RegistryError(StreammonError):
    """A model-registry operation is not possible (unknown version, forbidden transition)."""


class DeliveryError(StreammonError):
    """Kafka did not acknowledge some records; ``errors`` holds one message per failure."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors: list[str] = list(errors or [])


class ModelNotReadyError(StreammonError):
    """No champion model is loaded yet (see ``ChampionModel.wait_until_ready``)."""


class TrainingError(StreammonError):
    """A retrain cannot produce a model from its data (too few rows or classes, all fits failed)."""
