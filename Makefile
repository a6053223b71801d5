# Verbs a contributor uses. `make run` and `make test` are the README's Quick start.
PYTHON ?= python3
SERVER ?= c-threaded
STRICT ?= $(filter true 1 yes,$(CI))
SERVERS := $(notdir $(patsubst %/,%,$(wildcard servers/*/)))
# Test servers whose latency is known by construction (bench/validation/README.md): built
# beside the zoo, not in it.
TRUTHS := $(notdir $(patsubst %/,%,$(wildcard bench/validation/servers/*/)))
VALIDATION_DIR ?= target/validation
SERVER_ARGS ?=
# make run answers within a minute: the best precision 45 s of runs reach, said as such.
RUN_ARGS ?= --max-time 45s

.PHONY: all install install-dev run test test-fast test-real lint servers validation-servers clean \
	$(addprefix server-,$(SERVERS)) $(addprefix validation-,$(TRUTHS))

all: install servers

# Editable install: the Cython extension is compiled in place (volley/_core.*.so).
# `install` is what running needs; `install-dev` adds the test, lint, uvloop (for the
# python-uvloop server) and MPI tools.
install: volley/.installed
volley/.installed: setup.py pyproject.toml volley/_core.pyx volley/_posix.pxd
	$(PYTHON) -m pip install --quiet -e .
	@touch $@

install-dev: volley/.installed-dev
volley/.installed-dev: volley/.installed
	$(PYTHON) -m pip install --quiet -e '.[dev,uvloop,mpi]'
	@touch $@

# Benchmark one bundled server with the defaults (server on the lower half of the CPUs,
# one client per CPU of the upper half). A precision out of reach within --max-time still
# ends in the interval reached, exit status 0.
run: install server-$(SERVER)
	$(PYTHON) -m volley bench $(RUN_ARGS) $(SERVER_ARGS) target/servers/$(SERVER)

# The fast tier: everything but the tests that start real servers or benchmarks (marked
# real or slow). Builds no server, needs no toolchain; a few minutes on 2 CPUs.
FAST := not slow and not real
test: install-dev
	$(PYTHON) -m pytest -q -m "$(FAST)"

test-fast: test

# The real tier: the tests that start the built servers (marked real) and the real benchmarks
# of many seconds each (marked slow). CI runs it after `make test`.
test-real: install-dev servers
	$(PYTHON) -m pytest -q -m "slow or real"

lint: install-dev
	ruff check volley tests bench
	ruff format --check volley tests bench
	mypy
	cython-lint volley/_core.pyx volley/_posix.pxd

# Every servers/NAME/ builds into target/servers/NAME (the seed's contract). A server whose
# toolchain is missing is skipped with one line, or fails the build with STRICT=1.
servers: $(addprefix server-,$(SERVERS)) validation-servers

# build_into SOURCE-DIR NAME OUT-DIR: make NAME in SOURCE-DIR/NAME, copy it to OUT-DIR.
define build_into
	@mkdir -p $(3)
	@if missing=$$($(MAKE) -s --no-print-directory -C $(1)/$(2) toolchain PYTHON=$(PYTHON) 2>/dev/null); then \
		$(MAKE) --no-print-directory -C $(1)/$(2) $(2) PYTHON=$(PYTHON) && \
		{ cmp -s $(1)/$(2)/$(2) $(3)/$(2) || cp -p $(1)/$(2)/$(2) $(3)/$(2); }; \
	elif [ -n "$(STRICT)" ]; then \
		echo "error: cannot build $(2): $$missing" >&2; exit 1; \
	else \
		echo "skipping $(2): $$missing" >&2; \
	fi
endef

$(addprefix server-,$(SERVERS)): server-%:
	$(call build_into,servers,$*,target/servers)

# bench/validation/servers/NAME/ builds into $(VALIDATION_DIR)/NAME.
validation-servers: $(addprefix validation-,$(TRUTHS))

$(addprefix validation-,$(TRUTHS)): validation-%:
	$(call build_into,bench/validation/servers,$*,$(VALIDATION_DIR))

clean:
	@for d in $(SERVERS); do $(MAKE) -s --no-print-directory -C servers/$$d clean; done
	@for d in $(TRUTHS); do $(MAKE) -s --no-print-directory -C bench/validation/servers/$$d clean; done
	rm -rf target build volley/_core.c volley/*.so volley/.installed* *.egg-info
