"""Large networks on one machine (see scripts/bench-large-ring.sh): real
ringshare node processes on loopback, measured as a user would see them.

Usage: large_ring.py BINARY PLUGINS WORK NODES FILES NGINX_PORT

- FILES small files are put straight into the store of the node responsible
  for each, as the default plugins record an upload (k = 1; a node's id is
  SHA-256(address)[..8], a file's key SHA-256(name)[..8], the responsible
  node the first id at or after the key; hashes by `b3sum`), and the same
  files into one folder that nginx lists (JSON autoindex). Uploading them
  would measure small uploads (issue 18), not the listing.
- Node 0 starts, then the other NODES-1 all at once, joining through it:
  the time until every one has joined, then until the ring is exact (every
  node's successor and predecessor the right ones).
- Idle for 10 s, then the resident memory of every node.
- 2,000 lookups of random names through random nodes (GET /lookup): hops,
  and whether each answered the responsible node.
- A network listing (GET /files?scope=network&walk=true) through node 0,
  five times, against nginx's JSON autoindex of the folder of all files.
"""

import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request


def ident(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read(), dict(answer.headers)


def get_json(url, timeout=30):
    return json.loads(get(url, timeout)[0])


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    binary, plugins, work, nodes, files, nginx_port = sys.argv[1:7]
    nodes, files = int(nodes), int(files)
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(nodes)]
    ring = sorted((ident(a), a) for a in addrs)
    ids = [i for i, _ in ring]

    def responsible(key):
        for i, addr in ring:
            if i >= key:
                return addr
        return ring[0][1]

    flat = os.path.join(work, "flat")
    os.makedirs(flat)
    stores = {a: os.path.join(work, a.replace(":", "_"), "store", "files") for a in addrs}
    for store in stores.values():
        for part in ("files", "outboard", "meta"):
            os.makedirs(os.path.join(os.path.dirname(store), part))
    names = [f"f{j:06d}.txt" for j in range(files)]
    for name in names:
        with open(os.path.join(flat, name), "wb") as f:
            f.write(f"file {name}\n".encode())
    # Each file as the default plugins record an upload: its bytes, an empty
    # outboard (one block), and the record "size modified_ns blake3".
    hashes = {}
    for at in range(0, files, 5000):
        out = subprocess.run(["b3sum", *names[at:at + 5000]], cwd=flat, check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            digest, name = line.split(maxsplit=1)
            hashes[name] = digest
    # The record's time is the file's (a file newer than its record counts
    # as changed by hand, and is listed only once hashed again).
    now = time.time_ns()
    for name in names:
        store = os.path.dirname(stores[responsible(ident(name))])
        body = open(os.path.join(flat, name), "rb").read()
        for part, content in (("files", body), ("outboard", b""), ("meta", f"{len(body)} {now} {hashes[name]}".encode())):
            path = os.path.join(store, part, name)
            with open(path, "wb") as f:
                f.write(content)
            os.utime(path, ns=(now, now))

    procs = []

    def start(addr, join):
        args = [binary, "node", "--amqp", "none", "--listen", addr, "--replicas", "1", "--repair-ms", "3600000",
                "--data", os.path.join(work, addr.replace(":", "_")), "--plugins", plugins]
        if join:
            args += ["--join", join]
        log = open(os.path.join(work, addr.replace(":", "_") + ".log"), "wb")
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log))

    def check_alive():
        for addr, p in zip(addrs, procs):
            if p.poll() is not None:
                log = open(os.path.join(work, addr.replace(":", "_") + ".log"), errors="replace").read()
                raise SystemExit(f"node {addr} exited with {p.returncode}; its log ends:\n{log[-2000:]}")

    def ready(addr):
        check_alive()
        try:
            return get_json(f"http://{addr}/ring", timeout=2)["joined"]
        except Exception:
            return False

    try:
        start(addrs[0], None)
        deadline = time.time() + 60
        while not ready(addrs[0]):
            assert time.time() < deadline, "node 0 did not start in 60 s"
            time.sleep(0.1)
        began = time.time()
        for addr in addrs[1:]:
            start(addr, addrs[0])
        right = {a: (ring[(k + 1) % nodes][1], ring[k - 1][1]) for k, (_, a) in enumerate(ring)}

        def converged():
            check_alive()
            for addr in addrs:
                try:
                    view = get_json(f"http://{addr}/ring", timeout=20)
                except Exception:
                    return False
                succ = view["successors"][0]["addr"] if view["successors"] else None
                pred = (view["predecessor"] or {}).get("addr")
                if (succ, pred) != right[addr]:
                    return False
            return True

        deadline = began + 600
        while not all(ready(a) for a in addrs):
            assert time.time() < deadline, "the nodes did not all join in 600 s"
            time.sleep(0.5)
        joined_s = time.time() - began
        while not converged():
            assert time.time() < deadline, "the ring did not converge in 600 s"
            time.sleep(0.5)
        converge_s = time.time() - began - joined_s

        time.sleep(10)
        rss = []
        for p in procs:
            with open(f"/proc/{p.pid}/status") as status:
                rss += [int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")]

        rng = random.Random(2026)
        hops, right_node = [], 0
        for _ in range(2000):
            name = f"n{rng.randrange(10**9)}"
            answer = get_json(f"http://{rng.choice(addrs)}/lookup/{name}")
            hops.append(answer["hops"])
            right_node += answer["node"]["addr"] == responsible(ident(name))
        hops.sort()

        def timed(url):
            start_t = time.time()
            body, headers = get(url, timeout=300)
            return time.time() - start_t, body, headers

        listing, autoindex = [], []
        for _ in range(5):
            seconds, body, headers = timed(f"http://{addrs[0]}/files?scope=network&walk=true")
            listed = json.loads(body)
            missing = headers.get("x-ringshare-missing-nodes")
            assert len(listed) == files, f"the network listing has {len(listed)} files, not {files} (missing: {missing})"
            listing.append(seconds)
            seconds, body, _ = timed(f"http://127.0.0.1:{nginx_port}/flat/")
            assert len(json.loads(body)) == files, "nginx lists another count"
            autoindex.append(seconds)

        log2 = nodes.bit_length() - 1
        print(f"| nodes | {nodes} real processes on {os.cpu_count()} cores, loopback |")
        print("|---|---|")
        print(f"| {nodes - 1} nodes started at once, until every one has joined (each compiles its plugins) | {joined_s:.1f} s |")
        print(f"| then until the ring is exact (every successor and predecessor right) | {converge_s:.1f} s |")
        print(f"| resident memory per idle node | mean {statistics.mean(rss):.1f} MiB, max {max(rss):.1f} MiB |")
        print(f"| lookup hops (2,000 through random nodes) | mean {statistics.mean(hops):.2f}, p99 "
              f"{hops[len(hops) * 99 // 100]} (Chord: ½·log2 N = {log2 / 2:.1f}), right node {right_node / 20:.1f} % |")
        ring_s, nginx_s = statistics.median(listing), statistics.median(autoindex)
        print(f"| network listing of {files:,} files (median of 5, every node asked) | {ring_s:.2f} s; nginx "
              f"autoindex of one folder of them {nginx_s:.2f} s; {ring_s / nginx_s:.1f}x nginx's time |")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
