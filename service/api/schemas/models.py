"""Model listings (GET /models) and the Open Inference Protocol v2 health and metadata bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.api.registry import ModelEntry
from service.api.schemas.inference import INPUT_NAME, OUTPUT_NAME
from service.model import classifier, forecaster


class ModelInfo(BaseModel):
    name: str
    kind: str | None = Field(description="`latent_ode` (POST /forecast) or `mnist_classifier` "
                                         "(POST /classify).")
    ready: bool
    version: str | None = Field(description="First 12 hex digits of the weights' SHA-256.")
    error: str | None = Field(description="Why the checkpoint was not loaded, if it was not.")
    metrics: dict[str, Any] = Field(description="Metrics recorded at training.")
    channels: list[str] | None = Field(None, description="Forecasters: the value columns, in order.")
    time_unit: str | None = Field(None, description="Forecasters trained on timestamps: the unit "
                                                    "numbers are in; null: plain numeric times.")
    max_span: float | None = Field(None, description="Forecasters: the longest series they were trained on. "
                                                     "A series' observations, and the times asked after its "
                                                     "first observation, lie at most this far from it.")
    max_backcast: float | None = Field(None, description="Forecasters: how far before a series' first "
                                                         "observation a time may be asked, as far as they "
                                                         "were trained to backcast; 0: not at all.")
    unseen_channels: bool | None = Field(None, description="Forecasters: whether they answer a series that "
                                                           "never observes a channel (trained to).")
    value_limits: list[list[float]] | None = Field(None, description="Forecasters: per channel, the "
                                                                   "lowest and highest observed value "
                                                                   "they read.")
    architecture: str | None = Field(None, description="Classifiers: odenet, rknet, resnet or mlp.")
    finished: bool | None = Field(None, description="Forecasters: whether their training run ended; "
                                                    "false: the best epoch so far of a run that was "
                                                    "interrupted, failed or is still going (served all "
                                                    "the same; its metrics lack the test measures).")

    @classmethod
    def of(cls, entry: ModelEntry) -> ModelInfo:
        model = entry.model
        info = cls(name=entry.name, kind=entry.kind, ready=entry.ready, error=entry.error,
                   version=model.version if model else None, metrics=model.metrics if model else {})
        if entry.ready and entry.kind == forecaster.KIND:
            info.channels, info.time_unit = model.channels, model.time_unit
            info.max_span, info.max_backcast = model.max_span, model.max_backcast
            info.unseen_channels = model.unseen_channels
            info.finished = model.finished
            low, high = model.value_limits
            info.value_limits = [[float(a), float(b)] for a, b in zip(low, high, strict=True)]
        if entry.ready and entry.kind == classifier.KIND:
            info.architecture = model.architecture
        return info


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]
    limits: dict[str, int] = Field(description="Request limits (settings ODECAST_MAX_*).")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool = Field(description="True when the default model is loaded.")


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a dimension of any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]

    @classmethod
    def of(cls, entry: ModelEntry) -> ModelMetadata:
        """A classifier's tensors for OIP infer. A forecaster lists none: its series are irregular
        (any times, missing values, timestamps) and it answers at POST /forecast, not OIP infer;
        it is here for its version and readiness."""
        inputs, outputs = [], []
        if entry.kind == classifier.KIND:
            inputs = [MetadataTensor(name=INPUT_NAME, datatype="FP32", shape=[-1, 1, 28, 28])]
            outputs = [MetadataTensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, 10])]
        return cls(name=entry.name, versions=[entry.model.version], platform="pytorch", inputs=inputs,
                   outputs=outputs)
