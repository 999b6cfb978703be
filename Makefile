.PHONY: check test serve
check test:
	./scripts/test
serve:
	.venv/bin/meterd serve

.PHONY: reliability
reliability:
	.venv/bin/python -m bench.reliability
