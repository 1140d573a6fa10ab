# The two commands of the README, plus the developer's check. Everything installs on first use.
.PHONY: run test check services-down clean-state

run:            ## set up everything and run the platform with a simulated province
	@scripts/bootstrap.sh
	@.venv/bin/qilu run

test:           ## set up everything and run lint, types and the three test tiers
	@scripts/bootstrap.sh
	@.venv/bin/qilu check
	@.venv/bin/qilu services up
	@.venv/bin/python -m pytest

check:          ## lint + types only
	@scripts/bootstrap.sh
	@.venv/bin/qilu check

services-down:  ## stop the local servers
	@.venv/bin/qilu services down

clean-state: services-down  ## stop the servers and delete all their data
	rm -rf .state
