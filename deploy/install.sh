#!/usr/bin/env bash
# Install the reinforce-edge runtime on a Debian-based board (Raspberry Pi OS) as a hardened
# systemd service, from the source tree this script lives in. Run it as root; run it again to
# upgrade (only what differs is redone). See docs/deploying.md.
#
#   sudo deploy/install.sh --policy policy.npz --public-key fleet.pub \
#        --broker mqtts://broker.lan:8883 --ca-file ca.crt --cert pi-01.crt --key pi-01.key \
#        --password-file pi-01.password
#
# What goes where (under --prefix DIR when given):
#   /opt/reinforce-edge/                  virtualenv: the project with only its `device` extra
#   /etc/reinforce-edge/runtime.toml      configuration (from deploy/runtime.toml; never overwritten)
#   /etc/reinforce-edge/policy.npz        --policy          fleet.pub   --public-key
#   /etc/reinforce-edge/tls/              --ca-file, --cert, --key      mqtt.env  --password-file
#   /var/lib/reinforce-edge/              state: updates received over MQTT (kept by --uninstall)
#   /etc/systemd/system/reinforce-edge.service (+ .service.d/ drop-ins)
#   /etc/sysusers.d/, /etc/tmpfiles.d/    the user and the owners, for images built with --prefix
#
# Options:
#   --policy FILE         the policy to run (signed policy.npz from `python -m export`)
#   --public-key FILE     the fleet's Ed25519 public key (PEM or 32 raw bytes)
#   --broker URL          mqtt://HOST[:PORT] or mqtts://HOST[:PORT] for updates and telemetry
#   --device-id ID        this board's id and broker user name (default: the hostname)
#   --ca-file FILE --cert FILE --key FILE   TLS: fleet CA, this device's certificate and key
#   --password-file FILE  the broker password (first line) -> mqtt.env, root only
#   --serial-device DEV   let the service open DEV despite PrivateDevices= (e.g. /dev/ttyACM0)
#   --realtime            run the control loop with SCHED_FIFO (drop-in realtime.conf)
#   --prefix DIR          install under DIR (tests, image builds): no user, chown or systemctl
#   --dry-run             print every action, change nothing
#   --uninstall           remove what was installed; keep the state directory unless --purge
#   --purge               with --uninstall: also the state, an edited runtime.toml and the user
#   --python PY           interpreter for the virtualenv (default python3; needs >= 3.10)
#   --venv-args ARGS      arguments to `PY -m venv` (default --system-site-packages, so the
#                         distribution's python3-numpy and python3-cryptography are used)
#   --pip-args ARGS       extra arguments to `pip install` (e.g. --no-index --find-links DIR)
#   --skip-venv           do not create or update the virtualenv (tests; a Python you manage)
#   -h, --help            this text
#
# Exit status: 0 done (or nothing to do), 1 a step failed, 2 bad usage or input (not root
# without --prefix, Python < 3.10, a given file missing, an unknown or incomplete option).
set -euo pipefail
# The virtualenv must be readable by the service user whatever root's umask is.
umask 022

NAME=reinforce-edge
OPT=/opt/$NAME
ETC=/etc/$NAME
STATE=/var/lib/$NAME
UNIT=/etc/systemd/system/$NAME.service
DROPINS=/etc/systemd/system/$NAME.service.d
SYSUSERS=/etc/sysusers.d/$NAME.conf
TMPFILES=/etc/tmpfiles.d/$NAME.conf
SRC=$(cd "$(dirname "$0")/.." && pwd)

die_usage() {
    echo "install.sh: $*" >&2
    exit 2
}
die() {
    echo "install.sh: $*" >&2
    exit 1
}
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# --- options --------------------------------------------------------------------------------
policy="" public_key="" broker="" device_id="" prefix="" prefix_given=no
ca_file="" cert="" key="" password_file="" serial_device="" realtime=no
dry_run=no uninstall=no purge=no
python=python3 venv_args="--system-site-packages" pip_args="" skip_venv=no

