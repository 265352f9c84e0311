#!/usr/bin/env bash
# Headless Chromium and its WebDriver for tests/test_dashboard.py, which opens the dashboard
# in a real browser driven by Selenium: Debian's `chromium` and `chromium-driver` packages,
# installed when root with apt-get (as scripts/native-blas.sh does for BLAS), else checked and,
# when missing, one line says how to install them. Exits non-zero only when they are missing
# after that: the dashboard's browser test cannot run without them.
# Elsewhere: any Chromium or Chrome with the chromedriver of the same version, named by
#   FRUITS_CHROMIUM=/path/to/chromium FRUITS_CHROMEDRIVER=/path/to/chromedriver
set -u
packages="chromium chromium-driver"
browser="${FRUITS_CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}"
driver="${FRUITS_CHROMEDRIVER:-$(command -v chromedriver || echo /usr/bin/chromedriver)}"
present() { [ -x "$browser" ] && [ -x "$driver" ]; }

if present; then
  echo "setup: headless browser present: $("$driver" --version 2>/dev/null | cut -d' ' -f1-2) ($browser, $driver)"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1 \
       || { apt-get update -q >/dev/null 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1; }; }; then
    browser="$(command -v chromium || echo /usr/bin/chromium)"
    driver="$(command -v chromedriver || echo /usr/bin/chromedriver)"
    if present; then
      echo "setup: installed a headless browser for the dashboard's test ($packages)"
      exit 0
    fi
  fi
  reason="apt-get install $packages failed"
elif [ "$(id -u)" != 0 ]; then
  reason="installing needs root: sudo apt-get install $packages (Debian/Ubuntu), or set FRUITS_CHROMIUM and FRUITS_CHROMEDRIVER"
else
  reason="no apt-get here: install Chromium and its chromedriver with the system's package manager, or set FRUITS_CHROMIUM and FRUITS_CHROMEDRIVER"
fi
echo "setup: no headless browser ($browser, $driver) and none installed ($reason): tests/test_dashboard.py needs one" >&2
exit 1
