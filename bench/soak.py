#!/usr/bin/env python3
"""Soak and chaos test of `vigil serve` (issue 19). Standard library only.

One server on a temporary data directory, with monitoring, review and an alert rule on, is
loaded at a fixed concurrency for the whole run while, in turn:

  1. SIGHUP is sent (the server must keep serving);
  2. the data directory's disk (a 512 MB tmpfs; needs root, else this phase is skipped)
     fills up for 10 s and is freed again;
  3. a flood of connections that never send a request is opened, while /healthz is probed
     on fresh connections every 50 ms;
  4. SIGTERM ends the run under load.
Then the server is started again on the same data, loaded, and killed with SIGKILL.

Printed at the end: acknowledged (200) against logged predictions for each stop, the status
codes seen, RSS over time, /healthz latency during the flood, and predictions served during
it. Exit code 1 when an acknowledged prediction is missing after SIGTERM, SIGHUP or the full
disk, or when more than one flush interval was lost to SIGKILL.

usage: bench/soak.py --vigil target/release/vigil [--minutes 10] [--concurrency 32]
                     [--flood 20000] [--tile testdata/weld/RRT-106R_x0064_y0227.png]
"""

import argparse
import collections
import http.client
import json
import os
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vigil", default=os.path.join(ROOT, "target/release/vigil"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--flood", type=int, default=20000, help="idle connections opened at once")
    p.add_argument("--tile", default=os.path.join(ROOT, "testdata/weld"),
                   help="a PNG, or a folder of PNGs sent in turn")
    p.add_argument("--kill-seconds", type=float, default=20.0, help="load before SIGKILL")
    p.add_argument("--disk-mb", type=int, default=0,
                   help="size of the data directory's tmpfs (default 512 + 150 per minute of load: "
                        "the log of a 10-minute run at 700 answers/s is about 900 MB, and only the "
                        "deliberate fill may fill it)")
    return p.parse_args()


def tiles(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".png"))
    else:
        files = [path]
    return [open(f, "rb").read() for f in files]


class Server:
    """`vigil serve` on a free port of 127.0.0.1."""

    def __init__(self, vigil, data_dir, env_extra, log_path):
        env = dict(os.environ)
        env.update({
            "VIGIL__STORE__DATA_DIR": data_dir,
            "VIGIL__SERVER__PORT": "0",
            "VIGIL__LOG__LEVEL": "warn",
            "VIGIL__REVIEW__ENABLED": "true",
            "VIGIL__MONITORING__ENABLED": "true",
            "VIGIL__ALERTS__INTERVAL": "5s",
        })
        env.update(env_extra)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([vigil, "serve"], stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on http://"):
            raise SystemExit(f"the server did not start: {line!r}; see {log_path}")
        host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
        self.addr = (host, int(port))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if request(self.addr, "GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server never became ready")

    def rss_mb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=60):
        return self.proc.wait(timeout)


def request(addr, method, path, body=None, headers=None, conn=None, timeout=30):
    """One request; returns (status, parsed JSON or None, connection to reuse)."""
    c = conn or http.client.HTTPConnection(*addr, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    if conn is None:
        c.close()
    return r.status, parsed


class Load:
    """`concurrency` clients posting tiles as fast as they are answered."""

    def __init__(self, server, images, concurrency):
        self.server, self.images, self.n = server, images, concurrency
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}  # request id -> time answered
        self.statuses = collections.Counter()
        self.errors = collections.Counter()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(concurrency)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def client(self, k):
        i = k
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(*self.server.addr, timeout=30)
                body = self.images[i % len(self.images)]
                i += self.n
                conn.request("POST", "/v1/models/weldnet/predict", body=body,
                             headers={"content-type": "image/png", "x-request-id": f"soak-{k}-{i}"})
                r = conn.getresponse()
                data = r.read()
                now = time.time()
                with self.lock:
                    self.statuses[r.status] += 1
                    if r.status == 200:
                        self.acked[json.loads(data)["request_id"]] = now
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                if r.status == 503:
                    time.sleep(0.05)
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors[type(e).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)


def logged_ids(data_dir):
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'vigil.db')}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT request_id FROM predictions")}
    finally:
        db.close()


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def flood(addr, n, seconds, health):
    """Opens up to `n` connections that send nothing and holds them for `seconds`, while
    `health` (a list) collects /healthz latencies in ms (None for a failure)."""
    socks = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t = time.perf_counter()
            try:
                status, _ = request(addr, "GET", "/healthz", timeout=5)
                health.append((time.perf_counter() - t) * 1e3 if status == 200 else None)
            except OSError:
                health.append(None)
            time.sleep(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    opened = 0
    for _ in range(n):
        try:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            socks.append(s)
            opened += 1
        except OSError:
            break
    time.sleep(seconds)
    stop.set()
    prober.join()
    for s in socks:
        s.close()
    return opened


def spilled_ids(log_path):
    """Request ids of the predictions a server wrote to its own log because the store refused
    them at shutdown ("Unlogged prediction." errors)."""
    ids = set()
    with open(log_path, errors="replace") as f:
        for line in f:
            if "Unlogged prediction" in line and "request_id=" in line:
                ids.add(line.split("request_id=", 1)[1].split()[0].strip('"'))
    return ids


class SmallDisk:
    """A tmpfs for the data directory when this process may mount one (root)."""

    def __init__(self, path, size_mb):
        self.path = path
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", path],
                                      stderr=subprocess.DEVNULL).returncode == 0

    def fill(self):
        self.filler = os.path.join(self.path, "filler")
        with open(self.filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass

    def free(self):
        os.remove(self.filler)

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], stderr=subprocess.DEVNULL)


