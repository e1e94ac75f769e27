#!/usr/bin/env bash
# Debian packages with data the evaluation harness reads (eval/): python3.11-doc (the Python
# documentation as reST, including the FAQ) and wordnet-base (WordNet noun glosses);
# chromium, the headless browser the chat-page test (tests/e2e/test_chat_page.py) drives; and
# redis-server, the shared state store of several gateway or silo processes (state_url), which
# the tests of that state start on a loopback port.
# Installs them with apt-get when they are missing and this user may; otherwise says how,
# and the harness and the tests skip what needs them (never fails the install).
set -u
wanted=()
[ -d /usr/share/doc/python3.11/html/_sources ] || wanted+=(python3.11-doc)
[ -f /usr/share/wordnet/data.noun ] || wanted+=(wordnet-base)
[ -x /usr/bin/chromium ] || wanted+=(chromium)
command -v redis-server >/dev/null || wanted+=(redis-server)
[ ${#wanted[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian data packages: ${wanted[*]}"
    if apt-get install -y -qq "${wanted[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${wanted[@]}" >/dev/null 2>&1; }; then
        exit 0
    fi
fi
if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get install -y -qq "${wanted[@]}" >/dev/null 2>&1 && exit 0
fi
echo "NOTE: could not install ${wanted[*]} (needs root and apt-get)." >&2
echo "      Run: sudo apt-get install ${wanted[*]}   -- the evaluation suites and the tests that need them are skipped until then." >&2
exit 0
