# Shared by the bench scripts (sourced, not run): installing what a bench
# needs, free ports, nginx.

# Installs the Debian packages of the commands named (nginx, wrk, b3sum)
# that are missing; sets NGINX to nginx's path.
bench_need() {
  local missing=() tool
  for tool in "$@"; do
    if [ "$tool" = nginx ]; then
      command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    else
      command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes WORK/nginx.conf, the events block EVENTS (default `{}`) and the
# http block read from standard input, and starts nginx from it: one
# worker, as a daemon, its pid in WORK/nginx.pid, its errors in
# WORK/nginx-error.log.
nginx_start() {
  local work=$1 events=${2:-"{}"}
  {
    printf 'user root;\nworker_processes 1;\nworker_rlimit_nofile 65536;\ndaemon on;\n'
    printf 'pid %s/nginx.pid;\nerror_log %s/nginx-error.log;\nevents %s\n' "$work" "$work" "$events"
    cat
  } > "$work/nginx.conf"
  "$NGINX" -c "$work/nginx.conf" -e "$work/nginx-error.log"
}

# Syncs the disk and waits out ext4's window for recently deleted inodes
# (5 s once their table blocks are written; 300 s while they are dirty), so
# a bench does not pay, in every file it creates, for the clean-up of the
# bench before it (measured: 14 % of a small-file run's CPU went to ext4
# skipping such inodes).
bench_settle() {
  sync
  sleep 6
}

# Mounts a new ext4 file system (with a journal, as file systems holding
# data usually have) on DIR, made in a sparse image beside it, so that each
# side of a bench meets a file system nobody used before. On a disk where
# earlier runs deleted many files, ext4 without a journal steps over every
# inode deleted in the last minute (six, while their table blocks are
# dirty), and whichever side runs first pays for it. Without root or loop
# devices, DIR stays a folder of the disk, and the bench says so.
BENCH_MOUNTS=()
bench_fresh_fs() {
  local dir=$1
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ] && truncate -s 8G "$dir.img" 2>/dev/null &&
    mkfs.ext4 -q -F -N 600000 "$dir.img" >/dev/null 2>&1 && mount -o loop "$dir.img" "$dir" 2>/dev/null; then
    BENCH_MOUNTS+=("$dir")
  else
    rm -f "$dir.img"
    echo "bench: $dir is a folder of the disk, not a fresh file system (that needs root and loop devices)" >&2
  fi
}

# Unmounts what bench_fresh_fs mounted (stop what uses them first).
bench_unmount_all() {
  local dir
  for dir in "${BENCH_MOUNTS[@]}"; do
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
    rm -f "$dir.img"
  done
  BENCH_MOUNTS=()
}