def main():
    a = parse_args()
    images = tiles(a.tile)
    # The flood's sockets and the server's (a child: it inherits the limit) need room; root
    # may raise the hard limit, anyone else gets the hard limit they have.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 2 * a.flood + 4096)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="vigil-soak-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    disk_mb = a.disk_mb or int(512 + 150 * a.minutes)
    disk = SmallDisk(data, disk_mb)
    env = {}
    if not disk.mounted:
        print("not root: no tmpfs, so the full-disk phase is skipped", file=sys.stderr)
    log_path = os.path.join(work, "serve.log")
    total = a.minutes * 60
    print(f"soak: {a.minutes} min at c={a.concurrency}; data in {data} ({f'tmpfs {disk_mb} MB' if disk.mounted else 'no full-disk phase'}); log {log_path}")

    server = Server(a.vigil, data, env, log_path)
    load = Load(server, images, a.concurrency).start()
    t0 = time.time()
    rss = []
    health = []
    events = []
    served_in_flood = 0

    def at(frac):
        while time.time() - t0 < frac * total:
            rss.append((time.time() - t0, server.rss_mb()))
            time.sleep(min(5.0, max(0.0, frac * total - (time.time() - t0))))

    at(0.2)
    server.signal(signal.SIGHUP)
    time.sleep(1)
    events.append(("SIGHUP", "survived" if server.proc.poll() is None else f"died ({server.proc.returncode})"))
    at(0.4)
    if disk.mounted:
        # SQLite's write-ahead log reuses the space it already has, so a full disk bites only
        # when the log must grow: keep the disk full until the server says it cannot write
        # (at most 60 s), then free it and wait for the server to say it can again.
        before = dict(load.statuses)
        disk.fill()
        filled = time.time()
        ready = (200, None)
        while time.time() - filled < 60:
            ready = request(server.addr, "GET", "/readyz")
            if ready[0] != 200:
                break
            time.sleep(0.5)
        noticed = time.time() - filled
        time.sleep(5)
        disk.free()
        freed = time.time()
        after_ready = 0
        while time.time() - freed < 30:
            after_ready = request(server.addr, "GET", "/readyz")[0]
            if after_ready == 200:
                break
            time.sleep(0.5)
        recovered = time.time() - freed
        refused = load.statuses[503] - before.get(503, 0)
        events.append(("disk full, then freed",
                       f"/readyz {ready[0]} after {noticed:.1f} s full ({ready[1] and ready[1].get('reason')}); "
                       f"503s while full: {refused}; /readyz {after_ready} {recovered:.1f} s after freeing"))
    at(0.6)
    before = sum(load.statuses.values())
    opened = flood(server.addr, a.flood, 20, health)
    served_in_flood = sum(load.statuses.values()) - before
    ok = [h for h in health if h is not None]
    events.append((f"{opened} idle connections for 20 s",
                   f"/healthz: {len(ok)}/{len(health)} answered, p50 {percentile(ok, 0.5):.1f} ms, "
                   f"p99 {percentile(ok, 0.99):.1f} ms, max {max(ok) if ok else float('nan'):.1f} ms; "
                   f"{served_in_flood} predictions served meanwhile"))
    at(1.0)
    server.signal(signal.SIGTERM)
    code = server.wait()
    load.finish()
    acked = dict(load.acked)
    logged = logged_ids(data)
    lost_term = [i for i in acked if i not in logged]
    spilled = spilled_ids(log_path)
    events.append(("SIGTERM under load", f"exit {code}; {len(acked)} acknowledged, {len(lost_term)} not logged"
                   + (f" ({sum(i in spilled for i in lost_term)} of them written to the server's log instead)"
                      if lost_term else "")))
    statuses = dict(load.statuses)
    errors = dict(load.errors)

    # SIGKILL under load, on the same data.
    server = Server(a.vigil, data, env, log_path)
    load = Load(server, images, a.concurrency).start()
    time.sleep(a.kill_seconds)
    killed = time.time()
    server.signal(signal.SIGKILL)
    server.wait()
    load.finish()
    logged = logged_ids(data)
    acked_k = dict(load.acked)
    missing = [i for i in acked_k if i not in logged]
    late = [i for i in missing if killed - acked_k[i] > 1.0 + 0.5]
    events.append(("SIGKILL under load", f"{len(acked_k)} acknowledged, {len(missing)} not logged, "
                   f"{len(late)} of them answered more than 1.5 s (flush interval + margin) before the kill"))
    disk.unmount()

    print("\nevents:")
    for what, result in events:
        print(f"  {what}: {result}")
    print(f"\nstatus codes (first run): {statuses}; client errors: {errors}")
    secs = time.time() - t0
    print(f"throughput (first run): {sum(statuses.values()) / total:.0f} answers/s")
    print("\nRSS over time (s, MB):")
    for t, m in rss[:: max(1, len(rss) // 30)]:
        print(f"  {t:6.0f}  {m if m is None else round(m, 1)}")
    after_first_min = [m for t, m in rss if t >= 60 and m is not None]
    if after_first_min:
        growth = (after_first_min[-1] - after_first_min[0]) / after_first_min[0] * 100
        print(f"RSS after the first minute: {after_first_min[0]:.1f} -> {after_first_min[-1]:.1f} MB "
              f"({growth:+.1f} %), max {max(after_first_min):.1f} MB")
    bad = bool(lost_term) or bool(late) or any(r.startswith("died") for w, r in events if w == "SIGHUP")
    print("\nRESULT:", "FAIL" if bad else "ok", f"({secs:.0f} s)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
