#!/usr/bin/env bash
# Prepares a fresh clone: system programs MIDAS needs, then .venv with the pinned requirements
# and MIDAS itself (`pip install -e .`: the `midas` command, imports from any folder).
#   scripts/setup.sh          runtime (make run)
#   scripts/setup.sh --dev    runtime + test tools (make test)
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---- system programs -------------------------------------------------------
# command -> Debian package / Homebrew formula
need_cmds=(redis-server antiword catdoc tesseract tesseract tesseract)
deb_pkgs=(redis-server antiword catdoc tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu)
brew_pkgs=(redis antiword catdoc tesseract tesseract-lang tesseract)
if [ "$DEV" = 1 ]; then
  need_cmds+=(chromium)
  deb_pkgs+=(chromium)
  brew_pkgs+=(chromium)
  need_cmds+=(dovecot)  # the mail-source tests run a private IMAP server (tests/imap_server.py)
  deb_pkgs+=(dovecot-imapd)
  brew_pkgs+=(dovecot)
fi

missing_deb=() missing_brew=()
for i in "${!need_cmds[@]}"; do
  if ! command -v "${need_cmds[$i]}" >/dev/null 2>&1; then
    missing_deb+=("${deb_pkgs[$i]}")
    missing_brew+=("${brew_pkgs[$i]}")
  fi
done

if [ ${#missing_deb[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        say "missing: ${missing_deb[*]}. Install them as root: apt-get install ${missing_deb[*]}"; exit 1
      fi
    fi
    say "installing system packages: ${missing_deb[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_deb[@]}" >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    say "installing with Homebrew: ${missing_brew[*]}"
    brew install "${missing_brew[@]}"
  else
    say "missing programs: ${need_cmds[*]} (packages: ${missing_deb[*]})."
    say "Install them with your package manager, then run this again."
    exit 1
  fi
fi

# ---- Python virtual environment -------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11"
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
req=requirements.txt
[ "$DEV" = 1 ] && req=requirements-dev.txt
stamp="$VENV/.installed-$(basename "$req" .txt)"
digest=$(cat requirements.txt "$req" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  say "installing Python packages from $req"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$digest" > "$stamp"
fi
# The checkout itself, editable: .venv/bin/midas, and `import background_tasks` from scripts anywhere.
# Done again when pyproject.toml changes or the checkout moves (the install points at this folder).
project_stamp="$VENV/.installed-project"
project_digest=$( (pwd; cat pyproject.toml) | sha256sum | cut -d' ' -f1)
if [ ! -f "$project_stamp" ] || [ "$(cat "$project_stamp")" != "$project_digest" ] || [ ! -x "$VENV/bin/midas" ]; then
  say "installing MIDAS into $VENV (pip install -e .)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$project_digest" > "$project_stamp"
fi
mkdir -p logs
say "ready"
