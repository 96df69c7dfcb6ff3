"""Plan, render, start, supervise and collect distributed DeepLabV3 training jobs.

Never imports MindSpore: the launcher must start fast on a host that only orchestrates.
"""
