"""Stage 7: serve whatever is in production now (the new version if the gate promoted it)."""

from __future__ import annotations

from typing import Any

from components.registry import ModelVersion, Registry, RegistryError
from pipelines.stages.common import RunContext
from pipelines.timer import StepTimer


def serve_production(
    ctx: RunContext, storage: str, new: ModelVersion, timer: StepTimer
) -> dict[str, Any] | None:
    """Deploy the production version on Ray Serve; its endpoint, or None when there is none."""
    from pipelines.deploy import deploy

    name = ctx.spec.model_name()
    try:
        production = Registry(storage).resolve(name)
    except RegistryError:
        ctx.out(f"    not serving: {name} has no production version (registry.promote is false)")
        return None
    with timer.step("serve", f"deploying production v{production.version} on Ray Serve"):
        if production.version != new.version:
            ctx.out(
                f"    v{new.version} is a candidate: serving production v{production.version} "
                f"(promote it with `rayline promote {name} {new.version}`)"
            )
        return deploy(ctx.spec.serve_args(storage, production.version), out=ctx.out)
