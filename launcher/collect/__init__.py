"""collect-results: gather a job's logs and checkpoints from every host, summarise, report.

    from launcher.collect import collect, CollectRequest
    outcome = collect(CollectRequest(job_dir=Path("jobs/abc")))
    outcome.results_dir, outcome.summary, outcome.exit_status
"""
from launcher.collect.collection import CollectOutcome, CollectRequest, collect
from launcher.collect.errors import CollectInputError

__all__ = ["CollectInputError", "CollectOutcome", "CollectRequest", "collect"]
