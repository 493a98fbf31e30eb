# golden-ami: `make demo` bakes an AMI on the local emulator; `make test` is what CI runs (.ci/run).
# Everything AWS-like runs locally (scripts/emulator): no account or credentials are needed.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv/bin
LINT_VENV := .venv-lint/bin
# `sam validate` wants credentials to exist even when it does not call AWS.
# Offline: no endpoint either (inside the emulator AWS_ENDPOINT_URL points at moto).
DUMMY_AWS := env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0

step = @printf '\n==> %s\n' "$(1)"

# Clippy as the compiler of the workspace's own crates, in the real build (what `cargo clippy` does, but
# building instead of checking): the lints run, `-D warnings` fails the build, and the compiled workspace
# is the one the emulator and the tests then reuse, so the AWS SDK compiles once per `make test`, not once
# for clippy's check build and again for the tests. Dependencies are built by plain rustc either way.
# The clippy-driver of the toolchain that builds (rustup's, or a distribution's in rustc's sysroot), else the
# one on PATH.
CLIPPY_DRIVER := $(or $(wildcard $(shell rustc --print sysroot 2>/dev/null)/bin/clippy-driver),$(shell command -v clippy-driver 2>/dev/null))
# The features every debug build uses, so the functions share the tests' SDK build (golden-core's `test-deps`).
FEATURES := --features golden-core/test-deps

.PHONY: help demo test tools package bench

help:
	@echo "make demo   bake bld-linux64 on the local emulator and show the manifest, AMIs and builder"
	@echo "make test   formatting, clippy in the build, then every test under the emulator, with the ASL and"
	@echo "            SAM validators beside them"
	@echo "make tools  only create/refresh .venv/ (moto, cargo-lambda, boto3, aws-sam-cli) and .venv-lint/"
	@echo "make package  every function for Lambda (arm64, release) as target/lambda/<name>/bootstrap.zip,"
	@echo "            in one cargo run; prints each zip's size (not part of make test: ~30 min fresh)"
	@echo "make bench  cold start, memory, package size, one bake's calls and cost, retention and enforce at"
	@echo "            scale beside aws-amicleaner and a Python peer; writes BENCHMARKS.md (~2 h 20 min fresh)"

tools:
	scripts/emulator tools

# Figures, not tests: nothing here fails on a slow run. BENCH_ONLY=package,bake,idle,retention[-N],enforce[-N],
# features,profile runs part of it
# (the report is then made from what target/bench/ holds). See scripts/bench.py and BENCHMARKS.md.
bench: tools
	python3 scripts/bench.py all

demo:
	scripts/emulator run -- scripts/demo

