# Sourced by the benchmark scripts: `require TOOL PACKAGE` ends the script with the install
# command when TOOL is neither on PATH nor in /usr/sbin nor among PostgreSQL's binaries.
require() {
  if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ||
    compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; then
    return
  fi
  echo "error: $1 not found: apt-get install -y --no-install-recommends $2" >&2
  exit 1
}
