#!/usr/bin/env bash
# Installs mcp-relay on a Debian or Ubuntu host with systemd: a system user,
# /etc/mcp-relay and /var/lib/mcp-relay, the binary in /usr/local/bin, the
# hardened units (mcp-relay.socket + mcp-relay.service), a starter relay.toml
# and a sysctl drop-in. Then it prints the DNS, firewall and first-run steps.
#
# Safe to run again (to upgrade the binary or the units): an existing
# /etc/mcp-relay/relay.toml is never overwritten. It does not start the relay.
#
#   sudo deploy/install.sh                              # asks a few questions
#   sudo deploy/install.sh --yes --binary ./mcp-relay \
#       --public-url https://relay.example.com --acme-email ops@example.com
#   deploy/install.sh --root /tmp/fakeroot --yes ...    # lay the files out under a directory
#
# Exit codes: 0 installed, 1 failed (the message says what to do), 2 bad usage.
set -euo pipefail
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
orig_args=("$@")

usage() {
  cat <<'USAGE'
Usage: install.sh [OPTIONS]

Installs mcp-relay as a systemd service on this Debian/Ubuntu host (run as root).

Options:
  --binary PATH        the mcp-relay binary to install
                       [default: ./mcp-relay, else mcp-relay on PATH]
  --public-url URL     the URL clients use, e.g. https://relay.example.com
  --acme-email EMAIL   get the certificate from Let's Encrypt (ACME); EMAIL is
                       the account contact
  --tls-cert FILE      use your own certificate chain (PEM) ...
  --tls-key FILE       ... and its private key (PEM); both or neither
  --https-port PORT    TCP (HTTPS) and UDP (QUIC) port [default: 443]
  --metrics ADDR       Prometheus listener, or "off" [default: 127.0.0.1:9464]
  -y, --yes            do not ask; take the options and defaults
  --root DIR           install under DIR instead of / (for tests and image
                       builds): no useradd, chown, sysctl or systemctl; prints them
  --dry-run            change nothing; print what would be done
  -h, --help           this help

--public-url and one of --acme-email or --tls-cert/--tls-key are needed the
first time (they go into /etc/mcp-relay/relay.toml); later runs keep that file.
USAGE
}

die() {
  echo "install.sh: error: $1" >&2
  [ $# -lt 2 ] || echo "  $2" >&2
  exit 1
}
usage_error() {
  echo "install.sh: $1" >&2
  echo "  Run 'install.sh --help' for the options." >&2
  exit 2
}
say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }

# --- Options -------------------------------------------------------------------

binary=""
public_url=""
acme_email=""
tls_cert=""
tls_key=""
https_port="443"
https_port_given=0
metrics="127.0.0.1:9464"
yes=0
root=""
dry_run=0

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
  arg="$1"
  # --flag=value is the same as --flag value.
  case "$arg" in
    --*=*) set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg="$1" ;;
  esac
  case "$arg" in
    --binary) need_value "$@"; binary="$2"; shift 2 ;;
    --public-url) need_value "$@"; public_url="$2"; shift 2 ;;
    --acme-email) need_value "$@"; acme_email="$2"; shift 2 ;;
    --tls-cert) need_value "$@"; tls_cert="$2"; shift 2 ;;
    --tls-key) need_value "$@"; tls_key="$2"; shift 2 ;;
    --https-port) need_value "$@"; https_port="$2"; https_port_given=1; shift 2 ;;
    --metrics) need_value "$@"; metrics="$2"; shift 2 ;;
    -y | --yes | --non-interactive) yes=1; shift ;;
    --root) need_value "$@"; root="${2%/}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $arg" ;;
  esac
done

if [ "$yes" = 0 ] && [ ! -t 0 ]; then
  say "stdin is not a terminal: not asking questions (as with --yes)"
  yes=1
fi

# --- Checks on values (usage errors: exit 2) -----------------------------------

check_public_url() {
  [[ "$1" =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?/?$ ]] ||
    usage_error "--public-url must be https://HOST (optionally :PORT), e.g. https://relay.example.com; got '$1'"
}
check_email() {
  [[ "$1" =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]] ||
    usage_error "--acme-email must be an email address, e.g. ops@example.com; got '$1'"
}
check_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ||
    usage_error "--https-port must be a port number (1-65535); got '$1'"
}
check_metrics() {
  [ "$1" = off ] || [[ "$1" =~ ^([0-9.]+|\[[0-9a-fA-F:]+\]):[0-9]+$ ]] ||
    usage_error "--metrics must be IP:PORT (e.g. 127.0.0.1:9464) or off; got '$1'"
}