need_value() { [ "$2" -ge 2 ] || die_usage "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case $1 in
    --policy) need_value "$1" $#; policy=$2; shift 2 ;;
    --public-key) need_value "$1" $#; public_key=$2; shift 2 ;;
    --broker) need_value "$1" $#; broker=$2; shift 2 ;;
    --device-id) need_value "$1" $#; device_id=$2; shift 2 ;;
    --ca-file) need_value "$1" $#; ca_file=$2; shift 2 ;;
    --cert) need_value "$1" $#; cert=$2; shift 2 ;;
    --key) need_value "$1" $#; key=$2; shift 2 ;;
    --password-file) need_value "$1" $#; password_file=$2; shift 2 ;;
    --serial-device) need_value "$1" $#; serial_device=$2; shift 2 ;;
    --realtime) realtime=yes; shift ;;
    --prefix) need_value "$1" $#; prefix=$2; prefix_given=yes; shift 2 ;;
    --dry-run) dry_run=yes; shift ;;
    --uninstall) uninstall=yes; shift ;;
    --purge) purge=yes; shift ;;
    --python) need_value "$1" $#; python=$2; shift 2 ;;
    --venv-args) need_value "$1" $#; venv_args=$2; shift 2 ;;
    --pip-args) need_value "$1" $#; pip_args=$2; shift 2 ;;
    --skip-venv) skip_venv=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown argument '$1' (see --help)" ;;
    esac
done

