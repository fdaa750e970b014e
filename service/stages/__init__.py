"""The worker's stages: plan → submit → poll → download. Each ``*_tick(ctx)`` claims what it
can run now, starts the network work as tasks, and returns whether it found work."""

from service.stages.context import StageContext, open_context
from service.stages.download import download_tick
from service.stages.plan import plan_tick
from service.stages.poll import poll_tick
from service.stages.submit import submit_tick

__all__ = ["StageContext", "download_tick", "open_context", "plan_tick", "poll_tick",
           "submit_tick"]
