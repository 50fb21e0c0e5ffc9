"""``GET /v1/models``: the speech models ``POST /v1/audio/speech`` accepts, in OpenAI's list shape."""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.apidoc import operation
from app.schemas import SPEECH_MODELS, SPOOL_SPEECH_MODELS, ModelCard, ModelList, OpenAIError, dump
from service.exceptions import NotFoundError

bp = Blueprint("models", __name__, url_prefix="/v1/models")


def model_card(name: str) -> ModelCard:
    """One model as OpenAI lists it (every one is Kokoro-82M; OpenAI's names are aliases of it)."""
    return ModelCard(id=name, created=0, owned_by="spool" if name in SPOOL_SPEECH_MODELS else "spool (openai alias)")


@bp.get("")
@operation(tag="openai", operation_id="listModels", responses={200: (ModelList, "The models.")}, error_model=OpenAIError)
def list_models():  # type: ignore[no-untyped-def]
    """The model names speech requests may give, all served by Kokoro-82M."""
    return jsonify(dump(ModelList(data=[model_card(name) for name in SPEECH_MODELS])))


@bp.get("/<model_id>")
@operation(
    tag="openai",
    operation_id="retrieveModel",
    responses={200: (ModelCard, "The model.")},
    errors={404: "No such model."},
    error_model=OpenAIError,
)
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    """One model by name."""
    if model_id not in SPEECH_MODELS:
        raise NotFoundError(
            f"No model {model_id!r}: use one of {', '.join(SPEECH_MODELS)}.", field="model", models=list(SPEECH_MODELS)
        )
    return jsonify(dump(model_card(model_id)))