# --- checks: everything that can be wrong is refused before anything changes ----------------
if [ $prefix_given = yes ]; then
    [ -n "$prefix" ] || die_usage "--prefix needs a directory"
    [ "$prefix" != / ] || prefix=""
    case $prefix in /* | '') ;; *) prefix=$(pwd)/$prefix ;; esac
    prefix=${prefix%/}
    [ -n "$prefix" ] || prefix_given=no
fi
[ $purge = no ] || [ $uninstall = yes ] || die_usage "--purge goes with --uninstall"
if [ $prefix_given = no ] && [ "$(id -u)" -ne 0 ]; then
    die_usage "run as root (sudo deploy/install.sh ...), or give --prefix DIR to install under DIR"
fi

if [ $uninstall = no ]; then
    for pair in "--policy:$policy" "--public-key:$public_key" "--ca-file:$ca_file" \
        "--cert:$cert" "--key:$key" "--password-file:$password_file"; do
        flag=${pair%%:*} file=${pair#*:}
        [ -z "$file" ] || [ -f "$file" ] || die_usage "$flag $file: no such file"
        [ -z "$file" ] || [ -r "$file" ] || die_usage "$flag $file: not readable"
    done
    if [ -n "$password_file" ]; then
        secret=$(head -n 1 "$password_file")
        [ -n "$secret" ] || die_usage "--password-file $password_file: the first line is empty"
        # systemd's EnvironmentFile= would strip or interpret these; make-certs/add-device
        # passwords never hold them.
        case $secret in
        *[!!-~]* | *[\"\'\\\$\`]*)
            die_usage "--password-file $password_file: the password must be printable ASCII" \
                "without spaces, quotes, backslash, \$ or backquote (systemd's EnvironmentFile= would alter it)" ;;
        esac
    fi
    { [ -n "$cert" ] && [ -n "$key" ]; } || { [ -z "$cert" ] && [ -z "$key" ]; } ||
        die_usage "--cert and --key go together (this device's certificate and its key)"
    if [ -n "$broker" ]; then
        case $broker in *@*) die_usage "--broker must not carry credentials: use --password-file" ;; esac
        # Strictly a URL the runtime accepts: it is written into runtime.toml as it is.
        url_re='^mqtts?://([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:([0-9]{1,5}))?$'
        if ! [[ $broker =~ $url_re ]] || [ "${BASH_REMATCH[3]:-1}" -lt 1 ] ||
            [ "${BASH_REMATCH[3]:-1}" -gt 65535 ]; then
            die_usage "--broker '$broker': expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (PORT 1..65535)"
        fi
        [ -n "$public_key" ] || [ -f "$prefix$ETC/fleet.pub" ] ||
            die_usage "--broker needs --public-key: updates are accepted only when signed"
    fi
    # TLS files need an mqtts:// broker: this one, or the installed configuration's (renewal).
    tls_broker=$broker
    [ -n "$tls_broker" ] || tls_broker=$(sed -n 's/^broker = "\(.*\)"$/\1/p' "$prefix$ETC/runtime.toml" 2>/dev/null || true)
    case $tls_broker in
    mqtts://*) ;;
    *) [ -z "$ca_file$cert" ] || die_usage "--ca-file/--cert/--key need an mqtts:// --broker" ;;
    esac
    # the host name's first label: 'pi.local' gives 'pi' (a '.' is no device id: NATS)
    if [ -z "$device_id" ]; then
        device_id=$(hostname 2>/dev/null || cat /etc/hostname)
        device_id=${device_id%%.*}
    fi
    case $device_id in
    '' | [!A-Za-z0-9]* | *[!A-Za-z0-9_-]*)
        die_usage "--device-id '$device_id': use letters, digits, '_', '-' (a letter or digit first; no '.')" ;;
    operator) die_usage "--device-id 'operator' is the operator's broker account (it may publish policies), not a board's" ;;
    esac
    [ ${#device_id} -le 64 ] || die_usage "--device-id '$device_id' is longer than 64 characters"
    # It goes into a sed replacement and DeviceAllow=: a plain path only.
    case $serial_device in
    '' | /dev/[A-Za-z0-9_]*) ;;
    *) die_usage "--serial-device '$serial_device': expected a /dev/ path" ;;
    esac
    case $serial_device in
    *[!A-Za-z0-9_./:-]* | *..*) die_usage "--serial-device '$serial_device': expected a /dev/ path" ;;
    esac
    command -v "$python" >/dev/null 2>&1 || die_usage "--python $python: not found (apt-get install -y python3)"
    py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
        die_usage "$python does not run"
    case $py_version in
    [0-2].* | 3.[0-9]) die_usage "Python >= 3.10 is needed, $python is $py_version" ;;
    esac
    { [ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/deploy/$NAME.service" ]; } ||
        die "no project source around $0 (run the install.sh inside a reinforce-edge checkout)"
fi

# --- helpers: every change goes through `run`, which counts it and honours --dry-run ---------
changes=0
run() {
    local what=$1
    shift
    changes=$((changes + 1))
    if [ $dry_run = yes ]; then
        echo "would $what: $*"
    else
        echo "$what"
        "$@" || die "failed: $what"
    fi
}
info() { echo "$*"; }
systemd_here() { [ $prefix_given = no ] && [ -d /run/systemd/system ]; }
owner_of() { stat -c '%a %U:%G' "$1" 2>/dev/null || true; }

# Whether files can belong to the service group (it exists, or a dry run would create it).
group_owned() { [ $prefix_given = no ] && { getent group $NAME >/dev/null || [ $dry_run = yes ]; }; }
# want_owner MODE [GROUP]: "MODE root:GROUP" as stat prints it.
want_owner() {
    if [ $prefix_given = yes ]; then
        echo "$1 $(id -un):$(id -gn)"
    elif [ -n "${2:-}" ] && group_owned; then
        echo "$1 root:$2"
    else
        echo "$1 root:root"
    fi
}

# put_file SRC DEST MODE [GROUP]: install SRC as DEST unless DEST already has those bytes and mode.
put_file() {
    local src=$1 dest=$2 mode=$3 group=${4:-}
    local want
    want=$(want_owner "$mode" "$group")
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(owner_of "$dest")" = "$want" ]; then
        return 0
    fi
    local opts=(-D -m "$mode")
    if [ $prefix_given = no ]; then
        opts+=(-o root -g "${want#*:}")
    fi
    run "install $dest" install "${opts[@]}" "$src" "$dest"
}

# put_dir DIR MODE [OWNER]: a directory with this mode (and owner user:group outside --prefix).
put_dir() {
    local dir=$1 mode=$2 owner=${3:-root:root}
    local want="$mode $owner"
    [ $prefix_given = no ] || want="$mode $(id -un):$(id -gn)"
    [ -d "$dir" ] && [ "$(owner_of "$dir")" = "$want" ] && return 0
    local opts=(-d -m "$mode")
    [ $prefix_given = yes ] || opts+=(-o "${owner%:*}" -g "${owner#*:}")
    run "make directory $dir" install "${opts[@]}" "$dir"
}

# remove PATH...: delete what exists.
remove() {
    local path
    for path in "$@"; do
        if [ -e "$path" ] || [ -L "$path" ]; then
            run "remove $path" rm -rf -- "$path"
        fi
    done
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# source_stamp: a digest of the sources the virtualenv was built from (an upgrade changes it).
source_stamp() {
    (cd "$SRC" && find pyproject.toml runtime trainer export -type f \
        \( -name '*.py' -o -name pyproject.toml \) -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

# build_venv: create the virtualenv and (re)install the project with its device extra from a
# clean copy of the sources (the checkout is left untouched).
build_venv() {
    local venv=$1 copy=$tmp/source
    if [ ! -x "$venv/bin/python" ]; then
        # shellcheck disable=SC2086 # --venv-args is a list of words
        "$python" -m venv $venv_args "$venv"
    fi
    mkdir -p "$copy"
    (cd "$SRC" && tar --exclude=__pycache__ -cf - pyproject.toml README.md runtime trainer export) |
        tar -xf - -C "$copy"
    "$venv/bin/python" -m pip uninstall --yes --quiet $NAME >/dev/null 2>&1 || true
    # shellcheck disable=SC2086 # --pip-args is a list of words
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
        $pip_args "${copy}[device]"
    source_stamp >"$venv/.source-sha256"
}

# render_config: deploy/runtime.toml with this board's values filled in.
render_config() {
    local mqtt=no tls=no with_key=no
    [ -z "$broker" ] || mqtt=yes
    [ -z "$cert$ca_file" ] || tls=yes
    [ -z "$public_key" ] && [ ! -f "$prefix$ETC/fleet.pub" ] || with_key=yes
    uncomment() { if [ "$2" = yes ]; then echo "s/^#@$1 //"; else echo "s/^#@$1 /#/"; fi; }
    sed -e "$(uncomment mqtt $mqtt)" -e "$(uncomment tls $tls)" -e "$(uncomment key $with_key)" \
        -e "s|@BROKER@|${broker:-mqtts://broker.example:8883}|g" \
        -e "s|@DEVICE_ID@|$device_id|g" "$SRC/deploy/runtime.toml"
}

# --- uninstall ------------------------------------------------------------------------------
do_uninstall() {
    local R=$prefix
    if systemd_here; then
        if systemctl is-active --quiet $NAME; then run "stop $NAME" systemctl stop $NAME; fi
        if systemctl is-enabled --quiet $NAME 2>/dev/null; then
            run "disable $NAME" systemctl disable --quiet $NAME
        fi
    fi
    local had_unit=no
    [ ! -e "$R$UNIT" ] && [ ! -d "$R$DROPINS" ] || had_unit=yes
    remove "$R$UNIT" "$R$DROPINS" "$R$SYSUSERS" "$R$TMPFILES" "$R$OPT"
    if [ $had_unit = yes ] && systemd_here; then run "reload systemd" systemctl daemon-reload; fi
    remove "$R$ETC/policy.npz" "$R$ETC/fleet.pub" "$R$ETC/tls" "$R$ETC/mqtt.env"
    local config=$R$ETC/runtime.toml record=$R$ETC/.runtime.toml.sha256
    if [ -f "$config" ]; then
        if [ $purge = yes ] || { [ -f "$record" ] &&
            [ "$(sha256sum <"$config" | cut -d' ' -f1)" = "$(cat "$record")" ]; }; then
            remove "$config"
        else
            info "kept $config: it was edited (--purge removes it)"
        fi
    fi
    remove "$record"
    if [ -d "$R$ETC" ] && [ -z "$(ls -A "$R$ETC")" ]; then run "remove $R$ETC" rmdir "$R$ETC"; fi
    if [ $purge = yes ]; then
        remove "$R$STATE"
        if [ $prefix_given = no ] && getent passwd $NAME >/dev/null; then
            run "delete user $NAME" userdel $NAME
        fi
    elif [ -d "$R$STATE" ]; then
        info "kept $R$STATE (the policies received over MQTT; --purge removes it)"
    fi
    if [ $changes -eq 0 ]; then
        info "nothing to remove: $NAME is not installed${prefix:+ under $prefix}"
    elif [ $dry_run = yes ]; then
        info "dry run: $changes action(s) would run; nothing was changed"
    else
        info "uninstalled $NAME${prefix:+ from $prefix}"
    fi
}

# --- install --------------------------------------------------------------------------------
do_install() {
    local R=$prefix

    # The service account.
    if [ $prefix_given = yes ]; then
        info "--prefix: not creating the user $NAME nor changing owners" \
            "(systemd-sysusers and systemd-tmpfiles do both at the target's first boot)"
    elif ! getent passwd $NAME >/dev/null; then
        run "create system user $NAME" useradd --system --user-group --home-dir $STATE \
            --no-create-home --shell /usr/sbin/nologin --comment "reinforce-edge policy runtime" $NAME
    fi
    put_file "$SRC/deploy/sysusers.conf" "$R$SYSUSERS" 644
    put_file "$SRC/deploy/tmpfiles.conf" "$R$TMPFILES" 644

    # The virtualenv.
    if [ $skip_venv = yes ]; then
        info "--skip-venv: not touching $R$OPT ($OPT/bin/reinforce-runtime must exist to start)"
    elif [ -x "$R$OPT/bin/python" ] && [ "$(cat "$R$OPT/.source-sha256" 2>/dev/null)" = "$(source_stamp)" ]; then
        :
    else
        if [ $prefix_given = yes ]; then
            info "note: the virtualenv's scripts will name $R$OPT, not $OPT: for an image," \
                "run install.sh inside the image's chroot instead (or --skip-venv here)"
        fi
        run "build the virtualenv $R$OPT ($python -m venv $venv_args; pip install .[device] $pip_args)" \
            build_venv "$R$OPT"
    fi

    # The service user must be able to run it (an interpreter under /root, a strict umask...).
    if [ $skip_venv = no ] && [ $prefix_given = no ] && [ $dry_run = no ]; then
        local check='import numpy, paho.mqtt.client, cryptography, runtime.cli'
        local problem
        if ! problem=$(runuser -u $NAME -- "$OPT/bin/python" -c "$check" 2>&1); then
            die "user $NAME cannot run $OPT/bin/python ($(echo "$problem" | tail -n 1));" \
                "is the interpreter ($python) readable by every user? try --python /usr/bin/python3"
        fi
    fi

    # Configuration, key, policy, TLS material, password.
    put_dir "$R$ETC" 750 "root:$(group_owned && echo $NAME || echo root)"
    [ -z "$policy" ] || put_file "$policy" "$R$ETC/policy.npz" 644
    [ -z "$public_key" ] || put_file "$public_key" "$R$ETC/fleet.pub" 644
    if [ -n "$ca_file$cert" ]; then
        put_dir "$R$ETC/tls" 750 "root:$(group_owned && echo $NAME || echo root)"
    fi
    [ -z "$ca_file" ] || put_file "$ca_file" "$R$ETC/tls/ca.crt" 644
    [ -z "$cert" ] || put_file "$cert" "$R$ETC/tls/device.crt" 644
    [ -z "$key" ] || put_file "$key" "$R$ETC/tls/device.key" 640 $NAME
    if [ -n "$password_file" ]; then
        local secret
        secret=$(head -n 1 "$password_file")
        # systemd reads this file as root (EnvironmentFile=); the service never sees the file.
        printf 'REINFORCE_EDGE_MQTT_PASSWORD=%s\n' "$secret" >"$tmp/mqtt.env"
        put_file "$tmp/mqtt.env" "$R$ETC/mqtt.env" 600
    fi
    local config=$R$ETC/runtime.toml
    if [ -f "$config" ]; then
        # Say so only when the kept file lacks a setting given now (a re-run with the same
        # flags is quiet).
        local line
        for line in ${broker:+"broker = \"$broker\""} \
            ${ca_file:+"ca_file = \"$ETC/tls/ca.crt\""} ${cert:+"cert = \"$ETC/tls/device.crt\""}; do
            if ! grep -qxF "$line" "$config"; then
                info "kept $config (never overwritten): edit it for the new broker or TLS settings"
                break
            fi
        done
    else
        render_config >"$tmp/runtime.toml"
        put_file "$tmp/runtime.toml" "$config" 640 $NAME
        sha256sum <"$tmp/runtime.toml" | cut -d' ' -f1 >"$tmp/runtime.toml.sha256"
        put_file "$tmp/runtime.toml.sha256" "$R$ETC/.runtime.toml.sha256" 600
    fi

    # State: owned by the service (systemd's StateDirectory= would also create it).
    put_dir "$R$STATE" 750 "$(group_owned && echo $NAME:$NAME || echo root:root)"

    # The unit and its drop-ins.
    local before=$changes
    put_file "$SRC/deploy/$NAME.service" "$R$UNIT" 644
    if [ $realtime = yes ]; then
        put_file "$SRC/deploy/dropins/realtime.conf" "$R$DROPINS/realtime.conf" 644
    fi
    if [ -n "$serial_device" ]; then
        sed "s|^DeviceAllow=/dev/ttyACM0 rw|DeviceAllow=$serial_device rw|" \
            "$SRC/deploy/dropins/serial.conf" >"$tmp/serial.conf"
        put_file "$tmp/serial.conf" "$R$DROPINS/serial.conf" 644
    fi
    local unit_changed=no
    [ $changes -eq $before ] || unit_changed=yes

    # Start it (only on a live systemd, never under --prefix).
    local has_policy=yes
    [ -f "$R$ETC/policy.npz" ] || [ -n "$policy" ] || has_policy=no
    if systemd_here; then
        [ $unit_changed = no ] || run "reload systemd" systemctl daemon-reload
        if ! systemctl is-enabled --quiet $NAME 2>/dev/null; then
            run "enable $NAME at boot" systemctl enable --quiet $NAME
        fi
        if [ $has_policy = no ]; then
            info "not starting $NAME: no policy yet (copy one to $ETC/policy.npz or use --policy)"
        elif ! systemctl is-active --quiet $NAME; then
            run "start $NAME" systemctl start $NAME
        elif [ $changes -gt 0 ]; then
            run "restart $NAME" systemctl restart $NAME
        fi
    elif [ $prefix_given = no ]; then
        info "systemd is not running here: start it yourself ($OPT/bin/reinforce-runtime --config $ETC/runtime.toml)"
    fi
    [ $has_policy = yes ] || info "warning: no policy installed yet: use --policy FILE"

    if [ $changes -eq 0 ]; then
        info "nothing to do: $NAME is already installed${prefix:+ under $prefix} and up to date"
    elif [ $dry_run = yes ]; then
        info "dry run: $changes action(s) would run; nothing was changed"
    else
        info "installed $NAME${prefix:+ under $prefix} ($changes change(s))"
        if systemd_here; then info "follow it: journalctl -u $NAME -f"; fi
    fi
}

if [ $uninstall = yes ]; then
    do_uninstall
else
    do_install
fi
