.PHONY: check test serve
check test:
	./scripts/test
serve:
	.venv/bin/meterd serve
