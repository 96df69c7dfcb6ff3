"""Running inside engines that already own the machines: Slurm allocations and Kubernetes operators.

Pure pieces here (parsing what Slurm and the operators say, rendering manifests); the
processes they lead to are started by launcher/run/.
"""
