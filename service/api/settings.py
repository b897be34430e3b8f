"""Server settings, read from ``ODECAST_*`` environment variables (or a ``.env`` file).

Every request limit lives here so that it can be tuned per deployment, is enforced in one
place and is listed in the OpenAPI description (see :func:`service.api.app.describe_limits`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.model.bounds import MAX_TORCH_THREADS

BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class Settings(BaseSettings):
    # An empty variable is a value, checked like any other: ODECAST_API_KEY=${SECRET} with SECRET
    # unset started a server without authentication, and ODECAST_HOST= fell back to the default.
    model_config = SettingsConfigDict(env_prefix="ODECAST_", env_file=".env", env_ignore_empty=False,
                                      extra="ignore")

    models_dir: Path = Field(BUNDLED_MODELS_DIR, description="Directory of checkpoint directories.")
    host: str = Field("127.0.0.1", min_length=1, description="Interface `odecast serve` binds to (0.0.0.0: "
                                                            "every interface; an empty host is refused, as "
                                                            "uvicorn would bind every interface).")
    port: int = Field(8000, ge=0, le=65535, description="Port `odecast serve` listens on.")
    default_model: str = Field(
        "spirals", min_length=1,
        description="Forecaster used when a /forecast request names none; readiness "
                    "(/v2/health/ready) follows it.")
    default_classifier: str = Field(
        "mnist-odenet", min_length=1, description="Classifier used when a /classify request names none.")
    api_key: SecretStr | None = Field(
        None, description="When set, requests other than health probes, metrics and docs must "
                          "send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.")
    torch_threads: int | None = Field(
        None, ge=1, le=MAX_TORCH_THREADS,
        description="Torch intra-op threads; unset: the CPU quota (cgroup or affinity).")
    log_level: str = Field("info", description="Level of the JSON log lines on stderr.")

    max_body_bytes: int = Field(10 * 2**20, ge=1, description="Largest request body, in bytes.")
    max_series: int = Field(64, ge=1, description="Series per /forecast request.")
    max_observations: int = Field(2000, ge=1, description="Observed times per series.")
    max_times: int = Field(1000, ge=1, description="Requested times (`at`) per series.")
    max_samples: int = Field(256, ge=1, description="`num_samples` per /forecast request.")
    max_quantiles: int = Field(20, ge=1, description="Quantile levels per /forecast request.")
    max_sample_points: int = Field(
        2_000_000, ge=1, description="Requested times x samples, summed over a request's series: "
                                     "bounds the memory and time of one /forecast call.")
    max_answer_values: int = Field(
        1_000_000, ge=1, description="Numbers in one /forecast answer: requested times x channels x (mean, "
                                     "std and each quantile), summed over its series (about 20 bytes of JSON "
                                     "each).")
    max_images: int = Field(64, ge=1, description="Images per /classify or OIP infer request.")
    max_concurrent_requests: int = Field(
        16, ge=1, description="POST requests (model calls) in progress at once, each from the arrival "
                              "of its whole body to the end of its answer's sending; one more gets 503 "
                              "with Retry-After. The models answer one call at a time: more only wait, "
                              "holding memory.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a request body may take to arrive in full; a slower one gets 408.")
    send_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a client of a POST may take to read its answer (each part the "
                                "server sends); a slower one is dropped, freeing its slot.")

    @field_validator("models_dir", mode="before")
    @classmethod
    def _models_dir_named(cls, path: object) -> object:
        if isinstance(path, str) and not path.strip():  # Path("") is ".": it would serve the working dir
            raise ValueError("models directory is empty; name a directory")
        return path

    @field_validator("api_key")
    @classmethod
    def _key_can_be_sent(cls, key: SecretStr | None) -> SecretStr | None:
        secret = key.get_secret_value() if key is not None else None
        if secret is not None and (not secret.strip() or secret != secret.strip()):
            raise ValueError("the API key is blank or starts or ends with whitespace, which HTTP strips "
                             "from header values: no client could send it")
        return key

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, path: Path) -> Path:
        if not path.is_dir():
            raise ValueError(f"models directory {path} does not exist")
        return path

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {level!r}")
        return level.upper()

    def limits(self) -> dict[str, int]:
        """The request limits by setting name, for the OpenAPI description and GET /models
        (``body_timeout_s`` and ``send_timeout_s`` are listed with them in the description)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name.startswith("max_")}
