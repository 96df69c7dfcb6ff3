# Two commands for a newcomer: `make test` and `make demo`. Both set up everything they need.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT_PKGS := openssh-server openmpi-bin slurm-wlm munge slurm-client slurmctld slurmd chromium
DEMO_DIR ?= demo

.PHONY: test test-fast demo install system-deps clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages the tests use (real sshd hosts, real mpirun, a real two-node Slurm cluster:
# tests/fixtures/slurm.py; a headless browser that opens report.html: tests/test_collect_predictions.py);
# installed only when root, tests skip what is missing.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	  command -v mpirun >/dev/null || missing="$$missing openmpi-bin"; \
	  test -x /usr/sbin/munged || missing="$$missing munge"; \
	  test -x /usr/sbin/slurmctld || missing="$$missing slurmctld"; \
	  test -x /usr/sbin/slurmd || missing="$$missing slurmd"; \
	  command -v srun >/dev/null || missing="$$missing slurm-client"; \
	  dpkg -s slurm-wlm >/dev/null 2>&1 || missing="$$missing slurm-wlm"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	fi

test: install system-deps
	$(PY) -m pytest

# The inner loop: pure logic (plan, options, hosts, manifests, rank tables, parsers), rendering and
# the docs' flag check; no MindSpore, sshd or Slurm. Under 90 s on 2 cores. `make test` is the whole suite.
FAST_TESTS := tests/test_launcher_plan.py tests/test_launcher_cli.py tests/test_launcher_watchdog.py \
	tests/test_launcher_atomic_write.py tests/test_launcher_layout.py tests/test_backends.py tests/test_docs.py \
	tests/test_multihost_hosts.py tests/test_cluster_pod_env.py tests/test_cluster_k8s_manifests.py \
	tests/test_cluster_slurm_submit.py tests/test_collect_parse.py tests/test_deeplab_config.py \
	tests/test_hccl_cli.py tests/test_hccl_hccn_conf.py tests/test_hccl_rank_table.py \
	tests/faults/test_quoting.py tests/faults/test_hccl_faults.py

test-fast: install
	$(PY) -m pytest $(FAST_TESTS)

# The demo: synthetic VOC-layout data (made once), a 2-rank CPU data-parallel training of
# tiny_synthetic through launch-train (a few minutes), evaluation of its best checkpoint (the one
# evaluation during training kept, else the last), then collect-results into
# $(DEMO_DIR)/results/<job-id>/ (prints the path of report.html: timeline, curves, IoU and
# confusion matrix, 6 sample predictions made by deeplab-infer).
# Every run is a new job under $(DEMO_DIR)/jobs/; $(DEMO_DIR)/latest points at the newest.
# DEMO_STEPS=N stops training after N steps; by default the preset's 40 epochs run: global
# batch 8 = 4 per rank, 1480 steps, evaluated every 5 epochs on rank 0 (LOG0/ckpt/deeplab-best.ckpt),
# compile cache in LOG0/ckpt/compile_cache; val mIoU 0.945 like 1 rank's 0.942 (bench/scaling.py).
DEMO_STEPS ?=
DEMO_DATA  := $(abspath $(DEMO_DIR)/data)
DEMO_BIN   := $(VENV)/bin

demo: install
	@set -e; \
	test -f $(DEMO_DATA)/synth.json || $(DEMO_BIN)/deeplab-synth --out $(DEMO_DATA) --force; \
	job=$(DEMO_DIR)/jobs/$$(date -u +%Y%m%d-%H%M%S); \
	$(DEMO_BIN)/launch-train --platform CPU --devices 2 --job-dir $$job --status-interval 20 -- \
	  --config tiny_synthetic --data-root $(DEMO_DATA) $(if $(DEMO_STEPS),--train-steps $(DEMO_STEPS)); \
	ln -sfn jobs/$$(basename $$job) $(DEMO_DIR)/latest; \
	ckpt=$$(ls $$job/LOG0/ckpt/deeplab-best.ckpt 2>/dev/null || ls $$job/LOG0/ckpt/*.ckpt | tail -n 1); \
	$(DEMO_BIN)/deeplab-eval --config tiny_synthetic --data-root $(DEMO_DATA) --ckpt $$ckpt --output $$job/LOG0/eval.json; \
	echo; \
	echo "demo data:    $(DEMO_DATA)"; \
	echo "job:          $$job  (also $(DEMO_DIR)/latest)"; \
	echo "  plan+status $$job/job.json"; \
	echo "  rank logs   $$job/LOG0/log.txt $$job/LOG1/log.txt (scheduler: $$job/scheduler/log.txt)"; \
	echo "  checkpoint  $$ckpt"; \
	echo "  evaluation  $$job/LOG0/eval.json"; \
	echo; \
	$(DEMO_BIN)/collect-results $$job -o $(DEMO_DIR)/results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
