#!/bin/sh
# What any user with a delegated cgroup subtree can do (systemd gives every
# user one: user@UID.service): make a cgroup of any name in it and run a
# program there, as that user.
#
# Usage (as root): in_own_cgroup.sh DELEGATED SUB UID PROGRAM [ARGS...]
#   DELEGATED  a cgroup directory owned by UID
#   SUB        the path the user makes below it (`app.slice/nginx.service`)
#
# The user names the cgroup (mkdir as UID: what attribution must see
# through). Root moves this shell into it, which the user could do itself
# (it owns the subtree's cgroup.procs); doing it as root lets the program
# be exec'd by setpriv, which resolves its path while still privileged (the
# tests' Python lives under /root).
set -e
delegated=$1 sub=$2 uid=$3
shift 3
as_user() { setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
as_user mkdir -p "$delegated/$sub"
echo $$ >"$delegated/$sub/cgroup.procs"
as_user "$@"
