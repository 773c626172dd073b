"""kind: remote (alias http): a model served elsewhere, behind one pooled HTTP client."""

from __future__ import annotations

from warden.models.http import RemoteClient
from warden.models.inference_v2 import InferenceV2Model
from warden.models.openai_chat import OpenAIChatModel
from warden.policy.schema import ModelSpec, RemoteProtocol


def load_remote(spec: ModelSpec) -> InferenceV2Model | OpenAIChatModel:
    """The adapter for `model.remote.protocol`. Nothing is called at load: a server that is down
    makes decisions take the failure path, it does not stop the point from loading."""
    assert spec.remote is not None  # the schema requires it for kind=remote
    client = RemoteClient(spec.remote, spec.timeout_ms)
    if spec.remote.protocol is RemoteProtocol.V2:
        return InferenceV2Model(spec, client)
    return OpenAIChatModel(spec, client)
