"""Ascend HCCL rank tables: parse /etc/hccn.conf, build, validate, merge, load and write.

Pure Python: no MindSpore import, no process spawning (hccn_tool aside).

    from hccl import hccn_conf, rank_table
    from hccl.errors import HcclError
"""
