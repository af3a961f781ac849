# The README's two commands: `make lab` (set up, then run the whole lab on the local target)
# and `make test` (set up, then run the tests). Everything a fresh machine needs is installed here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raylab-installed

.PHONY: setup sysdeps checkov wheelhouse bytecode lab test lint bench clean

setup: $(STAMP)

# Debian packages: espeak-ng (the data stage's sample speech), openssh-server (the bastion-hop test and
# the rehearsal's machines), rsync (Ray's file_mounts in the rehearsal), iproute2 (network namespaces). Installed only when missing; needs root (as on this machine kind).
sysdeps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# uv installs (a fresh `make setup bytecode`: 31 s on 2 cores, where pip took 65-80 s); it reads the package
# sources pip is configured with through scripts/uv_flags.py. pip installs if uv fails.
# --compile-bytecode: this machine kind sets PYTHONDONTWRITEBYTECODE=1, so every Ray process would
# otherwise compile Ray's modules again at each start.
# $(call uv_install,VENV): uv of that virtualenv installing into it.
uv_install = SSL_CERT_FILE="$${SSL_CERT_FILE:-$$($(1)/bin/python scripts/uv_flags.py --cert)}" \
	$(1)/bin/uv pip install -q --python $(1)/bin/python --compile-bytecode $$($(1)/bin/python scripts/uv_flags.py)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q uv 2>/dev/null
	$(call uv_install,$(VENV)) --upgrade-package pip pip -e '.[test,data,asr]' \
	  || $(BIN)/pip install -q -e '.[test,data,asr]'
	touch $@

# checkov (the IaC gate, tests/unit/test_iac_gates.py) lives in its own virtualenv: installed next to
# raylab it downgrades boto3/botocore and ships a clashing `hcl2` module. Run offline with --skip-download.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q uv 2>/dev/null
	$(call uv_install,$(CHECKOV_VENV)) 'checkov==3.3.30' || $(CHECKOV_VENV)/bin/pip install -q 'checkov==3.3.30'
	touch $@

# The AWS rehearsal's "nodes' internet": every wheel a node's setup commands install (ray[default], the
# head's boto3 and ruamel.yaml, uv's own wheel), downloaded once with the venv's pip into .rehearsal/wheels
# (raylab.rehearsal.internet.build_wheelhouse; stamped, so a re-run is a no-op). Then uv's warm cache, which
# each machine's ~/.cache/uv gets by hardlinks (raylab.rehearsal.world.warm_shared; stamped too).
wheelhouse: setup
	$(BIN)/python -c 'from raylab.rehearsal.internet import WHEELHOUSE, build_wheelhouse; build_wheelhouse(WHEELHOUSE)'
	$(BIN)/python -c 'from raylab.rehearsal.internet import REHEARSAL_DIR; from raylab.rehearsal.world import warm_shared; warm_shared(REHEARSAL_DIR)'

# raylab's own bytecode, written once: this machine kind sets PYTHONDONTWRITEBYTECODE=1, so without it
# every raylab process (the CLI, the twin, the head's node provider, each test's CLI run) compiled the
# modules it imports again (all of src/: 0.9 CPU-s). compileall writes only what changed.
bytecode: setup
	@$(BIN)/python -m compileall -q src

# The local lab needs no wheelhouse (only the AWS rehearsal's nodes install from it).
lab: sysdeps setup bytecode
	$(BIN)/raylab lab --yes

# The installs run side by side (-j3): checkov's virtualenv (12 s on 2 cores with uv; 36 s with pip)
# beside raylab's (31 s with its bytecode; 80 s with pip), then the wheelhouse (59 s, needs raylab's).
test:
	@$(MAKE) --no-print-directory -j3 sysdeps setup checkov wheelhouse bytecode
	$(BIN)/ruff check src tests workloads bench
	$(BIN)/mypy src
	$(BIN)/python scripts/run_tests.py

bench: setup wheelhouse
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .raylab .rehearsal .raylab-tests .pytest_cache