[ -z "$public_url" ] || check_public_url "$public_url"
[ -z "$acme_email" ] || check_email "$acme_email"
check_port "$https_port"
check_metrics "$metrics"
if { [ -n "$tls_cert" ] && [ -z "$tls_key" ]; } || { [ -z "$tls_cert" ] && [ -n "$tls_key" ]; }; then
  usage_error "--tls-cert and --tls-key go together; pass both"
fi
if [ -n "$acme_email" ] && [ -n "$tls_cert" ]; then
  usage_error "--acme-email and --tls-cert/--tls-key contradict each other: ACME or your own certificate, not both"
fi
if [ -n "$root" ] && [[ "$root" != /* ]]; then
  root="$(pwd)/$root"
fi

# --- Paths -----------------------------------------------------------------------

bin_dst="$root/usr/local/bin/mcp-relay"
unit_dir="$root/etc/systemd/system"
conf_dir="$root/etc/mcp-relay"
conf_file="$conf_dir/relay.toml"
state_dir="$root/var/lib/mcp-relay"
backup_dir="$root/var/backups/mcp-relay"
sysctl_file="$root/etc/sysctl.d/60-mcp-relay.conf"
# Inside relay.toml and the units the paths are the real ones, not under --root.
real_state="/var/lib/mcp-relay"
real_conf="/etc/mcp-relay/relay.toml"
real_backups="/var/backups/mcp-relay"
# Management commands run as the relay's user: files they write stay its own,
# and check-config sees what the service will see.
if command -v sudo >/dev/null 2>&1; then
  as_relay="sudo -u mcp-relay mcp-relay"
else
  as_relay="runuser -u mcp-relay -- mcp-relay"
fi

# A re-run keeps the port of the installed configuration (the socket unit is
# rewritten every time and must match relay.toml's https address).
if [ -f "$conf_file" ]; then
  installed_port=$(sed -n 's/^[[:space:]]*https[[:space:]]*=[[:space:]]*"[^"]*:\([0-9][0-9]*\)".*/\1/p' "$conf_file" | head -n1)
  if [ -n "$installed_port" ]; then
    if [ "$https_port_given" = 0 ]; then
      https_port="$installed_port"
    elif [ "$https_port" != "$installed_port" ]; then
      die "--https-port $https_port differs from https = ...:$installed_port in $real_conf" \
        "edit https and quic in $real_conf to the new port first (it is never overwritten), then run this again"
    fi
  fi
fi

for f in mcp-relay.service mcp-relay.socket sysctl.conf; do
  [ -f "$here/$f" ] || die "$here/$f is missing" \
    "install.sh installs the files beside it: copy the whole deploy/ directory, not only install.sh"
done

if [ -z "$binary" ]; then
  if [ -x ./mcp-relay ]; then
    binary=./mcp-relay
  elif command -v mcp-relay >/dev/null 2>&1; then
    binary="$(command -v mcp-relay)"
  else
    die "no mcp-relay binary found (not ./mcp-relay, not on PATH)" \
      "build one with 'cargo build --release -p mcp-relay' and pass --binary target/release/mcp-relay"
  fi
fi
[ -f "$binary" ] && [ -x "$binary" ] ||
  die "--binary $binary is not an executable file" "pass the path of a built mcp-relay, e.g. --binary target/release/mcp-relay"
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
version="$("$binary" --version 2>/dev/null)" ||
  die "$binary --version failed" "is it built for this machine ($(uname -m))? Build it here or copy a matching one."
[[ "$version" == mcp-relay* ]] || die "$binary is not mcp-relay (its --version printed: $version)"

real_host=1
[ -z "$root" ] || real_host=0
if [ "$real_host" = 1 ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (it creates a user, writes /etc and /usr/local/bin)" \
    "sudo $0 ${orig_args[*]}   (or --dry-run to see the steps, --root DIR to try it in a directory)"
fi
if [ "$real_host" = 1 ]; then
  if [ -r /etc/os-release ] && ! grep -Eqi '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; then
    say "warning: this is not Debian or Ubuntu; continuing, but check each step"
  fi
  [ -d /run/systemd/system ] ||
    say "warning: systemd is not running here; the units get installed but cannot start until it is"
fi

# --- Questions (only what flags did not answer, only for a new relay.toml) ----

ask() { # ask VAR "Question" DEFAULT
  local answer
  read -r -p "$2 [${3}]: " answer || usage_error "no answer to: $2"
  printf -v "$1" '%s' "${answer:-$3}"
}

new_config=1
[ ! -e "$conf_file" ] || new_config=0

if [ "$new_config" = 1 ]; then
  if [ -z "$public_url" ]; then
    [ "$yes" = 0 ] || usage_error "--public-url is needed for a new relay.toml, e.g. --public-url https://relay.example.com"
    guess="https://$(hostname -f 2>/dev/null || hostname)"
    ask public_url "Public URL of the relay (its DNS name must point at this host)" "$guess"
    check_public_url "$public_url"
  fi
  if [ -z "$acme_email" ] && [ -z "$tls_cert" ]; then
    [ "$yes" = 0 ] || usage_error "a certificate source is needed for a new relay.toml: --acme-email EMAIL (Let's Encrypt) or --tls-cert FILE --tls-key FILE"
    ask acme_email "Email for Let's Encrypt (ACME); '-' to use your own certificate files" "-"
    if [ "$acme_email" = "-" ]; then
      acme_email=""
      ask tls_cert "Certificate chain (PEM)" "/etc/mcp-relay/cert.pem"
      ask tls_key "Private key (PEM)" "/etc/mcp-relay/key.pem"
    else
      check_email "$acme_email"
    fi
  fi
  if [ "$yes" = 0 ]; then
    ask https_port "Port for HTTPS (TCP) and QUIC (UDP)" "$https_port"
    check_port "$https_port"
    ask metrics "Prometheus metrics listener, or off" "$metrics"
    check_metrics "$metrics"
  fi
fi
if [ -n "$acme_email" ] && [[ "$public_url" =~ ^https://[0-9.]+(:[0-9]+)?/?$ ]]; then
  usage_error "ACME certificates are for DNS names; --public-url $public_url has an IP address (use a name, or --tls-cert/--tls-key)"
fi
if [ -n "$acme_email" ] && [ "$https_port" != 443 ]; then
  say "warning: the ACME CA checks the name on TCP port 443 (TLS-ALPN-01); with --https-port $https_port,"
  say "         forward TCP 443 to $https_port (or use --tls-cert/--tls-key)"
fi
if [ -n "$tls_cert" ]; then
  # relay.toml needs absolute paths: the relay's working directory is not yours.
  [[ "$tls_cert" == /* ]] || tls_cert="$(pwd)/$tls_cert"
  [[ "$tls_key" == /* ]] || tls_key="$(pwd)/$tls_key"
  if [ "$new_config" = 1 ] && [ "$real_host" = 1 ]; then
    [ -f "$tls_cert" ] || die "--tls-cert $tls_cert does not exist" "put the certificate chain there first, or use --acme-email"
    [ -f "$tls_key" ] || die "--tls-key $tls_key does not exist" "put the private key there first, or use --acme-email"
  fi
fi
if [ "$yes" = 0 ]; then
  read -r -p "Install mcp-relay ($version) now? [Y/n]: " go || go=n
  case "$go" in "" | [Yy]*) ;; *) say "nothing changed"; exit 0 ;; esac
fi

# --- Doing it --------------------------------------------------------------------

# quoted CMD...: the command, quoted so it can be pasted.
quoted() { local q; q="$(printf '%q ' "$@")"; printf '%s' "${q% }"; }
# run CMD...: changes files (under --root too); only printed with --dry-run.
run() {
  if [ "$dry_run" = 1 ]; then say "    would run: $(quoted "$@")"; else "$@"; fi
}
# host CMD...: changes the host itself (users, owners, kernel, systemd);
# printed, not run, with --root or --dry-run.
host() {
  if [ "$real_host" = 1 ] && [ "$dry_run" = 0 ]; then "$@"; else say "    would run: $(quoted "$@")"; fi
}
# owner USER:GROUP PATH: sets an owner on the real host; printed otherwise.
owner() { host chown "$1" "$2"; }

[ "$dry_run" = 0 ] || say "dry run: nothing is changed; these are the steps"
[ "$real_host" = 1 ] || say "installing under $root (no user, owners, sysctl or systemctl: printed instead)"

step "system user mcp-relay"
if [ "$real_host" = 1 ] && getent passwd mcp-relay >/dev/null; then
  say "    exists"
else
  group_opt=(--user-group)
  # A group left from an earlier install would make --user-group fail.
  if [ "$real_host" = 1 ] && getent group mcp-relay >/dev/null; then group_opt=(--gid mcp-relay); fi
  host useradd --system "${group_opt[@]}" --home-dir "$real_state" --no-create-home \
    --shell /usr/sbin/nologin --comment "mcp-relay (MCP tunnel relay)" mcp-relay
fi

step "directories"
# System directories are only made when missing, never re-moded.
for d in "$root/usr/local/bin" "$unit_dir" "$root/etc/sysctl.d" "$root/var/lib" "$root/var/backups"; do
  [ -d "$d" ] || run install -d -m 0755 "$d"
done
run install -d -m 0750 "$conf_dir"
owner root:mcp-relay "$conf_dir"
run install -d -m 0700 "$state_dir"
owner mcp-relay:mcp-relay "$state_dir"
# Where `mcp-relay backup` (run as mcp-relay) can write; copy them off the host.
run install -d -m 0700 "$backup_dir"
owner mcp-relay:mcp-relay "$backup_dir"

step "binary $bin_dst ($version)"
if [ -f "$bin_dst" ] && cmp -s "$binary" "$bin_dst"; then
  say "    unchanged"
  bin_changed=0
else
  # install(1) unlinks the old file first, so a running relay keeps its copy.
  run install -m 0755 "$binary" "$bin_dst"
  bin_changed=1
fi

# install_file SRC DST MODE: copies when the content or mode differs and
# sets copied=1 if it did. (Not a return code: a function called in a
# condition runs without set -e, and a failed copy must stop the script.)
copied=0
install_file() {
  copied=0
  if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]; then
    say "    $2 unchanged"
    return 0
  fi
  [ ! -f "$2" ] || say "    $2 replaced (local changes belong in 'systemctl edit', a drop-in)"
  run install -m "$3" "$1" "$2"
  copied=1
}

step "systemd units in $unit_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The socket's port follows --https-port; relay.toml's https/quic must match it.
sed -e "s/^ListenStream=443\$/ListenStream=$https_port/" \
  -e "s/^ListenDatagram=443\$/ListenDatagram=$https_port/" \
  "$here/mcp-relay.socket" >"$tmp/mcp-relay.socket"
units_changed=0
install_file "$here/mcp-relay.service" "$unit_dir/mcp-relay.service" 0644
[ "$copied" = 0 ] || units_changed=1
install_file "$tmp/mcp-relay.socket" "$unit_dir/mcp-relay.socket" 0644
[ "$copied" = 0 ] || units_changed=1

step "configuration $conf_file"
if [ "$new_config" = 0 ]; then
  say "    exists: kept as it is (never overwritten). New keys and their defaults: $here/relay.toml"
  [ -z "$public_url$acme_email$tls_cert" ] ||
    say "    note: --public-url/--acme-email/--tls-* only shape a new file; edit $real_conf to change them, then: systemctl reload mcp-relay"
else
  {
    echo "# mcp-relay configuration, written by deploy/install.sh."
    echo "# Every key, with its default: deploy/relay.toml in the mcp-tunnel sources."
    echo "# After a change: $as_relay check-config --config $real_conf && systemctl reload mcp-relay"
    echo
    echo "public_url = \"$public_url\""
    echo "https = \"[::]:$https_port\"      # TCP, MCP clients (the socket unit holds it)"
    echo "quic = \"[::]:$https_port\"       # UDP, agents"
    echo "state = \"$real_state\""
    echo "log_format = \"text\"       # or \"json\"; read with: journalctl -u mcp-relay -f"
    if [ "$metrics" = off ]; then
      echo "# metrics = \"127.0.0.1:9464\"   # Prometheus /metrics, off"
    else
      echo "metrics = \"$metrics\"   # Prometheus /metrics; keep it off the public interface"
    fi
    if [ -n "$tls_cert" ]; then
      echo "# Both readable by the mcp-relay user (e.g. root:mcp-relay, mode 0640)."
      echo "tls_cert = \"$tls_cert\""
      echo "tls_key = \"$tls_key\""
    fi
    echo
    echo "[limits]"
    echo "# drain_timeout = \"10s\"   # keep below TimeoutStopSec= (15 s) in mcp-relay.service"
    if [ -n "$acme_email" ]; then
      echo
      echo "# The certificate for public_url's host comes from Let's Encrypt and is"
      echo "# renewed in the background; it is kept in the state directory."
      echo "# Until the first one is issued, a temporary self-signed one is served."
      echo "[acme]"
      echo "accept_terms = true       # you agree to https://letsencrypt.org/repository/"
      echo "contact = [\"$acme_email\"]"
      echo "# Try the staging CA first if you like (its certificates are not trusted):"
      echo "# directory_url = \"https://acme-staging-v02.api.letsencrypt.org/directory\""
    fi
  } >"$tmp/relay.toml"
  if [ "$dry_run" = 1 ]; then
    sed 's/^/    | /' "$tmp/relay.toml"
  fi
  run install -m 0640 "$tmp/relay.toml" "$conf_file"
  owner root:mcp-relay "$conf_file"
fi
if [ -n "$tls_cert" ] && [ "$real_host" = 1 ] && [ "$dry_run" = 0 ] &&
  ! runuser -u mcp-relay -- test -r "$tls_key" 2>/dev/null; then
  say "    warning: user mcp-relay cannot read $tls_key; e.g.:"
  say "      $(quoted install -m 0640 -o root -g mcp-relay "$tls_key" /etc/mcp-relay/key.pem)"
  say "    and set tls_key in $real_conf to /etc/mcp-relay/key.pem"
fi

step "sysctl $sysctl_file"
install_file "$here/sysctl.conf" "$sysctl_file" 0644
if [ "$copied" = 1 ]; then
  host sysctl -q -e --load "$sysctl_file" ||
    say "    warning: the kernel refused a setting (net.ipv4.tcp_migrate_req needs Linux 5.14+); harmless"
fi

running=0
if [ "$real_host" = 1 ] && [ "$dry_run" = 0 ] && [ -d /run/systemd/system ]; then
  if [ "$units_changed" = 1 ]; then
    step "systemctl daemon-reload"
    systemctl daemon-reload
  fi
  ! systemctl is-active --quiet mcp-relay.service || running=1
else
  [ "$units_changed" = 0 ] || { step "systemctl daemon-reload"; host systemctl daemon-reload; }
fi

# --- What next -------------------------------------------------------------------

host_name=""
if [ -n "$public_url" ]; then
  host_name="${public_url#https://}"
  host_name="${host_name%%/*}"
  host_name="${host_name%%:*}"
elif [ -f "$conf_file" ]; then
  host_name="$(sed -n 's#^public_url *= *"https://\([^/:"]*\).*#\1#p' "$conf_file" | head -n1)"
fi
host_name="${host_name:-relay.example.com}"
public_base="https://$host_name$( [ "$https_port" = 443 ] || echo ":$https_port" )"

cat <<NEXT

Installed. Next steps:

1. DNS: point $host_name at this server — an A record to its public IPv4 and,
   if it has one, an AAAA record to its IPv6 address. Check: dig +short $host_name

2. Firewall: open TCP $https_port (HTTPS, MCP clients) and UDP $https_port (QUIC, agents),
   on the host and in your provider's firewall / security group:
     ufw allow $https_port/tcp && ufw allow $https_port/udp
   Keep the metrics port ($metrics) closed to the outside.

3. Check the configuration (as the relay's user) and start; the socket unit
   holds the ports, the service inherits them:
     $as_relay check-config --config $real_conf
     systemctl enable --now mcp-relay.socket mcp-relay.service
     journalctl -u mcp-relay -f
     curl -fsS $public_base/healthz

4. The first person; open the link it prints to set a password:
     $as_relay users add you@example.com --state $real_state
   Then on the laptop:
     mcp-agent login --relay $public_base
     mcp-agent connect --db shop.db
   A headless agent: $as_relay enroll-tokens create --user you@example.com --state $real_state

Later: 'systemctl reload mcp-relay' after editing relay.toml or policies;
'systemctl restart mcp-relay' after installing a new binary (clients are queued, not refused);
backups: $as_relay backup --state $real_state --out $real_backups/relay-\$(date +%F).tar.gz
NEXT
if [ "$running" = 1 ] && [ "$bin_changed" = 1 ]; then
  say ""
  say "mcp-relay is running the old binary: systemctl restart mcp-relay"
fi
