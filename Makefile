# golden-ami: `make demo` bakes an AMI on the local emulator; `make test` is what CI runs (.ci/run).
# Everything AWS-like runs locally (scripts/emulator): no account or credentials are needed.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv/bin
# `sam validate` wants credentials to exist even when it does not call AWS.
DUMMY_AWS := env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0

step = @printf '\n==> %s\n' "$(1)"

.PHONY: help demo test tools

help:
	@echo "make demo   bake bld-linux64 on the local emulator and show the manifest, AMIs and builder"
	@echo "make test   formatting, clippy, ASL and SAM validation, then all tests under the emulator"
	@echo "make tools  only create/refresh .venv/ (moto, cargo-lambda, boto3, aws-sam-cli)"

tools:
	scripts/emulator tools

demo:
	scripts/emulator run -- $(VENV)/python scripts/demo.py

test:
	$(call step,tools (.venv/))
	scripts/emulator tools
	$(call step,cargo fmt --all --check)
	cargo fmt --all --check
	$(call step,cargo clippy --workspace --all-targets -- -D warnings)
	cargo clippy --workspace --all-targets -- -D warnings
	$(call step,scripts/validate-asl)
	scripts/validate-asl
	$(call step,sam validate --lint)
	$(DUMMY_AWS) $(VENV)/sam validate --lint -t infra/template.yaml
	$(call step,sam validate --region us-east-1)
	$(DUMMY_AWS) $(VENV)/sam validate --region us-east-1 -t infra/template.yaml
	$(call step,EventBridge rules vs events/ (under the emulator))
	scripts/emulator run -- $(VENV)/python scripts/test_event_rules.py
	$(call step,cargo test --workspace (under the emulator))
	@mkdir -p target
	scripts/emulator run -- cargo test --workspace 2>&1 | tee target/test.log
	@# One closing line over every test binary (cargo prints one "test result" line per binary).
	@awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i; if ($$(i+1) ~ /^ignored/) s += $$i } } \
	      END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' target/test.log
