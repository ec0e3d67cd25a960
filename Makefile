# Tongban (通办) — the commands the README promises.
#   make run    demo instance on http://127.0.0.1:5000
#   make test   the whole test suite (PYTEST_ARGS passes options through)
#   make serve  the production server (HOST, PORT, WEB_CONCURRENCY, SERVER)
#   make worker the background work (outbox, chores, audit chain) as its own process

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tongban-installed
PYTEST_ARGS ?=

# Debian packages the project needs on the machine; installed when `make install`
# runs as root, listed otherwise (one whose command is on PATH already counts: e.g. npm
# bundled with NodeSource's nodejs). Later features add e.g. fonts-wqy-microhei,
# poppler-utils, qpdf, softhsm2, chromium (the browser tests in tests/e2e drive it).
DEB_PACKAGES := python3-venv fonts-wqy-microhei poppler-utils qpdf softhsm2 libnss3-tools chromium xmlsec1
# Node for the openid-client tests (a strict certified relying party): Debian's nodejs and npm,
# asked for only when no node is installed (a NodeSource node bundles npm and conflicts with Debian's)
DEB_PACKAGES += $(if $(shell command -v node 2>/dev/null),,nodejs npm)

# openid-client (npm), pinned; installed into .venv/openid-client, where tests/idp/node_rp.py finds it
OPENID_CLIENT_VERSION := 6.9.1
OPENID_CLIENT_DIR := $(VENV)/openid-client
OPENID_CLIENT_STAMP := $(OPENID_CLIENT_DIR)/.installed-$(OPENID_CLIENT_VERSION)

# Compiled catalogues (git-ignored) are rebuilt only when their .po changes, and
# written atomically: live servers started by the tests may be reading them.
PO_FILES := $(wildcard translations/*/LC_MESSAGES/messages.po)
MO_FILES := $(PO_FILES:.po=.mo)

.PHONY: install deb-packages node-deps translations run test serve worker node-oidc-provider

install: $(STAMP) $(MO_FILES) node-deps node-oidc-provider

deb-packages:
	@command -v dpkg-query >/dev/null 2>&1 || exit 0; \
	missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || \
	    command -v "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "Missing Debian packages:$$missing"; \
	  echo "  install them with: sudo apt-get install$$missing"; \
	fi

# openid-client from the npm registry. Offline (or without node) it is skipped with a note and its
# tests skip; in CI (CI=true) that is an error.
node-deps: | deb-packages
	@test -f $(OPENID_CLIENT_STAMP) && exit 0; \
	ci=$$(printf '%s' "$$CI" | tr A-Z a-z); \
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$ci" = true ] || [ "$$ci" = 1 ]; then echo "node and npm are needed (apt-get install nodejs npm)" >&2; exit 1; fi; \
	  echo "node/npm not found: the openid-client tests will be skipped"; exit 0; \
	fi; \
	mkdir -p $(OPENID_CLIENT_DIR) && \
	printf '{"name": "tongban-openid-client", "private": true}\n' > $(OPENID_CLIENT_DIR)/package.json && \
	if (cd $(OPENID_CLIENT_DIR) && npm install --silent --no-audit --no-fund --save-exact \
	      openid-client@$(OPENID_CLIENT_VERSION) >/dev/null 2>&1); then \
	  rm -f $(OPENID_CLIENT_DIR)/.installed-* && touch $(OPENID_CLIENT_STAMP); \
	elif [ "$$ci" = true ] || [ "$$ci" = 1 ]; then \
	  echo "npm could not install openid-client@$(OPENID_CLIENT_VERSION)" >&2; exit 1; \
	else \
	  echo "openid-client not installed (offline?): its tests will be skipped"; \
	fi

# Reinstalled only when pyproject.toml is newer than the stamp (or .venv is gone).
$(STAMP): pyproject.toml | deb-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# node-oidc-provider (npm), the real upstream OpenID provider the federation tests log in through
# (tests/federation/provider.mjs). Offline outside CI the install is skipped and those tests skip;
# in CI (CI=true) a failed install fails.
NODE_OIDC_PROVIDER := oidc-provider@9.13.3
NODE_OIDC_DIR      := $(VENV)/node-oidc-provider

node-oidc-provider: $(NODE_OIDC_DIR)/node_modules/oidc-provider/package.json

$(NODE_OIDC_DIR)/node_modules/oidc-provider/package.json: | $(STAMP)
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: $(NODE_OIDC_PROVIDER) not installed (tests/federation skip)"; \
	  [ "$$CI" != true ] || exit 1; exit 0; fi; \
	mkdir -p $(NODE_OIDC_DIR) && \
	printf '{"name":"tongban-test-upstream","private":true,"type":"module"}\n' > $(NODE_OIDC_DIR)/package.json && \
	( cd $(NODE_OIDC_DIR) && npm install --no-audit --no-fund --loglevel=error --save-exact $(NODE_OIDC_PROVIDER) ) || \
	{ echo "npm install $(NODE_OIDC_PROVIDER) failed (offline?): tests/federation skip"; [ "$$CI" != true ] || exit 1; }

translations/%/LC_MESSAGES/messages.mo: translations/%/LC_MESSAGES/messages.po | $(STAMP)
	@$(BIN)/pybabel -q compile -f -l $* -i $< -o $@.tmp && mv -f $@.tmp $@

# Extract every msgid, merge into the catalogues, compile. Run after adding strings,
# then translate the new empty msgstr entries in translations/zh_Hans_CN (Babel
# spells the zh_CN locale zh_Hans_CN and looks for that folder; untranslated
# strings show the English msgid).
translations: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k _l --no-wrap --sort-by-file \
	  --project Tongban --version 0.1.0 --copyright-holder "Tongban contributors" -o translations/messages.pot .
	$(BIN)/pybabel -q update --no-fuzzy-matching --ignore-obsolete --no-wrap \
	  -i translations/messages.pot -d translations
	@for po in translations/*/LC_MESSAGES/messages.po; do \
	  $(BIN)/pybabel -q compile -f -i $$po -o $${po%.po}.mo.tmp && mv -f $${po%.po}.mo.tmp $${po%.po}.mo; \
	done
	@$(BIN)/python -c "import sys; from babel.messages.pofile import read_po; \
	c = read_po(open('translations/zh_Hans_CN/LC_MESSAGES/messages.po', 'rb')); \
	todo = [m.id for m in c if m.id and not m.string]; \
	print(f'zh_CN: {len(todo)} untranslated', *todo[:20], sep='\n  ')"

run: install
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/flask --app wsgi demo seed
	$(BIN)/python -m demo.devserver  # the provider on :5000, the demo portals on localhost:8081 and :8082

test: install
	$(BIN)/pytest -n auto --dist loadgroup $(PYTEST_ARGS)  # loadgroup: tests/e2e keeps its browser stack on one worker

serve: install
	exec $(BIN)/python -m tongban.serve

worker: install
	exec $(BIN)/python -m tongban.worker