# One cargo run builds all thirteen functions, so the SDK is compiled once for all of them (`sam build` runs one
# cargo per function). goldenctl is the operator's binary, not a Lambda: excluded. cargo-lambda
# cross-compiles with the zig of .venv/ (its PyPI package brings it).
ARM64 := aarch64-unknown-linux-gnu
package: tools
	@rustup target list --installed 2>/dev/null | grep -qx $(ARM64) || { \
	  echo "==> rustup target add $(ARM64) (Lambda's arm64 standard library)"; rustup target add $(ARM64); }
	$(call step,cargo lambda build --release --arm64 --workspace --exclude goldenctl --bins --output-format zip)
	@started=$$(date +%s); \
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --workspace --exclude goldenctl --bins --output-format zip \
	  --lambda-dir target/lambda; \
	echo "built in $$(( $$(date +%s) - started )) s"
	@python3 scripts/package-sizes target/lambda/*/bootstrap.zip

# Every cargo command of `make test` (the emulator's and `cargo lambda watch`'s too) runs with these, so all
# of them share one set of compiled workspace crates.
test: export RUSTC_WORKSPACE_WRAPPER := $(CLIPPY_DRIVER)
test: export CLIPPY_ARGS := -D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
test: node_modules/.package-lock.json
	@test -x "$(CLIPPY_DRIVER)" || { echo "clippy-driver not found in rustc's sysroot or on PATH: install clippy for this toolchain (rustup component add clippy)" >&2; exit 2; }
	$(call step,tools (.venv/ and .venv-lint/))
	scripts/emulator tools
	$(call step,cargo fmt --all --check)
	cargo fmt --all --check
	$(call step,clippy -D warnings: cargo build --workspace --all-targets $(FEATURES) through clippy-driver)
	cargo build --workspace --all-targets $(FEATURES)
	@mkdir -p target
	$(call step,cargo test -p golden-core (needs no emulator) while the emulator starts; then the rest under it)
	cargo test -p golden-core $(FEATURES) >target/test-core.log 2>&1 & core_pid=$$!; \
	trap 'kill $$core_pid 2>/dev/null' INT TERM; \
	if scripts/emulator run -- $(MAKE) --no-print-directory test-under-emulator; then emulated=0; else emulated=1; fi; \
	if wait $$core_pid; then core=0; else core=1; fi; \
	printf '\n==> cargo test -p golden-core\n'; cat target/test-core.log; \
	exit $$(( emulated || core ))
	@# One closing line over every test binary (cargo prints one "test result" line per binary).
	@awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i; if ($$(i+1) ~ /^ignored/) s += $$i } } \
	      END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' target/test-core.log target/test.log

# The rest of `make test`, run inside one emulator: the workspace's tests but golden-core's (which run beside
# the emulator's start-up), and beside them the EventBridge rules test (its own event bus and queues) and the
# validators (which need no emulator), since the integration tests mostly wait on the state machine's Wait
# states. Their output follows the tests'.
.PHONY: check-asl check-sam-lint check-sam check-cfn-lint check-checkov check-samconfig check-release-deps check-iam \
  test-under-emulator
# The test-time node packages (package-lock.json): the ASL validators and the IAM simulator.
node_modules/.package-lock.json: package.json package-lock.json
	$(call step,npm ci (ASL validators, IAM simulator))
	npm ci --no-audit --no-fund

check-asl:
	$(call step,scripts/validate-asl)
	scripts/validate-asl
check-sam-lint:
	$(call step,sam validate --lint)
	$(DUMMY_AWS) $(VENV)/sam validate --language-extensions --lint -t infra/template.yaml
check-sam:
	$(call step,sam validate --language-extensions --region us-east-1)
	$(DUMMY_AWS) $(VENV)/sam validate --language-extensions --region us-east-1 -t infra/template.yaml
# cfn-lint with its informational checks too; no check is skipped.
check-cfn-lint:
	$(call step,cfn-lint --include-checks I)
	$(VENV)/cfn-lint --include-checks I -- infra/template.yaml
	@echo "ok: cfn-lint found nothing"
# checkov, on the template with its Fn::ForEach loops expanded (checkov would skip what they make) and on it
# SAM-translated too (the roles, rules and permissions SAM generates); every check skipped is in
# infra/checkov.yaml with its reason.
check-checkov:
	$(call step,checkov (skips: infra/checkov.yaml))
	@mkdir -p target
	$(VENV)/python scripts/iam_check.py --expanded >target/template.expanded.json
	$(VENV)/python scripts/iam_check.py --translated >target/template.translated.json
	LOG_LEVEL=ERROR $(LINT_VENV)/checkov --config-file infra/checkov.yaml -f target/template.expanded.json \
	  -f target/template.translated.json --quiet --compact
# infra/samconfig.toml: deploys without a prompt, parameters the template has, a staging env that acts on nothing.
check-samconfig:
	$(call step,scripts/check-samconfig)
	$(VENV)/python scripts/check-samconfig
# Every AWS call the functions made in this emulator run against their own policies (scripts/iam_check.py):
# after the tests, which make the calls.
# Then it proves it is not vacuous: without a grant the tests need (terminate-builder reading recipes, prune
# deleting images), the same check must fail.
IAM_MUST_FAIL_WITHOUT := terminate-builder:ReadManifestAndRecipes prune:DeleteOurImagesOnly
check-iam:
	$(call step,IAM check: recorded calls vs each function's policies)
	$(VENV)/python scripts/iam_check.py
	@for spec in $(IAM_MUST_FAIL_WITHOUT); do \
	  if $(VENV)/python scripts/iam_check.py --without $$spec >target/iam-without.log 2>&1; then \
	    echo "IAM check: still passes without $$spec, so it checks nothing there" >&2; exit 1; \
	  fi; \
	  grep -q "IAM check FAILED" target/iam-without.log || { cat target/iam-without.log >&2; exit 1; }; \
	  echo "ok: without $$spec the IAM check fails ($$(grep -c 'is ImplicitlyDenied' target/iam-without.log) denied requests)"; \
	done
# golden-core's test-deps feature must never reach a release build (crates/golden-core/Cargo.toml): the
# workspace's features without dev-dependencies, which sam build resolves, hold no test-only crate.
check-release-deps:
	$(call step,release builds carry no test-only crates)
	@found=$$(cargo tree --workspace -e normal,build --prefix none --format '{p}' \
	  | { grep -E '^(aws-smithy-mocks|aws-smithy-protocol-test|proptest) ' || true; } | sort -u); \
	if [[ -n "$$found" ]]; then echo "a release build would compile test-only crates: $$found" >&2; exit 1; fi; \
	echo "ok: no aws-smithy-mocks, aws-smithy-protocol-test or proptest without dev-dependencies"

test-under-emulator:
	@mkdir -p target
	$(MAKE) --no-print-directory -j4 --output-sync=target check-asl check-sam-lint check-sam check-cfn-lint \
	  check-checkov check-samconfig check-release-deps \
	  >target/validators.log 2>&1 & checks_pid=$$!; \
	$(VENV)/python scripts/test_event_rules.py >target/event-rules.log 2>&1 & rules_pid=$$!; \
	if cargo test --no-fail-fast --workspace --exclude golden-core $(FEATURES) 2>&1 | tee target/test.log; then tests=0; else tests=1; fi; \
	printf '\n==> make demo (scripts/demo) in the same emulator; log target/demo.log\n'; \
	if scripts/demo >target/demo.log 2>&1; then demo=0; echo "ok: the demo bake succeeded"; else demo=1; cat target/demo.log; fi; \
	if wait $$checks_pid; then checks=0; else checks=1; fi; \
	if wait $$rules_pid; then rules=0; else rules=1; fi; \
	if $(VENV)/python scripts/test_emulator_paging.py >target/emulator-paging.log 2>&1; then paging=0; else paging=1; fi; \
	if $(MAKE) --no-print-directory check-iam; then iam=0; else iam=1; fi; \
	cat target/validators.log; \
	printf '\n==> EventBridge rules vs events/\n'; cat target/event-rules.log; \
	printf '\n==> the emulator pages DescribeImages/DescribeSnapshots as EC2 does\n'; cat target/emulator-paging.log; \
	exit $$(( tests || demo || checks || rules || paging || iam ))
