"""Models published already in OpenVINO IR: the OpenVINO organisation's on Hugging Face.

They are downloaded like any Hugging Face model and validated as they are, with no conversion.
A bare name (``openvino:Phi-3-mini-4k-instruct-int4-ov``) means a model of that organisation.
"""

from __future__ import annotations

from model_download.errors import UnsupportedModelError
from model_download.listing import SearchPage
from model_download.refs import ModelReference
from model_download.resolved import ResolvedModel
from plugins.hubs.huggingface import HuggingFaceHub

#: The organisation a bare name belongs to.
DEFAULT_ORG = "OpenVINO"


class OpenVINOHub(HuggingFaceHub):
    """OpenVINO IR models on the Hugging Face hub (HF_ENDPOINT, HF_TOKEN apply)."""

    name = "openvino"
    description = "models published in OpenVINO IR (the OpenVINO organisation)"

    def validate(self, reference: ModelReference) -> ModelReference:
        if "/" not in reference.id:
            reference = reference.model_copy(update={"id": f"{DEFAULT_ORG}/{reference.id}"})
        return super().validate(reference)

    def resolve(self, reference: ModelReference) -> ResolvedModel:
        resolved = super().resolve(reference)
        if resolved.format != "openvino-ir":
            raise UnsupportedModelError(
                f"{reference} holds no OpenVINO IR (an .xml with its .bin): pull it from the "
                f"huggingface hub and convert it (model-download pull hf:{reference.id} --to "
                "openvino)."
            )
        return resolved

    def search(
        self,
        query: str | None,
        *,
        author: str | None = None,
        tags: tuple[str, ...] = (),
        page: int = 1,
        page_size: int = 20,
    ) -> SearchPage:
        return super().search(
            query, author=author or DEFAULT_ORG, tags=tags, page=page, page_size=page_size
        )
