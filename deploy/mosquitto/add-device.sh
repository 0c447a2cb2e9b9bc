#!/usr/bin/env bash
# Add (or with --remove, revoke) a device's broker account: a fresh random password in the
# Mosquitto password file. The ACL needs no per-device line: its patterns give the account
# named ID exactly its own topics (deploy/mosquitto/acl). The password is written to
# OUT/ID.password (mode 600) for deploy/install.sh --password-file on the device.
#
#   add-device.sh [--passwd FILE] [--out DIR] [--certs DIR] [--no-reload] ID
#   add-device.sh --operator [...]      the operator account (user "operator" in the ACL)
#   add-device.sh --remove [...] ID     delete the account (its certificate stays valid,
#                                       but without a password it cannot log in)
#
#   --passwd FILE  password file (default /etc/mosquitto/reinforce-edge.passwd)
#   --out DIR      where ID.password goes (default ./device-credentials)
#   --certs DIR    also make ID's client certificate there (make-certs.sh --dir DIR ID)
#   --no-reload    do not ask a running mosquitto to re-read its files (systemctl reload)
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die_usage() {
    echo "add-device.sh: $*" >&2
    exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
passwd_file=/etc/mosquitto/reinforce-edge.passwd
out=device-credentials
certs=""
reload=yes
remove=no
operator=no
id=""
while [ $# -gt 0 ]; do
    case $1 in
    --passwd) [ $# -ge 2 ] || die_usage "--passwd needs a value"; passwd_file=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die_usage "--out needs a value"; out=$2; shift 2 ;;
    --certs) [ $# -ge 2 ] || die_usage "--certs needs a value"; certs=$2; shift 2 ;;
    --no-reload) reload=no; shift ;;
    --remove) remove=yes; shift ;;
    --operator) [ -z "$id" ] || die_usage "give either --operator or one ID"; id=operator; operator=yes; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die_usage "unknown option $1 (see --help)" ;;
    *) [ -z "$id" ] || die_usage "one ID at a time (got '$id' and '$1')"; id=$1; shift ;;
    esac
done
[ -n "$id" ] || die_usage "missing ID (see --help)"
# The ACL gives the user "operator" the right to publish policies: never a board's account.
[ "$id" != operator ] || [ $operator = yes ] ||
    die_usage "'operator' is the operator account, not a device id: use --operator for it"
case $id in
*[!A-Za-z0-9_-]* | [_-]*) die_usage "bad ID '$id': use letters, digits, '_', '-' (a letter or digit first; no '.')" ;;
esac
[ ${#id} -le 64 ] || die_usage "ID '$id' is longer than 64 characters"
command -v mosquitto_passwd >/dev/null ||
    { echo "add-device.sh: mosquitto_passwd not found (apt-get install -y mosquitto)" >&2; exit 1; }

umask 077
# without_entry FILE: the password file minus ID's line, on stdout.
without_entry() {
    [ ! -f "$1" ] || awk -F: -v id="$id" '$1 != id' "$1"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $remove = yes ]; then
    if [ -f "$passwd_file" ] && awk -F: -v id="$id" '$1 == id { found = 1 } END { exit !found }' "$passwd_file"; then
        without_entry "$passwd_file" >"$work/passwd"
        cat "$work/passwd" >"$passwd_file"
        echo "removed $id from $passwd_file"
    else
        echo "$id has no account in $passwd_file: nothing to remove"
    fi
else
    [ "$(dirname "$passwd_file")" = . ] || mkdir -p "$(dirname "$passwd_file")"
    mkdir -p "$out"
    # 24 random bytes, base64 without "/", "+" and "=" so it is easy to paste.
    password=$(openssl rand -base64 24 | tr -d '/+=\n')
    # Hash a one-line plain file (-U) so the password never shows on a command line.
    printf '%s:%s\n' "$id" "$password" >"$work/entry"
    mosquitto_passwd -U "$work/entry"
    { without_entry "$passwd_file"; cat "$work/entry"; } >"$work/passwd"
    # Rewrite in place: keeps the file's owner, group and mode.
    [ -f "$passwd_file" ] || install -m 600 /dev/null "$passwd_file"
    cat "$work/passwd" >"$passwd_file"
    # mosquitto reads the file as its own user after dropping privileges.
    if getent group mosquitto >/dev/null; then
        chgrp mosquitto "$passwd_file" && chmod 640 "$passwd_file"
    fi
    printf '%s\n' "$password" >"$out/$id.password"
    echo "added $id to $passwd_file; password in $out/$id.password"
    if [ -n "$certs" ]; then
        "$here/make-certs.sh" --dir "$certs" "$id"
    fi
fi

if [ $reload = yes ]; then
    if [ -d /run/systemd/system ] && systemctl is-active --quiet mosquitto; then
        systemctl reload mosquitto && echo "mosquitto reloaded"
    else
        echo "mosquitto is not running under systemd here: reload it yourself (kill -HUP PID)"
    fi
fi
