"""Anti-entropy over a large store (see scripts/bench-repair.sh): three real
ringshare node processes on loopback, k = 3, each holding the same FILES
small files, measured while nothing changes and after one node missed
writes.

Usage: repair_pass.py BINARY PLUGINS WORK FILES

- The files are put straight into the three stores as the default plugins
  record an upload (bytes, empty outboard, record "size modified_ns
  blake3"; hashes by `b3sum`), hard-linked so that the three stores share
  their inodes. Uploading them would measure small uploads, not repair.
- The nodes start: the time until each serves a GET of one of its files,
  and until its index holds every file (`ringshare_store_files`); memory
  per file is the RSS of a node then, less that of a node with an empty
  store, over FILES.
- Idle: five repair passes on every node (--repair-ms 2000): per pass, the
  bytes that crossed loopback (less what this script's own requests moved)
  and the nodes' CPU time. Against it, the same run's cost of the per-file
  pass this replaced (per file, a lookup and k-1 `Stat` calls), estimated
  from 2,000 `HEAD` requests through node 0, each of which makes that
  lookup and those two `Stat` calls (and opens the file: an upper bound).
- Missed writes: node 2 is killed, MISSED files are added through node 0,
  node 2 starts again; the time until it serves and until it holds every
  one, the bytes replicated to it, and how many files it hashed again
  (none: a crash costs no re-hash).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from large_ring import free_port  # noqa: E402


def get(url, timeout=60, method="GET", body=None):
    request = urllib.request.Request(url, method=method, data=body)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.read()


def get_json(url, timeout=60):
    return json.loads(get(url, timeout))


def lo_bytes():
    with open("/proc/net/dev") as dev:
        for line in dev:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    raise SystemExit("no loopback interface in /proc/net/dev")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    binary, plugins, work, files = sys.argv[1:5]
    files = int(files)
    missed = 1000
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    flat = os.path.join(work, "flat")
    # The stores as nodes keep them: the records of the files' hashes in the
    # host's log (plugin contract 0.6.0), or, with RINGSHARE_SEED_LAYOUT=meta,
    # one record file beside each file, as the plugins of 0.5.0 kept them.
    beside = os.environ.get("RINGSHARE_SEED_LAYOUT") == "meta"
    parts = ("files", "outboard", "meta") if beside else ("files", "outboard")
    for part in parts:
        os.makedirs(os.path.join(flat, part))
    names = [f"f{j:07d}.txt" for j in range(files)]
    print(f"seeding {files:,} files ...", file=sys.stderr, flush=True)
    for name in names:
        with open(os.path.join(flat, "files", name), "wb") as f:
            f.write(f"file {name}\n".encode())
    hashes = {}
    for at in range(0, files, 5000):
        out = subprocess.run(["b3sum", *names[at:at + 5000]], cwd=os.path.join(flat, "files"), check=True,
                             capture_output=True, text=True)
        for line in out.stdout.splitlines():
            digest, name = line.split(maxsplit=1)
            hashes[name] = digest
    now = time.time_ns()
    records = []
    for name in names:
        size = len(f"file {name}\n")
        records.append(f"+ {size} {now} {hashes[name]} {name}\n")
        for part, content in (("outboard", b""), ("meta", f"{size} {now} {hashes[name]}".encode()))[:len(parts) - 1]:
            with open(os.path.join(flat, part, name), "wb") as f:
                f.write(content)
        for part in parts:
            os.utime(os.path.join(flat, part, name), ns=(now, now))
    for addr in addrs:
        data = os.path.join(work, addr.replace(":", "_"))
        for part in parts:
            os.makedirs(os.path.join(data, "store", part))
            for name in names:
                os.link(os.path.join(flat, part, name), os.path.join(data, "store", part, name))
        if not beside:
            os.makedirs(os.path.join(data, "node"))
            with open(os.path.join(data, "node", "records"), "w") as log:
                log.writelines(records)

    procs = {}

    def start(addr, join):
        args = [binary, "node", "--amqp", "none", "--listen", addr, "--replicas", "3", "--repair-ms", "2000",
                "--scrub-mib", "0", "--data", os.path.join(work, addr.replace(":", "_")), "--plugins", plugins]
        if join:
            args += ["--join", join]
        log = open(os.path.join(work, addr.replace(":", "_") + ".log"), "ab")
        procs[addr] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)

    def check_alive():
        for addr, p in procs.items():
            if p.poll() is not None:
                log = open(os.path.join(work, addr.replace(":", "_") + ".log"), errors="replace").read()
                raise SystemExit(f"node {addr} exited with {p.returncode}; its log ends:\n{log[-2000:]}")

    own = [0]

    def metric(addr, series):
        body = get(f"http://{addr}/metrics").decode()
        own[0] += len(body) + 300
        for line in body.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def wait(what, done, limit=1800):
        began_waiting = time.time()
        deadline = began_waiting + limit
        while not done():
            check_alive()
            assert time.time() < deadline, f"{what} did not happen in {limit} s"
            time.sleep(0.5)
        print(f"{what}: {time.time() - began_waiting:.1f} s", file=sys.stderr, flush=True)

    def joined(addr):
        try:
            return get_json(f"http://{addr}/ring", timeout=5)["joined"]
        except Exception:
            return False

    def indexed(addr):
        try:
            return metric(addr, "ringshare_store_files")
        except Exception:
            return -2

    def listed(addr):
        return indexed(addr) >= files

    def serves(addr, name):
        try:
            get(f"http://{addr}/files/{name}", timeout=5, method="HEAD")
            return True
        except Exception:
            return False

    def rss_mib(pid):
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))

    def rehashed(addr):
        with open(os.path.join(work, addr.replace(":", "_") + ".log"), errors="replace") as log:
            return sum("copied in by hand" in line for line in log)

    stat = 'ringshare_rpc_seconds_count{method="/ringshare.files.v1.Files/Stat",status="200"}'
    passes = "ringshare_repair_passes_total"
    try:
        # A node with an empty store, alone: the memory a node has anyway.
        empty = f"127.0.0.1:{free_port()}"
        start(empty, None)
        wait("the empty node", lambda: indexed(empty) == 0)
        time.sleep(2)
        empty_rss = rss_mib(procs[empty].pid)
        procs.pop(empty).kill()

        began = time.time()
        start(addrs[0], None)
        wait("node 0 joining", lambda: joined(addrs[0]))
        for addr in addrs[1:]:
            start(addr, addrs[0])
        wait("the ring", lambda: all(joined(a) for a in addrs))
        wait("every node serving", lambda: all(serves(a, names[-1]) for a in addrs))
        serving_s = time.time() - began
        wait("every node listing every file", lambda: all(listed(a) for a in addrs))
        started_s = time.time() - began
        rss = [rss_mib(p.pid) for p in procs.values()]

        # Idle passes once every node has passed twice (the first passes
        # after a start find the ring settling).
        first = {a: metric(a, passes) for a in addrs}
        wait("two passes", lambda: all(metric(a, passes) >= first[a] + 2 for a in addrs))
        counted = {a: metric(a, passes) for a in addrs}
        stats0 = sum(metric(a, stat) for a in addrs)
        own[0] = 0
        lo0, cpu0, t0 = lo_bytes(), sum(cpu_seconds(p.pid) for p in procs.values()), time.time()
        wait("five passes", lambda: all(metric(a, passes) >= counted[a] + 5 for a in addrs))
        lo1, cpu1, t1 = lo_bytes(), sum(cpu_seconds(p.pid) for p in procs.values()), time.time()
        done = sum(metric(a, passes) - counted[a] for a in addrs)
        stats = sum(metric(a, stat) for a in addrs) - stats0
        moved = max(lo1 - lo0 - own[0], 0)
        per_pass_bytes, per_pass_cpu = moved / done, (cpu1 - cpu0) / done

        # The per-file pass this replaced: per file, a lookup and k-1 Stat
        # calls, as a HEAD through node 0 makes them.
        probe = names[: min(2000, files)]
        own[0] = 0
        lo0, cpu0 = lo_bytes(), cpu_seconds(procs[addrs[0]].pid)
        for name in probe:
            get(f"http://{addrs[0]}/files/{name}", method="HEAD")
        lo1, cpu1 = lo_bytes(), cpu_seconds(procs[addrs[0]].pid)
        head_bytes = (lo1 - lo0) / len(probe)
        head_cpu = (cpu1 - cpu0) / len(probe)

        # Missed writes: node 2 away while `missed` files are added.
        away = addrs[2]
        procs[away].kill()
        procs[away].wait(timeout=60)
        del procs[away]
        wait("the ring without node 2", lambda: len(get_json(f"http://{addrs[0]}/ring")["successors"]) >= 1)
        added = [f"missed-{j:05d}.txt" for j in range(missed)]
        for name in added:
            get(f"http://{addrs[0]}/files/{name}", method="PUT", body=f"missed {name}\n".encode())
        lo0, t0 = lo_bytes(), time.time()
        hashed_before = rehashed(away)
        start(away, addrs[0])
        wait("node 2 serving again", lambda: serves(away, names[0]))
        back_s = time.time() - t0
        store = os.path.join(work, away.replace(":", "_"), "store", "files")
        wait("node 2 holding every missed file", lambda: all(os.path.exists(os.path.join(store, n)) for n in added))
        caught_s = time.time() - t0
        wait("node 2 listing its store again", lambda: listed(away))
        relisted_s = time.time() - t0
        replicated = metric(away, 'ringshare_bytes_total{direction="replicated"}')
        hashed_again = rehashed(away) - hashed_before

        mib = 1 << 20
        print(f"| {files:,} files on each of 3 nodes (k = 3), release build, loopback | |")
        print("|---|---|")
        print(f"| start: until every node serves a GET / holds every file in its index | {serving_s:.1f} s / "
              f"{started_s:.1f} s |")
        print(f"| memory: RSS then, against a node with an empty store ({empty_rss:.0f} MiB) | "
              f"{min(rss):.0f}-{max(rss):.0f} MiB, {(max(rss) - empty_rss) * mib / files:.0f} bytes per file at most |")
        print(f"| idle repair pass (mean of {done:.0f} passes on 3 nodes) | {per_pass_bytes / 1024:.1f} KiB sent, "
              f"{per_pass_cpu * 1000:.0f} ms CPU, {stats:.0f} Stat calls |")
        old_bytes = files * head_bytes
        old_cpu = files * head_cpu
        print(f"| the per-file pass it replaced, from this run's cost of a HEAD (a lookup here, two Stats) "
              f"| ~{old_bytes / mib:.0f} MiB, ~{old_cpu:.0f} s CPU per pass per node "
              f"({old_bytes / max(per_pass_bytes, 1):.0f}x the bytes) |")
        print(f"| node 2 back after a crash and {missed:,} missed writes | serves in {back_s:.1f} s, every missed "
              f"one in {caught_s:.1f} s, its index whole in {relisted_s:.1f} s; {replicated / 1024:.0f} KiB "
              f"replicated to it ({missed * 30 / 1024:.0f} KiB of content); {hashed_again} files hashed again |")
    finally:
        for p in procs.values():
            p.kill()


if __name__ == "__main__":
    main()
