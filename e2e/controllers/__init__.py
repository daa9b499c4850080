"""Stand-ins for kube-controller-manager's ResourceClaim controller (and the garbage collector's part
for claims) and for kube-scheduler's DRA path, talking to any API server through a kubeconfig."""

from .claims import ClaimController, claim_from_template, claim_generate_name
from .informer import Informer, WorkQueue
from .scheduler import Scheduler

__all__ = [
    "ClaimController",
    "Informer",
    "Scheduler",
    "WorkQueue",
    "claim_from_template",
    "claim_generate_name",
    "run_controllers",
]


async def run_controllers(kubeconfig: str) -> None:
    """Run the claim controller and the scheduler until cancelled."""
    import asyncio

    from kubeapi import KubeClient

    from .informer import cancel_all

    kube = await KubeClient.connect(kubeconfig)
    tasks = [asyncio.create_task(ClaimController(kube).run()), asyncio.create_task(Scheduler(kube).run())]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
        await kube.close()
