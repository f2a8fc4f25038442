"""Request bodies shaped like the reference's examples, for the default catalog."""

from __future__ import annotations

from typing import Any

MODEL = "huggingfacetb/smollm2-135m-instruct"
SLUG = "cpu-slot-2gb"
REGION = "atl1"
VPC = "997615ce-132d-4bae-9270-9ee21b395e5d"


def spec(name: str = "my-inference", *, scale: int = 1, public: bool = True, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "name": name,
        "region": REGION,
        "vpc": {"uuid": VPC},
        "enable_public_endpoint": public,
        "model_deployments": [
            {
                "model_slug": MODEL,
                "model_provider": "hugging_face",
                "workload_config": {},
                "accelerators": [{"scale": scale, "type": "prefill_decode", "accelerator_slug": SLUG}],
            }
        ],
    }
    body.update(overrides)
    return body


def create_body(name: str = "my-inference", **kwargs: Any) -> dict[str, Any]:
    return {"spec": spec(name, **kwargs)}
