# Thin wrapper: the logic lives in scripts/ (see the comments there).
#   make up        install what is missing, start PostgreSQL/NATS/SMTP ("dev"), migrate,
#                  run `orders serve all` in the foreground (PROFILE=release for a release build)
#   make test      fresh "test" servers, then cargo fmt --check, clippy -D warnings, nextest
#   make services  start the "test" servers in the background (variables in .data/test.env)
#   make status    show which servers run
#   make down      stop every server started by the targets above
.PHONY: up test services status down

up:
	@bash scripts/up.sh

test:
	@bash scripts/test.sh

services:
	@bash scripts/services.sh start

status:
	@bash scripts/services.sh status

down:
	@bash scripts/services.sh stop
