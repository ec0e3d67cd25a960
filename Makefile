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
# runs as root, listed otherwise. Later features add e.g. fonts-wqy-microhei,
# poppler-utils, qpdf, softhsm2, chromium (the browser tests in tests/e2e drive it).
DEB_PACKAGES := python3-venv fonts-wqy-microhei poppler-utils qpdf softhsm2 libnss3-tools chromium

# Compiled catalogues (git-ignored) are rebuilt only when their .po changes, and
# written atomically: live servers started by the tests may be reading them.
PO_FILES := $(wildcard translations/*/LC_MESSAGES/messages.po)
MO_FILES := $(PO_FILES:.po=.mo)

.PHONY: install deb-packages translations run test serve worker

install: $(STAMP) $(MO_FILES)

deb-packages:
	@command -v dpkg-query >/dev/null 2>&1 || exit 0; \
	missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "Missing Debian packages:$$missing"; \
	  echo "  install them with: sudo apt-get install$$missing"; \
	fi

# Reinstalled only when pyproject.toml is newer than the stamp (or .venv is gone).
$(STAMP): pyproject.toml | deb-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

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
